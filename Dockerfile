# syntax=docker/dockerfile:1
# One image for both entry points: `trafficmirror operator` and `trafficmirror agent` (and the
# `trafficmirror pcap` tools). The build stage compiles the wheel, C extension included; the final
# stage gets only the installed virtualenv: no compiler, no pip cache, no sources, non-root.
# tests/delivery/test_image_install.py runs these same steps in a fresh virtualenv.

# The base: Python 3.11 on Debian. A build without registry access passes its own (hack/build-image.sh).
ARG BASE_IMAGE=python
ARG BASE_TAG=3.11-slim

FROM ${BASE_IMAGE}:${BASE_TAG} AS build
# gcc and the C library headers build trafficmirror.capture._fastrecv (the capture agent's
# recvmmsg receive loop). Not version-pinned (DL3008): Debian's security updates replace pinned
# versions in the archive, so pins would break the build; the base image fixes the release.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator/ operator/
# The extension is optional in pyproject.toml (a source install without a compiler falls back to
# Python); the image must have it, so the build fails when it did not compile.
RUN pip wheel --no-deps --wheel-dir /wheels . \
    && python -m venv /opt/trafficmirror \
    && /opt/trafficmirror/bin/pip install /wheels/trafficmirror-*.whl \
    && /opt/trafficmirror/bin/python -c "import trafficmirror.capture._fastrecv" \
    && /opt/trafficmirror/bin/trafficmirror --help >/dev/null

FROM ${BASE_IMAGE}:${BASE_TAG}
LABEL org.opencontainers.image.title="trafficmirror" \
      org.opencontainers.image.description="AWS VPC Traffic Mirroring operator and capture agent" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /opt/trafficmirror /opt/trafficmirror
# The capture agent's work directory (open files, spool); the Helm chart mounts a volume here.
RUN install -d -o 65532 -g 65532 -m 0750 /var/lib/trafficmirror
ENV PATH=/opt/trafficmirror/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 65532:65532
WORKDIR /var/lib/trafficmirror
# Health is Kubernetes' job: the Helm chart probes the operator's /healthz and the agent's metrics port.
HEALTHCHECK NONE
ENTRYPOINT ["trafficmirror"]
CMD ["--help"]

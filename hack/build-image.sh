#!/usr/bin/env bash
# `make image`: builds the project's Dockerfile with podman (buildah underneath) and saves the image
# as a tarball that `ctr images import` and `kind/k3d/minikube image load` read.
#
# No container registry is reachable from the build machines, so the base image is built here: a
# `debootstrap --variant=minbase` Debian bookworm root filesystem with Debian's Python 3.11 (what
# python:3.11-slim carries), imported with `podman import` and handed to the Dockerfile through
# its BASE_IMAGE and BASE_TAG build arguments. Users with Docker and a registry build the Dockerfile as it is
# (FROM python:3.11-slim).
#
# Everything is cached outside the repository: the base tarball, podman's own storage (image
# layers, so a warm build takes seconds) and the saved image. Prints the saved tarball's path.
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE_DIR=${TRAFFICMIRROR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/trafficmirror}
IMAGE_DIR="$CACHE_DIR/image"
VERSION=$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' charts/trafficmirror/Chart.yaml)
# The chart's default image reference (values.yaml image.repository, tag = appVersion).
IMAGE=${IMAGE:-ghcr.io/trafficmirror/trafficmirror:$VERSION}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
# What python:3.11-slim has (Python 3.11, venv, pip, CA certificates) plus the C headers and
# compiler the capture agent's extension needs (the Dockerfile installs gcc itself; having it in
# the base saves a download per build).
BASE_PACKAGES=python3,python3-venv,python3-pip,python-is-python3,python3-dev,gcc,libc6-dev,ca-certificates
mkdir -p "$IMAGE_DIR"

# Host workarounds, all for this kind of build machine rather than for the image:
# - runc, not crun: Debian's crun 1.8 fails on a hybrid cgroup v1/v2 layout with "cgroups in
#   hybrid mode not supported".
# - cgroupfs: no systemd runs here to manage cgroups.
# - explicit ulimits: podman's defaults exceed this host's limits and the build's first RUN fails
#   with "error setting rlimit type 7 (nofile) / type 6 (nproc): operation not permitted"; even the
#   shell's own hard nproc limit is refused here, 16384 is accepted.
# - own storage root in the cache: the layers survive between runs and the project's state stays
#   apart from any other podman user's.
limit() {
  local hard=$1
  if [ "$hard" = unlimited ] || [ "$hard" -gt 16384 ]; then echo 16384; else echo "$hard"; fi
}
ulimit_nofile=$(limit "$(ulimit -Hn)")
ulimit_nproc=$(limit "$(ulimit -Hu)")
pm() {
  podman --root "$CACHE_DIR/containers/storage" --runroot "${XDG_RUNTIME_DIR:-/run}/trafficmirror-containers" \
    --storage-driver overlay --runtime runc --cgroup-manager cgroupfs --events-backend file "$@"
}

# The host's trust store goes into the test base (and only there: never into the Dockerfile): the
# build machines reach the package registries through a TLS-intercepting proxy whose CA only the
# host trusts, and pip inside the build fails with CERTIFICATE_VERIFY_FAILED without it.
host_ca=/etc/ssl/certs/ca-certificates.crt
key=$(
  {
    echo "$BASE_PACKAGES $DEBIAN_MIRROR"
    [ -f "$host_ca" ] && sha256sum "$host_ca"
  } | sha256sum | cut -c1-12
)
BASE_REPOSITORY=localhost/trafficmirror-base
BASE_TAG="bookworm-python3.11-$key"
BASE_IMAGE="$BASE_REPOSITORY:$BASE_TAG"
base_tar="$IMAGE_DIR/base-bookworm-python3.11-$key.tar"
start=$(date +%s)
step() { echo "[image] $1 ($(( $(date +%s) - start ))s)" >&2; }

if [ ! -s "$base_tar" ]; then
  step "debootstrap bookworm into a base root filesystem"
  root=$(mktemp -d "$IMAGE_DIR/rootfs.XXXXXX")
  trap 'rm -rf "$root"' EXIT
  debootstrap --variant=minbase --include="$BASE_PACKAGES" bookworm "$root" "$DEBIAN_MIRROR" >"$IMAGE_DIR/debootstrap.log" 2>&1 \
    || { tail -30 "$IMAGE_DIR/debootstrap.log" >&2; exit 1; }
  if [ -f "$host_ca" ]; then
    cp "$host_ca" "$root/etc/ssl/certs/ca-certificates.crt"
    # Kept by a later update-ca-certificates in the image, too.
    if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
      cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
    fi
  fi
  # python:3.11-slim's Python is not marked externally managed (PEP 668); Debian's is, and its pip
  # would refuse the Dockerfile's `pip install` into the image's own virtualenv build steps.
  rm -f "$root"/usr/lib/python3*/EXTERNALLY-MANAGED
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  tar -C "$root" --numeric-owner -cf "$base_tar.tmp" .
  mv "$base_tar.tmp" "$base_tar"
  rm -rf "$root"
  trap - EXIT
fi
if ! pm image exists "$BASE_IMAGE"; then
  step "podman import the base as $BASE_IMAGE"
  pm import --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["python3"]' "$base_tar" "$BASE_IMAGE" >/dev/null
fi

step "podman build $IMAGE"
pm build --network host --layers \
  --ulimit "nofile=$ulimit_nofile:$ulimit_nofile" --ulimit "nproc=$ulimit_nproc:$ulimit_nproc" \
  --build-arg "BASE_IMAGE=$BASE_REPOSITORY" --build-arg "BASE_TAG=$BASE_TAG" -t "$IMAGE" -f Dockerfile . >"$IMAGE_DIR/build.log" 2>&1 \
  || { tail -40 "$IMAGE_DIR/build.log" >&2; exit 1; }

id=$(pm image inspect --format '{{.Id}}' "$IMAGE")
out="$IMAGE_DIR/trafficmirror-$VERSION.tar"
if [ ! -s "$out" ] || [ "$(cat "$out.id" 2>/dev/null)" != "$id" ]; then
  step "podman save $IMAGE"
  rm -f "$out"
  pm save --format docker-archive -o "$out" "$IMAGE" >/dev/null
  echo "$id" >"$out.id"
fi
step "image $IMAGE ready"
echo "$out"

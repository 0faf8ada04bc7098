#!/usr/bin/env bash
# Debian packages the tests use: tshark/capinfos to verify pcaps, iproute2 for network namespaces
# and vxlan devices, tcpdump as the benchmark's baseline, openssl for test-bed keys, lua for the
# Argo CD health checks; podman, buildah and debootstrap build the image (hack/build-image.sh);
# containerd, runc, the CNI plugins, iptables and conntrack run the single-node cluster
# (operator/trafficmirror_testbed/node.py). Installs only what is missing; needs root (CI runs as root).
set -euo pipefail
need=()
for pair in tshark:tshark capinfos:tshark ip:iproute2 tcpdump:tcpdump openssl:openssl setpriv:util-linux ping:iputils-ping gcc:gcc curl:curl \
  podman:podman buildah:buildah debootstrap:debootstrap containerd:containerd runc:runc iptables:iptables \
  conntrack:conntrack findmnt:mount /usr/lib/cni/bridge:containernetworking-plugins; do
  tool=${pair%%:*}
  if [[ $tool == /* ]]; then [ -x "$tool" ] || need+=("${pair#*:}"); continue; fi
  command -v "$tool" >/dev/null 2>&1 || PATH=$PATH:/usr/sbin:/sbin command -v "$tool" >/dev/null 2>&1 || need+=("${pair#*:}")
done
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "missing Debian packages: ${need[*]} (run as root, or install them: apt-get install ${need[*]})" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends $(printf '%s\n' "${need[@]}" | sort -u) >/dev/null

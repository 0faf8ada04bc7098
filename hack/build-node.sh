#!/usr/bin/env bash
# Builds the single-node cluster's Kubernetes binaries (kubelet, kube-controller-manager,
# kube-scheduler, kube-proxy) from the same k8s.io/kubernetes version and wrapper module as the
# test bed's apiserver (hack/build-testbed.sh), a static pause binary for the sandbox image, and
# CoreDNS (cluster DNS: kopf logs in at https://kubernetes.default.svc, a name only it answers).
# Binaries land in a cache outside the repository; a build is skipped when they are already there.
# Prints the binary directory on stdout.
set -euo pipefail

KUBERNETES_VERSION=${KUBERNETES_VERSION:-v1.35.4}
COREDNS_VERSION=${COREDNS_VERSION:-v1.14.7}
CACHE_DIR=${TRAFFICMIRROR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/trafficmirror}
BIN_DIR="$CACHE_DIR/bin/node-k8s-$KUBERNETES_VERSION-coredns-$COREDNS_VERSION"
COMPONENTS=(kubelet kube-controller-manager kube-scheduler kube-proxy)

have_all() {
  local c
  for c in "${COMPONENTS[@]}" pause coredns; do [ -x "$BIN_DIR/$c" ] || return 1; done
}
if have_all; then
  echo "$BIN_DIR"
  exit 0
fi
mkdir -p "$BIN_DIR"

export GOFLAGS=-mod=mod GOTOOLCHAIN=local CGO_ENABLED=0
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
start=$(date +%s)

# The same wrapper module as the apiserver's: k8s.io/kubernetes pins its staging modules at
# v0.0.0 with replace directives to its own tree, so each is pointed at the published v0.Y.Z.
staging_version="v0.${KUBERNETES_VERSION#v1.}"
dir="$work/kubernetes"
mkdir -p "$dir"
gomod=$(cd "$dir" && go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
{
  echo "module trafficmirror.io/testbed/kubernetes"
  echo "go 1.24"
  echo "require k8s.io/kubernetes $KUBERNETES_VERSION"
  grep -oE '^\s*k8s\.io/[a-z0-9-]+ => \./staging/src/k8s\.io/[a-z0-9-]+' "$gomod" \
    | awk -v v="$staging_version" '{print "replace " $1 " => " $1 " " v}'
} >"$dir/go.mod"
{
  printf '//go:build tools\n\npackage tools\n\nimport (\n'
  for c in "${COMPONENTS[@]}"; do printf '\t_ "k8s.io/kubernetes/cmd/%s"\n' "$c"; done
  printf ')\n'
} >"$dir/tools.go"
(cd "$dir" && go mod tidy -e >/dev/null 2>&1 || true)
pkgs=()
for c in "${COMPONENTS[@]}"; do [ -x "$BIN_DIR/$c" ] || pkgs+=("k8s.io/kubernetes/cmd/$c"); done
if [ ${#pkgs[@]} -gt 0 ]; then
  (cd "$dir" && go build -trimpath -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=$KUBERNETES_VERSION -X k8s.io/client-go/pkg/version.gitVersion=$KUBERNETES_VERSION" \
      -o "$BIN_DIR/" "${pkgs[@]}") >&2
fi

# The pod sandbox ("pause") image's one binary: waits for a signal, reaps children. Static, so
# the image is this file on an empty root filesystem.
if [ ! -x "$BIN_DIR/pause" ]; then
  mkdir -p "$work/pause"
  cat >"$work/pause/go.mod" <<'GOMOD'
module trafficmirror.io/testbed/pause
go 1.24
GOMOD
  cat >"$work/pause/main.go" <<'GO'
// Command pause holds a pod's namespaces open until it is told to stop.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for s := range sigs {
		if s != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			var status syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
GO
  (cd "$work/pause" && go build -trimpath -ldflags "-s -w" -o "$BIN_DIR/pause" .) >&2
fi
if [ ! -x "$BIN_DIR/coredns" ]; then
  GOBIN="$BIN_DIR" go install -trimpath -ldflags "-s -w" "github.com/coredns/coredns@$COREDNS_VERSION" >&2
fi
echo "built node binaries in $(( $(date +%s) - start ))s" >&2
echo "$BIN_DIR"

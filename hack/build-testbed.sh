#!/usr/bin/env bash
# Builds the test bed's binaries (kube-apiserver, kubectl, etcd, helm) from source through the
# Go module proxy: no release download is reachable here. Binaries land in a cache outside the
# repository and a build is skipped when they are already there (or KUBEBUILDER_ASSETS has them).
set -euo pipefail

KUBERNETES_VERSION=${KUBERNETES_VERSION:-v1.35.4}
ETCD_VERSION=${ETCD_VERSION:-v3.6.16}
HELM_VERSION=${HELM_VERSION:-v3.22.0}
CACHE_DIR=${TRAFFICMIRROR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/trafficmirror}
BIN_DIR="$CACHE_DIR/bin/k8s-$KUBERNETES_VERSION-etcd-$ETCD_VERSION-helm-$HELM_VERSION"

have() { [ -x "$1/$2" ]; }

if [ -n "${KUBEBUILDER_ASSETS:-}" ] && have "$KUBEBUILDER_ASSETS" kube-apiserver && have "$KUBEBUILDER_ASSETS" etcd; then
  echo "$KUBEBUILDER_ASSETS"
  exit 0
fi
mkdir -p "$BIN_DIR"
if have "$BIN_DIR" kube-apiserver && have "$BIN_DIR" kubectl && have "$BIN_DIR" etcd && have "$BIN_DIR" helm; then
  echo "$BIN_DIR"
  exit 0
fi

export GOFLAGS=-mod=mod GOTOOLCHAIN=local CGO_ENABLED=0
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# k8s.io/kubernetes pins its staging modules at v0.0.0 with replace directives to its own tree;
# a module that imports it must point each of them at the published v0.Y.Z instead.
staging_version="v0.${KUBERNETES_VERSION#v1.}"
build_kubernetes() {
  local dir="$work/kubernetes"
  mkdir -p "$dir"
  local gomod
  gomod=$(cd "$dir" && go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  {
    echo "module trafficmirror.io/testbed/kubernetes"
    echo "go 1.24"
    echo "require k8s.io/kubernetes $KUBERNETES_VERSION"
    grep -oE '^\s*k8s\.io/[a-z0-9-]+ => \./staging/src/k8s\.io/[a-z0-9-]+' "$gomod" \
      | awk -v v="$staging_version" '{print "replace " $1 " => " $1 " " v}'
  } >"$dir/go.mod"
  cat >"$dir/tools.go" <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
  (cd "$dir" && go mod tidy -e >/dev/null 2>&1 || true)
  (cd "$dir" && go build -trimpath -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=$KUBERNETES_VERSION -X k8s.io/client-go/pkg/version.gitVersion=$KUBERNETES_VERSION" \
      -o "$BIN_DIR/" k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kubectl)
}

build_etcd() {
  local dir="$work/etcd"
  mkdir -p "$dir"
  cat >"$dir/go.mod" <<GOMOD
module trafficmirror.io/testbed/etcd
go 1.24
require go.etcd.io/etcd/server/v3 $ETCD_VERSION
GOMOD
  cat >"$dir/tools.go" <<'GO'
//go:build tools

package tools

import _ "go.etcd.io/etcd/server/v3"
GO
  (cd "$dir" && go mod tidy -e >/dev/null 2>&1 || true)
  (cd "$dir" && go build -trimpath -ldflags "-s -w" -o "$BIN_DIR/etcd" go.etcd.io/etcd/server/v3)
}

build_helm() {
  GOBIN="$BIN_DIR" go install -trimpath -ldflags "-s -w" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
}

start=$(date +%s)
have "$BIN_DIR" etcd || build_etcd >&2
have "$BIN_DIR" kube-apiserver && have "$BIN_DIR" kubectl || build_kubernetes >&2
have "$BIN_DIR" helm || build_helm >&2
echo "built test bed binaries in $(( $(date +%s) - start ))s" >&2
echo "$BIN_DIR"

#!/usr/bin/env bash
# make kube-bins: build the five Kubernetes binaries the lab's node runs
# (kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kubectl)
# from the Go module k8s.io/kubernetes, once per version, into a cache that
# later runs (and later test runs on the same machine) reuse.
#
# No Debian package ships the control plane, and `go install` refuses the
# module because of its replace directives, so a wrapper module requires it
# and replaces each staging module with its published version. The result is
# built in a temporary directory and renamed into place, so the cache holds
# either a whole set of binaries or none.
#
# Usage: tools/lab/kube_build.sh [VERSION]   (env: KUBE_CACHE, default /var/cache/escape/kubernetes)
set -euo pipefail

VERSION=${1:-${KUBE_VERSION:-v1.36.3}}
CACHE=${KUBE_CACHE:-/var/cache/escape/kubernetes}
DEST=$CACHE/$VERSION
BINS=(kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl)
GO=${GO:-go}

log() { printf '[kube-bins] %s\n' "$*" >&2; }
die() { printf '[kube-bins] ERROR: %s\n' "$*" >&2; exit 1; }

# whole DIR: every binary is present and reports VERSION.
whole() {
  local b out
  for b in "${BINS[@]}"; do
    [ -x "$1/$b" ] || return 1
    if [ "$b" = kubectl ]; then out=$("$1/$b" version --client 2>/dev/null) || return 1
    else out=$("$1/$b" --version 2>/dev/null) || return 1; fi
    case "$out" in *"$VERSION"*) ;; *) return 1 ;; esac
  done
}

if whole "$DEST"; then
  log "cached: $DEST"
  exit 0
fi

[[ $VERSION =~ ^v1\.([0-9]+)\.([0-9]+)$ ]] || die "version $VERSION is not of the form v1.N.M"
STAGING_VERSION="v0.${BASH_REMATCH[1]}.${BASH_REMATCH[2]}"

mkdir -p "$CACHE"
WORK=$(mktemp -d "$CACHE/.build-$VERSION.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
MOD=$WORK/mod
mkdir -p "$MOD" "$WORK/bin"

log "fetching k8s.io/kubernetes@$VERSION's go.mod"
gomod=$(cd "$MOD" && GOFLAGS=-mod=mod $GO mod download -json "k8s.io/kubernetes@$VERSION" | sed -n 's/.*"GoMod": "\(.*\)",*/\1/p')
[ -f "$gomod" ] || die "could not download k8s.io/kubernetes@$VERSION's go.mod (is the Go module proxy reachable?)"
goversion=$(sed -n 's/^go \([0-9.]*\)$/\1/p' "$gomod")
# The staging modules are replaced by local paths in the module; published
# copies exist under v0.N.M, except sample-cli-plugin, which the build does
# not need and the proxy lacks.
mapfile -t staging < <(sed -n 's#^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => \./staging/.*#\1#p' "$gomod" | grep -v '^k8s.io/sample-cli-plugin$')
[ ${#staging[@]} -gt 0 ] || die "no staging modules found in $gomod"

{
  echo "module escape.local/kubebuild"
  echo
  echo "go ${goversion:-1.26.0}"
  echo
  echo "require k8s.io/kubernetes $VERSION"
  echo
  for m in "${staging[@]}"; do echo "replace $m => $m $STAGING_VERSION"; done
} >"$MOD/go.mod"
{
  echo "//go:build tools"
  echo
  echo "package tools"
  echo
  echo "import ("
  for b in "${BINS[@]}"; do echo "	_ \"k8s.io/kubernetes/cmd/$b\""; done
  echo ")"
} >"$MOD/tools.go"

log "resolving the wrapper module (${#staging[@]} staging modules at $STAGING_VERSION)"
(cd "$MOD" && GOFLAGS=-mod=mod $GO mod tidy -e >"$WORK/tidy.log" 2>&1) || { cat "$WORK/tidy.log" >&2; die "go mod tidy failed"; }

log "building ${BINS[*]} (about 6 min and 2 GB on 2 cores when the Go build cache is cold)"
pkgs=()
for b in "${BINS[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$b"); done
(cd "$MOD" && CGO_ENABLED=0 $GO build -trimpath \
  -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=$VERSION" \
  -o "$WORK/bin/" "${pkgs[@]}") || die "go build of the Kubernetes binaries failed"

whole "$WORK/bin" || die "the built binaries do not report $VERSION"
rm -rf "$DEST.old"
[ -e "$DEST" ] && mv "$DEST" "$DEST.old"
mv "$WORK/bin" "$DEST"
rm -rf "$DEST.old"
log "built: $DEST"

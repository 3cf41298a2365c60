#!/usr/bin/env bash
# Refresh testdata/schemas/ from the Kubernetes source at a pinned release:
#   make k8s-schemas                      # the version in testdata/schemas/VERSION
#   K8S_VERSION=v1.35.0 make k8s-schemas  # move to another release
# The Go module proxy serves k8s.io/kubernetes' source, which carries the
# OpenAPI v3 documents under api/openapi-spec/v3. The files are copied
# verbatim; SHA256SUMS lets the tests notice a hand edit.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=$here/testdata/schemas
version=${K8S_VERSION:-$(cat "$out/VERSION")}
files=(api__v1_openapi.json apis__apps__v1_openapi.json)

# Outside the repository's module, so go.mod and go.sum are not touched.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
dir=$(cd "$tmp" && GOFLAGS=-mod=mod go mod download -json "k8s.io/kubernetes@$version" |
	sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')
[[ -d $dir ]] || { echo "k8s.io/kubernetes@$version: no module directory" >&2; exit 1; }
for f in "${files[@]}"; do
	install -m 0644 "$dir/api/openapi-spec/v3/$f" "$out/$f"
done
echo "$version" >"$out/VERSION"
(cd "$out" && sha256sum "${files[@]}" >SHA256SUMS)
echo "schemas of Kubernetes $version in $out"

#!/usr/bin/env bash
# Builds Blueprint's container image without pulling any base image and
# prints its tag: the binary is compiled here with the Go toolchain (static,
# CGO off) and copied into an empty (scratch) image by ./Dockerfile.
#
#   deploy/docker/build.sh              # -> blueprint:<hash>, also tagged blueprint:dev
#   docker run --rm -p 127.0.0.1:3001:3001 blueprint:dev
#
# The tag's hash covers every input (the Go sources, go.mod, go.sum, this
# directory and the Go version), so an unchanged tree builds nothing: the
# image is already there.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
export PATH="/usr/local/go/bin:$PATH"

key=$({
  git ls-files -z --cached --others --exclude-standard -- cmd internal go.mod go.sum deploy/docker |
    sort -z | xargs -0 sha256sum
  go version
} | sha256sum | cut -c1-16)
tag="blueprint:$key"
if ! docker image inspect "$tag" >/dev/null 2>&1; then
  ctx=$(mktemp -d)
  trap 'rm -rf "$ctx"' EXIT
  echo "building $tag" >&2
  CGO_ENABLED=0 GOOS=linux GOFLAGS=-mod=readonly go build -trimpath -ldflags='-s -w' \
    -o "$ctx/rootfs/blueprint" ./cmd/blueprint
  mkdir -p "$ctx/rootfs/data" "$ctx/rootfs/tmp"
  chmod 0700 "$ctx/rootfs/data" "$ctx/rootfs/tmp"
  cp deploy/docker/Dockerfile "$ctx/"
  revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
  DOCKER_BUILDKIT=0 docker build --quiet --build-arg VERSION="$key" --build-arg REVISION="$revision" -t "$tag" "$ctx" >&2
fi
docker tag "$tag" blueprint:dev
echo "$tag"

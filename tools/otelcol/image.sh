#!/usr/bin/env bash
# Builds the collector's image from the binary build.sh makes (cached) and
# prints its tag, blueprint-otelcol:<the binary's cache key>, also tagged
# blueprint-otelcol:dev. Nothing is pulled: the base is scratch.
#
#   docker compose … uses it as BLUEPRINT_OTELCOL_IMAGE=$(tools/otelcol/image.sh)
set -euo pipefail
cd "$(dirname "$0")"
bin=$(./build.sh)
key=$({ cat "$bin" Dockerfile; } | sha256sum | cut -c1-16)
tag="blueprint-otelcol:$key"
if ! docker image inspect "$tag" >/dev/null 2>&1; then
  ctx=$(mktemp -d)
  trap 'rm -rf "$ctx"' EXIT
  cp "$bin" Dockerfile "$ctx/"
  echo "building $tag" >&2
  DOCKER_BUILDKIT=0 docker build --quiet --build-arg VERSION="$key" -t "$tag" "$ctx" >&2
fi
docker tag "$tag" blueprint-otelcol:dev
echo "$tag"

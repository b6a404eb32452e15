#!/usr/bin/env bash
# Builds the OpenTelemetry Collector described by manifest.yaml with the
# official collector builder (ocb, pinned by this module's go.mod) and
# prints the binary's path. The binary is cached under
# ${XDG_CACHE_HOME:-~/.cache}/blueprint by a hash of this directory's files
# and the Go version, so only the first run builds (about 5 minutes and
# 2.4 GB of module cache on 2 cores); the next ones print the path.
#
#   otelcol=$(tools/otelcol/build.sh)
#   "$otelcol" validate --config=deploy/observability/otel-collector.yaml
set -euo pipefail
cd "$(dirname "$0")"
# The builder runs go mod tidy on the collector's generated module, which
# -mod=readonly (set by .ci/run for Blueprint's own module) would refuse.
export GOFLAGS=

root="${XDG_CACHE_HOME:-$HOME/.cache}/blueprint"
key=$({ cat build.sh manifest.yaml go.mod go.sum; go version; } | sha256sum | cut -c1-16)
bin="$root/otelcol-$key/otelcol-blueprint"
if [ ! -x "$bin" ]; then
  mkdir -p "$root"
  (
    # One build at a time, whatever its key: they share _build. A run that
    # waited finds the binary built.
    flock 9
    if [ ! -x "$bin" ]; then
      echo "building the collector of tools/otelcol/manifest.yaml into $(dirname "$bin")" >&2
      rm -rf _build
      go tool builder --config=manifest.yaml >&2
      mkdir -p "$(dirname "$bin")"
      mv _build/otelcol-blueprint "$bin.tmp"
      mv "$bin.tmp" "$bin"
      rm -rf _build
    fi
  ) 9>"$root/otelcol.lock"
fi
echo "$bin"

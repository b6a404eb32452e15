#!/usr/bin/env bash
# Builds Docker Compose (the `docker compose` CLI plugin) from its source on
# the Go module proxy, for machines whose packages offer only the old
# Python docker-compose, and installs it as a CLI plugin for this user
# (~/.docker/cli-plugins/docker-compose). Prints the plugin's path.
#
# The binary is cached under ${XDG_CACHE_HOME:-~/.cache}/blueprint by a
# hash of this script and the Go version: only the first run builds (about
# 2 minutes on 2 cores).
set -euo pipefail
cd "$(dirname "$0")"
export PATH="/usr/local/go/bin:$PATH"
# Compose's go.mod has exclude directives, so `go install module@version`
# refuses it: the build runs in a copy of the module's source instead, as
# its own main module.
export GOFLAGS=
version=v5.6.0
module=github.com/docker/compose/v5

root="${XDG_CACHE_HOME:-$HOME/.cache}/blueprint"
key=$({ cat build.sh; go version; } | sha256sum | cut -c1-16)
bin="$root/compose-$key/docker-compose"
if [ ! -x "$bin" ]; then
  mkdir -p "$root"
  (
    flock 9
    if [ ! -x "$bin" ]; then
      echo "building Docker Compose $version into $(dirname "$bin")" >&2
      src=$(go mod download -json "$module@$version" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
      work=$(mktemp -d)
      trap 'chmod -R u+w "$work"; rm -rf "$work"' EXIT
      cp -r "$src/." "$work"
      chmod -R u+w "$work"
      mkdir -p "$(dirname "$bin")"
      (cd "$work" && go build -trimpath -ldflags "-s -w -X $module/internal.Version=$version" -o "$bin.tmp" ./cmd) >&2
      mv "$bin.tmp" "$bin"
    fi
  ) 9>"$root/compose.lock"
fi
plugins="${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins"
mkdir -p "$plugins"
ln -sf "$bin" "$plugins/docker-compose"
echo "$plugins/docker-compose"

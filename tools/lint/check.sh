#!/usr/bin/env bash
# The Go toolchain's checks beyond vet, on every module of the repository:
# staticcheck (with the build tags of the suites, so their files are
# checked too) and govulncheck against an offline copy of the Go
# vulnerability database, whose findings vulngate compares with
# vuln-accepted.txt. The tools and the database are pinned by this
# directory's go.mod (golang.org/x/vulndb is the database's own module on
# the module proxy; indexdb turns its OSV files into the layout govulncheck
# reads); both are cached under ${XDG_CACHE_HOME:-~/.cache}/blueprint.
# Update the database with: cd tools/lint && go get golang.org/x/vulndb@latest
#
#   tools/lint/check.sh
set -euo pipefail
cd "$(dirname "$0")"
lint=$PWD
root=$(cd ../.. && pwd)
export GOFLAGS=

cache="${XDG_CACHE_HOME:-$HOME/.cache}/blueprint"
key=$({ cat go.mod go.sum vulngate/*.go; go version; } | sha256sum | cut -c1-16)
bin="$cache/lint-$key"
if [ ! -x "$bin/vulngate" ]; then
  mkdir -p "$bin"
  go build -o "$bin/" honnef.co/go/tools/cmd/staticcheck golang.org/x/vuln/cmd/govulncheck \
    golang.org/x/vulndb/cmd/indexdb ./vulngate
fi
vulndb_version=$(go list -m -f '{{.Version}}' golang.org/x/vulndb)
db="$cache/vulndb-$vulndb_version"
if [ ! -f "$db/index/db.json" ]; then
  rm -rf "$db.tmp"
  "$bin/indexdb" -vulns "$(go list -m -f '{{.Dir}}' golang.org/x/vulndb)/data/osv" -out "$db.tmp"
  mv "$db.tmp" "$db"
fi

# Every module but this one; the suites' build tags where they have any.
modules=(".:security,resilience,fault,perf,scale" "test/deploy:" "test/fault:fault" "test/browser:")
for entry in "${modules[@]}"; do
  dir=${entry%%:*} tags=${entry#*:}
  echo "staticcheck ${dir} ${tags:+(tags $tags)}"
  (cd "$root/$dir" && "$bin/staticcheck" ${tags:+-tags=$tags} ./...)
done
echo "govulncheck (database golang.org/x/vulndb@${vulndb_version})"
for entry in "${modules[@]}"; do
  dir=${entry%%:*} tags=${entry#*:}
  (cd "$root/$dir" && "$bin/govulncheck" -db "file://$db" ${tags:+-tags=$tags} -format json ./...)
done | "$bin/vulngate" "$lint/vuln-accepted.txt"

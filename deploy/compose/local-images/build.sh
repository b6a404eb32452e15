#!/usr/bin/env bash
# Builds two Docker images that stand in for the official postgres:15 and
# redis:7 images, from Debian bookworm's packages, for machines that reach
# no image registry; prints their tags as shell assignments:
#
#   BLUEPRINT_POSTGRES_IMAGE=blueprint-local/postgres:15-<key>
#   BLUEPRINT_REDIS_IMAGE=blueprint-local/redis:7-<key>
#
#   eval "$(deploy/compose/local-images/build.sh)"
#   export BLUEPRINT_POSTGRES_IMAGE BLUEPRINT_REDIS_IMAGE
#
# <key> is a hash of this directory's build files. When both tags exist in
# the Docker engine, nothing is done; else the images saved under
# ${XDG_CACHE_HOME:-~/.cache}/blueprint/local-images-<key>/images.tar are
# loaded; else they are built: debootstrap makes one Debian filesystem with
# PostgreSQL 15 and Redis, `docker import` makes it a base image, and
# postgres.Dockerfile and redis.Dockerfile add an entrypoint each. Then both
# images are saved to that tarball. A cold build needs root, debootstrap and
# the Debian archive (BLUEPRINT_DEBIAN_MIRROR, default
# http://deb.debian.org/debian); progress goes to stderr.
set -euo pipefail
cd "$(dirname "$0")"
# The images are built with the classic builder: the Dockerfiles use
# nothing else, and the buildx plugin may be missing.
export DOCKER_BUILDKIT=0

mirror="${BLUEPRINT_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
root="${XDG_CACHE_HOME:-$HOME/.cache}/blueprint"
key=$(sha256sum build.sh ./*.Dockerfile ./*-entrypoint.sh | sha256sum | cut -c1-16)
pg="blueprint-local/postgres:15-$key"
redis="blueprint-local/redis:7-$key"
cache="$root/local-images-$key"
tarball="$cache/images.tar"

have_images() {
  docker image inspect "$pg" "$redis" >/dev/null 2>&1
}

# unmount_under DIR: unmounts whatever debootstrap left mounted under DIR
# (/proc, /sys of the chroot) when it was interrupted.
unmount_under() {
  awk -v p="$1/" 'index($2, p) == 1 { print $2 }' /proc/mounts | sort -r |
    while read -r m; do umount -l "$m" || true; done
}

build_images() {
  if [ "$(id -u)" != 0 ]; then
    echo "local-images: building needs root (debootstrap, chroot)" >&2
    exit 1
  fi
  command -v debootstrap >/dev/null || {
    echo "local-images: building needs debootstrap (apt-get install debootstrap)" >&2
    exit 1
  }
  work="$cache.build"
  local rootfs="$work/rootfs"
  local base="blueprint-local/bookworm-base:$key"
  # Whatever happens, the work directory goes; --one-file-system keeps rm
  # out of anything still mounted in it.
  trap 'unmount_under "$work"; rm -rf --one-file-system "$work"' EXIT
  unmount_under "$work"
  rm -rf --one-file-system "$work"
  mkdir -p "$rootfs"

  echo "local-images: debootstrap bookworm from $mirror into $rootfs" >&2
  local start=$SECONDS
  # Its 600 lines of progress go to a log, shown when it fails.
  if ! debootstrap --variant=minbase --include=postgresql-15,redis-server \
    bookworm "$rootfs" "$mirror" >"$work/debootstrap.log" 2>&1; then
    tail -n 40 "$work/debootstrap.log" >&2
    echo "local-images: debootstrap failed" >&2
    exit 1
  fi
  echo "local-images: debootstrap took $((SECONDS - start)) s" >&2

  # postgresql-common made a cluster "main" in Debian's layout
  # (/etc/postgresql, /var/lib/postgresql/15); the image keeps its cluster
  # in $PGDATA, made by the entrypoint, as the official image does.
  rm -rf "$rootfs/etc/postgresql/15" "$rootfs/var/lib/postgresql/15"
  # initdb copies this sample into postgresql.conf: listen on every
  # interface, as the official image does.
  local sample="$rootfs/usr/share/postgresql/15/postgresql.conf.sample"
  sed -ri "s!^#?(listen_addresses)\s*=\s*\S+.*!\1 = '*'!" "$sample"
  grep -q "^listen_addresses = '\*'" "$sample"
  # The official image's locale, en_US.UTF-8, compiled into
  # /usr/lib/locale/locale-archive; the locale sources go below.
  chroot "$rootfs" localedef -i en_US -c -f UTF-8 -A /usr/share/locale/locale.alias en_US.UTF-8
  chroot "$rootfs" /bin/sh -eu -c '
    mkdir -p /var/lib/postgresql/data /var/run/postgresql /docker-entrypoint-initdb.d /data
    chown postgres:postgres /var/lib/postgresql/data /var/run/postgresql
    chmod 1777 /var/lib/postgresql/data
    chmod 3777 /var/run/postgresql
    chown redis:redis /data
  '
  # PostgreSQL's JIT compiler (llvmjit.so and the LLVM and Z3 libraries
  # it loads: 150 MB, 40% of the filesystem). Without llvmjit.so the
  # server runs every query interpreted, as with jit = off; nothing else
  # changes.
  rm -rf "$rootfs"/usr/lib/postgresql/15/lib/llvmjit* "$rootfs"/usr/lib/postgresql/15/lib/bitcode \
    "$rootfs"/usr/lib/*-linux-gnu/libLLVM-14.so* "$rootfs"/usr/lib/*-linux-gnu/libz3.so*
  # Nothing the images run needs these: package lists and caches, docs,
  # man pages, translations, locale sources, logs of the installation.
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/* \
    "$rootfs"/var/cache/debconf/*-old "$rootfs"/var/lib/dpkg/*-old \
    "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* \
    "$rootfs"/usr/share/locale/* "$rootfs"/usr/share/i18n "$rootfs"/usr/share/lintian
  find "$rootfs/var/log" -type f -delete
  # Docker provides these per container; the host's must not stay in the image.
  : >"$rootfs/etc/resolv.conf"
  : >"$rootfs/etc/hostname"

  echo "local-images: importing the filesystem as $base" >&2
  tar --numeric-owner -C "$rootfs" -cf - . | docker import - "$base" >&2

  local name tag
  for name in postgres redis; do
    case "$name" in
      postgres) tag="$pg" ;;
      redis) tag="$redis" ;;
    esac
    # A context of its own per image, with the entrypoint executable
    # whatever mode the checkout gave it.
    mkdir -p "$work/$name"
    cp "$name.Dockerfile" "$work/$name/Dockerfile"
    cp "$name-entrypoint.sh" "$work/$name/"
    chmod 0755 "$work/$name/$name-entrypoint.sh"
    echo "local-images: building $tag" >&2
    docker build --build-arg BASE="$base" -t "$tag" "$work/$name" >&2
  done
  # Only the tag goes: the images share the base's layer.
  docker rmi "$base" >/dev/null

  echo "local-images: saving both images to $tarball" >&2
  mkdir -p "$cache"
  docker save -o "$tarball.tmp" "$pg" "$redis"
  mv "$tarball.tmp" "$tarball"
}

if ! have_images; then
  if ! docker info >/dev/null 2>&1; then
    echo "local-images: the Docker engine does not answer (docker info)" >&2
    exit 1
  fi
  mkdir -p "$root"
  (
    # One build at a time, whatever its key: debootstrap is heavy and the
    # engine is shared. A run that waited finds the images there.
    flock 9
    if have_images; then
      :
    elif [ -s "$tarball" ] && docker load -i "$tarball" >&2 && have_images; then
      echo "local-images: loaded $pg and $redis from $tarball" >&2
    else
      if [ -e "$tarball" ]; then
        echo "local-images: $tarball did not give both images; building again" >&2
        rm -f "$tarball"
      fi
      build_images
    fi
  ) 9>"$root/local-images.lock"
fi
echo "BLUEPRINT_POSTGRES_IMAGE=$pg"
echo "BLUEPRINT_REDIS_IMAGE=$redis"

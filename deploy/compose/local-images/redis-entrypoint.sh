#!/usr/bin/env bash
# Entrypoint of the local redis image, after the official redis image's
# docker-entrypoint.sh. Started as root, it makes /data (the working
# directory) the redis user's and re-executes itself as that user;
# redis-server replaces this script (PID 1).
#
# The official image's redis-server is built with protected mode off, so
# that it answers other containers without a password. Debian's is not, so
# "--protected-mode no" is added to redis-server's arguments unless a config
# file given as the first argument sets protected-mode itself. Later
# arguments still override it.
set -Eeuo pipefail

# No argument, or an option or a config file as the first, means
# redis-server.
if [ $# -eq 0 ] || [ "${1:0:1}" = '-' ] || [ "${1%.conf}" != "$1" ]; then
  set -- redis-server "$@"
fi

if [ "$1" = 'redis-server' ] && [ "$(id -u)" = '0' ]; then
  find . \! -user redis -exec chown redis '{}' +
  HOME="$(getent passwd redis | cut -d: -f6)"
  export HOME
  exec setpriv --reuid=redis --regid=redis --init-groups "${BASH_SOURCE[0]}" "$@"
fi

if [ "$1" = 'redis-server' ]; then
  shift
  conf=()
  if [ $# -gt 0 ] && [ "${1:0:1}" != '-' ]; then
    conf=("$1")
    shift
  fi
  protected=(--protected-mode no)
  if [ ${#conf[@]} -gt 0 ] && grep -qiE '^[[:space:]]*protected-mode[[:space:]]' "${conf[0]}" 2>/dev/null; then
    protected=()
  fi
  # As the official image: files redis writes are the redis user's only,
  # unless the container sets a umask of its own.
  if [ "$(umask)" = '0022' ]; then
    umask 0077
  fi
  set -- redis-server "${conf[@]}" "${protected[@]}" "$@"
fi

exec "$@"

#!/usr/bin/env bash
# Entrypoint of the local postgres image. It follows the official postgres
# image's docker-entrypoint.sh for what a Compose file uses:
#
#   POSTGRES_USER       superuser made by initdb (default postgres)
#   POSTGRES_PASSWORD   its password; required unless
#                       POSTGRES_HOST_AUTH_METHOD=trust
#   POSTGRES_DB         database created on first start (default: the user)
#   POSTGRES_INITDB_ARGS, POSTGRES_HOST_AUTH_METHOD (default scram-sha-256)
#   PGDATA              data directory (default /var/lib/postgresql/data)
#
# Each of POSTGRES_USER, POSTGRES_PASSWORD, POSTGRES_DB and
# POSTGRES_INITDB_ARGS may come from a file instead: POSTGRES_PASSWORD_FILE
# and so on. Scripts in /docker-entrypoint-initdb.d (*.sh, *.sql,
# *.sql.gz) run once, after the database is created.
#
# On a data directory without PG_VERSION it runs initdb, then a private
# server (no TCP, socket in a temporary directory, so pg_isready does not
# report ready before the real server runs) to create the database and run
# the scripts. A data directory that holds a cluster is used as it is.
# Started as root, it makes the data directory the postgres user's and
# re-executes itself as that user; postgres replaces this script (PID 1).
set -Eeuo pipefail

# file_env VAR [DEFAULT]: VAR from $VAR or from the file named by VAR_FILE.
file_env() {
  local var="$1" fileVar="${1}_FILE" def="${2:-}"
  if [ -n "${!var:-}" ] && [ -n "${!fileVar:-}" ]; then
    echo >&2 "error: both $var and $fileVar are set (but are exclusive)"
    exit 1
  fi
  local val="$def"
  if [ -n "${!var:-}" ]; then
    val="${!var}"
  elif [ -n "${!fileVar:-}" ]; then
    val="$(<"${!fileVar}")"
  fi
  export "$var"="$val"
  unset "$fileVar"
}

# No argument or an option as the first means postgres.
if [ $# -eq 0 ] || [ "${1:0:1}" = '-' ]; then
  set -- postgres "$@"
fi

if [ "$1" != 'postgres' ]; then
  exec "$@"
fi

: "${PGDATA:=/var/lib/postgresql/data}"
export PGDATA

if [ "$(id -u)" = '0' ]; then
  mkdir -p "$PGDATA" /var/run/postgresql
  # As the official image: whatever is not the postgres user's becomes
  # its (a data directory made by another image's uid, a bind mount).
  find "$PGDATA" /var/run/postgresql \! -user postgres -exec chown postgres:postgres '{}' +
  chmod 700 "$PGDATA"
  chmod 3777 /var/run/postgresql
  HOME="$(getent passwd postgres | cut -d: -f6)"
  export HOME
  exec setpriv --reuid=postgres --regid=postgres --init-groups "${BASH_SOURCE[0]}" "$@"
fi

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  file_env POSTGRES_USER postgres
  file_env POSTGRES_PASSWORD
  file_env POSTGRES_DB "$POSTGRES_USER"
  file_env POSTGRES_INITDB_ARGS
  : "${POSTGRES_HOST_AUTH_METHOD:=scram-sha-256}"

  if [ -z "$POSTGRES_PASSWORD" ] && [ "$POSTGRES_HOST_AUTH_METHOD" != 'trust' ]; then
    cat >&2 <<'EOM'
error: the database is uninitialized and no superuser password is given.
       Set POSTGRES_PASSWORD (or POSTGRES_PASSWORD_FILE) to a non-empty value,
       or POSTGRES_HOST_AUTH_METHOD=trust to allow every connection without one.
EOM
    exit 1
  fi

  mkdir -p "$PGDATA"
  chmod 700 "$PGDATA" 2>/dev/null || :

  echo >&2 "initializing the cluster in $PGDATA"
  tmp="$(mktemp -d)"
  pwfile=()
  if [ -n "$POSTGRES_PASSWORD" ]; then
    printf '%s\n' "$POSTGRES_PASSWORD" >"$tmp/pw"
    pwfile=(--pwfile="$tmp/pw")
  fi
  # shellcheck disable=SC2086 # POSTGRES_INITDB_ARGS is a list of options
  initdb --username="$POSTGRES_USER" "${pwfile[@]}" $POSTGRES_INITDB_ARGS >&2
  rm -f "$tmp/pw"

  # Local (socket) connections keep initdb's trust, as in the official
  # image; connections over TCP from anywhere need the password.
  printf '\nhost all all all %s\n' "$POSTGRES_HOST_AUTH_METHOD" >>"$PGDATA/pg_hba.conf"

  pg_ctl -D "$PGDATA" -w start \
    -o "-c listen_addresses='' -c unix_socket_directories='$tmp'" >&2
  export PGHOST="$tmp" PGUSER="$POSTGRES_USER" PGPASSWORD="$POSTGRES_PASSWORD"
  psql=(psql -v ON_ERROR_STOP=1 --no-psqlrc --no-password)

  if [ "$POSTGRES_DB" != 'postgres' ]; then
    "${psql[@]}" --dbname=postgres --set=db="$POSTGRES_DB" >&2 <<<'CREATE DATABASE :"db";'
  fi

  export PGDATABASE="$POSTGRES_DB"
  for f in /docker-entrypoint-initdb.d/*; do
    [ -e "$f" ] || continue
    case "$f" in
      *.sh)
        echo >&2 "running $f"
        # shellcheck disable=SC1090 # the scripts are the user's
        if [ -x "$f" ]; then "$f"; else . "$f"; fi
        ;;
      *.sql)
        echo >&2 "running $f"
        "${psql[@]}" -f "$f" >&2
        ;;
      *.sql.gz)
        echo >&2 "running $f"
        gunzip -c "$f" | "${psql[@]}" >&2
        ;;
      *) echo >&2 "ignoring $f" ;;
    esac
  done

  pg_ctl -D "$PGDATA" -m fast -w stop >&2
  rmdir "$tmp"
  unset PGHOST PGUSER PGPASSWORD PGDATABASE
  echo >&2 "the cluster is initialized; starting postgres"
fi

exec "$@"

# A stand-in for the official postgres:15 image (Debian flavour), built on
# the Debian bookworm base that build.sh makes with debootstrap. The base
# already holds PostgreSQL 15, the postgres user, /var/run/postgresql and
# the data directory; this file adds only the entrypoint and the metadata.
ARG BASE
FROM ${BASE}
ENV LANG=en_US.utf8 \
    PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PGDATA=/var/lib/postgresql/data
COPY postgres-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
VOLUME /var/lib/postgresql/data
# As the official image: starts as root to own the data directory, then
# runs postgres as the postgres user; SIGINT is PostgreSQL's fast shutdown,
# so docker stop does not wait for clients to disconnect.
STOPSIGNAL SIGINT
EXPOSE 5432
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["postgres"]

# A stand-in for the official redis:7 image, built on the Debian bookworm
# base that build.sh makes with debootstrap. The base already holds
# redis-server, redis-cli, the redis user and /data.
ARG BASE
FROM ${BASE}
ENV LANG=C.UTF-8
COPY redis-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
VOLUME /data
WORKDIR /data
EXPOSE 6379
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["redis-server"]

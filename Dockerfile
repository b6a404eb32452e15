# Blueprint's image, built from source in a Go container:
#
#   docker build -t blueprint .
#
# It is the image deploy/docker/build.sh makes on a machine that cannot pull
# golang: (it compiles the binary with the local Go toolchain and uses
# deploy/docker/Dockerfile instead). Both files end with the same final
# stage; a test keeps them identical.
FROM golang:1.26.8-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY cmd cmd
COPY internal internal
RUN CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o /rootfs/blueprint ./cmd/blueprint \
 && mkdir -p /rootfs/data /rootfs/tmp

FROM scratch AS rootfs
COPY --from=build /rootfs/ /

FROM scratch
ARG VERSION=dev
ARG REVISION=unknown
LABEL org.opencontainers.image.title="blueprint" \
      org.opencontainers.image.description="Blueprint: an API gateway, users, orders and notifications services over HTTP and NATS JetStream, in one binary" \
      org.opencontainers.image.source="https://github.com/ds-blueprint/blueprint" \
      org.opencontainers.image.documentation="https://github.com/ds-blueprint/blueprint/blob/main/docs/deploy.md" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
COPY --from=rootfs /blueprint /blueprint
COPY --from=rootfs --chown=65532:65532 /tmp /tmp
COPY --from=rootfs --chown=65532:65532 /data /data
# The data dir holds SQLite files and the embedded NATS store when no
# PostgreSQL or NATS is configured. JSON logs, one object per line, for the
# collector or `docker logs`. Listen addresses stay the binary's (loopback):
# a deployment names each one it publishes, e.g.
# `docker run -e GATEWAY_ADDR=0.0.0.0:3001 -p 127.0.0.1:3001:3001 blueprint:dev`.
ENV BLUEPRINT_DATA_DIR=/data \
    LOG_FORMAT=json
# A numeric user, so runAsNonRoot can verify it without an /etc/passwd.
USER 65532:65532
WORKDIR /data
VOLUME ["/data"]
EXPOSE 3001 3002 3003 3004 9101 9102 9103 9104
ENTRYPOINT ["/blueprint"]
CMD ["run"]

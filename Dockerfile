# syntax=docker/dockerfile:1
# Errand: a static binary on a distroless base, run as a non-root user.
#   docker build -t errand .
#   docker run --rm -v /etc/errand:/etc/errand:ro -e ERRAND_SYSTEM_SECRET -e ERRAND_DATABASE_URL \
#     errand migrate --config /etc/errand/errand.yaml      # once per install or upgrade, as the schema owner
#   docker run --rm -p 8080:8080 -v /etc/errand:/etc/errand:ro \
#     -e ERRAND_SYSTEM_SECRET -e ERRAND_DATABASE_URL errand
#
# Base images are pinned by exact version tag. Pin them by digest as well
# (FROM image:tag@sha256:…) where a registry is reachable: this file was
# written on a machine that could not reach one, so no digest was looked up
# or made up. distroless publishes no version tags; its digest is the pin.
FROM golang:1.26.8-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# modernc.org/sqlite is pure Go: no cgo, a fully static binary.
RUN CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o /out/errand ./cmd/errand

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/errand /usr/local/bin/errand
USER nonroot:nonroot
# In a container the server must listen on every interface, not loopback
# (serve --listen, or the config's listen:, override this).
ENV ERRAND_LISTEN=0.0.0.0:8080
EXPOSE 8080
# No shell, no curl: the binary probes its own /readyz (200 once the
# database answers). With tls: in the config, set
# ERRAND_HEALTHCHECK_URL=https://127.0.0.1:8080 and add --cacert or
# --insecure-skip-verify here.
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
  CMD ["/usr/local/bin/errand", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/errand"]
# As the systemd unit: the schema is migrated by `errand migrate` (above),
# run once by the schema owner, never by every replica as it starts; serve
# refuses a schema older or newer than it knows.
CMD ["serve", "--config", "/etc/errand/errand.yaml", "--no-migrate"]

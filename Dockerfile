# syntax=docker/dockerfile:1
# Errand: a static binary on a distroless base, run as a non-root user.
#   docker build -t errand .
#   docker run --rm -p 8443:8443 -v /etc/errand:/etc/errand:ro \
#     -e ERRAND_SYSTEM_SECRET -e ERRAND_DATABASE_URL errand
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# modernc.org/sqlite is pure Go: no cgo, a fully static binary.
RUN CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o /out/errand ./cmd/errand

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/errand /usr/local/bin/errand
USER nonroot:nonroot
EXPOSE 8443
ENTRYPOINT ["/usr/local/bin/errand"]
CMD ["serve", "--config", "/etc/errand/errand.yaml"]

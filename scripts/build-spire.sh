#!/usr/bin/env bash
# Builds SPIRE's spire-server and spire-agent once per machine into a cache
# directory outside the repository, for the SPIFFE integration tests
# (identity/spire_test.go and cmd/errand). The module is fetched from the Go
# module proxy; `go list -m -versions` may not list it, but `go get` at the
# exact version works. Prints the directory holding both binaries.
set -euo pipefail
SPIRE_VERSION=v1.13.3
CACHE=${ERRAND_SPIRE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/errand-spire}
BIN="$CACHE/bin/$SPIRE_VERSION"
if [ ! -x "$BIN/spire-server" ] || [ ! -x "$BIN/spire-agent" ]; then
  mkdir -p "$CACHE/build" "$BIN"
  cd "$CACHE/build"
  [ -f go.mod ] || go mod init spirebuild >/dev/null 2>&1
  # go get of the two commands (not only the module) records every
  # dependency they import in go.sum.
  go get "github.com/spiffe/spire/cmd/spire-server@$SPIRE_VERSION" \
    "github.com/spiffe/spire/cmd/spire-agent@$SPIRE_VERSION" >&2
  for cmd in spire-server spire-agent; do
    if [ ! -x "$BIN/$cmd" ]; then
      CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o "$BIN/$cmd.tmp" "github.com/spiffe/spire/cmd/$cmd" >&2
      mv "$BIN/$cmd.tmp" "$BIN/$cmd"
    fi
  done
fi
echo "$BIN"

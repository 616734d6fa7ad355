#!/usr/bin/env bash
# Builds HashiCorp Vault's server once per machine into a cache directory
# outside the repository, for the Vault integration tests. Only v1.21.0
# builds from the Go module proxy (see the team's VAULT.md). Prints the
# binary's path. Cold: ~2 min download + ~13 min compile on 2 cores.
set -euo pipefail
VAULT_VERSION=v1.21.0
CACHE=${ERRAND_VAULT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/errand-vault}
BIN="$CACHE/bin/vault-$VAULT_VERSION"
if [ ! -x "$BIN" ]; then
  mkdir -p "$CACHE/build" "$CACHE/bin"
  cd "$CACHE/build"
  [ -f go.mod ] || go mod init vaultbuild >/dev/null 2>&1
  go get "github.com/hashicorp/vault@$VAULT_VERSION" >&2
  CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o "$BIN.tmp" github.com/hashicorp/vault >&2
  mv "$BIN.tmp" "$BIN"
fi
echo "$BIN"

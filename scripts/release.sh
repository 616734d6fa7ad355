#!/usr/bin/env bash
# Builds Errand's release binaries: static (CGO_ENABLED=0; the SQLite driver
# is pure Go), reproducible paths (-trimpath), stamped with the commit they
# were built from (-buildvcs=true, whatever GOFLAGS says), for linux and
# darwin on amd64 and arm64, into dist/ with a SHA256SUMS file:
#
#   scripts/release.sh                      # all four targets
#   scripts/release.sh linux/amd64          # only the ones named
#   DIST=/tmp/out scripts/release.sh        # another output directory
#
# Each binary is dist/errand_<os>_<arch>; `errand version` names the
# module version, commit and commit time (internal/version), so no
# -ldflags -X is needed. Verify a download with `sha256sum -c SHA256SUMS`
# (or `shasum -a 256 -c` on macOS).
set -euo pipefail
cd "$(dirname "$0")/.."

dist="${DIST:-dist}"
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(linux/amd64 linux/arm64 darwin/amd64 darwin/arm64)
fi

mkdir -p "$dist"
rm -f "$dist"/errand_* "$dist/SHA256SUMS"
for t in "${targets[@]}"; do
  os="${t%/*}" arch="${t#*/}"
  case "$t" in
    linux/amd64|linux/arm64|darwin/amd64|darwin/arm64) ;;
    *) echo "release: unsupported target $t (linux|darwin)/(amd64|arm64)" >&2; exit 2 ;;
  esac
  out="$dist/errand_${os}_${arch}"
  echo "release: $out" >&2
  GOOS="$os" GOARCH="$arch" CGO_ENABLED=0 \
    go build -trimpath -buildvcs=true -ldflags='-s -w' -o "$out" ./cmd/errand
done
(cd "$dist" && sha256sum errand_* > SHA256SUMS)
echo "release: $dist/SHA256SUMS" >&2
cat "$dist/SHA256SUMS"

#!/usr/bin/env bash
# Builds pgplane's container image (deploy/image/Dockerfile) as pgplane:latest (or $1): the
# release binary, built here with the locked dependencies, in a build context of its own.
# When no `debian:bookworm-slim` image is present (images cannot be pulled on the CI
# machines), makes one from Debian packages first: debootstrap --variant=minbase bookworm
# with ca-certificates and pgbouncer, documentation and locales stripped, then `docker import`. Where
# images can be pulled, `docker pull debian:bookworm-slim` first and that one is used.
# With --from-test-build, no release build: the image holds the debug binary the test build
# already made ($CARGO_TARGET_DIR/debug/pgplane, `make test-build`), stripped; the end-to-end
# tests use it as pgplane:test. With --base-only, only makes the base image when missing.
# Usage: deploy/image/build.sh [--from-test-build | --base-only] [image-name]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$repo/target}"
from=release
case "${1:-}" in
  --from-test-build) from=debug; shift ;;
  --base-only) from=none; shift ;;
esac
image="${1:-pgplane:latest}"
base=debian:bookworm-slim
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"

if ! docker image inspect "$base" >/dev/null 2>&1; then
  root="$(mktemp -d /var/tmp/pgplane-base-rootfs.XXXXXX)"
  echo "building $base from Debian packages (takes a few minutes)"
  debootstrap --variant=minbase --include=ca-certificates,pgbouncer bookworm "$root" "$mirror" >"$root.log" 2>&1 \
    || { tail -n 20 "$root.log" >&2; rm -rf "$root" "$root.log"; exit 1; }
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/var/log/* \
    "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/locale/*
  tar -C "$root" -c . | docker import --change 'CMD ["bash"]' --change 'ENV LANG=C.UTF-8' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'LABEL pgplane.local-base=debootstrap' - "$base" >/dev/null
  rm -rf "$root" "$root.log"
  echo "built $base"
fi

[ "$from" != none ] || exit 0

# The binary: it links against glibc, so it is built on Debian 12 (or older) for bookworm.
if [ "$from" = release ]; then
  (cd "$repo" && cargo build --release --locked -p pgplane)
else
  [ -x "$target/debug/pgplane" ] || { echo "no $target/debug/pgplane: run make test-build first" >&2; exit 1; }
fi
context="$target/image-context"
rm -rf "$context" && mkdir -p "$context"
cp "$target/$from/pgplane" "$context/pgplane"
strip "$context/pgplane"
# bookworm has glibc 2.36: a binary built on a newer system would not start in the image.
needs="$(objdump -T "$context/pgplane" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -n 1)"
if [ "$(printf '%s\n' "$needs" 2.36 | sort -V | tail -n 1)" != 2.36 ]; then
  echo "the binary needs glibc $needs, bookworm has 2.36: build it on Debian 12 or older" >&2
  rm -rf "$context"; exit 1
fi
previous="$(docker image inspect -f '{{.Id}}' "$image" 2>/dev/null || true)"
# The classic builder (Debian's docker.io has no buildx) runs the RUN step on the host network.
DOCKER_BUILDKIT=0 docker build --network host -q -f "$here/Dockerfile" -t "$image" "$context" \
  >/dev/null 2>"$context.log" || { cat "$context.log" >&2; rm -rf "$context" "$context.log"; exit 1; }
rm -f "$context.log"
# The image this one replaces (a build of older sources), unless something still uses it.
current="$(docker image inspect -f '{{.Id}}' "$image")"
[ -z "$previous" ] || [ "$previous" = "$current" ] || docker rmi "$previous" >/dev/null 2>&1 || true
rm -rf "$context"
echo "built $image ($(docker image inspect -f '{{.Size}}' "$image" | awk '{printf "%.1f MB", $1/1e6}'))"

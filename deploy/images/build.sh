#!/usr/bin/env bash
# Builds the local PostgreSQL images that pgplane's tests run under testcontainers:
#   pgplane-pg:15 (Debian 12 bookworm, PostgreSQL 15) and pgplane-pg:17 (Debian 13 trixie,
#   PostgreSQL 17). Images cannot be pulled on the CI machines, so they are made from Debian
#   packages with debootstrap and `docker import`. An image that already exists is kept.
# Usage: deploy/images/build.sh [15] [17]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
versions=("$@"); [ ${#versions[@]} -gt 0 ] || versions=(15 17)
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"

build() {
  local major="$1" suite
  case "$major" in 15) suite=bookworm ;; 17) suite=trixie ;; *) echo "unsupported version $major" >&2; return 1 ;; esac
  local recipe current
  recipe="$(sha256sum "$here/entrypoint.sh" | cut -c1-16)"
  current="$(docker image inspect -f '{{index .Config.Labels "pgplane.entrypoint"}}' "pgplane-pg:$major" 2>/dev/null || true)"
  if [ "$current" = "$recipe" ]; then
    echo "pgplane-pg:$major present"; return 0
  fi
  if [ -n "$current" ] || docker image inspect "pgplane-pg:$major" >/dev/null 2>&1; then
    # Only the entrypoint changed: put the new one into the existing image.
    local id; id="$(docker create "pgplane-pg:$major")"
    docker cp "$here/entrypoint.sh" "$id:/usr/local/bin/pgplane-pg-entrypoint"
    docker commit --change "LABEL pgplane.entrypoint=$recipe" \
      --change 'ENTRYPOINT ["/usr/local/bin/pgplane-pg-entrypoint"]' "$id" "pgplane-pg:$major" >/dev/null
    docker rm "$id" >/dev/null
    echo "updated the entrypoint of pgplane-pg:$major"; return 0
  fi
  local root; root="$(mktemp -d /var/tmp/pgplane-rootfs-$major.XXXXXX)"
  echo "building pgplane-pg:$major from Debian $suite (takes a few minutes)"
  debootstrap --variant=minbase --include="postgresql-$major" "$suite" "$root" "$mirror" >"$root.log" 2>&1 \
    || { tail -n 20 "$root.log" >&2; rm -rf "$root"; return 1; }
  install -m 0755 "$here/entrypoint.sh" "$root/usr/local/bin/pgplane-pg-entrypoint"
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  tar -C "$root" -c . | docker import \
    --change 'ENTRYPOINT ["/usr/local/bin/pgplane-pg-entrypoint"]' \
    --change 'ENV LANG=C.UTF-8' --change "LABEL pgplane.entrypoint=$recipe" - "pgplane-pg:$major" >/dev/null
  rm -rf "$root" "$root.log"
  echo "built pgplane-pg:$major"
}

for v in "${versions[@]}"; do build "$v"; done

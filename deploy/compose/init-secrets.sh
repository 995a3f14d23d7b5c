#!/usr/bin/env bash
# Makes the secrets of the Compose stack (docker-compose.yml) as files in
# $PGPLANE_COMPOSE_SECRETS (default deploy/compose/secrets): the metadata and target
# PostgreSQL passwords, pgplane's sealing key and the metadata database URL. Secrets that exist
# are kept (so is the data sealed under the key); the URL is rewritten from the password.
# With PGPLANE_COMPOSE_HOST_NETWORK=1 the URL is for docker-compose.host.yml (127.0.0.1 and
# PGPLANE_COMPOSE_METADATA_PORT, default 5433; the superuser of the pgplane-pg image).
# The directory is readable by its owner only; the files in it are readable by all, because the
# containers (pgplane runs as uid 10001) read them through bind mounts.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
dir="${PGPLANE_COMPOSE_SECRETS:-$here/secrets}"
mkdir -p "$dir" && chmod 0700 "$dir"

# Writes a random secret to $1 unless it exists; $2 bytes of randomness, base64.
make_secret() {
  [ -s "$dir/$1" ] && return 0
  head -c "$2" /dev/urandom | base64 | tr -d '\n' > "$dir/$1.tmp"
  mv "$dir/$1.tmp" "$dir/$1"
}
make_secret secret-key 32
# Passwords go into a URL: letters and digits only.
for name in metadata-password target-password; do
  [ -s "$dir/$name" ] || { head -c 64 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 32 > "$dir/$name"; }
done

password="$(cat "$dir/metadata-password")"
if [ "${PGPLANE_COMPOSE_HOST_NETWORK:-0}" = 1 ]; then
  url="postgres://postgres:$password@127.0.0.1:${PGPLANE_COMPOSE_METADATA_PORT:-5433}/postgres"
else
  url="postgres://pgplane:$password@metadata:5432/pgplane"
fi
printf '%s\n' "$url" > "$dir/database-url.tmp" && mv "$dir/database-url.tmp" "$dir/database-url"
chmod 0444 "$dir"/*
echo "secrets in $dir"

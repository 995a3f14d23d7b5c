#!/usr/bin/env bash
# `make run`: pgplane on this machine with everything it needs. Starts two local PostgreSQL
# servers (the metadata database and one target), serves the API on 127.0.0.1:8080, runs
# `pgplane pooler` beside the target (connection pools on PgBouncer), registers
# the target as the cluster "local", writes an admin token to .pgplane/dev/admin-token and
# stays in the foreground until interrupted (Ctrl-C stops everything; run it again to resume).
#
# Settings (environment): PGPLANE_DEV_LISTEN (127.0.0.1:8080), PGPLANE_DEV_META_PORT (54320),
# PGPLANE_DEV_TARGET_PORT (54321), PGPLANE_DEV_POOL_PORTS (25061-25080).
set -euo pipefail

root="$(cd "$(dirname "$0")/../.." && pwd)"
state="$root/.pgplane/dev"
listen="${PGPLANE_DEV_LISTEN:-127.0.0.1:8080}"
meta_port="${PGPLANE_DEV_META_PORT:-54320}"
target_port="${PGPLANE_DEV_TARGET_PORT:-54321}"
mkdir -p "$state"
chmod 700 "$root/.pgplane" "$state"

pgbin="$(dirname "$(command -v initdb 2>/dev/null || ls -d /usr/lib/postgresql/*/bin/initdb | sort -V | tail -n 1)")"
[ -x "$pgbin/initdb" ] || { echo "PostgreSQL server binaries (initdb, pg_ctl) are needed: apt-get install postgresql" >&2; exit 1; }

# PostgreSQL refuses to run as root: as root, the servers run as the postgres user, with their
# data outside the checkout (which that user may not be able to enter).
if [ "$(id -u)" = 0 ]; then
  as_pg=(runuser -u postgres --)
  data="/var/tmp/pgplane-dev-$(printf %s "$root" | sha256sum | cut -c1-12)"
  mkdir -p "$data" && chown postgres: "$data" && chmod 700 "$data"
else
  as_pg=()
  data="$state/postgres"
  mkdir -p "$data"
fi

echo "building pgplane..."
cargo build --quiet --bin pgplane --manifest-path "$root/Cargo.toml"
pgplane="$root/target/debug/pgplane"

# start_server NAME PORT: initialises (first run) and starts a server; its superuser password
# is kept in .pgplane/dev/NAME-password.
start_server() {
  local name="$1" port="$2" dir="$data/$1" pwfile="$state/$1-password"
  if [ ! -f "$dir/PG_VERSION" ]; then
    rm -rf "$dir"
    "${as_pg[@]}" mkdir -p "$dir"
    "$pgplane" secret-key generate | tr -d '/+=\n' > "$pwfile"
    chmod 600 "$pwfile"
    local tmp; tmp="$("${as_pg[@]}" mktemp)"
    cat "$pwfile" | "${as_pg[@]}" tee "$tmp" >/dev/null
    "${as_pg[@]}" "$pgbin/initdb" -D "$dir" -U postgres --auth=scram-sha-256 --pwfile="$tmp" \
      --no-sync --encoding=UTF8 --locale=C.UTF-8 >/dev/null
    "${as_pg[@]}" rm -f "$tmp"
    [ "$name" = meta ] && rm -f "$state/admin-token"
  fi
  if "${as_pg[@]}" "$pgbin/pg_ctl" -D "$dir" status >/dev/null 2>&1; then
    "${as_pg[@]}" "$pgbin/pg_ctl" -D "$dir" stop -m fast >/dev/null
  fi
  "${as_pg[@]}" "$pgbin/pg_ctl" -D "$dir" -w -l "$dir/server.log" \
    -o "-c port=$port -c listen_addresses=127.0.0.1 -c unix_socket_directories='$dir'" start >/dev/null
  echo "PostgreSQL '$name' is up on 127.0.0.1:$port (log: $dir/server.log)"
}

serve_pid=""
pooler_pid=""
cleanup() {
  trap - INT TERM EXIT
  [ -n "$pooler_pid" ] && kill "$pooler_pid" 2>/dev/null && wait "$pooler_pid" 2>/dev/null || true
  [ -n "$serve_pid" ] && kill "$serve_pid" 2>/dev/null && wait "$serve_pid" 2>/dev/null || true
  for name in meta target; do
    "${as_pg[@]}" "$pgbin/pg_ctl" -D "$data/$name" stop -m fast >/dev/null 2>&1 || true
  done
  echo "stopped pgplane and its local PostgreSQL servers"
}
trap cleanup EXIT
trap 'exit 0' INT TERM

start_server meta "$meta_port"
start_server target "$target_port"

[ -s "$state/secret.key" ] || { "$pgplane" secret-key generate > "$state/secret.key"; chmod 600 "$state/secret.key"; }
export PGPLANE_DATABASE_URL="postgres://postgres:$(cat "$state/meta-password")@127.0.0.1:$meta_port/postgres"
export PGPLANE_SECRET_KEY_FILE="$state/secret.key"
if [ ! -s "$state/admin-token" ]; then
  "$pgplane" token create --name dev-admin > "$state/admin-token"
  chmod 600 "$state/admin-token"
fi
token="$(cat "$state/admin-token")"

"$pgplane" serve --listen "$listen" &
serve_pid=$!
# The connection pools of the target's clusters, on PgBouncer (installed when missing, as
# root), beside it: their connection strings name 127.0.0.1 and a port from 25061 on.
if ! command -v pgbouncer >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "installing pgbouncer (for the connection pools)..."
  apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q pgbouncer >/dev/null
fi
if command -v pgbouncer >/dev/null 2>&1; then
  # As root, PgBouncer runs as postgres: its files live beside the servers' data, which that
  # user may enter (not in the checkout's private .pgplane).
  "$pgplane" pooler --server "127.0.0.1:$target_port" --ports "${PGPLANE_DEV_POOL_PORTS:-25061-25080}" \
    --run-dir "$data/pooler" &
  pooler_pid=$!
else
  echo "pgbouncer is not installed: connection pools will not be served (apt-get install pgbouncer)" >&2
fi
api="http://$listen"
for _ in $(seq 1 100); do
  curl -fsS "$api/readyz" >/dev/null 2>&1 && break
  kill -0 "$serve_pid" 2>/dev/null || { echo "pgplane serve exited" >&2; exit 1; }
  sleep 0.2
done

# The token reaches curl as a header file, never on its command line.
auth_header() { printf 'Authorization: Bearer %s\n' "$token"; }
cluster_id() {
  curl -fsS -H @<(auth_header) "$api/v2/databases" |
    python3 -c 'import json,sys; print(next((c["id"] for c in json.load(sys.stdin)["databases"] if c["name"]=="local"), ""))'
}
id="$(cluster_id)"
if [ -z "$id" ]; then
  # The body (with the target's admin password) goes through standard input, never on a
  # command line where other users could read it.
  printf '{"name":"local","engine":"pg","pgplane":{"host":"127.0.0.1","port":%s,"user":"postgres","password":"%s","sslmode":"disable"}}' \
    "$target_port" "$(cat "$state/target-password")" |
    curl -fsS -X POST -H @<(auth_header) -H 'Content-Type: application/json' \
      --data-binary @- "$api/v2/databases" >/dev/null
  id="$(cluster_id)"
fi

cat <<EOT

pgplane is running on $api with the cluster "local" ($id).
The admin token is in .pgplane/dev/admin-token.

Web console: $api/ (sign in by pasting the admin token; PGPLANE_NO_CONSOLE=1 turns it off)

Or try the API:

  export TOKEN=\$(cat .pgplane/dev/admin-token)
  curl -s -H "Authorization: Bearer \$TOKEN" $api/v2/databases/$id/users
  curl -s -X POST -H "Authorization: Bearer \$TOKEN" -d '{"name":"app-01"}' $api/v2/databases/$id/users
  curl -s -X POST -H "Authorization: Bearer \$TOKEN" -d '{"name":"app-pool","mode":"transaction","size":5,"db":"defaultdb"}' $api/v2/databases/$id/pools

Press Ctrl-C to stop.
EOT
wait "$serve_pid"

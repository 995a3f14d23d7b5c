#!/usr/bin/env bash
# Writes the query data of the store's compile-time checked SQL (sqlx's `query!` macros in
# crates/core) to `.sqlx/` at the workspace root, so that builds check the queries with no
# database (`SQLX_OFFLINE=true`, set in .cargo/config.toml). Run it after changing a query or a
# migration, and commit `.sqlx/`.
#
#   deploy/dev/sqlx-prepare.sh          rewrite .sqlx/
#   deploy/dev/sqlx-prepare.sh --check  fail if .sqlx/ is stale or incomplete (`make lint`)
#
# How: starts a throwaway PostgreSQL with the local server binaries (initdb, pg_ctl) in a
# temporary folder on a free 127.0.0.1 port, applies migrations/ with psql, then runs
# `cargo check -p pgplane-core` with DATABASE_URL set and SQLX_OFFLINE=false, which makes the
# macros check every query against that database and write its data to SQLX_OFFLINE_DIR
# (and crates/core/build.rs the hash of migrations/ it was written against, which offline
# builds compare, so that a changed schema fails `cargo build` until this is run again).
# The server and its folder are removed on exit.
set -euo pipefail

root="$(cd "$(dirname "$0")/../.." && pwd)"
check=false
case "${1:-}" in
  --check) check=true ;;
  "") ;;
  *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

pgbin="$(dirname "$(command -v initdb 2>/dev/null || ls -d /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -n 1)")"
[ -x "$pgbin/initdb" ] || { echo "PostgreSQL server binaries (initdb, pg_ctl) are needed: apt-get install postgresql" >&2; exit 1; }
psql="$(command -v psql 2>/dev/null || echo "$pgbin/psql")"

# PostgreSQL refuses to run as root: as root, the server runs as the postgres user (or nobody).
tmp="$(mktemp -d)"
if [ "$(id -u)" = 0 ]; then
  pguser=postgres
  id -u "$pguser" >/dev/null 2>&1 || pguser=nobody
  as_pg=(runuser -u "$pguser" --)
  chown "$pguser" "$tmp"
else
  as_pg=()
fi
data="$tmp/data"

stop() {
  "${as_pg[@]}" "$pgbin/pg_ctl" -D "$data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$tmp"
}
trap stop EXIT

port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
"${as_pg[@]}" "$pgbin/initdb" -D "$data" -U postgres --auth=trust --no-sync --encoding=UTF8 \
  --locale=C.UTF-8 >/dev/null
"${as_pg[@]}" "$pgbin/pg_ctl" -D "$data" -w -l "$tmp/server.log" \
  -o "-c listen_addresses=127.0.0.1 -p $port -k $tmp -c fsync=off" start >/dev/null

url="postgres://postgres@127.0.0.1:$port/postgres"
for migration in "$root"/migrations/*.sql; do
  "$psql" -q -X -v ON_ERROR_STOP=1 -1 -d "$url" -f "$migration" >/dev/null
done

# The data is written to a temporary folder first: a query that fails its check leaves .sqlx/
# as it was.
out="$tmp/sqlx"
mkdir -p "$out"

# The macros run when pgplane-core compiles: touching it makes cargo compile it again.
touch "$root/crates/core/src/lib.rs"
(cd "$root" && DATABASE_URL="$url" SQLX_OFFLINE=false SQLX_OFFLINE_DIR="$out" \
  cargo check --quiet --locked -p pgplane-core --all-targets)
# Compile it once more as every other build does (from .sqlx/), so that the next build does not
# reuse the online one.
touch "$root/crates/core/src/lib.rs"

if $check; then
  if ! diff -r "$root/.sqlx" "$out" >/dev/null 2>&1; then
    diff -r "$root/.sqlx" "$out" | head -n 40 >&2 || true
    echo ".sqlx/ is stale: run deploy/dev/sqlx-prepare.sh and commit .sqlx/" >&2
    exit 1
  fi
  echo ".sqlx/ is up to date"
else
  rm -rf "$root/.sqlx"
  cp -r "$out" "$root/.sqlx"
  echo "wrote $(find "$out" -name 'query-*.json' | wc -l) queries (and migrations.hash) to .sqlx/"
fi

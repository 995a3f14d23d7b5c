#!/bin/sh
# pgplane test/dev PostgreSQL image entrypoint: initialises a throwaway cluster and runs
# PostgreSQL in the foreground on 127.0.0.1:$PGPORT (host networking, one port per container).
# Environment: PGPORT (default 5432), POSTGRES_PASSWORD (superuser "postgres", default "postgres").
# Extra arguments are passed to the postgres server (e.g. -c log_statement=all).
# A directory mounted at /certs with server.crt and server.key turns TLS on.
set -eu
PGPORT="${PGPORT:-5432}"
BIN="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)"
DATA=/var/lib/pgplane/data
mkdir -p "$DATA" /var/run/postgresql
chown postgres:postgres "$DATA" /var/run/postgresql
as_postgres() { setpriv --reuid=postgres --regid=postgres --init-groups "$@"; }
# A restarted container keeps its cluster (tests restart servers to simulate outages).
if [ ! -f "$DATA/PG_VERSION" ]; then
  printf '%s\n' "${POSTGRES_PASSWORD:-postgres}" > /var/lib/pgplane/pwfile
  chown postgres /var/lib/pgplane/pwfile
  as_postgres "$BIN/initdb" -D "$DATA" -U postgres --auth=scram-sha-256 \
    --pwfile=/var/lib/pgplane/pwfile --no-sync --encoding=UTF8 --locale=C.UTF-8 >/dev/null
  rm -f /var/lib/pgplane/pwfile
fi
if [ -f /certs/server.crt ] && [ -f /certs/server.key ]; then
  install -o postgres -g postgres -m 0600 /certs/server.crt /certs/server.key /var/lib/pgplane/
  set -- -c ssl=on -c ssl_cert_file=/var/lib/pgplane/server.crt -c ssl_key_file=/var/lib/pgplane/server.key "$@"
fi
exec setpriv --reuid=postgres --regid=postgres --init-groups "$BIN/postgres" -D "$DATA" \
  -c listen_addresses=127.0.0.1 -c port="$PGPORT" -c unix_socket_directories=/var/run/postgresql \
  -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200 "$@"

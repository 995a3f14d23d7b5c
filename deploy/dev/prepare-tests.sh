#!/usr/bin/env bash
# Makes this machine ready for the test suite. Always: promtool (Debian's prometheus package,
# for the metrics and alert-rule checks), Debian's chromium and chromium-driver (the
# console's browser suite), pgbouncer and psql (the connection pools' tests). With containers (unless PGPLANE_TEST_PG_URL points the tests at an
# existing PostgreSQL, when the deployment tests skip themselves): a Docker engine (installed
# from Debian's packages and started with host networking only, when missing), docker-compose
# and kubectl (Debian's docker-compose and kubernetes-client, for the deployment tests), the
# locally built PostgreSQL 15 and 17 images the tests start through testcontainers, and the
# `debian:bookworm-slim` base of pgplane's own image (made by deploy/image/build.sh --base-only;
# `make test-e2e` builds the image itself from the test build's binary once that is compiled).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

# apt_install [apt-get options] PACKAGE...: installs what is missing (as root).
apt_install() {
  [ "$(id -u)" = 0 ] || { echo "missing packages: as root, apt-get install $*" >&2; exit 1; }
  echo "installing $*"
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null
}

# promtool alone, not the server's recommended exporters.
command -v promtool >/dev/null 2>&1 || apt_install --no-install-recommends prometheus
browser=()
[ -x /usr/bin/chromium ] || browser+=(chromium)
[ -x /usr/bin/chromedriver ] || browser+=(chromium-driver)
[ ${#browser[@]} -eq 0 ] || apt_install "${browser[@]}"
# PgBouncer (the connection pools' tests run `pgplane pooler`, which runs it) and psql (the
# pools' connection strings are tried with it).
pooling=()
command -v pgbouncer >/dev/null 2>&1 || pooling+=(pgbouncer)
command -v psql >/dev/null 2>&1 || pooling+=(postgresql-client)
[ ${#pooling[@]} -eq 0 ] || apt_install "${pooling[@]}"

if [ -n "${PGPLANE_TEST_PG_URL:-}" ]; then
  echo "PGPLANE_TEST_PG_URL is set: tests use that server, no containers needed"
  exit 0
fi

need=()
command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
command -v docker-compose >/dev/null 2>&1 || need+=(docker-compose)
command -v kubectl >/dev/null 2>&1 || need+=(kubernetes-client)
command -v strip >/dev/null 2>&1 || need+=(binutils)
[ ${#need[@]} -eq 0 ] || apt_install "${need[@]}"

if ! docker info >/dev/null 2>&1; then
  [ "$(id -u)" = 0 ] || { echo "the Docker engine is not running; start it (dockerd --bridge=none --iptables=false)" >&2; exit 1; }
  echo "starting the Docker engine"
  nohup dockerd --bridge=none --iptables=false >/var/log/pgplane-dockerd.log 2>&1 &
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { echo "dockerd did not start; see /var/log/pgplane-dockerd.log" >&2; exit 1; }
fi

"$here/../images/build.sh" 15 17
"$here/../image/build.sh" --base-only

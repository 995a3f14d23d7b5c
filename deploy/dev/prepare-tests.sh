#!/usr/bin/env bash
# Makes this machine ready for the test suite: a Docker engine (installed from Debian's
# packages and started with host networking only, when missing) and the locally built
# PostgreSQL 15 and 17 images the tests start through testcontainers (skipped when
# PGPLANE_TEST_PG_URL points the tests at an existing PostgreSQL), and Debian's chromium and
# chromium-driver for the console's browser suite.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

apt_install() {
  [ "$(id -u)" = 0 ] || { echo "missing $*: install them (as root: apt-get install $*)" >&2; exit 1; }
  echo "installing $*"
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null
}

browser=()
[ -x /usr/bin/chromium ] || browser+=(chromium)
[ -x /usr/bin/chromedriver ] || browser+=(chromium-driver)
[ ${#browser[@]} -eq 0 ] || apt_install "${browser[@]}"

if [ -n "${PGPLANE_TEST_PG_URL:-}" ]; then
  echo "PGPLANE_TEST_PG_URL is set: tests use that server, no containers needed"
  exit 0
fi

need=()
command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
[ ${#need[@]} -eq 0 ] || apt_install "${need[@]}"

if ! docker info >/dev/null 2>&1; then
  [ "$(id -u)" = 0 ] || { echo "the Docker engine is not running; start it (dockerd --bridge=none --iptables=false)" >&2; exit 1; }
  echo "starting the Docker engine"
  nohup dockerd --bridge=none --iptables=false >/var/log/pgplane-dockerd.log 2>&1 &
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { echo "dockerd did not start; see /var/log/pgplane-dockerd.log" >&2; exit 1; }
fi

"$here/../images/build.sh" 15 17

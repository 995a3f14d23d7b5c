#!/usr/bin/env bash
# Makes this machine ready for the test suite: promtool (from Debian's prometheus package, for
# the metrics and alert-rule checks), a Docker engine (installed from Debian's packages and
# started with host networking only, when missing), docker-compose and kubectl (Debian's
# docker-compose and kubernetes-client, for the deployment tests), the locally built PostgreSQL
# 15 and 17 images the tests start through testcontainers, and pgplane's own image
# (deploy/image/build.sh: a release build). Only promtool is installed when PGPLANE_TEST_PG_URL
# points the tests at an existing PostgreSQL (the deployment tests then skip themselves).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

# promtool (Debian's prometheus package) checks the metrics and alert rules in every case.
if ! command -v promtool >/dev/null 2>&1; then
  [ "$(id -u)" = 0 ] || { echo "missing promtool: install it (as root: apt-get install prometheus)" >&2; exit 1; }
  echo "installing prometheus (for promtool)"
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus >/dev/null
fi

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
if [ ${#need[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || { echo "missing ${need[*]}: install them (as root: apt-get install ${need[*]})" >&2; exit 1; }
  echo "installing ${need[*]}"
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >/dev/null
fi

if ! docker info >/dev/null 2>&1; then
  [ "$(id -u)" = 0 ] || { echo "the Docker engine is not running; start it (dockerd --bridge=none --iptables=false)" >&2; exit 1; }
  echo "starting the Docker engine"
  nohup dockerd --bridge=none --iptables=false >/var/log/pgplane-dockerd.log 2>&1 &
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { echo "dockerd did not start; see /var/log/pgplane-dockerd.log" >&2; exit 1; }
fi

"$here/../images/build.sh" 15 17
"$here/../image/build.sh" pgplane:latest

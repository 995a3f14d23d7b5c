# pgplane developer commands. `make run` and `make test` work on a fresh machine (see README).
# Every target that runs cargo first makes the pinned toolchain (rust-toolchain.toml) available.

.PHONY: toolchain run test test-unit test-e2e test-build test-prepare bench bench-prepare images image compose-up compose-down fmt lint sqlx-prepare clean-test-containers

## run: pgplane with a local metadata PostgreSQL and one target, API on 127.0.0.1:8080
run: toolchain
	deploy/dev/run.sh

## toolchain: the toolchain pinned in rust-toolchain.toml, linked to the installed stable when
## that is the same version (no download; see deploy/dev/toolchain.sh)
toolchain:
	@deploy/dev/toolchain.sh

## test: every test: the unit tier, then the end-to-end tier
test: test-unit test-e2e

## test-unit: the unit tests of every crate; seconds once built, nothing installed (no Docker,
## no PostgreSQL, no Python)
test-unit: toolchain
	cargo test --workspace --lib --bins --locked

## test-e2e: the integration tests of every crate (tests/e2e, crates/cli/tests/cli) against
## PostgreSQL 15 and 17 in containers, with the PyDo suite, the container image (pgplane:test,
## made from the test build's binary), the Compose stack, the Kubernetes manifests and the
## console in headless Chromium
test-e2e: test-prepare .venv/installed test-build
	deploy/image/build.sh --from-test-build pgplane:test
	PGPLANE_TEST_IMAGE=pgplane:test cargo test --workspace --locked --test '*'
	$(MAKE) clean-test-containers

## test-build: compile every test target (both tiers) without running anything
test-build: toolchain
	cargo test --workspace --locked --lib --bins --test '*' --no-run

## .venv: the Python environment of the PyDo compatibility suite (tests/pydo), the console's
## browser suite (tests/console) and the Kubernetes manifest check (deploy/kubernetes)
.venv/installed: tests/pydo/requirements.txt tests/console/requirements.txt deploy/kubernetes/requirements.txt
	python3 -m venv .venv
	.venv/bin/python -m pip install --quiet --disable-pip-version-check -r tests/pydo/requirements.txt \
	  -r tests/console/requirements.txt -r deploy/kubernetes/requirements.txt
	touch $@

## bench: pgplane against the floor PostgreSQL sets (psql, pgbench), written to BENCHMARKS.md
## (about 15 minutes on 2 cores, plus about 6 for a cold release build; see crates/bench)
bench: toolchain test-prepare bench-prepare
	cargo build --release --locked -p pgplane -p pgplane-bench
	cargo run --release --locked -q -p pgplane-bench -- --out BENCHMARKS.md

## bench-prepare: psql and pgbench (the floors' clients) and pgbouncer (the pools' floor) installed
bench-prepare:
	@command -v psql >/dev/null 2>&1 && command -v pgbench >/dev/null 2>&1 && command -v pgbouncer >/dev/null 2>&1 || { \
	  [ "$$(id -u)" = 0 ] || { echo "install psql, pgbench and pgbouncer (Debian: postgresql-client, postgresql, pgbouncer)" >&2; exit 1; }; \
	  apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql-client postgresql pgbouncer >/dev/null; }

## test-prepare: promtool, Chromium, the Docker engine running and the PostgreSQL test images built
test-prepare:
	deploy/dev/prepare-tests.sh

## images: (re)build the PostgreSQL 15 and 17 test images if missing
images:
	deploy/images/build.sh 15 17

## image: pgplane's container image, pgplane:latest (release build; see deploy/image)
image: toolchain
	deploy/image/build.sh pgplane:latest

## compose-up: pgplane, its metadata PostgreSQL and a sample target with Docker Compose, API on
## http://127.0.0.1:8080 (secrets made in deploy/compose/secrets on first use);
## PGPLANE_COMPOSE_HOST_NETWORK=1 for machines with host networking only
COMPOSE_FILES = $(if $(filter 1,$(PGPLANE_COMPOSE_HOST_NETWORK)),-f docker-compose.yml -f docker-compose.host.yml)
compose-up:
	deploy/compose/init-secrets.sh
	cd deploy/compose && docker-compose $(COMPOSE_FILES) up -d

## compose-down: stop the Compose stack, keeping its data (docker-compose down -v deletes it)
compose-down:
	cd deploy/compose && docker-compose $(COMPOSE_FILES) down

## fmt: format every crate
fmt: toolchain
	cargo fmt --all

## lint: formatting, clippy with warnings as errors, and the store's query data (.sqlx/) current
## (needs the PostgreSQL server binaries, initdb and pg_ctl: see deploy/dev/sqlx-prepare.sh)
lint: toolchain
	cargo fmt --all --check
	cargo clippy --workspace --all-targets --locked -- -D warnings
	deploy/dev/sqlx-prepare.sh --check

## sqlx-prepare: rewrite .sqlx/, the query data of the store's checked SQL (after changing a
## query or a migration; commit the result)
sqlx-prepare:
	deploy/dev/sqlx-prepare.sh

## clean-test-containers: remove test containers a killed test run left behind
clean-test-containers:
	@ids=$$(docker ps -aq --filter label=pgplane.test 2>/dev/null); [ -z "$$ids" ] || docker rm -fv $$ids >/dev/null 2>&1 || true

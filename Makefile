# Confab's two front-door commands: `make run` and `make test`. Everything else is a helper of those.
SHELL := /bin/bash
.DEFAULT_GOAL := run

CARGO ?= cargo
NPM ?= npm
WEB := web-client
# The shared Postgres cluster the Rust tests start under target/ (see homeserver/tests/support).
TEST_PG := target/test-postgres

.PHONY: run test demo web web-deps chromium coturn rust-test rust-lint web-test browser-test bench stop-test-db fmt

## Run the homeserver on http://127.0.0.1:8008 with the embedded Postgres and the built web client.
run: web
	$(CARGO) run --release -p confab -- serve

## Two federated homeservers on loopback, each with its own embedded Postgres (see
## config/demo/two-servers.sh); Ctrl-C stops both.
demo: web
	$(CARGO) build --release -p confab
	CONFAB_BIN=target/release/confab config/demo/two-servers.sh

## Every test: formatting and lints, Rust unit and integration tests (real Postgres, real
## servers and sockets), web-client unit tests, bundle budget, and browser tests in Chromium
## (one of them through a local coturn).
test: chromium coturn web-deps
	$(MAKE) rust-lint
	$(MAKE) rust-test
	$(MAKE) web-test
	$(MAKE) browser-test

web-deps:
	@if [ ! -d $(WEB)/node_modules ] || [ $(WEB)/package-lock.json -nt $(WEB)/node_modules/.package-lock.json ]; then \
		cd $(WEB) && $(NPM) ci --no-audit --no-fund; fi

web: web-deps
	cd $(WEB) && $(NPM) run build

## Debian's Chromium for the browser tests (browser downloads by test tools are not used).
chromium:
	@command -v chromium >/dev/null || { \
		if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium >/dev/null; \
		else echo "install Debian's chromium (sudo apt-get install chromium)"; exit 1; fi; }

## coturn's turnserver for the relay-only browser test, which starts it itself on loopback as an
## unprivileged process: the package's own service is switched off right after installing.
coturn:
	@command -v turnserver >/dev/null || { \
		if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq coturn >/dev/null && \
			{ ! command -v systemctl >/dev/null || systemctl disable --now coturn >/dev/null 2>&1 || true; }; \
		else echo "install coturn (sudo apt-get install coturn)"; exit 1; fi; }

rust-lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

rust-test:
	$(CARGO) test --workspace; status=$$?; $(MAKE) -s stop-test-db; exit $$status

web-test: web-deps
	cd $(WEB) && $(NPM) run typecheck && $(NPM) test && $(NPM) run build && $(NPM) run size

browser-test: web coturn
	$(CARGO) build -p confab
	cd $(WEB) && $(NPM) run test:browser

## Stops the test cluster that the Rust tests leave running for each other.
stop-test-db:
	@if [ -f $(TEST_PG)/data/postmaster.pid ]; then \
		bin=$$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1); \
		if [ "$$(id -u)" = 0 ]; then runuser -u postgres -- $$bin/pg_ctl -D $(TEST_PG)/data -m fast stop >/dev/null; \
		else $$bin/pg_ctl -D $(TEST_PG)/data -m fast stop >/dev/null; fi; fi

## The load generator's benchmarks (see README, "Performance").
bench:
	$(CARGO) build --release -p confab --bins
	./target/release/confab-bench all

fmt:
	$(CARGO) fmt --all

# Confab's two front-door commands: `make run` and `make test`. Everything else is a helper of those.
SHELL := /bin/bash
.DEFAULT_GOAL := run

CARGO ?= cargo
NPM ?= npm
WEB := web-client
# The shared Postgres cluster the Rust tests start under target/ (see homeserver/tests/support).
TEST_PG := target/test-postgres

.PHONY: run test demo web web-deps chromium firefox coturn haproxy rust-test rust-lint web-test browser-test bench stop-test-db fmt fuzz fuzz-lint

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
## (one of them through a local coturn, one in a call with Firefox ESR, one with three workers
## behind HAProxy).
test: chromium firefox coturn haproxy web-deps
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

## Debian's Firefox ESR for the browser test of a call between Firefox and Chromium (driven by
## puppeteer-core over WebDriver BiDi; nothing is downloaded by the test tools either).
firefox:
	@command -v firefox-esr >/dev/null || { \
		if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq firefox-esr >/dev/null; \
		else echo "install Debian's firefox-esr (sudo apt-get install firefox-esr)"; exit 1; fi; }

## coturn's turnserver for the relay-only browser test, which starts it itself on loopback as an
## unprivileged process: the package's own service is switched off right after installing.
coturn:
	@command -v turnserver >/dev/null || { \
		if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq coturn >/dev/null && \
			{ ! command -v systemctl >/dev/null || systemctl disable --now coturn >/dev/null 2>&1 || true; }; \
		else echo "install coturn (sudo apt-get install coturn)"; exit 1; fi; }

## Debian's HAProxy, in front of several workers in the tests that start it themselves on
## loopback; the package's own service is switched off right after installing.
haproxy:
	@command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || { \
		if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq haproxy >/dev/null && \
			{ ! command -v systemctl >/dev/null || systemctl disable --now haproxy >/dev/null 2>&1 || true; }; \
		else echo "install haproxy (sudo apt-get install haproxy)"; exit 1; fi; }

rust-lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) fmt --manifest-path $(FUZZ_CRATE)/Cargo.toml -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

rust-test:
	$(CARGO) test --workspace; status=$$?; $(MAKE) -s stop-test-db; exit $$status

web-test: web-deps
	cd $(WEB) && $(NPM) run typecheck && $(NPM) test && $(NPM) run build && $(NPM) run size

browser-test: web chromium firefox coturn haproxy
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

## Coverage-guided fuzzing with libFuzzer, on the stable toolchain (see homeserver/fuzz/Cargo.toml):
## each target for FUZZ_SECS seconds (default 60), e.g. `make fuzz FUZZ_SECS=600`, or only some
## with FUZZ_TARGETS="ws_frame identifiers". New inputs go to target/fuzz/corpus/<target> (add the
## interesting ones to homeserver/fuzz/corpus), crashes to target/fuzz/artifacts/<target>.
## `make test` runs the same targets for a bounded time without libFuzzer (homeserver/tests/fuzz.rs).
FUZZ_SECS ?= 60
FUZZ_TARGETS ?= ws_frame xmatrix_header canonical_json federation_transaction identifiers
FUZZ_CRATE := homeserver/fuzz
FUZZ_OUT := target/fuzz
# An explicit --target keeps these flags off build scripts and proc macros, which must not be
# instrumented (they would not link without libFuzzer).
FUZZ_TRIPLE = $(shell rustc -vV | sed -n 's/^host: //p')
FUZZ_RUSTFLAGS := -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
	-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
	-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks

fuzz:
	RUSTFLAGS="$(FUZZ_RUSTFLAGS)" CARGO_TARGET_DIR=$(FUZZ_OUT) $(CARGO) build --release \
		--manifest-path $(FUZZ_CRATE)/Cargo.toml --target $(FUZZ_TRIPLE) $(addprefix --bin ,$(FUZZ_TARGETS))
	@for t in $(FUZZ_TARGETS); do \
		mkdir -p $(FUZZ_OUT)/corpus/$$t $(FUZZ_OUT)/artifacts/$$t; \
		$(FUZZ_OUT)/$(FUZZ_TRIPLE)/release/$$t $(FUZZ_OUT)/corpus/$$t $(FUZZ_CRATE)/corpus/$$t \
			-max_total_time=$(FUZZ_SECS) -max_len=16384 -rss_limit_mb=2048 -malloc_limit_mb=256 \
			-print_final_stats=1 -artifact_prefix=$(FUZZ_OUT)/artifacts/$$t/ \
			2> $(FUZZ_OUT)/$$t.log; status=$$?; \
		echo "fuzz $$t: $$(sed -n 's/^stat::number_of_executed_units: *//p' $(FUZZ_OUT)/$$t.log) executions in $(FUZZ_SECS) s, $$(grep -o 'cov: [0-9]*' $(FUZZ_OUT)/$$t.log | tail -n1 | cut -d' ' -f2) coverage edges (libFuzzer; log in $(FUZZ_OUT)/$$t.log)"; \
		if [ $$status != 0 ]; then tail -n 40 $(FUZZ_OUT)/$$t.log; exit $$status; fi; \
	done

## Lints of the fuzz crate, which is outside the workspace (its own build of the dependencies:
## minutes, so not part of `make test`; the targets' code is linted there through tests/fuzz.rs).
fuzz-lint:
	$(CARGO) fmt --manifest-path $(FUZZ_CRATE)/Cargo.toml -- --check
	CARGO_TARGET_DIR=$(FUZZ_OUT)/lint $(CARGO) clippy --manifest-path $(FUZZ_CRATE)/Cargo.toml --all-targets -- -D warnings

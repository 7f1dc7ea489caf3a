# Ferrite developer entry points. README.md documents the same commands.
.PHONY: setup build run test bench bench-quick bench-pipelines bench-pipelines-quick fmt lint

setup:
	./scripts/setup.sh

build:
	cargo build --release

run:
	cargo run --release --

# One command on a fresh machine: installs what the tests need
# (redis-server 7.0 for the differential tests), then runs them all.
test: setup
	cargo test --workspace --release

bench:
	./scripts/bench.sh full
	./scripts/bench-pipelines.sh full

bench-quick:
	./scripts/bench.sh quick

# The pipeline rows alone (docs/benchmarks.md, "Pipelines").
bench-pipelines:
	./scripts/bench-pipelines.sh full

bench-pipelines-quick:
	./scripts/bench-pipelines.sh quick

fmt:
	cargo fmt --all

lint:
	cargo clippy --workspace --all-targets -- -D warnings

# Crash loops: hundreds of SIGKILLs at seeded random moments (tests/crash_loop.rs,
# crash_loop_pipelines.rs, crash_loop_types.rs).
# FERRITE_CRASH_ITERATIONS=N changes the count; FERRITE_CRASH_SEED=S replays a run.
.PHONY: crashtest
crashtest:
	FERRITE_CRASH_ITERATIONS=$${FERRITE_CRASH_ITERATIONS:-300} cargo test --release --test crash_loop --test crash_loop_pipelines --test crash_loop_types -- --nocapture

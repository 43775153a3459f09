#!/usr/bin/env bash
# The benchmark command (`make bench`; options in ARGS, e.g. `make bench ARGS="--runs 50
# --w2 100 --skip-workflows"`, `ARGS="--help"` lists them): builds the workers, then runs Baton,
# the Cloudflare Workflows peer (bench/workflows) and the floor (bench/floor) under
# `wrangler dev` with state on disk. See BENCHMARKS.md.
source "$(dirname "$0")/toolchain.sh"
cd "$BATON_ROOT"

ensure_toolchain
ensure_dev_vars
build_all_workers

BATON_SKIP_BUILD=1 cargo run --quiet --release -p baton-e2e --bin bench -- "$@"

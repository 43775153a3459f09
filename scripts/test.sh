#!/usr/bin/env bash
# The test command (`make test`; CI runs exactly this): installs what is missing, runs the
# native tests, builds every worker for wasm32, then runs the end-to-end tests against a
# freshly started stack on a free port with a throwaway persistence directory.
source "$(dirname "$0")/toolchain.sh"
cd "$BATON_ROOT"
started=$(date +%s)

ensure_toolchain
ensure_dev_vars

log "native tests (cargo test --workspace)"
cargo test --workspace --quiet

log "wasm32 builds"
cargo build --quiet -p baton-core --target wasm32-unknown-unknown
build_all_workers

log "end-to-end tests (wrangler dev)"
BATON_SKIP_BUILD=1 cargo test --quiet -p baton-e2e --features e2e -- --test-threads "${BATON_E2E_THREADS:-4}"

log "all tests passed in $(( $(date +%s) - started ))s"

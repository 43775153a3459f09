#!/usr/bin/env bash
# The test command (`make test`; CI runs exactly this): installs what is missing, runs the
# native tests, builds every worker for wasm32, then runs the end-to-end tests against a
# freshly started stack on a free port with a throwaway persistence directory.
source "$(dirname "$0")/toolchain.sh"
cd "$BATON_ROOT"
started=$(date +%s)

# Each e2e stack's guard kills it once the test process has exited; wait (bounded) until they
# are all gone, so the test command leaves no process behind, whether tests passed or not.
wait_for_stacks() {
  local i
  for i in $(seq 1 100); do
    pgrep -f "$BATON_ROOT/scripts/stack-guard.sh" > /dev/null || return 0
    sleep 0.1
  done
  local pid
  for pid in $(pgrep -f "$BATON_ROOT/scripts/stack-guard.sh"); do
    kill -KILL -- "-$(ps -o pgid= -p "$pid" | tr -d ' ')" 2>/dev/null || true
  done
}

# workerd processes of this checkout still exiting after their wrangler (e.g. those of
# `wrangler d1 migrations apply`, which runs outside a guard): wait for them, bounded. Not
# killed: one may be a `make dev` of the same checkout.
wait_for_runtimes() {
  local pattern="$BATON_ROOT/node_modules/@cloudflare/workerd" i
  for i in $(seq 1 100); do
    pgrep -f "$pattern" > /dev/null || return 0
    sleep 0.1
  done
}

# The UI tests drive Debian's chromium through chromedriver (WebDriver).
ensure_browser() {
  if command -v chromium > /dev/null && command -v chromedriver > /dev/null; then return 0; fi
  log "installing chromium and chromium-driver (apt-get) for the UI tests"
  local sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq chromium chromium-driver > /dev/null
}

# The OpenAPI conformance test runs schemathesis from a project-local virtual environment.
SCHEMATHESIS_VERSION="4.32.*"
ensure_schemathesis() {
  local venv="$BATON_ROOT/.venv-schemathesis"
  local installed=""
  [ -x "$venv/bin/schemathesis" ] && installed=$("$venv/bin/python" -m pip show schemathesis 2>/dev/null || true)
  case "$installed" in
    *"Version: ${SCHEMATHESIS_VERSION%\*}"*) return 0 ;;
  esac
  log "installing schemathesis $SCHEMATHESIS_VERSION into .venv-schemathesis"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install -q "schemathesis==$SCHEMATHESIS_VERSION"
}

leave_nothing_behind() {
  wait_for_stacks
  wait_for_runtimes
}
trap leave_nothing_behind EXIT

log "toolchain: the Node install of a new machine (tests/toolchain/test.sh)"
bash tests/toolchain/test.sh

ensure_toolchain
ensure_dev_vars
ensure_browser
ensure_schemathesis

if ensure_lint_tools; then
  log "formatting and lints (cargo fmt --check; cargo clippy, native and wasm32, warnings denied)"
  cargo fmt --all --check
  cargo clippy --quiet --workspace --all-targets -- -D warnings
  cargo clippy --quiet -p baton-edge -p baton-orchestrator -p baton-poller -p baton-consumer \
    --target wasm32-unknown-unknown -- -D warnings
else
  log "WARNING: rustfmt or clippy is missing and could not be added: formatting and lints NOT checked"
fi

log "native tests (cargo test --workspace)"
cargo test --workspace --quiet

log "wasm32 builds"
cargo build --quiet -p baton-core --target wasm32-unknown-unknown
build_all_workers

log "the baton CLI (native), for the deploy script's and the end-to-end tests"
cargo build --quiet -p baton-cli
export BATON_CLI="${CARGO_TARGET_DIR:-$BATON_ROOT/target}/debug/baton"

log "deploy: dry runs of every worker and environment, and the deploy script"
bash tests/deploy/test.sh

log "end-to-end tests (wrangler dev)"
BATON_SKIP_BUILD=1 cargo test --quiet -p baton-e2e --features e2e -- --test-threads "${BATON_E2E_THREADS:-4}"

log "all tests passed in $(( $(date +%s) - started ))s"

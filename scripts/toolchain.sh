#!/usr/bin/env bash
# Sourced by the other scripts: makes sure every tool Baton needs is installed, caches them
# outside the checkout (a second run installs nothing), and exports the paths worker-build uses.
#   BATON_CACHE   where tools are cached (default ~/.cache/baton)
set -euo pipefail

BATON_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BATON_CACHE="${BATON_CACHE:-$HOME/.cache/baton}"
WORKER_BUILD_VERSION="0.8.7"
export BATON_ROOT BATON_CACHE

log() { printf '\033[1;34m[baton]\033[0m %s\n' "$*" >&2; }

# The wasm-bindgen CLI must equal the wasm-bindgen crate pinned with "=X" in Cargo.toml.
wasm_bindgen_version() {
  sed -n 's/^wasm-bindgen = "=\([0-9.]*\)".*/\1/p' "$BATON_ROOT/Cargo.toml"
}

ensure_rust() {
  command -v cargo >/dev/null || { log "cargo not found: install Rust with rustup first"; exit 1; }
  if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown; then
    log "adding the wasm32-unknown-unknown target"
    rustup target add wasm32-unknown-unknown >&2
  fi
}

# rustfmt and clippy (rustup's default profile has both). Whether they are there afterwards.
ensure_lint_tools() {
  local component
  for component in rustfmt clippy; do
    if ! rustup component list --installed 2>/dev/null | grep -q "^$component"; then
      log "adding the $component component"
      rustup component add "$component" >&2 || { log "could not add $component"; return 1; }
    fi
  done
}

ensure_cargo_tool() { # crate version binary
  local crate=$1 version=$2 bin=$3 root="$BATON_CACHE/cargo/$1-$2"
  if [ ! -x "$root/bin/$bin" ]; then
    log "installing $crate $version (once; cached in $root)"
    # Versions are pinned; --locked is avoided because the registry index may lag the lockfile.
    cargo install --quiet --root "$root" "$crate" --version "$version" >&2
  fi
  printf '%s' "$root/bin/$bin"
}

# The Node wrangler needs: its `engines.node` in package-lock.json (">=22.12.0").
node_required() {
  awk '/"node_modules\/wrangler": \{/ { w = 1 } w && /"node":/ { gsub(/[^0-9.]/, ""); print; exit }' \
    "$BATON_ROOT/package-lock.json"
}

node_is_new_enough() {
  command -v node > /dev/null \
    && node -e '
      const want = process.argv[1].split(".").map(Number), have = process.versions.node.split(".").map(Number);
      for (let i = 0; i < 3; i++) if ((have[i] || 0) !== (want[i] || 0)) process.exit((have[i] || 0) > (want[i] || 0) ? 0 : 1);' \
      "$(node_required)" 2> /dev/null
}

# The npm package suffix of this machine's Node build (`node-<platform>`); fails where none exists.
node_platform() {
  case "$(uname -s)-$(uname -m)" in
    Linux-x86_64) echo linux-x64 ;;
    Linux-aarch64 | Linux-arm64) echo linux-arm64 ;;
    Darwin-arm64) echo darwin-arm64 ;;
    Darwin-x86_64) echo darwin-x64 ;;
    *) return 1 ;;
  esac
}

ensure_node() {
  if node_is_new_enough; then return; fi
  local required major platform dir
  required=$(node_required)
  major=${required%%.*}
  platform=$(node_platform) || {
    log "install Node.js $required or newer first (no project-local Node for $(uname -sm))"
    exit 1
  }
  dir="$BATON_CACHE/node$major"
  export PATH="$dir/node_modules/node-$platform/bin:$PATH"
  # Changing PATH makes the shell forget where it found `node`; it remembers again on the next
  # call, so forget once more after the install, or the old `node` found before it still runs.
  hash -r
  if ! node_is_new_enough; then
    command -v npm > /dev/null || { log "install Node.js $required or newer first (npm not found)"; exit 1; }
    log "system Node is older than $required: installing node-$platform@$major into $dir"
    mkdir -p "$dir"
    npm install --no-save --no-audit --no-fund --loglevel=error --prefix "$dir" "node-$platform@$major" >&2
    hash -r
    node_is_new_enough || { log "node-$platform@$major is older than $required: install Node.js $required first"; exit 1; }
  fi
}

# wrangler and its runtime, exactly as package-lock.json pins them. `npm ci` installs from the
# lock file alone and never rewrites it, so the checkout stays clean.
ensure_node_modules() {
  local stamp="$BATON_ROOT/node_modules/.baton-lock-stamp"
  if [ ! -f "$stamp" ] || ! cmp -s "$BATON_ROOT/package-lock.json" "$stamp"; then
    log "installing wrangler (npm ci: the versions in package-lock.json)"
    (cd "$BATON_ROOT" && npm ci --no-audit --no-fund --loglevel=error >&2)
    cp "$BATON_ROOT/package-lock.json" "$stamp"
  fi
}

ensure_toolchain() {
  ensure_rust
  ensure_node
  ensure_node_modules
  WORKER_BUILD_BIN="$(ensure_cargo_tool worker-build "$WORKER_BUILD_VERSION" worker-build)"
  WASM_BINDGEN_BIN="$(ensure_cargo_tool wasm-bindgen-cli "$(wasm_bindgen_version)" wasm-bindgen)"
  ESBUILD_BIN="$BATON_ROOT/node_modules/.bin/esbuild"
  WRANGLER="$BATON_ROOT/node_modules/.bin/wrangler"
  export WORKER_BUILD_BIN WASM_BINDGEN_BIN ESBUILD_BIN WRANGLER
  export WRANGLER_SEND_METRICS=false
}

source "$BATON_ROOT/scripts/dev-vars.sh"

# The worker crates, in the order their configs are given to `wrangler dev` (the first owns the port).
BATON_WORKERS=(orchestrator poller consumer sample-services)

worker_config() { # crate -> its wrangler config, relative to the root
  if [ "$1" = orchestrator ]; then echo wrangler.toml; else echo "crates/$1/wrangler.toml"; fi
}

build_worker() { # crate
  log "building worker $1"
  (cd "$BATON_ROOT/crates/$1" && "$WORKER_BUILD_BIN" --release --no-opt >&2)
}

# Whether a worker's build is missing or older than a source it is built from.
worker_is_stale() { # crate
  local out="$BATON_ROOT/crates/$1/build/index_bg.wasm"
  [ -f "$out" ] || return 0
  [ -n "$(find "$BATON_ROOT/crates/$1/src" "$BATON_ROOT/crates/$1/Cargo.toml" "$BATON_ROOT/crates/core/src" \
    "$BATON_ROOT/crates/edge/src" "$BATON_ROOT/crates/api/src" "$BATON_ROOT/Cargo.toml" "$BATON_ROOT/Cargo.lock" -newer "$out" -print -quit)" ]
}

build_all_workers() {
  local w
  for w in "${BATON_WORKERS[@]}"; do build_worker "$w"; done
}

# The local stack's D1 bindings, one per shard (DB_0, DB_1, ...): the [[d1_databases]] of
# wrangler.toml before its first [env.…] section.
local_d1_bindings() {
  sed -n '/^\[env\./q; s/^binding = "\(DB_[0-9]*\)"$/\1/p' "$BATON_ROOT/wrangler.toml"
}

# Apply D1 migrations to every local shard's database in $1 (a persistence directory).
migrate_local() {
  local binding
  for binding in $(local_d1_bindings); do
    (cd "$BATON_ROOT" && CI=true "$WRANGLER" d1 migrations apply "$binding" --local --persist-to "$1" >&2)
  done
}

wrangler_dev_args() { # port persist-dir
  local args=(dev) w
  for w in "${BATON_WORKERS[@]}"; do args+=(-c "$(worker_config "$w")"); done
  args+=(--port "$1" --persist-to "$2" --ip 127.0.0.1 --show-interactive-dev-session=false)
  printf '%s\n' "${args[@]}"
}

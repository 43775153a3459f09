#!/usr/bin/env bash
# The Node install on a new machine, run by `make test`: with an empty tool cache and a Node
# older than wrangler needs first on PATH, `ensure_node` installs the project-local Node and
# the shell it runs in goes on with that Node, on the first try.
#   The older Node is the system's when it is older; otherwise node-<platform>@20 from the npm
#   registry, kept in $BATON_CACHE/node20-old (a real Node, so that npm still runs on it).
source "$(dirname "$0")/../../scripts/toolchain.sh"
cd "$BATON_ROOT"

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

platform=$(node_platform) || { log "toolchain test skipped: no project-local Node for $(uname -sm)"; exit 0; }

# A PATH whose first `node` is older than required.
old_path=$PATH
if node_is_new_enough; then
  old="$BATON_CACHE/node20-old"
  if [ ! -x "$old/node_modules/node-$platform/bin/node" ]; then
    log "toolchain test: installing node-$platform@20 into $old (once) to play an older system Node"
    mkdir -p "$old"
    npm install --no-save --no-audit --no-fund --loglevel=error --prefix "$old" "node-$platform@20" >&2
  fi
  old_path="$old/node_modules/node-$platform/bin:$PATH"
fi

log "toolchain test: ensure_node with an empty cache and an older Node first on PATH"
out="$scratch/out"
# `type node` before ensure_node makes the shell remember the old one, as a script that used
# node earlier would.
if ! PATH="$old_path" BATON_CACHE="$scratch/cache" bash -c '
  source scripts/toolchain.sh
  node_is_new_enough && { echo "the older Node is not older" >&2; exit 3; }
  type node > /dev/null
  ensure_node
  node_is_new_enough || { echo "ensure_node returned, but $(node --version) runs" >&2; exit 4; }
  node --version' > "$out" 2>&1; then
  cat "$out" >&2
  log "FAIL toolchain test: ensure_node did not end with a new enough Node on the first try"
  exit 1
fi
printf '  ok    a new machine installs Node %s on the first try\n' "$(tail -1 "$out")" >&2

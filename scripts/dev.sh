#!/usr/bin/env bash
# The run command (`make dev`): installs what is missing, builds every worker, applies the
# D1 migrations locally and starts all workers in ONE `wrangler dev` process so they share
# local D1, KV and queues. A change under a worker's sources (its config's watch_dir: the
# crate, crates/edge, crates/core) rebuilds that worker without restarting the stack.
#   BATON_PORT     port of the orchestrator (default 8787)
#   BATON_PERSIST  local state directory (default .wrangler/state)
#   BATON_CRON     seconds between local poller ticks (default 60; 0 = none). Cron triggers
#                  do not fire under `wrangler dev`, so this loop plays Cloudflare's cron.
source "$(dirname "$0")/toolchain.sh"
cd "$BATON_ROOT"

port="${BATON_PORT:-8787}"
persist="${BATON_PERSIST:-$BATON_ROOT/.wrangler/state}"
cron_every="${BATON_CRON:-60}"

ensure_toolchain
ensure_dev_vars
# The workers' variables (wrangler.toml [vars], .dev.vars: RETENTION_DAYS and every other one
# Baton validates), checked by Baton's own parsers before anything starts.
cargo run --quiet -p baton-cli -- check-config --root . ||
  { log "error: a variable is invalid (see above); fix it in wrangler.toml or .dev.vars"; exit 1; }
for w in "${BATON_WORKERS[@]}"; do
  if worker_is_stale "$w"; then build_worker "$w"; else log "worker $w is up to date"; fi
done
mkdir -p "$persist"
migrate_local "$persist"

admin_token=$(sed -n 's/^ADMIN_TOKEN=//p' .dev.vars)
api_token=$(sed -n 's/^API_TOKENS=\([^:]*\):.*/\1/p' .dev.vars)
url="http://127.0.0.1:$port"

# Once the stack answers: the banner, then the local cron (a first tick at once).
(
  for _ in $(seq 1 600); do
    curl -fs -o /dev/null "$url/health" && break
    sleep 0.5
  done
  cat >&2 <<MSG

  Baton is running on $url (state in $persist; Ctrl-C stops it)
    health:  curl $url/health
    the CLI: cargo run -q -p baton-cli -- --url $url run --site site_123 --domain example.com --wait
    a run:   curl -X POST '$url/api/orchestration/run?wait=30' -H 'Authorization: Bearer $api_token' \\
               -H 'Content-Type: application/json' -d '{"website_id":"site_123","domain":"example.com"}'
    API:     README.md, "API". Editing a crate rebuilds its worker in place.

MSG
  [ "$cron_every" -gt 0 ] || exit 0
  while :; do
    curl -s -o /dev/null -X POST -H "Authorization: Bearer $admin_token" "$url/admin/poller/cron" || true
    sleep "$cron_every"
  done
) &
helper=$!
trap 'kill $helper 2>/dev/null' EXIT

args=()
while IFS= read -r arg; do args+=("$arg"); done < <(wrangler_dev_args "$port" "$persist")
BATON_BUILD_IF_STALE=1 "$WRANGLER" "${args[@]}"

#!/usr/bin/env bash
# The run command (`make dev`): installs what is missing, builds every worker, applies the
# D1 migrations locally and starts all workers in ONE `wrangler dev` process so they share
# local D1, KV and queues.
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
build_all_workers
mkdir -p "$persist"
migrate_local "$persist"

admin_token=$(sed -n 's/^ADMIN_TOKEN=//p' .dev.vars)
api_token=$(sed -n 's/^API_TOKENS=\([^:]*\):.*/\1/p' .dev.vars)
url="http://127.0.0.1:$port"

if [ "$cron_every" -gt 0 ]; then
  (
    until curl -fs -o /dev/null "$url/health"; do sleep 1; done
    while sleep "$cron_every"; do
      curl -s -o /dev/null -X POST -H "Authorization: Bearer $admin_token" "$url/admin/poller/cron" || true
    done
  ) &
  cron_pid=$!
  trap 'kill $cron_pid 2>/dev/null' EXIT
fi

cat >&2 <<MSG

  Baton is starting on $url (state in $persist)
  Try:
    curl $url/health
    curl -X POST $url/api/orchestration/run -H 'Authorization: Bearer $api_token' \\
         -H 'Content-Type: application/json' -d '{"website_id":"site_123","domain":"example.com"}'

MSG
mapfile -t args < <(wrangler_dev_args "$port" "$persist")
BATON_SKIP_BUILD=1 "$WRANGLER" "${args[@]}"

#!/usr/bin/env bash
# The deploy's offline tests, run by `make test` once the workers are built:
#   1. `wrangler deploy --dry-run` of every worker in every deployed environment: a config
#      error or a wrangler warning fails the test;
#   2. scripts/deploy.sh against tests/deploy/fake-wrangler (an account kept in files): it
#      creates each resource once across two runs, writes the ids, deploys in dependency order
#      (the fake refuses a binding to a Worker that does not exist yet), passes each worker its
#      secrets, and never prints one.
source "$(dirname "$0")/../../scripts/toolchain.sh"
cd "$BATON_ROOT"
ensure_node
WRANGLER="${WRANGLER:-$BATON_ROOT/node_modules/.bin/wrangler}"
export WRANGLER_SEND_METRICS=false
set +e # every check reports; the exit status counts them

scratch=$(mktemp -d)
trap '[ -n "${KEEP:-}" ] || rm -rf "$scratch"' EXIT
failures=0
check() { # description command...
  local what=$1
  shift
  if "$@"; then
    printf '  ok    %s\n' "$what" >&2
  else
    printf '  FAIL  %s\n' "$what" >&2
    failures=$((failures + 1))
    return 1
  fi
}
deployed_envs() { sed -n 's/^\[env\.\([a-z0-9_-]*\)\]$/\1/p' wrangler.toml; }

# ---- 1. dry runs ----
log "deploy dry runs (wrangler deploy --dry-run, every worker and environment)"
for env in $(deployed_envs); do
  for w in "${BATON_WORKERS[@]}"; do
    out="$scratch/dry-$env-$w.log"
    if BATON_SKIP_BUILD=1 "$WRANGLER" deploy --dry-run --outdir "$scratch/dry-$env-$w" \
      -c "$(worker_config "$w")" --env "$env" > "$out" 2>&1 && ! grep -q 'WARNING' "$out"; then
      printf '  ok    %s --env %s\n' "$w" "$env" >&2
    else
      printf '  FAIL  %s --env %s:\n' "$w" "$env" >&2
      sed 's/^/        /' "$out" >&2
      failures=$((failures + 1))
    fi
  done
done

# ---- 2. the deploy script against a fake account ----
log "the deploy script (scripts/deploy.sh with a fake wrangler)"
root="$scratch/checkout"
mkdir -p "$root/crates"
cp -R scripts migrations wrangler.toml .dev.vars.example .secrets.example "$root/"
for w in "${BATON_WORKERS[@]}"; do
  [ "$w" = orchestrator ] || { mkdir -p "$root/crates/$w" && cp "crates/$w/wrangler.toml" "$root/crates/$w/"; }
done
export FAKE_ACCOUNT="$scratch/account" BATON_WRANGLER="$BATON_ROOT/tests/deploy/fake-wrangler"
# The variables' check runs the built CLI (scripts/test.sh builds it).
export BATON_CLI="${BATON_CLI:-${CARGO_TARGET_DIR:-$BATON_ROOT/target}/debug/baton}"
secret_values=(api-token-s3cr3t-1 admin-s3cr3t-2 worker-s3cr3t-3 llm-s3cr3t-4 internal-s3cr3t-5)
cat > "$root/.secrets.staging" <<SECRETS
# test secrets
API_TOKENS=${secret_values[0]}:acme
ADMIN_TOKEN="${secret_values[1]}"
WORKER_SECRET=${secret_values[2]}
LLM_API_KEY=${secret_values[3]}
INTERNAL_KEY=${secret_values[4]}
SECRETS
cp "$root/.secrets.staging" "$root/.secrets.production"



run_deploy() { # log-file args...
  local out=$1
  shift
  (cd "$root" && bash scripts/deploy.sh "$@") > "$out" 2>&1
}
calls() { cat "$FAKE_ACCOUNT/calls.log" 2> /dev/null; }
count_calls() { calls | grep -c -- "$1" || true; }
deploys() { sed 's/^deployed //; s/ secrets=[^ ]*//' "$FAKE_ACCOUNT/deploys.log"; }
no_secret_in() {
  local v
  for v in "${secret_values[@]}"; do ! grep -rqF -- "$v" "$@" || return 1; done
}

# A shard count the configs do not match is refused before anything is created.
cp "$root/crates/poller/wrangler.toml" "$scratch/poller.toml"
sed -i 's/^binding = "DB_1"$/binding = "DB_2"/' "$root/crates/poller/wrangler.toml"
run_deploy "$scratch/mismatch.log" --env staging --with-samples && status=0 || status=$?
check "shards the configs do not declare: refused" test "$status" -ne 0
check "shards the configs do not declare: the error names D1_SHARDS and the bindings" \
  grep -q 'D1_SHARDS is 2 .*bindings DB_0 DB_1' "$scratch/mismatch.log"
check "shards the configs do not declare: nothing is created" test "$(count_calls create)" = 0
cp "$scratch/poller.toml" "$root/crates/poller/wrangler.toml"
rm -f "$FAKE_ACCOUNT/calls.log"

# Logged out: nothing is created, and the message says how to log in.
mkdir -p "$FAKE_ACCOUNT" && touch "$FAKE_ACCOUNT/logged-out"
run_deploy "$scratch/logged-out.log" --env staging --with-samples && status=0 || status=$?
check "logged out: fails" test "$status" -ne 0
check "logged out: says how to log in" grep -q 'wrangler login.*CLOUDFLARE_API_TOKEN' "$scratch/logged-out.log"
check "logged out: creates nothing" test "$(count_calls create)" = 0
rm -f "$FAKE_ACCOUNT/logged-out" "$FAKE_ACCOUNT/calls.log"

# A first deploy of staging with the sample services, then the same again.
run_deploy "$scratch/first.log" --env staging --with-samples && status=0 || status=$?
check "first deploy succeeds" test "$status" = 0 || sed 's/^/        /' "$scratch/first.log" >&2
check "the D1 database of each shard is created" \
  test "$(count_calls '^d1 create baton-staging$')$(count_calls '^d1 create baton-staging-1$')" = 11
check "the KV namespace is created" test "$(count_calls '^kv namespace create baton-staging$')" = 1
check "the archive's R2 bucket is created" test "$(count_calls '^r2 bucket create baton-archive-staging$')" = 1
for q in baton-tasks-staging baton-tasks-dlq-staging llm-analysis-staging llm-analysis-dlq-staging \
  baton-webhooks-staging baton-webhooks-dlq-staging; do
  check "queue $q is created" test "$(count_calls "^queues create $q\$")" = 1
done
for c in wrangler.toml crates/poller/wrangler.toml crates/consumer/wrangler.toml; do
  check "$c: the staging database ids are written, one per shard" \
    test "$(grep -A2 '^binding = "DB_[01]"$' "$root/$c" | grep -c '^database_id = "fake-d1-baton-staging\(-1\)\{0,1\}"$')" = 2
  check "$c: production is left alone" grep -q '^database_id = "written-by-make-deploy"$' "$root/$c"
done
for c in wrangler.toml crates/poller/wrangler.toml crates/consumer/wrangler.toml crates/sample-services/wrangler.toml; do
  check "$c: the staging KV id is written" grep -q '^id = "fake-kv-baton-staging"$' "$root/$c"
done
check "migrations run on every shard after the ids are written" \
  test "$(grep -c '^Migrations applied to fake-d1-baton-staging\(-1\)\{0,1\} (DB_[01])$' "$scratch/first.log")" = 2
expected_first="baton-sample-services-staging config=.wrangler-first-pass.toml
baton-poller-staging config=wrangler.toml
baton-consumer-staging config=wrangler.toml
baton-orchestrator-staging config=wrangler.toml
baton-sample-services-staging config=wrangler.toml"
check "workers deploy in dependency order, the sample services twice" test "$(deploys)" = "$expected_first"
check "the first-pass config is removed" test ! -e "$root/crates/sample-services/.wrangler-first-pass.toml"
check "each worker gets its secrets" grep -q 'baton-orchestrator-staging secrets=ADMIN_TOKEN,API_TOKENS,INTERNAL_KEY,LLM_API_KEY,WORKER_SECRET ' \
  "$FAKE_ACCOUNT/deploys.log"
check "the consumer (and the orchestrator) get the LLM key" grep -q 'baton-consumer-staging secrets=ADMIN_TOKEN,INTERNAL_KEY,LLM_API_KEY,WORKER_SECRET ' \
  "$FAKE_ACCOUNT/deploys.log"
check "the URL is printed" grep -q 'curl https://baton-orchestrator-staging.fake.workers.dev/health' "$scratch/first.log"

: > "$FAKE_ACCOUNT/deploys.log"
: > "$FAKE_ACCOUNT/calls.log"
run_deploy "$scratch/second.log" --env staging --with-samples && status=0 || status=$?
check "second deploy succeeds" test "$status" = 0 || sed 's/^/        /' "$scratch/second.log" >&2
check "the second deploy creates nothing" test "$(count_calls create)" = 0
expected_second="baton-sample-services-staging config=wrangler.toml
baton-poller-staging config=wrangler.toml
baton-consumer-staging config=wrangler.toml
baton-orchestrator-staging config=wrangler.toml"
check "the second deploy needs no first pass" test "$(deploys)" = "$expected_second"

# Production binds the stand-ins until told otherwise: refused without --with-samples.
: > "$FAKE_ACCOUNT/calls.log"
run_deploy "$scratch/refused.log" --env production && status=0 || status=$?
check "production with the stand-ins bound is refused" test "$status" -ne 0
check "the refusal names KAM" grep -q 'KAM binds the sample services' "$scratch/refused.log"
check "the refusal happens before anything is created" test "$(count_calls create)" = 0

# The orchestrator and the consumer both analyse runs: LLM settings that differ are refused.
cp "$root/crates/consumer/wrangler.toml" "$scratch/consumer.toml.orig"
sed -i 's/^\[env.production.vars\]$/[env.production.vars]\nLLM_API_URL = "https:\/\/llm.example\/v1"/' \
  "$root/crates/consumer/wrangler.toml"
run_deploy "$scratch/llm.log" --env production --with-samples && status=0 || status=$?
check "LLM settings that differ between the workers are refused" grep -q 'LLM_API_URL in \[env.production.vars\]' "$scratch/llm.log"
check "... before anything is created" test "$(count_calls create)" = 0
cp "$scratch/consumer.toml.orig" "$root/crates/consumer/wrangler.toml"

# A bad RETENTION_DAYS is refused, naming the variable, before anything is created.
cp "$root/crates/poller/wrangler.toml" "$scratch/poller.toml.orig"
sed -i 's/^\[env.production.vars\]$/[env.production.vars]\nRETENTION_DAYS = "a month"/' "$root/crates/poller/wrangler.toml"
: > "$FAKE_ACCOUNT/calls.log"
run_deploy "$scratch/retention.log" --env production --with-samples && status=0 || status=$?
check "a bad RETENTION_DAYS is refused" test "$status" -ne 0
check "... naming the variable and its config" \
  grep -q 'crates/poller/wrangler.toml \[env.production.vars\]: RETENTION_DAYS: .*number of days' "$scratch/retention.log"
check "... before anything is created" test "$(count_calls create)" = 0
cp "$scratch/poller.toml.orig" "$root/crates/poller/wrangler.toml"

# An incomplete or development secrets file is refused before anything is created.
sed -i.bak 's/^WORKER_SECRET=.*/WORKER_SECRET=dev-worker-secret/' "$root/.secrets.production"
run_deploy "$scratch/dev-secret.log" --env production --with-samples && status=0 || status=$?
check "a development secret is refused" grep -q 'WORKER_SECRET is the local development value' "$scratch/dev-secret.log"
check "... before anything is created" test "$(count_calls create)" = 0
mv "$root/.secrets.production.bak" "$root/.secrets.production"

# Production bound to the user's own services (they exist on the account).
for c in wrangler.toml crates/poller/wrangler.toml crates/consumer/wrangler.toml; do
  sed -i.bak '/^\[\[env\.production\.services\]\]$/,/^$/ s/^service = "baton-sample-services"$/service = "acme-services"/' \
    "$root/$c"
  rm -f "$root/$c.bak"
done
touch "$FAKE_ACCOUNT/workers/acme-services"
: > "$FAKE_ACCOUNT/deploys.log"
run_deploy "$scratch/production.log" --env production && status=0 || status=$?
check "production deploy with own services succeeds" test "$status" = 0 || sed 's/^/        /' "$scratch/production.log" >&2
check "production deploys no sample services" test "$(deploys)" = "baton-poller config=wrangler.toml
baton-consumer config=wrangler.toml
baton-orchestrator config=wrangler.toml"
check "production has its own databases" test "$(grep -c '^database_id = "fake-d1-baton\(-1\)\{0,1\}"$' "$root/wrangler.toml")" = 2

check "no secret value is ever printed or passed on the command line" \
  no_secret_in "$scratch"/*.log "$FAKE_ACCOUNT/calls.log" "$FAKE_ACCOUNT/deploys.log"

[ "$failures" = 0 ] || { log "deploy tests: $failures failed"; exit 1; }
log "deploy tests passed"

#!/usr/bin/env bash
# The deploy command (`make deploy ENV=production|staging [ARGS=--with-samples]`): deploys the
# suite to the Cloudflare account wrangler is logged in to, as one named environment
# ([env.<name>] in every wrangler.toml).
#   0. checks the workers' variables with Baton's own parsers (`baton check-config`);
#   1. checks the login (`wrangler whoami`);
#   2. creates what is missing, found by name: the D1 databases (one per shard: DB_0..DB_{N-1},
#      N = the environment's D1_SHARDS), the KV namespace (titled like the first database),
#      the queues and their dead-letter queues; writes the ids into the environment's sections
#      of the configs (commit them: ids are not secrets);
#   3. applies the D1 migrations to every remote database;
#   4. deploys the workers in dependency order, each with its secrets (from .secrets.<env>,
#      uploaded with the version, never printed). The sample services bind the orchestrator
#      and the orchestrator binds them (KAM): on a first deploy they go once without that
#      binding, then again with it;
#   5. prints the URLs.
# Running it again creates nothing and deploys the current code.
# Options:
#   --env NAME         production or staging (any [env.NAME] the configs define)
#   --with-samples     also deploy the sample services and let KAM/SERVICES bind them; without
#                      it the environment's KAM and SERVICES must name your own services
#   --secrets FILE     the secrets file (default .secrets.<env>; format in .secrets.example)
#   BATON_WRANGLER     the wrangler to run (default: the one pinned in package-lock.json)
#   BATON_CLI          a built `baton` CLI for the variables' check (default: cargo run)
set -euo pipefail
source "$(dirname "$0")/toolchain.sh"
cd "$BATON_ROOT"

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }
fail() { log "error: $*"; exit 1; }

env_name="" with_samples=0 secrets_file=""
while [ $# -gt 0 ]; do
  case "$1" in
    --env) env_name="${2:-}"; shift 2 ;;
    --env=*) env_name="${1#--env=}"; shift ;;
    --with-samples) with_samples=1; shift ;;
    --secrets) secrets_file="${2:-}"; shift 2 ;;
    --secrets=*) secrets_file="${1#--secrets=}"; shift ;;
    -h|--help) usage ;;
    *) log "unknown option: $1"; usage ;;
  esac
done
[ -n "$env_name" ] || { log "name the environment: make deploy ENV=production (or staging)"; usage; }
secrets_file="${secrets_file:-.secrets.$env_name}"

# The workers' variables ([env.<name>.vars]: RETENTION_DAYS and every other one Baton
# validates), checked by Baton's own parsers before anything is created.
if [ -n "${BATON_CLI:-}" ]; then
  "$BATON_CLI" check-config --root . --env "$env_name"
else
  ensure_toolchain && cargo run --quiet -p baton-cli -- check-config --root . --env "$env_name"
fi || fail "a variable in [env.$env_name.vars] is invalid (see above); nothing was deployed"

if [ -n "${BATON_WRANGLER:-}" ]; then
  wrangler=$BATON_WRANGLER
else
  ensure_node
  ensure_node_modules
  wrangler="$BATON_ROOT/node_modules/.bin/wrangler"
fi
command -v node > /dev/null || fail "node is needed (make dev installs it)"
export WRANGLER_SEND_METRICS=false CI=true

# ---- the configs (TOML read line by line: the tables Baton's configs use, one value a line) ----

# The values of `key` in every table named `section` ([section] or [[section]]).
toml_values() { # file section key
  awk -v sec="$2" -v key="$3" '
    /^[[:space:]]*\[/ { cur = $0; gsub(/^[[:space:]]*\[+|\][^]]*$|\]/, "", cur); next }
    cur == sec && $0 ~ "^[[:space:]]*" key "[[:space:]]*=" {
      v = $0; sub(/^[^=]*=[[:space:]]*"/, "", v); sub(/".*$/, "", v); print v
    }' "$1"
}

# The raw right-hand side of `key = ...` in table `section` (quotes and all).
toml_raw() { # file section key
  awk -v sec="$2" -v key="$3" '
    /^[[:space:]]*\[/ { cur = $0; gsub(/^[[:space:]]*\[+|\][^]]*$|\]/, "", cur); next }
    cur == sec && $0 ~ "^[[:space:]]*" key "[[:space:]]*=" { v = $0; sub(/^[^=]*=[[:space:]]*/, "", v); print v }' "$1"
}

# The `service` of the [[section]] table whose `binding` is `binding`.
toml_service_of() { # file section binding
  awk -v sec="$2" -v want="$3" '
    function flush() { if (b == want && s != "") print s; b = ""; s = "" }
    /^[[:space:]]*\[/ { flush(); cur = $0; gsub(/^[[:space:]]*\[+|\][^]]*$|\]/, "", cur); next }
    cur == sec && /^[[:space:]]*binding[[:space:]]*=/ { b = $0; sub(/^[^=]*=[[:space:]]*"/, "", b); sub(/".*$/, "", b) }
    cur == sec && /^[[:space:]]*service[[:space:]]*=/ { s = $0; sub(/^[^=]*=[[:space:]]*"/, "", s); sub(/".*$/, "", s) }
    END { flush() }' "$1"
}

# Sets `key = "value"` in every table named `section` that has the key.
toml_set() { # file section key value
  local tmp
  tmp=$(mktemp "$1.XXXXXX")
  awk -v sec="$2" -v key="$3" -v val="$4" '
    /^[[:space:]]*\[/ { cur = $0; gsub(/^[[:space:]]*\[+|\][^]]*$|\]/, "", cur) }
    cur == sec && $0 ~ "^[[:space:]]*" key "[[:space:]]*=" { print key " = \"" val "\""; next }
    { print }' "$1" > "$tmp"
  cat "$tmp" > "$1" # keeps the file's mode
  rm -f "$tmp"
}

# A copy of a config, beside it (relative paths hold), without the [[section]] table binding
# `binding`.
config_without_binding() { # file section binding -> path of the copy
  local copy
  copy="$(dirname "$1")/.wrangler-first-pass.toml"
  awk -v sec="$2" -v want="$3" '
    function flush() { if (!(cur == sec && b == want)) printf "%s", buf; buf = ""; b = "" }
    /^[[:space:]]*\[/ { flush(); cur = $0; gsub(/^[[:space:]]*\[+|\][^]]*$|\]/, "", cur) }
    cur == sec && /^[[:space:]]*binding[[:space:]]*=/ { b = $0; sub(/^[^=]*=[[:space:]]*"/, "", b); sub(/".*$/, "", b) }
    { buf = buf $0 "\n" }
    END { flush() }' "$1" > "$copy"
  printf '%s' "$copy"
}

# Sets `key` only in the [[section]] table binding `binding` (one of several of its kind).
toml_set_in_binding() { # file section binding key value
  local tmp
  tmp=$(mktemp "$1.XXXXXX")
  awk -v sec="$2" -v want="$3" -v key="$4" -v val="$5" '
    /^[[:space:]]*\[/ { cur = $0; gsub(/^[[:space:]]*\[+|\][^]]*$|\]/, "", cur); b = "" }
    cur == sec && /^[[:space:]]*binding[[:space:]]*=/ { b = $0; sub(/^[^=]*=[[:space:]]*"/, "", b); sub(/".*$/, "", b) }
    cur == sec && b == want && $0 ~ "^[[:space:]]*" key "[[:space:]]*=" { print key " = \"" val "\""; next }
    { print }' "$1" > "$tmp"
  cat "$tmp" > "$1" # keeps the file's mode
  rm -f "$tmp"
}

section() { printf 'env.%s.%s' "$env_name" "$1"; }
grep -q "^\[env\.$env_name\]" wrangler.toml || fail "no [env.$env_name] in wrangler.toml"

configs=()
for w in "${BATON_WORKERS[@]}"; do configs+=("$(worker_config "$w")"); done
worker_name() { # crate -> the worker's name in this environment
  local c
  c=$(worker_config "$1")
  awk -v sec="env.$env_name" '
    /^[[:space:]]*\[/ { cur = $0; gsub(/^[[:space:]]*\[+|\][^]]*$|\]/, "", cur); next }
    cur == sec && /^[[:space:]]*name[[:space:]]*=/ { v = $0; sub(/^[^=]*=[[:space:]]*"/, "", v); sub(/".*$/, "", v); print v }' "$c"
}

# One database per shard: the bindings DB_0..DB_{N-1}, N = D1_SHARDS, declared alike in every
# worker's config.
shard_bindings=$(toml_values wrangler.toml "$(section d1_databases)" binding)
shard_databases=$(toml_values wrangler.toml "$(section d1_databases)" database_name)
shards=$(toml_values wrangler.toml "$(section vars)" D1_SHARDS | head -n 1)
shards=${shards:-1}
database=$(printf '%s\n' "$shard_databases" | head -n 1)
[ -n "$database" ] || fail "no [[env.$env_name.d1_databases]] database_name in wrangler.toml"
case "$shards" in
  '' | *[!0-9]* | 0*) fail "D1_SHARDS in [env.$env_name.vars] must be a whole number from 1 to 64, got \"$shards\"" ;;
esac
[ "$shards" -le 64 ] || fail "D1_SHARDS in [env.$env_name.vars] must be a whole number from 1 to 64, got \"$shards\""
expected_bindings=$(for ((i = 0; i < shards; i++)); do echo "DB_$i"; done)
for c in "${configs[@]}"; do
  # A worker without D1 (the sample services) declares none.
  [ -n "$(toml_values "$c" "$(section d1_databases)" binding)" ] || continue
  [ "$(toml_values "$c" "$(section d1_databases)" binding)" = "$expected_bindings" ] || fail "D1_SHARDS is $shards in \
[env.$env_name.vars], so $c must declare [[env.$env_name.d1_databases]] bindings $(echo $expected_bindings) in that order \
(it declares: $(echo $(toml_values "$c" "$(section d1_databases)" binding)))"
  [ "$(toml_values "$c" "$(section vars)" D1_SHARDS | head -n 1)" = "$shards" ] \
    || fail "D1_SHARDS must be the same in every worker's [env.$env_name.vars] ($c differs from wrangler.toml)"
done
kv_title=$database
queues=$(
  for c in "${configs[@]}"; do
    toml_values "$c" "$(section queues.producers)" queue
    toml_values "$c" "$(section queues.consumers)" queue
    toml_values "$c" "$(section queues.consumers)" dead_letter_queue
  done | awk 'NF && !seen[$0]++'
)

# ---- secrets: checked before anything is created ----
[ -f "$secrets_file" ] || fail "no secrets file $secrets_file: copy .secrets.example to it and fill it in"
secrets_dir=$(mktemp -d)
chmod 700 "$secrets_dir"
first_pass=""
cleanup() {
  rm -rf "$secrets_dir"
  [ -z "$first_pass" ] || rm -f "$first_pass"
}
trap cleanup EXIT

# Each worker's secrets as JSON files in $secrets_dir (values never reach stdout or argv).
node - "$secrets_file" "$secrets_dir" "$BATON_ROOT/.dev.vars.example" <<'JS' || fail "the secrets file is incomplete (see above)"
const fs = require("fs");
const [file, dir, devExample] = process.argv.slice(2);
const parse = (text) => Object.fromEntries(text.split(/\r?\n/)
  .map((l) => l.trim()).filter((l) => l && !l.startsWith("#") && l.includes("="))
  .map((l) => { const i = l.indexOf("="); let v = l.slice(i + 1).trim();
    if (v.length > 1 && (v[0] === '"' || v[0] === "'") && v.endsWith(v[0])) v = v.slice(1, -1);
    return [l.slice(0, i).trim(), v]; }));
const secrets = parse(fs.readFileSync(file, "utf8"));
const devValues = new Set(Object.values(parse(fs.readFileSync(devExample, "utf8"))));
const problems = [];
for (const name of ["API_TOKENS", "ADMIN_TOKEN", "WORKER_SECRET", "INTERNAL_KEY"]) {
  if (!secrets[name]) problems.push(`${name} is missing or empty`);
  else if (devValues.has(secrets[name])) problems.push(`${name} is the local development value`);
}
for (const p of problems) console.error(`  ${file}: ${p}`);
if (problems.length) process.exit(1);
const pick = (names) => Object.fromEntries(names.filter((n) => secrets[n]).map((n) => [n, secrets[n]]));
const of = {
  orchestrator: ["API_TOKENS", "API_DELEGATIONS", "ADMIN_TOKEN", "WORKER_SECRET", "INTERNAL_KEY", "SERVICE_KEYS", "EVENT_KEYS", "LLM_API_KEY"],
  poller: ["ADMIN_TOKEN", "WORKER_SECRET", "SERVICE_KEYS"],
  consumer: ["ADMIN_TOKEN", "WORKER_SECRET", "INTERNAL_KEY", "SERVICE_KEYS", "LLM_API_KEY"],
  "sample-services": ["ADMIN_TOKEN", "WORKER_SECRET", "SERVICE_KEYS"],
};
for (const [worker, names] of Object.entries(of)) {
  fs.writeFileSync(`${dir}/${worker}.json`, JSON.stringify(pick(names)), { mode: 0o600 });
}
JS

# ---- the services the workers bind ----
sample_name=$(worker_name sample-services)
kam=$(toml_service_of wrangler.toml "$(section services)" KAM)
services=$(toml_service_of "$(worker_config consumer)" "$(section services)" SERVICES)
orchestrator_services=$(toml_service_of wrangler.toml "$(section services)" SERVICES)
[ -z "$orchestrator_services" ] || [ "$orchestrator_services" = "$services" ] || fail "SERVICES in wrangler.toml \
($orchestrator_services) and in crates/consumer/wrangler.toml ($services) differ in [env.$env_name]: both run attempts, \
so both must reach the same services"
# Both run attempts and analyse runs (the orchestrator those whose client waits): the same
# service addresses and LLM settings.
for var in SERVICE_URLS LLM_API_URL LLM_MODEL LLM_TIMEOUT_MS; do
  ours=$(toml_raw wrangler.toml "$(section vars)" "$var" | head -n 1)
  theirs=$(toml_raw "$(worker_config consumer)" "$(section vars)" "$var" | head -n 1)
  [ "$ours" = "$theirs" ] || fail "$var in [env.$env_name.vars] is ${ours:-unset} in wrangler.toml and ${theirs:-unset} in \
crates/consumer/wrangler.toml: both workers run attempts and analyse runs, so both need the same value"
done
if [ "$with_samples" = 0 ]; then
  for bound in "KAM:$kam" "SERVICES:$services"; do
    [ "${bound#*:}" != "$sample_name" ] || fail "${bound%%:*} binds the sample services ($sample_name): point it at your \
own service in [env.$env_name] (wrangler.toml for KAM; wrangler.toml and crates/{poller,consumer}/wrangler.toml for SERVICES), or pass --with-samples"
  done
fi

# ---- 1. login ----
log "checking the Cloudflare login (wrangler whoami)"
if ! "$wrangler" whoami --json > /dev/null 2>&1; then
  fail "not logged in to Cloudflare: run \`npx wrangler login\`, or set CLOUDFLARE_API_TOKEN (and
  CLOUDFLARE_ACCOUNT_ID when the token reaches several accounts), then run this again"
fi

# ---- 2. resources ----
json_field() { # field-to-print match-field match-value: reads a JSON array on stdin
  node -e '
    const [out, key, value] = process.argv.slice(1);
    let text = require("fs").readFileSync(0, "utf8");
    text = text.slice(text.indexOf("["));
    const hit = JSON.parse(text).find((x) => x[key] === value);
    if (hit) process.stdout.write(String(hit[out]));' "$@"
}

d1_id() { "$wrangler" d1 list --json | json_field uuid name "$1"; }
database_ids=()
while read -r binding name; do
  id=$(d1_id "$name")
  if [ -z "$id" ]; then
    log "creating the D1 database $name ($binding)"
    "$wrangler" d1 create "$name" >&2
    id=$(d1_id "$name")
    [ -n "$id" ] || fail "D1 database $name was not found after creating it"
  fi
  database_ids+=("$binding:$name:$id")
done < <(paste -d ' ' <(printf '%s\n' "$shard_bindings") <(printf '%s\n' "$shard_databases"))

kv_id() { "$wrangler" kv namespace list | json_field id title "$kv_title"; }
kv_namespace_id=$(kv_id)
if [ -z "$kv_namespace_id" ]; then
  log "creating the KV namespace $kv_title"
  "$wrangler" kv namespace create "$kv_title" >&2
  kv_namespace_id=$(kv_id)
  [ -n "$kv_namespace_id" ] || fail "KV namespace $kv_title was not found after creating it"
fi

# The archive of runs past their retention (RETENTION_DAYS): the R2 bucket the configs name.
archive_bucket="baton-archive-$env_name"
if ! "$wrangler" r2 bucket info "$archive_bucket" > /dev/null 2>&1; then
  log "creating the R2 bucket $archive_bucket"
  "$wrangler" r2 bucket create "$archive_bucket" >&2
fi

for q in $queues; do
  if ! "$wrangler" queues info "$q" > /dev/null 2>&1; then
    log "creating the queue $q"
    "$wrangler" queues create "$q" >&2
  fi
done

for c in "${configs[@]}"; do
  for entry in "${database_ids[@]}"; do
    toml_set_in_binding "$c" "$(section d1_databases)" "${entry%%:*}" database_id "${entry##*:}"
  done
  toml_set "$c" "$(section kv_namespaces)" id "$kv_namespace_id"
done
log "resources: D1 $(echo "${database_ids[@]}"), KV $kv_title ($kv_namespace_id), R2 $archive_bucket, queues: $(echo $queues)"

# ---- 3. migrations ----
for entry in "${database_ids[@]}"; do
  log "applying the D1 migrations to ${entry%%:*} (remote)"
  "$wrangler" d1 migrations apply "${entry%%:*}" --remote -c wrangler.toml --env "$env_name" >&2
done

# ---- 4. workers ----
api_url=""
deploy() { # crate [config]
  local config=${2:-$(worker_config "$1")} out url
  log "deploying $1 ($(worker_name "$1"))"
  out=$(mktemp)
  if ! "$wrangler" deploy -c "$config" --env "$env_name" --secrets-file "$secrets_dir/$1.json" 2>&1 | tee "$out" >&2; then
    rm -f "$out"
    fail "deploying $1 failed (see above)"
  fi
  url=$(grep -o 'https://[^ ]*workers\.dev' "$out" | head -n 1 || true)
  rm -f "$out"
  [ "$1" != orchestrator ] || api_url=$url
}
exists() { "$wrangler" deployments status --name "$1" > /dev/null 2>&1; }

orchestrator_name=$(worker_name orchestrator)
second_pass=0
if [ "$with_samples" = 1 ]; then
  if exists "$orchestrator_name"; then
    deploy sample-services
  else
    # The orchestrator does not exist yet: the sample services go without their binding to it.
    first_pass=$(config_without_binding "$(worker_config sample-services)" "$(section services)" ORCHESTRATOR)
    deploy sample-services "$first_pass"
    second_pass=1
  fi
fi
deploy poller
deploy consumer
deploy orchestrator
if [ "$second_pass" = 1 ]; then
  log "deploying sample-services again, now with its ORCHESTRATOR binding"
  deploy sample-services
fi

# ---- 5. done ----
deployed=()
for w in "${BATON_WORKERS[@]}"; do
  [ "$w" = sample-services ] && [ "$with_samples" = 0 ] && continue
  deployed+=("$(worker_name "$w")")
done
log "deployed $env_name: ${deployed[*]}"
if [ -n "$api_url" ]; then
  log "the API: $api_url"
  log "try: curl $api_url/health"
else
  log "the orchestrator has no workers.dev URL: reach it through its routes or custom domain"
fi

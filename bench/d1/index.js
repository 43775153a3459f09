// POST /run?pattern=P: one unit of storage work, so that `drive.mjs` can price each kind.
//   run     the D1 writes of one queued standard-v1 run (five steps, the fifth after the first
//           wave), as Baton's engine issues them: four batches, 19 statements
//   one     the same 19 statements in one batch
//   read    four batches of one `SELECT 1`
//   write   four batches of one `INSERT`
//   kv-get  four KV reads of a key that is not there (as the configuration override's read)
//   kv-put  four KV writes of a new key (as a run's summary)
//   none    no storage call: the request's own cost
// GET /: ready.
const PLAN = JSON.stringify({ plan_id: "standard-v1", steps: 5 });
const OUTPUT = JSON.stringify({ score: 87, findings: ["a", "b", "c"], detail: "x".repeat(400) });

const EVENT = `INSERT INTO kbase_events (id, website_id, run_id, service, type, payload, created_at, dedupe_key)
  VALUES (?1, 'site', ?2, 'orchestrator', 'mark', '{}', 0, ?1)`;

const PATTERNS = {
  run: (env) => run(env.DB),
  one: async (env) => {
    const statements = [];
    await run({ prepare: (sql) => env.DB.prepare(sql), batch: async (batch) => statements.push(...batch) });
    await env.DB.batch(statements);
  },
  read: async (env) => {
    for (let i = 0; i < 4; i++) await env.DB.batch([env.DB.prepare("SELECT 1")]);
  },
  write: async (env) => {
    const id = crypto.randomUUID();
    for (let i = 0; i < 4; i++) await env.DB.batch([env.DB.prepare(EVENT).bind(crypto.randomUUID(), id)]);
  },
  "kv-get": async (env) => {
    for (let i = 0; i < 4; i++) await env.KV.get("orchestration:config");
  },
  "kv-put": async (env) => {
    const id = crypto.randomUUID();
    for (let i = 0; i < 4; i++) await env.KV.put(`job:${id}:${i}`, OUTPUT);
  },
  none: async () => {},
};

export default {
  async fetch(request, env) {
    if (request.method !== "POST") return new Response("ready");
    const name = new URL(request.url).searchParams.get("pattern") ?? "run";
    const pattern = PATTERNS[name];
    if (!pattern) return new Response(`unknown pattern ${name}; known: ${Object.keys(PATTERNS).join(", ")}`, { status: 400 });
    await pattern(env);
    return new Response("ok");
  },
};

/** The D1 writes of one queued standard-v1 run. */
async function run(db) {
  const id = crypto.randomUUID();
  const now = Date.now();
  const services = ["serp", "seo", "authority", "vitals", "competitive"];
  const v = () => Math.floor(Math.random() * 2 ** 40);
  let version = v();
  // 1. the start: run, steps, start event, the first wave claimed.
  await db.batch([
    db.prepare(`INSERT INTO runs (run_id, kind, client_id, website_id, domain, plan_id, plan_name, plan_json,
      status, created_at, started_at, deadline_at, due_at, version)
      VALUES (?1, 'diagnostic', 'alice', 'site', 'example.com', 'standard-v1', 'Standard', ?2, 'running', ?3, ?3, ?4, ?4, ?5)`)
      .bind(id, PLAN, now, now + 1_800_000, version),
    ...services.map((s, i) => db.prepare(`INSERT INTO steps (run_id, service, position, wave, status, attempts, started_at, claimed_at, deadline_at)
      VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?8)`).bind(id, s, i, i < 4 ? 0 : 1, i < 4 ? "running" : "pending", i < 4 ? 1 : 0, i < 4 ? now : null, now + 60_000)),
    db.prepare(`INSERT INTO kbase_events (id, website_id, run_id, service, type, payload, created_at, dedupe_key)
      VALUES (?1, 'site', ?2, 'orchestrator', 'start', '{}', ?3, ?4)`).bind(crypto.randomUUID(), id, now, `run:${id}:start`),
  ]);
  // 2. the first wave's results: the gate, four results, the fifth step dispatched.
  const gate = (from, to) => db.prepare("UPDATE runs SET version = ?3, due_at = ?4 WHERE run_id = ?1 AND version = ?2").bind(id, from, to, now + 15_000);
  let next = v();
  await db.batch([
    gate(version, next),
    ...services.slice(0, 4).map((s) => db.prepare(`UPDATE steps SET status = 'completed', finished_at = ?3, duration_ms = 5, output = ?4
      WHERE run_id = ?1 AND service = ?2 AND status = 'running'`).bind(id, s, now, OUTPUT)),
    db.prepare(`UPDATE steps SET status = 'running', attempts = 1, started_at = ?2, claimed_at = ?2, deadline_at = ?3
      WHERE run_id = ?1 AND service = 'competitive' AND status = 'pending'`).bind(id, now, now + 60_000),
  ]);
  version = next;
  next = v();
  // 3. the last result and the fan-in claim.
  await db.batch([
    gate(version, next),
    db.prepare(`UPDATE steps SET status = 'completed', finished_at = ?2, duration_ms = 5, output = ?3
      WHERE run_id = ?1 AND service = 'competitive' AND status = 'running'`).bind(id, now, OUTPUT),
    db.prepare("UPDATE runs SET status = 'aggregating', claimed_at = ?2 WHERE run_id = ?1 AND status = 'running' AND version = ?3").bind(id, now, next),
  ]);
  // 4. the ending: the run final, diagnosis and finish events.
  await db.batch([
    db.prepare("UPDATE runs SET status = 'completed', completed_at = ?2, due_at = NULL, version = ?3 WHERE run_id = ?1 AND status = 'aggregating'").bind(id, now, v()),
    ...["diagnosis", "finish"].map((t) => db.prepare(`INSERT INTO kbase_events (id, website_id, run_id, service, type, payload, created_at, dedupe_key)
      VALUES (?1, 'site', ?2, 'orchestrator', ?3, ?4, ?5, ?6) ON CONFLICT (dedupe_key) DO NOTHING`)
      .bind(crypto.randomUUID(), id, t, OUTPUT, now, `run:${id}:${t}`)),
  ]);
}

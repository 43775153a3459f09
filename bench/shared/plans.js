// The plans the bench's JavaScript peers run (the Workflows peer and the floor), written once
// so both make exactly the same service calls. `doStep(name, fn)` is how a system runs a step:
// `step.do` in a workflow, a plain call on the floor.

// Baton's standard-v1: four independent steps, then competitive-intelligence after serp-intelligence.
export const WAVE_ONE = ["serp-intelligence", "technical-seo", "domain-authority", "vitals-monitor"];
export const DEPENDENT = "competitive-intelligence";

// W5, the wide plan: 20 independent steps (the wave-one services in turn), then one step that
// depends on all 20. The same steps as the custom plan the bench creates on Baton.
export const WIDE_STEPS = Array.from({ length: 20 }, (_, i) => ({
  name: `wide-${String(i + 1).padStart(2, "0")}`,
  service: WAVE_ONE[i % WAVE_ONE.length],
}));
export const WIDE_JOIN = { name: "wide-join", service: DEPENDENT };

// Signed as Baton signs its calls (see the README, "Writing a service"): the services refuse
// unsigned requests, so the peers pay for the same HMAC as Baton does.
const encoder = new TextEncoder();
const cryptoKeys = new Map();

function keyOf(env, service) {
  const keys = JSON.parse(env.SERVICE_KEYS || "{}");
  // The key of exactly this worker key (as Baton looks it up), else the shared secret.
  const entry = keys[service] ?? env.WORKER_SECRET;
  return Array.isArray(entry) ? entry[0] : entry;
}

async function signed(env, service, method, path, attempt, body) {
  const secret = keyOf(env, service);
  if (!cryptoKeys.has(secret)) {
    const algorithm = { name: "HMAC", hash: "SHA-256" };
    cryptoKeys.set(secret, await crypto.subtle.importKey("raw", encoder.encode(secret), algorithm, false, ["sign"]));
  }
  const timestamp = Date.now();
  const message = `v2\ncall\n${method}\n${path}\n${attempt}\n${timestamp}\n${body}`;
  const mac = new Uint8Array(await crypto.subtle.sign("HMAC", cryptoKeys.get(secret), encoder.encode(message)));
  const hex = Array.from(mac, (b) => b.toString(16).padStart(2, "0")).join("");
  return {
    "X-Baton-Timestamp": String(timestamp),
    "X-Baton-Attempt": String(attempt),
    "X-Baton-Signature": `v2=${hex}`,
  };
}

async function post(env, service, path, body) {
  const text = JSON.stringify(body);
  const headers = await signed(env, service, "POST", `/${service}${path}`, body.attempt, text);
  const r = await env.SERVICES.fetch(`https://services.internal/${service}${path}`, {
    method: "POST",
    headers: { "Content-Type": "application/json", ...headers },
    body: text,
  });
  const json = await r.json();
  if (r.status >= 300) throw new Error(`${service}${path}: ${r.status} ${JSON.stringify(json)}`);
  return json;
}

// Handshake, then process: what crates/consumer/src/services.rs sends for step `name`, served
// by `service` (the step's worker key).
async function callService(env, runId, name, service, input) {
  const common = { executionId: runId, stageId: `${runId}:${name}`, attempt: 1, action: null, inputData: input };
  const handshake = await post(env, service, "/api/handshake", {
    ...common,
    resourceRequirements: { estimatedTokens: 1000, timeoutMs: 30000 },
    validationConfig: { requireOutput: true },
  });
  if (handshake.accepted !== true) throw new Error(`handshake not accepted: ${handshake.reason}`);
  const result = await post(env, service, "/api/process", common);
  return result.output ?? null;
}

export async function standard(env, runId, input, doStep) {
  const first = await Promise.all(WAVE_ONE.map((s) => doStep(s, () => callService(env, runId, s, s, input))));
  const serp = first[0];
  const competitive = await doStep(DEPENDENT, () =>
    callService(env, runId, DEPENDENT, DEPENDENT, { ...input, serp }),
  );
  return { services: WAVE_ONE.length + 1, competitive: competitive !== null };
}

export async function wide(env, runId, input, doStep) {
  const outputs = await Promise.all(
    WIDE_STEPS.map((s) => doStep(s.name, () => callService(env, runId, s.name, s.service, input))),
  );
  const upstream = Object.fromEntries(WIDE_STEPS.map((s, i) => [s.name, outputs[i]]));
  const joined = await doStep(WIDE_JOIN.name, () =>
    callService(env, runId, WIDE_JOIN.name, WIDE_JOIN.service, { ...input, upstream }),
  );
  return { services: WIDE_STEPS.length + 1, joined: joined !== null };
}

// The Cloudflare Workflows peer for `make bench`: the same plan as Baton's standard-v1
// (four independent steps, then competitive-intelligence after serp-intelligence), each
// step doing the same two requests to the sample services as Baton's consumer.
import { WorkflowEntrypoint } from "cloudflare:workers";

const WAVE_ONE = ["serp-intelligence", "technical-seo", "domain-authority", "vitals-monitor"];
const DEPENDENT = "competitive-intelligence";

async function post(env, service, path, body) {
  const r = await env.SERVICES.fetch(`https://services.internal/${service}${path}`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  const json = await r.json();
  if (r.status >= 300) throw new Error(`${service}${path}: ${r.status} ${JSON.stringify(json)}`);
  return json;
}

// Handshake, then process: what crates/consumer/src/services.rs sends.
async function callService(env, runId, service, attempt, input) {
  const common = { executionId: runId, stageId: `${runId}:${service}`, attempt, action: null, inputData: input };
  const handshake = await post(env, service, "/api/handshake", {
    ...common,
    resourceRequirements: { estimatedTokens: 1000, timeoutMs: 30000 },
    validationConfig: { requireOutput: true },
  });
  if (handshake.accepted !== true) throw new Error(`handshake not accepted: ${handshake.reason}`);
  const result = await post(env, service, "/api/process", common);
  return result.output ?? null;
}

export class StandardPlan extends WorkflowEntrypoint {
  async run(event, step) {
    const runId = event.instanceId;
    const input = event.payload;
    const first = await Promise.all(
      WAVE_ONE.map((s) => step.do(s, () => callService(this.env, runId, s, 1, input))),
    );
    const serp = first[0];
    const competitive = await step.do(DEPENDENT, () =>
      callService(this.env, runId, DEPENDENT, 1, { ...input, serp }),
    );
    return { services: WAVE_ONE.length + 1, competitive: competitive !== null };
  }
}

export default {
  async fetch(req, env) {
    const url = new URL(req.url);
    if (req.method === "POST" && url.pathname === "/start") {
      const params = await req.json().catch(() => ({}));
      const instance = await env.STANDARD.create({ params });
      return Response.json({ id: instance.id });
    }
    const m = url.pathname.match(/^\/status\/(.+)$/);
    if (req.method === "GET" && m) {
      const instance = await env.STANDARD.get(m[1]);
      return Response.json(await instance.status());
    }
    if (url.pathname === "/health") return new Response("ok");
    return new Response("not found", { status: 404 });
  },
};

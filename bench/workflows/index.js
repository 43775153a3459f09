// The Cloudflare Workflows peer for `make bench`: the same plans as Baton's standard-v1 (W1, W2)
// and the bench's wide plan (W5), each step doing the same two requests to the sample services
// as Baton's consumer (bench/shared/plans.js), inside `step.do`.
import { WorkflowEntrypoint } from "cloudflare:workers";
import { standard, wide } from "../shared/plans.js";

export class StandardPlan extends WorkflowEntrypoint {
  async run(event, step) {
    return standard(this.env, event.instanceId, event.payload, (name, fn) => step.do(name, fn));
  }
}

export class WidePlan extends WorkflowEntrypoint {
  async run(event, step) {
    return wide(this.env, event.instanceId, event.payload, (name, fn) => step.do(name, fn));
  }
}

// `?plan=wide` picks the wide plan; standard otherwise.
function workflow(env, url) {
  return url.searchParams.get("plan") === "wide" ? env.WIDE : env.STANDARD;
}

export default {
  async fetch(req, env) {
    const url = new URL(req.url);
    if (req.method === "POST" && url.pathname === "/start") {
      const params = await req.json().catch(() => ({}));
      const instance = await workflow(env, url).create({ params });
      return Response.json({ id: instance.id });
    }
    const m = url.pathname.match(/^\/status\/(.+)$/);
    if (req.method === "GET" && m) {
      const instance = await workflow(env, url).get(m[1]);
      return Response.json(await instance.status());
    }
    if (url.pathname === "/health") return new Response("ok");
    return new Response("not found", { status: 404 });
  },
};

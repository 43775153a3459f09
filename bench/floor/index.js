// The floor for `make bench`: one request runs the whole plan — the same service calls in the
// same waves over the same service binding as Baton and the Workflows peer
// (bench/shared/plans.js) — and answers when it is done. No durable state: what is left of a
// system's latency above this is the price of its orchestration.
import { standard, wide } from "../shared/plans.js";

export default {
  async fetch(req, env) {
    const url = new URL(req.url);
    if (req.method === "POST" && url.pathname === "/run") {
      const input = await req.json().catch(() => ({}));
      const plan = url.searchParams.get("plan") === "wide" ? wide : standard;
      const result = await plan(env, crypto.randomUUID(), input, (_name, fn) => fn());
      return Response.json(result);
    }
    if (url.pathname === "/health") return new Response("ok");
    return new Response("not found", { status: 404 });
  },
};

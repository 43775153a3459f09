// The local D1 ceiling for Baton's write pattern, and the price of each kind of storage call:
// starts bench/d1 under `wrangler dev` (state on disk, Baton's migrations applied), then for
// each pattern P (see index.js) and each concurrency C runs C clients, each making one unit of P
// after the other, for SECONDS seconds; prints units/s and latency per P and C. With enough
// clients to keep the runtime's one thread busy, 1 / (units/s) is what one unit costs it.
//   node bench/d1/drive.mjs [SECONDS=8] [C,C,...=1,2,4,8,16,32] [P,P,...=run]
import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, "..", "..");
const wrangler = process.env.WRANGLER ?? join(root, "node_modules/.bin/wrangler");
const seconds = Number(process.argv[2] ?? 8);
const levels = (process.argv[3] ?? "1,2,4,8,16,32").split(",").map(Number);
const patterns = (process.argv[4] ?? "run").split(",");
const port = 8000 + Math.floor(Math.random() * 900);
const state = mkdtempSync(join(tmpdir(), "baton-d1-ceiling-"));
const env = { ...process.env, CI: "true", WRANGLER_SEND_METRICS: "false" };
const config = join(here, "wrangler.toml");

execFileSync(wrangler, ["d1", "migrations", "apply", "DB", "--local", "--persist-to", state, "-c", config], { env, stdio: "ignore" });
const dev = spawn(wrangler, ["dev", "-c", config, "--port", String(port), "--ip", "127.0.0.1", "--persist-to", state,
  "--show-interactive-dev-session=false", "--log-level", "warn"], { env, stdio: "ignore", detached: true });
const stop = () => { try { process.kill(-dev.pid, "SIGTERM"); } catch {} rmSync(state, { recursive: true, force: true }); };
process.on("exit", stop);
const url = `http://127.0.0.1:${port}`;
for (let i = 0; ; i++) {
  try { if ((await fetch(url)).ok) break; } catch {}
  if (i > 120) throw new Error("wrangler dev did not start");
  await new Promise((r) => setTimeout(r, 250));
}
const pct = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
console.log("pattern\tclients\tunits/s\tp50 ms\tp99 ms");
for (const pattern of patterns) for (const c of levels) {
  const target = `${url}/run?pattern=${encodeURIComponent(pattern)}`;
  for (let i = 0; i < 50; i++) { // warm-up, and a check of the pattern's name
    const r = await fetch(target, { method: "POST" });
    if (!r.ok) { console.error(await r.text()); stop(); process.exit(2); }
    await r.text();
  }
  const latencies = [];
  const end = performance.now() + seconds * 1000;
  await Promise.all(Array.from({ length: c }, async () => {
    while (performance.now() < end) {
      const t = performance.now();
      const r = await fetch(target, { method: "POST" });
      if (!r.ok) throw new Error(`run failed: ${r.status} ${await r.text()}`);
      await r.text();
      latencies.push(performance.now() - t);
    }
  }));
  latencies.sort((a, b) => a - b);
  console.log(`${pattern}\t${c}\t${(latencies.length / seconds).toFixed(1)}\t${pct(latencies, 50).toFixed(1)}\t${pct(latencies, 99).toFixed(1)}`);
}
stop();
process.exit(0);

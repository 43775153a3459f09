// Baton's web UI: the runs list, a run's timeline and diagnosis, an execution's stages.
// Everything is read from the JSON API of this origin with the bearer token the user gave
// once (kept in sessionStorage for the browser session). No external resources.
"use strict";

const TOKEN_KEY = "baton.token";
const LIST_REFRESH_MS = 3000;
const RUN_REFRESH_MS = 1000;
const TERMINAL_RUN = new Set(["completed", "failed", "timeout", "cancelled"]);
const STATUSES = ["started", "running", "paused", "aggregating", "completed", "failed", "timeout", "cancelled"];
const STEP_STATUSES = ["pending", "running", "retrying", "completed", "failed", "timeout", "skipped", "cancelled"];

let refreshTimer = null;
let generation = 0; // bumps on every navigation, so a late answer for an old page is dropped
let actionNote = null; // { runId, text, error }: what the last action on a run page did

// ---------------------------------------------------------------- DOM helpers

/** An element; attributes are set as properties (`class` as className), children appended. */
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") el.className = value;
    else if (key.startsWith("data-")) el.setAttribute(key, value);
    else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "style") Object.assign(el.style, value);
    else el[key] = value;
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

function badge(status) {
  return h("span", { class: `badge s-${status}`, "data-status": status }, status || "?");
}

function link(path, text) {
  return h("a", { href: path, onclick: (e) => { if (!e.ctrlKey && !e.metaKey) { e.preventDefault(); go(path); } } }, text);
}

function fmtTime(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  return isNaN(d) ? iso : d.toLocaleString();
}

function fmtMs(ms) {
  if (ms === null || ms === undefined) return "—";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(ms < 10000 ? 2 : 1)} s`;
  return `${Math.floor(ms / 60000)} min ${Math.round((ms % 60000) / 1000)} s`;
}

function facts(pairs) {
  return h("dl", { class: "facts" }, pairs.map(([k, v]) => h("div", {}, h("dt", {}, k), h("dd", {}, v))));
}

function setPage(...children) {
  const app = document.getElementById("app");
  app.replaceChildren(...children.flat());
}

// ---------------------------------------------------------------- API and token

function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

class ApiError extends Error {
  constructor(status, body) {
    super((body && body.error && body.error.message) || `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

async function api(path, post) {
  const headers = { Authorization: `Bearer ${token()}` };
  const init = { headers, cache: "no-store" };
  if (post !== undefined) {
    headers["Content-Type"] = "application/json";
    Object.assign(init, { method: "POST", body: JSON.stringify(post) });
  }
  const response = await fetch(path, init);
  let body = null;
  try { body = await response.json(); } catch (_) { body = null; }
  if (response.status === 401) {
    sessionStorage.removeItem(TOKEN_KEY);
    render();
    throw new ApiError(401, body);
  }
  if (!response.ok) throw new ApiError(response.status, body);
  return body;
}

function tokenForm() {
  const input = h("input", { type: "password", id: "token", name: "token", placeholder: "bearer token", autocomplete: "off", size: 34 });
  const form = h("form", { class: "inline", id: "token-form", onsubmit: (e) => {
    e.preventDefault();
    const value = input.value.trim();
    if (!value) return;
    sessionStorage.setItem(TOKEN_KEY, value);
    render();
  } }, input, h("button", { type: "submit" }, "Use token"));
  return h("div", { class: "card" },
    h("h1", {}, "Sign in"),
    h("p", { class: "muted" }, "Enter your API bearer token. It is kept for this browser session only and sent with each request to this API."),
    form);
}

// ---------------------------------------------------------------- routing

function go(path) {
  history.pushState(null, "", path);
  render();
}

function stopRefresh() {
  if (refreshTimer) clearTimeout(refreshTimer);
  refreshTimer = null;
}

function schedule(fn, ms) {
  stopRefresh();
  refreshTimer = setTimeout(fn, ms);
}

function render() {
  stopRefresh();
  generation += 1;
  const signedIn = !!token();
  document.getElementById("sign-out").hidden = !signedIn;
  document.getElementById("who").textContent = "";
  if (!signedIn) {
    setPage(tokenForm());
    return;
  }
  const parts = location.pathname.replace(/^\/ui\/?/, "").split("/").filter(Boolean).map(decodeURIComponent);
  if (parts[0] === "runs" && parts[1]) return runPage(parts[1], generation);
  if (parts[0] === "executions" && parts[1]) return executionPage(parts[1], generation);
  return runsPage(generation);
}

function showError(error) {
  const message = error instanceof ApiError && error.status === 404 ? "Not found (or not one of yours)." : error.message;
  return h("div", { class: "notice error", id: "error" }, message);
}

// ---------------------------------------------------------------- runs list

async function plansOptions() {
  try {
    const body = await api("/api/orchestration/plans");
    return (body.plans || []).map((p) => p.plan_id);
  } catch (_) {
    return [];
  }
}

async function runsPage(gen) {
  const params = new URLSearchParams(location.search);
  const site = h("input", { name: "website_id", placeholder: "site (website_id)", value: params.get("website_id") || "" });
  const status = h("select", { name: "status" }, h("option", { value: "" }, "any status"),
    STATUSES.map((s) => h("option", { value: s, selected: params.get("status") === s }, s)));
  const plan = h("select", { name: "plan_id" }, h("option", { value: "" }, "any plan"));
  const form = h("form", { class: "inline", id: "filters", onsubmit: (e) => {
    e.preventDefault();
    const q = new URLSearchParams();
    if (site.value.trim()) q.set("website_id", site.value.trim());
    if (status.value) q.set("status", status.value);
    if (plan.value) q.set("plan_id", plan.value);
    go(`/ui/runs${q.toString() ? "?" + q : ""}`);
  } }, site, status, plan, h("button", { type: "submit" }, "Filter"));
  const table = h("tbody", { id: "runs" });
  const pager = h("div", { class: "pager" });
  const live = h("span", { class: "live", id: "live" });
  // Bulk actions on every run the current filter matches (not just this page).
  const filter = {};
  for (const key of ["website_id", "status", "plan_id"]) if (params.get(key)) filter[key] = params.get(key);
  const bulkResult = h("span", { id: "bulk-result", class: "muted" });
  const filtered = Object.keys(filter).length > 0;
  const bulkButton = (action, label) => h("button", { type: "button", id: `bulk-${action}`, disabled: !filtered,
    title: filtered ? `${label}: every run of yours this filter matches` : "Filter first: bulk actions need a filter",
    onclick: () => bulkAct(action, label, filter, bulkResult) }, label);
  const bulk = h("div", { class: "inline", id: "bulk" }, bulkButton("cancel", "Cancel matching"), " ",
    bulkButton("retry", "Retry matching"), " ", bulkResult);
  setPage(h("h1", {}, "Runs ", live), h("div", { class: "card" }, form, bulk),
    h("table", {}, h("thead", {}, h("tr", {}, ["Run", "Site", "Domain", "Plan", "Status", "Started", "Duration", "Steps"].map((t) => h("th", {}, t)))), table),
    pager);

  plansOptions().then((ids) => {
    const wanted = params.get("plan_id");
    const all = wanted && !ids.includes(wanted) ? ids.concat([wanted]) : ids;
    for (const id of all) plan.append(h("option", { value: id, selected: wanted === id }, id));
  });

  const query = new URLSearchParams();
  for (const key of ["website_id", "status", "plan_id", "cursor"]) if (params.get(key)) query.set(key, params.get(key));
  query.set("limit", "20");

  const refresh = async () => {
    if (gen !== generation) return;
    try {
      const body = await api(`/api/orchestration/runs?${query}`);
      if (gen !== generation) return;
      table.replaceChildren(...body.runs.map(runRow));
      if (body.runs.length === 0) table.append(h("tr", {}, h("td", { colSpan: 8, class: "muted" }, "No runs.")));
      const next = new URLSearchParams(params);
      const older = body.next_cursor ? (next.set("cursor", body.next_cursor), `/ui/runs?${next}`) : null;
      const first = new URLSearchParams(params); first.delete("cursor");
      pager.replaceChildren(
        params.get("cursor") ? link(`/ui/runs${first.toString() ? "?" + first : ""}`, "← Newest") : "",
        older ? link(older, "Older →") : h("span", { class: "muted" }, "End of list"));
      live.textContent = `· live, updated ${new Date().toLocaleTimeString()}`;
    } catch (error) {
      if (gen !== generation) return;
      live.replaceChildren(showError(error));
    }
    if (gen === generation) schedule(refresh, LIST_REFRESH_MS);
  };
  refresh();
}

// Cancels or retries every run matching `filter`, a page of 100 at a time, after a confirm;
// shows how many were acted on and skipped.
async function bulkAct(action, label, filter, out) {
  const what = Object.entries(filter).map(([k, v]) => `${k} ${v}`).join(", ");
  const verb = action === "cancel" ? "Cancel" : "Retry";
  if (!confirm(`${verb} every run of yours matching ${what}?`)) return;
  out.textContent = `${label}…`;
  let acted = 0, skipped = 0, cursor = null;
  try {
    do {
      const body = await api(`/api/orchestration/runs/${action}`, cursor ? { filter, limit: 100, cursor } : { filter, limit: 100 });
      acted += body.acted;
      skipped += body.skipped.length;
      cursor = body.next_cursor;
    } while (cursor);
    const done = action === "cancel" ? "Cancelled" : "Retried";
    out.textContent = `${done} ${acted} run${acted === 1 ? "" : "s"}` + (skipped ? `, ${skipped} skipped` : "");
    out.dataset.acted = String(acted);
    out.dataset.skipped = String(skipped);
  } catch (error) {
    out.replaceChildren(showError(error));
  }
}

function runRow(run) {
  const steps = `${run.servicesCompleted}/${run.servicesTotal} done` +
    (run.servicesFailed ? `, ${run.servicesFailed} failed` : "") +
    (run.servicesTimeout ? `, ${run.servicesTimeout} timed out` : "") +
    (run.servicesSkipped ? `, ${run.servicesSkipped} skipped` : "");
  const isExecution = String(run.runId).startsWith("exec_");
  return h("tr", { "data-run-id": run.runId, "data-status": run.status },
    h("td", {}, link(`/ui/runs/${encodeURIComponent(run.runId)}`, h("span", { class: "mono" }, run.runId)),
      isExecution ? [" ", link(`/ui/executions/${encodeURIComponent(run.runId)}`, "(execution)")] : null),
    h("td", {}, run.websiteId), h("td", {}, run.domain), h("td", {}, run.planId),
    h("td", {}, badge(run.status)), h("td", {}, fmtTime(run.startedAt)),
    h("td", { class: "num" }, fmtMs(run.durationMs)), h("td", {}, steps));
}

// ---------------------------------------------------------------- run page

async function runPage(runId, gen) {
  setPage(h("p", { class: "muted" }, "Loading run…"));
  const path = `/api/orchestration/runs/${encodeURIComponent(runId)}`;
  const refresh = async () => {
    if (gen !== generation) return;
    let run, events;
    try {
      [run, events] = await Promise.all([api(path), api(`${path}/events`)]);
    } catch (error) {
      if (gen === generation) {
        setPage(link("/ui/runs", "← Runs"), showError(error));
        if (!(error instanceof ApiError) || error.status >= 500) schedule(refresh, RUN_REFRESH_MS * 3);
      }
      return;
    }
    if (gen !== generation) return;
    drawRun(run, events.events || [], (action) => act(action, runId, path, refresh));
    if (!run.terminal) schedule(refresh, RUN_REFRESH_MS);
  };
  refresh();
}

/** Pauses, resumes or cancels the run (`POST {path}/{action}`), notes what it did, redraws. */
async function act(action, runId, path, refresh) {
  stopRefresh();
  try {
    const answer = await api(`${path}/${action}`, {});
    const done = { pause: "Paused", resume: "Resumed", cancel: "Cancelled" }[action];
    let text = answer.changed === false ? `Already ${answer.status}: nothing changed.` : `${done}: the run is ${answer.status}.`;
    if (action === "resume" && answer.dispatched && answer.dispatched.length) text += ` Dispatched ${answer.dispatched.join(", ")}.`;
    actionNote = { runId, text, error: false };
  } catch (error) {
    actionNote = { runId, text: error.message, error: true };
  }
  refresh();
}

/** The actions a run in `status` offers. */
function runActions(run, onAction) {
  if (run.terminal || run.archived) return null;
  const button = (action, label, title) => h("button", { type: "button", id: `run-${action}`, title, onclick: (e) => {
    e.target.disabled = true;
    if (action !== "cancel" || confirm("Cancel this run? Its unfinished steps end cancelled.")) onAction(action);
    else e.target.disabled = false;
  } }, label);
  return h("div", { class: "card actions", id: "run-actions" },
    run.status === "paused"
      ? button("resume", "Resume", "Run again: what became ready while paused is dispatched now")
      : (run.status === "started" || run.status === "running")
        ? button("pause", "Pause", "Dispatch nothing new until resumed; attempts in flight finish. The deadline keeps running.")
        : null,
    button("cancel", "Cancel run", "End the run now: its unfinished steps end cancelled"));
}

/** What the last action on this run page did (it stays once the run has ended). */
function actionNoteFor(run) {
  if (!actionNote || actionNote.runId !== run.summary.runId) return null;
  return h("p", { id: "run-action-note", class: actionNote.error ? "error" : "muted" }, actionNote.text);
}

function drawRun(run, events, onAction) {
  const s = run.summary;
  const live = run.archived
    ? h("span", { class: "muted", id: "run-archived" }, "· ended · archived")
    : run.terminal ? h("span", { class: "muted" }, "· ended") : h("span", { class: "live" }, `· live, updated ${new Date().toLocaleTimeString()}`);
  const isExecution = run.kind === "pipeline";
  setPage(
    link("/ui/runs", "← Runs"),
    h("h1", {}, "Run ", h("span", { class: "mono" }, s.runId), " ", badge(run.status), " ", live),
    h("div", { class: "card", id: "run-facts", "data-status": run.status, "data-terminal": String(run.terminal) }, facts([
      ["Site", s.websiteId], ["Domain", s.domain], ["Plan", `${s.planId}${run.plan_name ? " · " + run.plan_name : ""}`],
      ["Kind", isExecution ? link(`/ui/executions/${encodeURIComponent(s.runId)}`, "pipeline execution") : (run.kind || "diagnostic")],
      ["Started", fmtTime(s.startedAt)], ["Ended", fmtTime(s.completedAt)], ["Duration", fmtMs(s.durationMs)],
      ["Deadline", fmtTime(run.deadline_at)], ["Fan-in", run.fan_in_at ? fmtTime(run.fan_in_at) : "—"],
      ["Steps", `${s.servicesCompleted} completed, ${s.servicesFailed} failed, ${s.servicesTimeout} timed out, ${s.servicesSkipped} skipped / ${s.servicesTotal}`],
      ["Partial", run.partial === null || run.partial === undefined ? "—" : String(run.partial)],
      ["Trace", run.trace_id ? h("span", { class: "mono", id: "run-trace" }, run.trace_id) : "—"],
      ["Cost", run.cost ? h("span", { id: "run-cost", title: "What the platform bills for the work Baton did for this run, at COST_PRICES" }, runCost(run.cost)) : "—"],
    ].concat(run.parent ? [["Parent", h("span", { id: "run-parent" }, link(`/ui/runs/${encodeURIComponent(run.parent.run_id)}`, h("span", { class: "mono" }, run.parent.run_id)), ` · step ${run.parent.step}`)]] : [])
      .concat(s.error ? [["Error", h("span", { class: "error" }, s.error)]] : []))),
    run.status === "paused" ? h("div", { class: "notice", id: "run-paused" },
      "Paused: nothing new is dispatched until the run is resumed. Attempts in flight finish and are recorded; the deadline keeps running.") : null,
    runActions(run, onAction),
    actionNoteFor(run),
    h("h2", {}, "Timeline"),
    h("div", { class: "card" }, timeline(run)),
    h("h2", {}, "Steps"),
    stepsTable(run.service_results || []),
    h("h2", {}, "Diagnosis"),
    diagnosisCard(run),
    h("h2", {}, "Lifecycle events"),
    eventsTable(events),
  );
}

function ms(iso) {
  if (!iso) return null;
  const t = Date.parse(iso);
  return isNaN(t) ? null : t;
}

/** The Gantt chart: a row per step, grouped by wave, bars from first dispatch to end. */
function timeline(run) {
  const steps = run.service_results || [];
  const start = ms(run.summary.startedAt) || Date.now();
  const now = Date.now();
  const endOf = (step) => ms(step.finished_at) || (step.started_at ? now : null);
  const ends = steps.map(endOf).filter((t) => t !== null);
  const fanIn = ms(run.fan_in_at);
  const end = Math.max(start + 1, ms(run.summary.completedAt) || 0, fanIn || 0, ...ends, run.terminal ? 0 : now);
  const span = end - start;
  const pct = (t) => `${Math.max(0, Math.min(100, ((t - start) / span) * 100))}%`;
  const width = (a, b) => `${Math.max(0, Math.min(100, ((b - a) / span) * 100))}%`;

  const waves = new Map();
  for (const step of steps) {
    if (!waves.has(step.wave)) waves.set(step.wave, []);
    waves.get(step.wave).push(step);
  }
  const chart = h("div", { class: "gantt", id: "timeline" });
  for (const wave of [...waves.keys()].sort((a, b) => a - b)) {
    chart.append(h("div", { class: "wave" }, `Wave ${wave}`));
    for (const step of waves.get(wave)) {
      const track = h("div", { class: "track" });
      const from = ms(step.started_at);
      const to = endOf(step);
      const title = stepTitle(step);
      if (from !== null && to !== null) {
        const bar = h("div", { class: `bar s-${step.status}`, "data-step": step.service, "data-status": step.status, title,
          style: { left: pct(from), width: width(from, to) } });
        for (const attempt of step.attempt_history || []) {
          const aEnd = ms(attempt.ended_at) || now;
          if (to > from && aEnd < to) {
            bar.append(h("div", { class: "attempt", title: attemptText(attempt), style: { left: "0", width: `${((aEnd - from) / (to - from)) * 100}%` } }));
          }
        }
        track.append(bar);
      } else {
        // Never dispatched (pending, or skipped): a thin marker where it settled, if it did.
        const at = ms(step.finished_at);
        track.append(h("div", { class: `bar s-${step.status}`, "data-step": step.service, "data-status": step.status, title,
          style: { left: at !== null ? pct(at) : "0", width: "3px" } }));
      }
      chart.append(h("div", { class: "row" }, h("div", { class: "label", title: step.service }, step.service), track));
    }
  }
  if (fanIn !== null) {
    const overlay = h("div", { class: "row" }, h("div", {}), h("div", { class: "track", style: { background: "transparent", height: "18px" } },
      h("div", { class: "marker", id: "fan-in", style: { left: pct(fanIn) }, title: `fan-in at ${fmtTime(run.fan_in_at)}` },
        h("span", {}, `fan-in +${fmtMs(fanIn - start)}`))));
    chart.append(overlay);
  }
  chart.append(h("div", { class: "axis" }, h("div", {}), h("div", {}, h("span", {}, "0"), h("span", {}, fmtMs(span)))));
  chart.append(h("div", { class: "legend" }, STEP_STATUSES.map((st) => badge(st))));
  return chart;
}

function attemptText(a) {
  return `attempt ${a.attempt}: ${a.outcome}` + (a.duration_ms !== null && a.duration_ms !== undefined ? `, ${fmtMs(a.duration_ms)}` : "") +
    (a.error ? ` — ${a.error}` : "");
}

function stepTitle(step) {
  const lines = [`${step.service}: ${step.status}`, `attempts: ${step.attempts}`];
  if (step.waits_for) lines.push(`waits for event ${step.waits_for}`);
  if (step.child_run_id) lines.push(`child run ${step.child_run_id}`);
  if (step.duration_ms !== null && step.duration_ms !== undefined) lines.push(`duration: ${fmtMs(step.duration_ms)}`);
  if (step.error) lines.push(`error: ${step.error}`);
  if ((step.skipped_because || []).length) lines.push(`skipped because ${step.skipped_because.join(", ")} did not complete`);
  return lines.join("\n");
}

/** A map step's line under its name: what it maps over and how far its items are. */
function mapLine(step) {
  const items = step.items || [];
  const done = items.filter((i) => i.status === "completed").length;
  const text = items.length ? `for each of ${step.for_each}: ${done} of ${items.length} items completed` : `for each of ${step.for_each}`;
  return h("div", { class: "muted", "data-for-each": step.for_each }, text);
}

function stepsTable(steps) {
  const withItems = steps.flatMap((step) => [step, ...(step.items || []).map((item) => ({ ...item, itemOf: step.service }))]);
  const rows = withItems.map((step) => {
    const why = step.status === "skipped"
      ? ((step.skipped_because || []).length ? `skipped: ${step.skipped_because.join(", ")} did not complete` : "skipped: a dependency did not complete")
      : "";
    const attempts = (step.attempt_history || []).map((a) => h("li", { "data-attempt": a.attempt }, attemptText(a)));
    if (step.status === "retrying" && step.next_attempt_at) attempts.push(h("li", { class: "muted" }, `next attempt at ${fmtTime(step.next_attempt_at)}`));
    if (step.itemOf) {
      return h("tr", { "data-service": step.service, "data-item-of": step.itemOf, class: "item" },
        h("td", {}, h("span", { class: "mono" }, `↳ ${step.service}`)),
        h("td", { class: "num" }, step.wave), h("td", {}, badge(step.status)),
        h("td", {}, attempts.length ? h("ol", { class: "attempts" }, attempts) : h("span", { class: "muted" }, String(step.attempts || 0))),
        h("td", { class: "num" }, fmtMs(step.duration_ms)),
        h("td", {}, step.error ? h("span", { class: "error" }, step.error) : ""),
        h("td", {}, outputCell(step.output)));
    }
    return h("tr", { "data-service": step.service },
      h("td", {}, h("span", { class: "mono" }, step.service), (step.depends_on || []).length ? h("div", { class: "muted" }, `after ${step.depends_on.join(", ")}`) : null,
        step.for_each ? mapLine(step) : null,
        step.waits_for ? h("div", { class: step.status === "running" ? "live waiting" : "muted", "data-waits-for": step.waits_for },
          step.status === "running" ? `waiting for event ${step.waits_for} (until ${fmtTime(step.deadline_at)})` : `waits for event ${step.waits_for}`) : null,
        step.child_run_id ? h("div", { class: "muted", "data-child-run": step.child_run_id }, "child run ",
          link(`/ui/runs/${encodeURIComponent(step.child_run_id)}`, h("span", { class: "mono" }, step.child_run_id))) : null),
      h("td", { class: "num" }, step.wave), h("td", {}, badge(step.status)),
      h("td", {}, attempts.length ? h("ol", { class: "attempts" }, attempts) : h("span", { class: "muted" }, String(step.attempts || 0))),
      h("td", { class: "num" }, fmtMs(step.duration_ms)),
      h("td", {}, step.error ? h("span", { class: "error" }, step.error) : "", why ? h("div", { class: "muted skip-reason" }, why) : null),
      h("td", {}, outputCell(step.output)));
  });
  return h("table", { id: "steps" }, h("thead", {}, h("tr", {}, ["Step", "Wave", "Status", "Attempts", "Duration", "Error / why", "Output"].map((t) => h("th", {}, t)))), h("tbody", {}, rows));
}

/** What a step's service returned: its top-level keys, unfolding to the whole JSON. */
function outputCell(output) {
  if (output === null || output === undefined) return h("span", { class: "muted" }, "—");
  const keys = typeof output === "object" && !Array.isArray(output) ? Object.keys(output) : [];
  const label = keys.length ? keys.slice(0, 4).join(", ") + (keys.length > 4 ? ", …" : "") : typeof output;
  return h("details", { class: "output" }, h("summary", {}, label), h("pre", { class: "mono" }, JSON.stringify(output, null, 2)));
}

function diagnosisCard(run) {
  const d = run.diagnosis && (run.diagnosis.findings ? run.diagnosis : run.diagnosis.diagnosis || run.diagnosis);
  if (!d) {
    return h("div", { class: "card muted", id: "diagnosis", "data-ready": "false" },
      run.terminal ? "This run has no diagnosis." : "The diagnosis appears once every step has settled and the analysis ran.");
  }
  const findings = d.findings || [];
  const missing = d.missing_services || run.missing || [];
  const confidence = typeof d.confidence === "number" ? `${Math.round(d.confidence * 100)}%` : "—";
  return h("div", { class: "card", id: "diagnosis", "data-ready": "true" },
    facts([["Overall", d.overall_status ? `${d.overall_status} (${d.overall_score ?? "—"})` : "—"], ["Confidence", h("span", { id: "confidence" }, confidence)],
      ["Missing services", h("span", { id: "missing" }, missing.length ? missing.join(", ") : "none")]]),
    d.synthesis ? h("p", {}, d.synthesis) : null,
    d.narrative ? h("p", {}, d.narrative) : null,
    d.synthesis_error ? h("p", { class: "error" }, `Narrative unavailable: ${d.synthesis_error}`) : null,
    d.llm ? h("p", { class: "muted", id: "llm-usage" }, llmUsage(d.llm)) : null,
    h("h3", {}, `Findings (${findings.length})`),
    findings.length ? findings.map((f) => h("div", { class: `finding sev-${f.severity}`, "data-finding": f.id },
      h("strong", {}, f.title || f.id), " ", h("span", { class: "muted" }, `${f.severity || ""}${(f.services || []).length ? " · " + f.services.join(", ") : ""}`),
      f.detail ? h("div", {}, f.detail) : null)) : h("p", { class: "muted" }, "No findings."),
    (d.recommendations || []).length ? [h("h3", {}, "Recommendations"), h("ol", {}, d.recommendations.map((r) => h("li", {}, r.action)))] : null);
}

// A run's cost and its billed units, on one line.
function runCost(c) {
  const u = c.units || {};
  const n = (k) => u[k] || 0;
  return `$${c.usd.toFixed(6)} · D1 ${n("d1_rows_read")} rows read, ${n("d1_rows_written")} written · KV ${n("kv_reads")} reads, ${n("kv_writes")} writes · ${n("queue_messages")} queue messages · ${n("subrequests")} subrequests · R2 ${n("r2_reads")} reads, ${n("r2_writes")} writes`;
}

// What the analysis asked of the LLM, on one line.
function llmUsage(u) {
  const cost = typeof u.cost_usd === "number" ? ` · $${u.cost_usd.toFixed(6)}` : "";
  const attempts = `${u.attempts} attempt${u.attempts === 1 ? "" : "s"}`;
  return `LLM: ${u.model} at ${u.provider} · ${u.input_tokens} in / ${u.output_tokens} out tokens${cost} · ${u.latency_ms} ms · ${attempts}${u.cached ? " · from the cache" : ""}`;
}

function eventsTable(events) {
  const rows = events.map((e) => h("tr", { "data-event": e.type },
    h("td", {}, fmtTime(e.created_at)), h("td", {}, e.type), h("td", {}, e.service),
    h("td", {}, h("pre", {}, summarizePayload(e.payload)))));
  return h("table", { id: "events" }, h("thead", {}, h("tr", {}, ["At", "Type", "By", "Payload"].map((t) => h("th", {}, t)))), h("tbody", {}, rows));
}

function summarizePayload(payload) {
  if (payload === null || payload === undefined) return "";
  const text = JSON.stringify(payload, null, 1);
  return text.length > 1200 ? text.slice(0, 1200) + " …" : text;
}

// ---------------------------------------------------------------- execution page

async function executionPage(executionId, gen) {
  setPage(h("p", { class: "muted" }, "Loading execution…"));
  const refresh = async () => {
    if (gen !== generation) return;
    let ex;
    try {
      ex = await api(`/executions/${encodeURIComponent(executionId)}`);
    } catch (error) {
      if (gen === generation) setPage(link("/ui/runs", "← Runs"), showError(error));
      return;
    }
    if (gen !== generation) return;
    drawExecution(ex);
    if (!ex.terminal) schedule(refresh, RUN_REFRESH_MS);
  };
  refresh();
}

function drawExecution(ex) {
  const q = ex.queue || {};
  const live = ex.terminal ? h("span", { class: "muted" }, "· ended") : h("span", { class: "live" }, `· live, updated ${new Date().toLocaleTimeString()}`);
  const stages = (ex.stages || []).slice().sort((a, b) => a.stage - b.stage);
  const costs = ex.costs || {};
  setPage(
    link("/ui/runs", "← Runs"),
    h("h1", {}, "Execution ", h("span", { class: "mono" }, ex.execution_id), " ", badge(ex.status), " ", live),
    h("div", { class: "card", id: "execution-facts", "data-status": ex.status, "data-terminal": String(ex.terminal) }, facts([
      ["Template", ex.template_name], ["Priority", ex.priority], ["Request id", ex.request_id || "—"],
      ["Started", fmtTime(ex.started_at)], ["Ended", fmtTime(ex.completed_at)],
      ["Run", ex.started_at ? link(`/ui/runs/${encodeURIComponent(ex.execution_id)}`, "timeline and diagnosis") : "not started"],
    ].concat(ex.error ? [["Error", h("span", { class: "error" }, ex.error)]] : []))),
    h("h2", {}, "Queue"),
    h("div", { class: "card", id: "queue" }, facts([
      ["Queue status", badge(q.status)], ["Enqueued", fmtTime(q.enqueued_at)], ["Admitted", fmtTime(q.admitted_at)],
      ["Admission deadline", fmtTime(q.deadline_at)], ["Admission attempts", String(q.attempts ?? "—")],
    ]), q.reason ? h("p", { id: "queue-reason" }, h("strong", {}, "Why it waits: "), q.reason) : null),
    h("h2", {}, "Stages"),
    h("table", { id: "stages" }, h("thead", {}, h("tr", {}, ["Stage", "Service", "Worker · action", "Status", "Attempts", "Duration", "Error"].map((t) => h("th", {}, t)))),
      h("tbody", {}, stages.length ? stages.map((st) => h("tr", { "data-service": st.service },
        h("td", { class: "num" }, st.stage), h("td", { class: "mono" }, st.service),
        h("td", {}, `${st.worker || ""}${st.action ? " · " + st.action : ""}`), h("td", {}, badge(st.status)),
        h("td", { class: "num" }, st.attempts), h("td", { class: "num" }, fmtMs(st.duration_ms)),
        h("td", {}, st.error ? h("span", { class: "error" }, st.error) : ""))) : h("tr", {}, h("td", { colSpan: 7, class: "muted" }, "No stages yet: the execution has not started.")))),
    h("h2", {}, "Deliverables"),
    h("div", { id: "deliverables" }, (ex.deliverables || []).length ? ex.deliverables.map((d) => h("div", { class: "card" },
      h("strong", {}, d.service), " ", h("span", { class: "muted" }, `${d.action || d.worker || ""} · ${fmtTime(d.created_at)}`),
      h("pre", {}, summarizePayload(d.content)))) : h("p", { class: "muted" }, "None yet.")),
    h("h2", {}, "Costs"),
    h("div", { class: "card", id: "costs" },
      facts(Object.entries(costs.totals || {}).map(([k, v]) => [k, String(v)])),
      (costs.by_stage || []).length ? h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "Stage"), h("th", {}, "Usage"))),
        h("tbody", {}, costs.by_stage.map((b) => h("tr", {}, h("td", { class: "mono" }, b.service), h("td", {}, h("code", {}, JSON.stringify(b.usage))))))) :
        h("p", { class: "muted" }, "No usage reported yet.")),
  );
}

// ---------------------------------------------------------------- start

window.addEventListener("popstate", render);
document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("sign-out").addEventListener("click", () => { sessionStorage.removeItem(TOKEN_KEY); render(); });
  document.getElementById("open-execution").addEventListener("submit", (e) => {
    e.preventDefault();
    const id = document.getElementById("execution-id").value.trim();
    if (id) go(`/ui/executions/${encodeURIComponent(id)}`);
  });
  render();
});

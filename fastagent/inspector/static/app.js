// FastAgent call inspector: hand-written, no framework, nothing loaded from elsewhere.
// Every value from the log is inserted as text (never as HTML): transcripts and tool
// results are hostile input.
"use strict";

const SVG = "http://www.w3.org/2000/svg";

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function setStatus(text) {
  document.getElementById("status").textContent = text || "";
}

class NeedCredential extends Error {}

async function getJSON(url) {
  const r = await fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" });
  if (r.status === 401) throw new NeedCredential("read credential required");
  let body;
  try {
    body = await r.json();
  } catch (e) {
    throw new Error(`${r.status} ${r.statusText}`);
  }
  if (!r.ok) throw new Error(body.error || `${r.status} ${r.statusText}`);
  return body;
}

function clock(ms) {
  if (ms === null || ms === undefined) return "";
  const neg = ms < 0;
  ms = Math.abs(ms);
  const m = Math.floor(ms / 60000);
  const sec = Math.floor(ms / 1000) % 60;
  const rest = ms % 1000;
  return `${neg ? "-" : "+"}${String(m).padStart(2, "0")}:${String(sec).padStart(2, "0")}.${String(rest).padStart(3, "0")}`;
}

function fmtMs(v) {
  return v === null || v === undefined ? "–" : `${Math.round(v)} ms`;
}

function fmtDate(us) {
  if (!us) return "";
  return new Date(us / 1000).toISOString().replace("T", " ").slice(0, 19);
}

function fmtUsd(v) {
  return v === null || v === undefined ? "–" : `$${Number(v).toFixed(4)}`;
}

// ------------------------------------------------------------------ calls list

const FILTERS = ["agent", "outcome", "since", "until", "min_s", "max_s", "fsa_state", "q", "caller"];

function listParams() {
  const hash = location.hash.replace(/^#\/?/, "");
  const qs = hash.includes("?") ? hash.slice(hash.indexOf("?") + 1) : "";
  return new URLSearchParams(qs);
}

async function showList() {
  stopLive();
  const params = listParams();
  const main = document.getElementById("main");
  setStatus("loading calls…");
  let data;
  try {
    data = await getJSON(`api/calls?${params.toString()}`);
  } catch (e) {
    if (e instanceof NeedCredential) return showLogin();
    main.replaceChildren(h("p", { class: "error", id: "error" }, `Cannot list calls: ${e.message}`));
    setStatus("");
    return;
  }
  const select = (name, options, label) =>
    h("label", {}, label,
      h("select", { name, id: `f-${name}` },
        h("option", { value: "" }, "any"),
        options.map((o) => h("option", { value: o, selected: params.get(name) === o }, o))));
  const input = (name, label, type, extra) =>
    h("label", {}, label, h("input", { name, id: `f-${name}`, type, value: params.get(name) || "", ...(extra || {}) }));
  const form = h("form", { id: "filters", class: "filters", onsubmit: (ev) => {
      ev.preventDefault();
      const p = new URLSearchParams();
      for (const name of FILTERS) {
        const v = form.elements[name].value.trim();
        if (v) p.set(name, v);
      }
      location.hash = `#/?${p.toString()}`;
    } },
    input("q", "call id", "search", { placeholder: "search call id" }),
    input("caller", "caller", "search", { placeholder: "caller number" }),
    select("agent", data.agents, "agent"),
    select("outcome", data.outcomes, "outcome"),
    select("fsa_state", data.fsa_states, "FSA reached"),
    input("since", "from", "date"),
    input("until", "to", "date"),
    input("min_s", "min s", "number", { min: 0, step: "any" }),
    input("max_s", "max s", "number", { min: 0, step: "any" }),
    h("button", { type: "submit" }, "Filter"),
    h("a", { href: "#/", class: "reset" }, "reset"));
  const rows = data.calls.map((c) =>
    h("tr", { "data-call": c.call_id },
      h("td", {}, h("a", { href: `#/call/${encodeURIComponent(c.call_id)}`, class: "call-link" }, c.call_id)),
      h("td", {}, fmtDate(c.started_at)),
      h("td", { class: "num" }, (c.duration_ms / 1000).toFixed(1) + " s"),
      h("td", {}, c.agent),
      h("td", {}, h("span", { class: `outcome o-${c.outcome}` }, c.outcome)),
      h("td", {}, c.caller),
      h("td", { class: "fsa-cell" }, c.fsa_states.join(" → ")),
      h("td", { class: "num" }, c.turns),
      h("td", { class: "num" }, fmtMs(c.latency_p50_ms)),
      h("td", { class: "num" }, fmtMs(c.latency_p95_ms)),
      h("td", { class: "num" }, fmtUsd(c.cost_usd)),
      h("td", { class: "num" + (c.errors ? " bad" : "") }, c.errors)));
  const table = h("table", { id: "calls", class: "grid" },
    h("thead", {}, h("tr", {},
      ["call id", "started (UTC)", "duration", "agent", "outcome", "caller", "FSA states", "turns",
        "latency p50", "p95", "cost", "errors"].map((t) => h("th", {}, t)))),
    h("tbody", {}, rows));
  const byAgent = h("table", { id: "by-agent", class: "grid narrow" },
    h("thead", {}, h("tr", {}, ["agent", "calls", "turns", "latency p50", "p95", "cost"].map((t) => h("th", {}, t)))),
    h("tbody", {}, data.by_agent.map((a) => h("tr", {},
      h("td", {}, a.agent), h("td", { class: "num" }, a.calls), h("td", { class: "num" }, a.turns),
      h("td", { class: "num" }, fmtMs(a.p50_ms)), h("td", { class: "num" }, fmtMs(a.p95_ms)),
      h("td", { class: "num" }, fmtUsd(a.cost_usd))))));
  main.replaceChildren(
    h("h1", {}, "Calls"),
    form,
    h("p", { class: "muted", id: "count" }, `${data.calls.length} shown of ${data.total} calls`),
    data.by_agent.length ? h("details", { open: true }, h("summary", {}, "Turn latency (caller's end of speech → first playStream.chunk) and cost by agent"), byAgent) : null,
    data.calls.length ? table : h("p", { class: "empty" }, "No call matches."));
  setStatus("");
}

// ------------------------------------------------------------------- call page

let live = null;
let view = null;
let cursor = 0; // index into view.rows
let refetchTimer = null;

function stopLive() {
  if (live) live.close();
  live = null;
  document.getElementById("live-badge").hidden = true;
}

async function showCall(callId, keepCursor) {
  const main = document.getElementById("main");
  if (!keepCursor) setStatus("loading call…");
  let data;
  try {
    data = await getJSON(`api/calls/${encodeURIComponent(callId)}`);
  } catch (e) {
    if (e instanceof NeedCredential) return showLogin();
    main.replaceChildren(h("p", { class: "error", id: "error" }, `Cannot show call ${callId}: ${e.message}`),
      h("p", {}, h("a", { href: "#/" }, "← all calls")));
    setStatus("");
    return;
  }
  const atEnd = !view || cursor >= view.rows.length - 1;
  view = data;
  if (!keepCursor || atEnd) cursor = Math.max(0, data.rows.length - 1);
  renderCall();
  setStatus("");
  if (data.status !== "ended" && !live) startLive(callId);
}

function startLive(callId) {
  live = new EventSource(`api/calls/${encodeURIComponent(callId)}/live`);
  document.getElementById("live-badge").hidden = false;
  live.addEventListener("events", (msg) => {
    const d = JSON.parse(msg.data);
    if (view && d.last_seq === view.last_seq) return;
    clearTimeout(refetchTimer);
    refetchTimer = setTimeout(() => showCall(callId, true), 300);
  });
  live.addEventListener("end", () => {
    stopLive();
    showCall(callId, true);
  });
  live.addEventListener("error", () => {
    if (live && live.readyState === EventSource.CLOSED) stopLive();
  });
}

function section(title, id, ...body) {
  return h("section", { id, class: "panel" }, h("h2", {}, title), ...body);
}

function renderCall() {
  const v = view;
  const main = document.getElementById("main");
  const lat = v.latency;
  const header = h("div", { class: "call-head" },
    h("p", {}, h("a", { href: "#/" }, "← all calls")),
    h("h1", {}, "Call ", h("code", { id: "call-id" }, v.call_id)),
    h("dl", { class: "facts" },
      h("dt", {}, "agent"), h("dd", { id: "agent" }, v.agent),
      h("dt", {}, "status"), h("dd", { id: "call-status" }, v.status),
      h("dt", {}, "outcome"), h("dd", { id: "outcome" }, v.outcome || "–"),
      h("dt", {}, "caller"), h("dd", {}, v.caller || "–"),
      h("dt", {}, "started"), h("dd", {}, fmtDate(v.started_at)),
      h("dt", {}, "duration"), h("dd", {}, (v.duration_ms / 1000).toFixed(1) + " s"),
      h("dt", {}, "events"), h("dd", {}, `${v.events} (${v.audio_events} audio boundaries)`),
      h("dt", {}, "cost"), h("dd", { id: "cost" },
        `${fmtUsd(v.cost.usd)} · ${v.cost.responses} responses · audio ${v.cost.audio_in} in / ${v.cost.audio_out} out · text ${v.cost.text_in} in / ${v.cost.text_out} out tokens`)));

  const scrub = h("input", { type: "range", id: "scrubber", min: 0, max: Math.max(0, v.rows.length - 1), value: cursor,
    oninput: (e) => moveTo(Number(e.target.value)) });
  const scrubber = section("Time travel", "time-travel",
    h("div", { class: "scrub-row" },
      h("button", { type: "button", id: "prev", onclick: () => moveTo(cursor - 1) }, "◀"),
      scrub,
      h("button", { type: "button", id: "next", onclick: () => moveTo(cursor + 1) }, "▶")),
    h("p", { id: "scrub-label", class: "mono" }),
    h("div", { id: "state", class: "state" }));

  const latencyTable = h("table", { class: "grid", id: "latency" },
    h("thead", {}, h("tr", {}, ["stage", "what", "p50", "p95", "turns"].map((t) => h("th", {}, t)))),
    h("tbody", {}, [
      ["vad", "caller's end of speech → speech_stopped"],
      ["response", "speech_stopped → response.created"],
      ["first_audio", "response.created → first audio delta"],
      ["to_caller", "first audio delta → first playStream.chunk"],
      ["total", "end of speech → first playStream.chunk"],
    ].map(([k, what]) => h("tr", { class: k === "total" ? "total" : "" },
      h("td", {}, k), h("td", {}, what), h("td", { class: "num" }, fmtMs(lat[k].p50)),
      h("td", { class: "num" }, fmtMs(lat[k].p95)), h("td", { class: "num" }, lat[k].n)))));
  const turns = h("table", { class: "grid", id: "turns" },
    h("thead", {}, h("tr", {}, ["at", "response", "vad", "response", "first audio", "to caller", "total"].map((t) => h("th", {}, t)))),
    h("tbody", {}, v.turns.map((t) => h("tr", { onclick: () => moveToSeq(t.seq), class: "clickable" },
      h("td", { class: "mono" }, clock(t.ms)), h("td", { class: "mono" }, t.response_id),
      ["vad", "response", "first_audio", "to_caller", "total"].map((k) => h("td", { class: "num" }, fmtMs(t[k])))))));

  const tools = v.tools.length ? h("table", { class: "grid", id: "tools" },
    h("thead", {}, h("tr", {}, ["at", "tool", "server", "arguments", "status", "result", "ms"].map((t) => h("th", {}, t)))),
    h("tbody", {}, v.tools.map((t) => h("tr", { class: `clickable t-${t.status}`, onclick: () => moveToSeq(t.result_seq || t.seq) },
      h("td", { class: "mono" }, clock(t.ms)), h("td", {}, t.name), h("td", {}, t.server || ""),
      h("td", { class: "mono wrap" }, t.arguments || ""), h("td", {}, t.status),
      h("td", { class: "mono wrap" }, t.status === "error" ? t.error : t.status === "skipped" ? t.reason : (t.output || "")),
      h("td", { class: "num" }, t.duration_ms ?? ""))))) : h("p", { class: "muted" }, "No tool calls.");

  const errors = v.errors.length ? h("ul", { id: "errors", class: "errors" },
    v.errors.map((e) => h("li", { class: "clickable", onclick: () => moveToSeq(e.seq) },
      h("span", { class: "mono" }, clock(e.ms)), " ", h("strong", {}, `${e.type} (${e.kind}${e.code ? " " + e.code : ""})`), ": ", e.message)))
    : h("p", { class: "muted", id: "errors" }, "No model errors or protocol violations.");

  const transcript = h("ol", { id: "transcript", class: "transcript" },
    v.transcript.map((t) => h("li", { class: `line ${t.role}`, "data-seq": t.seq, onclick: () => moveToSeq(t.seq) },
      h("span", { class: "mono" }, clock(t.ms)), " ", h("span", { class: "who" }, t.role === "user" ? "caller" : "bot"), " ", t.text)));

  const fsaLog = v.transitions.length ? h("ol", { id: "fsa-log", class: "fsa-log" },
    v.transitions.map((t) => h("li", { class: "clickable", onclick: () => moveToSeq(t.seq) },
      h("span", { class: "mono" }, clock(t.ms)), " ",
      t.kind === "started" ? `${t.fsa} started in ${t.target}` :
        t.kind === "finished" ? `${t.fsa} ${t.outcome} in ${t.source}` :
          `${t.fsa}: ${t.source} → ${t.target} on ${t.trigger}${t.guard ? ` [${t.guard}]` : ""}`,
      t.reason ? h("span", { class: "muted" }, ` — ${t.reason}`) : null)))
    : h("p", { class: "muted" }, "No Finite State Agent ran in this call.");

  const events = h("ol", { id: "events", class: "events" },
    v.rows.map((r, i) => h("li", { class: `ev ${r.kind}`, "data-i": i, onclick: () => moveTo(i) },
      h("span", { class: "mono" }, `#${r.seq} ${clock(r.ms)}`), " ", h("span", { class: "etype" }, r.type), " ", r.text)));

  main.replaceChildren(
    header,
    section("Timeline", "timeline-panel", h("div", { id: "timeline" })),
    scrubber,
    h("div", { class: "cols" },
      section("Transcript", "transcript-panel", transcript),
      section("State diagram", "diagram-panel", h("div", { id: "diagrams" }), fsaLog)),
    section("Per-turn latency", "latency-panel", latencyTable, turns),
    section("Tool calls", "tools-panel", tools),
    section("Model errors and protocol violations", "errors-panel", errors),
    section("Events", "events-panel", events));
  drawTimeline();
  moveTo(cursor, true);
}

function moveToSeq(seq) {
  if (seq === undefined || seq === null) return;
  let best = 0;
  view.rows.forEach((r, i) => { if (r.seq <= seq) best = i; });
  moveTo(best);
}

let stateSeq = null;
let stateTimer = null;

function moveTo(i, initial) {
  const v = view;
  if (!v || !v.rows.length) return;
  cursor = Math.min(Math.max(0, i), v.rows.length - 1);
  const row = v.rows[cursor];
  document.getElementById("scrubber").value = cursor;
  document.getElementById("scrub-label").textContent = `event #${row.seq} at ${clock(row.ms)}: ${row.type} ${row.text}`;
  const line = document.getElementById("cursor");
  if (line) {
    const x = timelineX(row.ms);
    line.setAttribute("x1", x);
    line.setAttribute("x2", x);
  }
  for (const el of document.querySelectorAll("#events li.current")) el.classList.remove("current");
  const li = document.querySelector(`#events li[data-i="${cursor}"]`);
  if (li) {
    li.classList.add("current");
    if (!initial) li.scrollIntoView({ block: "nearest" });
  }
  for (const el of document.querySelectorAll("#transcript li")) {
    el.classList.toggle("future", Number(el.dataset.seq) > row.seq);
  }
  clearTimeout(stateTimer);
  stateTimer = setTimeout(() => loadState(row.seq), initial ? 0 : 60);
}

async function loadState(seq) {
  if (stateSeq === seq && document.getElementById("state").childElementCount) return;
  stateSeq = seq;
  let st;
  try {
    st = await getJSON(`api/calls/${encodeURIComponent(view.call_id)}/state?seq=${seq}`);
  } catch (e) {
    document.getElementById("state").replaceChildren(h("p", { class: "error" }, e.message));
    return;
  }
  if (stateSeq !== seq) return;
  renderState(st);
  drawDiagrams(st);
}

function renderState(st) {
  const fsas = Object.entries(st.fsas);
  const box = h("div", { class: "state-grid" },
    h("dl", { class: "facts", id: "state-facts" },
      h("dt", {}, "at event"), h("dd", { id: "state-seq" }, `#${st.last_seq}`),
      h("dt", {}, "status"), h("dd", { id: "state-status" }, st.status),
      h("dt", {}, "speaking"), h("dd", { id: "state-speaking" }, st.speaking || "nobody"),
      h("dt", {}, "caller audio"), h("dd", {}, `${(st.caller_audio_ms / 1000).toFixed(1)} s`),
      h("dt", {}, "bot audio"), h("dd", {}, `${(st.bot_audio_ms / 1000).toFixed(1)} s`),
      h("dt", {}, "barge-ins"), h("dd", {}, st.barge_ins),
      h("dt", {}, "tool calls"), h("dd", {}, `${st.tool_calls} (${st.tool_errors} failed, ${Object.keys(st.pending_tools).length} pending)`),
      h("dt", {}, "tokens"), h("dd", {}, st.total_tokens),
      h("dt", {}, "outcome"), h("dd", {}, st.outcome || "–")),
    h("div", { id: "state-fsas" },
      fsas.length ? fsas.map(([name, f]) => h("div", { class: "fsa-state" },
        h("strong", {}, name), " in ", h("code", { class: "current-state" }, f.state),
        h("ul", {}, Object.entries(f.slots).map(([k, val]) => h("li", {}, h("code", {}, k), " = ", String(val))))))
        : h("p", { class: "muted" }, "no FSA running"),
      h("p", { class: "muted" }, `${st.transcript.length} transcript lines so far`),
      st.transcript.length ? h("p", { class: "last-line" }, `${st.transcript[st.transcript.length - 1].role}: ${st.transcript[st.transcript.length - 1].text}`) : null));
  document.getElementById("state").replaceChildren(box);
}

// -------------------------------------------------------------------- timeline

const TL = { left: 110, width: 1000, lane: 26 };

function timelineX(ms) {
  const total = Math.max(view.duration_ms, 1);
  return TL.left + (ms / total) * TL.width;
}

function drawTimeline() {
  const v = view;
  const lanes = ["caller", "bot", "barge-in", "tools", "FSA", "latency", "errors"];
  const height = lanes.length * TL.lane + 40;
  const svg = s("svg", { viewBox: `0 0 ${TL.left + TL.width + 20} ${height}`, class: "timeline", id: "timeline-svg", role: "img",
    "aria-label": "call timeline" });
  lanes.forEach((name, i) => {
    const y = 10 + i * TL.lane;
    svg.append(s("text", { x: 4, y: y + 16, class: "lane-label" }, name));
    svg.append(s("line", { x1: TL.left, x2: TL.left + TL.width, y1: y + TL.lane - 2, y2: y + TL.lane - 2, class: "lane-rule" }));
  });
  const laneY = (name) => 10 + lanes.indexOf(name) * TL.lane;
  const bar = (lane, a, b, cls, title, seqTarget) => {
    const x = timelineX(a);
    const w = Math.max(2, timelineX(b) - x);
    const r = s("rect", { x, y: laneY(lane) + 4, width: w, height: TL.lane - 10, rx: 3, class: cls,
      onclick: () => moveToSeq(seqTarget) }, s("title", {}, title));
    svg.append(r);
  };
  const mark = (lane, ms, cls, title, seq, glyph) => {
    const x = timelineX(ms);
    svg.append(s("text", { x: x - 4, y: laneY(lane) + 17, class: cls, onclick: () => moveToSeq(seq) }, glyph || "◆",
      s("title", {}, title)));
  };
  for (const b of v.caller_speech) bar("caller", b.start_ms, b.end_ms, "bar caller", b.text || "caller speech", seqAt(b.start_ms));
  for (const b of v.bot_speech) bar("bot", b.start_ms, b.end_ms, b.cut ? "bar bot cut" : "bar bot", (b.cut ? "(cut) " : "") + (b.text || "bot speech"), seqAt(b.start_ms));
  for (const b of v.barge_ins) mark("barge-in", b.ms, "mark barge", `barge-in: bot cut after ${b.played_ms} ms of audio`, b.seq, "✂");
  for (const t of v.tools) bar("tools", t.ms, t.end_ms ?? t.ms, `bar tool t-${t.status}`, `${t.name} (${t.status})`, t.seq);
  for (const t of v.transitions) mark("FSA", t.ms, "mark fsa", t.kind === "transition" ? `${t.source} → ${t.target}` : `${t.fsa} ${t.kind}`, t.seq, "●");
  for (const t of v.turns) if (t.total !== null) mark("latency", t.ms, "mark lat", `turn latency ${Math.round(t.total)} ms`, t.seq, "▲");
  for (const e of v.errors) mark("errors", e.ms, "mark err", `${e.type}: ${e.message}`, e.seq, "✖");
  // Axis: ten ticks.
  const y = lanes.length * TL.lane + 14;
  for (let k = 0; k <= 10; k++) {
    const ms = (v.duration_ms * k) / 10;
    svg.append(s("text", { x: timelineX(ms) - 18, y: y + 12, class: "tick" }, clock(Math.round(ms)).slice(1, 9)));
  }
  svg.append(s("line", { id: "cursor", x1: TL.left, x2: TL.left, y1: 4, y2: y, class: "cursor" }));
  svg.addEventListener("click", (e) => {
    if (e.target !== svg) return;
    const pt = svg.createSVGPoint();
    pt.x = e.clientX; pt.y = e.clientY;
    const loc = pt.matrixTransform(svg.getScreenCTM().inverse());
    const ms = ((loc.x - TL.left) / TL.width) * v.duration_ms;
    moveToSeq(seqAt(ms));
  });
  document.getElementById("timeline").replaceChildren(svg);
}

function seqAt(ms) {
  let seq = view.rows.length ? view.rows[0].seq : 0;
  for (const r of view.rows) { if (r.ms <= ms) seq = r.seq; else break; }
  return seq;
}

// --------------------------------------------------------------- state diagram

function layout(g) {
  // Layers by breadth-first distance from the initial state.
  const depth = new Map();
  const queue = [];
  if (g.initial) { depth.set(g.initial, 0); queue.push(g.initial); }
  while (queue.length) {
    const n = queue.shift();
    for (const e of g.edges) {
      if (e.source === n && !depth.has(e.target)) { depth.set(e.target, depth.get(n) + 1); queue.push(e.target); }
    }
  }
  let maxDepth = Math.max(0, ...depth.values());
  for (const st of g.states) if (!depth.has(st.name)) depth.set(st.name, ++maxDepth);
  const layers = new Map();
  for (const st of g.states) {
    const d = depth.get(st.name);
    if (!layers.has(d)) layers.set(d, []);
    layers.get(d).push(st.name);
  }
  const pos = new Map();
  for (const [d, names] of layers) names.forEach((n, i) => pos.set(n, { x: 20 + d * 175, y: 30 + i * 64 }));
  const width = 20 + (Math.max(...layers.keys()) + 1) * 175;
  const height = 30 + Math.max(...[...layers.values()].map((l) => l.length)) * 64;
  return { pos, width, height };
}

function drawDiagrams(st) {
  const box = document.getElementById("diagrams");
  if (!box) return;
  const v = view;
  if (!v.diagrams.length) { box.replaceChildren(); return; }
  // Walked transitions up to the cursor, and the current state of each FSA.
  const seq = v.rows[cursor] ? v.rows[cursor].seq : 0;
  const walked = new Set();
  const current = {};
  const finished = {};
  for (const t of v.transitions) {
    if (t.seq > seq) break;
    if (t.kind === "transition") { walked.add(`${t.fsa}|${t.source}|${t.target}`); current[t.fsa] = t.target; }
    if (t.kind === "started") { current[t.fsa] = t.target; delete finished[t.fsa]; }
    if (t.kind === "finished") { current[t.fsa] = t.source; finished[t.fsa] = t.outcome; }
  }
  for (const [name, f] of Object.entries(st.fsas || {})) current[name] = f.state;
  box.replaceChildren(...v.diagrams.map((g) => {
    const { pos, width, height } = layout(g);
    const svg = s("svg", { viewBox: `0 0 ${width + 20} ${height + 10}`, class: "diagram", "data-fsa": g.name, role: "img",
      "aria-label": `state diagram of ${g.name}` });
    svg.append(s("defs", {}, s("marker", { id: `arrow-${g.name}`, viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" },
      s("path", { d: "M 0 0 L 10 5 L 0 10 z", class: "arrow" }))));
    const W = 140, H = 30;
    for (const e of g.edges) {
      const a = pos.get(e.source), b = pos.get(e.target);
      if (!a || !b || e.source === e.target) continue;
      const on = walked.has(`${g.name}|${e.source}|${e.target}`);
      const x1 = a.x + W, y1 = a.y + H / 2, x2 = b.x, y2 = b.y + H / 2;
      const back = x2 <= a.x;
      const d = back
        ? `M ${a.x + W / 2} ${a.y + H} C ${a.x + W / 2} ${a.y + H + 40}, ${b.x + W / 2} ${b.y + H + 40}, ${b.x + W / 2} ${b.y + H}`
        : `M ${x1} ${y1} C ${x1 + 25} ${y1}, ${x2 - 25} ${y2}, ${x2} ${y2}`;
      svg.append(s("path", { d, class: on ? "edge walked" : "edge", "marker-end": `url(#arrow-${g.name})` },
        s("title", {}, `${e.source} → ${e.target}: ${e.label}`)));
    }
    for (const stt of g.states) {
      const p = pos.get(stt.name);
      const isCurrent = current[g.name] === stt.name;
      const cls = ["node", stt.terminal ? "terminal" : "", isCurrent ? "current" : "", stt.name === g.initial ? "initial" : ""].join(" ");
      svg.append(s("g", { class: cls, "data-state": stt.name },
        s("rect", { x: p.x, y: p.y, width: W, height: H, rx: stt.terminal ? 15 : 5 }),
        s("text", { x: p.x + W / 2, y: p.y + 19, "text-anchor": "middle" }, stt.name),
        s("title", {}, stt.terminal ? `${stt.name} (terminal: ${stt.outcome})` : stt.name)));
    }
    const caption = h("p", { class: "muted" }, `${g.name}${g.from_log ? " (drawn from the log: definition not loaded here)" : ""}` +
      (current[g.name] ? ` — current state: ${current[g.name]}${finished[g.name] ? ` (finished, ${finished[g.name]})` : ""}` : " — not started yet"));
    return h("figure", { class: "diagram-box" }, svg, caption);
  }));
}

// ------------------------------------------------------------------ credential

async function login(token) {
  const r = await fetch("login", { method: "POST", credentials: "same-origin",
    headers: { "Content-Type": "application/json" }, body: JSON.stringify({ token }) });
  return r.status === 204;
}

function showLogin(message) {
  stopLive();
  setStatus("");
  const input = h("input", { type: "password", id: "token", name: "token", autocomplete: "current-password", required: true });
  const form = h("form", { id: "login", class: "filters", onsubmit: async (ev) => {
      ev.preventDefault();
      if (await login(input.value)) route();
      else showLogin("That is not a read credential of this service.");
    } },
    h("label", {}, "read credential (FASTAGENT_READ_TOKEN)", input),
    h("button", { type: "submit" }, "Sign in"));
  document.getElementById("main").replaceChildren(
    h("h1", {}, "Sign in"),
    h("p", {}, "Reading calls needs the service's read credential. It is kept as a cookie for this site only."),
    message ? h("p", { class: "error", id: "login-error" }, message) : null,
    form);
  input.focus();
}

// ---------------------------------------------------------------------- router

async function start() {
  // `fastagent inspect` prints a URL whose fragment holds a credential for that run:
  // the fragment never leaves the browser; trade it for the cookie, then drop it.
  const m = location.hash.match(/^#token=([^&]+)/);
  if (m) {
    const ok = await login(decodeURIComponent(m[1]));
    history.replaceState(null, "", location.pathname + "#/");
    if (!ok) return showLogin("The credential in the URL is not valid (any more).");
  }
  route();
}

function route() {
  const hash = location.hash || "#/";
  const m = hash.match(/^#\/call\/([^?]+)/);
  if (m) {
    stopLive();
    view = null;
    showCall(decodeURIComponent(m[1]), false);
  } else {
    view = null;
    showList();
  }
}

window.addEventListener("hashchange", route);
document.addEventListener("DOMContentLoaded", start);

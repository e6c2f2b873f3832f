// basetrigger dashboard: plain JavaScript against the app's own HTTP API (docs/api.md), no CDN, no build.
//
// The page is served without a key; every data call sends the function key in `x-functions-key`.
// The key comes from the URL fragment (`.../dashboard/#key=KEY`: a fragment never reaches a server or
// a log) or from the form, and is kept in sessionStorage (this tab only). Without it the API answers
// 401 and the page says so.
"use strict";

const API = new URL("../", location.href); // the page is /api/dashboard/: the API is /api/
// The status words come from the app (`vocabulary.json`, served with the page from the definitions
// the API uses): the page keeps no copy of them. Filled in by start() before any view is shown.
const WORDS = { runStatuses: [], terminal: [], memberStandings: [], waveStates: [], triggers: [] };
const TERMINAL = new Set();
const RUNS_EVERY_MS = 2000;
const LOG_EVERY_MS = 1000;
const GRAPH_EVERY_MS = 3000;
const WAVES_EVERY_MS = 2000;
const $ = (selector) => document.querySelector(selector);

let key = sessionStorage.getItem("bt-key") || "";

// ---- talking to the API ------------------------------------------------------------------------
class Unauthorized extends Error {}

function setStatus(text, isError = false) {
  const el = $("#status");
  el.textContent = text;
  el.classList.toggle("error", isError);
}

async function api(path, params = {}, method = "GET") {
  const url = new URL(path, API);
  for (const [name, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "") url.searchParams.set(name, value);
  }
  const headers = { accept: "application/json" };
  if (key) headers["x-functions-key"] = key;
  const response = await fetch(url, { method, headers, cache: "no-store" });
  if (response.status === 401) {
    setStatus(key ? "The function key was refused (HTTP 401): enter the right key above."
                  : "No function key: the API answered HTTP 401. Enter the key above, or open this page as …/dashboard/#key=KEY.",
              true);
    $("#key-input").focus();
    throw new Unauthorized();
  }
  if (!response.ok) {
    let message = `HTTP ${response.status} from ${url.pathname}`;
    try { message = (await response.json()).error.message || message; } catch (_) { /* not JSON */ }
    throw new Error(message);
  }
  return response;
}

const getJson = async (path, params) => (await api(path, params)).json();

function reportError(error) {
  if (!(error instanceof Unauthorized)) setStatus(`Error: ${error.message}`, true);
}

// ---- small DOM helpers -------------------------------------------------------------------------
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value);
  }
  for (const child of children) node.append(child);
  return node;
}

const badge = (status) => el("span", { class: `badge s-${status || "none"}`, text: status || "—" });

function shortDigest(digest) {
  return digest ? digest.replace(/^(sha256:)?([0-9a-f]{12})[0-9a-f]+$/, "$2…") : "—";
}

// `<base>@sha256:<64 hex>` (what started a wave) with its digest cut short; other roots as they are.
function shortRoot(root) {
  return (root || "").replace(/@sha256:([0-9a-f]{12})[0-9a-f]{52}$/, "@$1…");
}

function formatTime(iso) {
  if (!iso) return "—";
  const t = new Date(iso);
  const sameDay = t.toDateString() === new Date().toDateString();
  return sameDay ? t.toLocaleTimeString() : t.toLocaleString();
}

function formatDuration(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  const s = Math.round(seconds);
  const pad = (n) => String(n).padStart(2, "0");
  return `${pad(Math.floor(s / 3600))}:${pad(Math.floor((s % 3600) / 60))}:${pad(s % 60)}`;
}

// ---- tabs (arrow keys move between them, as a tablist should) ----------------------------------
const views = {};
let current = "runs";

function showTab(name, focus = false) {
  for (const tab of document.querySelectorAll('[role="tab"]')) {
    const selected = tab.id === `tab-${name}`;
    tab.setAttribute("aria-selected", String(selected));
    tab.tabIndex = selected ? 0 : -1;
    $(`#${tab.getAttribute("aria-controls")}`).hidden = !selected;
    if (selected && focus) tab.focus();
  }
  if (current !== name && views[current]?.leave) views[current].leave();
  current = name;
  views[name]?.enter?.();
}

function setUpTabs() {
  const tabs = [...document.querySelectorAll('[role="tab"]')];
  tabs.forEach((tab, i) => {
    tab.addEventListener("click", () => showTab(tab.id.slice(4)));
    tab.addEventListener("keydown", (event) => {
      const step = { ArrowRight: 1, ArrowLeft: -1 }[event.key];
      if (step) showTab(tabs[(i + step + tabs.length) % tabs.length].id.slice(4), true);
    });
  });
}

// ---- runs --------------------------------------------------------------------------------------
const runs = {
  timer: null,
  known: null, // run ids shown so far (null before the first answer): new ones flash
  filters() {
    const form = new FormData($("#run-filters"));
    return { top: form.get("top"), task: form.get("task").trim(), status: form.get("status"),
             image: form.get("image").trim() };
  },
  enter() { this.poll(); },
  leave() { clearTimeout(this.timer); this.timer = null; },
  async poll() {
    clearTimeout(this.timer);
    try {
      const page = await getJson("runs", this.filters());
      this.render(page.runs);
      $("#runs-live").textContent = `updated ${new Date().toLocaleTimeString()}`;
      setStatus(`${page.runs.length} runs shown`);
    } catch (error) {
      reportError(error);
      if (error instanceof Unauthorized) return; // until a key is given (the form restarts the view)
    }
    if (current === "runs" && !document.hidden) this.timer = setTimeout(() => this.poll(), RUNS_EVERY_MS);
  },
  render(list) {
    const body = $("#runs tbody");
    const rows = list.map((run) => {
      const cause = run.status === "Succeeded" || !run.reason ? (run.cause || "") : run.reason;
      const row = el("tr", { "data-run-id": run.run_id },
        el("td", { class: "mono" }, el("button", { class: "link", type: "button", text: run.run_id,
          "aria-label": `Open run ${run.run_id}`, onclick: () => detail.open(run.run_id) })),
        el("td", { text: run.task || "(quick build)" }),
        el("td", { text: run.trigger }),
        el("td", { class: "status" }, badge(run.status)),
        el("td", { title: run.created_at || "", text: formatTime(run.created_at) }),
        el("td", { class: "mono", text: formatDuration(run.duration_seconds) }),
        el("td", { class: "wrap mono", text: cause }));
      if (this.known && !this.known.has(run.run_id)) row.classList.add("fresh");
      if (detail.runId === run.run_id) row.classList.add("selected");
      return row;
    });
    // Keep keyboard focus on the same run's button across refreshes.
    const focused = document.activeElement?.closest?.("tr[data-run-id]")?.dataset.runId;
    body.replaceChildren(...rows);
    if (focused) body.querySelector(`tr[data-run-id="${CSS.escape(focused)}"] button`)?.focus();
    if (this.known === null) {
      performance.mark("bt:first-runs"); // bench/dashboard.py reads this: the first view is on screen
      setTimeout(loadTaskNames, 0);
    }
    this.known = new Set(list.map((r) => r.run_id));
  },
};
views.runs = runs;

async function loadTaskNames() {
  try {
    const graph = await getJson("graph");
    $("#task-names").replaceChildren(...graph.tasks.map((t) => el("option", { value: t.task })));
  } catch (error) { reportError(error); }
}

// ---- one run: facts and its log, followed while it builds ---------------------------------------
const detail = {
  runId: null,
  offset: 0,
  timer: null,
  async open(runId) {
    clearTimeout(this.timer);
    this.runId = runId;
    this.offset = 0;
    $("#run-log").textContent = "";
    $("#run-detail").hidden = false;
    $("#view-runs .split").classList.add("open");
    $("#run-title").textContent = `Run ${runId}`;
    for (const row of document.querySelectorAll("#runs tr[data-run-id]")) {
      row.classList.toggle("selected", row.dataset.runId === runId);
    }
    $("#run-log").focus();
    this.follow(runId);
  },
  close() {
    clearTimeout(this.timer);
    const runId = this.runId;
    this.runId = null;
    $("#run-detail").hidden = true;
    $("#view-runs .split").classList.remove("open");
    document.querySelector(`#runs tr[data-run-id="${CSS.escape(runId || "")}"] button`)?.focus();
  },
  facts(run) {
    const items = [["Status", badge(run.status)], ["Task", run.task || "(quick build)"], ["Trigger", run.trigger],
      ["Cause", run.cause || "—"], ["Started", formatTime(run.started_at)],
      ["Duration", formatDuration(run.duration_seconds)], ["Images", (run.output_images || []).join(", ") || "—"],
      ["Digest", run.output_digest || "—"]];
    if (run.reason) items.push(["Reason", run.reason]);
    if (run.wave_id) {
      items.push(["Wave", el("button", { class: "link mono", type: "button", text: run.wave_id,
        "aria-label": `Open wave ${run.wave_id}`, onclick: () => { showTab("waves"); waveDetail.open(run.wave_id); } })]);
    }
    $("#run-facts").replaceChildren(...items.flatMap(([name, value]) => [el("dt", { text: name }), el("dd", {}, value)]));
  },
  async follow(runId) {
    if (runId !== this.runId) return;
    try {
      const response = await api(`runs/${encodeURIComponent(runId)}/log`, { offset: this.offset });
      const text = await response.text();
      if (runId !== this.runId) return;
      const next = Number(response.headers.get("x-log-offset"));
      this.offset = Number.isFinite(next) ? next : this.offset + new TextEncoder().encode(text).length;
      if (text) {
        const log = $("#run-log");
        const atEnd = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
        log.append(text);
        if (atEnd) log.scrollTop = log.scrollHeight;
      }
      const status = response.headers.get("x-run-status");
      this.facts(await getJson(`runs/${encodeURIComponent(runId)}`));
      // Once terminal, the log is complete after one more read (what was appended meanwhile).
      if (TERMINAL.has(status) && !text) return;
    } catch (error) {
      reportError(error);
    }
    this.timer = setTimeout(() => this.follow(runId), LOG_EVERY_MS);
  },
};

// ---- the dependency graph, laid out by levels in SVG --------------------------------------------
const SVG = "http://www.w3.org/2000/svg";
const NODE_W = 230, NODE_H = 30, COL_GAP = 80, ROW_GAP = 12, PAD = 24, LABEL_H = 26;

function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  for (const child of children) node.append(child);
  return node;
}

function fit(text, chars = 32) {
  return text.length <= chars ? text : `…${text.slice(text.length - chars + 1)}`;
}

const graph = {
  timer: null,
  focusImage: "",
  waveId: "", // a wave chosen in the Waves tab; "" follows the newest wave in progress
  statuses: new Map(),
  enter() { this.load(); },
  leave() { clearTimeout(this.timer); this.timer = null; },
  seq: 0,
  async load() {
    clearTimeout(this.timer);
    const seq = ++this.seq; // a slower earlier answer must not replace a later one
    try {
      if (this.focusImage) {
        const impact = await getJson(`bases/${encodeURIComponent(this.focusImage)}/impact`);
        if (seq !== this.seq) return;
        this.draw(fromImpact(impact));
        $("#graph-summary").textContent = `${impact.rebuilds} of ${impact.tasks} dependent task(s) would rebuild ` +
          `if ${impact.image} changed, in ${impact.levels.length} level(s).`;
      } else {
        const whole = await getJson("graph");
        if (seq !== this.seq) return;
        this.draw(fromGraph(whole));
        $("#graph-summary").textContent = `${whole.tasks.length} task(s), ${whole.images.length} image(s) they are built FROM.`;
      }
      await this.colour();
    } catch (error) {
      reportError(error);
    }
  },
  // The wave whose members are drawn by their status in it: the one chosen, else the newest that
  // is still in progress (Active or Held); null when there is none.
  async wave() {
    if (this.waveId) return getJson(`waves/${encodeURIComponent(this.waveId)}`);
    const page = await getJson("waves", { top: 15 });
    const current = page.waves.find((w) => w.state === "Active" || w.state === "Held");
    return current ? getJson(`waves/${encodeURIComponent(current.wave_id)}`) : null;
  },
  async colour() {
    clearTimeout(this.timer);
    try {
      const [page, wave] = await Promise.all([getJson("runs", { top: 200 }), this.wave()]);
      this.statuses = new Map();
      const live = new Map();
      for (const run of page.runs) {
        live.set(run.run_id, run.status);
        if (run.task && !this.statuses.has(run.task)) this.statuses.set(run.task, run);
      }
      const members = new Map((wave?.members || []).map((m) => [m.task, m]));
      for (const node of document.querySelectorAll("#graph g.node.task")) {
        const member = members.get(node.dataset.task);
        const run = this.statuses.get(node.dataset.task);
        let status = run ? run.status : "none";
        let text = run ? `${run.run_id} ${run.status}` : "no recent run";
        if (member) {
          status = memberStatus(member, wave, live);
          text = `${member.run_id} ${status} in wave ${wave.wave_id} (level ${member.level})`;
          node.dataset.wave = wave.wave_id;
        } else {
          delete node.dataset.wave;
        }
        node.classList.toggle("in-wave", Boolean(member));
        node.dataset.status = status;
        node.querySelector("rect").setAttribute("class", `fill-${status}`);
        node.querySelector("title").textContent = `${node.dataset.task}: ${text}` +
          (node.dataset.note ? ` — ${node.dataset.note}` : "");
      }
      this.describeWave(wave, members);
    } catch (error) {
      reportError(error);
    }
    if (current === "graph" && !document.hidden) this.timer = setTimeout(() => this.colour(), GRAPH_EVERY_MS);
  },
  describeWave(wave, members) {
    const line = $("#graph-wave");
    $("#graph-wave-follow").hidden = !this.waveId;
    if (!wave) {
      line.textContent = "No wave in progress: tasks have the colour of their newest run.";
      return;
    }
    const shown = [...document.querySelectorAll("#graph g.node.task.in-wave")].length;
    const ended = wave.members.filter((m) => m.outcome).length;
    line.textContent = `${this.waveId ? "Wave" : "Newest wave in progress:"} ${wave.wave_id} (${wave.state}, ` +
      `${ended} of ${members.size} ended, from ${shortRoot(wave.root)}): ${shown} of its task(s) drawn here with a thick ` +
      "border and the colour of their run in it; other tasks have the colour of their newest run.";
  },
  draw(model) {
    const { nodes, edges } = model;
    const columns = [];
    for (const node of nodes) (columns[node.level] ||= []).push(node);
    // Order each column by the mean row of its parents (one barycentre pass keeps edges short).
    const row = new Map();
    columns.forEach((column = [], level) => {
      if (level > 0) {
        const weight = (n) => {
          const ups = edges.filter((e) => e.to === n.id && row.has(e.from)).map((e) => row.get(e.from));
          return ups.length ? ups.reduce((a, b) => a + b, 0) / ups.length : Infinity;
        };
        column.sort((a, b) => weight(a) - weight(b) || a.label.localeCompare(b.label));
      }
      column.forEach((n, i) => row.set(n.id, i));
    });
    const pos = new Map();
    let height = 0;
    columns.forEach((column = [], level) => column.forEach((n, i) => {
      const x = PAD + level * (NODE_W + COL_GAP), y = PAD + LABEL_H + i * (NODE_H + ROW_GAP);
      pos.set(n.id, { x, y });
      height = Math.max(height, y + NODE_H + PAD);
    }));
    const width = PAD * 2 + Math.max(1, columns.length) * (NODE_W + COL_GAP) - COL_GAP;
    const root = svg("svg", { width, height: Math.max(height, 120), role: "group",
                              "aria-label": "Dependency graph, left to right by level" });
    columns.forEach((_, level) => root.append(svg("text", { class: "level-label", x: PAD + level * (NODE_W + COL_GAP), y: PAD + 10 },
      level === 0 ? (this.focusImage ? "changed image" : "base images") : `level ${level}`)));
    for (const edge of edges) {
      const a = pos.get(edge.from), b = pos.get(edge.to);
      if (!a || !b) continue;
      const x1 = a.x + NODE_W, y1 = a.y + NODE_H / 2, x2 = b.x, y2 = b.y + NODE_H / 2;
      const bend = Math.max(30, (x2 - x1) / 2);
      root.append(svg("path", { class: `edge${edge.runtime ? "" : " build"}${edge.triggers ? "" : " quiet"}`,
        d: `M${x1},${y1} C${x1 + bend},${y1} ${x2 - bend},${y2} ${x2},${y2}` }));
    }
    for (const node of nodes) {
      const { x, y } = pos.get(node.id);
      const classes = ["node", node.kind, node.off ? "off" : "", node.root ? "root" : ""].join(" ").trim();
      const group = svg("g", { class: classes, transform: `translate(${x},${y})`, tabindex: "0",
                               "data-id": node.id, role: node.kind === "task" ? "button" : "img",
                               "aria-label": node.kind === "task" ? `task ${node.label}${node.note ? `, ${node.note}` : ""}` : `image ${node.label}` },
        svg("title", {}, node.kind === "task" ? node.label : node.id),
        svg("rect", { width: NODE_W, height: NODE_H, rx: node.kind === "task" ? 6 : 14, class: node.kind === "task" ? "fill-none" : "" }),
        svg("text", { x: 10, y: 19 }, fit(node.label)));
      if (node.kind === "task") {
        group.dataset.task = node.label;
        if (node.note) group.dataset.note = node.note;
        const open = () => { $("#run-filters [name=task]").value = node.label; showTab("runs", true); };
        group.addEventListener("click", open);
        group.addEventListener("keydown", (event) => { if (event.key === "Enter" || event.key === " ") { event.preventDefault(); open(); } });
      }
      root.append(group);
    }
    $("#graph").replaceChildren(root);
  },
};
views.graph = graph;

const taskId = (name) => `task:${name}`;

function note(task) {
  const parts = [];
  if (!task.rebuilds) parts.push(task.reason);
  if (task.cycle) parts.push("on a cycle");
  return parts.join("; ");
}

function fromGraph(whole) {
  const produced = new Map(whole.images.filter((i) => i.produced_by).map((i) => [i.image, i.produced_by]));
  const nodes = whole.images.filter((i) => !i.produced_by).map((i) => ({ id: i.image, label: i.image, kind: "image", level: 0 }));
  for (const task of whole.tasks) {
    nodes.push({ id: taskId(task.task), label: task.task, kind: "task", level: task.level, off: !task.trigger.enabled, note: note(task) });
  }
  const edges = whole.edges.map((e) => ({ from: produced.has(e.base) ? taskId(produced.get(e.base)) : e.base, to: taskId(e.task),
                                          runtime: e.runtime, triggers: e.triggers }));
  return { nodes, edges };
}

function fromImpact(impact) {
  const nodes = [{ id: impact.image, label: impact.image, kind: "image", level: 0, root: true }];
  const produced = new Map();
  for (const level of impact.levels) {
    for (const task of level.tasks) {
      nodes.push({ id: taskId(task.task), label: task.task, kind: "task", level: task.level, off: !task.rebuilds, note: note(task) });
      if (task.rebuilds) for (const output of task.outputs) if (!produced.has(output)) produced.set(output, task.task);
    }
  }
  const edges = impact.edges.map((e) => ({ from: e.base === impact.image ? e.base : taskId(produced.get(e.base)),
                                           to: taskId(e.task), runtime: e.runtime, triggers: e.triggers }));
  return { nodes, edges };
}

// ---- stale --------------------------------------------------------------------------------------
const stale = {
  loaded: false,
  enter() { if (!this.loaded) this.load(); },
  async load() {
    $("#stale-summary").textContent = "Checking every base…";
    try {
      const report = await getJson("stale");
      this.loaded = true;
      const stale = report.stale.filter((e) => e.state === "stale").length;
      $("#stale-summary").textContent = `${stale} stale and ${report.stale.length - stale} unknown of ` +
        `${report.checked.dependencies} task dependencies (${report.checked.tasks} tasks, ${report.checked.bases} bases), ` +
        `checked ${new Date().toLocaleTimeString()}.`;
      $("#stale tbody").replaceChildren(...report.stale.map((e) => el("tr", { "data-task": e.task },
        el("td", { text: e.task }),
        el("td", { class: "mono wrap", text: `${e.base}${e.runtime ? "" : " (build stage)"}` }),
        el("td", {}, el("span", { class: `badge ${e.state === "stale" ? "s-Failed" : "s-Queued"}`, text: e.state })),
        el("td", { title: e.since || "", text: formatTime(e.since) }),
        el("td", { class: "wrap" }, el("strong", { text: e.cause }), ` — ${e.reason}`),
        el("td", { class: "mono", title: `${e.built_digest} → ${e.current_digest || "?"} (${e.source || "unknown"})`,
                   text: `${shortDigest(e.built_digest)} → ${shortDigest(e.current_digest)}` }))));
    } catch (error) {
      $("#stale-summary").textContent = "";
      reportError(error);
    }
  },
};
views.stale = stale;

// ---- decisions ----------------------------------------------------------------------------------
const decisions = {
  enter() { this.load(); },
  async load() {
    const form = new FormData($("#decision-filters"));
    const task = form.get("task").trim();
    try {
      if (task) {
        const answer = await getJson(`tasks/${encodeURIComponent(task)}/decisions`, { top: 50 });
        this.render(answer.decisions.map((v) => ({ ...v, runs: v.run_id ? [`${v.run_id}${v.run_status ? ` (${v.run_status})` : ""}`] : [] })));
        $("#decisions-caption").textContent = `Why (not) ${task}: the decisions about its base images, with its own outcome`;
      } else {
        const image = form.get("image").trim();
        const answer = await getJson("decisions", { top: 50, image });
        this.render(answer.decisions);
        $("#decisions-caption").textContent = image ? `Decisions about ${image}, newest first` : "Recent decisions, newest first";
      }
    } catch (error) {
      reportError(error);
    }
  },
  render(list) {
    $("#decisions tbody").replaceChildren(...list.map((d) => el("tr", {},
      el("td", { title: d.time, text: formatTime(d.time) }),
      el("td", { class: "mono wrap", text: d.image || "—" }),
      el("td", { class: "mono", title: d.digest || "", text: shortDigest(d.digest) }),
      el("td", {}, el("strong", { text: d.outcome })),
      el("td", { class: "wrap", text: d.change ? `${d.reason} — base change: ${d.change}` : d.reason }),
      el("td", { class: "mono", text: (d.runs || []).join(", ") }))));
    if (!list.length) $("#decisions tbody").append(el("tr", {}, el("td", { colspan: "6", text: "No decisions." })));
  },
};
views.decisions = decisions;

// ---- waves -------------------------------------------------------------------------------------
// A wave's counts (the API's) name members by how their runs stand: an outcome, "Queued" for runs
// released (queued or building), "Waiting" for runs not released yet (their bases are not built, or
// there is no room); in a Held wave those are held. A member's status here is the same, with the
// live status of its run where it is known.
// The bar's order: ended runs first, then running and queued ones, then members still waiting.
const barOrder = () => [...WORDS.runStatuses, ...WORDS.memberStandings];

function memberStatus(member, wave, live = new Map()) {
  if (member.outcome) return member.outcome;
  const run = live.get(member.run_id);
  if (!member.released) {
    if (run === "Held" || (wave.state === "Held" && (!run || run === "Queued"))) return "Held";
    return run && run !== "Queued" ? run : "Waiting";
  }
  return run || "Queued";
}

function waveCounts(wave) {
  const counts = {};
  for (const [name, n] of Object.entries(wave.counts || {})) {
    const status = name === "Waiting" && wave.state === "Held" ? "Held" : name;
    counts[status] = (counts[status] || 0) + n;
  }
  return counts;
}

function progress(counts) {
  const total = Object.values(counts).reduce((a, b) => a + b, 0);
  const ended = Object.entries(counts).filter(([s]) => TERMINAL.has(s)).reduce((a, [, n]) => a + n, 0);
  const known = barOrder();
  const order = [...known, ...Object.keys(counts).filter((s) => !known.includes(s))];
  const parts = order.filter((s) => counts[s]).map((s) => `${counts[s]} ${s}`);
  const bar = el("span", { class: "bar", role: "img", "aria-label": `${ended} of ${total} ended: ${parts.join(", ") || "no members"}` });
  for (const status of order) {
    if (!counts[status]) continue;
    const segment = el("span", { class: `seg s-${status}`, title: `${counts[status]} ${status}` });
    segment.style.flexGrow = String(counts[status]); // CSSOM, which the page's CSP allows
    bar.append(segment);
  }
  return el("span", { class: "progress" }, bar,
    el("span", { class: "progress-text", text: `${ended}/${total} ended` + (parts.length ? ` · ${parts.join(", ")}` : "") }));
}

const waves = {
  timer: null,
  known: null,
  enter() { this.poll(); if (waveDetail.waveId) waveDetail.poll(); },
  leave() { clearTimeout(this.timer); this.timer = null; waveDetail.stop(); },
  async poll() {
    clearTimeout(this.timer);
    try {
      const page = await getJson("waves", { top: new FormData($("#wave-filters")).get("top") });
      this.render(page.waves);
      $("#waves-live").textContent = `updated ${new Date().toLocaleTimeString()}`;
      setStatus(`${page.waves.length} waves shown`);
    } catch (error) {
      reportError(error);
      if (error instanceof Unauthorized) return;
    }
    if (current === "waves" && !document.hidden) this.timer = setTimeout(() => this.poll(), WAVES_EVERY_MS);
  },
  render(list) {
    const body = $("#waves tbody");
    const rows = list.map((wave) => {
      const row = el("tr", { "data-wave-id": wave.wave_id, "data-state": wave.state, "data-root": wave.root },
        el("td", { class: "mono" }, el("button", { class: "link", type: "button", text: wave.wave_id,
          "aria-label": `Open wave ${wave.wave_id}`, onclick: () => waveDetail.open(wave.wave_id) })),
        el("td", { class: "state", title: wave.reason || "" }, badge(wave.state)),
        el("td", { class: "wide" }, progress(waveCounts(wave))),
        el("td", { class: "mono wrap", title: wave.root, text: shortRoot(wave.root) }),
        el("td", { class: "extra", text: String(wave.levels) }),
        el("td", { class: "extra", title: wave.created_at || "", text: formatTime(wave.created_at) }));
      if (this.known && !this.known.has(wave.wave_id)) row.classList.add("fresh");
      if (waveDetail.waveId === wave.wave_id) row.classList.add("selected");
      return row;
    });
    if (!list.length) rows.push(el("tr", {}, el("td", { colspan: "6", text: "No waves yet: a base push that rebuilds something starts one." })));
    const focused = document.activeElement?.closest?.("tr[data-wave-id]")?.dataset.waveId;
    body.replaceChildren(...rows);
    if (focused) body.querySelector(`tr[data-wave-id="${CSS.escape(focused)}"] button`)?.focus();
    this.known = new Set(list.map((w) => w.wave_id));
  },
};
views.waves = waves;

const waveDetail = {
  waveId: null,
  wave: null,
  timer: null,
  seq: 0,
  open(waveId) {
    this.waveId = waveId;
    this.wave = null;
    $("#wave-title").replaceChildren(`Wave ${waveId}`);
    $("#wave-facts").replaceChildren();
    $("#wave-members").replaceChildren();
    $("#wave-resume").hidden = $("#wave-cancel").hidden = true;
    $("#wave-detail").hidden = false;
    $("#view-waves .split").classList.add("open");
    for (const row of document.querySelectorAll("#waves tr[data-wave-id]")) {
      row.classList.toggle("selected", row.dataset.waveId === waveId);
    }
    $("#wave-title").focus();
    this.poll();
  },
  stop() { clearTimeout(this.timer); this.timer = null; this.seq++; },
  close() {
    this.stop();
    const waveId = this.waveId;
    this.waveId = null;
    $("#wave-detail").hidden = true;
    $("#view-waves .split").classList.remove("open");
    for (const row of document.querySelectorAll("#waves tr.selected")) row.classList.remove("selected");
    document.querySelector(`#waves tr[data-wave-id="${CSS.escape(waveId || "")}"] button`)?.focus();
  },
  async poll() {
    clearTimeout(this.timer);
    const waveId = this.waveId, seq = ++this.seq;
    if (!waveId) return;
    let settled = false;
    try {
      const wave = await getJson(`waves/${encodeURIComponent(waveId)}`);
      const live = await this.liveStatuses(wave);
      if (waveId !== this.waveId || seq !== this.seq) return;
      this.render(wave, live);
      settled = (wave.state === "Done" || wave.state === "Canceled") && wave.members.every((m) => m.outcome);
    } catch (error) {
      reportError(error);
      if (error instanceof Unauthorized) return;
    }
    // A wave that has ended changes no more; one in progress is followed.
    if (!settled && current === "waves" && !document.hidden) this.timer = setTimeout(() => this.poll(), WAVES_EVERY_MS);
  },
  // The live status of the runs of members that have not ended: those released first (they are
  // building, at most the wave's cap), then others, up to a bound; the rest are told by the wave.
  async liveStatuses(wave) {
    const open = wave.members.filter((m) => !m.outcome);
    open.sort((a, b) => Number(b.released) - Number(a.released));
    const live = new Map();
    const todo = open.slice(0, 40);
    const worker = async () => {
      while (todo.length) {
        const member = todo.shift();
        try {
          live.set(member.run_id, (await getJson(`runs/${encodeURIComponent(member.run_id)}`)).status);
        } catch (error) {
          if (error instanceof Unauthorized) throw error; // else: told by the wave
        }
      }
    };
    await Promise.all(Array.from({ length: 6 }, worker));
    return live;
  },
  render(wave, live) {
    this.wave = wave;
    const statuses = new Map(wave.members.map((m) => [m.task, memberStatus(m, wave, live)]));
    const counts = {};
    for (const status of statuses.values()) counts[status] = (counts[status] || 0) + 1;
    $("#wave-title").replaceChildren(`Wave ${wave.wave_id} `, badge(wave.state));
    const facts = [["Root", el("span", { class: "mono", text: wave.root })], ["Created", formatTime(wave.created_at)],
      ["Levels", String(wave.levels)], ["Members", progress(counts)]];
    // What the base push changed (identical content, metadata only, packages, os release changed).
    if (wave.base_change) facts.push(["Base change", el("span", { class: "base-change", text: wave.base_change })]);
    if (wave.reason) facts.push(["Reason", wave.reason]);
    $("#wave-facts").replaceChildren(...facts.flatMap(([name, value]) => [el("dt", { text: name }), el("dd", {}, value)]));
    $("#wave-resume").hidden = wave.state !== "Held";
    $("#wave-cancel").hidden = !(wave.state === "Active" || wave.state === "Held");
    const levels = new Map();
    for (const member of wave.members) {
      if (!levels.has(member.level)) levels.set(member.level, []);
      levels.get(member.level).push(member);
    }
    const focused = document.activeElement?.closest?.("#wave-members tr[data-task]")?.dataset.task;
    const byName = (a, b) => a.task.localeCompare(b.task, undefined, { numeric: true });
    const sections = [...levels.keys()].sort((a, b) => a - b).map((level) => {
      const members = levels.get(level).sort(byName);
      const ended = members.filter((m) => TERMINAL.has(statuses.get(m.task))).length;
      return el("section", { class: "level", "data-level": String(level), "aria-label": `Level ${level}` },
        el("h3", { text: `Level ${level} · ${members.length} task(s), ${ended} ended` }),
        el("table", {},
          el("thead", {}, el("tr", {}, el("th", { text: "Task" }), el("th", { text: "Run" }), el("th", { text: "Status" }),
                                     el("th", { text: "Waits for" }))),
          el("tbody", {}, ...members.map((m) => el("tr", { "data-task": m.task, "data-run-id": m.run_id, "data-status": statuses.get(m.task) },
            el("td", { class: "wrap", text: m.task }),
            el("td", { class: "mono" }, el("button", { class: "link", type: "button", text: m.run_id,
              "aria-label": `Open run ${m.run_id} of ${m.task} and its log`, onclick: () => this.openRun(m.run_id) })),
            el("td", { class: "status" }, badge(statuses.get(m.task))),
            el("td", { class: "wrap", text: m.waits_for.join(", ") || "—" }))))));
    });
    if (!sections.length) sections.push(el("p", { text: "This wave has no members." }));
    $("#wave-members").replaceChildren(...sections);
    if (focused) document.querySelector(`#wave-members tr[data-task="${CSS.escape(focused)}"] button`)?.focus();
  },
  openRun(runId) {
    showTab("runs");
    detail.open(runId);
  },
  showInGraph() {
    if (!this.wave) return;
    const base = /^(.+)@sha256:[0-9a-f]+$/.exec(this.wave.root);
    graph.waveId = this.wave.wave_id;
    graph.focusImage = base ? base[1] : "";
    $("#graph-form [name=image]").value = graph.focusImage;
    showTab("graph", true);
  },
  // Cancel and Resume ask first, in a modal dialog (Escape or "Keep it as it is" does nothing).
  confirm(action) {
    const wave = this.wave;
    if (!wave) return;
    const open = wave.members.filter((m) => !m.outcome).length;
    const texts = {
      cancel: [`Cancel wave ${wave.wave_id}?`,
        `Its ${open} run(s) that have not ended are canceled (a build in progress is stopped) and nothing more ` +
        `of this wave is built. This cannot be undone; a later push of the base starts a new wave.`, "Cancel the wave"],
      resume: [`Resume wave ${wave.wave_id}?`,
        `Its circuit breaker held it: ${wave.reason || "its first builds failed"}. Resuming releases its ${open} ` +
        "held run(s) level by level; the breaker counts afresh from here.", "Resume the wave"],
    };
    const [title, text, yes] = texts[action];
    const dialog = $("#wave-confirm");
    const opener = document.activeElement;
    $("#wave-confirm-title").textContent = title;
    $("#wave-confirm-text").textContent = text;
    $("#wave-confirm-yes").textContent = yes;
    $("#wave-confirm-yes").className = action === "cancel" ? "danger" : "";
    dialog.dataset.action = action;
    dialog.dataset.wave = wave.wave_id;
    dialog.returnValue = "";
    dialog.onclose = () => {
      const confirmed = dialog.returnValue === "yes";
      (opener && !opener.hidden && opener.isConnected ? opener : $("#wave-title")).focus();
      if (confirmed) this.act(action, dialog.dataset.wave);
    };
    dialog.showModal();
    $("#wave-confirm-no").focus(); // the safe choice is the default
  },
  async act(action, waveId) {
    try {
      const wave = await (await api(`waves/${encodeURIComponent(waveId)}/${action}`, {}, "POST")).json();
      setStatus(`Wave ${waveId} ${action === "cancel" ? "canceled" : "resumed"}: now ${wave.state}.`);
    } catch (error) {
      reportError(error);
    }
    if (this.waveId === waveId) this.poll();
    if (current === "waves") waves.poll();
  },
};

// ---- patch latency (GET /api/bases/latency) -----------------------------------------------------
const LAT_W = 920, LAT_LEFT = 360, LAT_RIGHT = 110, LAT_BAR = 18, LAT_GAP = 6, LAT_TOP = 30;

const latency = {
  asked: 0, // the newest request: an older answer arriving after it is not drawn over it
  enter() { this.load(); },
  params() {
    const form = new FormData($("#latency-form"));
    return { since: form.get("since"), slo: form.get("slo").trim() };
  },
  async load() {
    const asked = ++this.asked;
    $("#latency-summary").textContent = "Reading the waves of the period…";
    try {
      const report = await getJson("bases/latency", this.params());
      if (asked === this.asked) this.render(report);
    } catch (error) {
      if (asked !== this.asked) return;
      $("#latency-summary").textContent = "";
      reportError(error);
    }
  },
  render(report) {
    const o = report.overall;
    $("#latency-summary").textContent = `${o.events} base push(es) in the last ${formatDuration(report.since_seconds)}: ` +
      `p50 ${formatDuration(o.p50_seconds)}, p95 ${formatDuration(o.p95_seconds)}, worst ${formatDuration(o.worst_seconds)}; ` +
      `${o.missed_slo} missed the SLO of ${formatDuration(report.slo_seconds)}.`;
    const figures = (name, f) => el("tr", { "data-base": name },
      el("td", { class: "mono wrap", text: name }), el("td", { text: String(f.events) }),
      el("td", { text: String(f.closed) }), el("td", { class: "p50", text: formatDuration(f.p50_seconds) }),
      el("td", { class: "p95", text: formatDuration(f.p95_seconds) }),
      el("td", { class: "worst", text: formatDuration(f.worst_seconds) }),
      el("td", { class: "missed", text: String(f.missed_slo) }));
    $("#latency-figures tbody").replaceChildren(...report.bases.map((b) => figures(b.base, b)), figures("overall", o));
    $("#latency-chart").replaceChildren(this.chart(report));
    $("#latency-missed tbody").replaceChildren(...report.missed.map((m) => el("tr", { "data-task": m.task },
      el("td", { text: m.task }), el("td", { class: "mono wrap", text: m.base }),
      el("td", {}, el("span", { class: `badge ${m.why === "open" ? "s-Running" : "s-Failed"}`, text: m.why })),
      el("td", { text: formatDuration(m.exposure_seconds) }), el("td", { text: m.wave_id || "" }),
      el("td", { text: m.run_id || "" }), el("td", { class: "wrap", text: m.detail }))));
  },
  // One bar per base push, oldest first: from the push to its last dependent pushed (an open one:
  // until now), on one scale with the SLO drawn across.
  chart(report) {
    const events = report.events;
    const height = LAT_TOP + Math.max(1, events.length) * (LAT_BAR + LAT_GAP) + 10;
    const longest = Math.max(report.slo_seconds, ...events.map((e) => e.exposure_seconds || 0));
    const scale = (seconds) => (seconds / longest) * (LAT_W - LAT_LEFT - LAT_RIGHT);
    const chart = svg("svg", { width: LAT_W, height, viewBox: `0 0 ${LAT_W} ${height}`, role: "img",
                               "aria-label": `Patch latency of ${events.length} base push(es) against the SLO` });
    if (!events.length) {
      chart.append(svg("text", { x: 12, y: LAT_TOP + 12, class: "axis" }, "No base push in this period."));
    }
    events.forEach((e, i) => {
      const y = LAT_TOP + i * (LAT_BAR + LAT_GAP);
      const seconds = e.exposure_seconds;
      const unpushed = e.dependents.some((d) => TERMINAL.has(d.status) && !d.pushed);
      const state = e.open ? "Running" : (seconds > report.slo_seconds || unpushed ? "Failed" : "Succeeded");
      const root = `${e.base}@${e.digest}`;
      chart.append(
        svg("text", { x: LAT_LEFT - 8, y: y + LAT_BAR - 5, "text-anchor": "end" }, fit(shortRoot(root), 46)),
        svg("rect", { class: `latency s-${state}`, x: LAT_LEFT, y, width: Math.max(2, scale(seconds)), height: LAT_BAR,
                      "data-root": root, "data-wave-id": e.wave_id, "data-seconds": String(seconds), "data-state": state },
            svg("title", {}, `${root} (wave ${e.wave_id}): pushed ${e.pushed}, last dependent pushed ` +
                `${e.last_pushed || "—"}; ${e.dependents.length} dependent(s)`)),
        svg("text", { x: LAT_LEFT + scale(seconds) + 6, y: y + LAT_BAR - 5, class: "axis" },
            formatDuration(seconds) + (e.open ? " so far" : "")));
    });
    const x = LAT_LEFT + scale(report.slo_seconds);
    chart.append(svg("line", { class: "slo", x1: x, x2: x, y1: LAT_TOP - 6, y2: height - 4 }),
                 svg("text", { x, y: LAT_TOP - 12, "text-anchor": "middle", class: "slo-label" },
                     `SLO ${formatDuration(report.slo_seconds)}`));
    return chart;
  },
};
views.latency = latency;

// ---- start ---------------------------------------------------------------------------------------
async function loadWords() {
  const response = await fetch(new URL("vocabulary.json", location.href), { cache: "no-store" });
  if (!response.ok) throw new Error(`HTTP ${response.status} from vocabulary.json`);
  Object.assign(WORDS, await response.json());
  for (const status of WORDS.terminal) TERMINAL.add(status);
  const select = $("#run-filters [name=status]");
  for (const status of WORDS.runStatuses) select.append(el("option", { text: status }));
}

async function start() {
  try {
    await loadWords();
  } catch (error) {
    setStatus(`The dashboard could not load its status words: ${error.message}`, true);
    return;
  }
  const fragment = new URLSearchParams(location.hash.slice(1));
  if (fragment.get("key")) {
    key = fragment.get("key");
    sessionStorage.setItem("bt-key", key);
    history.replaceState(null, "", location.pathname + location.search); // keep the key out of sight
  }
  $("#key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    key = $("#key-input").value.trim();
    $("#key-input").value = "";
    sessionStorage.setItem("bt-key", key);
    setStatus("Key set.");
    views[current]?.enter?.();
  });
  $("#key-forget").addEventListener("click", () => {
    key = "";
    sessionStorage.removeItem("bt-key");
    setStatus("Key forgotten.");
  });
  $("#run-filters").addEventListener("submit", (event) => { event.preventDefault(); runs.known = new Set(); runs.poll(); });
  $("#run-close").addEventListener("click", () => detail.close());
  $("#graph-form").addEventListener("submit", (event) => {
    event.preventDefault();
    graph.focusImage = new FormData(event.target).get("image").trim();
    graph.load();
  });
  $("#graph-all").addEventListener("click", () => { graph.focusImage = ""; $("#graph-form [name=image]").value = ""; graph.load(); });
  $("#stale-refresh").addEventListener("click", () => stale.load());
  $("#latency-form").addEventListener("submit", (event) => { event.preventDefault(); latency.load(); });
  $("#decision-filters").addEventListener("submit", (event) => { event.preventDefault(); decisions.load(); });
  $("#wave-filters").addEventListener("submit", (event) => { event.preventDefault(); waves.known = new Set(); waves.poll(); });
  $("#wave-close").addEventListener("click", () => waveDetail.close());
  $("#wave-cancel").addEventListener("click", () => waveDetail.confirm("cancel"));
  $("#wave-resume").addEventListener("click", () => waveDetail.confirm("resume"));
  $("#wave-graph").addEventListener("click", () => waveDetail.showInGraph());
  $("#wave-confirm-no").addEventListener("click", () => $("#wave-confirm").close("no"));
  $("#wave-confirm-yes").addEventListener("click", () => $("#wave-confirm").close("yes"));
  $("#graph-wave-follow").addEventListener("click", () => { graph.waveId = ""; graph.colour(); });
  document.addEventListener("visibilitychange", () => { if (!document.hidden) views[current]?.enter?.(); });
  document.addEventListener("keydown", (event) => {
    if (event.key !== "Escape" || $("#wave-confirm").open) return; // the dialog closes itself
    if (current === "waves" && waveDetail.waveId) waveDetail.close();
    else if (current === "runs" && detail.runId) detail.close();
  });
  setUpTabs();
  showTab("runs");
}

start();

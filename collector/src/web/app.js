// The collector's page: fetches the JSON API and draws incidents first, then three tables.
//
// Everything shown comes from agents and may be hostile. Text is only ever put in the page as
// text (`append` of a string, `textContent`), never parsed as HTML; links are built from
// encodeURIComponent and start with "?", so they stay on this page.
"use strict";

const SEVERITIES = ["info", "low", "medium", "high", "critical"];
const FILTERS = ["workload", "host", "min_severity", "kind", "since"];
const REFRESH_MS = 30000;
// Incidents drawn: each comes with all its deviations, so the latest 50 keep the answer small.
const INCIDENTS_SHOWN = 50;

const params = new URLSearchParams(location.search);
const opened = new Set(params.getAll("open"));

/// An element with attributes and children (strings become text nodes).
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (name === "class") node.className = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value);
  }
  for (const child of children) {
    if (child !== null && child !== undefined && child !== false) node.append(child);
  }
  return node;
}

/// The filters of this page's query string, with `changes` applied, as a query string.
function query(changes) {
  const q = new URLSearchParams();
  for (const name of FILTERS) {
    const value = name in (changes || {}) ? changes[name] : params.get(name);
    if (value) q.set(name, value);
  }
  return q.toString();
}

function workloadLink(id) {
  return el("a", { href: "?" + query({ workload: id }), class: "workload", title: "only " + id }, id);
}

function severityBadge(severity, text) {
  const known = SEVERITIES.includes(severity) ? severity : "unspecified";
  return el("span", { class: "sev sev-" + known }, text === undefined ? severity : text);
}

/// "2025-01-02 03:04:05" from an RFC 3339 UTC time.
function shortTime(rfc3339) {
  return String(rfc3339 || "").slice(0, 19).replace("T", " ");
}

function millis(rfc3339) {
  return Date.parse(String(rfc3339 || "").slice(0, 23) + "Z");
}

/// "12 s ago", "3 min ago", "5 h ago", "2 d ago".
function ago(rfc3339) {
  const seconds = Math.round((Date.now() - millis(rfc3339)) / 1000);
  if (!Number.isFinite(seconds)) return "";
  if (seconds < 0) return "in the future";
  if (seconds < 90) return seconds + " s ago";
  if (seconds < 90 * 60) return Math.round(seconds / 60) + " min ago";
  if (seconds < 36 * 3600) return Math.round(seconds / 3600) + " h ago";
  return Math.round(seconds / 86400) + " d ago";
}

function timeCell(rfc3339) {
  return el("td", { class: "time", title: rfc3339 + " (" + ago(rfc3339) + ")" }, shortTime(rfc3339));
}

/// The API token, when the collector has a query_token_file: from a `#token=…` fragment (never
/// sent to the server; kept for this tab in sessionStorage and removed from the address bar), else
/// asked once after a 401.
function apiToken(ask) {
  const fragment = new URLSearchParams(location.hash.slice(1)).get("token");
  if (fragment) {
    sessionStorage.setItem("collector-token", fragment);
    history.replaceState(null, "", location.pathname + location.search);
  }
  let token = sessionStorage.getItem("collector-token");
  if (!token && ask) {
    token = prompt("This collector's API needs a query token (one from its query_token_file):");
    if (token) sessionStorage.setItem("collector-token", token);
  }
  return token;
}

async function fetchJson(path) {
  const get = (token) => {
    const headers = { Accept: "application/json" };
    if (token) headers.Authorization = "Bearer " + token;
    return fetch(path, { headers });
  };
  const used = apiToken(false);
  let response = await get(used);
  if (response.status === 401) {
    if (used && sessionStorage.getItem("collector-token") === used) {
      sessionStorage.removeItem("collector-token");
    }
    const token = apiToken(true);
    if (token) response = await get(token);
  }
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(path.split("?")[0] + ": " + (body.error || response.status));
  return body;
}

function fill(id, rows, empty, columns) {
  const body = document.getElementById(id);
  if (rows.length === 0) {
    rows = [el("tr", { class: "empty" }, el("td", { colspan: String(columns) }, empty))];
  }
  body.replaceChildren(...rows);
}

function setCount(id, shown, limit) {
  document.getElementById(id).textContent =
    "(" + shown + (limit && shown >= limit ? ", the newest " + limit : "") + ")";
}

// ---- deviations ----------------------------------------------------------------------------

function field(name, ...value) {
  return [el("dt", null, name), el("dd", null, ...value)];
}

function code(text) {
  return el("code", null, String(text));
}

/// The evidence of one deviation: process, ancestry, what was new, signals, identity.
function details(d) {
  const p = d.process || {};
  const argv = (p.argv || []).map((arg) => code(arg));
  if (p.argv_truncated) argv.push(el("span", { class: "muted" }, "… (cut)"));
  // Ancestry is parent first; show it root first, ending with the process itself.
  const chain = [...(p.ancestry || [])].reverse().concat([{ pid: p.pid, executable: p.executable, self: true }]);
  const ancestry = el("ol", { class: "ancestry" },
    ...chain.map((a) => el("li", { class: a.self ? "self" : "" },
      code(a.executable || "?"), el("span", { class: "muted" }, " pid " + a.pid))));
  const novelty = d.novelty && typeof d.novelty === "object" ? Object.entries(d.novelty) : [];
  const signals = (d.signals || []).map((s) => el("span", { class: "signal" }, s));
  // Framework tags are "scheme:id" (mitre:T1552.001, owasp-nhi:NHI2, nist-csf:DE.CM-01).
  const tags = (d.tags || []).map((t) => el("span", { class: "signal tag" }, t));
  // Earlier deviations of the incident that raised this one, and samples of an aggregate.
  const related = (d.related || []).map((e) =>
    el("li", null, el("span", { class: "kind" }, e.kind + " "), e.summary,
      el("span", { class: "muted" }, " " + shortTime(e.time) + " UTC")));
  const samples = (d.samples || []).map((s) => el("li", null, s));
  // What a new executable read as it loaded (libraries, locale, config): evidence, not rows.
  const loaded = d.loaded && d.loaded.total ? [
    el("ol", { class: "samples" }, ...(d.loaded.paths || []).map((path) => el("li", null, code(path)))),
    el("span", { class: "muted" }, d.loaded.total + (d.loaded.total === 1 ? " read" : " reads") + " in all"),
  ] : [];
  return el("div", { class: "details" },
    el("div", null,
      el("h3", null, "Process"),
      el("dl", null,
        ...field("pid", String(p.pid), el("span", { class: "muted" }, "  parent " + p.ppid)),
        ...field("executable", code(p.executable || "")),
        ...field("argv", ...(argv.length ? argv : [el("span", { class: "muted" }, "none")])),
        ...field("uid", String(p.uid) + (p.euid !== p.uid ? " (effective " + p.euid + ")" : "")))),
    el("div", null, el("h3", null, "Ancestry"), ancestry),
    el("div", null,
      el("h3", null, "What was new"),
      el("dl", { class: "novelty" },
        ...novelty.flatMap(([name, value]) => field(name.replace(/_/g, " "), code(value))),
        ...field("signals", ...(signals.length ? signals : [el("span", { class: "muted" }, "none")])),
        ...field("score", String(d.score || 0) + " / 100"),
        ...field("tags", ...(tags.length ? tags : [el("span", { class: "muted" }, "none")])),
        ...(d.count > 1 ? field("count", String(d.count)) : []),
        ...(related.length ? field("evidence", el("ol", { class: "related" }, ...related)) : []),
        ...(samples.length ? field("samples", el("ol", { class: "samples" }, ...samples)) : []),
        ...(loaded.length ? field("loaded", ...loaded) : []))),
    el("div", null,
      el("h3", null, "Identity"),
      el("dl", null,
        ...field("id", code(d.id)),
        ...field("host", d.host),
        ...field("run", d.run_id || "—"),
        ...field("incident", d.incident_id ? code(d.incident_id.slice(0, 16)) : "—"),
        ...field("agent", d.agent_id),
        ...field("time", shortTime(d.time) + " UTC"),
        ...field("received", shortTime(d.received) + " UTC"))));
}

/// A deviation's row and its (hidden until selected) evidence row. In an incident the workload
/// column is left out: the incident names it.
function deviationRows(d, withWorkload = true) {
  const columns = withWorkload ? 6 : 5;
  const detail = el("tr", { class: "detail" }, el("td", { colspan: String(columns) }, details(d)));
  const row = el("tr", {
    class: "deviation sev-row-" + d.severity, tabindex: "0", "aria-expanded": "false",
    title: "select to show the evidence", "data-row": d.id + "-" + d.severity,
  },
  timeCell(d.time),
  el("td", null, severityBadge(d.severity)),
  withWorkload ? el("td", null, workloadLink(d.workload)) : null,
  el("td", { class: "kind" }, d.kind),
  el("td", { class: "summary" }, d.summary,
    d.count > 1 ? el("span", { class: "muted" }, " ×" + d.count) : null),
  el("td", { class: "host" }, d.host));
  // Which rows are open survives the periodic refresh.
  const toggle = (open) => {
    detail.hidden = !open;
    row.setAttribute("aria-expanded", String(open));
    if (open) opened.add(d.id);
    else opened.delete(d.id);
  };
  toggle(opened.has(d.id));
  onSelect(row, (event) => {
    if (event.target.closest("a")) return;
    toggle(detail.hidden);
  });
  return [row, detail];
}

/// Calls `action` when `node` is clicked, or focused and Enter or Space is pressed.
function onSelect(node, action) {
  node.addEventListener("click", action);
  node.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") {
      event.preventDefault();
      action(event);
    }
  });
}

function drawDeviations(data) {
  const list = data.deviations || [];
  setCount("deviations-count", list.length, data.limit);
  fill("deviations-body", list.flatMap((d) => deviationRows(d)), "No deviations stored" +
    (query() ? " matching these filters." : " yet."), 6);
  return list;
}

// ---- incidents, workloads, agents ----------------------------------------------------------

// Incidents whose low and info deviations were shown survive the periodic refresh.
const expanded = new Set();

function incidentKey(i) {
  return [i.workload, i.run_id, i.incident].join("\u0000");
}

/// "run 42", "incident 3f2a…", or "no run".
function scope(i) {
  if (i.run_id) return "run " + i.run_id;
  if (i.incident) return "incident " + i.incident.slice(0, 12);
  return "no run";
}

/// One incident: a header line, its story, and its deviations oldest first, the low and info
/// ones hidden behind one line that shows them.
function incident(i) {
  const key = incidentKey(i);
  const entries = i.entries || [];
  const quiet = (d) => d.severity !== "medium" && d.severity !== "high" && d.severity !== "critical";
  const rows = [];
  const hiddenRows = [];
  for (const d of entries) {
    const [row, detail] = deviationRows(d, false);
    if (quiet(d)) {
      row.classList.add("collapsible");
      hiddenRows.push([row, detail]);
    }
    rows.push(row, detail);
  }
  const collapsed = (i.collapsed || {});
  const hiddenCount = (collapsed.low || 0) + (collapsed.info || 0);
  const body = el("tbody", null, ...rows);
  if (hiddenCount > 0) {
    const label = el("td", { colspan: "5" });
    const toggleRow = el("tr", { class: "collapsed-line", tabindex: "0", "aria-expanded": "false" }, label);
    const show = (open) => {
      for (const [row, detail] of hiddenRows) {
        row.hidden = !open;
        // A collapsed row's evidence goes with it.
        if (!open) detail.hidden = true;
      }
      toggleRow.setAttribute("aria-expanded", String(open));
      label.textContent = (open ? "▾ hide " : "▸ ") + (collapsed.low || 0) + " low, " +
        (collapsed.info || 0) + " info" + (open ? "" : " collapsed: select to show");
      if (open) expanded.add(key);
      else expanded.delete(key);
    };
    show(expanded.has(key));
    onSelect(toggleRow, () => show(toggleRow.getAttribute("aria-expanded") !== "true"));
    body.append(toggleRow);
  }
  if (i.entries_left_out > 0) {
    body.append(el("tr", { class: "left-out muted" }, el("td", { colspan: "5" },
      "… showing the newest " + entries.length + " of " + i.deviations + " deviations")));
  }
  const story = (i.steps || []).length
    ? el("p", { class: "story" }, i.story)
    : el("p", { class: "story muted" }, "(no story)");
  return el("article", { class: "incident sev-row-" + i.max_severity, "data-key": key },
    el("div", { class: "incident-head" },
      severityBadge(i.max_severity),
      workloadLink(i.workload),
      el("span", { class: "scope" }, scope(i)),
      el("span", { class: "muted" }, "on " + i.host + (i.hosts > 1 ? " +" + (i.hosts - 1) : "")),
      el("span", { class: "muted time", title: i.first + " … " + i.last },
        shortTime(i.first) + " … " + shortTime(i.last).slice(11) + " UTC (" + ago(i.last) + ")"),
      el("span", { class: "muted" }, i.deviations + (i.deviations === 1 ? " deviation" : " deviations"))),
    story,
    el("table", { class: "incident-deviations" }, body));
}

function drawIncidents(data) {
  const list = data.incidents || [];
  setCount("incidents-count", list.length, data.limit);
  const box = document.getElementById("incidents-list");
  if (list.length === 0) {
    box.replaceChildren(el("p", { class: "empty muted" }, "No incidents" +
      (query() ? " matching these filters." : " yet: nothing new was reported.")));
  } else {
    box.replaceChildren(...list.map(incident));
  }
  return list;
}

function drawWorkloads(data) {
  const list = data.workloads || [];
  setCount("workloads-count", list.length, data.limit);
  const ids = document.getElementById("workload-ids");
  ids.replaceChildren(...list.map((w) => el("option", { value: w.id })));
  fill("workloads-body", list.map((w) => el("tr", null,
    el("td", null, workloadLink(w.id)),
    el("td", null, w.kind),
    el("td", { class: "num" }, String(w.deviations)),
    el("td", { class: "badges" }, ...[...SEVERITIES].reverse()
      .filter((s) => (w.by_severity || {})[s] > 0)
      .map((s) => severityBadge(s, w.by_severity[s] + " " + s))),
    el("td", { class: "num" }, String(w.runs)),
    el("td", { class: "num" }, String(w.hosts)),
    timeCell(w.first),
    timeCell(w.last))), "No workload has reported a deviation.", 8);
}

/// The latest agent events (silent, back, dropped), as one sentence.
function silenceSummary(data) {
  const events = (data.events || []).filter((e) => e.event !== "first-contact").slice(0, 5);
  if (events.length === 0) return "";
  return " Latest agent events: " +
    events.map((e) => e.agent_id + " " + e.event + " (" + e.detail + ", " + ago(e.time) + ")").join("; ") + ".";
}

function drawAgents(data) {
  const list = data.agents || [];
  setCount("agents-count", list.length, data.limit);
  document.getElementById("agents-connected").textContent =
    "Agent streams open now: " + data.connected + ". Last contact is the last batch or " +
    "heartbeat received (agents send one every 30 s by default); an agent not heard from " +
    "for the collector's agent_silence is marked silent: a stopped sensor is itself a signal." +
    silenceSummary(data);
  fill("agents-body", list.map((a) => el("tr", null,
    el("td", null, el("span", { class: "agent" }, a.agent_id),
      a.silent ? el("span", { class: "sev sev-high", title: "no contact for agent_silence" }, " silent") : null,
      a.dropped ? el("span", { class: "sev sev-medium", title: "deviations the agent reported it dropped" },
        " " + a.dropped + " dropped") : null),
    el("td", { class: "num" }, String(a.batches)),
    el("td", { class: "num" }, String(a.stored)),
    el("td", { class: "num" }, String(a.duplicates)),
    timeCell(a.first_contact),
    el("td", { class: "time", title: a.last_contact },
      shortTime(a.last_contact), el("span", { class: "muted" }, "  " + ago(a.last_contact))))),
    "No agent has delivered a batch yet.", 6);
}

function drawOverview(deviations, incidents, workloads, agents) {
  const counts = {};
  for (const d of deviations) counts[d.severity] = (counts[d.severity] || 0) + 1;
  const card = (label, value, cls) =>
    el("div", { class: "card " + (cls || "") }, el("div", { class: "value" }, String(value)), el("div", null, label));
  document.getElementById("overview").replaceChildren(
    card("critical", counts.critical || 0, counts.critical ? "sev-critical" : ""),
    card("high", counts.high || 0, counts.high ? "sev-high" : ""),
    card("incidents", incidents.length),
    card("recent deviations", deviations.length),
    card("workloads", workloads.length),
    card("agents", agents.length));
}

// ---- the page ------------------------------------------------------------------------------

function showFilters() {
  document.getElementById("f-workload").value = params.get("workload") || "";
  document.getElementById("f-host").value = params.get("host") || "";
  document.getElementById("f-severity").value = params.get("min_severity") || "";
  document.getElementById("f-clear").hidden = !query();
}

async function refresh() {
  const status = document.getElementById("status");
  const q = query();
  const suffix = q ? "?" + q : "";
  try {
    const [incidents, deviations, workloads, agents] = await Promise.all([
      fetchJson("/api/incidents?" + (q ? q + "&" : "") + "limit=" + INCIDENTS_SHOWN),
      fetchJson("/api/deviations" + suffix),
      fetchJson("/api/workloads" + suffix),
      fetchJson("/api/agents"),
    ]);
    const told = drawIncidents(incidents);
    const shown = drawDeviations(deviations);
    drawWorkloads(workloads);
    drawAgents(agents);
    drawOverview(shown, told, workloads.workloads || [], agents.agents || []);
    status.className = "";
    const active = FILTERS.filter((name) => params.get(name))
      .map((name) => name.replace("_", " ") + " " + params.get(name));
    status.textContent = (active.length ? "Filtered by " + active.join(", ") + ". " : "") +
      "Updated " + new Date().toISOString().slice(11, 19) + " UTC; refreshes every " +
      REFRESH_MS / 1000 + " s.";
  } catch (error) {
    status.className = "error";
    status.textContent = "Cannot load: " + error.message;
  }
}

showFilters();
refresh();
setInterval(refresh, REFRESH_MS);

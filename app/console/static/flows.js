// Flows: the list (filters by status, module and parent; paging with the API's cursor) and a
// flow's page (status, waits, output, result, the event timeline), which refreshes every second
// until the flow is finished.

import { ApiError, api, seg } from "./api.js";
import {
  TERMINAL, ago, badge, dateTime, duration, emptyState, facts, flowLink, h, hashFor,
  moduleLink, pageHead, section, table, timeCell,
} from "./dom.js";
import { categoryOf, timeline } from "./timeline.js";

const STATUSES = ["running", "waiting", "completed", "failed", "cancelled"];
const PAGE = 50;
const EVENTS_PAGE = 500;
const EVENTS_MAX = 5000;

/** One line about what a waiting flow waits for. */
function waitingText(w) {
  if (!w) return "";
  if (w.op === "signal") return `signal “${w.signal}”${w.until ? ` until ${dateTime(w.until)}` : ""}`;
  if (w.op === "sleep") return `timer until ${dateTime(w.until)}`;
  const tasks = w.tasks || [];
  const what = tasks.length === 1 ? `task ${tasks[0]}` : `${tasks.length} tasks`;
  return `${what}${w.until ? ` until ${dateTime(w.until)}` : ""}`;
}

// ---- the list ---------------------------------------------------------------------------

function filterForm(q) {
  const status = h("select", { id: "f-status", name: "status" },
    h("option", { value: "" }, "any status"),
    STATUSES.map((st) => h("option", { value: st, selected: q.status === st }, st)));
  const module = h("input", { id: "f-module", name: "module", value: q.module || "",
                              placeholder: "sha256:…", spellcheck: "false", class: "mono" });
  const parent = h("input", { id: "f-parent", name: "parent", value: q.parent || "",
                              placeholder: "parent flow id", spellcheck: "false", class: "mono" });
  return h("form", { class: "filters", role: "search", "aria-label": "Filter flows",
    onsubmit: (e) => {
      e.preventDefault();
      location.hash = hashFor("/flows", { status: status.value, module: module.value.trim(),
                                          parent: parent.value.trim(), limit: q.limit });
    } },
  h("div", { class: "field" }, h("label", { for: "f-status" }, "Status"), status),
  h("div", { class: "field grow" }, h("label", { for: "f-module" }, "Module"), module),
  h("div", { class: "field grow" }, h("label", { for: "f-parent" }, "Parent"), parent),
  h("div", { class: "field actions" }, h("button", { type: "submit" }, "Apply"),
    (q.status || q.module || q.parent)
      ? h("a", { class: "button secondary", href: "#/flows" }, "Clear") : null));
}

function flowRows(items) {
  return items.map((f) => [
    flowLink(f.id),
    badge(f.status),
    moduleLink(f.module),
    f.parent_id ? flowLink(f.parent_id) : "—",
    f.waiting ? waitingText(f.waiting) : f.error ? h("span", { class: "error-text" }, f.error) : "",
    f.exit_code ?? "—",
    timeCell(f.created_at),
    timeCell(f.finished_at || f.updated_at),
  ]);
}

function flowTable(data, q) {
  if (!data.items.length) {
    const filtered = q.status || q.module || q.parent || q.cursor;
    return filtered
      ? emptyState("No flows match these filters.", h("a", { href: "#/flows" }, "Show all flows"))
      : emptyState("No flows yet.", "Start one from a module’s page (",
        h("a", { href: "#/modules" }, "Modules"), "), or with ",
        h("code", {}, "dwasm flows start FILE.wasm"), ".");
  }
  const filters = { status: q.status, module: q.module, parent: q.parent, limit: q.limit };
  return h("div", {},
    table(["Flow", "Status", "Module", "Parent", "Waiting on / error", "Exit", "Created",
           "Last change"], flowRows(data.items), { "data-testid": "flows-table" }),
    h("nav", { class: "pager", "aria-label": "Pages" },
      h("span", { class: "muted" }, `${data.items.length} flow${data.items.length === 1 ? "" : "s"}`
        + (q.cursor ? " (older page)" : "")),
      h("span", { class: "pager-links" },
        q.cursor ? h("a", { href: hashFor("/flows", filters), class: "button secondary" },
          "← Newest") : null,
        data.next_cursor ? h("a", { href: hashFor("/flows", { ...filters, cursor: data.next_cursor }),
                                    class: "button secondary", rel: "next" }, "Older →") : null)));
}

export async function list(ctx) {
  const q = ctx.query;
  ctx.setTitle("Flows");
  const load = () => api("v1/flows", { signal: ctx.signal, query: {
    status: q.status, module: q.module, parent: q.parent, cursor: q.cursor,
    limit: q.limit || PAGE } });
  const body = h("div", { class: "card flush" });
  let loaded = false;
  try {
    body.append(flowTable(await load(), q));
    loaded = true;
  } catch (err) {
    if (!(err instanceof ApiError) || err.status === 401 || err.status === 403) throw err;
    ctx.fail(err, "Cannot list flows"); // a bad filter: keep the form, show the problem
    body.append(emptyState("No flows to show.", "Fix the filters above."));
  }
  if (loaded && !q.cursor) {
    // The newest page follows new flows and status changes.
    ctx.every(3000, async () => { body.replaceChildren(flowTable(await load(), q)); });
  }
  return h("div", {},
    pageHead("Flows", q.parent ? h("span", { class: "muted" }, "children of ", flowLink(q.parent))
      : null),
    h("div", { class: "card" }, filterForm(q)),
    body);
}

// ---- one flow ---------------------------------------------------------------------------

/** The flow's events, fetched page by page; later updates re-read only the last page. */
class EventLog {
  constructor(flowId) {
    this.flowId = flowId;
    this.pages = []; // [{cursor, items}]
    this.truncated = false;
  }

  get items() {
    return this.pages.flatMap((p) => p.items);
  }

  async update(signal) {
    const pages = this.pages.slice(0, Math.max(this.pages.length - 1, 0));
    let cursor = this.pages.length ? this.pages[this.pages.length - 1].cursor : null;
    let count = pages.reduce((n, p) => n + p.items.length, 0);
    this.truncated = false;
    for (;;) {
      const page = await api(`v1/flows/${seg(this.flowId)}/events`,
        { signal, query: { limit: EVENTS_PAGE, cursor } });
      pages.push({ cursor, items: page.items });
      count += page.items.length;
      if (!page.next_cursor) break;
      if (count >= EVENTS_MAX) { this.truncated = true; break; }
      cursor = page.next_cursor;
    }
    this.pages = pages;
  }
}

// A page re-rendered every second must not carry megabytes of output: the pane shows the
// end of a long stream (where a running flow's news is) and says so.
const OUTPUT_SHOWN = 256 * 1024;

function outputPane(name, text, b64) {
  const empty = !text;
  const size = empty ? 0 : new Blob([text]).size;
  const cut = !empty && text.length > OUTPUT_SHOWN;
  const shown = cut ? text.slice(-OUTPUT_SHOWN) : text;
  return h("div", { class: "output" },
    h("div", { class: "output-head" }, h("h3", {}, name),
      h("span", { class: "muted" }, empty ? "empty" : `${size.toLocaleString("en")} bytes`),
      cut ? h("span", { class: "tag tag-warn", "data-testid": `${name}-cut`,
                        title: "GET /v1/flows/{id} returns all of it" },
        `showing the last ${OUTPUT_SHOWN / 1024} KiB`) : null,
      b64 ? h("span", { class: "tag tag-warn", title: "the API also returns the exact bytes as "
        + `${name}_base64` }, "not UTF-8: shown with replacement characters") : null),
    h("pre", { class: empty ? "output-body empty-output" : "output-body", "data-testid": name,
               "data-keep-scroll": name }, empty ? "(nothing)" : shown));
}

function resultCard(flow) {
  if (flow.status === "completed") {
    return h("div", { class: "callout callout-ok", "data-testid": "result" },
      h("strong", {}, "Completed"), ` with exit code ${flow.exit_code ?? 0}`,
      flow.finished_at ? ` after ${duration(new Date(flow.finished_at) - new Date(flow.created_at))}`
        : "", ".");
  }
  if (flow.status === "failed" || flow.status === "cancelled") {
    return h("div", { class: "callout callout-bad", "data-testid": "result" },
      h("strong", {}, flow.status === "failed" ? "Failed" : "Cancelled"),
      flow.exit_code !== null && flow.exit_code !== undefined
        ? ` with exit code ${flow.exit_code}` : "",
      flow.error ? h("pre", { class: "error-pre" }, flow.error) : ".");
  }
  if (flow.status === "waiting" && flow.waiting) {
    const w = flow.waiting;
    return h("div", { class: "callout callout-wait", "data-testid": "waiting" },
      h("strong", {}, "Waiting"), " for ", waitingText(w), ".",
      w.tasks && w.tasks.length > 1
        ? h("div", { class: "task-list mono" }, w.tasks.join("  ")) : null,
      w.until ? h("div", { class: "muted" }, `wakes ${ago(w.until)}`) : null);
  }
  return h("div", { class: "callout callout-run", "data-testid": "result" },
    h("strong", {}, "Running"), flow.error ? h("pre", { class: "error-pre" }, flow.error) : "");
}

function eventsTable(events, t0, openState) {
  const rows = events.map((ev) => h("tr", { id: `ev-${ev.id}` },
    h("td", { class: "mono" }, `#${ev.id}`),
    h("td", { title: `${dateTime(ev.at)} (${ev.at})`, class: "mono nowrap" },
      `+${duration(new Date(ev.at).getTime() - t0)}`),
    h("td", {}, h("span", { class: `tag cat-${categoryOf(ev.type)}` }, ev.type)),
    h("td", {}, h("code", { class: "event-data" },
      ev.data && Object.keys(ev.data).length ? JSON.stringify(ev.data) : ""))));
  const details = h("details", { class: "events", open: openState.open,
    ontoggle: () => { openState.open = details.open; } },
  h("summary", {}, `All ${events.length} events`),
  h("div", { class: "table-wrap" }, h("table", { "data-testid": "events-table" },
    h("thead", {}, h("tr", {}, ["#", "When", "Type", "Data"].map((x) => h("th", {}, x)))),
    h("tbody", {}, rows))));
  return details;
}

/** The timeline fills the page's content column (the view container is always in place). */
function timelineWidth() {
  const view = document.getElementById("view");
  if (!view) return 900;
  const style = getComputedStyle(view);
  const inner = view.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
  return Math.max(inner - 42, 520); // the card's padding and border
}

function signalForm(flow, ctx, redraw) {
  const name = h("input", { id: "sig-name", required: true, spellcheck: "false", class: "mono",
                            value: flow.waiting && flow.waiting.signal ? flow.waiting.signal : "" });
  const payload = h("input", { id: "sig-payload", spellcheck: "false", class: "mono",
                               placeholder: "text (optional)" });
  return h("form", { class: "inline-form", "aria-label": "Send a signal",
    onsubmit: async (e) => {
      e.preventDefault();
      try {
        await api(`v1/flows/${seg(flow.id)}/signals/${seg(name.value.trim())}`, {
          method: "POST", body: payload.value, contentType: "text/plain; charset=utf-8" });
        ctx.notice(`Signal “${name.value.trim()}” sent.`);
        payload.value = "";
        await redraw();
      } catch (err) {
        ctx.fail(err, "Signal not sent");
      }
    } },
  h("label", { for: "sig-name" }, "Signal"), name,
  h("label", { for: "sig-payload" }, "Payload"), payload,
  h("button", { type: "submit", class: "secondary" }, "Send"));
}

export async function detail(ctx) {
  const id = ctx.params[0];
  ctx.setTitle(`Flow ${id}`);
  let flow = await api(`v1/flows/${seg(id)}`, { signal: ctx.signal });
  const log = new EventLog(id);
  await log.update(ctx.signal);
  const root = h("div", { class: "flow-page" });
  const openState = { open: null };
  let live = !TERMINAL.has(flow.status);
  let signals = null;

  const refresh = async () => {
    flow = await api(`v1/flows/${seg(id)}`, { signal: ctx.signal });
    await log.update(ctx.signal);
    live = !TERMINAL.has(flow.status);
    draw();
    return live;
  };

  const cancel = async () => {
    if (!window.confirm(`Cancel flow ${id}, its pending tasks and its children?`)) return;
    try {
      flow = await api(`v1/flows/${seg(id)}/cancel`, { method: "POST", signal: ctx.signal });
      await refresh();
    } catch (err) {
      ctx.fail(err, "Not cancelled");
    }
  };

  function draw() {
    const events = log.items;
    const t0 = new Date(flow.created_at).getTime();
    if (openState.open === null) openState.open = events.length <= 12;
    const end = flow.finished_at ? new Date(flow.finished_at) : new Date();
    const head = pageHead(h("span", { class: "mono" }, flow.id),
      badge(flow.status, { "data-testid": "flow-status" }),
      live ? h("span", { class: "live", title: "refreshing every second" }, h("span", { class: "dot" }),
        "live") : null,
      h("span", { class: "spacer" }),
      live ? h("button", { type: "button", class: "danger", onclick: cancel }, "Cancel flow") : null);
    const summary = section("Summary", null, facts([
      ["Module", moduleLink(flow.module, 16)],
      ["Parent", flow.parent_id ? flowLink(flow.parent_id) : "—"],
      ["Children", h("a", { href: hashFor("/flows", { parent: flow.id }) }, "flows it started")],
      ["Exit code", flow.exit_code ?? "—"],
      ["Checkpoint", `#${flow.checkpoint_seq}`],
      ["Created", h("span", { title: flow.created_at }, dateTime(flow.created_at))],
      ["Finished", flow.finished_at ? h("span", { title: flow.finished_at }, dateTime(flow.finished_at)) : "—"],
      [flow.finished_at ? "Run time" : "Running for", duration(end - new Date(flow.created_at))],
      ["Arguments", flow.args.length ? h("code", {}, flow.args.map((a) => JSON.stringify(a)).join(" ")) : "none"],
      ["Environment", Object.keys(flow.env).length
        ? h("code", {}, Object.entries(flow.env).map(([k, v]) => `${k}=${v}`).join(" ")) : "none"],
    ]));
    const output = section("Output", null, h("div", { class: "outputs" },
      outputPane("stdout", flow.stdout, flow.stdout_base64),
      outputPane("stderr", flow.stderr, flow.stderr_base64)));
    const history = section("History",
      h("span", { class: "muted" }, `${events.length} event${events.length === 1 ? "" : "s"}`
        + (log.truncated ? ` (the first ${events.length} only)` : "")),
      events.length
        ? h("div", { class: "timeline-wrap", "data-testid": "timeline" },
          timeline(flow, events, { width: timelineWidth(),
            onPick: (ev) => {
              openState.open = true;
              const details = root.querySelector("details.events");
              if (details) details.open = true;
              const row = document.getElementById(`ev-${ev.id}`);
              if (row) {
                row.scrollIntoView({ block: "center", behavior: "smooth" });
                row.classList.add("flash");
                setTimeout(() => row.classList.remove("flash"), 1500);
              }
            } }))
        : emptyState("No events yet."),
      events.length ? eventsTable(events, t0, openState) : null);
    // Built once, so that a redraw does not wipe what is being typed into it.
    if (live && !signals) signals = section("Send a signal", null, signalForm(flow, ctx, refresh));

    // Keep the output panes' scroll positions (and follow their end) across redraws.
    const scrolls = {};
    for (const el of root.querySelectorAll("[data-keep-scroll]")) {
      scrolls[el.dataset.keepScroll] = {
        top: el.scrollTop, atEnd: el.scrollTop + el.clientHeight >= el.scrollHeight - 4 };
    }
    root.replaceChildren(h("p", { class: "crumbs" }, h("a", { href: "#/flows" }, "Flows"), " / ",
      flow.id), head, resultCard(flow), summary, output, history, ...(live ? [signals] : []));
    for (const el of root.querySelectorAll("[data-keep-scroll]")) {
      const was = scrolls[el.dataset.keepScroll];
      if (was) el.scrollTop = was.atEnd ? el.scrollHeight : was.top;
    }
  }

  draw();
  let resizing = null;
  const onResize = () => {
    clearTimeout(resizing);
    resizing = setTimeout(draw, 150);
  };
  window.addEventListener("resize", onResize);
  ctx.signal.addEventListener("abort", () => window.removeEventListener("resize", onResize));
  if (live) ctx.every(1000, refresh);
  return root;
}

// Queues: every queue with a backlog or a policy of its own (GET /v1/queues), refreshed every
// two seconds while shown.

import { api } from "./api.js";
import { ago, dateTime, emptyState, h, pageHead } from "./dom.js";

function seconds(value) {
  return value >= 1 || value === 0 ? `${+value.toFixed(2)} s` : `${Math.round(value * 1000)} ms`;
}

function backlog(queue, largest) {
  const total = queue.pending + queue.leased;
  const part = (n, cls) => (n ? h("span", { class: `bar-part ${cls}`, dataset: { share: n } }) : null);
  const bar = h("span", { class: "bar", title: `${queue.pending} pending, ${queue.leased} leased` },
    part(queue.leased, "bar-leased"), part(queue.pending, "bar-pending"));
  // Widths go through the CSSOM (allowed by the page's Content-Security-Policy).
  for (const el of bar.children) el.style.width = `${(100 * el.dataset.share) / Math.max(largest, 1)}%`;
  return h("div", { class: "backlog" }, bar,
    h("span", { class: "backlog-text" }, h("strong", {}, String(queue.pending)), " pending · ",
      h("strong", {}, String(queue.leased)), " leased", total ? "" : " (idle)"));
}

function queueTable(items) {
  if (!items.length) {
    return emptyState("No queue has work waiting or a policy of its own.",
      "A queue appears here when a flow schedules a task on it.");
  }
  const largest = Math.max(...items.map((q) => q.pending + q.leased));
  const overridden = (q, field, text) => (q.overrides.includes(field)
    ? h("span", { class: "overridden", title: "set for this queue" }, text) : text);
  return h("div", { class: "table-wrap" }, h("table", { "data-testid": "queues-table" },
    h("thead", {}, h("tr", {}, ["Queue", "Backlog", "Oldest pending", "Attempts", "Backoff",
      "Lease timeout"].map((x) => h("th", { scope: "col" }, x)))),
    h("tbody", {}, items.map((q) => h("tr", { dataset: { queue: q.name } },
      h("td", {}, h("code", {}, q.name)),
      h("td", {}, backlog(q, largest)),
      h("td", {}, q.oldest_pending_at
        ? h("time", { datetime: q.oldest_pending_at, title: dateTime(q.oldest_pending_at) },
          ago(q.oldest_pending_at)) : "—"),
      h("td", {}, overridden(q, "max_attempts", String(q.policy.max_attempts))),
      h("td", {}, overridden(q, "backoff_initial", seconds(q.policy.backoff_initial)), " × ",
        overridden(q, "backoff_factor", String(q.policy.backoff_factor)), " ≤ ",
        overridden(q, "backoff_max", seconds(q.policy.backoff_max))),
      h("td", {}, overridden(q, "lease_timeout", seconds(q.policy.lease_timeout))))))));
}

export async function list(ctx) {
  ctx.setTitle("Queues");
  const load = () => api("v1/queues", { signal: ctx.signal });
  const body = h("div", { class: "card flush" }, queueTable((await load()).items));
  ctx.every(2000, async () => { body.replaceChildren(queueTable((await load()).items)); });
  return h("div", {}, pageHead("Queues", h("span", { class: "muted" },
    "tasks waiting for workers; underlined values are this queue’s own policy")), body);
}

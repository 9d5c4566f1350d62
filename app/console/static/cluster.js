// The cluster as the node serving the console sees it (GET /v1/cluster): members, the shard
// map drawn as a grid of shards coloured by owner, and the map's version. On a single node
// (no etcd) there is no map: the node owns every shard.

import { api } from "./api.js";
import { badge, dateTime, emptyState, facts, h, pageHead, section, table } from "./dom.js";

const PALETTE = 8;

function yesNo(value) {
  return value === undefined || value === null ? undefined : value ? "yes" : "no";
}

function shardGrid(view) {
  const owners = view.assignments
    ? [...new Set(view.assignments.map((a) => a.owner).filter(Boolean))].sort()
    : [view.node_id];
  const colour = (owner) => (owner ? `owner-${owners.indexOf(owner) % PALETTE}` : "owner-none");
  const count = {};
  const cells = [];
  for (let shard = 0; shard < view.shards; shard += 1) {
    const a = view.assignments ? view.assignments[shard] || {} : { owner: view.node_id };
    const owner = a.owner || null;
    count[owner || "unassigned"] = (count[owner || "unassigned"] || 0) + 1;
    const handoff = a.next_owner ? ` → ${a.next_owner} (handoff)` : "";
    cells.push(h("span", { class: `shard ${colour(owner)}${a.next_owner ? " handoff" : ""}`,
                           title: `shard ${shard}: ${owner || "unassigned"}`
                             + `${a.epoch !== undefined ? ` · epoch ${a.epoch}` : ""}${handoff}` }));
  }
  const legend = h("ul", { class: "legend" }, Object.entries(count).map(([owner, n]) =>
    h("li", {}, h("span", { class: `swatch ${colour(owner === "unassigned" ? null : owner)}` }),
      h("code", {}, owner), ` ${n} shard${n === 1 ? "" : "s"}`)));
  const size = view.shards <= 64 ? " shard-grid-large" : "";
  return h("div", {}, h("div", { class: `shard-grid${size}`, "data-testid": "shard-grid",
                                 role: "img", "aria-label": `${view.shards} shards by owner` }, cells),
    legend);
}

function memberTable(view) {
  const members = Object.values(view.members || {});
  if (!members.length) {
    return emptyState(view.mode === "single" ? "Single node: no cluster membership."
      : "No members in the shard map yet.",
    view.mode === "single" ? "Nodes form a cluster when they share etcd (DWASM_ETCD)." : "");
  }
  const owned = {};
  for (const a of view.assignments || []) if (a.owner) owned[a.owner] = (owned[a.owner] || 0) + 1;
  return table(["Node", "URL", "State", "Shards", "Incarnation", "Started"], members.map((m) => [
    h("code", {}, m.node_id, m.node_id === view.node_id ? " (this node)" : ""),
    m.url ? h("code", {}, m.url) : "—",
    badge(m.state || "ready"),
    String(owned[m.node_id] || 0),
    h("code", {}, m.incarnation || "—"),
    m.started_at ? dateTime(new Date(m.started_at * 1000).toISOString()) : "—",
  ]), { "data-testid": "members-table" });
}

function draw(view) {
  const held = Array.isArray(view.held) ? view.held.length : view.held;
  return h("div", {},
    section("This node", badge(view.ready ? "ready" : "not-ready"), facts([
      ["Mode", view.mode === "single" ? "single node" : "cluster (etcd)"],
      ["Node", h("code", {}, view.node_id)],
      ["Incarnation", view.incarnation ? h("code", {}, view.incarnation) : undefined],
      ["Topology version", h("strong", { "data-testid": "map-version" }, String(view.version))],
      ["Shards", String(view.shards)],
      ["Held here", held === undefined ? undefined : String(held)],
      ["Coordinator", yesNo(view.leader)],
      ["Draining", yesNo(view.draining)],
      ["etcd connected", yesNo(view.etcd_connected)],
    ])),
    section("Members", null, memberTable(view)),
    section("Shard map", h("span", { class: "muted" }, view.assignments
      ? `version ${view.version}` : "single node: every shard is this node’s"), shardGrid(view)));
}

export async function view(ctx) {
  ctx.setTitle("Cluster");
  const load = () => api("v1/cluster", { signal: ctx.signal });
  const body = h("div", {}, draw(await load()));
  ctx.every(3000, async () => { body.replaceChildren(draw(await load())); });
  return h("div", {}, pageHead("Cluster"), body);
}

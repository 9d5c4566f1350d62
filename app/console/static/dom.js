// Small DOM and formatting helpers. Everything the console shows is built with these: text goes
// in as text nodes, never as HTML, so data from the API cannot inject markup.

const SVG_NS = "http://www.w3.org/2000/svg";

function build(el, attrs, children) {
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2), value);
    } else if (key === "dataset") {
      Object.assign(el.dataset, value);
    } else {
      el.setAttribute(key, value === true ? "" : String(value));
    }
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** An HTML element: h("a", {href: "#/flows", class: "x"}, "text", otherNode, [more]). */
export function h(tag, attrs, ...children) {
  return build(document.createElement(tag), attrs, children);
}

/** An SVG element, same calling convention as h(). */
export function s(tag, attrs, ...children) {
  return build(document.createElementNS(SVG_NS, tag), attrs, children);
}

export const TERMINAL = new Set(["completed", "failed", "cancelled"]);

/** A status badge; the class gives its colour (style.css, .badge-<status>). */
export function badge(status, attrs = {}) {
  return h("span", { class: `badge badge-${status}`, ...attrs }, status);
}

export function emptyState(title, ...hint) {
  return h("div", { class: "empty" }, h("p", { class: "empty-title" }, title),
    hint.length ? h("p", { class: "empty-hint" }, ...hint) : null);
}

/** sha256:abcdef0123… shortened for tables; the full id is in the title. */
export function shortId(id, keep = 12) {
  if (!id) return "";
  const [scheme, rest] = id.includes(":") ? id.split(":", 2) : ["", id];
  const short = rest.length > keep ? `${rest.slice(0, keep)}…` : rest;
  return scheme ? `${scheme}:${short}` : short;
}

export function flowLink(id) {
  return id ? h("a", { href: `#/flows/${encodeURIComponent(id)}`, class: "mono" }, id) : "—";
}

export function moduleLink(id, keep = 12) {
  return id ? h("a", { href: `#/modules/${encodeURIComponent(id)}`, class: "mono", title: id },
    shortId(id, keep)) : "—";
}

export function bytes(n) {
  if (n === null || n === undefined) return "—";
  const units = ["B", "KiB", "MiB", "GiB"];
  let value = n;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${n} B` : `${value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`;
}

/** A duration in milliseconds, short: 850 ms, 2.4 s, 3 min 5 s, 2 h 10 min, 3 d 4 h. */
export function duration(ms) {
  if (ms === null || ms === undefined || Number.isNaN(ms)) return "—";
  const abs = Math.abs(ms);
  if (abs < 1000) return `${Math.round(ms)} ms`;
  if (abs < 60_000) return `${(ms / 1000).toFixed(abs < 10_000 ? 2 : 1)} s`;
  const sec = Math.round(abs / 1000);
  const sign = ms < 0 ? "-" : "";
  if (sec < 3600) return `${sign}${Math.floor(sec / 60)} min ${sec % 60} s`;
  if (sec < 86400) return `${sign}${Math.floor(sec / 3600)} h ${Math.floor((sec % 3600) / 60)} min`;
  return `${sign}${Math.floor(sec / 86400)} d ${Math.floor((sec % 86400) / 3600)} h`;
}

const pad = (n, width = 2) => String(n).padStart(width, "0");

/** Local date and time, to the second: 2024-05-01 14:03:22. */
export function dateTime(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** "3 s ago", "in 2 min"; the exact time is in the element's title. */
export function ago(iso, now = Date.now()) {
  if (!iso) return "—";
  const diff = now - new Date(iso).getTime();
  if (Number.isNaN(diff)) return iso;
  if (Math.abs(diff) < 1000) return "just now";
  return diff > 0 ? `${duration(diff)} ago` : `in ${duration(-diff)}`;
}

export function timeCell(iso) {
  return iso ? h("time", { datetime: iso, title: `${dateTime(iso)} (${iso})` }, ago(iso)) : "—";
}

/** A definition list from [label, value] pairs; pairs with value undefined are left out. */
export function facts(pairs) {
  const dl = h("dl", { class: "facts" });
  for (const [label, value] of pairs) {
    if (value === undefined) continue;
    dl.append(h("div", { class: "fact" }, h("dt", {}, label),
      h("dd", {}, value === null || value === "" ? "—" : value)));
  }
  return dl;
}

/** A table from column headers and rows of cells (strings or nodes). */
export function table(headers, rows, attrs = {}) {
  return h("div", { class: "table-wrap" },
    h("table", attrs,
      h("thead", {}, h("tr", {}, headers.map((x) => h("th", { scope: "col" }, x)))),
      h("tbody", {}, rows.map((cells) => h("tr", {}, cells.map((c) => h("td", {}, c)))))));
}

/** A section with a heading and an optional element at the heading's right. */
export function section(title, aside, ...content) {
  return h("section", { class: "card" },
    h("div", { class: "card-head" }, h("h2", {}, title), aside || null),
    ...content);
}

/** The page heading row: title, then any extra nodes (badges, buttons). */
export function pageHead(title, ...extra) {
  return h("div", { class: "page-head" }, h("h1", {}, title), ...extra);
}

/** Hash-route query string helpers: "#/flows?status=x" → {status: "x"} and back. */
export function hashFor(path, query = {}) {
  const params = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) if (v) params.set(k, v);
  const qs = params.toString();
  return `#${path}${qs ? `?${qs}` : ""}`;
}

// Modules: the list (with an upload form) and a module's page (imports, exports, its flows,
// and a form that starts a flow of it).

import { api, seg } from "./api.js";
import {
  bytes, emptyState, facts, h, hashFor, moduleLink, pageHead, section, table, timeCell,
} from "./dom.js";

const PAGE = 50;

function uploadForm(ctx) {
  const file = h("input", { id: "upload-file", type: "file", accept: ".wasm,application/wasm",
                            required: true });
  return h("form", { class: "inline-form", "aria-label": "Upload a module",
    onsubmit: async (e) => {
      e.preventDefault();
      const chosen = file.files[0];
      if (!chosen) return;
      try {
        const mod = await api("v1/modules", { method: "POST", body: chosen,
                                              contentType: "application/wasm" });
        location.hash = `#/modules/${encodeURIComponent(mod.id)}`;
      } catch (err) {
        ctx.fail(err, "Upload failed");
      }
    } },
  h("label", { for: "upload-file" }, "Upload a module"), file,
  h("button", { type: "submit" }, "Upload"));
}

function exportNames(mod) {
  const funcs = mod.exports.filter((x) => x.kind === "func").map((x) => x.name);
  const shown = funcs.slice(0, 4).join(", ");
  return funcs.length > 4 ? `${shown} +${funcs.length - 4}` : shown || "—";
}

export async function list(ctx) {
  ctx.setTitle("Modules");
  const q = ctx.query;
  const data = await api("v1/modules", { signal: ctx.signal, query: { limit: PAGE, cursor: q.cursor } });
  const body = data.items.length
    ? h("div", {},
      table(["Module", "Size", "Exported functions", "Imports", "Uploaded"],
        data.items.map((m) => [moduleLink(m.id, 16), bytes(m.size), exportNames(m),
          String(m.imports.length), timeCell(m.created_at)]), { "data-testid": "modules-table" }),
      h("nav", { class: "pager", "aria-label": "Pages" },
        h("span", { class: "muted" }, `${data.items.length} module${data.items.length === 1 ? "" : "s"}`),
        h("span", { class: "pager-links" },
          q.cursor ? h("a", { href: "#/modules", class: "button secondary" }, "← Newest") : null,
          data.next_cursor ? h("a", { href: hashFor("/modules", { cursor: data.next_cursor }),
                                      class: "button secondary", rel: "next" }, "Older →") : null)))
    : emptyState("No modules yet.", "Upload a WebAssembly module above, or with ",
      h("code", {}, "dwasm modules upload FILE.wasm"), ".");
  return h("div", {}, pageHead("Modules"), h("div", { class: "card" }, uploadForm(ctx)),
    h("div", { class: "card flush" }, body));
}

/** Lines of a textarea, without the empty trailing one. */
function lines(text) {
  const out = text.split(/\r?\n/);
  while (out.length && out[out.length - 1] === "") out.pop();
  return out;
}

function startForm(mod, ctx) {
  const args = h("textarea", { id: "start-args", rows: 3, spellcheck: "false", class: "mono",
                               placeholder: "one argument per line" });
  const stdin = h("textarea", { id: "start-stdin", rows: 3, spellcheck: "false", class: "mono",
                                placeholder: "text the flow reads from stdin" });
  const env = h("textarea", { id: "start-env", rows: 3, spellcheck: "false", class: "mono",
                              placeholder: "KEY=VALUE, one per line" });
  const flowId = h("input", { id: "start-id", spellcheck: "false", class: "mono",
                              placeholder: "optional: makes the start idempotent" });
  const problem = h("p", { class: "form-error", role: "alert", hidden: true });
  return h("form", { class: "start-form", "aria-label": "Start a flow",
    onsubmit: async (e) => {
      e.preventDefault();
      problem.hidden = true;
      const environment = {};
      for (const line of lines(env.value)) {
        const at = line.indexOf("=");
        if (at <= 0) {
          problem.textContent = `Environment: “${line}” is not KEY=VALUE.`;
          problem.hidden = false;
          return;
        }
        environment[line.slice(0, at)] = line.slice(at + 1);
      }
      const request = { module: mod.id, args: lines(args.value), env: environment,
                        stdin: stdin.value };
      if (flowId.value.trim()) request.id = flowId.value.trim();
      try {
        const flow = await api("v1/flows", { method: "POST", json: request });
        location.hash = `#/flows/${encodeURIComponent(flow.id)}`;
      } catch (err) {
        ctx.fail(err, "Flow not started");
      }
    } },
  h("div", { class: "grid2" },
    h("div", { class: "field" }, h("label", { for: "start-args" }, "Arguments"), args),
    h("div", { class: "field" }, h("label", { for: "start-stdin" }, "stdin"), stdin),
    h("div", { class: "field" }, h("label", { for: "start-env" }, "Environment"), env),
    h("div", { class: "field" }, h("label", { for: "start-id" }, "Flow id"), flowId)),
  problem,
  h("div", { class: "row" }, h("button", { type: "submit" }, "Start flow")));
}

export async function detail(ctx) {
  const id = ctx.params[0];
  ctx.setTitle(`Module ${id}`);
  const mod = await api(`v1/modules/${seg(id)}`, { signal: ctx.signal });
  const kinds = (items) => items.length ? null : emptyState("None.");
  return h("div", {},
    h("p", { class: "crumbs" }, h("a", { href: "#/modules" }, "Modules"), " / ", moduleLink(mod.id)),
    pageHead(h("span", { class: "mono break" }, mod.id)),
    section("Summary", h("a", { href: hashFor("/flows", { module: mod.id }) }, "Flows of this module →"),
      facts([["Size", bytes(mod.size)], ["Uploaded", timeCell(mod.created_at)],
        ["Imports", String(mod.imports.length)], ["Exports", String(mod.exports.length)]])),
    section("Start a flow", null, startForm(mod, ctx)),
    h("div", { class: "grid2" },
      section("Imports", null, kinds(mod.imports) || table(["Module", "Name", "Kind"],
        mod.imports.map((i) => [h("code", {}, i.module), h("code", {}, i.name), i.kind]))),
      section("Exports", null, kinds(mod.exports) || table(["Name", "Kind"],
        mod.exports.map((x) => [h("code", {}, x.name), x.kind])))));
}

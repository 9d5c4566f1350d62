// The console's shell: hash routing (#/flows, #/flows/<id>, #/modules, #/modules/<id>,
// #/queues, #/cluster), the error banner, the token prompt and the polling of live views.
// Each view is an async function (ctx) -> Node; see the ctx built in render().

import { ApiError, clearToken, getToken, setToken } from "./api.js";
import { h, emptyState } from "./dom.js";
import * as cluster from "./cluster.js";
import * as flows from "./flows.js";
import * as modules from "./modules.js";
import * as queues from "./queues.js";

const ROUTES = [
  [/^\/flows\/(.+)$/, flows.detail, "flows"],
  [/^\/flows\/?$/, flows.list, "flows"],
  [/^\/modules\/(.+)$/, modules.detail, "modules"],
  [/^\/modules\/?$/, modules.list, "modules"],
  [/^\/queues\/?$/, queues.list, "queues"],
  [/^\/cluster\/?$/, cluster.view, "cluster"],
];

const main = document.getElementById("view");
const banner = document.getElementById("banner");
const session = document.getElementById("session");
let current = null;

function parseHash() {
  const raw = location.hash.replace(/^#/, "") || "/flows";
  const [path, qs = ""] = raw.split("?", 2);
  return { path, query: Object.fromEntries(new URLSearchParams(qs)) };
}

// ---- the banner: problems (RFC 9457) and notices ----------------------------------------

function problemNode(err, prefix) {
  const p = err instanceof ApiError ? err.problem : { title: String(err.message || err) };
  const status = err instanceof ApiError && err.status ? `${err.status}` : null;
  const issues = Array.isArray(p.errors) ? p.errors : [];
  return [
    h("div", { class: "banner-title" },
      status ? h("span", { class: "banner-status" }, status) : null,
      prefix ? `${prefix}: ` : "", p.title || "Error"),
    p.detail ? h("div", { class: "banner-detail", "data-testid": "error-detail" }, p.detail) : null,
    // One issue is already the detail; several are listed.
    issues.length > 1 ? h("ul", { class: "banner-issues" }, issues.map((i) =>
      h("li", {}, h("code", {}, (i.loc || []).join(".")), " ", i.msg || ""))) : null,
  ];
}

function showError(err, { prefix, actions = [] } = {}) {
  banner.dataset.source = "";
  banner.className = "banner banner-error";
  banner.replaceChildren(h("div", { class: "banner-body" }, problemNode(err, prefix)),
    h("div", { class: "banner-actions" }, ...actions,
      h("button", { type: "button", class: "ghost", "aria-label": "Dismiss",
                    onclick: clearBanner }, "×")));
  banner.hidden = false;
}

function showNotice(text) {
  banner.dataset.source = "";
  banner.className = "banner banner-notice";
  banner.replaceChildren(h("div", { class: "banner-body" }, text),
    h("div", { class: "banner-actions" }, h("button", { type: "button", class: "ghost",
      "aria-label": "Dismiss", onclick: clearBanner }, "×")));
  banner.hidden = false;
}

function clearBanner() {
  banner.hidden = true;
  banner.replaceChildren();
}

// ---- the token --------------------------------------------------------------------------

function renderSession() {
  session.replaceChildren(getToken()
    ? h("span", { class: "session-on" }, h("span", { class: "dot" }), "token set ",
      h("button", { type: "button", class: "link", onclick: () => { clearToken(); render(); } },
        "forget"))
    : "");
}

function tokenForm(err) {
  const rejected = getToken() !== "";
  const input = h("input", { type: "password", id: "token-input", name: "token", required: true,
                             autocomplete: "off", spellcheck: "false",
                             placeholder: "the token from DWASM_API_TOKENS" });
  const form = h("form", { class: "token-form", "data-testid": "token-form",
    onsubmit: (e) => {
      e.preventDefault();
      setToken(input.value.trim());
      render();
    } },
  h("h1", {}, "API token needed"),
  h("p", {}, "This dwasm node answers only requests with a bearer token. The console keeps it ",
    "in this browser tab (sessionStorage) and sends it as ",
    h("code", {}, "Authorization: Bearer <token>")),
  rejected ? h("p", { class: "form-error", role: "alert" },
    "The token was not accepted: ", err.problem.detail || err.title) : null,
  h("label", { for: "token-input" }, "API token"),
  h("div", { class: "row" }, input, h("button", { type: "submit" }, "Use token")));
  if (rejected) clearToken();
  renderSession();
  queueMicrotask(() => input.focus());
  return h("div", { class: "narrow" }, h("section", { class: "card" }, form));
}

function forbiddenActions() {
  return [h("button", { type: "button", class: "secondary",
    onclick: () => { clearToken(); render(); } }, "Use another token")];
}

/** How a view's failure is shown: the token prompt for 401, else the banner. */
function failed(err, ctx, prefix) {
  if (err && err.name === "AbortError") return;
  if (err instanceof ApiError && err.status === 401) {
    main.replaceChildren(tokenForm(err));
    return;
  }
  showError(err, { prefix, actions: err instanceof ApiError && err.status === 403
    ? forbiddenActions() : [] });
  if (ctx && !ctx.rendered) {
    main.replaceChildren(emptyState("This page could not be loaded.",
      h("button", { type: "button", class: "secondary", onclick: render }, "Try again")));
  }
}

// ---- routing ----------------------------------------------------------------------------

async function render() {
  if (current) current.controller.abort();
  const controller = new AbortController();
  const { path, query } = parseHash();
  const found = ROUTES.find(([re]) => re.test(path));
  clearBanner();
  renderSession();
  for (const link of document.querySelectorAll("nav.main-nav a")) {
    link.classList.toggle("active", found && link.dataset.section === found[2]);
  }
  if (!found) {
    main.replaceChildren(emptyState(`No page ${path}`, h("a", { href: "#/flows" }, "Go to flows")));
    return;
  }
  const [re, view] = found;
  const params = re.exec(path).slice(1).map(decodeURIComponent);
  const ctx = {
    params, query, signal: controller.signal, rendered: false,
    /** Runs fn every `ms` until it returns false or the view is left; failures show. */
    every(ms, fn) {
      let stopped = false;
      const tick = async () => {
        if (controller.signal.aborted || stopped) return;
        if (!document.hidden) {
          try {
            if ((await fn()) === false) stopped = true;
            if (banner.dataset.source === "poll") clearBanner();
          } catch (err) {
            if (controller.signal.aborted || err.name === "AbortError") return;
            if (err instanceof ApiError && err.status === 401) { failed(err, ctx); return; }
            showError(err, { prefix: "Refresh failed" });
            banner.dataset.source = "poll";
          }
        }
        if (!controller.signal.aborted && !stopped) setTimeout(tick, ms);
      };
      setTimeout(tick, ms);
    },
    /** A failed action (form, button): banner, or the token prompt. */
    fail(err, prefix) { failed(err, ctx, prefix); },
    notice: showNotice,
    setTitle(title) { document.title = `${title} · dwasm`; },
  };
  current = { controller };
  banner.dataset.source = "";
  document.body.classList.add("loading");
  try {
    const node = await view(ctx);
    if (controller.signal.aborted) return;
    ctx.rendered = true;
    main.replaceChildren(node);
  } catch (err) {
    if (!controller.signal.aborted) failed(err, ctx);
  } finally {
    if (current && current.controller === controller) document.body.classList.remove("loading");
  }
}

window.addEventListener("hashchange", render);
if (!location.hash || location.hash === "#" || location.hash === "#/") {
  history.replaceState(null, "", "#/flows");
}
render();

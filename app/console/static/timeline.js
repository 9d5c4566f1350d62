// A flow's history drawn as an SVG timeline: time runs left to right from the flow's start to
// its end (or now, while it runs), with long idle stretches cut short (axis.js); the top lane
// shows its status over time (from the checkpoint events), then one lane per event type with a
// marker per event. Hovering a marker shows the event; clicking it jumps to its row in the
// events table.

import { brokenScale, offsetText, stretchTicks } from "./axis.js";
import { TERMINAL, duration, s } from "./dom.js";

const CATEGORY = {
  started: "life", exit: "ok", checkpoint: "ckpt",
  failed: "bad", task_failed: "bad", child_failed: "bad", cancelled: "bad",
  task_retry: "warn",
  task_scheduled: "task", task_completed: "task", task_delivered: "task",
  child_started: "child", child_delivered: "child",
  signal: "signal", signal_received: "signal",
  timer: "timer",
};

export const categoryOf = (type) => CATEGORY[type] || "other";

const CHAR_W = 6.7; // pixels per character of an 11px monospace label (style.css)
let patterns = 0; // ids of the hatch patterns, unique in the page

/** An offset from the flow's start for titles: to the millisecond. */
function offsetLabel(ms) {
  if (ms < 1000) return `+${Math.round(ms)} ms`;
  return ms < 60_000 ? `+${(ms / 1000).toFixed(3)} s` : offsetText(ms, 1);
}

/**
 * The labels under the axis that fit: tried in order of `prio` (breaks, then where stretches
 * start, then round ticks), each kept only if it overlaps none kept before and stays in
 * [minX, maxX] (a label at an end is anchored to that end).
 */
function placeLabels(labels, minX, maxX) {
  const placed = [];
  for (const label of [...labels].sort((a, b) => a.prio - b.prio)) {
    const w = label.text.length * CHAR_W;
    let anchor = label.anchor;
    let a = anchor === "start" ? label.x : anchor === "end" ? label.x - w : label.x - w / 2;
    if (a < minX) { anchor = "start"; a = label.x; }
    if (a + w > maxX) { anchor = "end"; a = label.x - w; }
    const box = [a - 5, a + w + 5];
    if (placed.some((p) => box[0] < p.box[1] && p.box[0] < box[1])) continue;
    placed.push({ ...label, anchor, box });
  }
  return placed;
}

/** Status over time: running from the start, then whatever each checkpoint recorded. */
function statusSegments(events, t0, t1, finalStatus) {
  const segments = [];
  let current = { status: "running", from: t0 };
  for (const ev of events) {
    const next = ev.type === "checkpoint" ? ev.data && ev.data.status
      : ev.type === "cancelled" ? "cancelled" : null;
    if (next && next !== current.status) {
      segments.push({ ...current, to: ev.t });
      current = { status: next, from: ev.t };
    }
  }
  if (!TERMINAL.has(current.status) && TERMINAL.has(finalStatus)) {
    segments.push({ ...current, to: t1 });
    current = { status: finalStatus, from: t1 };
  }
  segments.push({ ...current, to: t1 });
  return segments;
}

/**
 * The timeline of `flow` (its created_at, finished_at, status) and its `events` (oldest first),
 * `width` pixels wide. `onPick(event)` is called when a marker is clicked. Long idle stretches
 * are drawn as breaks of the axis (axis.js), marked with their length.
 */
export function timeline(flow, events, { width = 800, now = Date.now(), onPick } = {}) {
  const timed = events.map((ev) => ({ ...ev, t: new Date(ev.at).getTime() }));
  const created = new Date(flow.created_at).getTime();
  const t0 = Math.min(created, ...timed.map((ev) => ev.t));
  let t1 = flow.finished_at ? new Date(flow.finished_at).getTime()
    : TERMINAL.has(flow.status) ? Math.max(t0, ...timed.map((ev) => ev.t)) : now;
  t1 = Math.max(t1, ...timed.map((ev) => ev.t));
  if (t1 <= t0) t1 = t0 + 1;
  const span = t1 - t0;

  const lanes = [];
  for (const ev of timed) if (!lanes.includes(ev.type)) lanes.push(ev.type);

  const gutter = 132;
  const right = 18;
  const laneH = 26;
  const top = 8;
  const axisH = 28;
  const plotW = Math.max(width - gutter - right, 120);
  const fullW = gutter + plotW + right;
  const height = top + laneH * (lanes.length + 1) + axisH;
  const moments = [...new Set([t0, created, ...timed.map((ev) => ev.t), t1])]
    .sort((a, b) => a - b);
  const { x, stretches, breaks } = brokenScale(moments, gutter, plotW);

  const svg = s("svg", {
    class: "timeline", width: fullW, height, role: "img", viewBox: `0 0 ${fullW} ${height}`,
    "aria-label": `Timeline of ${timed.length} events over ${duration(span)}`
      + (breaks.length ? `, ${breaks.length} idle stretch${breaks.length > 1 ? "es" : ""} drawn shorter` : ""),
  });

  // Lane backgrounds and labels.
  const laneNames = ["status", ...lanes];
  const axisY = top + laneH * laneNames.length;
  laneNames.forEach((name, i) => {
    const y = top + i * laneH;
    svg.append(
      s("rect", { class: i % 2 ? "tl-lane tl-lane-odd" : "tl-lane", x: gutter, y,
                  width: plotW, height: laneH }),
      s("text", { class: "tl-label", x: gutter - 10, y: y + laneH / 2, "text-anchor": "end",
                  "dominant-baseline": "central" }, name));
  });

  // Breaks: a hatched band across the lanes, the axis cut, and the length they stand for.
  const labels = [];
  if (breaks.length) {
    const hatch = `tl-hatch-${++patterns}`;
    svg.append(s("defs", {}, s("pattern", { id: hatch, width: 6, height: 6,
      patternUnits: "userSpaceOnUse", patternTransform: "rotate(45)" },
    s("line", { class: "tl-hatch", x1: 0, y1: 0, x2: 0, y2: 6 }))));
    for (const br of breaks) {
      const gap = br.to - br.from;
      const band = s("g", { class: "tl-break", dataset: { gapMs: gap, from: br.from - t0 } },
        s("title", {}, `${duration(gap)} without events, drawn shorter `
          + `(${offsetLabel(br.from - t0)} → ${offsetLabel(br.to - t0)})`),
        s("rect", { class: "tl-break-bg", x: br.x0, y: top, width: br.x1 - br.x0,
                    height: axisY - top }),
        s("rect", { class: "tl-break-band", x: br.x0, y: top, width: br.x1 - br.x0,
                    height: axisY - top, fill: `url(#${hatch})` }),
        [br.x0, br.x1].map((bx) => s("line", { class: "tl-break-edge", x1: bx, x2: bx, y1: top,
                                               y2: axisY })));
      svg.append(band);
      labels.push({ x: (br.x0 + br.x1) / 2, text: `≈ ${duration(gap)}`, anchor: "middle",
                    prio: 0, cls: "tl-tick tl-break-label", parent: band });
    }
  }

  // The axis, cut at each break, with round ticks in each stretch.
  const cuts = [gutter, ...breaks.flatMap((br) => [br.x0, br.x1]), gutter + plotW];
  for (let i = 0; i < cuts.length; i += 2) {
    svg.append(s("line", { class: "tl-axis", x1: cuts[i], x2: cuts[i + 1], y1: axisY,
                           y2: axisY }));
  }
  for (const br of breaks) {
    for (const bx of [br.x0, br.x1]) {
      svg.append(s("line", { class: "tl-axis tl-axis-cut", x1: bx - 3, x2: bx + 3,
                             y1: axisY + 5, y2: axisY - 5 }));
    }
  }
  stretches.forEach((st, i) => {
    const { step, ticks } = stretchTicks(st, t0);
    if (i > 0) { // where the stretch starts, after a break: its offset from the flow's start
      labels.push({ x: x(st.from), text: offsetText(st.from - t0, Math.min(step / 10, 1000)),
                    anchor: "start", prio: 1, grid: true });
    }
    for (const tick of ticks) {
      labels.push({ x: x(tick.t), text: tick.text, anchor: tick.t === t0 ? "start" : "middle",
                    prio: tick.t === t0 ? 1 : 2, grid: true });
    }
  });
  for (const label of placeLabels(labels, 4, fullW - 2)) {
    if (label.grid) {
      svg.append(s("line", { class: "tl-grid", x1: label.x, x2: label.x, y1: top,
                             y2: axisY + 4 }));
    }
    (label.parent || svg).append(s("text", { class: label.cls || "tl-tick", x: label.x,
      y: axisY + 17, "text-anchor": label.anchor }, label.text));
  }
  if (!TERMINAL.has(flow.status)) {
    svg.append(s("text", { class: "tl-tick tl-now", x: gutter + plotW, y: top - 1,
                           "text-anchor": "end" }, "now"));
  }

  // The status lane (a status that lasts across a break is drawn through it).
  for (const seg of statusSegments(timed, t0, t1, flow.status)) {
    const x1 = x(seg.from);
    const w = Math.max(x(seg.to) - x1, TERMINAL.has(seg.status) ? 4 : 0);
    if (w <= 0) continue;
    svg.append(s("rect", { class: `tl-status st-${seg.status}`, x: Math.min(x1, gutter + plotW - w),
                           y: top + 5, width: w, height: laneH - 10, rx: 3 },
      s("title", {}, `${seg.status} · ${offsetLabel(seg.from - t0)} → ${offsetLabel(seg.to - t0)}`)));
  }

  // One marker per event.
  for (const ev of timed) {
    const lane = laneNames.indexOf(ev.type);
    const data = ev.data && Object.keys(ev.data).length ? ` ${JSON.stringify(ev.data)}` : "";
    const marker = s("circle", {
      class: `tl-event cat-${categoryOf(ev.type)}`, cx: x(ev.t), cy: top + lane * laneH + laneH / 2,
      r: 5, tabindex: 0, dataset: { type: ev.type, id: ev.id },
      onclick: () => onPick && onPick(ev),
      onkeydown: (e) => { if (e.key === "Enter" && onPick) onPick(ev); },
    }, s("title", {}, `#${ev.id} ${ev.type} · ${offsetLabel(ev.t - t0)}${data}`));
    svg.append(marker);
  }
  return svg;
}

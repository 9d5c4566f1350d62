// A flow's history drawn as an SVG timeline: time runs left to right from the flow's start to
// its end (or now, while it runs); the top lane shows its status over time (from the checkpoint
// events), then one lane per event type with a marker per event. Hovering a marker shows the
// event; clicking it jumps to its row in the events table.

import { TERMINAL, s } from "./dom.js";

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

const STEPS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1e3, 2e3, 5e3, 1e4, 15e3, 3e4, 6e4, 12e4,
  3e5, 6e5, 9e5, 18e5, 36e5, 72e5, 216e5, 432e5, 864e5, 1728e5, 6048e5];

function tickStep(span) {
  return STEPS.find((step) => span / step <= 6) || span / 6;
}

function tickLabel(ms) {
  if (ms === 0) return "0";
  if (ms < 1000) return `+${ms} ms`;
  if (ms < 60_000) return `+${+(ms / 1000).toFixed(2)} s`;
  if (ms < 3_600_000) return `+${+(ms / 60_000).toFixed(1)} min`;
  if (ms < 86_400_000) return `+${+(ms / 3_600_000).toFixed(1)} h`;
  return `+${+(ms / 86_400_000).toFixed(1)} d`;
}

function offsetLabel(ms) {
  return ms < 1000 ? `+${Math.round(ms)} ms` : `+${(ms / 1000).toFixed(3)} s`;
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
 * `width` pixels wide. `onPick(event)` is called when a marker is clicked.
 */
export function timeline(flow, events, { width = 800, now = Date.now(), onPick } = {}) {
  const timed = events.map((ev) => ({ ...ev, t: new Date(ev.at).getTime() }));
  const created = new Date(flow.created_at).getTime();
  const t0 = Math.min(created, ...timed.map((ev) => ev.t));
  let t1 = flow.finished_at ? new Date(flow.finished_at).getTime()
    : TERMINAL.has(flow.status) ? Math.max(t0, ...timed.map((ev) => ev.t)) : now;
  t1 = Math.max(t1, ...timed.map((ev) => ev.t));
  const span = Math.max(t1 - t0, 1);

  const lanes = [];
  for (const ev of timed) if (!lanes.includes(ev.type)) lanes.push(ev.type);

  const gutter = 132;
  const right = 18;
  const laneH = 26;
  const top = 8;
  const axisH = 28;
  const plotW = Math.max(width - gutter - right, 120);
  const height = top + laneH * (lanes.length + 1) + axisH;
  const x = (t) => gutter + ((t - t0) / span) * plotW;

  const svg = s("svg", {
    class: "timeline", width: gutter + plotW + right, height, role: "img",
    viewBox: `0 0 ${gutter + plotW + right} ${height}`,
    "aria-label": `Timeline of ${timed.length} events over ${offsetLabel(span)}`,
  });

  // Lane backgrounds and labels.
  const laneNames = ["status", ...lanes];
  laneNames.forEach((name, i) => {
    const y = top + i * laneH;
    svg.append(
      s("rect", { class: i % 2 ? "tl-lane tl-lane-odd" : "tl-lane", x: gutter, y,
                  width: plotW, height: laneH }),
      s("text", { class: "tl-label", x: gutter - 10, y: y + laneH / 2, "text-anchor": "end",
                  "dominant-baseline": "central" }, name));
  });

  // Axis: ticks at round offsets from the start.
  const step = tickStep(span);
  const axisY = top + laneH * laneNames.length;
  svg.append(s("line", { class: "tl-axis", x1: gutter, x2: gutter + plotW, y1: axisY,
                         y2: axisY }));
  for (let ms = 0; ms <= span + 1e-9; ms += step) {
    const tx = x(t0 + ms);
    svg.append(
      s("line", { class: "tl-grid", x1: tx, x2: tx, y1: top, y2: axisY + 4 }),
      s("text", { class: "tl-tick", x: tx, y: axisY + 17, "text-anchor": ms === 0 ? "start"
        : "middle" }, tickLabel(Math.round(ms))));
  }
  if (!TERMINAL.has(flow.status)) {
    svg.append(s("text", { class: "tl-tick tl-now", x: gutter + plotW, y: top - 1,
                           "text-anchor": "end" }, "now"));
  }

  // The status lane.
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

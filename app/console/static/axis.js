// The time axis of the timeline, with breaks. A flow that waited for hours (a durable timer, a
// signal that came a day later) would squeeze its busy moments into a few pixels on a linear
// axis. So a gap between consecutive moments that is long both next to the usual gap and next
// to the whole span is drawn as a fixed-width break; the busy stretches between breaks keep a
// linear scale each, with their own ticks.

// A gap is a break when it is at least BREAK_RATIO times the (lower) median gap between
// moments …
const BREAK_RATIO = 20;
// … and at least this share of the whole span (a linear axis would give it that share).
const BREAK_SHARE = 0.05;
// Pixels: a break's band (narrower, down to BREAK_MIN_W, when there are many), the room
// between a break and the moments beside it, and the most of the plot that breaks may take
// (when more gaps qualify than fit, the longest win).
const BREAK_W = 92;
const BREAK_MIN_W = 40;
const BREAK_PAD = 12;
const MAX_BREAKS_SHARE = 0.45;
// A stretch gets at least this share of the busy time's width, so that a short burst between
// two long waits is not a dot.
const MIN_STRETCH_SHARE = 0.25;

const STEPS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1e3, 2e3, 5e3, 1e4, 15e3, 3e4, 6e4, 12e4,
  3e5, 6e5, 9e5, 18e5, 36e5, 72e5, 216e5, 432e5, 864e5, 1728e5, 6048e5];
const TICK_SPACING = 90; // pixels wanted between ticks

/** The lower median: of two gaps, the shorter one (a short flow's one wait is still a break). */
function lowerMedian(values) {
  if (!values.length) return 0;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[(sorted.length - 1) >> 1];
}

/**
 * The gaps between consecutive `moments` (sorted times, ms) drawn as breaks, oldest first:
 * [{from, to}]. At most `maxBreaks`; when more qualify, the longest.
 */
export function findBreaks(moments, maxBreaks = Infinity) {
  const span = moments.length ? moments[moments.length - 1] - moments[0] : 0;
  const gaps = [];
  for (let i = 1; i < moments.length; i++) {
    gaps.push({ from: moments[i - 1], to: moments[i], len: moments[i] - moments[i - 1] });
  }
  const usual = lowerMedian(gaps.map((g) => g.len).filter((len) => len > 0));
  return gaps
    .filter((g) => g.len > 0 && g.len >= BREAK_RATIO * usual && g.len >= BREAK_SHARE * span)
    .sort((a, b) => b.len - a.len)
    .slice(0, Math.max(maxBreaks, 0))
    .sort((a, b) => a.from - b.from)
    .map(({ from, to }) => ({ from, to }));
}

/**
 * A piecewise-linear scale from time (ms) to x (pixels) over [left, left + width] for the given
 * `moments` (every time that must be drawn, sorted; the first and last are the axis' ends).
 * Returns {x(t), stretches: [{from, to, x0, x1}], breaks: [{from, to, x0, x1}]}: a break's
 * band is [x0, x1]; times inside a break (none are moments) are spread over its band.
 */
export function brokenScale(moments, left, width) {
  const t0 = moments[0];
  const t1 = moments[moments.length - 1];
  const room = width * MAX_BREAKS_SHARE;
  const breaks = findBreaks(moments, Math.floor(room / (BREAK_MIN_W + 2 * BREAK_PAD)));
  const bandW = Math.min(BREAK_W, room / Math.max(breaks.length, 1) - 2 * BREAK_PAD);

  const stretches = [];
  let from = t0;
  for (const br of breaks) {
    stretches.push({ from, to: br.from });
    from = br.to;
  }
  stretches.push({ from, to: t1 });

  // A stretch that is a single moment (the first or last moment beside a break, "now" after
  // a wait) needs no room of its own: it sits at its end of the break's padding.
  const busy = stretches.reduce((sum, st) => sum + (st.to - st.from), 0);
  const floor = busy > 0 ? (busy * MIN_STRETCH_SHARE) / stretches.length : 1;
  const weights = stretches.map((st) => (st.to > st.from || busy === 0
    ? Math.max(st.to - st.from, floor) : 0));
  const total = weights.reduce((a, b) => a + b, 0);
  const linear = width - breaks.length * (bandW + 2 * BREAK_PAD);
  let cursor = left;
  stretches.forEach((st, i) => {
    st.x0 = cursor;
    st.x1 = cursor + (linear * weights[i]) / total;
    cursor = st.x1;
    if (i < breaks.length) {
      breaks[i].x0 = cursor + BREAK_PAD;
      breaks[i].x1 = breaks[i].x0 + bandW;
      cursor = breaks[i].x1 + BREAK_PAD;
    }
  });

  const within = (st, t) => (st.to > st.from
    ? st.x0 + ((t - st.from) / (st.to - st.from)) * (st.x1 - st.x0)
    : (st.x0 + st.x1) / 2);
  const x = (t) => {
    for (let i = 0; i < stretches.length; i++) {
      const st = stretches[i];
      if (t <= st.to || i === stretches.length - 1) {
        if (t >= st.from || i === 0) return within(st, Math.max(t, st.from));
        const before = stretches[i - 1]; // t lies in the break between the two stretches
        const xa = within(before, before.to);
        const xb = within(st, st.from);
        return xa + ((t - before.to) / (st.from - before.to)) * (xb - xa);
      }
    }
    return left;
  };
  return { x, stretches, breaks };
}

const pad2 = (n) => String(n).padStart(2, "0");

function decimalsFor(step) {
  return step >= 1000 ? 0 : step >= 100 ? 1 : step >= 10 ? 2 : 3;
}

/**
 * An offset from the flow's start, as precise as `step` (the tick spacing) asks: 0, +250 ms,
 * +3.02 s, then +12m04.5s, +3h12m, +2d03h.
 */
export function offsetText(ms, step = 1) {
  if (ms <= 0) return "0";
  if (ms < 1000 && step < 1000) return `+${Math.round(ms)} ms`;
  if (ms < 60_000) return `+${+(ms / 1000).toFixed(decimalsFor(step))} s`;
  const unit = step >= 864e5 ? 3 : step >= 36e5 ? 2 : step >= 6e4 ? 1 : 0; // d, h, m, s
  const dec = unit === 0 ? decimalsFor(step) : 0;
  const scale = [1000, 6e4, 36e5, 864e5][unit];
  let rest = Math.round(ms / scale * 10 ** dec) / 10 ** dec * scale; // rounded to the unit
  const days = Math.floor(rest / 864e5); rest -= days * 864e5;
  const hours = Math.floor(rest / 36e5); rest -= hours * 36e5;
  const mins = Math.floor(rest / 6e4); rest -= mins * 6e4;
  const secs = rest / 1000;
  const parts = [];
  if (days || unit === 3) parts.push(`${days}d`);
  if (unit <= 2 && (hours || parts.length)) parts.push(`${parts.length ? pad2(hours) : hours}h`);
  if (unit <= 1) parts.push(`${parts.length ? pad2(mins) : mins}m`);
  if (unit === 0) {
    const text = secs.toFixed(dec);
    parts.push(`${text.length < (dec ? dec + 3 : 2) ? `0${text}` : text}s`);
  }
  return `+${parts.join("")}`;
}

/**
 * The ticks of one stretch: round offsets from `t0` about every TICK_SPACING pixels, each
 * {t, text}; `step` is their spacing (for labels of other moments in the stretch).
 */
export function stretchTicks(st, t0) {
  const d = st.to - st.from;
  if (d <= 0) return { step: 1000, ticks: [] }; // a single moment: to the second
  const wanted = Math.max(1, Math.floor((st.x1 - st.x0) / TICK_SPACING));
  const step = STEPS.find((s) => d / s <= wanted) || d / wanted;
  const ticks = [];
  for (let ms = Math.ceil((st.from - t0) / step) * step; t0 + ms <= st.to + 1e-9; ms += step) {
    ticks.push({ t: t0 + ms, text: offsetText(ms, step) });
  }
  return { step, ticks };
}

// Drawing for the wound pages (issue #24): the healing chart — a wound's measurements over
// days since its baseline with the ± band, the four-week threshold and the projected closure —
// and the body map the patient's wounds are picked on. Pure SVG builders: no requests, no
// state; the pages in main.js fetch and call them.

const SVG = 'http://www.w3.org/2000/svg';
const DAY_MS = 86400000;

/// An SVG element with attributes (`text` sets its text).
export function svg(tag, attrs = {}, ...kids) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v == null) continue;
    if (k === 'text') e.textContent = v;
    else e.setAttribute(k, v);
  }
  for (const k of kids) if (k != null) e.append(k);
  return e;
}

/// A 1-2-2.5-5 step of at least `raw`.
function niceStep(raw) {
  if (!(raw > 0) || !Number.isFinite(raw)) return 1;
  const mag = 10 ** Math.floor(Math.log10(raw));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * mag >= raw * (1 - 1e-9)) return m * mag;
  return 10 * mag;
}

/// Day steps that read as days, weeks and multiples of four weeks.
const DAY_STEPS = [1, 2, 7, 14, 28, 56, 84, 112, 168, 364, 728, 1456];

/// Width of a tick label in px: digits and a minus at about 0.62 em (system-ui, tabular
/// figures are narrower), rounded up so an estimate never lets two labels touch.
const labelWidth = (text, fontSize) => Math.ceil(String(text).length * fontSize * 0.62) + 2;

/// Ticks of an axis over `[lo, hi]` drawn across `px` pixels whose labels never overlap:
/// the smallest step (from `steps`, or 1-2-5 multiples) that leaves each label its width
/// plus `gap` pixels (and at least `minSpacing`, so a wide chart is not crowded with ticks).
/// `format` makes the label text; `vertical` axes need only the label height between ticks.
export function ticks(lo, hi, px, { fontSize = 11, gap = 10, minSpacing = 0, steps = null, format = String, vertical = false } = {}) {
  const span = hi - lo;
  if (!(span > 0) || !(px > 0)) return { step: 1, values: [lo], labels: [format(lo)] };
  const perUnit = px / span;
  const values = (step) => {
    const out = [];
    const first = Math.ceil(lo / step - 1e-9) * step;
    for (let v = first, i = 0; v <= hi + step * 1e-9 && i < 1000; v += step, i++) out.push(Math.round(v * 1e6) / 1e6);
    return out;
  };
  const fits = (step) => {
    const vs = values(step);
    const need = vertical ? fontSize * 1.2 + gap : Math.max(minSpacing, Math.max(...vs.map((v) => labelWidth(format(v), fontSize))) + gap);
    return step * perUnit >= need;
  };
  let step;
  if (steps) {
    step = steps.find(fits) ?? steps[steps.length - 1];
    for (let i = 0; i < 40 && !fits(step); i++) step *= 2;
  } else {
    // Start from the step that gives at most one tick per 20 px and widen until the labels fit.
    step = niceStep(span / Math.max(1, Math.floor(px / 20)));
    for (let i = 0; i < 40 && !fits(step); i++) step = niceStep(step * 1.01);
  }
  const vs = values(step);
  return { step, values: vs, labels: vs.map(format) };
}

const fmtNum = (v) => {
  const a = Math.abs(v);
  if (a >= 100 || v === 0) return String(Math.round(v));
  if (a >= 10) return v.toFixed(1).replace(/\.0$/, '');
  return v.toFixed(2).replace(/0$/, '').replace(/\.0$/, '');
};

/// Days from `base` (ms) to a `YYYY-MM-DD` date (its start, UTC).
export const dayOf = (date, base) => (date ? (Date.parse(`${date}T00:00:00Z`) - base) / DAY_MS : null);

const COUNTED = new Set(['baseline', 'used']);
const ROLE_WORD = { excluded: 'excluded', superseded: 'superseded', before_baseline: 'before baseline' };

/// The healing chart of one series of one wound.
///
/// `points`: `[{day, value, uncertainty, role, href, label}]` (role as the trajectory gives
/// it; only `baseline` and `used` are counted: joined by the line and the ± band, the others
/// drawn hollow and named). Optional: `threshold` `{value, pct}` (the area four-week target,
/// with a marker at day 28), `fit` `{a, perDay}` (the linear trend `a + perDay·day`) and
/// `projection` `{state, day, earliest, latest, date}` (days since baseline; `date` the
/// closure date in words). `width` is the pixel width the chart is drawn at (ticks are chosen
/// for it); `compact` drops the axis titles and most labels.
export function healingChart({ points, title, unit, testid, width = 720, height = null, threshold = null, fit = null, projection = null, compact = false }) {
  const W = Math.max(280, Math.round(width));
  const H = height ?? (compact ? 170 : Math.round(Math.min(380, Math.max(240, W * 0.42))));
  const fs = compact ? 10 : 11;
  const M = { l: compact ? 40 : 58, r: compact ? 10 : 20, t: compact ? 22 : 30, b: compact ? 26 : 44 };
  const pw = W - M.l - M.r, ph = H - M.t - M.b;
  const root = svg('svg', { viewBox: `0 0 ${W} ${H}`, width: W, height: H, class: 'chart wound-chart', role: 'group', 'data-testid': testid, 'aria-label': title });
  root.style.width = `${W}px`;
  root.style.maxWidth = '100%';
  root.style.height = 'auto';
  root.append(svg('title', { text: title }));
  const counted = points.filter((p) => COUNTED.has(p.role)).sort((a, b) => a.day - b.day);
  const days = points.map((p) => p.day).filter(Number.isFinite);
  const lastDay = counted.length ? counted[counted.length - 1].day : Math.max(0, ...days);

  // The x range: every point, day 28 when the four-week target is drawn, and the projection
  // up to a horizon (a closure far beyond it is named at the edge instead of squashing the data).
  let lo = Math.min(0, ...days), hi = Math.max(7, ...days);
  if (threshold) hi = Math.max(hi, 28);
  const horizon = Math.max(lastDay + 28, lastDay * 1.5, 56);
  const cap = Math.max(lastDay * 2, lastDay + 56, 84);
  let proj = null;
  if (fit && projection && projection.state !== 'insufficient_data' && counted.length >= 2) {
    const zero = fit.perDay < 0 ? -fit.a / fit.perDay : Infinity;
    const want = projection.state === 'closing' ? Math.max(zero, projection.latest ?? projection.earliest ?? zero) : Infinity;
    hi = want <= cap ? Math.max(hi, want * 1.04, lastDay + 7) : Math.max(hi, horizon);
    proj = { zero, end: Math.min(zero, hi) };
  }

  // The y range: every point with its ±, the target and the trend's start.
  let top = Math.max(1e-9, ...points.map((p) => p.value + (p.uncertainty || 0)));
  if (threshold) top = Math.max(top, threshold.value);
  if (fit) top = Math.max(top, fit.a + fit.perDay * Math.max(lo, 0));
  // A top that is a whole tick, with ticks chosen for the range they end up spanning.
  let yHi = top, yt = null;
  for (let i = 0; i < 4; i++) {
    yt = ticks(0, yHi, ph, { fontSize: fs, vertical: true, gap: compact ? 10 : 16, format: fmtNum });
    const next = Math.ceil(top / yt.step - 1e-9) * yt.step;
    if (next === yHi) break;
    yHi = next;
  }
  yt = ticks(0, yHi, ph, { fontSize: fs, vertical: true, gap: compact ? 10 : 16, format: fmtNum, steps: [yt.step] });
  const xt = ticks(lo, hi, pw, { fontSize: fs, minSpacing: compact ? 24 : 48, steps: DAY_STEPS, format: (v) => String(Math.round(v)) });
  const x = (d) => M.l + ((d - lo) / (hi - lo)) * pw;
  const y = (v) => M.t + ph - (Math.max(0, v) / yHi) * ph;
  const clampX = (d) => Math.min(hi, Math.max(lo, d));

  // Grid, ticks and axis titles.
  const grid = svg('g', { class: 'grid', 'aria-hidden': 'true' });
  yt.values.forEach((v, i) => {
    grid.append(svg('line', { x1: M.l, x2: M.l + pw, y1: y(v), y2: y(v), stroke: '#e7eaee' }));
    grid.append(svg('text', { x: M.l - 6, y: y(v) + fs * 0.35, 'font-size': fs, 'text-anchor': 'end', fill: '#5b6470', 'data-testid': 'tick-y', text: yt.labels[i] }));
  });
  xt.values.forEach((v, i) => {
    grid.append(svg('line', { x1: x(v), x2: x(v), y1: M.t + ph, y2: M.t + ph + 4, stroke: '#999' }));
    grid.append(svg('text', { x: x(v), y: M.t + ph + 6 + fs, 'font-size': fs, 'text-anchor': 'middle', fill: '#5b6470', 'data-testid': 'tick-x', text: xt.labels[i] }));
  });
  grid.append(svg('line', { x1: M.l, x2: M.l + pw, y1: M.t + ph, y2: M.t + ph, stroke: '#999' }));
  grid.append(svg('line', { x1: M.l, x2: M.l, y1: M.t, y2: M.t + ph, stroke: '#999' }));
  if (lo < 0) grid.append(svg('line', { x1: x(0), x2: x(0), y1: M.t, y2: M.t + ph, stroke: '#c9ced6' }));
  root.append(grid);
  root.append(svg('text', { x: 4, y: fs + 3, 'font-size': fs + 1, 'font-weight': 600, fill: '#1b1f24', text: title }));
  if (!compact) {
    root.append(svg('text', { x: M.l + pw / 2, y: H - 6, 'font-size': fs, 'text-anchor': 'middle', fill: '#5b6470', text: 'days since baseline' }));
    root.append(svg('text', { x: 0, y: 0, 'font-size': fs, 'text-anchor': 'middle', fill: '#5b6470', transform: `translate(${fs + 2} ${M.t + ph / 2}) rotate(-90)`, text: unit }));
  }

  // The ± band and the line through the counted points.
  if (counted.length >= 2) {
    const upper = counted.map((p) => `${x(p.day)},${y(p.value + p.uncertainty)}`);
    const lower = counted.slice().reverse().map((p) => `${x(p.day)},${y(p.value - p.uncertainty)}`);
    root.append(svg('polygon', { points: [...upper, ...lower].join(' '), fill: 'rgba(11,92,173,0.14)', stroke: 'none', 'data-testid': 'band' }));
    root.append(svg('polyline', { points: counted.map((p) => `${x(p.day)},${y(p.value)}`).join(' '), fill: 'none', stroke: '#0b5cad', 'stroke-width': 2, 'data-testid': 'series-line' }));
  }

  // The four-week target: the area at (100 − threshold) % of the baseline's, and day 28.
  if (threshold) {
    const ty = y(threshold.value);
    root.append(svg('line', { x1: M.l, x2: M.l + pw, y1: ty, y2: ty, stroke: '#c2410c', 'stroke-width': 1.5, 'stroke-dasharray': '7 5', 'data-testid': 'threshold-line' }));
    if (28 >= lo && 28 <= hi) {
      root.append(svg('line', { x1: x(28), x2: x(28), y1: M.t, y2: M.t + ph, stroke: '#c2410c', 'stroke-opacity': 0.45, 'stroke-dasharray': '2 4', 'data-testid': 'day28-line' }));
      const d = 5;
      root.append(svg('polygon', { points: `${x(28)},${ty - d} ${x(28) + d},${ty} ${x(28)},${ty + d} ${x(28) - d},${ty}`, fill: '#c2410c', 'data-testid': 'day28-marker' }, svg('title', { text: `At 4 weeks the area should be at most ${fmtNum(threshold.value)} ${unit}` })));
      if (!compact) root.append(svg('text', { x: x(28) + 4, y: M.t + fs, 'font-size': fs, fill: '#c2410c', text: '4 weeks' }));
    }
    if (!compact) {
      root.append(svg('text', { x: M.l + pw - 2, y: ty - 5, 'font-size': fs, 'text-anchor': 'end', fill: '#c2410c', 'data-testid': 'threshold-label', text: pw < 420 ? `target ${fmtNum(threshold.value)} ${unit}` : `${threshold.pct} % smaller than baseline: ${fmtNum(threshold.value)} ${unit}` }));
    }
  }

  // The projection: the fitted trend from the last counted day to where it reaches zero (or
  // the chart's edge), and the closure interval on the x axis.
  if (proj) {
    const from = lastDay, to = Math.max(from, proj.end);
    const f = (d) => fit.a + fit.perDay * d;
    root.append(svg('line', { x1: x(from), y1: y(f(from)), x2: x(to), y2: y(f(to)), stroke: '#6b3fa0', 'stroke-width': 2, 'stroke-dasharray': '5 4', 'data-testid': 'projection-line' },
      svg('title', { text: projection.state === 'closing' ? `Trend reaches 0 ${unit} on ${projection.date}` : 'The trend does not reach 0' })));
    if (projection.state === 'closing') {
      const base = M.t + ph;
      const e = projection.earliest, l = projection.latest;
      if (e != null && e <= hi) {
        const x1 = x(clampX(e)), x2 = x(clampX(l ?? hi));
        root.append(svg('rect', { x: x1, y: base - 4, width: Math.max(2, x2 - x1), height: 8, rx: 3, fill: 'rgba(107,63,160,0.35)', 'data-testid': 'projection-interval' },
          svg('title', { text: `Closure between ${projection.earliestDate ?? '?'} and ${projection.latestDate ?? 'no later bound'}` })));
      }
      if (projection.day != null && projection.day <= hi) {
        root.append(svg('circle', { cx: x(projection.day), cy: base, r: 4, fill: '#6b3fa0', 'data-testid': 'projection-date' }));
        if (!compact) root.append(svg('text', { x: x(projection.day), y: base - 10, 'font-size': fs, 'text-anchor': x(projection.day) > M.l + pw - 60 ? 'end' : 'middle', fill: '#6b3fa0', text: `closes ${projection.date}` }));
      } else if (!compact) {
        root.append(svg('text', { x: M.l + pw - 2, y: y(f(to)) - 8, 'font-size': fs, 'text-anchor': 'end', fill: '#6b3fa0', 'data-testid': 'projection-beyond', text: pw < 420 ? `0 on ${projection.date} →` : `trend reaches 0 on ${projection.date} →` }));
      }
    } else if (!compact) {
      root.append(svg('text', { x: M.l + pw - 2, y: y(f(to)) + fs + 6, 'font-size': fs, 'text-anchor': 'end', fill: '#6b3fa0', text: 'trend not closing' }));
    }
  }

  // The points: counted ones filled with their ± bar, the others hollow and named.
  for (const p of points) {
    const isCounted = COUNTED.has(p.role);
    const g = svg(p.href ? 'a' : 'g', { href: p.href, 'data-testid': 'history-point', 'data-role': p.role, 'aria-label': p.label });
    g.append(svg('title', { text: p.label }));
    if (p.uncertainty) g.append(svg('line', { x1: x(p.day), x2: x(p.day), y1: y(p.value - p.uncertainty), y2: y(p.value + p.uncertainty), stroke: isCounted ? '#6b8fb8' : '#b5bcc5' }));
    g.append(svg('circle', { cx: x(p.day), cy: y(p.value), r: compact ? 4 : 5, fill: isCounted ? '#0b5cad' : '#fff', stroke: isCounted ? '#0b5cad' : '#8a939e', 'stroke-width': 2, 'data-testid': 'point' }));
    if (!isCounted && !compact) g.append(svg('text', { x: x(p.day), y: y(p.value + (p.uncertainty || 0)) - 6, 'font-size': fs - 1, 'text-anchor': 'middle', fill: '#6b7480', text: ROLE_WORD[p.role] || p.role }));
    root.append(g);
  }
  return root;
}

// ---- body map ------------------------------------------------------------------------------

/// The right half of a standing figure in a 100 × 200 box (x left to right, y head to feet),
/// from the neck down the arm, the side and the leg to the crotch; the left half mirrors it.
const HALF = [[54, 19], [54, 24], [66, 27], [71, 31], [73, 45], [75, 70], [77, 95], [78, 104], [74, 106], [71, 95], [69, 70],
  [67, 48], [65, 46], [65, 60], [63, 75], [67, 100], [67, 112], [65, 140], [63, 150], [63, 160], [62, 175], [59, 188], [61, 196],
  [57, 199], [52, 199], [52, 188], [53, 160], [53, 140], [52, 118], [50, 114]];
const OUTLINE = [...HALF, ...HALF.slice(0, -1).reverse().map(([px, py]) => [100 - px, py])];

/// The body map: the figure with one marker per wound that has a `body_map` point, each a
/// link to its wound page. `wounds`: `[{id, body_map, name, tone}]` (`tone`: `good`, `bad`
/// or `none`); `current` is drawn ringed.
export function bodyMap(wounds, { current = null, height = 300 } = {}) {
  const W = 100, H = 200;
  const root = svg('svg', { viewBox: `-12 -4 ${W + 24} ${H + 8}`, class: 'body-map', role: 'group', 'aria-label': 'Body map: pick a wound', 'data-testid': 'body-map' });
  root.style.height = `${height}px`;
  root.append(svg('circle', { cx: 50, cy: 11, r: 9, fill: '#eef1f5', stroke: '#8a939e', 'stroke-width': 1 }));
  root.append(svg('polygon', { points: OUTLINE.map((p) => p.join(',')).join(' '), fill: '#eef1f5', stroke: '#8a939e', 'stroke-width': 1, 'stroke-linejoin': 'round' }));
  root.append(svg('text', { x: -8, y: 12, 'font-size': 9, fill: '#5b6470', text: 'L' }), svg('text', { x: W + 3, y: 12, 'font-size': 9, fill: '#5b6470', text: 'R' }));
  const colour = { good: '#1a7f37', bad: '#b42318', none: '#5b6470' };
  for (const w of wounds) {
    if (!w.body_map) continue;
    const cx = w.body_map.x * W, cy = w.body_map.y * H;
    const a = svg('a', { href: `#/wound/${w.id}`, 'data-testid': 'body-map-marker', 'data-wound': w.id, 'aria-label': w.name, 'aria-current': w.id === current ? 'page' : null });
    a.append(svg('title', { text: w.name }));
    if (w.id === current) a.append(svg('circle', { cx, cy, r: 8.5, fill: 'none', stroke: '#f5a623', 'stroke-width': 2.5 }));
    a.append(svg('circle', { cx, cy, r: 5.5, fill: colour[w.tone] || colour.none, stroke: '#fff', 'stroke-width': 1.5 }));
    root.append(a);
  }
  return root;
}

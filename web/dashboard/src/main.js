// Coherency dashboard: sign-in through the API, the live board (socket /v1/dashboard/ws),
// the scan page (3D mesh + measurements), the patient page (their wounds on a body map, each
// with its area chart) and the wound page (its healing chart, verdict and projection).
// Hash routes: #/board, #/calendar[/<clinician>], #/scan/<id>, #/patient/<id>, #/wound/<id>. No data is kept beyond the tab's
// session storage (the access token).

import { $main, api, auth, el, isStaff, onSignedOut, pm, session, woundName } from './core.js';
import { calendarPage } from './calendar.js';
import { consultPage, leaveConsult } from './consult.js';
import { enrolPage } from './enrol.js';
import { scanView } from './scan.js';
import { bodyMap, dayOf, healingChart } from './wounds.js';

// ---- sign-in ---------------------------------------------------------------------------

// Sign-in failures in words (the API's stable codes).
const LOGIN_ERRORS = {
  invalid_credentials: 'The email or password is not right.',
  invalid_totp: 'That authenticator code is not right, or was already used. Wait for the next one.',
  account_locked: 'Too many failed attempts: the account is locked for a while.',
  account_disabled: 'This account is disabled. Ask the clinic.',
  rate_limited: 'Too many attempts. Wait a moment and try again.',
};

/// The one sign-in of the workspace. After it, the view the address names opens (a consult
/// link opened while signed out lands in its consult).
function loginPage() {
  const err = el('p', { class: 'error', role: 'alert', id: 'login-error', text: session.endedWhy });
  const form = el('form', { class: 'login', id: 'login-form', 'aria-label': 'Sign in' },
    el('h2', { text: 'Sign in' }),
    el('label', { for: 'email', text: 'Email' }), el('input', { id: 'email', type: 'email', autocomplete: 'username', required: '' }),
    el('label', { for: 'password', text: 'Password' }), el('input', { id: 'password', type: 'password', autocomplete: 'current-password', required: '' }),
    el('label', { for: 'totp', text: 'Authenticator code (staff)' }), el('input', { id: 'totp', inputmode: 'numeric', autocomplete: 'one-time-code' }),
    el('button', { type: 'submit', text: 'Sign in' }), err);
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    err.textContent = '';
    const body = { email: form.querySelector('#email').value, password: form.querySelector('#password').value };
    const code = form.querySelector('#totp').value.trim();
    if (code) body.totp_code = code;
    try {
      const r = await api('/v1/auth/login', { json: body });
      auth.set(r.access_token, r.user);
      session.endedWhy = '';
      route();
    } catch (e) {
      if (e.code === 'mfa_code_required') {
        // The password was right; this account also needs its authenticator code.
        err.textContent = 'Enter the code from your authenticator app, then sign in again.';
        form.querySelector('#totp').focus();
      } else {
        err.textContent = LOGIN_ERRORS[e.code] || `Sign-in failed: ${e.message}`;
        form.querySelector('#password').value = '';
      }
    }
  });
  $main().replaceChildren(form);
  form.querySelector('#email').focus();
}

// ---- the live board ----------------------------------------------------------------------

const SECTIONS = [
  ['waiting', 'Waiting room'],
  ['consults', 'Consults in progress'],
  ['scans', 'Scans'],
  ['bookings', 'Bookings'],
];

/// The board's state and socket. Exposed as `window.coherencyBoard` for tests.
class Board {
  constructor() {
    this.items = new Map();
    this.epoch = null; this.seq = 0;
    this.socket = null; this.stopped = false; this.retry = 0;
    this.measurements = new Map();
    this.onchange = () => {};
    this.connects = 0;
  }

  view() { return [...this.items.values()].sort((a, b) => (a.section + a.id).localeCompare(b.section + b.id)); }

  async connect() {
    if (this.stopped) return;
    let ticket;
    try { ticket = (await api('/v1/auth/ws-ticket', { json: {} })).ticket; } catch { return this.later(); }
    const proto = location.protocol === 'https:' ? 'wss' : 'ws';
    const ws = new WebSocket(`${proto}://${location.host}/v1/dashboard/ws?ticket=${encodeURIComponent(ticket)}`);
    this.socket = ws;
    ws.onopen = () => {
      this.connects += 1;
      const hello = { t: 'hello', v: 1 };
      if (this.epoch != null) hello.resume = { epoch: this.epoch, seq: this.seq };
      ws.send(JSON.stringify(hello));
    };
    ws.onmessage = (ev) => this.receive(JSON.parse(ev.data));
    ws.onclose = () => { if (this.socket === ws) { this.socket = null; this.status('down'); this.later(); } };
  }

  later() {
    if (this.stopped) return;
    const delay = Math.min(5000, 250 * 2 ** this.retry++);
    setTimeout(() => this.connect(), delay);
  }

  /// Closes the socket as a network failure would (the board reconnects and resumes).
  dropSocket() { if (this.socket) this.socket.close(); }

  stop() { this.stopped = true; if (this.socket) this.socket.close(); }

  status(s) { const c = document.getElementById('conn'); if (c) { c.className = s; c.textContent = s === 'live' ? '● live' : '○ reconnecting'; } }

  receive(m) {
    switch (m.t) {
      case 'snapshot':
        this.epoch = m.epoch; this.seq = m.seq; this.retry = 0;
        this.items = new Map(m.items.map((i) => [`${i.section}:${i.id}`, i]));
        this.status('live');
        break;
      case 'resumed':
        this.epoch = m.epoch; this.retry = 0; this.status('live');
        break;
      case 'delta':
        this.seq = m.seq;
        if (m.op === 'upsert') this.items.set(`${m.item.section}:${m.item.id}`, m.item);
        else this.items.delete(`${m.section}:${m.id}`);
        break;
      case 'ping':
        this.seq = Math.max(this.seq, m.seq);
        this.socket?.send(JSON.stringify({ t: 'pong' }));
        return;
      default: return;
    }
    this.onchange();
  }
}

const fmtTime = (ms) => new Date(ms).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
const fmtDay = (ms) => new Date(ms).toLocaleDateString([], { weekday: 'short', day: 'numeric', month: 'short' });
const since = (ms) => { const m = Math.max(0, Math.round((Date.now() - ms) / 60000)); return m < 60 ? `${m} min` : `${Math.floor(m / 60)} h ${m % 60} min`; };
const who = (i) => i.patient_name || `patient ${String(i.patient_id || '').slice(0, 8)}`;

function patientLink(i) {
  return i.patient_id && isStaff()
    ? el('a', { href: `#/patient/${i.patient_id}`, text: who(i) })
    : el('span', { text: who(i) });
}

/// The consult view for `id` (this app, this tab's session).
const consultHref = (id) => `#/consult/${encodeURIComponent(id)}`;

/// A board action: disabled while it runs, its failure said beside it.
function actionButton(label, testid, run) {
  const b = el('button', { type: 'button', class: 'small', 'data-testid': testid, text: label });
  b.addEventListener('click', async () => {
    b.disabled = true;
    try { await run(); } catch (e) {
      b.after(el('span', { class: 'error', role: 'alert', text: ` ${e.message}` }));
    } finally { b.disabled = false; }
  });
  return b;
}

/// A message to someone in the waiting room ("Running 5 minutes late"): a dialog of its own, so
/// the board's live updates never take the text being typed.
function messageDialog(consultId, participantId, name) {
  document.getElementById('message-dialog')?.remove();
  const text = el('textarea', { id: 'message-text', maxlength: '500', rows: '3', required: '' });
  const err = el('p', { class: 'error', role: 'alert' });
  const cancel = el('button', { type: 'button', text: 'Cancel' });
  const form = el('form', { method: 'dialog' },
    el('h2', { id: 'message-h', text: `Message ${name}` }),
    el('label', { for: 'message-text', text: 'They read it while they wait.' }), text,
    el('p', {}, el('button', { type: 'submit', 'data-testid': 'message-send', text: 'Send' }), ' ', cancel), err);
  const dialog = el('dialog', { id: 'message-dialog', 'aria-labelledby': 'message-h' }, form);
  cancel.addEventListener('click', () => dialog.close());
  dialog.addEventListener('close', () => dialog.remove());
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    err.textContent = '';
    const body = text.value.trim();
    if (!body) { err.textContent = 'Write the message first.'; text.focus(); return; }
    try {
      await api(`/v1/consults/${consultId}/participants/${participantId}/message`, { json: { text: body } });
      dialog.close();
    } catch (e) {
      err.textContent = e.status === 409 ? 'They are no longer waiting.' : `The message was not sent: ${e.message}`;
    }
  });
  document.body.append(dialog);
  dialog.showModal();
  text.focus();
}

function renderItem(board, i) {
  const li = el('li', { 'data-testid': `${i.section}-${i.id}`, 'data-status': i.status });
  const staff = isStaff();
  if (i.section === 'waiting') {
    const cid = i.data?.consult_id;
    const actions = staff && cid ? el('span', { class: 'actions' },
      actionButton('Admit', 'admit', () => api(`/v1/consults/${cid}/participants/${i.id}/admit`, { json: {} })),
      actionButton('Deny', 'deny', () => api(`/v1/consults/${cid}/participants/${i.id}/deny`, { json: {} })),
      el('button', { type: 'button', class: 'small', 'data-testid': 'message', text: 'Message', onclick: () => messageDialog(cid, i.id, who(i)) }),
      el('a', { href: consultHref(cid), 'data-testid': 'open-consult', text: 'Open consult' })) : null;
    li.append(patientLink(i), el('span', {}, el('span', { class: 'muted', text: `waiting ${since(i.since_ms)} ` }), actions));
  } else if (i.section === 'consults') {
    // Admitted is not connected: the call counts those whose connection is in the room.
    const admitted = Array.isArray(i.data?.participants) ? i.data.participants.length : 0;
    const live = Array.isArray(i.data?.connected) ? i.data.connected.length : 0;
    const call = live ? `${live} in call` : `${admitted} admitted, nobody connected`;
    li.append(patientLink(i), el('span', {}, el('span', { class: 'muted', 'data-testid': 'in-call', text: `${call} · ${since(i.since_ms)} ` }),
      el('a', { href: consultHref(i.id), 'data-testid': 'open-consult', text: staff ? 'Open consult' : 'Join' })));
  } else if (i.section === 'scans') {
    const frames = i.data?.frames ?? 0;
    const right = el('span', {},
      el('span', { class: `badge ${i.status}`, text: i.status }), ' ',
      el('span', { 'data-testid': 'frames', text: `${frames} frames` }));
    if (typeof i.data?.coverage === 'number') {
      right.append(' ', el('progress', { max: '1', value: String(i.data.coverage), 'aria-label': 'coverage' }));
    }
    if (i.status === 'complete') {
      const m = board.measurements.get(i.id);
      if (m === undefined) {
        board.measurements.set(i.id, null);
        api(`/v1/scans/${i.id}/measurements`).then((r) => {
          board.measurements.set(i.id, r.measurements.find((x) => x.method === 'auto') || r.measurements[0] || false);
          board.onchange();
        }).catch(() => board.measurements.delete(i.id));
      } else if (m) {
        right.append(' ', el('span', { 'data-testid': 'area', text: `area ${pm(m.outline_area_mm2, 'mm²')}` }));
      } else if (m === false) {
        right.append(' ', el('span', { class: 'muted', text: 'no automatic measurement' }));
      }
    }
    // Two scans of one patient differ by when (and by wound, below).
    const link = el('span', {}, el('a', { href: `#/scan/${i.id}`, text: `Scan · ${who(i)}` }), ' ',
      el('time', { class: 'muted', 'data-testid': 'scan-time', datetime: new Date(i.since_ms).toISOString(), text: `${fmtDay(i.since_ms)} ${fmtTime(i.since_ms)}` }));
    if (i.wound) {
      link.append(' ', i.wound.id && staff
        ? el('a', { class: 'muted', href: `#/wound/${i.wound.id}`, 'data-testid': 'wound', text: woundName(i.wound) })
        : el('span', { class: 'muted', 'data-testid': 'wound', text: woundName(i.wound) }));
    }
    li.append(link, right);
  } else {
    const end = i.data?.end_ms;
    // The clinician starts the appointment's consult; the patient joins it from 15 minutes
    // before the start until its end (the server holds the same window).
    const now = Date.now();
    const joinable = i.status === 'booked' && (staff || (now >= i.since_ms - 15 * 60000 && (!end || now <= end)));
    const go = joinable ? actionButton(staff ? 'Start consult' : 'Join', 'start-consult', async () => {
      const c = await api(`/v1/appointments/${i.id}/consult`, { json: {} });
      location.hash = consultHref(c.id);
    }) : null;
    li.append(el('span', {}, el('time', { text: `${fmtDay(i.since_ms)} ${fmtTime(i.since_ms)}${end ? `–${fmtTime(end)}` : ''}` }), ' ', patientLink(i)),
      el('span', {}, el('span', { class: `badge ${i.status}`, text: i.status }), go ? ' ' : null, go));
  }
  return li;
}

function boardPage() {
  const board = window.coherencyBoard && !window.coherencyBoard.stopped ? window.coherencyBoard : new Board();
  window.coherencyBoard = board;
  const root = el('div', {},
    el('p', {}, el('span', { id: 'conn', class: 'down', role: 'status', text: '○ connecting' })),
    el('div', { class: 'grid' }));
  const grid = root.querySelector('.grid');
  const today = new Date().toDateString();
  const render = () => {
    const items = board.view();
    const parts = SECTIONS.map(([key, title]) => {
      let list = items.filter((i) => i.section === key).sort((a, b) => a.since_ms - b.since_ms);
      let extra = null;
      if (key === 'bookings') {
        const todays = list.filter((i) => new Date(i.since_ms).toDateString() === today);
        const later = list.filter((i) => new Date(i.since_ms).toDateString() !== today);
        extra = later;
        list = todays;
      }
      const ul = el('ul', { class: 'items', 'aria-label': title });
      for (const i of list) ul.append(renderItem(board, i));
      const sec = el('section', { class: 'card', 'data-testid': `section-${key}`, 'aria-labelledby': `h-${key}` },
        el('h2', { id: `h-${key}` }, el('span', { text: key === 'bookings' ? "Today's bookings" : title }), el('span', { class: 'muted', text: String(list.length) })),
        list.length ? ul : el('p', { class: 'empty', text: 'Nothing right now.' }));
      if (extra && extra.length) {
        const ul2 = el('ul', { class: 'items', 'aria-label': 'Upcoming bookings' });
        for (const i of extra) ul2.append(renderItem(board, i));
        sec.append(el('h3', { text: 'Upcoming' }), ul2);
      }
      return sec;
    });
    grid.replaceChildren(...parts);
    board.status(board.socket && board.epoch != null ? 'live' : 'down');
  };
  board.onchange = render;
  $main().replaceChildren(root);
  render();
  if (!board.socket && !board.started) { board.started = true; board.connect(); }
  // Wait times and durations tick.
  clearInterval(window.coherencyTick);
  window.coherencyTick = setInterval(render, 30000);
}

// ---- patient and wound pages ---------------------------------------------------------------

const VERDICT = { on_track: 'on track', not_on_track: 'not on track', too_early: 'too early' };
const TONE = { on_track: 'good', not_on_track: 'bad' };
const fmtDate = (d) => new Date(d.length === 10 ? `${d}T00:00:00Z` : d).toLocaleDateString([], { day: 'numeric', month: 'short', year: 'numeric', timeZone: d.length === 10 ? 'UTC' : undefined });
const pmPct = (v) => (v ? `${v.value.toFixed(1)} ± ${v.uncertainty.toFixed(1)} %` : '—');
const patientName = (p, id) => (p ? [p.given_name, p.family_name].filter(Boolean).join(' ') : `patient ${String(id).slice(0, 8)}`);
const statusWord = (s) => String(s || '').replace(/_/g, ' ');
/// A wound's details after its name: stage, status, laterality.
const woundDetails = (w) => [w.stage ? `stage ${w.stage}` : null, `${statusWord(w.status)} since ${fmtDate(w.status_date)}`,
  w.laterality && w.laterality !== 'unspecified' ? w.laterality : null].filter(Boolean).join(' · ');

/// The width a chart inside `host` is drawn at (ticks are chosen for it).
const chartWidth = (host, fallback = 720) => Math.max(280, Math.floor(host?.clientWidth || fallback) - 2);

/// The healing chart's inputs from a trajectory, for one series (`area_mm2`, `volume_mm3`,
/// `max_depth_mm`, `granulation_pct`): days since baseline, and for the area the four-week target and the
/// projection.
function series(t, key, unit) {
  const base = t.metrics.baseline_at ? Date.parse(t.metrics.baseline_at) : (t.points[0] ? Date.parse(t.points[0].taken_at) : 0);
  // A series a point lacks (no tissue composition, for one) leaves that point out.
  const points = t.points.filter((p) => p[key]).map((p) => {
    const v = p[key];
    const day = p.days_since_baseline ?? (Date.parse(p.taken_at) - base) / 86400000;
    const why = p.exclusion ? ` — excluded: ${p.exclusion.reason}` : (p.role === 'used' || p.role === 'baseline' ? '' : ` — ${statusWord(p.role)}`);
    return { day, value: v.value, uncertainty: v.uncertainty, role: p.role, href: `#/scan/${p.scan_id}`,
      label: `${fmtDate(p.taken_at)} (day ${Math.round(day)}): ${v.value.toFixed(1)} ± ${v.uncertainty.toFixed(1)} ${unit}${why}` };
  });
  if (key !== 'area_mm2') return { points };
  const m = t.metrics;
  const baseline = t.points.find((p) => p.role === 'baseline');
  const threshold = baseline ? { value: baseline.area_mm2.value * (1 - m.four_week.threshold_pct / 100), pct: m.four_week.threshold_pct } : null;
  const fit = m.area_linear ? { a: m.area_linear.at_baseline.value, perDay: m.area_linear.slope_per_week.value / 7 } : null;
  const pr = m.projection;
  const projection = { state: pr.state, day: dayOf(pr.date, base), earliest: dayOf(pr.earliest, base), latest: dayOf(pr.latest, base),
    date: pr.date && fmtDate(pr.date), earliestDate: pr.earliest && fmtDate(pr.earliest), latestDate: pr.latest && fmtDate(pr.latest) };
  return { points, threshold, fit, projection };
}

/// The four-week verdict in words.
function verdictText(fw) {
  const v = VERDICT[fw.verdict] || fw.verdict;
  if (fw.verdict === 'too_early') return { v, more: 'no assessment near four weeks after the baseline yet' };
  const r = fw.reduction_pct;
  if (!r) return { v, more: 'no reduction could be read' };
  return { v, more: `area ${r.value >= 0 ? 'reduced' : 'grew'} ${pmPct({ value: Math.abs(r.value), uncertainty: r.uncertainty })} by day ${Math.round(fw.day)} (on track from ${fw.threshold_pct} %)` };
}

/// The projected closure in words.
function projectionText(p) {
  if (p.state === 'closing') {
    return `Closing by ${fmtDate(p.date)} (earliest ${fmtDate(p.earliest)}, latest ${p.latest ? fmtDate(p.latest) : 'not bounded: the slowest trend within the ± is flat'})`;
  }
  if (p.state === 'not_closing') return 'Not closing: the area trend is flat or growing';
  return 'Not enough data to project closure (fewer than two counted assessments)';
}

/// "Start a consult now" for a patient the clinician may see (no appointment needed): the
/// consult opens here, and while the clinician is in its room the patient finds it on their
/// board under consults in progress (status `open`).
function adHocConsult(patientId) {
  return actionButton('Start a consult now', 'ad-hoc-consult', async () => {
    const c = await api('/v1/consults', { json: { patient_id: patientId } });
    location.hash = consultHref(c.id);
  });
}

async function patientPage(id) {
  $main().replaceChildren(el('h2', { text: 'Wounds' }), el('p', { text: 'Loading…' }));
  try {
    const [patient, { wounds }, { scans }] = await Promise.all([
      api(`/v1/patients/${id}`).catch(() => null),
      api(`/v1/patients/${id}/wounds`),
      api(`/v1/patients/${id}/scans?limit=200`),
    ]);
    const trajectories = await Promise.all(wounds.map((w) => api(`/v1/wounds/${w.id}/trajectory`).catch(() => null)));
    const woundOf = new Map(wounds.map((w) => [w.id, w]));
    const grid = el('div', { class: 'wound-grid' });
    const mapCard = el('section', { class: 'card body-card', 'aria-labelledby': 'h-map' }, el('h3', { id: 'h-map', text: 'Body map' }));
    const cards = el('div', { class: 'wound-cards', 'data-testid': 'history' });
    grid.append(mapCard, cards);
    $main().replaceChildren(
      el('h2', { 'data-testid': 'patient-heading', text: `${patientName(patient, id)} · wounds` }),
      el('p', { hidden: isStaff() ? null : '' }, isStaff() ? adHocConsult(id) : null),
      grid,
      el('section', { class: 'card' }, el('h3', { text: 'Scans' }),
        scans.length
          ? el('ul', { class: 'items', 'data-testid': 'scan-list' }, ...scans.map((s) => el('li', {},
            el('a', { href: `#/scan/${s.id}`, text: `${new Date(s.created_at).toLocaleString()} · ${woundOf.has(s.wound_id) ? woundName(woundOf.get(s.wound_id)) : s.body_site}` }),
            el('span', { class: `badge ${s.status}`, text: s.status }))))
          : el('p', { class: 'empty', text: 'No scans yet.' })));
    mapCard.append(bodyMap(wounds.map((w, i) => ({ id: w.id, body_map: w.body_map, name: woundName(w), tone: TONE[trajectories[i]?.metrics.four_week.verdict] }))),
      el('p', { class: 'muted', text: wounds.some((w) => !w.body_map) ? 'Wounds without a place on the map are listed beside it.' : 'Pick a wound.' }));
    if (!wounds.length) cards.append(el('p', { class: 'empty', text: 'No wounds recorded.' }));
    let points = 0;
    wounds.forEach((w, i) => {
      const t = trajectories[i];
      const card = el('section', { class: 'card wound-card', 'data-testid': 'wound-card', 'data-wound': w.id },
        el('h3', {}, el('a', { href: `#/wound/${w.id}`, text: woundName(w) })),
        el('p', { class: 'muted', text: woundDetails(w) }));
      cards.append(card);
      if (!t) { card.append(el('p', { class: 'empty', text: 'The trajectory could not be loaded.' })); return; }
      const fw = verdictText(t.metrics.four_week);
      card.append(el('p', {}, el('span', { class: `badge verdict ${t.metrics.four_week.verdict}`, 'data-testid': 'verdict', text: fw.v }), ' ', el('span', { class: 'muted', text: `${t.points.length} assessment${t.points.length === 1 ? '' : 's'}` })));
      if (t.points.length) {
        points += t.points.length;
        card.append(healingChart({ ...series(t, 'area_mm2', 'mm²'), title: 'Area (mm²)', unit: 'mm²', testid: 'chart-area', width: chartWidth(card, 420), compact: true }));
      }
    });
    cards.dataset.points = String(points);
  } catch (e) {
    // A 404 here is the access rule, not a missing patient: say so (a booking alone does not
    // open a patient's record; the care team does).
    const why = e.status === 404
      ? "This patient's record is not open to you: you are not on their care team. An administrator can add you to it."
      : `Could not load the patient's wounds: ${e.message}`;
    $main().replaceChildren(el('p', { class: 'error', role: 'alert', 'data-testid': 'patient-error', text: why }));
  }
}

/// "Download the report (PDF)": the API wants the bearer token, so the PDF is fetched and
/// handed to the browser as a file (named by the server, no patient data in the name).
function reportButton(id) {
  const status = el('span', { class: 'muted', role: 'status' });
  const button = el('button', { type: 'button', 'data-testid': 'wound-report', text: 'Download the report (PDF)' });
  button.addEventListener('click', async () => {
    button.disabled = true; status.textContent = ' Preparing…';
    try {
      const res = await api(`/v1/wounds/${id}/report.pdf`, { raw: true });
      const name = /filename="([^"]+)"/.exec(res.headers.get('content-disposition') || '')?.[1] || 'wound-report.pdf';
      const url = URL.createObjectURL(await res.blob());
      const a = el('a', { href: url, download: name });
      document.body.append(a); a.click(); a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10000);
      status.textContent = '';
    } catch (e) {
      status.textContent = ` Could not make the report: ${e.message}`;
    } finally { button.disabled = false; }
  });
  return el('p', {}, button, status);
}

async function woundPage(id) {
  $main().replaceChildren(el('h2', { text: 'Wound' }), el('p', { text: 'Loading…' }));
  try {
    const w = await api(`/v1/wounds/${id}`);
    const [patient, t, others] = await Promise.all([
      api(`/v1/patients/${w.patient_id}`).catch(() => null),
      api(`/v1/wounds/${id}/trajectory`),
      api(`/v1/patients/${w.patient_id}/wounds`).then((r) => r.wounds).catch(() => [w]),
    ]);
    const m = t.metrics;
    const fw = verdictText(m.four_week);
    const rate = m.area_linear ? `${m.area_linear.slope_per_week.value.toFixed(1)} ± ${m.area_linear.slope_per_week.uncertainty.toFixed(1)} mm²/week` : '—';
    const heading = el('h2', { 'data-testid': 'wound-heading' },
      el('a', { href: `#/patient/${w.patient_id}`, 'data-testid': 'patient-name', text: patientName(patient, w.patient_id) }), ' · ',
      el('span', { 'data-testid': 'wound-name', text: woundName(w) }));
    const summary = el('section', { class: 'card wound-summary' },
      el('p', { class: 'muted', text: woundDetails(w) }),
      el('p', { class: 'verdict-line' }, 'Four-week verdict: ', el('strong', { class: `verdict ${m.four_week.verdict}`, 'data-testid': 'verdict', text: fw.v }), ` — ${fw.more}.`),
      el('p', { 'data-testid': 'projection' }, `${projectionText(m.projection)}.`),
      el('p', { class: 'muted' }, `Area trend ${rate}; ${m.points_used} of ${t.points.length} assessments counted; latest reduction from baseline ${pmPct(m.area_reduction_from_baseline_pct)}.`),
      reportButton(id));
    const chartCard = el('section', { class: 'card', 'data-testid': 'wound-chart' });
    const smallCards = el('div', { class: 'grid' });
    const tbody = el('tbody');
    for (const p of t.points) {
      tbody.append(el('tr', { 'data-testid': 'assessment-row', 'data-role': p.role },
        el('td', {}, el('a', { href: `#/scan/${p.scan_id}`, text: fmtDate(p.taken_at) })),
        el('td', { text: p.days_since_baseline == null ? '—' : String(Math.round(p.days_since_baseline)) }),
        el('td', { text: p.method === 'polygon' ? 'clinician outline' : 'automatic' }),
        el('td', { text: pm(p.area_mm2, 'mm²') }),
        el('td', { text: pmPct(p.area_reduction_from_baseline_pct) }),
        el('td', { text: statusWord(p.role) + (p.exclusion ? ` (${p.exclusion.reason})` : '') })));
    }
    const table = el('section', { class: 'card' }, el('h3', { text: 'Assessments' }),
      el('div', { class: 'table-wrap' }, el('table', { class: 'm', 'data-testid': 'assessments' },
        el('thead', {}, el('tr', {}, ...['Date', 'Day', 'Method', 'Area', 'Reduction from baseline', 'Role'].map((h) => el('th', { scope: 'col', text: h })))),
        tbody)));
    const map = el('section', { class: 'card body-card' }, el('h3', { text: 'Body map' }),
      bodyMap(others.map((o) => ({ id: o.id, body_map: o.body_map, name: woundName(o), tone: o.id === id ? TONE[m.four_week.verdict] : null })), { current: id, height: 240 }));
    $main().replaceChildren(heading, el('div', { class: 'wound-layout' }, el('div', {}, summary, chartCard), map), smallCards, table);
    const legend = el('p', { class: 'muted legend', text: '● counted assessment with its ± (shaded band) · ○ not counted · orange dashes: the four-week target and day 28 · purple dashes: the area trend to closure, the bar on the axis its earliest–latest dates.' });
    const draw = () => {
      chartCard.replaceChildren(
        healingChart({ ...series(t, 'area_mm2', 'mm²'), title: `Area (mm²) · ${woundName(w)}`, unit: 'mm²', testid: 'chart-area', width: chartWidth(chartCard) }),
        legend);
      // Placed first so each chart is drawn for the width its card has.
      // The bed's granulation share, once a scan had colour: the tissue side of healing.
      const tissue = t.points.some((p) => p.granulation_pct) ? [['granulation_pct', 'Granulation (% of the wound bed)', '%']] : [];
      const small = [['volume_mm3', 'Volume (mm³)', 'mm³'], ['max_depth_mm', 'Max depth (mm)', 'mm'], ...tissue].map((s) => [el('section', { class: 'card' }), ...s]);
      smallCards.replaceChildren(...small.map(([card]) => card));
      for (const [card, k, title, unit] of small) {
        card.append(healingChart({ ...series(t, k, unit), title, unit, testid: `chart-${k}`, width: chartWidth(card, 560), height: 220 }));
      }
    };
    draw();
    let pending = null;
    const onResize = () => {
      if (!document.body.contains(chartCard)) { window.removeEventListener('resize', onResize); return; }
      clearTimeout(pending);
      pending = setTimeout(draw, 150);
    };
    window.addEventListener('resize', onResize);
  } catch (e) {
    $main().replaceChildren(el('p', { class: 'error', role: 'alert', text: `Could not load the wound: ${e.message}` }));
  }
}

// ---- router ------------------------------------------------------------------------------

function route() {
  const user = auth.user;
  // The signed-in person, then their role (`Dr Alice Ng · clinician`).
  document.getElementById('who').textContent = user ? [user.display_name || user.email, user.role].filter(Boolean).join(' · ') : '';
  document.getElementById('logout').hidden = !user;
  document.getElementById('nav-calendar').hidden = !user || user.role === 'patient';
  const [, page, id] = (location.hash || '#/board').split('/');
  // Leaving a consult's view leaves its room (the consult itself goes on).
  if (page !== 'consult' || !auth.token) leaveConsult();
  if (!auth.token) { window.coherencyBoard?.stop(); return loginPage(); }
  // Staff without two-step sign-in set it up first (the API refuses them everything else).
  if (user && user.role !== 'patient' && user.mfa_enrolled === false) {
    return enrolPage($main(), { api, el, done: () => { auth.set(auth.token, { ...auth.user, mfa_enrolled: true }); location.hash = '#/board'; route(); } });
  }
  if (page === 'calendar' && isStaff()) {
    return calendarPage($main(), { api, el, clinician: id || null, me: auth.user?.id });
  }
  if (page === 'consult') return consultPage($main(), id ? decodeURIComponent(id) : null);
  if (page === 'scan' && id) return scanView($main(), id);
  if (page === 'patient' && id) return patientPage(id);
  if (page === 'wound' && id) return woundPage(id);
  return boardPage();
}

/// Links from outside the app (`/consult#consult=<id>`, and `#token=…` from the phone app and
/// the tests) become this app's routes: the token is this tab's session, the consult its view.
/// The fragment never reaches the server, and is replaced before anything is fetched.
async function adoptLink() {
  const h = location.hash.slice(1);
  if (!h || h.startsWith('/')) return;
  const f = new URLSearchParams(h);
  const token = f.get('token');
  const consult = f.get('consult');
  history.replaceState(null, '', `${location.pathname}${consult ? `#/consult/${encodeURIComponent(consult)}` : '#/board'}`);
  if (!token) return;
  auth.set(token, null);
  try { auth.set(token, await api('/v1/me')); } catch { /* a 401 has signed out already */ }
}

onSignedOut(() => route());
window.addEventListener('hashchange', route);
window.addEventListener('DOMContentLoaded', async () => {
  document.getElementById('logout').addEventListener('click', async () => {
    leaveConsult();
    try { await api('/v1/auth/logout', { json: {} }); } catch { /* already gone */ }
    auth.clear(); window.coherencyBoard?.stop(); location.hash = '#/board'; route();
  });
  await adoptLink();
  route();
});

// The clinician's calendar (`#/calendar`, `#/calendar/<clinician id>`): a week or a day of
// appointments — booked, held (with when the hold lapses), no-shows, cancelled ones faint —
// and the free slots of an appointment type, from GET /v1/appointments, GET /v1/slots and
// GET /v1/clinicians/{id}/schedule. Times are the browser's local time. Every block is a
// labelled element a screen reader can list; the page is keyboard operable (links, buttons).

const DAY_MS = 86400000;
const STATUS_WORDS = { booked: 'booked', held: 'held', no_show: 'no-show', cancelled: 'cancelled', expired: 'hold expired' };

/// Midnight (local) of the Monday of `d`'s week.
function mondayOf(d) {
  const m = new Date(d.getFullYear(), d.getMonth(), d.getDate());
  m.setDate(m.getDate() - ((m.getDay() + 6) % 7));
  return m;
}

const hm = (t) => new Date(t).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
const dayLabel = (d) => d.toLocaleDateString([], { weekday: 'short', day: 'numeric', month: 'short' });
const iso = (d) => new Date(d).toISOString();

/// Sets geometry through the CSSOM (the server's Content-Security-Policy refuses inline
/// `style` attributes).
function styled(e, css) {
  Object.assign(e.style, css);
  return e;
}

/// Draws the calendar into `root` with the page's `api` and element helper `el`.
export async function calendarPage(root, { api, el, clinician, me }) {
  const state = { days: 7, start: mondayOf(new Date()), type: null };
  const id = clinician || me;
  const head = el('h2', { text: 'Calendar' });
  const bar = el('div', { class: 'cal-bar', role: 'toolbar', 'aria-label': 'Calendar' });
  const body = el('div', { class: 'cal-body', 'data-testid': 'calendar' });
  const status = el('p', { class: 'muted', role: 'status' });
  root.replaceChildren(head, bar, status, body);

  let schedule;
  try {
    schedule = await api(`/v1/clinicians/${id}/schedule`);
  } catch (e) {
    body.replaceChildren(el('p', { class: 'error', role: 'alert', text: e.status === 404 ? 'This clinician has no schedule yet.' : `Could not load the schedule: ${e.message}` }));
    return;
  }
  const types = (schedule.appointment_types || []).filter((t) => t.active !== false);
  state.type = types[0]?.id || null;
  const names = new Map();
  const nameOf = async (pid) => {
    if (!names.has(pid)) {
      names.set(pid, api(`/v1/patients/${pid}`).then((p) => `${p.given_name} ${p.family_name}`).catch(() => 'Patient'));
    }
    return names.get(pid);
  };

  const go = (days, start) => { state.days = days; state.start = start; draw(); };
  const typeSel = el('select', { 'aria-label': 'Free slots of', 'data-testid': 'cal-type' });
  for (const t of types) typeSel.append(el('option', { value: t.id, text: `${t.name} (${t.duration_min} min)` }));
  typeSel.addEventListener('change', () => { state.type = typeSel.value; draw(); });
  bar.append(
    el('button', { type: 'button', 'data-testid': 'cal-prev', text: '‹ Earlier', onclick: () => go(state.days, new Date(state.start.getTime() - state.days * DAY_MS)) }),
    el('button', { type: 'button', 'data-testid': 'cal-today', text: 'Today', onclick: () => go(state.days, state.days === 7 ? mondayOf(new Date()) : new Date(new Date().setHours(0, 0, 0, 0))) }),
    el('button', { type: 'button', 'data-testid': 'cal-next', text: 'Later ›', onclick: () => go(state.days, new Date(state.start.getTime() + state.days * DAY_MS)) }),
    el('button', { type: 'button', 'data-testid': 'cal-week', text: 'Week', onclick: () => go(7, mondayOf(state.start)) }),
    el('button', { type: 'button', 'data-testid': 'cal-day', text: 'Day', onclick: () => go(1, state.days === 7 && mondayOf(new Date()).getTime() === state.start.getTime() ? new Date(new Date().setHours(0, 0, 0, 0)) : state.start) }),
    types.length ? el('label', {}, ' Free slots: ', typeSel) : el('span', { class: 'muted', text: ' No appointment types: no free slots to show.' }));

  async function draw() {
    const from = state.start;
    const to = new Date(from.getTime() + state.days * DAY_MS);
    head.textContent = state.days === 7
      ? `Calendar · week of ${dayLabel(from)}`
      : `Calendar · ${from.toLocaleDateString([], { weekday: 'long', day: 'numeric', month: 'long' })}`;
    status.textContent = 'Loading…';
    let appts = [], slots = [];
    try {
      const q = new URLSearchParams({ clinician: id, from: iso(from), to: iso(to) });
      appts = (await api(`/v1/appointments?${q}`)).appointments;
      if (state.type) {
        // The slot search looks forward from now at most; the past has no free slots.
        const sFrom = new Date(Math.max(from.getTime(), Date.now()));
        if (sFrom < to) {
          const s = new URLSearchParams({ clinician: id, type: state.type, from: iso(sFrom), to: iso(to) });
          slots = (await api(`/v1/slots?${s}`)).slots;
        }
      }
    } catch (e) {
      status.textContent = '';
      body.replaceChildren(el('p', { class: 'error', role: 'alert', text: `Could not load the calendar: ${e.message}` }));
      return;
    }
    // Hours shown: the working day of the schedule, widened to whatever is on it.
    let lo = 8, hi = 18;
    for (const w of schedule.weekly || []) { lo = Math.min(lo, parseInt(w.start, 10)); hi = Math.max(hi, Math.ceil(parseInt(w.end, 10) + (w.end.endsWith(':00') ? 0 : 1))); }
    for (const t of [...appts.map((a) => [a.start_at, a.end_at]), ...slots.map((s) => [s.start, s.end])]) {
      lo = Math.min(lo, new Date(t[0]).getHours());
      hi = Math.max(hi, new Date(t[1]).getHours() + (new Date(t[1]).getMinutes() ? 1 : 0));
    }
    hi = Math.min(24, Math.max(hi, lo + 1));
    const PX_PER_MIN = 1;
    const height = (hi - lo) * 60 * PX_PER_MIN;
    const top = (t) => ((new Date(t).getHours() - lo) * 60 + new Date(t).getMinutes()) * PX_PER_MIN;

    const grid = el('div', { class: `cal-grid days-${state.days}` });
    const hours = styled(el('div', { class: 'cal-hours', 'aria-hidden': 'true' }), { height: `${height}px` });
    for (let h = lo; h < hi; h++) hours.append(styled(el('div', { class: 'cal-hour', text: `${String(h).padStart(2, '0')}:00` }), { top: `${(h - lo) * 60 * PX_PER_MIN}px` }));
    grid.append(el('div', { class: 'cal-corner' }), hours);
    const cols = [];
    for (let d = 0; d < state.days; d++) {
      const day = new Date(from.getTime() + d * DAY_MS);
      const isToday = day.toDateString() === new Date().toDateString();
      grid.append(el('div', { class: `cal-dayhead${isToday ? ' today' : ''}`, text: dayLabel(day) }));
      const col = styled(el('ol', { class: 'cal-col', 'aria-label': dayLabel(day), 'data-day': day.toDateString() }), { height: `${height}px` });
      cols.push([day, col]);
    }
    // The day heads came first (one grid row), then the columns (the next): the hours
    // column sits in row 2 beside them.
    for (const [, col] of cols) grid.append(col);
    const colOf = (t) => cols.find(([d]) => new Date(t).toDateString() === d.toDateString())?.[1];

    for (const s of slots) {
      const col = colOf(s.start);
      if (!col) continue;
      col.append(styled(el('li', {
        class: 'cal-block slot', 'data-testid': 'cal-slot', 'data-start': s.start,
        'aria-label': `free ${hm(s.start)}–${hm(s.end)}`, title: `free ${hm(s.start)}–${hm(s.end)}`,
      }), { top: `${top(s.start)}px`, height: `${Math.max(12, (new Date(s.end) - new Date(s.start)) / 60000 * PX_PER_MIN)}px` }));
    }
    for (const a of appts) {
      const col = colOf(a.start_at);
      if (!col) continue;
      const word = STATUS_WORDS[a.status] || a.status;
      const who = el('span', { class: 'who', text: '…' });
      nameOf(a.patient_id).then((n) => {
        who.textContent = n;
        const said = `${hm(a.start_at)}–${hm(a.end_at)} ${n}, ${a.status === 'held' && a.expires_at ? `held until ${hm(a.expires_at)}` : word}`;
        block.setAttribute('aria-label', said);
        block.title = said;
      });
      const block = el('li', {
        class: `cal-block appt ${a.status}`, 'data-testid': 'cal-appt', 'data-id': a.id, 'data-status': a.status, 'data-start': a.start_at,
        'aria-label': `${hm(a.start_at)}–${hm(a.end_at)}, ${word}`,
      },
      el('span', { class: 'when', text: `${hm(a.start_at)} ` }), who,
      el('span', { class: 'state', text: a.status === 'held' && a.expires_at ? ` · held until ${hm(a.expires_at)}` : ` · ${word}` }));
      styled(block, { top: `${top(a.start_at)}px`, height: `${Math.max(16, (new Date(a.end_at) - new Date(a.start_at)) / 60000 * PX_PER_MIN)}px` });
      col.append(block);
    }
    body.replaceChildren(grid);
    const booked = appts.filter((a) => a.status === 'booked').length;
    const held = appts.filter((a) => a.status === 'held').length;
    status.textContent = `${booked} booked, ${held} held, ${slots.length} free slot${slots.length === 1 ? '' : 's'}.`;
  }
  await draw();
}

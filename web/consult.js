// The consult page: sign in (or take a token from the URL fragment), join a consult's
// signalling socket, wait to be admitted, then send and receive media through the server's
// SFU, chat, and hang up. State is exposed on `window.coherency` for the browser tests.
'use strict';

const C = (window.coherency = {
  token: null, consultId: null, role: null, state: 'signed-out', participantId: null,
  ws: null, pc: null, events: [], chats: [], errors: [], localStream: null, ending: false,
  // Other admitted participants (host view): id → { role, user, muted: { audio, video } }.
  people: {},
  // Display names by user id, from the API (the clinician for everyone; every participant for the host).
  names: {},
  // The caller's own user id (from the API), to tell their chat lines.
  userId: null,
  patientId: null,
  // The wound scan asked for in this consult: { id, status, measurements }.
  scan: null,
  clinicianId: null,
});
const $ = (id) => document.getElementById(id);
const show = (id, on) => { $(id).hidden = !on; };

// What the header says for each state.
const STATE_WORDS = {
  'signed-out': 'Signed out', 'signed-in': 'Signed in', waiting: 'In the waiting room', admitted: 'In the consult',
  denied: 'Not admitted', removed: 'Removed from the consult', left: 'You left', ended: 'Ended',
};

function setState(s) {
  C.state = s;
  if (s !== 'admitted') pollQueue(false);
  $('status').textContent = STATE_WORDS[s] || (s.startsWith('closed:') ? 'Disconnected' : s);
  $('status').dataset.state = s;
}

// Sign-in failures in words (the API's stable codes).
const LOGIN_ERRORS = {
  invalid_credentials: 'The email or password is not right.',
  invalid_totp: 'That authenticator code is not right, or was already used. Wait for the next one.',
  account_locked: 'Too many failed attempts: the account is locked for a while.',
  account_disabled: 'This account is disabled. Ask the clinic.',
  rate_limited: 'Too many attempts. Wait a moment and try again.',
};
// Why a consult ended, in words.
const END_REASONS = { host_ended: 'The clinician ended the consult.', ended: 'The consult has ended.' };
const ROLE_WORDS = { host: 'the clinician', patient: 'the patient', interpreter: 'the interpreter', family: 'a family member', clinician: 'a clinician' };

/// A participant's name: their display name when the API gave it, else their role in words.
function nameOf(userId, role) {
  return (userId && C.names[userId]) || ROLE_WORDS[role] || 'someone';
}

/// The consult's people as the caller may see them (the clinician for everyone; the whole
/// roster for the host), kept in `C.names`.
async function loadNames() {
  try {
    const v = await api('GET', `/v1/consults/${C.consultId}`);
    C.clinicianId = v.clinician_id;
    if (v.clinician_name) C.names[v.clinician_id] = v.clinician_name;
    if (v.me) C.userId = v.me.user_id;
    C.patientId = v.patient_id;
    for (const p of [...(v.participants || []), ...(v.me ? [v.me] : [])]) if (p.display_name) C.names[p.user_id] = p.display_name;
    $('with').textContent = v.clinician_name && C.role !== 'host' ? `With ${v.clinician_name} ·` : '';
    renderPeople();
  } catch (err) { C.errors.push(`consult: ${err.message}`); }
}

/// One event as a sentence (`track_published` → "Ada Lovelace started sharing video").
function eventText(e) {
  const who = nameOf(e.user_id, e.role);
  const kind = e.data && e.data.kind;
  switch (e.kind) {
    case 'opened': return 'The consult room opened';
    case 'checked_in': return `${who} checked in`;
    case 'admitted': return `${who} was admitted`;
    case 'denied': return `${who} was not admitted`;
    case 'invited': return `${who} was invited`;
    case 'joined': return `${who} joined`;
    case 'left': return `${who} left`;
    case 'left_before_joined': return `${who} left before joining`;
    case 'removed': return `${who} was removed`;
    case 'track_published': return `${who} started sharing ${kind || 'media'}`;
    case 'track_unpublished': return `${who} stopped sharing ${kind || 'media'}`;
    case 'scan_requested': return 'A wound scan was requested';
    case 'scan_progress': return e.data && e.data.status === 'processing' ? 'The wound scan is being measured' : 'The phone is scanning the wound';
    case 'scan_finished': return { failed: 'The wound scan failed', cancelled: 'The wound scan was cancelled' }[e.data && e.data.status] || 'The wound scan finished';
    case 'muted': return `${who}'s ${kind || 'media'} was muted`;
    case 'unmuted': return `${who}'s ${kind || 'media'} was unmuted`;
    case 'ended': return END_REASONS[e.data && e.data.reason] || 'The consult ended';
    default: return e.kind.replace(/_/g, ' ');
  }
}

async function api(method, path, body) {
  const res = await fetch(path, {
    method,
    headers: { 'authorization': `Bearer ${C.token}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch { /* not JSON */ }
  if (res.status === 401) signedOut('Your session has ended. Sign in again.');
  if (!res.ok) throw new Error((json && json.error && json.error.code) || `HTTP ${res.status}`);
  return json;
}

$('login-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  $('login-error').textContent = '';
  try {
    const body = { email: $('email').value, password: $('password').value };
    if ($('totp').value) body.totp_code = $('totp').value;
    const res = await fetch('/v1/auth/login', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    const json = await res.json();
    if (!res.ok && json.error.code === 'mfa_code_required') {
      // The password was right; this account also needs its authenticator code.
      $('totp').focus();
      throw new Error('Enter the code from your authenticator app, then sign in again.');
    }
    if (!res.ok) throw new Error(LOGIN_ERRORS[json.error && json.error.code] || (json.error && json.error.message) || `Sign-in failed (${res.status}).`);
    C.token = json.access_token;
    sessionStorage.setItem('coherency.token', json.access_token);
    sessionStorage.setItem('coherency.user', JSON.stringify(json.user));
    $('password').value = '';
    signedIn();
    if ($('consult-id').value) join($('consult-id').value.trim());
  } catch (err) { $('login-error').textContent = String(err.message || err); }
});

/// Back to the sign-in form, saying why (an expired or revoked session).
function signedOut(why) {
  C.token = null;
  sessionStorage.removeItem('coherency.token');
  sessionStorage.removeItem('coherency.user');
  if (C.ws) C.ws.close();
  setState('signed-out');
  for (const id of ['join', 'waiting', 'room']) show(id, false);
  show('login', true);
  $('login-error').textContent = why;
}

function signedIn() {
  setState('signed-in');
  $('login-error').textContent = '';
  $('join-error').textContent = '';
  show('login', false);
  show('join', true);
}

$('join-form').addEventListener('submit', (e) => { e.preventDefault(); join($('consult-id').value.trim()); });

// Why a consult cannot be joined, in words (the API's codes).
const JOIN_ERRORS = {
  not_found: 'No consult with this link is open to you. Check the link, or ask the clinic for a new one.',
  consult_ended: 'This consult has ended.',
  check_in_too_early: 'The consult opens 15 minutes before the appointment. Come back then.',
};

async function join(consultId) {
  C.consultId = consultId;
  $('join-error').textContent = '';
  try {
    // Asked first, so a wrong or foreign link gets words, not a closed socket.
    await api('GET', `/v1/consults/${consultId}`);
  } catch (err) {
    $('join-error').textContent = JOIN_ERRORS[err.message] || `The consult could not be opened (${err.message}).`;
    show('join', !!C.token);
    return;
  }
  try {
    const { ticket } = await api('POST', '/v1/auth/ws-ticket', {});
    const proto = location.protocol === 'https:' ? 'wss' : 'ws';
    const ws = new WebSocket(`${proto}://${location.host}/v1/consults/${consultId}/signal?ticket=${encodeURIComponent(ticket)}`);
    C.ws = ws;
    // One message at a time, in order: descriptions must not interleave.
    ws.onmessage = (m) => { signalChain = signalChain.then(() => onSignal(JSON.parse(m.data))).catch((e) => C.errors.push(String(e))); };
    ws.onclose = (ev) => {
      if (C.state !== 'ended' && C.state !== 'denied' && C.state !== 'removed') setState(`closed:${ev.code}`);
      if (C.pc) { C.pc.close(); C.pc = null; }
    };
    show('join', false);
  } catch (err) { $('join-error').textContent = JOIN_ERRORS[err.message] || String(err.message || err); }
}

function send(msg) { if (C.ws && C.ws.readyState === WebSocket.OPEN) C.ws.send(JSON.stringify(msg)); }

let pendingCandidates = [];

async function startMedia(iceServers) {
  if (C.pc) return;
  const pc = new RTCPeerConnection({ iceServers });
  C.pc = pc;
  pc.onicecandidate = ({ candidate }) => { if (candidate && candidate.candidate) send({ type: 'ice', candidate: candidate.toJSON() }); };
  pc.ontrack = ({ track, streams }) => {
    const stream = streams[0] || new MediaStream([track]);
    let v = document.querySelector(`video[data-stream="${stream.id}"]`);
    if (!v) {
      v = document.createElement('video');
      v.autoplay = true; v.playsInline = true; v.dataset.stream = stream.id; v.className = 'remote';
      $('remotes').appendChild(v);
    }
    v.srcObject = stream;
  };
  // The client is the polite peer: it offers its own tracks, and yields to a server offer.
  pc.onnegotiationneeded = async () => {
    try {
      await pc.setLocalDescription();
      send({ type: 'offer', sdp: pc.localDescription.sdp });
    } catch (err) { C.errors.push(String(err)); }
  };
  try {
    C.localStream = await navigator.mediaDevices.getUserMedia({ audio: true, video: { width: 320, height: 240 } });
    $('local').srcObject = C.localStream;
    for (const t of C.localStream.getTracks()) pc.addTrack(t, C.localStream);
  } catch (err) { C.errors.push(`media: ${err}`); }
}

let signalChain = Promise.resolve();

async function onRemoteDescription(desc) {
  const pc = C.pc;
  if (!pc) return;
  // The client is polite: a server offer that collides with its own wins. Setting a remote
  // offer over a local one rolls the local one back implicitly; an explicit rollback would
  // throw while our own offer is still being made (state still `stable`).
  if (desc.type === 'answer' && pc.signalingState !== 'have-local-offer') return; // stale answer
  await pc.setRemoteDescription(desc);
  for (const c of pendingCandidates) await pc.addIceCandidate(c).catch(() => {});
  pendingCandidates = [];
  if (desc.type === 'offer') {
    await pc.setLocalDescription();
    send({ type: 'answer', sdp: pc.localDescription.sdp });
  }
}

function admitted() {
  setState('admitted');
  show('waiting', false);
  show('room', true);
  if (C.role === 'host') { loadWounds(); loadSummary(); }
  show('queue-panel', C.role === 'host');
  show('people-panel', C.role === 'host');
  if (C.role === 'host') { refreshQueue(); pollQueue(true); }
  startMedia(C.iceServers || []);
}

async function onSignal(m) {
  switch (m.type) {
    case 'welcome':
      C.role = m.role; C.participantId = m.participant_id; C.iceServers = m.ice_servers;
      loadNames();
      if (m.state === 'admitted') admitted(); else { setState('waiting'); show('waiting', true); }
      break;
    case 'waiting': $('position').textContent = m.position; break;
    case 'admitted': if (C.state !== 'admitted') admitted(); break;
    case 'denied': setState('denied'); show('waiting', false); show('ended', true); $('ended-reason').textContent = 'The clinician could not admit you.'; break;
    case 'removed': setState('removed'); show('room', false); show('ended', true); break;
    case 'offer': await onRemoteDescription({ type: 'offer', sdp: m.sdp }).catch((e) => C.errors.push(String(e))); break;
    case 'answer': await onRemoteDescription({ type: 'answer', sdp: m.sdp }).catch((e) => C.errors.push(String(e))); break;
    case 'ice':
      if (C.pc && C.pc.remoteDescription) await C.pc.addIceCandidate(m.candidate).catch(() => {});
      else pendingCandidates.push(m.candidate);
      break;
    case 'chat': {
      C.chats.push(m);
      const li = document.createElement('li');
      // `from` is the sender's user id.
      const mine = C.userId && m.from === C.userId;
      li.textContent = `${mine ? 'You' : nameOf(m.from, m.role)}: ${m.text}`;
      $('chat').appendChild(li);
      break;
    }
    case 'event': {
      C.events.push(m.event);
      // Someone new to the host: their name first (the roster is the host's to read).
      if (C.role === 'host' && m.event.user_id && !C.names[m.event.user_id]) await loadNames();
      const li = document.createElement('li');
      li.dataset.seq = m.event.seq;
      li.dataset.kind = m.event.kind;
      const t = document.createElement('time');
      const at = new Date(m.event.at);
      t.dateTime = m.event.at;
      t.textContent = Number.isNaN(at.getTime()) ? '' : at.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' });
      li.append(t, eventText(m.event));
      $('events').appendChild(li);
      $('events').scrollTop = $('events').scrollHeight;
      if (C.role === 'host') { if (m.event.kind !== 'ended') refreshQueue(); trackPeople(m.event); }
      if (['scan_requested', 'scan_progress', 'scan_finished'].includes(m.event.kind) && m.event.data && m.event.data.scan_id) {
        scanChanged(m.event.data.scan_id, m.event.data.status || 'requested');
      }
      break;
    }
    case 'ended':
      setState('ended'); show('room', false); show('waiting', false); show('ended', true);
      $('ended-reason').textContent = END_REASONS[m.reason] || m.reason;
      if (C.localStream) C.localStream.getTracks().forEach((t) => t.stop());
      break;
    case 'scan_request':
      // The clinician asked this patient for a scan: the phone app takes it from here.
      scanChanged(m.scan_id, 'requested');
      show('scan-prompt', true);
      break;
    case 'scan_result':
      scanChanged(m.scan_id, 'complete', m.measurements);
      break;
    case 'error': C.errors.push(`${m.code}: ${m.message}`); break;
    default: break;
  }
}

// The host's list of who is in the call, kept from the room's events, with a mute toggle
// per medium: the server stops forwarding that participant's track to everyone.
function trackPeople(e) {
  const id = e.participant_id;
  if (!id || id === C.participantId) return;
  const p = C.people[id];
  switch (e.kind) {
    case 'admitted': case 'joined':
      if (!p) C.people[id] = { role: e.role, user: e.user_id, muted: { audio: false, video: false } };
      break;
    case 'left': case 'removed': case 'denied': case 'left_before_joined':
      delete C.people[id];
      break;
    case 'muted': case 'unmuted':
      if (p && e.data && e.data.kind) p.muted[e.data.kind] = e.kind === 'muted';
      break;
    default: return;
  }
  renderPeople();
}

function renderPeople() {
  const ul = $('people');
  ul.replaceChildren();
  for (const [id, p] of Object.entries(C.people)) {
    const li = document.createElement('li');
    li.dataset.participant = id;
    li.append(`${nameOf(p.user, p.role)} `);
    for (const kind of ['audio', 'video']) {
      const b = document.createElement('button');
      const muted = p.muted[kind];
      b.textContent = `${muted ? 'Unmute' : 'Mute'} ${kind}`;
      b.className = `mute-${kind}`;
      b.dataset.muted = String(muted);
      b.onclick = () => send({ type: 'mute', participant_id: id, kind, muted: !muted });
      li.append(b);
    }
    ul.appendChild(li);
  }
}

// The host's waiting list is polled while the host is in the room, and only then: once the
// consult ends (or the socket closes) the poll stops, rather than asking for the queue of a
// consult that no longer has one (409 consult_ended).
let queuePoll = null;
// Queue requests in flight: hanging up waits for them, so none reaches the server after the end.
const queueRequests = new Set();
function pollQueue(on) {
  if (on && !queuePoll) queuePoll = setInterval(() => { if (C.state === 'admitted') refreshQueue(); }, 1000);
  if (!on && queuePoll) { clearInterval(queuePoll); queuePoll = null; }
}

function refreshQueue() {
  if (C.role !== 'host' || C.state !== 'admitted' || C.ending) return Promise.resolve();
  const req = loadQueue().finally(() => queueRequests.delete(req));
  queueRequests.add(req);
  return req;
}

async function loadQueue() {
  try {
    const q = await api('GET', `/v1/consults/${C.consultId}/queue`);
    const ul = $('queue');
    ul.replaceChildren();
    for (const p of q) {
      const li = document.createElement('li');
      li.dataset.participant = p.id;
      li.textContent = `${p.display_name || ROLE_WORDS[p.role] || p.role}, waiting since ${new Date(p.checked_in_at).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' })} `;
      const admit = document.createElement('button');
      admit.textContent = 'Admit'; admit.className = 'admit';
      admit.onclick = () => api('POST', `/v1/consults/${C.consultId}/participants/${p.id}/admit`, {}).then(refreshQueue);
      const deny = document.createElement('button');
      deny.textContent = 'Deny'; deny.className = 'deny';
      deny.onclick = () => api('POST', `/v1/consults/${C.consultId}/participants/${p.id}/deny`, {}).then(refreshQueue);
      li.append(admit, deny);
      ul.appendChild(li);
    }
  } catch (err) {
    if (err.message === 'consult_ended') { pollQueue(false); return; }
    C.errors.push(`queue: ${err.message}`);
  }
}

// --- the wound scan asked for inside the consult ------------------------------------------

const SCAN_WORDS = {
  requested: 'Requested: waiting for the phone.',
  created: 'Requested: waiting for the phone.',
  streaming: 'The phone is scanning…',
  processing: 'Scanned: measuring the wound…',
  complete: 'Measured.',
  failed: 'The scan failed. Ask for another.',
  cancelled: 'The scan was cancelled.',
};
const ROWS = [['outline_area_mm2', 'Area', 'mm²', 1], ['length_mm', 'Length', 'mm', 1], ['width_mm', 'Width', 'mm', 1],
  ['max_depth_mm', 'Max depth', 'mm', 2], ['volume_mm3', 'Volume', 'mm³', 0]];

/// The scan's newest state, shown to both sides: status in words, then the measurements.
function scanChanged(id, status, measurements) {
  if (!C.scan || C.scan.id !== id) C.scan = { id, status: null, measurements: null };
  // A late progress event never takes a finished scan back.
  if (!(C.scan.status === 'complete' && status !== 'complete')) C.scan.status = status;
  if (measurements) C.scan.measurements = measurements;
  show('scan-panel', true);
  $('scan-status').textContent = SCAN_WORDS[C.scan.status] || C.scan.status;
  $('scan-status').dataset.status = C.scan.status;
  const list = Array.isArray(C.scan.measurements) ? C.scan.measurements : [];
  const m = list.find((x) => x.method === 'auto') || list[list.length - 1];
  if (m) {
    const body = $('scan-result').tBodies[0];
    body.replaceChildren();
    for (const [k, label, unit, d] of ROWS) {
      const v = m[k];
      if (!v) continue;
      const tr = document.createElement('tr');
      tr.dataset.key = k;
      const th = document.createElement('th'); th.scope = 'row'; th.textContent = label;
      const td = document.createElement('td'); td.textContent = `${v.value.toFixed(d)} ± ${v.uncertainty.toFixed(d)} ${unit}`;
      tr.append(th, td);
      body.appendChild(tr);
    }
    show('scan-result', true);
  } else if (C.scan.status === 'complete') {
    $('scan-status').textContent = 'Scanned, but no automatic measurement: the clinician can draw the outline on the scan page.';
  }
  if (C.role === 'host' && C.scan.status === 'complete' && !$('scan-open')) {
    const a = document.createElement('a');
    a.id = 'scan-open'; a.href = `/web/dashboard/#/scan/${id}`; a.textContent = 'Open the scan (3D, outline)';
    $('scan-status').after(a);
  }
}

const VERDICT_WORDS = { on_track: 'on track', not_on_track: 'not on track', too_early: 'too early to judge' };

/// The host's summary of the patient beside the video: who, their allergies, and each open
/// wound with its latest measurement and four-week verdict.
async function loadSummary() {
  if (!C.patientId) await loadNames();
  if (!C.patientId) return;
  const li = (text) => { const e = document.createElement('li'); e.textContent = text; return e; };
  try {
    const [p, allergies, { wounds }] = await Promise.all([
      api('GET', `/v1/patients/${C.patientId}`),
      api('GET', `/v1/patients/${C.patientId}/allergies`),
      api('GET', `/v1/patients/${C.patientId}/wounds`),
    ]);
    $('summary-who').textContent = `${p.given_name} ${p.family_name}, born ${p.birth_date}${p.mrn ? ` · ${p.mrn}` : ''}`;
    const active = allergies.filter((a) => !a.status || a.status === 'active');
    $('summary-allergies').replaceChildren(...(active.length
      ? active.map((a) => li(`${a.substance}${a.severity ? ` (${a.severity})` : ''}${a.reaction ? `: ${a.reaction}` : ''}`))
      : [li('None recorded')]));
    const open = wounds.filter((w) => w.status === 'open' || w.status === 'healing');
    const items = await Promise.all(open.map(async (w) => {
      const t = await api('GET', `/v1/wounds/${w.id}/trajectory`).catch(() => null);
      const last = t && [...t.points].reverse().find((x) => x.role === 'baseline' || x.role === 'used');
      const e = li(`${w.site_display}: ${last ? `${last.area_mm2.value.toFixed(0)} ± ${last.area_mm2.uncertainty.toFixed(0)} mm² on ${new Date(last.taken_at).toLocaleDateString()}` : 'not measured yet'}${t ? `, ${VERDICT_WORDS[t.metrics.four_week.verdict] || t.metrics.four_week.verdict}` : ''}`);
      e.dataset.wound = w.id;
      return e;
    }));
    $('summary-wounds').replaceChildren(...(items.length ? items : [li('No open wound')]));
    show('summary-panel', true);
  } catch (err) { C.errors.push(`summary: ${err.message}`); }
}

/// The host's wound list for "Request scan": the patient's wounds, or a new one by site.
async function loadWounds() {
  if (!C.patientId) await loadNames();
  if (!C.patientId) return;
  try {
    const { wounds } = await api('GET', `/v1/patients/${C.patientId}/wounds`);
    const sel = $('scan-wound');
    sel.replaceChildren();
    for (const w of wounds.filter((x) => x.status === 'open' || x.status === 'healing')) {
      const o = document.createElement('option');
      o.value = w.id; o.dataset.site = w.site_display; o.textContent = `${w.site_display} (${w.aetiology.replace(/_/g, ' ')})`;
      sel.appendChild(o);
    }
    const fresh = document.createElement('option');
    fresh.value = ''; fresh.textContent = 'A new wound…';
    sel.appendChild(fresh);
    sel.onchange = () => show('scan-site-label', sel.value === '');
    sel.onchange();
    show('scan-form', true);
    show('scan-panel', true);
  } catch (err) { $('scan-error').textContent = `The patient's wounds could not be loaded (${err.message}).`; show('scan-panel', true); }
}

$('scan-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  $('scan-error').textContent = '';
  const wound = $('scan-wound').value;
  const site = $('scan-site').value.trim();
  if (!wound && !site) { $('scan-error').textContent = 'Name the site of the new wound.'; $('scan-site').focus(); return; }
  // `body_site` always; with a wound, the wound's own site.
  const chosen = $('scan-wound').selectedOptions[0];
  const body = { patient_id: C.patientId, consult_id: C.consultId, body_site: wound ? chosen.dataset.site.slice(0, 100) : site };
  if (wound) body.wound_id = wound;
  $('request-scan').disabled = true;
  try {
    const scan = await api('POST', '/v1/scans', body);
    scanChanged(scan.id, 'requested');
  } catch (err) {
    const why = { consent_required: 'The patient has not consented to scans.', consult_ended: 'The consult has ended.' }[err.message];
    $('scan-error').textContent = why || `The scan could not be requested (${err.message}).`;
  } finally { $('request-scan').disabled = false; }
});

$('chat-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const text = $('chat-text').value.trim();
  if (text) send({ type: 'chat', text });
  $('chat-text').value = '';
});

$('hangup').addEventListener('click', async () => {
  if (C.role === 'host') {
    C.ending = true;
    pollQueue(false);
    await Promise.allSettled([...queueRequests]);
    await api('POST', `/v1/consults/${C.consultId}/end`, {}).catch((e) => C.errors.push(String(e)));
  } else {
    send({ type: 'leave' });
    setState('left');
    show('room', false);
  }
});

// `#token=…&consult=…` signs in and joins at once (links from the app, tests). Without a
// token in the fragment, the dashboard's sign-in in this tab is used (one sign-in for both
// pages: the dashboard keeps its token in this origin's session storage), so the board's
// "Open consult" and "Join" links carry only `#consult=…`.
(function fromFragment() {
  const f = new URLSearchParams(location.hash.slice(1));
  const token = f.get('token') || sessionStorage.getItem('coherency.token');
  if (token) {
    C.token = token;
    history.replaceState(null, '', location.pathname);
    signedIn();
    if (f.get('consult')) { $('consult-id').value = f.get('consult'); join(f.get('consult')); }
  } else if (f.get('consult')) {
    $('consult-id').value = f.get('consult');
  }
})();

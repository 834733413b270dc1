// The consult view (#/consult/<id>): join the consult's signalling socket with this tab's
// session, wait to be admitted, then send and receive media through the server's SFU, chat,
// and hang up. The clinician (host) also has the waiting list, the people in the call with
// their mute toggles, the patient's summary, and "Request scan"; both sides follow the scan
// live (frames, coverage, what the phone is told) and then see its mesh and measurements,
// where the clinician can draw or adjust the outline. State is exposed on
// `window.coherency` for the browser tests. Leaving the view leaves the room.

import { api, auth, el, pm, woundName } from './core.js';
import { qrSvg } from './enrol.js';
import { scanView } from './scan.js';

let C = null;
let view = null;
const $ = (id) => document.getElementById(id);
const show = (id, on) => { const e = $(id); if (e) e.hidden = !on; };

/// The view's markup: fixed text only (everything from the API is set as text afterwards).
const MARKUP = `
<h2 class="consult-head"><span>Consult</span> <span id="with"></span> <span id="status" role="status" data-state="signed-in">Connecting</span></h2>
<section id="join" class="card" hidden>
  <h3>Join a consult</h3>
  <form id="join-form">
    <label for="consult-id">Consult id</label> <input id="consult-id" required autocomplete="off">
    <button id="join-button" type="submit">Join</button>
  </form>
  <p id="join-error" class="error" role="alert"></p>
</section>
<section id="waiting" class="card" hidden>
  <h3>Waiting room</h3>
  <p>The clinician will let you in shortly. You are number <strong id="position">?</strong> in the queue.</p>
  <ul id="waiting-messages" aria-label="Messages from the clinic" aria-live="polite"></ul>
</section>
<section id="room" class="consult-room" hidden>
  <div class="consult-main">
    <div id="videos">
      <figure><video id="local" autoplay playsinline muted></video><figcaption>You</figcaption></figure>
      <div id="remotes"></div>
    </div>
    <section id="scan-panel" class="card" aria-labelledby="scan-h" hidden>
      <h3 id="scan-h">Wound scan</h3>
      <form id="scan-form" hidden>
        <label for="scan-wound">Wound</label> <select id="scan-wound"></select>
        <span id="scan-site-label" hidden><label for="scan-site">Site of the new wound</label> <input id="scan-site" maxlength="100" autocomplete="off"></span>
        <button id="request-scan" type="submit">Request scan</button>
      </form>
      <div id="scan-prompt" hidden>
        <p><strong>Your clinician asked for a wound scan.</strong> Open the Coherency app on your phone: the request is waiting there.
        Or scan this code with the phone's camera, or open the link on the phone.</p>
        <div id="scan-link"></div>
      </div>
      <p id="scan-status" role="status"></p>
      <div id="scan-live" hidden>
        <p><label for="scan-coverage">Wound seen</label> <progress id="scan-coverage" max="1" value="0"></progress> <span id="scan-coverage-pct"></span>
        · <span id="scan-frames">0 frames</span></p>
        <ul id="scan-guidance" aria-live="polite"></ul>
      </div>
      <p id="scan-error" class="error" role="alert"></p>
      <div id="scan-view"></div>
    </section>
  </div>
  <aside class="consult-side">
    <div id="queue-panel" hidden><h3>Waiting</h3><ul id="queue"></ul></div>
    <div id="people-panel" hidden><h3>In the call</h3><ul id="people"></ul></div>
    <div id="summary-panel" hidden>
      <h3>Patient</h3>
      <p id="summary-who"></p>
      <h4>Allergies</h4><ul id="summary-allergies"></ul>
      <h4>Wounds</h4><ul id="summary-wounds"></ul>
    </div>
    <h3>Chat</h3>
    <ul id="chat" tabindex="0" aria-label="Chat messages"></ul>
    <form id="chat-form"><input id="chat-text" maxlength="2000" autocomplete="off" aria-label="Message"> <button type="submit">Send</button></form>
    <button id="hangup" type="button" class="danger">Hang up</button>
    <h3>Events</h3>
    <ul id="events" tabindex="0" aria-label="What happened in the consult"></ul>
  </aside>
</section>
<section id="ended" class="card" hidden><h3 id="ended-title">The consult has ended</h3><p id="ended-reason"></p><p><a href="#/board">Back to the board</a></p></section>`;

// What the heading says for each state.
const STATE_WORDS = {
  'signed-in': 'Not in a consult', connecting: 'Connecting…', waiting: 'In the waiting room', admitted: 'In the consult',
  denied: 'Not admitted', removed: 'Removed from the consult', left: 'You left', ended: 'Ended',
};
// Why a consult ended, in words.
const END_REASONS = { host_ended: 'The clinician ended the consult.', ended: 'The consult has ended.' };
const ROLE_WORDS = { host: 'the clinician', patient: 'the patient', interpreter: 'the interpreter', family: 'a family member', clinician: 'a clinician' };
// Why a consult cannot be joined, in words (the API's codes).
const JOIN_ERRORS = {
  not_found: 'No consult with this link is open to you. Check the link, or ask the clinic for a new one.',
  consult_ended: 'This consult has ended.',
  check_in_too_early: 'The consult opens 15 minutes before the appointment. Come back then.',
};

function setState(s) {
  C.state = s;
  if (s !== 'admitted') pollQueue(false);
  $('status').textContent = STATE_WORDS[s] || (s.startsWith('closed:') ? 'Disconnected' : s);
  $('status').dataset.state = s;
}

/// A participant's name: their display name when the API gave it, else their role in words.
function nameOf(userId, role) {
  return (userId && C.names[userId]) || ROLE_WORDS[role] || 'someone';
}

/// The consult's people as the caller may see them (the clinician for everyone; the whole
/// roster for the host), kept in `C.names`.
async function loadNames() {
  try {
    const v = await api(`/v1/consults/${C.consultId}`);
    C.clinicianId = v.clinician_id;
    if (v.clinician_name) C.names[v.clinician_id] = v.clinician_name;
    if (v.me) C.userId = v.me.user_id;
    C.patientId = v.patient_id;
    for (const p of [...(v.participants || []), ...(v.me ? [v.me] : [])]) if (p.display_name) C.names[p.user_id] = p.display_name;
    // The host's list of who is in the call starts from the roster (people admitted before the
    // host's own connection, from the board say); the room's events keep it from then on.
    for (const p of v.participants || []) {
      if (p.state === 'admitted' && p.role !== 'host' && p.id !== C.participantId && !C.people[p.id]) {
        C.people[p.id] = { role: p.role, user: p.user_id, muted: { audio: false, video: false } };
      }
    }
    $('with').textContent = v.clinician_name && C.role !== 'host' ? `with ${v.clinician_name} ·` : '';
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

/// Leaves the room this view is in (its socket and camera), if any. The consult goes on.
export function leaveConsult() {
  if (!C) return;
  C.leaving = true;
  pollQueue(false);
  if (C.ws) C.ws.close(1000);
  if (C.pc) { C.pc.close(); C.pc = null; }
  if (C.localStream) C.localStream.getTracks().forEach((t) => t.stop());
  C = null;
  view = null;
}

/// Draws the consult view into `root` and joins consult `consultId` (or asks for its id).
export function consultPage(root, consultId) {
  if (C && C.consultId === consultId && view && root.contains(view)) return;
  leaveConsult();
  C = window.coherency = {
    token: auth.token, consultId: null, role: null, state: 'signed-in', participantId: null,
    ws: null, pc: null, events: [], chats: [], errors: [], localStream: null, ending: false, leaving: false,
    // Other admitted participants (host view): id → { role, user, muted: { audio, video } }.
    people: {},
    // Display names by user id, from the API (the clinician for everyone; every participant for the host).
    names: {},
    // The caller's own user id (from the API), to tell their chat lines.
    userId: null,
    patientId: null,
    // The wound scan asked for in this consult: { id, status, measurements, live }.
    scan: null,
    clinicianId: null,
    pendingCandidates: [],
    signalChain: Promise.resolve(),
  };
  view = el('div', { class: 'consult' });
  view.innerHTML = MARKUP;
  root.replaceChildren(view);
  wire();
  setState('signed-in');
  if (consultId) { $('consult-id').value = consultId; join(consultId); } else { show('join', true); $('consult-id').focus(); }
}

function wire() {
  $('join-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const id = $('consult-id').value.trim();
    if (id) location.hash = `#/consult/${encodeURIComponent(id)}`;
  });
  $('scan-form').addEventListener('submit', requestScan);
  $('chat-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const text = $('chat-text').value.trim();
    if (text) send({ type: 'chat', text });
    $('chat-text').value = '';
  });
  $('hangup').addEventListener('click', hangUp);
}

async function join(consultId) {
  const me = C;
  C.consultId = consultId;
  $('join-error').textContent = '';
  setState('connecting');
  try {
    // Asked first, so a wrong or foreign link gets words, not a closed socket.
    await api(`/v1/consults/${consultId}`);
  } catch (err) {
    if (me !== C) return;
    if (err.code === 'signed_out') return;
    setState('signed-in');
    $('join-error').textContent = JOIN_ERRORS[err.code] || `The consult could not be opened (${err.message}).`;
    show('join', true);
    return;
  }
  try {
    const { ticket } = await api('/v1/auth/ws-ticket', { json: {} });
    if (me !== C) return;
    const proto = location.protocol === 'https:' ? 'wss' : 'ws';
    const ws = new WebSocket(`${proto}://${location.host}/v1/consults/${consultId}/signal?ticket=${encodeURIComponent(ticket)}`);
    C.ws = ws;
    // One message at a time, in order: descriptions must not interleave.
    ws.onmessage = (m) => { me.signalChain = me.signalChain.then(() => (me === C ? onSignal(JSON.parse(m.data)) : null)).catch((e) => me.errors.push(String(e))); };
    ws.onclose = (ev) => {
      if (me !== C) return;
      if (!['ended', 'denied', 'removed', 'left'].includes(C.state)) setState(`closed:${ev.code}`);
      if (C.pc) { C.pc.close(); C.pc = null; }
    };
    show('join', false);
  } catch (err) {
    if (me !== C) return;
    $('join-error').textContent = JOIN_ERRORS[err.code] || String(err.message || err);
    show('join', true);
  }
}

function send(msg) { if (C && C.ws && C.ws.readyState === WebSocket.OPEN) C.ws.send(JSON.stringify(msg)); }

async function startMedia(iceServers) {
  if (C.pc) return;
  const me = C;
  const pc = new RTCPeerConnection({ iceServers });
  C.pc = pc;
  pc.onicecandidate = ({ candidate }) => { if (candidate && candidate.candidate) send({ type: 'ice', candidate: candidate.toJSON() }); };
  pc.ontrack = ({ track, streams }) => {
    const stream = streams[0] || new MediaStream([track]);
    let v = document.querySelector(`video[data-stream="${stream.id}"]`);
    if (!v) {
      v = el('video', { 'data-stream': stream.id, class: 'remote' });
      v.autoplay = true; v.playsInline = true;
      $('remotes')?.appendChild(v);
    }
    v.srcObject = stream;
  };
  // The client is the polite peer: it offers its own tracks, and yields to a server offer.
  pc.onnegotiationneeded = async () => {
    try {
      await pc.setLocalDescription();
      send({ type: 'offer', sdp: pc.localDescription.sdp });
    } catch (err) { me.errors.push(String(err)); }
  };
  try {
    const stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: { width: 320, height: 240 } });
    if (me !== C) { stream.getTracks().forEach((t) => t.stop()); return; }
    C.localStream = stream;
    $('local').srcObject = stream;
    for (const t of stream.getTracks()) pc.addTrack(t, stream);
  } catch (err) { me.errors.push(`media: ${err}`); }
}

async function onRemoteDescription(desc) {
  const pc = C.pc;
  if (!pc) return;
  // The client is polite: a server offer that collides with its own wins. Setting a remote
  // offer over a local one rolls the local one back implicitly; an explicit rollback would
  // throw while our own offer is still being made (state still `stable`).
  if (desc.type === 'answer' && pc.signalingState !== 'have-local-offer') return; // stale answer
  await pc.setRemoteDescription(desc);
  for (const c of C.pendingCandidates) await pc.addIceCandidate(c).catch(() => {});
  C.pendingCandidates = [];
  if (desc.type === 'offer') {
    await pc.setLocalDescription();
    send({ type: 'answer', sdp: pc.localDescription.sdp });
  }
}

function admitted() {
  setState('admitted');
  show('waiting', false);
  show('room', true);
  const host = C.role === 'host';
  if (host) { loadWounds(); loadSummary(); }
  show('queue-panel', host);
  show('people-panel', host);
  if (host) { refreshQueue(); pollQueue(true); }
  loadHistory();
  startMedia(C.iceServers || []);
}

/// The room is over for this view: say why, stop the camera.
const OVER_TITLES = { denied: 'You were not admitted', removed: 'You were removed from the consult', left: 'You left the consult' };

function over(state, why) {
  setState(state);
  $('ended-title').textContent = OVER_TITLES[state] || 'The consult has ended';
  show('room', false); show('waiting', false); show('ended', true);
  $('ended-reason').textContent = why;
  if (C.localStream) C.localStream.getTracks().forEach((t) => t.stop());
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
    case 'denied': over('denied', 'The clinician could not admit you to this consult. Contact the clinic if you need another appointment.'); break;
    case 'removed': over('removed', 'The clinician removed you from the consult.'); break;
    case 'offer': await onRemoteDescription({ type: 'offer', sdp: m.sdp }).catch((e) => C.errors.push(String(e))); break;
    case 'answer': await onRemoteDescription({ type: 'answer', sdp: m.sdp }).catch((e) => C.errors.push(String(e))); break;
    case 'ice':
      if (C.pc && C.pc.remoteDescription) await C.pc.addIceCandidate(m.candidate).catch(() => {});
      else C.pendingCandidates.push(m.candidate);
      break;
    case 'chat': {
      C.chats.push(m);
      // `from` is the sender's user id; a message to this participant alone says so.
      const mine = C.userId && m.from === C.userId;
      const line = `${mine ? 'You' : nameOf(m.from, m.role)}${m.to ? ' (to you)' : ''}: ${m.text}`;
      if (C.state === 'admitted') $('chat').appendChild(el('li', { text: line }));
      else $('waiting-messages').appendChild(el('li', { text: `${nameOf(m.from, m.role)}: ${m.text}` }));
      break;
    }
    case 'event': {
      // Someone new to the host: their name first (the roster is the host's to read).
      if (C.role === 'host' && m.event.user_id && !C.names[m.event.user_id]) await loadNames();
      if (!C || !addEvent(m.event)) return;
      renderEvents();
      if (C.role === 'host') { if (m.event.kind !== 'ended') refreshQueue(); trackPeople(m.event); }
      scanEvent(m.event);
      break;
    }
    case 'ended': over('ended', END_REASONS[m.reason] || m.reason); break;
    case 'scan_request':
      // The clinician asked this patient for a scan: the phone app takes it from here.
      scanChanged(m.scan_id, 'requested');
      promptPhone(m.scan_id);
      break;
    case 'scan_live': scanLive(m); break;
    case 'scan_result': scanChanged(m.scan_id, 'complete'); break;
    case 'error': C.errors.push(`${m.code}: ${m.message}`); break;
    default: break;
  }
}

/// Keeps `e` in the timeline (in `seq` order, once): false when it was there already.
function addEvent(e) {
  if (C.events.some((x) => x.seq === e.seq)) return false;
  C.events.push(e);
  C.events.sort((a, b) => a.seq - b.seq);
  return true;
}

/// The timeline, one sentence per event with its time.
function renderEvents() {
  $('events').replaceChildren(...C.events.map((e) => {
    const at = new Date(e.at);
    const t = el('time', { datetime: e.at, text: Number.isNaN(at.getTime()) ? '' : at.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' }) });
    return el('li', { 'data-seq': e.seq, 'data-kind': e.kind }, t, eventText(e));
  }));
  $('events').scrollTop = $('events').scrollHeight;
}

/// A scan event of the room moves the scan panel on.
function scanEvent(e) {
  if (['scan_requested', 'scan_progress', 'scan_finished'].includes(e.kind) && e.data && e.data.scan_id) {
    scanChanged(e.data.scan_id, e.data.status || 'requested');
  }
}

/// What happened before this connection (someone admitted from the board before the host
/// opened the consult, a scan asked for before a rejoin): the log, merged with the live events.
async function loadHistory() {
  const me = C;
  try {
    const evs = await api(`/v1/consults/${C.consultId}/events`);
    if (me !== C) return;
    const fresh = evs.filter(addEvent);
    renderEvents();
    for (const e of fresh) scanEvent(e);
  } catch (err) { me.errors.push(`events: ${err.message}`); }
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
  if (!ul) return;
  ul.replaceChildren();
  for (const [id, p] of Object.entries(C.people)) {
    const li = el('li', { 'data-participant': id }, `${nameOf(p.user, p.role)} `);
    for (const kind of ['audio', 'video']) {
      const muted = p.muted[kind];
      li.append(el('button', { type: 'button', class: `small mute-${kind}`, 'data-muted': String(muted), text: `${muted ? 'Unmute' : 'Mute'} ${kind}`,
        onclick: () => send({ type: 'mute', participant_id: id, kind, muted: !muted }) }));
    }
    ul.appendChild(li);
  }
}

// The host's waiting list is polled while the host is in the room, and only then: once the
// consult ends (or the view is left) the poll stops, rather than asking for the queue of a
// consult that no longer has one (409 consult_ended).
let queuePoll = null;
// Queue requests in flight: hanging up waits for them, so none reaches the server after the end.
const queueRequests = new Set();
function pollQueue(on) {
  if (on && !queuePoll) queuePoll = setInterval(() => { if (C && C.state === 'admitted') refreshQueue(); }, 1000);
  if (!on && queuePoll) { clearInterval(queuePoll); queuePoll = null; }
}

function refreshQueue() {
  if (!C || C.role !== 'host' || C.state !== 'admitted' || C.ending) return Promise.resolve();
  const req = loadQueue().finally(() => queueRequests.delete(req));
  queueRequests.add(req);
  return req;
}

async function loadQueue() {
  const me = C;
  try {
    const q = await api(`/v1/consults/${C.consultId}/queue`);
    if (me !== C) return;
    if (!q.length) { $('queue').replaceChildren(el('li', { class: 'empty', text: 'Nobody is waiting.' })); return; }
    $('queue').replaceChildren(...q.map((p) => el('li', { 'data-participant': p.id },
      `${p.display_name || ROLE_WORDS[p.role] || p.role}, waiting since ${new Date(p.checked_in_at).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' })} `,
      el('button', { type: 'button', class: 'small admit', text: 'Admit', onclick: () => api(`/v1/consults/${me.consultId}/participants/${p.id}/admit`, { json: {} }).then(refreshQueue) }),
      el('button', { type: 'button', class: 'small deny', text: 'Deny', onclick: () => api(`/v1/consults/${me.consultId}/participants/${p.id}/deny`, { json: {} }).then(refreshQueue) }))));
  } catch (err) {
    if (err.code === 'consult_ended') { pollQueue(false); return; }
    me.errors.push(`queue: ${err.message}`);
  }
}

// --- the wound scan asked for inside the consult ------------------------------------------

const SCAN_WORDS = {
  requested: 'Requested: waiting for the phone.',
  created: 'Requested: waiting for the phone.',
  streaming: 'The phone is scanning…',
  processing: 'Scanned: measuring the wound…',
  complete: 'Scanned: the surface and its measurements are below.',
  failed: 'The scan failed. Ask for another.',
  cancelled: 'The scan was cancelled.',
};
// What the phone is told while it scans, in words for the people watching (docs/protocol.md §5).
const GUIDANCE = {
  wound_not_found: 'No wound found yet: point the phone at the wound.',
  wound_off_centre: 'The wound is off-centre: move the phone so the wound is in the middle.',
  rim_not_seen: "The wound's edge is not seen all round: move round the wound.",
  too_far: 'Too far: bring the phone closer.',
  too_close: 'Too close: move the phone back.',
  moving_too_fast: 'Moving too fast: slow down.',
  low_valid_depth: 'The phone sees little depth here: more light, or hold it square to the skin.',
  low_frame_rate: 'The phone is sending few frames: keep the app in front and close other apps.',
  tracking_lost: 'The phone lost track: hold still a moment.',
};

/// The scan's newest state, shown to both sides: status in words, the live figures while it
/// streams, then (once complete) the scan itself — mesh, every measurement with its ±, why
/// there is no automatic one when there is not, and the outline tool for the clinician.
function scanChanged(id, status) {
  if (!C.scan || C.scan.id !== id) C.scan = { id, status: null, live: null, shown: false };
  const finished = ['complete', 'failed', 'cancelled'];
  // A late progress event never takes a finished scan back.
  if (!(finished.includes(C.scan.status) && !finished.includes(status))) C.scan.status = status;
  show('scan-panel', true);
  $('scan-status').textContent = SCAN_WORDS[C.scan.status] || C.scan.status;
  $('scan-status').dataset.status = C.scan.status;
  show('scan-live', C.scan.status === 'streaming' || C.scan.status === 'processing');
  if (finished.includes(C.scan.status)) show('scan-prompt', false);
  if (C.scan.status === 'complete' && !C.scan.shown) {
    C.scan.shown = true;
    const me = C;
    scanView($('scan-view'), id, { heading: false }).catch((e) => me.errors.push(`scan view: ${e.message}`));
  }
}

/// The live figures of the scan as the phone sends it (`scan_live`: frames, fused, coverage,
/// and what the phone is being told).
function scanLive(m) {
  scanChanged(m.scan_id, m.status || 'streaming');
  const prev = C.scan.live;
  // Figures only grow: a late message never takes them back.
  const frames = Math.max(prev?.frames || 0, m.frames || 0);
  C.scan.live = { ...m, frames };
  show('scan-live', C.scan.status === 'streaming' || C.scan.status === 'processing');
  if (typeof m.coverage === 'number') {
    $('scan-coverage').value = m.coverage;
    $('scan-coverage-pct').textContent = `${Math.round(m.coverage * 100)} %`;
  }
  $('scan-frames').textContent = `${frames} frame${frames === 1 ? '' : 's'}${typeof m.fused === 'number' ? `, ${m.fused} fused` : ''}`;
  const words = (m.warnings || []).map((w) => GUIDANCE[w] || w.replace(/_/g, ' '));
  $('scan-guidance').replaceChildren(...words.map((w) => el('li', { text: w })));
}

/// The patient's prompt: a code for the phone's camera and a link that opens the capture on
/// the phone (`POST /v1/scans/{id}/capture-link`, single use, minutes long). Without one, the
/// app's own list of requests still has it.
async function promptPhone(scanId) {
  show('scan-prompt', true);
  const me = C;
  try {
    const link = await api(`/v1/scans/${scanId}/capture-link`, { json: {} });
    if (me !== C) return;
    const until = new Date(link.expires_at).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
    $('scan-link').replaceChildren(qrSvg(link.url, 'Code that opens the scan on your phone'),
      el('p', {}, el('a', { href: link.url, 'data-testid': 'capture-link', rel: 'noreferrer', text: 'Open the scan on this phone' }),
        el('span', { class: 'muted', text: ` (works once, until ${until})` })));
    C.scan.link = link.url;
  } catch (err) { me.errors.push(`capture link: ${err.message}`); }
}

const VERDICT_WORDS = { on_track: 'on track', not_on_track: 'not on track', too_early: 'too early to judge' };

/// The host's summary of the patient beside the video: who, their allergies, and each open
/// wound with its latest measurement and four-week verdict.
async function loadSummary() {
  const me = C;
  if (!C.patientId) await loadNames();
  if (me !== C || !C.patientId) return;
  const li = (text) => el('li', { text });
  try {
    const [p, allergies, { wounds }] = await Promise.all([
      api(`/v1/patients/${C.patientId}`),
      api(`/v1/patients/${C.patientId}/allergies`),
      api(`/v1/patients/${C.patientId}/wounds`),
    ]);
    const active = allergies.filter((a) => !a.status || a.status === 'active');
    const open = wounds.filter((w) => w.status === 'open' || w.status === 'healing');
    const items = await Promise.all(open.map(async (w) => {
      const t = await api(`/v1/wounds/${w.id}/trajectory`).catch(() => null);
      const last = t && [...t.points].reverse().find((x) => x.role === 'baseline' || x.role === 'used');
      const e = el('li', { 'data-wound': w.id }, `${woundName(w)}: ${last ? `${pm(last.area_mm2, 'mm²', 0)} on ${new Date(last.taken_at).toLocaleDateString()}` : 'not measured yet'}${t ? `, ${VERDICT_WORDS[t.metrics.four_week.verdict] || t.metrics.four_week.verdict}` : ''}`);
      return e;
    }));
    if (me !== C) return;
    $('summary-who').textContent = `${p.given_name} ${p.family_name}, born ${p.birth_date}${p.mrn ? ` · ${p.mrn}` : ''}`;
    $('summary-allergies').replaceChildren(...(active.length
      ? active.map((a) => li(`${a.substance}${a.severity ? ` (${a.severity})` : ''}${a.reaction ? `: ${a.reaction}` : ''}`))
      : [li('None recorded')]));
    $('summary-wounds').replaceChildren(...(items.length ? items : [li('No open wound')]));
    show('summary-panel', true);
  } catch (err) { me.errors.push(`summary: ${err.message}`); }
}

/// The host's wound list for "Request scan": the patient's wounds, or a new one by site.
async function loadWounds() {
  const me = C;
  if (!C.patientId) await loadNames();
  if (me !== C || !C.patientId) return;
  try {
    const { wounds } = await api(`/v1/patients/${C.patientId}/wounds`);
    if (me !== C) return;
    const sel = $('scan-wound');
    sel.replaceChildren(...wounds.filter((x) => x.status === 'open' || x.status === 'healing').map((w) =>
      el('option', { value: w.id, 'data-site': w.site_display, text: woundName(w) })),
    el('option', { value: '', text: 'A new wound…' }));
    sel.onchange = () => show('scan-site-label', sel.value === '');
    sel.onchange();
    show('scan-form', true);
    show('scan-panel', true);
  } catch (err) { $('scan-error').textContent = `The patient's wounds could not be loaded (${err.message}).`; show('scan-panel', true); }
}

async function requestScan(e) {
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
  const me = C;
  try {
    const scan = await api('/v1/scans', { json: body });
    if (me === C) scanChanged(scan.id, 'requested');
  } catch (err) {
    const why = { consent_required: 'The patient has not consented to scans.', consult_ended: 'The consult has ended.' }[err.code];
    if (me === C) $('scan-error').textContent = why || `The scan could not be requested (${err.message}).`;
  } finally { if (me === C) $('request-scan').disabled = false; }
}

async function hangUp() {
  if (C.role === 'host') {
    C.ending = true;
    pollQueue(false);
    await Promise.allSettled([...queueRequests]);
    await api(`/v1/consults/${C.consultId}/end`, { json: {} }).catch((e) => C.errors.push(String(e)));
  } else {
    send({ type: 'leave' });
    over('left', 'You left the consult.');
  }
}

// The consult page: sign in (or take a token from the URL fragment), join a consult's
// signalling socket, wait to be admitted, then send and receive media through the server's
// SFU, chat, and hang up. State is exposed on `window.coherency` for the browser tests.
'use strict';

const C = (window.coherency = {
  token: null, consultId: null, role: null, state: 'signed-out', participantId: null,
  ws: null, pc: null, events: [], chats: [], errors: [], localStream: null, ending: false,
  // Other admitted participants (host view): id → { role, muted: { audio, video } }.
  people: {},
});
const $ = (id) => document.getElementById(id);
const show = (id, on) => { $(id).hidden = !on; };

function setState(s) {
  C.state = s;
  if (s !== 'admitted') pollQueue(false);
  $('status').textContent = s;
  $('status').dataset.state = s;
}

async function api(method, path, body) {
  const res = await fetch(path, {
    method,
    headers: { 'authorization': `Bearer ${C.token}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  const json = text ? JSON.parse(text) : null;
  if (!res.ok) throw new Error((json && json.error && json.error.code) || `HTTP ${res.status}`);
  return json;
}

$('login-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  try {
    const body = { email: $('email').value, password: $('password').value };
    if ($('totp').value) body.totp_code = $('totp').value;
    const res = await fetch('/v1/auth/login', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    const json = await res.json();
    if (!res.ok && json.error.code === 'mfa_code_required') {
      // The password was right; this account also needs its authenticator code.
      $('totp').focus();
      throw new Error('enter the code from your authenticator app, then sign in again');
    }
    if (!res.ok) throw new Error(json.error.code);
    C.token = json.access_token;
    signedIn();
  } catch (err) { $('join-error').textContent = String(err.message || err); }
});

function signedIn() {
  setState('signed-in');
  show('login', false);
  show('join', true);
}

$('join-form').addEventListener('submit', (e) => { e.preventDefault(); join($('consult-id').value.trim()); });

async function join(consultId) {
  C.consultId = consultId;
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
  } catch (err) { $('join-error').textContent = String(err.message || err); }
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
  show('queue-panel', C.role === 'host');
  show('people-panel', C.role === 'host');
  if (C.role === 'host') { refreshQueue(); pollQueue(true); }
  startMedia(C.iceServers || []);
}

async function onSignal(m) {
  switch (m.type) {
    case 'welcome':
      C.role = m.role; C.participantId = m.participant_id; C.iceServers = m.ice_servers;
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
      li.textContent = `${m.role}: ${m.text}`;
      $('chat').appendChild(li);
      break;
    }
    case 'event': {
      C.events.push(m.event);
      const li = document.createElement('li');
      li.textContent = `#${m.event.seq} ${m.event.kind}${m.event.role ? ` (${m.event.role})` : ''}`;
      $('events').appendChild(li);
      if (C.role === 'host') { if (m.event.kind !== 'ended') refreshQueue(); trackPeople(m.event); }
      break;
    }
    case 'ended':
      setState('ended'); show('room', false); show('waiting', false); show('ended', true);
      $('ended-reason').textContent = m.reason;
      if (C.localStream) C.localStream.getTracks().forEach((t) => t.stop());
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
      if (!p) C.people[id] = { role: e.role, muted: { audio: false, video: false } };
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
    li.append(`${p.role || 'participant'} `);
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
      li.textContent = `${p.role} since ${new Date(p.checked_in_at).toLocaleTimeString()} `;
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

// `#token=…&consult=…` signs in and joins at once (links from the app, tests).
(function fromFragment() {
  const f = new URLSearchParams(location.hash.slice(1));
  if (f.get('token')) {
    C.token = f.get('token');
    history.replaceState(null, '', location.pathname);
    signedIn();
    if (f.get('consult')) { $('consult-id').value = f.get('consult'); join(f.get('consult')); }
  }
})();

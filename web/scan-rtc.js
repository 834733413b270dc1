// A phantom wound scan streamed over a WebRTC data channel (docs/protocol.md, "WebRTC data
// channel transport"): signalling on GET /v1/scans/{id}/rtc, one data channel labelled
// `scan`, scan stream v1 messages (MessagePack) in fragments of at most 65,535 bytes, the
// bufferedAmount thresholds of the spec. For tests and demos: the frames are rendered here by
// ray casting a 15 mm-radius, 5 mm-deep spherical-cap cavity in flat skin from a camera
// sweeping an arc 25 cm away. State is exposed on `window.coherencyScan` for the browser test.
'use strict';

const S = (window.coherencyScan = {
  state: 'starting', sent: 0, acked: 0, progress: null, finished: null, status: null,
  measurements: null, errors: [], closeCode: null,
});
const $ = (id) => document.getElementById(id);

// --- protocol constants (docs/protocol.md) ------------------------------------------------
const MAX_DC_MESSAGE = 65535;
const START = 0x01, CONT = 0x02, CLOSE = 0x03;
const BUFFERED_HIGH = 1024 * 1024;
const BUFFERED_LOW = 256 * 1024;
const W = 256, H = 192, FX = 212, FY = 212, CX = 127.5, CY = 95.5;
const FRAMES = 90, FPS = 30;

function setState(s) { S.state = s; $('state').textContent = s; }
function fail(e) { S.errors.push(String(e && e.message || e)); $('errors').textContent = S.errors.join('\n'); setState('failed'); }
function counts() { $('counts').textContent = `${S.sent} / ${S.acked}`; }

// --- MessagePack: just what v1 needs --------------------------------------------------------
class Writer {
  constructor(cap) { this.buf = new Uint8Array(cap); this.view = new DataView(this.buf.buffer); this.n = 0; }
  grow(k) {
    if (this.n + k <= this.buf.length) return;
    const b = new Uint8Array(Math.max(this.buf.length * 2, this.n + k));
    b.set(this.buf.subarray(0, this.n)); this.buf = b; this.view = new DataView(b.buffer);
  }
  byte(b) { this.grow(1); this.buf[this.n++] = b; }
  map(n) { this.byte(0x80 | n); }
  array(n) { if (n < 16) this.byte(0x90 | n); else { this.byte(0xdc); this.grow(2); this.view.setUint16(this.n, n); this.n += 2; } }
  str(s) {
    const b = new TextEncoder().encode(s);
    if (b.length < 32) this.byte(0xa0 | b.length); else { this.byte(0xd9); this.byte(b.length); }
    this.grow(b.length); this.buf.set(b, this.n); this.n += b.length;
  }
  uint(v) {
    if (v < 128) this.byte(v);
    else if (v < 256) { this.byte(0xcc); this.byte(v); }
    else if (v < 65536) { this.byte(0xcd); this.grow(2); this.view.setUint16(this.n, v); this.n += 2; }
    else if (v < 2 ** 32) { this.byte(0xce); this.grow(4); this.view.setUint32(this.n, v); this.n += 4; }
    else { this.byte(0xcf); this.grow(8); this.view.setUint32(this.n, Math.floor(v / 2 ** 32)); this.view.setUint32(this.n + 4, v >>> 0); this.n += 8; }
  }
  f32(v) { this.byte(0xca); this.grow(4); this.view.setFloat32(this.n, v); this.n += 4; }
  bin(b) {
    if (b.length < 256) { this.byte(0xc4); this.byte(b.length); }
    else if (b.length < 65536) { this.byte(0xc5); this.grow(2); this.view.setUint16(this.n, b.length); this.n += 2; }
    else { this.byte(0xc6); this.grow(4); this.view.setUint32(this.n, b.length); this.n += 4; }
    this.grow(b.length); this.buf.set(b, this.n); this.n += b.length;
  }
  done() { return this.buf.subarray(0, this.n); }
}

function decode(bytes) {
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let i = 0;
  const str = (n) => { const s = new TextDecoder().decode(bytes.subarray(i, i + n)); i += n; return s; };
  const arr = (n) => { const a = []; for (let k = 0; k < n; k++) a.push(val()); return a; };
  const map = (n) => { const o = {}; for (let k = 0; k < n; k++) { const key = val(); o[key] = val(); } return o; };
  function val() {
    const b = bytes[i++];
    if (b < 0x80) return b;
    if (b >= 0xe0) return b - 256;
    if ((b & 0xf0) === 0x80) return map(b & 0x0f);
    if ((b & 0xf0) === 0x90) return arr(b & 0x0f);
    if ((b & 0xe0) === 0xa0) return str(b & 0x1f);
    let r;
    switch (b) {
      case 0xc0: return null;
      case 0xc2: return false;
      case 0xc3: return true;
      case 0xc4: r = bytes[i]; i += 1; i += r; return bytes.subarray(i - r, i);
      case 0xc5: r = v.getUint16(i); i += 2; i += r; return bytes.subarray(i - r, i);
      case 0xc6: r = v.getUint32(i); i += 4; i += r; return bytes.subarray(i - r, i);
      case 0xca: r = v.getFloat32(i); i += 4; return r;
      case 0xcb: r = v.getFloat64(i); i += 8; return r;
      case 0xcc: return bytes[i++];
      case 0xcd: r = v.getUint16(i); i += 2; return r;
      case 0xce: r = v.getUint32(i); i += 4; return r;
      case 0xcf: r = v.getUint32(i) * 2 ** 32 + v.getUint32(i + 4); i += 8; return r;
      case 0xd0: return v.getInt8(i++);
      case 0xd1: r = v.getInt16(i); i += 2; return r;
      case 0xd2: r = v.getInt32(i); i += 4; return r;
      case 0xd9: r = bytes[i++]; return str(r);
      case 0xda: r = v.getUint16(i); i += 2; return str(r);
      case 0xdb: r = v.getUint32(i); i += 4; return str(r);
      case 0xdc: r = v.getUint16(i); i += 2; return arr(r);
      case 0xdd: r = v.getUint32(i); i += 4; return arr(r);
      case 0xde: r = v.getUint16(i); i += 2; return map(r);
      case 0xdf: r = v.getUint32(i); i += 4; return map(r);
      default: throw new Error(`unsupported MessagePack byte 0x${b.toString(16)}`);
    }
  }
  return val();
}

// --- fragments (docs/protocol.md) -------------------------------------------------------------
function fragments(msg) {
  const out = [];
  const first = Math.min(msg.length, MAX_DC_MESSAGE - 5);
  const head = new Uint8Array(5 + first);
  head[0] = START;
  new DataView(head.buffer).setUint32(1, msg.length);
  head.set(msg.subarray(0, first), 5);
  out.push(head);
  for (let off = first; off < msg.length; off += MAX_DC_MESSAGE - 1) {
    const part = msg.subarray(off, Math.min(msg.length, off + MAX_DC_MESSAGE - 1));
    const c = new Uint8Array(1 + part.length);
    c[0] = CONT; c.set(part, 1);
    out.push(c);
  }
  return out;
}

class Reassembler {
  constructor(max) { this.max = max; this.buf = null; this.n = 0; }
  // Returns {message}, {close: [code, reason]}, or null for a fragment of an incomplete message.
  push(b) {
    if (b.length === 0 || b.length > MAX_DC_MESSAGE) throw new Error('bad data channel message size');
    if (b[0] === START) {
      if (this.buf) throw new Error('START inside a message');
      const total = new DataView(b.buffer, b.byteOffset).getUint32(1);
      if (total === 0 || total > this.max || b.length - 5 > total) throw new Error('bad START');
      if (b.length - 5 === total) return { message: b.subarray(5) };
      this.buf = new Uint8Array(total); this.buf.set(b.subarray(5)); this.n = b.length - 5;
      return null;
    }
    if (b[0] === CONT) {
      if (!this.buf || this.n + b.length - 1 > this.buf.length) throw new Error('bad CONT');
      this.buf.set(b.subarray(1), this.n); this.n += b.length - 1;
      if (this.n < this.buf.length) return null;
      const m = this.buf; this.buf = null; return { message: m };
    }
    if (b[0] === CLOSE) {
      const code = (b[1] << 8) | b[2];
      return { close: [code, new TextDecoder().decode(b.subarray(3))] };
    }
    throw new Error('unknown fragment type');
  }
}

// --- the phantom --------------------------------------------------------------------------------
const RADIUS = 0.015, DEPTH = 0.005;
const RS = (RADIUS * RADIUS + DEPTH * DEPTH) / (2 * DEPTH); // sphere radius of the cap
const SC = RS - DEPTH; // sphere centre height above the skin

const sub = (a, b) => [a[0] - b[0], a[1] - b[1], a[2] - b[2]];
const dot = (a, b) => a[0] * b[0] + a[1] * b[1] + a[2] * b[2];
const cross = (a, b) => [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]];
const norm = (a) => { const l = Math.hypot(a[0], a[1], a[2]); return [a[0] / l, a[1] / l, a[2] / l]; };

/// World-from-camera pose of frame i: an arc at 25 cm, 20° off the skin normal.
function pose(i) {
  const s = i / (FRAMES - 1);
  const az = (150 * s) * Math.PI / 180, tilt = (20 + 6 * Math.sin(2 * Math.PI * s)) * Math.PI / 180;
  const d = 0.25 + 0.02 * Math.sin(2 * Math.PI * s);
  const eye = [d * Math.sin(tilt) * Math.cos(az), d * Math.sin(tilt) * Math.sin(az), d * Math.cos(tilt)];
  const aim = [0.004 * Math.sin(3 * az), 0.004 * Math.cos(2 * az), 0];
  const z = norm(sub(aim, eye));
  const up = [Math.cos(az + Math.PI / 2), Math.sin(az + Math.PI / 2), 0];
  const x = norm(cross(z, up));
  const y = cross(z, x);
  return { eye, R: [x, y, z] }; // columns
}

/// Depth along the camera z of the skin (plane z = 0) with the cavity cut into it.
function render(p) {
  const depth = new Uint8Array(W * H * 2);
  const conf = new Uint8Array(W * H);
  const dv = new DataView(depth.buffer);
  const [x, y, z] = p.R, o = p.eye, c = [0, 0, SC];
  const oc = sub(o, c);
  for (let v = 0; v < H; v++) {
    for (let u = 0; u < W; u++) {
      const rx = (u - CX) / FX, ry = (v - CY) / FY;
      const D = [x[0] * rx + y[0] * ry + z[0], x[1] * rx + y[1] * ry + z[1], x[2] * rx + y[2] * ry + z[2]];
      if (D[2] >= 0) continue;
      let t = -o[2] / D[2];
      const hx = o[0] + t * D[0], hy = o[1] + t * D[1];
      if (hx * hx + hy * hy < RADIUS * RADIUS) {
        // Through the opening: the far intersection with the cap's sphere is the wound bed.
        const a = dot(D, D), b = 2 * dot(D, oc), cc = dot(oc, oc) - RS * RS;
        t = (-b + Math.sqrt(Math.max(0, b * b - 4 * a * cc))) / (2 * a);
      }
      const units = Math.round(t / 0.0001);
      if (units > 0 && units <= 65535) {
        dv.setUint16((v * W + u) * 2, units, true);
        conf[v * W + u] = 2;
      }
    }
  }
  return { depth, conf };
}

function frameMessage(seq, ts, p) {
  const { depth, conf } = render(p);
  const [x, y, z] = p.R, t = p.eye;
  const w = new Writer(W * H * 3 + 512);
  w.map(9);
  w.str('t'); w.str('frame');
  w.str('seq'); w.uint(seq);
  w.str('ts'); w.uint(ts);
  w.str('w'); w.uint(W);
  w.str('h'); w.uint(H);
  w.str('depth'); w.map(3); w.str('fmt'); w.str('u16_0.1mm'); w.str('comp'); w.str('none'); w.str('data'); w.bin(depth);
  w.str('conf'); w.map(3); w.str('comp'); w.str('none'); w.str('max'); w.uint(2); w.str('data'); w.bin(conf);
  w.str('k'); w.array(9); for (const k of [FX, 0, CX, 0, FY, CY, 0, 0, 1]) w.f32(k);
  w.str('pose'); w.array(16);
  for (const k of [x[0], y[0], z[0], t[0], x[1], y[1], z[1], t[1], x[2], y[2], z[2], t[2], 0, 0, 0, 1]) w.f32(k);
  return w.done();
}

function control(fields) {
  const keys = Object.keys(fields);
  const w = new Writer(256);
  w.map(keys.length);
  for (const k of keys) {
    w.str(k);
    const v = fields[k];
    if (typeof v === 'string') w.str(v); else w.uint(v);
  }
  return w.done();
}

// --- the stream ---------------------------------------------------------------------------------
async function api(token, method, path, body) {
  const res = await fetch(path, {
    method,
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  const json = text ? JSON.parse(text) : null;
  if (!res.ok) throw new Error((json && json.error && json.error.code) || `HTTP ${res.status}`);
  return json;
}

function waitFor(cond, what, ms) {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    (function check() {
      if (S.state === 'failed') return reject(new Error(`stopped while waiting for ${what}`));
      if (cond()) return resolve();
      if (performance.now() - t0 > ms) return reject(new Error(`timed out waiting for ${what}`));
      setTimeout(check, 5);
    })();
  });
}

async function run() {
  const params = new URLSearchParams(location.hash.slice(1));
  const token = params.get('token'), scan = params.get('scan');
  if (!token || !scan) throw new Error('open as #token=…&scan=…');
  const { ticket } = await api(token, 'POST', '/v1/auth/ws-ticket', {});
  const proto = location.protocol === 'https:' ? 'wss' : 'ws';
  const ws = new WebSocket(`${proto}://${location.host}/v1/scans/${scan}/rtc?ticket=${encodeURIComponent(ticket)}`);
  setState('signalling');
  let pc = null, dc = null, remoteSet = false;
  const early = [];
  const flow = { welcome: null, acked: 0, slowed: false, finished: null, closed: null };
  const reasm = new Reassembler(64 * 1024);
  ws.onclose = (e) => { S.closeCode = S.closeCode || e.code; };
  ws.onmessage = async (m) => {
    try {
      const s = JSON.parse(m.data);
      if (s.type === 'welcome') {
        pc = new RTCPeerConnection({ iceServers: s.ice_servers });
        pc.onicecandidate = (e) => { if (e.candidate && e.candidate.candidate) ws.send(JSON.stringify({ type: 'ice', candidate: e.candidate.toJSON() })); };
        dc = pc.createDataChannel('scan', { ordered: true });
        dc.binaryType = 'arraybuffer';
        dc.bufferedAmountLowThreshold = BUFFERED_LOW;
        dc.onopen = () => stream(dc, flow, scan).catch(fail);
        dc.onmessage = (e) => {
          try {
            const out = reasm.push(new Uint8Array(e.data));
            if (!out) return;
            if (out.close) { flow.closed = out.close; S.closeCode = out.close[0]; return; }
            onServer(decode(out.message), flow, dc);
          } catch (err) { fail(err); }
        };
        S.pc = pc;
        await pc.setLocalDescription(await pc.createOffer());
        ws.send(JSON.stringify({ type: 'offer', sdp: pc.localDescription.sdp }));
      } else if (s.type === 'answer') {
        await pc.setRemoteDescription({ type: 'answer', sdp: s.sdp });
        remoteSet = true;
        for (const c of early.splice(0)) await pc.addIceCandidate(c);
      } else if (s.type === 'ice') {
        if (remoteSet) await pc.addIceCandidate(s.candidate); else early.push(s.candidate);
      } else if (s.type === 'error') {
        fail(`${s.code}: ${s.message}`);
      }
    } catch (err) { fail(err); }
  };
}

function send(dc, msg) {
  // The spec's flow control: stop above BUFFERED_HIGH, go on at BUFFERED_LOW.
  return (async () => {
    for (const part of fragments(msg)) {
      while (dc.bufferedAmount > BUFFERED_HIGH) {
        await new Promise((r) => dc.addEventListener('bufferedamountlow', r, { once: true }));
      }
      dc.send(part);
    }
  })();
}

function onServer(m, flow, dc) {
  switch (m.t) {
    case 'welcome': flow.welcome = m; flow.acked = m.acked; break;
    case 'ack': flow.acked = m.up_to; S.acked = m.up_to; counts(); break;
    case 'slow': flow.slowed = true; break;
    case 'resume': flow.slowed = false; break;
    case 'progress':
      S.progress = m;
      $('progress').textContent = `received ${m.received}, fused ${m.fused}, coverage ${(m.coverage * 100).toFixed(0)} %`;
      break;
    case 'ping': send(dc, control({ t: 'pong', n: m.n })); break;
    case 'finished': flow.finished = m; S.finished = m; break;
    case 'error': fail(`${m.code}: ${m.message}`); break;
    default: break; // unknown types are ignored
  }
}

async function stream(dc, flow, scan) {
  setState('streaming');
  const params = new URLSearchParams(location.hash.slice(1));
  const token = params.get('token');
  await send(dc, control({ t: 'hello', v: 1, scan, agent: 'coherency-web/scan-rtc' }));
  await waitFor(() => flow.welcome || flow.finished, 'welcome', 10_000);
  if (flow.finished) { setState('finished'); return measure(token, scan); }
  const window_ = flow.welcome.window;
  let seq = flow.welcome.next;
  const ts0 = Date.now() * 1000;
  const t0 = performance.now();
  for (let i = seq - 1; i < FRAMES; i++, seq++) {
    await waitFor(() => !flow.slowed && seq - 1 - flow.acked < window_, 'window space', 30_000);
    const due = t0 + (i * 1000) / FPS;
    if (performance.now() < due) await new Promise((r) => setTimeout(r, due - performance.now()));
    await send(dc, frameMessage(seq, ts0 + Math.round((i * 1e6) / FPS), pose(i)));
    S.sent = seq; counts();
  }
  await send(dc, control({ t: 'finish', last: seq - 1 }));
  await waitFor(() => flow.finished, 'finished', 60_000);
  setState('finished');
  await measure(token, scan);
}

async function measure(token, scan) {
  setState('processing');
  const t0 = performance.now();
  for (;;) {
    const s = await api(token, 'GET', `/v1/scans/${scan}`);
    S.status = s.status;
    if (s.status === 'complete') break;
    if (s.status === 'failed' || performance.now() - t0 > 120_000) throw new Error(`scan ${s.status}`);
    await new Promise((r) => setTimeout(r, 250));
  }
  S.measurements = await api(token, 'GET', `/v1/scans/${scan}/measurements`);
  $('measurements').textContent = JSON.stringify(S.measurements, null, 2);
  setState('measured');
}

run().catch(fail);

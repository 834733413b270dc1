// Two headless Chromium pages on the consult page (fake camera and microphone): the patient
// waits, the clinician admits, each page decodes the other's video (framesDecoded rising in
// getStats), a chat message arrives, the clinician mutes and unmutes the patient's video,
// hanging up ends the room, and the events came in order. Neither page gets an error answer
// (no 404 for an icon, no 409 from a poll still running after the consult ended).
// Run by tests/api/browser.rs, which starts the server and passes BASE, CONSULT,
// PATIENT_TOKEN and CLINICIAN_TOKEN. Prints one JSON line; exits non-zero on failure.
import { chromium } from 'playwright-core';

const { BASE, CONSULT, PATIENT_TOKEN, CLINICIAN_TOKEN } = process.env;
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const STEP = 30_000;

const args = [
  '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
  '--allow-loopback-in-peer-connection',
  // Loopback only: no candidates on other interfaces, no mDNS names.
  '--force-webrtc-ip-handling-policy=default_public_interface_only',
  '--disable-features=WebRtcHideLocalIpsWithMdns',
];

async function framesDecoded(page) {
  return page.evaluate(async () => {
    const pc = window.coherency.pc;
    if (!pc) return 0;
    let n = 0;
    (await pc.getStats()).forEach((r) => { if (r.type === 'inbound-rtp' && r.kind === 'video') n += r.framesDecoded || 0; });
    return n;
  });
}

async function rising(page, name) {
  const deadline = Date.now() + STEP;
  let first = 0;
  while (Date.now() < deadline) {
    const n = await framesDecoded(page);
    if (first === 0 && n > 0) first = n;
    if (first > 0 && n > first + 5) return n;
    await page.waitForTimeout(250);
  }
  throw new Error(`${name}: framesDecoded did not rise (errors: ${JSON.stringify(await page.evaluate(() => window.coherency.errors))})`);
}

const result = { ok: false };
// Playwright gives every launch a fresh temporary profile (the user data dir).
const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args, timeout: STEP });
try {
  const clinician = await (await browser.newContext()).newPage();
  const patient = await (await browser.newContext()).newPage();
  const failed = [];
  const queuePolls = [];
  for (const [p, n] of [[clinician, 'clinician'], [patient, 'patient']]) {
    p.on('pageerror', (e) => console.error(`${n} page error: ${e}`));
    p.on('response', (r) => {
      if (r.status() >= 400) failed.push(`${n}: ${r.status()} ${r.request().method()} ${new URL(r.url()).pathname}`);
      if (n === 'clinician' && r.url().includes('/queue')) queuePolls.push(Date.now());
    });
  }
  await clinician.goto(`${BASE}/consult#token=${CLINICIAN_TOKEN}&consult=${CONSULT}`);
  await clinician.waitForFunction(() => window.coherency.state === 'admitted', null, { timeout: STEP });

  await patient.goto(`${BASE}/consult#token=${PATIENT_TOKEN}&consult=${CONSULT}`);
  await patient.waitForFunction(() => window.coherency.state === 'waiting', null, { timeout: STEP });
  await patient.waitForSelector('#waiting:not([hidden])', { timeout: STEP });
  result.waited = true;

  await clinician.click('#queue button.admit', { timeout: STEP });
  await patient.waitForFunction(() => window.coherency.state === 'admitted', null, { timeout: STEP });

  result.clinicianFrames = await rising(clinician, 'clinician');
  result.patientFrames = await rising(patient, 'patient');

  await patient.fill('#chat-text', 'Hello from the patient');
  await patient.click('#chat-form button');
  await clinician.waitForFunction(() => window.coherency.chats.some((c) => c.text === 'Hello from the patient'), null, { timeout: STEP });
  result.chat = true;

  // The clinician mutes the patient's video: the server stops forwarding it, so the
  // clinician's decoder stops counting frames; unmuting brings the video back.
  await clinician.click('#people li button.mute-video', { timeout: STEP });
  await clinician.waitForFunction(() => Object.values(window.coherency.people).some((p) => p.muted.video), null, { timeout: STEP });
  await clinician.waitForTimeout(500);
  const before = await framesDecoded(clinician);
  await clinician.waitForTimeout(1500);
  const during = (await framesDecoded(clinician)) - before;
  if (during > 3) throw new Error(`video still decoded while muted: ${during} frames in 1.5 s`);
  result.framesWhileMuted = during;
  await clinician.click('#people li button.mute-video[data-muted="true"]', { timeout: STEP });
  await clinician.waitForFunction(() => Object.values(window.coherency.people).every((p) => !p.muted.video), null, { timeout: STEP });
  result.clinicianFramesAfterUnmute = await rising(clinician, 'clinician after unmute');

  await clinician.click('#hangup');
  await patient.waitForFunction(() => window.coherency.state === 'ended', null, { timeout: STEP });
  await clinician.waitForFunction(() => window.coherency.state === 'ended', null, { timeout: STEP });
  // The host's queue poll (every second while in the room) stops with the consult.
  const endedAt = Date.now();
  await clinician.waitForTimeout(2500);
  const late = queuePolls.filter((t) => t > endedAt + 100);
  if (late.length) throw new Error(`the queue was still polled ${late.length} time(s) after the consult ended`);
  if (failed.length) throw new Error(`error answers: ${failed.join('; ')}`);
  result.queuePolls = queuePolls.length;

  const events = await clinician.evaluate(() => window.coherency.events);
  const seqs = events.map((e) => e.seq);
  // Delivered in order. (The log itself is gapless — checked through the API in
  // tests/api/consults.rs; the page of someone hanging up may close before its own `left`.)
  for (let i = 1; i < seqs.length; i++) {
    if (seqs[i] <= seqs[i - 1]) throw new Error(`events out of order: ${seqs}`);
  }
  const kinds = events.map((e) => e.kind);
  const order = ['checked_in', 'admitted', 'joined', 'track_published', 'ended'];
  let at = -1;
  for (const k of order) {
    const i = kinds.indexOf(k, at + 1);
    if (i < 0) throw new Error(`missing or misplaced ${k} in ${kinds}`);
    at = i;
  }
  result.events = kinds;
  result.ok = true;
} catch (e) {
  result.error = String(e && e.stack || e);
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
process.exit(result.ok ? 0 : 1);

// Two headless Chromium pages on the consult page (fake camera and microphone): the patient
// waits, the clinician admits, each page decodes the other's video (framesDecoded rising in
// getStats), a chat message arrives, the clinician mutes and unmutes the patient's video,
// hanging up ends the room, and the events came in order. Neither page gets an error answer
// (no 404 for an icon, no 409 from a poll still running after the consult ended). People are
// named, events read as sentences (no raw codes), the room panel stays hidden until admitted,
// and a wrong password says so (and a good sign-in clears it).
// Run by tests/api/browser.rs, which starts the server and passes BASE, CONSULT,
// PATIENT_TOKEN, CLINICIAN_TOKEN, PATIENT_EMAIL, PATIENT_PASSWORD, PATIENT_NAME and
// CLINICIAN_NAME. Prints one JSON line; exits non-zero on failure.
import { chromium } from 'playwright-core';
import { seriousViolations } from './axe.mjs';

const { BASE, CONSULT, PATIENT_TOKEN, CLINICIAN_TOKEN, PATIENT_EMAIL, PATIENT_PASSWORD, PATIENT_NAME, CLINICIAN_NAME, STRANGER_TOKEN } = process.env;
const check = (ok, what) => { if (!ok) throw new Error(`check failed: ${what}`); };
// A screenshot of each step of the visit, kept as a test artefact (ARTIFACTS, when given).
const shot = async (page, name) => { if (process.env.ARTIFACTS) await page.screenshot({ path: `${process.env.ARTIFACTS}/consult-${name}.png`, fullPage: true }); };
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
  // Signing in by hand: a wrong password is named and nothing of the room shows; the right
  // one clears the message.
  const login = await (await browser.newContext()).newPage();
  await login.goto(`${BASE}/consult`);
  const axeLogin = await seriousViolations(login);
  check(axeLogin.length === 0, `axe: no serious or critical violations signing in (${axeLogin.join('; ')})`);
  check(!(await login.isVisible('#room')) && !(await login.isVisible('#hangup')), 'no room panel while signed out');
  await login.fill('#email', PATIENT_EMAIL);
  await login.fill('#password', `${PATIENT_PASSWORD}-wrong`);
  await login.click('#login-form button[type="submit"]');
  await login.waitForFunction(() => document.getElementById('login-error').textContent.length > 0, null, { timeout: STEP });
  const wrong = await login.textContent('#login-error');
  check(/not right/.test(wrong) && !/invalid_credentials/.test(wrong), `a wrong password is said in words ("${wrong}")`);
  await login.fill('#password', PATIENT_PASSWORD);
  await login.click('#login-form button[type="submit"]');
  await login.waitForSelector('#join:not([hidden])', { timeout: STEP });
  check((await login.textContent('#login-error')) === '' && (await login.textContent('#join-error')) === '', 'a good sign-in clears the error');
  check(!(await login.isVisible('#room')), 'no room panel before joining');
  await login.context().close();
  result.login = true;

  // Another patient with this consult's link: words, no room, nothing of whose consult it is.
  const stranger = await (await browser.newContext()).newPage();
  await stranger.goto(`${BASE}/consult#token=${STRANGER_TOKEN}&consult=${CONSULT}`);
  await stranger.waitForFunction(() => document.getElementById('join-error').textContent.length > 0, null, { timeout: STEP });
  const refused = await stranger.textContent('body');
  check(/No consult with this link is open to you/.test(refused), 'another patient is told the link is not theirs');
  check(!(await stranger.isVisible('#room')) && !refused.includes(PATIENT_NAME) && !refused.includes(CLINICIAN_NAME),
    'and sees no room and no one\'s name');
  await stranger.context().close();

  // A session that has ended: back to signing in, saying so.
  const stale = await (await browser.newContext()).newPage();
  await stale.goto(`${BASE}/consult#token=not-a-session&consult=${CONSULT}`);
  await stale.waitForSelector('#login:not([hidden])', { timeout: STEP });
  await stale.waitForFunction(() => /session has ended/.test(document.getElementById('login-error').textContent), null, { timeout: STEP });
  check(!(await stale.isVisible('#room')), 'an ended session is sent back to sign in, told why');
  await stale.context().close();
  result.refusals = true;

  await clinician.goto(`${BASE}/consult#token=${CLINICIAN_TOKEN}&consult=${CONSULT}`);
  await clinician.waitForFunction(() => window.coherency.state === 'admitted', null, { timeout: STEP });

  await patient.goto(`${BASE}/consult#token=${PATIENT_TOKEN}&consult=${CONSULT}`);
  await patient.waitForFunction(() => window.coherency.state === 'waiting', null, { timeout: STEP });
  await patient.waitForSelector('#waiting:not([hidden])', { timeout: STEP });
  check(!(await patient.isVisible('#room')), 'the waiting patient sees no room panel');
  await patient.waitForFunction((n) => document.getElementById('with').textContent.includes(n), CLINICIAN_NAME, { timeout: STEP });
  result.waited = true;
  await shot(patient, '1-patient-waiting');
  // The host's queue names the patient.
  await clinician.waitForFunction((n) => [...document.querySelectorAll('#queue li')].some((li) => li.textContent.includes(n)), PATIENT_NAME, { timeout: STEP });

  await clinician.click('#queue button.admit', { timeout: STEP });
  await patient.waitForFunction(() => window.coherency.state === 'admitted', null, { timeout: STEP });

  // Beside the video, the clinician reads who the patient is and what they are allergic to.
  await clinician.waitForSelector('#summary-panel:not([hidden])', { timeout: STEP });
  const summary = await clinician.textContent('#summary-panel');
  check(summary.includes(PATIENT_NAME) && /penicillin \(severe\): hives/.test(summary) && /No open wound/.test(summary),
    `the patient's summary is beside the video ("${summary.replace(/\s+/g, ' ').trim()}")`);
  check(!(await patient.isVisible('#summary-panel')), 'the patient does not get the clinician\'s summary');
  await shot(clinician, '2-clinician-in-the-call');
  result.clinicianFrames = await rising(clinician, 'clinician');
  result.patientFrames = await rising(patient, 'patient');

  await patient.fill('#chat-text', 'Hello from the patient');
  await patient.click('#chat-form button');
  await clinician.waitForFunction(() => window.coherency.chats.some((c) => c.text === 'Hello from the patient'), null, { timeout: STEP });
  result.chat = true;

  // The clinician asks for a scan of a new wound; the patient's page says so; the test's Rust
  // side streams a phantom scan into it (as the phone would); both pages then show the
  // measurements, and the clinician a link to the scan.
  await clinician.waitForSelector('#scan-form:not([hidden])', { timeout: STEP });
  await clinician.selectOption('#scan-wound', '');
  await clinician.fill('#scan-site', 'Left heel');
  await clinician.click('#request-scan');
  await patient.waitForSelector('#scan-prompt:not([hidden])', { timeout: STEP });
  const SCAN_WAIT = 150_000;
  for (const [p, n] of [[clinician, 'clinician'], [patient, 'patient']]) {
    await p.waitForFunction(() => document.querySelector('#scan-result tr[data-key="outline_area_mm2"]'), null, { timeout: SCAN_WAIT })
      .catch(async (e) => { throw new Error(`${n}: no measurements (${await p.textContent('#scan-status')}; ${e})`); });
    const area = await p.textContent('#scan-result tr[data-key="outline_area_mm2"] td');
    check(/^\d+(\.\d)? ± \d+(\.\d)? mm²$/.test(area), `${n} reads the area with its ± ("${area}")`);
  }
  check(/#\/scan\//.test(await clinician.getAttribute('#scan-open', 'href')), 'the clinician can open the scan');
  const timeline = await clinician.$$eval('#events li', (els) => els.map((e) => e.textContent).join(' | '));
  check(/A wound scan was requested/.test(timeline) && /The wound scan finished/.test(timeline), `the scan is in the timeline (${timeline})`);
  result.scan = true;
  await shot(clinician, '3-clinician-scan-measured');
  await shot(patient, '3-patient-scan-measured');
  for (const [p, n] of [[clinician, 'clinician'], [patient, 'patient']]) {
    const v = await seriousViolations(p);
    check(v.length === 0, `axe: no serious or critical violations in the ${n}'s consult (${v.join('; ')})`);
  }

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
  await shot(patient, '4-patient-ended');
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
  // The timeline reads as sentences with names, every event (past 9 too) whole.
  const lines = await clinician.$$eval('#events li', (els) => els.map((e) => e.textContent));
  check(lines.length === events.length, `one line per event (${lines.length} of ${events.length})`);
  check(lines.some((l) => l.includes(`${PATIENT_NAME} was admitted`)), `the patient is named in the timeline (${lines.join(' | ')})`);
  check(!lines.some((l) => /track_published|checked_in|host_ended|left_before_joined/.test(l)), `no raw codes in the timeline (${lines.join(' | ')})`);
  const reason = await patient.textContent('#ended-reason');
  check(reason === 'The clinician ended the consult.', `the patient reads why it ended ("${reason}")`);
  const chatLine = await clinician.textContent('#chat li');
  check(chatLine.startsWith(`${PATIENT_NAME}: `), `chat names the sender ("${chatLine}")`);
  result.ok = true;
} catch (e) {
  result.error = String(e && e.stack || e);
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
process.exit(result.ok ? 0 : 1);

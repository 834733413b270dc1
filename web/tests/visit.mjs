// A whole visit in two headless Chromium contexts (fake camera and microphone), as clinic
// staff and a patient run it in the workspace: both sign in through the page; the patient
// joins the booked appointment from their board and waits; the clinician messages them from
// the board, admits them there and opens the consult; video flows both ways; a chat line
// arrives; the clinician requests a scan of a new wound, the patient's view shows the request with a code and a link
// for the phone, the phone (the Rust side, from that link) streams a phantom scan, both views
// follow it live and then show its mesh and measurements; the clinician draws an outline on
// the scan's keyframe, sees what it measures, confirms it; mutes and unmutes the patient;
// hangs up; the patient reads why it ended. Negative paths: a wrong password, an expired
// session, another patient opening this consult's link, a second patient denied from the board.
// axe-core finds no serious or critical violation on any view; a screenshot of each step is
// kept (ARTIFACTS). No page gets an error answer it did not ask for.
// Run by tests/api/browser.rs with VISIT_TEST (JSON); talks to it over stdio: prints
// "CAPTURE <url>" when the patient's view shows the phone link, then DONE (or FAIL).
import { chromium } from 'playwright-core';
import { check, run, say } from './common.mjs';
import { seriousViolations } from './axe.mjs';

const P = JSON.parse(process.env.VISIT_TEST);
const STEP = 30_000;
const shot = async (page, name) => { await page.screenshot({ path: `${P.artifacts}/visit-${name}.png`, fullPage: true }); };
const axe = async (page, what) => {
  const v = await seriousViolations(page);
  check(v.length === 0, `axe: no serious or critical violations on ${what} (${v.join('; ')})`);
};

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  timeout: STEP,
  args: [
    '--no-sandbox', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--use-angle=swiftshader', '--enable-unsafe-swiftshader',
    '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream', '--allow-loopback-in-peer-connection',
    // Loopback only: no candidates on other interfaces, no mDNS names.
    '--force-webrtc-ip-handling-policy=default_public_interface_only', '--disable-features=WebRtcHideLocalIpsWithMdns',
  ],
});

// Error answers a page did not expect (each view's own refusals are listed where they are made).
const failed = [];
const queuePolls = [];
async function open(name) {
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const p = await ctx.newPage();
  p.on('pageerror', (e) => failed.push(`${name}: page error ${e.message}`));
  p.on('console', (m) => { if (m.type() === 'error') say(`${name} console: ${m.text()}`); });
  p.on('response', (r) => {
    const path = new URL(r.url()).pathname;
    if (name === 'clinician' && path.endsWith('/queue')) queuePolls.push(Date.now());
    if (r.status() >= 400 && !p.expected?.(r.status(), path)) failed.push(`${name}: ${r.status()} ${r.request().method()} ${path}`);
  });
  return p;
}

async function framesDecoded(page) {
  return page.evaluate(async () => {
    const pc = window.coherency?.pc;
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
  throw new Error(`${name}: framesDecoded did not rise (errors: ${JSON.stringify(await page.evaluate(() => window.coherency?.errors))})`);
}

/// Waits for the consult view of `page` to reach `state`; on time-out says where it is instead.
async function inState(page, state, name) {
  await page.waitForFunction((s) => window.coherency?.state === s, state, { timeout: STEP }).catch(async (e) => {
    const where = await page.evaluate(() => ({ hash: location.hash, state: window.coherency?.state, errors: window.coherency?.errors, text: document.getElementById('main')?.innerText.slice(0, 300) }));
    throw new Error(`${name} is not ${state}: ${JSON.stringify(where)} (${e.message.split('\n')[0]})`);
  });
}

async function signIn(page, email, password, code) {
  await page.fill('#email', email);
  await page.fill('#password', password);
  if (code) await page.fill('#totp', code);
  await page.click('#login-form button[type="submit"]');
}

await run(browser, async () => {
  // The clinician signs in first (the authenticator code is for the present 30 s).
  const clinician = await open('clinician');
  await clinician.goto(`${P.base}/`);
  await signIn(clinician, P.clinician.email, P.clinician.password, P.clinician.code);
  await clinician.waitForSelector('#conn.live', { timeout: STEP });
  check((await clinician.textContent('#who')).includes(P.clinician.name), 'the header names the signed-in clinician');
  const booking = `[data-testid="bookings-${P.appointment}"]`;
  await clinician.waitForSelector(`${booking} [data-testid="start-consult"]`, { timeout: STEP });
  check((await clinician.textContent(booking)).includes(P.patient.name), "today's booking names the patient");
  await axe(clinician, "the clinician's board");
  await shot(clinician, '1-clinician-board');

  // The patient signs in by hand: a wrong password is named, the right one clears it.
  const patient = await open('patient');
  patient.expected = (status, path) => status === 401 && path === '/v1/auth/login';
  await patient.goto(`${P.base}/`);
  await axe(patient, 'the sign-in page');
  await signIn(patient, P.patient.email, `${P.patient.password}-wrong`);
  await patient.waitForFunction(() => document.getElementById('login-error')?.textContent.length > 0, null, { timeout: STEP });
  check(/email or password is not right/.test(await patient.textContent('#login-error')), 'a wrong password is named');
  await signIn(patient, P.patient.email, P.patient.password);
  await patient.waitForSelector('#conn.live', { timeout: STEP });
  check(!(await patient.isVisible('#login-error')), 'the good sign-in leaves no error behind');
  await patient.waitForSelector(`${booking} [data-testid="start-consult"]`, { timeout: STEP });
  check((await patient.textContent(`${booking} [data-testid="start-consult"]`)) === 'Join', 'the patient has "Join" on the appointment');
  await axe(patient, "the patient's board");
  await patient.click(`${booking} [data-testid="start-consult"]`);
  await inState(patient, 'waiting', 'patient');
  check(!(await patient.isVisible('#room')), 'the waiting patient sees no room panel');
  await patient.waitForFunction((n) => document.getElementById('with').textContent.includes(n), P.clinician.name, { timeout: STEP });
  const consult = await patient.evaluate(() => window.coherency.consultId);
  check(/^#\/consult\//.test(await patient.evaluate(() => location.hash)), 'the consult is a view of the same app');
  await axe(patient, 'the waiting room');
  await shot(patient, '2-patient-waiting');

  // A second patient waits in their own consult with this clinician, and is denied from the board.
  const other = await open('other patient');
  await other.goto(`${P.base}/consult#token=${P.patient2.token}&consult=${P.consult2}`);
  await inState(other, 'waiting', 'other');
  const otherRow = `[data-testid="section-waiting"] li:has-text("${P.patient2.name}")`;
  await clinician.waitForSelector(`${otherRow} [data-testid="deny"]`, { timeout: STEP });
  await clinician.click(`${otherRow} [data-testid="deny"]`);
  await inState(other, 'denied', 'other');
  check(/could not admit you/.test(await other.textContent('#ended-reason')) && !(await other.isVisible('#room')),
    'the denied patient is told, and sees no room');
  await shot(other, '3-denied');
  await other.context().close();

  // The booked patient shows in the clinician's waiting room, named: admitted from the board.
  const row = `[data-testid="section-waiting"] li:has-text("${P.patient.name}")`;
  await clinician.waitForSelector(`${row} [data-testid="admit"]`, { timeout: STEP });
  await shot(clinician, '4-clinician-board-waiting');
  // A word to the waiting patient first, from the board.
  await clinician.click(`${row} [data-testid="message"]`);
  await clinician.fill('#message-text', 'Running two minutes late, sorry.');
  await axe(clinician, 'the message dialog');
  await clinician.click('[data-testid="message-send"]');
  await patient.waitForFunction(() => document.getElementById('waiting-messages')?.textContent.includes('Running two minutes late'), null, { timeout: STEP });
  check((await patient.textContent('#waiting-messages')).startsWith(`${P.clinician.name}: `), 'the waiting patient reads the message, from the clinician by name');
  await shot(patient, '4-patient-message');
  await clinician.click(`${row} [data-testid="admit"]`);
  await inState(patient, 'admitted', 'patient');
  // …and opens the consult from its row.
  await clinician.click(`[data-testid="consults-${consult}"] [data-testid="open-consult"]`, { timeout: STEP });
  await inState(clinician, 'admitted', 'clinician');
  await clinician.waitForSelector('#summary-panel:not([hidden])', { timeout: STEP });
  const summary = await clinician.textContent('#summary-panel');
  check(summary.includes(P.patient.name) && /penicillin \(severe\): hives/.test(summary),
    `the patient's summary is beside the video ("${summary.replace(/\s+/g, ' ').trim()}")`);
  check(!(await patient.isVisible('#summary-panel')), "the patient does not get the clinician's summary");
  const decoded = [await rising(clinician, 'clinician'), await rising(patient, 'patient')];
  check(decoded.every((n) => n > 5), `video flows both ways (${decoded.join(' and ')} frames decoded)`);
  await patient.fill('#chat-text', 'Hello from the patient');
  await patient.click('#chat-form button');
  await clinician.waitForFunction(() => window.coherency.chats.some((c) => c.text === 'Hello from the patient'), null, { timeout: STEP });
  check((await clinician.textContent('#chat li')).startsWith(`${P.patient.name}: `), 'chat names the sender');
  await shot(clinician, '5-clinician-in-the-call');

  // The scan: asked for a new wound; the patient gets the phone link; the phone streams.
  await clinician.waitForSelector('#scan-form:not([hidden])', { timeout: STEP });
  await clinician.selectOption('#scan-wound', '');
  await clinician.fill('#scan-site', 'Left heel');
  await clinician.click('#request-scan');
  await patient.waitForSelector('#scan-prompt:not([hidden]) [data-testid="capture-link"]', { timeout: STEP });
  check(await patient.isVisible('#scan-link svg'), 'the patient sees a code for the phone');
  await axe(patient, "the patient's scan request");
  await shot(patient, '6-patient-scan-requested');
  say(`CAPTURE ${await patient.getAttribute('[data-testid="capture-link"]', 'href')}`);
  const live = [];
  for (const [p, n] of [[clinician, 'clinician'], [patient, 'patient']]) {
    await p.waitForFunction(() => (window.coherency.scan?.live?.frames || 0) > 0, null, { timeout: 120_000 })
      .catch(async (e) => { throw new Error(`${n}: no live figures (${await p.textContent('#scan-status')}; ${e})`); });
    live.push(await p.evaluate(() => window.coherency.scan.live.frames));
  }
  check(live.every((n) => n > 0), `both views follow the scan live (${live.join(' and ')} frames)`);
  await shot(clinician, '7-clinician-scan-live');
  const SCAN_WAIT = 150_000;
  for (const [p, n] of [[clinician, 'clinician'], [patient, 'patient']]) {
    await p.waitForSelector('#scan-view canvas[data-ready="true"]', { timeout: SCAN_WAIT })
      .catch(async (e) => { throw new Error(`${n}: no mesh (${await p.textContent('#scan-status')}; ${e})`); });
    await p.waitForSelector('#scan-view [data-testid="m-outline_area_mm2"]', { timeout: STEP });
    const area = await p.textContent('#scan-view [data-testid="m-outline_area_mm2"] td');
    check(/^\d+(\.\d)? ± \d+(\.\d)? mm²$/.test(area), `${n} reads the area with its ± ("${area}") beside the mesh`);
  }
  await shot(patient, '8-patient-scan-measured');
  const timeline = await clinician.$$eval('#events li', (els) => els.map((e) => e.textContent).join(' | '));
  check(/A wound scan was requested/.test(timeline) && /The wound scan finished/.test(timeline), `the scan is in the timeline (${timeline})`);

  // The clinician outlines the wound on the keyframe, checks what it measures, confirms.
  await clinician.click('#scan-view [data-testid="draw-outline"]');
  await clinician.waitForSelector('#viewer[data-view="keyframe"]', { timeout: STEP });
  const box = await clinician.locator('#viewer').boundingBox();
  const r = Math.min(box.width, box.height) * 0.16;
  for (let i = 0; i < 12; i++) {
    const a = (i / 12) * 2 * Math.PI;
    await clinician.mouse.click(box.x + box.width / 2 + r * Math.cos(a), box.y + box.height / 2 + r * Math.sin(a));
  }
  await clinician.click('[data-testid="outline-measure"]');
  await clinician.waitForSelector('[data-testid="outline-preview"]:not([hidden]) [data-testid="m-outline_area_mm2"]', { timeout: 120_000 })
    .catch(async (e) => { throw new Error(`no preview (${await clinician.textContent('[data-testid="outline-tool"]')}; ${e})`); });
  const previewed = await clinician.textContent('[data-testid="outline-preview"] [data-testid="m-outline_area_mm2"] td:last-child');
  await axe(clinician, 'the outline preview');
  await shot(clinician, '9-clinician-outline-preview');
  await clinician.click('[data-testid="outline-confirm"]');
  await clinician.waitForSelector('#scan-view [data-testid="m-col-polygon"]', { timeout: 120_000 });
  const stored = await clinician.textContent('#scan-view [data-testid="measurements"] [data-testid="m-outline_area_mm2"] td:last-child');
  check(stored === previewed, `the confirmed outline measures what its preview said (${stored})`);
  check(await clinician.isVisible('#scan-view [data-testid="m-col-auto"]'), 'the automatic measurement stays beside it');
  await shot(clinician, '10-clinician-outline-confirmed');

  // Mute: the server stops forwarding the patient's video; unmute brings it back.
  await clinician.click('#people li button.mute-video', { timeout: STEP });
  await clinician.waitForFunction(() => Object.values(window.coherency.people).some((p) => p.muted.video), null, { timeout: STEP });
  await clinician.waitForTimeout(500);
  const before = await framesDecoded(clinician);
  await clinician.waitForTimeout(1500);
  const during = (await framesDecoded(clinician)) - before;
  check(during <= 3, `no video decoded while muted (${during} frames in 1.5 s)`);
  await clinician.click('#people li button.mute-video[data-muted="true"]', { timeout: STEP });
  await clinician.waitForFunction(() => Object.values(window.coherency.people).every((p) => !p.muted.video), null, { timeout: STEP });
  await rising(clinician, 'clinician after unmute');

  await axe(clinician, "the clinician's consult");
  await axe(patient, "the patient's consult");
  await clinician.click('#hangup');
  await inState(patient, 'ended', 'patient');
  await inState(clinician, 'ended', 'clinician');
  check((await patient.textContent('#ended-reason')) === 'The clinician ended the consult.', 'the patient reads why it ended');
  await axe(patient, 'the end of the consult');
  await shot(patient, '11-patient-ended');
  const endedAt = Date.now();
  await clinician.waitForTimeout(2500);
  check(!queuePolls.some((t) => t > endedAt + 100), 'the waiting list is not polled after the end');

  // The timeline: in order, every event a sentence with names.
  const events = await clinician.evaluate(() => window.coherency.events);
  const seqs = events.map((e) => e.seq);
  check(seqs.every((s, i) => i === 0 || s > seqs[i - 1]), `events in order (${seqs})`);
  const lines = await clinician.$$eval('#events li', (els) => els.map((e) => e.textContent));
  check(lines.length === events.length, `one line per event (${lines.length} of ${events.length})`);
  check(lines.some((l) => l.includes(`${P.patient.name} was admitted`)), 'the patient is named in the timeline');
  check(!lines.some((l) => /track_published|checked_in|host_ended|left_before_joined|_/.test(l)), `no raw codes in the timeline (${lines.join(' | ')})`);

  // Another patient with this consult's link: words, no room, nothing of whose consult it is.
  const stranger = await open('stranger');
  stranger.expected = (status, path) => status === 404 && path === `/v1/consults/${consult}`;
  await stranger.goto(`${P.base}/consult#token=${P.stranger}&consult=${consult}`);
  await stranger.waitForFunction(() => document.getElementById('join-error')?.textContent.length > 0, null, { timeout: STEP });
  const refused = await stranger.textContent('#join-error');
  check(/No consult with this link is open to you/.test(refused), 'another patient is told the link is not theirs');
  check(!(await stranger.isVisible('#room')) && !(await stranger.textContent('main')).includes(P.patient.name), 'and sees nothing of it');
  await shot(stranger, '12-stranger');
  // An expired session: back to the sign-in, saying why.
  const stale = await open('stale');
  stale.expected = (status) => status === 401;
  await stale.goto(`${P.base}/consult#token=not-a-session&consult=${consult}`);
  await stale.waitForFunction(() => /session has ended/.test(document.getElementById('login-error')?.textContent || ''), null, { timeout: STEP });
  check(!(await stale.isVisible('#room')), 'an expired session is sent to sign in again, with no room');
  check(failed.length === 0, `no unexpected error answers (${failed.join('; ')})`);
});

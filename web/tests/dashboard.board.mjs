// Browser half of tests/api/dashboard_browser.rs (run by that test; parameters in the
// DASHBOARD_TEST environment variable as JSON). Talks to the Rust side over stdio:
// prints READY when the boards are open, reads "SCAN <id>" when a live scan starts and
// "COMPLETE <id>" when it has completed, prints DONE at the end. Any failed check exits 1.
// Playwright gives each launch a fresh temporary profile.

import { check, launch, say } from './common.mjs';
import { createInterface } from 'node:readline';
import { join } from 'node:path';
import { seriousViolations } from './axe.mjs';

const P = JSON.parse(process.env.DASHBOARD_TEST);
const lines = createInterface({ input: process.stdin });
const waiting = [];
const queue = [];
lines.on('line', (l) => (waiting.length ? waiting.shift()(l) : queue.push(l)));
const nextLine = () => new Promise((r) => (queue.length ? r(queue.shift()) : waiting.push(r)));

const browser = await launch();

async function page(viewport, token) {
  const ctx = await browser.newContext({ viewport });
  if (token) {
    await ctx.addInitScript(([t]) => {
      if (!sessionStorage.getItem('coherency.token')) {
        sessionStorage.setItem('coherency.token', t);
        sessionStorage.setItem('coherency.user', JSON.stringify({ role: 'clinician' }));
      }
    }, [token]);
  }
  const p = await ctx.newPage();
  p.on('pageerror', (e) => say(`page error: ${e.message}`));
  p.on('console', (m) => say(`console: ${m.text()}`));
  p.on('response', (r) => { if (r.status() >= 400) say(`http ${r.status()} ${r.url()}`); });
  return p;
}

const boardState = (p) => p.evaluate(() => {
  const b = window.coherencyBoard;
  return b ? { seq: b.seq, epoch: b.epoch, items: b.view(), connects: b.connects, live: !!b.socket } : null;
});

try {
  // Alice signs in through the page (email, password, TOTP) at 1280×800. Without her code the
  // server answers 401 mfa_code_required and the page asks for it, focusing the code field.
  const a = await page({ width: 1280, height: 800 });
  await a.goto(`${P.base}/`);
  await a.fill('#email', P.alice.email);
  await a.fill('#password', P.alice.password);
  await a.keyboard.press('Enter');
  await a.waitForFunction(() => document.activeElement?.id === 'totp', null, { timeout: 15000 });
  check((await a.textContent('form.login .error')).includes('authenticator app'), 'the sign-in page asks for the authenticator code');
  await a.fill('#totp', P.alice.code);
  await a.keyboard.press('Enter');
  await a.waitForSelector('#conn.live', { timeout: 15000 });
  check(await a.isVisible(`[data-testid="scans-${P.first_scan}"]`), 'the completed scan is on alice\'s board');
  const wound = await a.locator(`[data-testid="scans-${P.first_scan}"] [data-testid="wound"]`).textContent({ timeout: 5000 });
  check(wound === 'left heel · wound', `the board's scan row names the wound and its site (${wound})`);

  // A second board for Alice (phone-sized) that will lose its socket, and Bob's board.
  const b = await page({ width: 390, height: 844 }, P.alice.token);
  await b.goto(`${P.base}/web/dashboard/#/board`);
  await b.waitForSelector('#conn.live', { timeout: 15000 });
  const c = await page({ width: 1280, height: 800 }, P.bob.token);
  await c.goto(`${P.base}/web/dashboard/#/board`);
  await c.waitForSelector('#conn.live', { timeout: 15000 });
  say('READY');

  const scan = (await nextLine()).split(' ')[1];
  // Live progress: the scan appears streaming with a growing frame count.
  const row = `[data-testid="scans-${scan}"]`;
  await a.waitForSelector(`${row}[data-status="streaming"]`, { timeout: 15000 });
  const framesText = async () => Number((await a.textContent(`${row} [data-testid="frames"]`)).split(' ')[0]);
  const f1 = await framesText();
  await b.evaluate(() => window.coherencyBoard.dropSocket());
  await a.waitForFunction(([sel, n]) => {
    const e = document.querySelector(`${sel} [data-testid="frames"]`);
    return e && Number(e.textContent.split(' ')[0]) > n;
  }, [row, f1], { timeout: 15000 });
  check(true, `live progress: frames grew past ${f1}`);
  await b.evaluate(() => window.coherencyBoard.dropSocket());

  await nextLine(); // COMPLETE
  await a.waitForSelector(`${row}[data-status="complete"] [data-testid="area"]`, { timeout: 30000 });
  const area = await a.textContent(`${row} [data-testid="area"]`);
  check(/area [0-9.]+ ± [0-9.]+ mm²/.test(area), `measurements on the board: ${area}`);
  const cov = await a.getAttribute(`${row} progress[aria-label="coverage"]`, 'value');
  check(Number(cov) > 0, `live coverage from fusion on the board: ${cov}`);

  // The dropped board reconnected and ends in the same state as the steady one.
  await b.waitForSelector('#conn.live', { timeout: 15000 });
  const same = async () => {
    const [sa, sb] = [await boardState(a), await boardState(b)];
    return sa.epoch === sb.epoch && sa.seq === sb.seq && JSON.stringify(sa.items) === JSON.stringify(sb.items) ? [sa, sb] : null;
  };
  let pair = null;
  for (let i = 0; i < 100 && !(pair = await same()); i++) await a.waitForTimeout(100);
  check(pair !== null, 'the board that lost its socket matches the one that did not');
  check(pair[1].connects >= 2, `it reconnected (${pair[1].connects} connections)`);

  // Bob never sees Alice's patient; he sees his own.
  const bobItems = (await boardState(c)).items;
  check(bobItems.some((i) => i.patient_id === P.bea), 'bob sees his own patient\'s scan');
  check(!bobItems.some((i) => i.patient_id === P.ada), 'bob\'s board has none of alice\'s patients');
  check((await c.locator(`[data-testid="scans-${scan}"]`).count()) === 0, 'bob\'s page does not show alice\'s scan');
  const aliceItems = (await boardState(a)).items;
  check(!aliceItems.some((i) => i.patient_id === P.bea), 'alice\'s board has none of bob\'s patients');

  const axeBoard = await seriousViolations(a);
  check(axeBoard.length === 0, `axe: no serious or critical violations on the board (${axeBoard.join('; ')})`);

  // Ada checks in through the API: she is in Alice's waiting room within 1 s; admitting
  // her moves her to the consults in progress. Bob's board never shows her.
  const call = async (path, token) => {
    const r = await fetch(`${P.base}${path}`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: '{}' });
    if (!r.ok) throw new Error(`${path}: ${r.status} ${await r.text()}`);
    return r.json();
  };
  const t0 = Date.now();
  const { participant_id: pid } = await call(`/v1/consults/${P.consult}/check-in`, P.ada_token);
  await a.waitForSelector(`[data-testid="waiting-${pid}"]`, { timeout: 5000 });
  const waited = Date.now() - t0;
  check(waited <= 1000, `the checked-in patient is on the clinician's board after ${waited} ms`);
  check(/waiting/.test(await a.textContent(`[data-testid="waiting-${pid}"]`)), 'shown as waiting');
  // The row's own action admits her (the board's Admit button, not the API by hand).
  const openHref = await a.getAttribute(`[data-testid="waiting-${pid}"] [data-testid="open-consult"]`, 'href');
  check(openHref === `#/consult/${P.consult}`, `the waiting row opens its consult in the workspace (${openHref})`);
  await a.click(`[data-testid="waiting-${pid}"] [data-testid="admit"]`);
  await a.waitForSelector(`[data-testid="consults-${P.consult}"][data-status="in_consult"]`, { timeout: 5000 });
  await a.waitForSelector(`[data-testid="waiting-${pid}"]`, { state: 'detached', timeout: 5000 });
  const inCall = await a.textContent(`[data-testid="consults-${P.consult}"]`);
  check(/2 admitted, nobody connected/.test(inCall), `admitting moved her to "in consult", not yet in the call: ${inCall}`);
  await b.waitForSelector(`[data-testid="consults-${P.consult}"]`, { timeout: 5000 });
  check((await c.locator(`[data-testid="consults-${P.consult}"], [data-testid="waiting-${pid}"]`).count()) === 0,
    'bob\'s board shows neither her wait nor her consult');
  // Her record is not Bob's to open: his page says why rather than "not found".
  await c.goto(`${P.base}/web/dashboard/#/patient/${P.ada}`);
  const refused = await (await c.waitForSelector('[data-testid="patient-error"]', { timeout: 5000 })).textContent();
  check(/not on their care team/.test(refused), `bob is told the record is not open to him: ${refused}`);

  const axeWaiting = await seriousViolations(a);
  check(axeWaiting.length === 0, `axe: no serious or critical violations with someone in consult (${axeWaiting.join('; ')})`);

  // The scan page: the 3D viewer draws the mesh, measurements beside it.
  await a.click(`${row} a[href^="#/scan/"]`);
  await a.waitForSelector('#viewer[data-ready="true"]', { timeout: 30000 });
  const axeScan = await seriousViolations(a);
  check(axeScan.length === 0, `axe: no serious or critical violations on the scan page (${axeScan.join('; ')})`);
  await a.waitForSelector('[data-testid="m-outline_area_mm2"]');
  check((await a.textContent('[data-testid="draw-outline"]')) === 'Adjust the outline', 'a measured scan offers to adjust its outline');
  const shot = join(P.artifacts, 'dashboard-viewer.png');
  await a.locator('#viewer').screenshot({ path: shot });
  const drawn = await a.evaluate(() => {
    const src = document.getElementById('viewer');
    const c2 = document.createElement('canvas');
    c2.width = src.width; c2.height = src.height;
    const g = c2.getContext('2d');
    g.drawImage(src, 0, 0);
    const d = g.getImageData(0, 0, c2.width, c2.height).data;
    let n = 0;
    for (let i = 0; i < d.length; i += 4) if (Math.abs(d[i] - 0x20) + Math.abs(d[i + 1] - 0x24) + Math.abs(d[i + 2] - 0x2b) > 30) n++;
    return { n, total: d.length / 4 };
  });
  check(drawn.n > drawn.total * 0.01, `the viewer drew the mesh (${drawn.n} of ${drawn.total} pixels not background; ${shot})`);
  await a.focus('#viewer');
  await a.keyboard.press('ArrowLeft');

  // The patient page: the scans' wound (both scans are of the left heel) with one chart point
  // per completed scan, each linking to its scan.
  await a.goto(`${P.base}/web/dashboard/#/patient/${P.ada}`);
  await a.waitForSelector('[data-testid="history"] [data-testid="chart-area"]', { timeout: 15000 });
  const cards = await a.locator('[data-testid="wound-card"]').count();
  check(cards === 1, `one wound card (${cards})`);
  const hrefs = await a.locator('[data-testid="wound-card"] [data-testid="chart-area"] [data-testid="history-point"]').evaluateAll((els) => els.map((e) => e.getAttribute('href')));
  check(hrefs.length === 2, `the wound's area chart has one point per completed scan (${hrefs.length})`);
  check(hrefs.includes(`#/scan/${P.first_scan}`) && hrefs.includes(`#/scan/${scan}`), 'each point links to its scan');
  const listed = await a.locator('[data-testid="scan-list"] li a').allTextContents();
  check(listed.length === 2 && listed.every((t) => t.endsWith(' · left heel · wound')), `the scan list names each scan's wound (${listed})`);
  await a.screenshot({ path: join(P.artifacts, 'dashboard-history.png') });
  say('DONE');
  await browser.close();
  process.exit(0);
} catch (e) {
  say(`FAIL ${e.stack || e}`);
  await browser.close().catch(() => {});
  say('DONE');
  process.exit(1);
}

// Browser half of the wound page test in tests/api/dashboard_browser.rs (parameters in the
// WOUND_TEST environment variable as JSON: the patient, the stalled wound and the other one,
// each with its assessments' scans as the API gives them). A clinician opens the patient,
// picks the stalled wound on the body map and reads its healing chart; then starts a consult
// with the patient from their page. Prints PASS lines, then DONE; any failed check exits 1.

import { check, launch, run, say, signedInPage } from './common.mjs';
import { join } from 'node:path';
import { seriousViolations } from './axe.mjs';

const P = JSON.parse(process.env.WOUND_TEST);

const browser = await launch();

/// Pairs of the chart's tick labels (per axis) whose boxes on screen overlap, and how many
/// labels each axis has.
const tickFacts = (p, chart) => p.evaluate((sel) => {
  const svg = document.querySelector(sel);
  const boxes = (id) => [...svg.querySelectorAll(`[data-testid="${id}"]`)].map((t) => ({ text: t.textContent, r: t.getBoundingClientRect() }));
  const overlaps = (list) => {
    const out = [];
    for (let i = 0; i < list.length; i++) {
      for (let j = i + 1; j < list.length; j++) {
        const a = list[i].r, b = list[j].r;
        if (a.left < b.right && b.left < a.right && a.top < b.bottom && b.top < a.bottom) out.push(`${list[i].text}/${list[j].text}`);
      }
    }
    return out;
  };
  const x = boxes('tick-x'), y = boxes('tick-y');
  return { x: x.map((b) => b.text), y: y.map((b) => b.text), overlaps: [...overlaps(x), ...overlaps(y)], width: svg.getBoundingClientRect().width };
}, chart);

await run(browser, async () => {
  const p = await signedInPage(browser, P.token, { role: 'clinician' }, { viewport: { width: 1280, height: 1000 }, acceptDownloads: true });

  // The patient page: named, one body-map marker and one card per wound, each card's chart
  // holding that wound's assessments only.
  await p.goto(`${P.base}/web/dashboard/#/patient/${P.patient}`);
  await p.waitForSelector('[data-testid="body-map"] [data-testid="body-map-marker"]', { timeout: 15000 });
  await p.waitForSelector('[data-testid="wound-card"] [data-testid="chart-area"]', { timeout: 15000 });
  const heading = await p.textContent('[data-testid="patient-heading"]');
  check(heading.includes(P.patient_name), `the patient page names the patient ("${heading}")`);
  const markers = await p.locator('[data-testid="body-map-marker"]').evaluateAll((els) => els.map((e) => e.getAttribute('data-wound')));
  check(markers.length === 2 && markers.includes(P.stalled.id) && markers.includes(P.other.id), `one marker per wound on the body map (${markers.length})`);
  for (const w of [P.stalled, P.other]) {
    const card = p.locator(`[data-testid="wound-card"][data-wound="${w.id}"]`);
    const hrefs = await card.locator('[data-testid="history-point"]').evaluateAll((els) => els.map((e) => e.getAttribute('href')));
    check(hrefs.length === w.points && hrefs.every((h) => w.scans.includes(h.replace('#/scan/', ''))),
      `the ${w.site} card charts its own ${w.points} assessments only (${hrefs.length})`);
  }

  const axePatient = await seriousViolations(p);
  check(axePatient.length === 0, `axe: no serious or critical violations on the patient page (${axePatient.join('; ')})`);

  // Pick the stalled wound on the body map.
  await p.click(`[data-testid="body-map-marker"][data-wound="${P.stalled.id}"]`);
  await p.waitForFunction((id) => location.hash === `#/wound/${id}`, P.stalled.id, { timeout: 5000 });
  const chart = '[data-testid="wound-chart"] [data-testid="chart-area"]';
  await p.waitForSelector(chart, { timeout: 15000 });

  const title = await p.textContent('[data-testid="wound-heading"]');
  check(title.includes(P.patient_name) && title.includes('Sacrum') && title.includes('pressure injury'), `the page names the patient and the wound ("${title}")`);
  const verdict = (await p.textContent('[data-testid="verdict"]')).trim();
  check(verdict === 'not on track', `the verdict reads "${verdict}"`);
  const projection = await p.textContent('[data-testid="projection"]');
  check(/^(Closing by|Not closing|Not enough data)/.test(projection), `the projection in words ("${projection.trim()}")`);

  const line = await p.locator(`${chart} [data-testid="threshold-line"]`).evaluateAll((els) => els.map((e) => ({
    y1: e.getAttribute('y1'), y2: e.getAttribute('y2'), dash: e.getAttribute('stroke-dasharray'), w: e.getBoundingClientRect().width,
  })));
  check(line.length === 1 && line[0].y1 === line[0].y2 && line[0].dash && line[0].w > 200, `a dashed horizontal threshold line (${JSON.stringify(line)})`);
  const label = await p.textContent(`${chart} [data-testid="threshold-label"]`);
  check(/40 %/.test(label), `the threshold is labelled ("${label}")`);
  check(await p.locator(`${chart} [data-testid="day28-marker"]`).count() === 1, 'a marker at day 28');
  const proj = await p.locator(`${chart} [data-testid="projection-line"]`).evaluateAll((els) => els.map((e) => ({
    dash: e.getAttribute('stroke-dasharray'), len: Math.hypot(e.x2.baseVal.value - e.x1.baseVal.value, e.y2.baseVal.value - e.y1.baseVal.value),
  })));
  check(proj.length === 1 && proj[0].dash && proj[0].len > 20, `a dashed projection line (${JSON.stringify(proj)})`);
  const band = await p.locator(`${chart} [data-testid="band"]`).evaluateAll((els) => els.map((e) => e.points.numberOfItems));
  check(band.length === 1 && band[0] >= 4, `the ± band is drawn (${band[0]} corners)`);

  // Only this wound's assessments, each linking to its own scan.
  const hrefs = await p.locator(`${chart} [data-testid="history-point"]`).evaluateAll((els) => els.map((e) => e.getAttribute('href').replace('#/scan/', '')));
  check(hrefs.length === P.stalled.points, `the chart has the stalled wound's ${P.stalled.points} assessments (${hrefs.length})`);
  check(hrefs.every((s) => P.stalled.scans.includes(s)) && !hrefs.some((s) => P.other.scans.includes(s)), 'none of the other wound\'s assessments');
  const rows = await p.locator('[data-testid="assessment-row"]').count();
  check(rows === P.stalled.points, `the table lists ${rows} assessments`);
  // The wound bed's granulation share, for the scans that had colour.
  const gran = await p.locator('[data-testid="chart-granulation_pct"] [data-testid="history-point"]').count();
  check(gran === P.granulation_points, `the granulation chart has the ${P.granulation_points} scans with colour (${gran})`);

  // The report: one click downloads the PDF, named without patient data.
  const [download] = await Promise.all([p.waitForEvent('download', { timeout: 15000 }), p.click('[data-testid="wound-report"]')]);
  const pdfPath = join(P.artifacts, 'dashboard-wound-report.pdf');
  await download.saveAs(pdfPath);
  const { readFileSync } = await import('node:fs');
  const head = readFileSync(pdfPath).subarray(0, 5).toString();
  check(/^wound-report-[0-9a-f]{8}\.pdf$/.test(download.suggestedFilename()) && head === '%PDF-',
    `the report downloads as ${download.suggestedFilename()} (${head})`);

  const wide = await tickFacts(p, chart);
  check(wide.x.length >= 4 && wide.y.length >= 3, `ticks on both axes (x ${wide.x.join(' ')}; y ${wide.y.join(' ')})`);
  check(wide.overlaps.length === 0, `no tick labels overlap at ${Math.round(wide.width)} px (${wide.overlaps.join(', ')})`);
  const axeWound = await seriousViolations(p);
  check(axeWound.length === 0, `axe: no serious or critical violations on the wound page (${axeWound.join('; ')})`);
  const shot = join(P.artifacts, 'dashboard-wound.png');
  await p.screenshot({ path: shot, fullPage: true });
  say(`SCREENSHOT ${shot}`);

  // A phone-wide window: the chart is drawn again for its width, labels still apart.
  await p.setViewportSize({ width: 390, height: 900 });
  await p.waitForFunction((sel) => document.querySelector(sel)?.getBoundingClientRect().width < 400, chart, { timeout: 5000 });
  await p.waitForTimeout(300);
  const narrow = await tickFacts(p, chart);
  check(narrow.x.length >= 3 && narrow.overlaps.length === 0, `no tick labels overlap at ${Math.round(narrow.width)} px (x ${narrow.x.join(' ')}; ${narrow.overlaps.join(', ')})`);
  await p.screenshot({ path: join(P.artifacts, 'dashboard-wound-narrow.png'), fullPage: true });

  // From the patient's page, a consult without an appointment: the clinician lands in its room.
  await p.setViewportSize({ width: 1280, height: 900 });
  await p.goto(`${P.base}/web/dashboard/#/patient/${P.patient}`);
  await p.click('[data-testid="ad-hoc-consult"]', { timeout: 15000 });
  await p.waitForFunction(() => window.coherency?.state === 'admitted' && window.coherency.role === 'host', null, { timeout: 15000 });
  check(/^#\/consult\//.test(await p.evaluate(() => location.hash)), 'the ad hoc consult opens in the workspace with the clinician as its host');
  await p.waitForSelector('#queue li.empty', { timeout: 15000 });
  check((await p.textContent('#queue')).includes('Nobody is waiting'), 'its waiting list says nobody is waiting yet');
  // Leaving the view leaves the room (the socket closes); the consult itself goes on.
  const consult = await p.evaluate(() => window.coherency.consultId);
  await p.evaluate(() => { location.hash = '#/board'; });
  await p.waitForFunction(() => window.coherency.ws.readyState === WebSocket.CLOSED, null, { timeout: 15000 });
  const status = await p.evaluate(async (id) => (await (await fetch(`/v1/consults/${id}`, { headers: { Authorization: `Bearer ${sessionStorage.getItem('coherency.token')}` } })).json()).status, consult);
  check(status && status !== 'ended', `leaving the consult's view closes its socket, and the consult goes on (${status})`);
});

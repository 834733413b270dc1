// Browser half of the colour viewer test in tests/api/dashboard_browser.rs (parameters in
// COLOUR_TEST as JSON): a clinician opens a scan whose GLB carries vertex colours (a red
// wound bed on darker skin). The viewer shows the scan's colours first: reddish pixels where
// the wound is, in the middle of the mesh. The labelled toggle (aria-pressed) switches to the
// height-coded view, and the canvas's colours change; pressing it again brings them back.
// Then the clinician corrects the bed's tissue: "Correct the tissue" shows the scan from its
// keyframe, clicks around the middle of the view mark a region, the region is named slough,
// and once stored the page shows the shares computed again with the correction.
// Prints PASS lines, then DONE; any failed check exits 1.

import { check, launch, run, signedInPage } from './common.mjs';
import { join } from 'node:path';

const P = JSON.parse(process.env.COLOUR_TEST);
const browser = await launch();

/// Facts about the viewer's drawing buffer: mesh pixels (not the background), their mean
/// colour, and the reddish ones (r well above g and b) with their centroid (0..1 of the canvas).
const canvasFacts = (p) => p.evaluate(() => {
  const src = document.getElementById('viewer');
  const c2 = document.createElement('canvas');
  c2.width = src.width; c2.height = src.height;
  const g = c2.getContext('2d');
  g.drawImage(src, 0, 0);
  const d = g.getImageData(0, 0, c2.width, c2.height).data;
  let n = 0, red = 0, rx = 0, ry = 0;
  const sum = [0, 0, 0];
  for (let y = 0; y < c2.height; y++) {
    for (let x = 0; x < c2.width; x++) {
      const i = (y * c2.width + x) * 4;
      const [r, gr, b] = [d[i], d[i + 1], d[i + 2]];
      if (Math.abs(r - 0x20) + Math.abs(gr - 0x24) + Math.abs(b - 0x2b) <= 30) continue;
      n++; sum[0] += r; sum[1] += gr; sum[2] += b;
      if (r > 90 && r > 1.8 * gr && r > 1.6 * b) { red++; rx += x; ry += y; }
    }
  }
  return {
    n, total: c2.width * c2.height, red,
    mean: sum.map((s) => (n ? s / n : 0)),
    redCentre: red ? [rx / red / c2.width, ry / red / c2.height] : null,
    paint: src.dataset.paint,
  };
});

await run(browser, async () => {
  const p = await signedInPage(browser, P.token);
  await p.goto(`${P.base}/web/dashboard/#/scan/${P.scan}`);
  await p.waitForSelector('#viewer[data-ready="true"]', { timeout: 60000 });

  const toggle = p.locator('[data-testid="paint-toggle"]');
  check(await toggle.isVisible(), 'a coloured scan offers the paint toggle');
  check(await toggle.evaluate((b) => b.tagName === 'BUTTON' && b.textContent.trim().length > 0), `the toggle is a labelled button ("${await toggle.textContent()}")`);
  check((await toggle.getAttribute('aria-pressed')) === 'true', 'the scan colours are on (aria-pressed="true")');
  const colour = await canvasFacts(p);
  await p.locator('#viewer').screenshot({ path: join(P.artifacts, 'dashboard-colour.png') });
  check(colour.paint === 'colour', 'the viewer paints the scan colours by default');
  check(colour.n > colour.total * 0.05, `the mesh is drawn (${colour.n} of ${colour.total} pixels)`);
  check(colour.red > colour.n * 0.01, `the wound bed shows reddish pixels (${colour.red} of ${colour.n})`);
  const [cx, cy] = colour.redCentre;
  check(Math.abs(cx - 0.5) < 0.25 && Math.abs(cy - 0.5) < 0.25, `the red sits in the middle of the view, where the wound is (${cx.toFixed(2)}, ${cy.toFixed(2)})`);
  check(/colours/.test(await p.textContent('#viewer-status')), 'the status says the scan colours are shown');

  // The wound bed's tissue beside the measurements: the red bed reads as granulation.
  const tissue = p.locator('[data-testid="tissue"]');
  check(await tissue.isVisible(), 'the scan shows its wound bed tissue');
  const granulation = await p.textContent('[data-testid="t-granulation"] td');
  const pct = Number((granulation.match(/^(\d+)/) || [])[1]);
  check(pct >= 80, `granulation leads the red bed ("${granulation.trim()}")`);
  check(/±/.test(granulation), 'each share carries its ±');

  await toggle.click();
  await p.waitForSelector('#viewer[data-paint="height"]', { timeout: 10000 });
  check((await toggle.getAttribute('aria-pressed')) === 'false', 'pressed again: aria-pressed="false"');
  const height = await canvasFacts(p);
  await p.locator('#viewer').screenshot({ path: join(P.artifacts, 'dashboard-height.png') });
  const shift = Math.hypot(...height.mean.map((v, i) => v - colour.mean[i]));
  check(shift > 20, `the height-coded view paints other colours (mean ${height.mean.map((v) => v.toFixed(0))} vs ${colour.mean.map((v) => v.toFixed(0))}, ${shift.toFixed(1)} apart)`);
  check(/highlighted/.test(await p.textContent('#viewer-status')), 'the status says the wound region is highlighted');

  await toggle.click();
  await p.waitForSelector('#viewer[data-paint="colour"]', { timeout: 10000 });
  const back = await canvasFacts(p);
  const again = Math.hypot(...back.mean.map((v, i) => v - colour.mean[i]));
  check(again < 3, `toggled back, the scan colours return (${again.toFixed(1)} from the first view)`);

  // A tissue correction drawn in the browser.
  const correct = p.locator('[data-testid="correct-tissue"]');
  check(await correct.isVisible(), 'a clinician is offered to correct the tissue');
  await correct.click();
  const select = p.locator('[data-testid="correct-class"]');
  await select.waitFor({ timeout: 10000 });
  check(await p.locator('label[for="correct-class"]').isVisible(), 'the class choice is labelled');
  const submit = p.locator('[data-testid="correct-submit"]');
  check(await submit.isDisabled(), 'Correct waits for a region of at least three points');
  const box = await p.locator('#viewer').boundingBox();
  const r = 0.42 * Math.min(box.width, box.height);
  for (let k = 0; k < 12; k++) {
    const a = (2 * Math.PI * k) / 12;
    await p.mouse.click(box.x + box.width / 2 + r * Math.cos(a), box.y + box.height / 2 + r * Math.sin(a));
  }
  check((await p.textContent('[data-testid="outline-count"]')).trim() === '12 points', 'each click adds a corner of the region');
  await select.selectOption('slough');
  await submit.click();
  // The page is drawn again with the corrected shares once the server has recomputed them.
  await p.waitForFunction(() => {
    const cell = document.querySelector('[data-testid="t-slough"] td');
    return cell && /^\d+/.test(cell.textContent) && Number(cell.textContent.match(/^(\d+)/)[1]) >= 50;
  }, null, { timeout: 120000 });
  const slough = await p.textContent('[data-testid="t-slough"] td');
  const gran = await p.textContent('[data-testid="t-granulation"] td');
  check(Number(slough.match(/^(\d+)/)[1]) >= 50, `the corrected region now reads as slough ("${slough.trim()}")`);
  check(Number(gran.match(/^(\d+)/)[1]) < pct, `granulation gave way ("${gran.trim()}", was ${pct} %)`);
  await p.locator('[data-testid="measurements"]').screenshot({ path: join(P.artifacts, 'dashboard-tissue-corrected.png') });
});

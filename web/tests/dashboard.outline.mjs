// Browser half of the outline test in tests/api/dashboard_browser.rs (parameters in the
// OUTLINE_TEST environment variable as JSON): a clinician opens a scan whose automatic
// measurement failed, reads why, opens "Draw the outline", sees the mesh from the suggested
// keyframe's camera, clicks the true outline's pixels (given by the Rust side, projected
// with that frame's camera) and measures. Prints PASS lines, then DONE; any failed check
// exits 1.

import { check, launch, say, signedInPage } from './common.mjs';
import { join } from 'node:path';

const P = JSON.parse(process.env.OUTLINE_TEST);

const browser = await launch();

/// Pixels of the viewer's drawing buffer that are not the background, and which of the
/// given keyframe pixels land on the mesh.
const canvasFacts = (p, kf, points, mask) => p.evaluate(([kf, points, mask]) => {
  const src = document.getElementById('viewer');
  const c2 = document.createElement('canvas');
  c2.width = src.width; c2.height = src.height;
  const g = c2.getContext('2d');
  g.drawImage(src, 0, 0);
  const d = g.getImageData(0, 0, c2.width, c2.height).data;
  const isMesh = (x, y) => {
    const i = (Math.min(c2.height - 1, Math.max(0, Math.floor(y))) * c2.width + Math.min(c2.width - 1, Math.max(0, Math.floor(x)))) * 4;
    return Math.abs(d[i] - 0x20) + Math.abs(d[i + 1] - 0x24) + Math.abs(d[i + 2] - 0x2b) > 30;
  };
  let n = 0, sx = 0, sy = 0;
  for (let y = 0; y < c2.height; y++) for (let x = 0; x < c2.width; x++) if (isMesh(x, y)) { n++; sx += x; sy += y; }
  // Canvas buffer pixel → keyframe pixel: linear, pixel centres at integers.
  const toKey = (x, y) => [((x + 0.5) / c2.width) * kf.width - 0.5, ((y + 0.5) / c2.height) * kf.height - 0.5];
  const onMesh = points.filter(([u, v]) => isMesh(((u + 0.5) / kf.width) * c2.width, ((v + 0.5) / kf.height) * c2.height)).length;
  // Against the pixels the mesh's vertices project to with the keyframe's camera (the Rust
  // side's `mask`): how many of those the canvas draws (recall), and how many keyframe pixels
  // the canvas draws that are within a pixel of one (precision).
  const inMask = (u, v) => u >= 0 && v >= 0 && u < kf.width && v < kf.height && mask[v * kf.width + u] === '1';
  let masked = 0, recalled = 0, drawnPx = 0, precise = 0;
  for (let v = 0; v < kf.height; v++) {
    for (let u = 0; u < kf.width; u++) {
      const drawn = isMesh(((u + 0.5) / kf.width) * c2.width, ((v + 0.5) / kf.height) * c2.height);
      if (inMask(u, v)) { masked++; if (drawn) recalled++; }
      if (drawn) {
        drawnPx++;
        let near = false;
        for (let dv = -1; dv <= 1 && !near; dv++) for (let du = -1; du <= 1 && !near; du++) near = inMask(u + du, v + dv);
        if (near) precise++;
      }
    }
  }
  return {
    n, total: c2.width * c2.height, centroid: n ? toKey(sx / n, sy / n) : null, onMesh, aspect: src.clientWidth / src.clientHeight,
    recall: masked ? recalled / masked : 0, precision: drawnPx ? precise / drawnPx : 0,
  };
}, [kf, points, mask]);

try {
  const p = await signedInPage(browser, P.token);
  p.on('console', (m) => say(`console: ${m.text()}`));
  await p.goto(`${P.base}/web/dashboard/#/scan/${P.scan}`);

  // Why there is no automatic measurement, and the mesh in the orbit view.
  const reason = p.locator('[data-testid="outcome-reason"]');
  await reason.waitFor({ timeout: 30000 });
  check((await reason.getAttribute('data-code')) === P.reason_code, `the reason code is ${P.reason_code}`);
  const text = await reason.textContent();
  check(/No automatic measurement/.test(text) && /depression/.test(text), `the page says why: "${text}"`);
  check((await p.textContent('[data-testid="measurements"]')).includes('No measurement yet'), 'no measurement yet');
  await p.waitForSelector('#viewer[data-ready="true"]', { timeout: 30000 });

  // The outline view: the mesh as the suggested keyframe saw it.
  await p.click('[data-testid="draw-outline"]');
  await p.waitForSelector('#viewer[data-view="keyframe"]', { timeout: 10000 });
  await p.waitForTimeout(100);
  const kf = P.keyframe;
  const facts = await canvasFacts(p, kf, P.outline, P.mask);
  const shot = join(P.artifacts, 'dashboard-outline-keyframe.png');
  await p.locator('#viewer').screenshot({ path: shot });
  check(Math.abs(facts.aspect - kf.width / kf.height) < 0.02, `the canvas has the keyframe's aspect (${facts.aspect.toFixed(3)})`);
  check(facts.n > facts.total * 0.05, `the keyframe view draws the mesh (${facts.n} of ${facts.total} pixels; ${shot})`);
  check(facts.onMesh === P.outline.length, `every true outline pixel lies on the drawn mesh (${facts.onMesh} of ${P.outline.length})`);
  check(facts.recall > 0.9 && facts.precision > 0.9,
    `the drawn mesh covers the pixels its vertices project to with the keyframe's camera (recall ${facts.recall.toFixed(3)}, precision ${facts.precision.toFixed(3)})`);
  // The frame itself, as the depth camera saw it, under the outline: its own pixels.
  await p.click('[data-testid="keyframe-toggle"]');
  await p.waitForFunction(() => { const i = document.querySelector('[data-testid="keyframe-image"]'); return i && !i.hidden && i.complete && i.naturalWidth > 0; }, null, { timeout: 10000 });
  const img = await p.evaluate(() => { const i = document.querySelector('[data-testid="keyframe-image"]'); const c = document.getElementById('viewer'); return { w: i.naturalWidth, h: i.naturalHeight, cw: i.clientWidth, ch: i.clientHeight, vw: c.clientWidth, vh: c.clientHeight }; });
  check(img.w === kf.width && img.h === kf.height && Math.abs(img.cw - img.vw) <= 1 && Math.abs(img.ch - img.vh) <= 1,
    `the depth image is the frame (${img.w}×${img.h}) laid over the canvas (${img.cw}×${img.ch} on ${img.vw}×${img.vh})`);
  await p.click('[data-testid="keyframe-toggle"]');
  const [cu, cv] = P.centre;
  const off = Math.hypot(facts.centroid[0] - P.mesh_centre[0], facts.centroid[1] - P.mesh_centre[1]);
  check(off < 6, `the drawn mesh sits where the keyframe saw the scanned region (centroid (${facts.centroid.map((x) => x.toFixed(1))}) vs (${P.mesh_centre.map((x) => x.toFixed(1))}), ${off.toFixed(1)} px; wound centre (${cu.toFixed(1)}, ${cv.toFixed(1)}))`);

  // The clinician clicks round the wound's edge and measures.
  const box = await p.locator('#viewer').boundingBox();
  for (const [u, v] of P.outline) {
    await p.mouse.click(box.x + ((u + 0.5) / kf.width) * box.width, box.y + ((v + 0.5) / kf.height) * box.height);
  }
  check((await p.textContent('[data-testid="outline-count"]')) === `${P.outline.length} points`, `${P.outline.length} points placed`);
  await p.click('[data-testid="outline-measure"]');
  // First the values the outline gives, with nothing stored; then the clinician confirms.
  await p.waitForSelector('[data-testid="outline-preview"]:not([hidden]) [data-testid="m-outline_area_mm2"]', { timeout: 120000 });
  const previewed = await p.textContent('[data-testid="outline-preview"] [data-testid="m-outline_area_mm2"] td:last-child');
  check(/^\d+(\.\d)? ± \d+(\.\d)? mm²$/.test(previewed), `the outline's area is previewed with its ± ("${previewed}")`);
  const stored = await p.evaluate(async (id) => (await (await fetch(`/v1/scans/${id}/measurements`, { headers: { Authorization: `Bearer ${sessionStorage.getItem('coherency.token')}` } })).json()).measurements.length, P.scan);
  check(stored === 0, `nothing is stored before the clinician confirms (${stored} measurements)`);
  await p.click('[data-testid="outline-confirm"]');
  await p.waitForSelector('[data-testid="m-col-polygon"]', { timeout: 120000 });
  const area = await p.textContent('[data-testid="measurements"] [data-testid="m-outline_area_mm2"] td:last-child');
  check(area === previewed, `the stored outline measures what the preview said ("${area}" vs "${previewed}")`);
  say(`AREA ${area}`);
  await p.waitForSelector('#viewer[data-ready="true"][data-view="orbit"]', { timeout: 30000 });
  check(true, 'the measurement is shown and the 3D orbit view is back');
  say('DONE');
  await browser.close();
} catch (e) {
  say(`FAIL ${e.message}`);
  await browser.close();
  process.exit(1);
}

// Headless Chromium streams a phantom wound scan over a WebRTC data channel
// (web/scan-rtc.html): signalling on /v1/scans/{id}/rtc, fragments, acks, finish, and the
// scan completes with measurements; the page is styled (its stylesheet passes the server's
// CSP) and nothing it loads is refused. Run by tests/api/scan_datachannel.rs, which starts the
// server and passes BASE, SCAN and TOKEN. Prints one JSON line; exits non-zero on failure.
import { chromium } from 'playwright-core';

const { BASE, SCAN, TOKEN } = process.env;
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const TIMEOUT = 150_000;

const args = [
  '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--allow-loopback-in-peer-connection',
  // Loopback only: no candidates on other interfaces, no mDNS names.
  '--force-webrtc-ip-handling-policy=default_public_interface_only',
  '--disable-features=WebRtcHideLocalIpsWithMdns',
];

const result = { ok: false };
const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args, timeout: 30_000 });
try {
  const page = await (await browser.newContext()).newPage();
  page.on('pageerror', (e) => console.error(`page error: ${e}`));
  const refused = [];
  page.on('console', (m) => { if (/Content Security Policy/i.test(m.text())) refused.push(m.text()); });
  page.on('response', (r) => { if (r.status() >= 400) refused.push(`${r.status()} ${new URL(r.url()).pathname}`); });
  await page.goto(`${BASE}/web/scan-rtc.html#token=${TOKEN}&scan=${SCAN}`);
  // scan-rtc.css sets the body's width: unstyled, it would be the window's.
  const maxWidth = await page.evaluate(() => getComputedStyle(document.body).maxWidth);
  if (maxWidth !== '736px') throw new Error(`scan-rtc.html is unstyled (max-width ${maxWidth})`);
  await page.waitForFunction(() => ['measured', 'failed'].includes(window.coherencyScan.state), null, { timeout: TIMEOUT });
  const s = await page.evaluate(() => {
    const c = window.coherencyScan;
    return { state: c.state, sent: c.sent, acked: c.acked, finished: c.finished, errors: c.errors, measurements: c.measurements };
  });
  Object.assign(result, s);
  result.refused = refused;
  result.ok = s.state === 'measured' && refused.length === 0;
} catch (e) {
  result.error = String(e);
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
process.exit(result.ok ? 0 : 1);

// Browser half of the enrolment test in tests/api/dashboard_browser.rs (ENROL_TEST: the base
// URL, a staff login without two-step sign-in, the artefacts folder). The person signs in on
// the dashboard, is taken to set up two-step sign-in, scans the QR code (here: reads the key
// shown beside it and computes the code as an authenticator app would, RFC 6238), confirms,
// sees the recovery codes once, and reaches the live board. Prints PASS lines, then DONE.

import { createHmac } from 'node:crypto';
import { join } from 'node:path';
import { check, launch, run, say } from './common.mjs';
import { seriousViolations } from './axe.mjs';

const P = JSON.parse(process.env.ENROL_TEST);

/// The current 6-digit TOTP code of a base32 secret (SHA-1, 30 s steps).
function totp(secret) {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  let bits = '';
  for (const ch of secret.replace(/=+$/, '').toUpperCase()) bits += alphabet.indexOf(ch).toString(2).padStart(5, '0');
  const key = Buffer.from(bits.match(/.{8}/g).map((b) => parseInt(b, 2)));
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(Math.floor(Date.now() / 1000 / 30)));
  const h = createHmac('sha1', key).update(counter).digest();
  const o = h[h.length - 1] & 15;
  return String((h.readUInt32BE(o) & 0x7fffffff) % 1000000).padStart(6, '0');
}

const browser = await launch();
await run(browser, async () => {
  const p = await (await browser.newContext({ viewport: { width: 1280, height: 900 } })).newPage();
  p.on('pageerror', (e) => say(`page error: ${e.message}`));
  await p.goto(`${P.base}/web/dashboard/`);
  await p.fill('#email', P.email);
  await p.fill('#password', P.password);
  await p.click('form.login button[type="submit"]');
  await p.waitForSelector('[data-testid="totp-qr"]', { timeout: 15000 });
  const modules = Number(await p.getAttribute('[data-testid="totp-qr"]', 'data-modules'));
  check(modules >= 21 && (modules - 17) % 4 === 0, `a QR code to scan (${modules}×${modules} modules)`);
  const v = await seriousViolations(p);
  check(v.length === 0, `axe: no serious or critical violations on the enrolment page (${v.join('; ')})`);
  await p.screenshot({ path: join(P.artifacts, 'dashboard-enrol.png'), fullPage: true });
  const secret = (await p.textContent('[data-testid="totp-secret"]')).trim();
  await p.fill('#enrol-code', '000000' === totp(secret) ? '111111' : '000000');
  await p.click('.enrol button[type="submit"]');
  await p.waitForFunction(() => /not right/.test(document.querySelector('.enrol .error').textContent), null, { timeout: 10000 });
  say('PASS a wrong code is refused in words');
  await p.fill('#enrol-code', totp(secret));
  await p.click('.enrol button[type="submit"]');
  await p.waitForSelector('[data-testid="recovery-codes"] li', { timeout: 10000 });
  const codes = await p.locator('[data-testid="recovery-codes"] li').count();
  check(codes >= 8, `recovery codes shown once (${codes})`);
  await p.click('[data-testid="enrol-done"]');
  await p.waitForSelector('#conn.live', { timeout: 15000 });
  say('PASS the verified session reaches the live board');
});

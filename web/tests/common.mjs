// What the dashboard's browser scripts share: the system Chromium launched headless and
// loopback-only (SwiftShader for the WebGL viewer), and PASS/FAIL lines the Rust side reads.

import { chromium } from 'playwright-core';

export const say = (s) => console.log(s);

/// Fails the script with `what` unless `ok`; prints a PASS line otherwise.
export const check = (ok, what) => { if (!ok) throw new Error(`check failed: ${what}`); say(`PASS ${what}`); };

export function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--use-angle=swiftshader', '--enable-unsafe-swiftshader'],
  });
}

/// A page of a new browser context already signed in with `token` as `user` (what the
/// workspace keeps in sessionStorage), saying page errors and failed requests.
export async function signedInPage(browser, token, user = { role: 'clinician' }, contextOptions = {}) {
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 900 }, ...contextOptions });
  await ctx.addInitScript(([t, u]) => {
    sessionStorage.setItem('coherency.token', t);
    sessionStorage.setItem('coherency.user', JSON.stringify(u));
  }, [token, user]);
  const p = await ctx.newPage();
  p.on('pageerror', (e) => say(`page error: ${e.message}`));
  p.on('response', (r) => { if (r.status() >= 400) say(`http ${r.status()} ${r.url()}`); });
  return p;
}

/// Runs a script's checks: DONE when they all pass, else FAIL with the stack and exit code 1;
/// the browser closes either way.
export async function run(browser, checks) {
  try {
    await checks();
    say('DONE');
  } catch (e) {
    say(`FAIL ${e.stack || e}`);
    process.exitCode = 1;
  } finally {
    await browser.close().catch(() => {});
  }
}

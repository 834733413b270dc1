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

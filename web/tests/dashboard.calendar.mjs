// Browser half of the calendar test in tests/api/dashboard_browser.rs (parameters in the
// CALENDAR_TEST environment variable as JSON). Alice opens her calendar, moves to the week of
// the test's day, and finds the booking and the hold where they fall, free slots around them
// and none over them; the day view shows that day alone; Bob's calendar has nothing of hers.
// Times are UTC (the browser context's time zone). Prints PASS lines, then DONE; any failed
// check exits 1.

import { check, launch, run, signedInPage } from './common.mjs';
import { join } from 'node:path';
import { seriousViolations } from './axe.mjs';

const P = JSON.parse(process.env.CALENDAR_TEST);

const browser = await launch();

async function open(who) {
  return signedInPage(browser, who.token, { role: 'clinician', id: who.id, display_name: 'Dr Test' },
    { viewport: { width: 1280, height: 1000 }, timezoneId: 'UTC' });
}

/// Clicks "Later" until the test's day is on screen (at most three weeks).
async function toDay(p) {
  for (let i = 0; i < 3; i++) {
    await p.waitForSelector('[data-testid="calendar"] .cal-grid', { timeout: 15000 });
    if (await p.locator(`.cal-col[data-day="${new Date(`${P.day}T00:00:00Z`).toDateString()}"]`).count()) return;
    await p.click('[data-testid="cal-next"]');
    await p.waitForTimeout(300);
  }
  throw new Error(`the week of ${P.day} never showed`);
}

await run(browser, async () => {
  const a = await open(P.alice);
  await a.goto(`${P.base}/web/dashboard/#/calendar`);
  check(await a.isVisible('#nav-calendar'), 'the header links to the calendar');
  await toDay(a);
  const col = `.cal-col[data-day="${new Date(`${P.day}T00:00:00Z`).toDateString()}"]`;
  const booked = a.locator(`${col} [data-testid="cal-appt"][data-id="${P.booked}"]`);
  await booked.waitFor({ timeout: 10000 });
  await a.waitForFunction((sel) => !document.querySelector(sel).textContent.includes('…'), `${col} [data-id="${P.booked}"]`, { timeout: 10000 });
  const bText = await booked.textContent();
  check(/10:00/.test(bText) && bText.includes(P.booked_name) && /booked/.test(bText), `the booking is at 10:00 with the patient named ("${bText}")`);
  const held = a.locator(`${col} [data-testid="cal-appt"][data-id="${P.held}"]`);
  const hText = await held.textContent();
  check(/11:00/.test(hText) && /held until \d\d:\d\d/.test(hText), `the hold is at 11:00 with when it lapses ("${hText}")`);
  // The blocks sit at their times: 11:00 is 60 px below 10:00.
  const [bTop, hTop] = [await booked.evaluate((e) => e.offsetTop), await held.evaluate((e) => e.offsetTop)];
  check(hTop - bTop === 60, `one hour apart on the grid (${bTop} → ${hTop})`);
  const slots = await a.locator(`${col} [data-testid="cal-slot"]`).evaluateAll((els) => els.map((e) => e.dataset.start));
  const at = (h, m) => `${P.day}T${String(h).padStart(2, '0')}:${String(m).padStart(2, '0')}`;
  check(slots.length >= 10, `free slots that day (${slots.length})`);
  check(!slots.some((s) => s.startsWith(at(10, 0)) || s.startsWith(at(11, 0))), `none over the booking or the hold (${slots.join(' ')})`);
  check(slots.some((s) => s.startsWith(at(10, 30))) && slots.some((s) => s.startsWith(at(9, 0))), 'free slots around them');
  await a.screenshot({ path: join(P.artifacts, 'dashboard-calendar.png'), fullPage: true });
  const axeCal = await seriousViolations(a);
  check(axeCal.length === 0, `axe: no serious or critical violations on the calendar (${axeCal.join('; ')})`);

  // The day view: that day alone (moving from the week's Monday to the day by "Later").
  await a.click('[data-testid="cal-day"]');
  await a.waitForSelector('.cal-grid.days-1', { timeout: 5000 });
  for (let i = 0; i < 7 && !(await a.locator(col).count()); i++) {
    await a.click('[data-testid="cal-next"]');
    await a.waitForTimeout(200);
  }
  check(await a.locator('.cal-col').count() === 1 && await a.locator(`${col} [data-testid="cal-appt"]`).count() === 2, 'the day view shows the day with both');

  // The sign-in page, as a new visitor sees it.
  const guest = await (await browser.newContext({ timezoneId: 'UTC' })).newPage();
  await guest.goto(`${P.base}/web/dashboard/`);
  await guest.waitForSelector('form.login', { timeout: 10000 });
  const axeLogin = await seriousViolations(guest);
  check(axeLogin.length === 0, `axe: no serious or critical violations on the sign-in page (${axeLogin.join('; ')})`);

  const b = await open(P.bob);
  await b.goto(`${P.base}/web/dashboard/#/calendar`);
  await toDay(b);
  check(await b.locator('[data-testid="cal-appt"]').count() === 0, "bob's calendar has none of alice's appointments");
  check(await b.locator(`${col} [data-testid="cal-slot"][data-start^="${at(10, 0)}"]`).count() === 1, 'bob is free at 10:00');
});

// Two-step sign-in enrolment for staff who have none yet (the API answers them
// `403 mfa_required` everywhere else): POST /v1/me/mfa/totp gives a secret and its
// `otpauth://` URI, shown as a QR code an authenticator app scans (and as text to type);
// the first code confirms it (POST /v1/me/mfa/totp/confirm), which also verifies this
// session, and the one-time recovery codes are shown once. The QR code is drawn here as SVG
// from qrcode-generator's modules (bundled: nothing is fetched from elsewhere).

import qrcode from 'qrcode-generator';

const SVG = 'http://www.w3.org/2000/svg';

/// The QR code of `text` as an SVG element (dark modules as rects, a 4-module quiet zone).
export function qrSvg(text, label) {
  const qr = qrcode(0, 'M');
  qr.addData(text);
  qr.make();
  const n = qr.getModuleCount();
  const svg = document.createElementNS(SVG, 'svg');
  svg.setAttribute('viewBox', `-4 -4 ${n + 8} ${n + 8}`);
  svg.setAttribute('width', '220');
  svg.setAttribute('height', '220');
  svg.setAttribute('role', 'img');
  svg.setAttribute('aria-label', label);
  svg.setAttribute('data-testid', 'totp-qr');
  svg.setAttribute('data-modules', String(n));
  const bg = document.createElementNS(SVG, 'rect');
  for (const [k, v] of Object.entries({ x: -4, y: -4, width: n + 8, height: n + 8, fill: '#fff' })) bg.setAttribute(k, v);
  svg.append(bg);
  const path = document.createElementNS(SVG, 'path');
  let d = '';
  for (let r = 0; r < n; r++) for (let c = 0; c < n; c++) if (qr.isDark(r, c)) d += `M${c} ${r}h1v1h-1z`;
  path.setAttribute('d', d);
  path.setAttribute('fill', '#000');
  svg.append(path);
  return svg;
}

/// The enrolment page; `done()` runs once the session is verified.
export async function enrolPage(root, { api, el, done }) {
  const err = el('p', { class: 'error', role: 'alert' });
  root.replaceChildren(el('section', { class: 'card enrol' }, el('h2', { text: 'Set up two-step sign-in' }), el('p', { text: 'Preparing…' }), err));
  let e;
  try {
    e = await api('/v1/me/mfa/totp', { json: {} });
  } catch (x) {
    err.textContent = `Could not start: ${x.message}`;
    return;
  }
  const code = el('input', { id: 'enrol-code', inputmode: 'numeric', autocomplete: 'one-time-code', required: '', 'aria-describedby': 'enrol-help' });
  const form = el('form', { 'aria-label': 'Confirm the authenticator code' },
    el('label', { for: 'enrol-code', text: 'The 6-digit code your app shows now' }), code,
    el('button', { type: 'submit', text: 'Confirm' }));
  const card = el('section', { class: 'card enrol' },
    el('h2', { text: 'Set up two-step sign-in' }),
    el('p', { id: 'enrol-help', text: 'Staff sign in with a code from an authenticator app as well as their password. Scan this code with the app (or type the key below into it), then enter the code it shows.' }),
    qrSvg(e.otpauth_uri, 'QR code to add Coherency to an authenticator app'),
    el('p', {}, 'Key: ', el('code', { 'data-testid': 'totp-secret', text: e.secret })),
    form, err);
  root.replaceChildren(card);
  code.focus();
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    err.textContent = '';
    try {
      const r = await api('/v1/me/mfa/totp/confirm', { json: { code: code.value.trim() } });
      const list = el('ol', { 'data-testid': 'recovery-codes' }, ...r.recovery_codes.map((c) => el('li', {}, el('code', { text: c }))));
      root.replaceChildren(el('section', { class: 'card enrol' },
        el('h2', { text: 'Two-step sign-in is on' }),
        el('p', { text: 'Keep these recovery codes somewhere safe: each signs you in once if you lose the app. They are shown only now.' }),
        list,
        el('button', { type: 'button', 'data-testid': 'enrol-done', text: 'Continue to the board', onclick: done })));
    } catch (x) {
      err.textContent = x.code === 'invalid_totp' ? 'That code is not right. Check the app and try the current code.' : `Could not confirm: ${x.message}`;
    }
  });
}

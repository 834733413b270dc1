// What every view of the workspace shares: the element helper, the session (the access token
// in this tab's session storage) and the API client. A 401 about the session ends it and
// hands over to whoever registered with `onSignedOut` (the router: back to the sign-in).

export const $main = () => document.getElementById('main');

/// `el('a', { href, text, onclick }, ...children)`: attributes set, `text` as text content,
/// `on…` as listeners; null attributes and children are skipped.
export const el = (tag, attrs = {}, ...kids) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v == null) continue;
    if (k === 'text') e.textContent = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const k of kids) if (k != null) e.append(k);
  return e;
};

export const auth = {
  get token() { return sessionStorage.getItem('coherency.token'); },
  get user() { try { return JSON.parse(sessionStorage.getItem('coherency.user')); } catch { return null; } },
  set(token, user) { sessionStorage.setItem('coherency.token', token); sessionStorage.setItem('coherency.user', JSON.stringify(user)); },
  clear() { sessionStorage.removeItem('coherency.token'); sessionStorage.removeItem('coherency.user'); },
};

let signedOut = () => {};
/// What happens when the API says the session is over (set once, by the router).
export function onSignedOut(f) { signedOut = f; }

/// Why the session ended, for the sign-in page to say (then forgotten).
export const session = { endedWhy: '' };

/// Calls the API with this tab's session. `opts.json` is sent as the JSON body (POST unless
/// `opts.method` says otherwise); `opts.raw` returns the response itself. Failures throw an
/// Error with `status`, the API's stable `code` and its message.
export async function api(path, opts = {}) {
  const headers = { ...(opts.headers || {}) };
  if (auth.token) headers.Authorization = `Bearer ${auth.token}`;
  let body = opts.body;
  if (opts.json !== undefined) { headers['Content-Type'] = 'application/json'; body = JSON.stringify(opts.json); }
  const res = await fetch(path, { method: opts.method || (opts.json !== undefined ? 'POST' : 'GET'), headers, body });
  if (!res.ok) {
    let msg = `${res.status}`, code = null;
    try { const b = await res.json(); code = b.error?.code ?? null; msg = b.error?.message || code || msg; } catch { /* not json */ }
    // A 401 about the session signs out; one about a code typed (`invalid_totp`) does not.
    if (res.status === 401 && path !== '/v1/auth/login' && code !== 'invalid_totp') {
      auth.clear();
      session.endedWhy = 'Your session has ended. Sign in again.';
      signedOut();
      const err = new Error('signed out'); err.status = 401; err.code = 'signed_out'; throw err;
    }
    const err = new Error(msg); err.status = res.status; err.code = code; throw err;
  }
  return opts.raw ? res : res.json();
}

/// A value with its ± (`12.3 ± 0.4 mm²`), or a dash.
export const pm = (v, unit, digits = 1) => (v ? `${v.value.toFixed(digits)} ± ${v.uncertainty.toFixed(digits)} ${unit}` : '—');

const AETIOLOGY = { pressure: 'pressure injury', diabetic_foot: 'diabetic foot ulcer', venous: 'venous ulcer', arterial: 'arterial ulcer', surgical: 'surgical wound', trauma: 'traumatic wound', burn: 'burn', other: 'wound' };
/// A wound as the views name it: its site and what it is (`Left heel · diabetic foot ulcer`).
export const woundName = (w) => `${w.site || w.site_display} · ${AETIOLOGY[w.aetiology] || 'wound'}`;

/// Staff (anyone but a patient) in this tab.
export const isStaff = () => !!auth.user?.role && auth.user.role !== 'patient';

// The pages both example apps serve: plain HTML and one stylesheet, so the Express and Koa versions look
// and behave the same. Every value that came from a user or a request passes through escapeHtml().
import { CSRF_FIELD } from './csrf.mjs';
import { INPUT_LIMITS } from './input.mjs';

export const escapeHtml = (text) => String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

const formatTime = (date) =>
  `${date.toLocaleString('en-GB', { timeZone: 'UTC', dateStyle: 'medium', timeStyle: 'short' })} UTC`;

const time = (date) => `<time datetime="${date.toISOString()}">${escapeHtml(formatTime(date))}</time>`;

const hiddenToken = (csrf) => `<input type="hidden" name="${CSRF_FIELD}" value="${escapeHtml(csrf)}">`;

/** A form that POSTs to `action` with the CSRF token: the only way anything changes in this app. */
const postButton = (action, csrf, label, { className = '', fields = {} } = {}) =>
  `<form method="post" action="${action}">${hiddenToken(csrf)}${Object.entries(fields)
    .map(([name, value]) => `<input type="hidden" name="${name}" value="${escapeHtml(value)}">`)
    .join('')}<button class="${className}">${label}</button></form>`;

function layout({ title, body, user, csrf, framework }) {
  const nav = user
    ? `<nav><a href="/sessions">Where you're signed in</a>${postButton('/logout', csrf, 'Sign out', { className: 'link' })}</nav>`
    : '';
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escapeHtml(title)} · typeorm-session example</title>
<link rel="stylesheet" href="/style.css">
</head>
<body>
<header class="bar"><a class="brand" href="/">typeorm-session</a>${nav}</header>
<main>
${body}
</main>
<footer>The typeorm-session example app, on ${escapeHtml(framework)}.</footer>
</body>
</html>
`;
}

const notice = (text, kind = 'error') => (text ? `<p class="notice ${kind}" role="${kind === 'error' ? 'alert' : 'status'}">${escapeHtml(text)}</p>` : '');

export function signedOutPage({ csrf, framework, error, form = 'login', email = '', status }) {
  const emailField = (autocomplete, value) =>
    `<label>E-mail <input name="email" type="email" autocomplete="${autocomplete}" required maxlength="${INPUT_LIMITS.emailLength}" value="${escapeHtml(value)}"></label>`;
  const body = `<h1>Welcome</h1>
<p class="muted">Sign in, or create an account to try the session list.</p>
${status ? notice(status, 'info') : ''}
<div class="cards">
<section class="card" aria-labelledby="sign-in">
<h2 id="sign-in">Sign in</h2>
${form === 'login' ? notice(error) : ''}
<form method="post" action="/login" class="stack">
${emailField('username', form === 'login' ? email : '')}
<label>Password <input name="password" type="password" autocomplete="current-password" required maxlength="${INPUT_LIMITS.passwordMax}"></label>
${hiddenToken(csrf)}<button>Sign in</button>
</form>
</section>
<section class="card" aria-labelledby="register">
<h2 id="register">Create an account</h2>
${form === 'register' ? notice(error) : ''}
<form method="post" action="/register" class="stack">
${emailField('email', form === 'register' ? email : '')}
<label>Password <input name="password" type="password" autocomplete="new-password" required minlength="${INPUT_LIMITS.passwordMin}" maxlength="${INPUT_LIMITS.passwordMax}"></label>
<p class="hint">At least ${INPUT_LIMITS.passwordMin} characters.</p>
${hiddenToken(csrf)}<button>Create account</button>
</form>
</section>
</div>`;
  return layout({ title: 'Sign in', body, csrf, framework });
}

export function homePage({ user, csrf, framework }) {
  const body = `<h1>Welcome back</h1>
<p class="wrap">Signed in as <strong class="user-email">${escapeHtml(user.email)}</strong>.</p>
<p>This session is stored in your database through TypeORM. Open this page in a second browser, sign in
there too, and both appear under <a href="/sessions">Where you're signed in</a>, where either can sign the other out.</p>
<p><a class="button" href="/sessions">Where you're signed in</a></p>`;
  return layout({ title: 'Home', body, user, csrf, framework });
}

/** `sessions`: listByUser()'s entries, each with `current` set on the one of this request. */
export function sessionsPage({ user, csrf, framework, sessions, message }) {
  const items = sessions
    .map((s) => {
      const device = s.metadata ?? {};
      const label = device.browser ? `${device.browser} on ${device.os}` : 'Unknown device';
      return `<li class="session${s.current ? ' current' : ''}">
<div class="device"><strong>${escapeHtml(label)}</strong>${s.current ? ' <span class="badge">This device</span>' : ''}</div>
<dl>
<dt>IP address</dt><dd>${escapeHtml(device.ip ?? 'unknown')}</dd>
<dt>Signed in</dt><dd>${time(s.createdAt)}</dd>
<dt>Last seen</dt><dd>${time(s.lastSeenAt)}</dd>
</dl>
${s.current ? '' : postButton('/sessions/revoke', csrf, 'Sign out this device', { className: 'secondary', fields: { handle: s.handle } })}
</li>`;
    })
    .join('\n');
  const others = sessions.filter((s) => !s.current).length;
  const body = `<h1>Where you're signed in</h1>
<p class="muted wrap">${sessions.length} ${sessions.length === 1 ? 'session' : 'sessions'} of <strong class="user-email">${escapeHtml(user.email)}</strong>. Sign out any device you do not recognise.</p>
${notice(message, 'info')}
<ul class="sessions">
${items}
</ul>
<div class="actions">
${others ? postButton('/sessions/revoke-others', csrf, 'Sign out all other devices', { className: 'secondary' }) : ''}
${postButton('/sessions/revoke-all', csrf, 'Sign out everywhere', { className: 'danger' })}
</div>`;
  return layout({ title: "Where you're signed in", body, user, csrf, framework });
}

/** An error or refusal, saying what happened in words and nothing about the server's internals. */
export function messagePage({ title, text, framework }) {
  const body = `<h1>${escapeHtml(title)}</h1>
<p>${escapeHtml(text)}</p>
<p><a class="button" href="/">Back to the start page</a></p>`;
  return layout({ title, body, framework });
}

export const stylesheet = `
:root { color-scheme: light dark; --fg: #1d2330; --muted: #5b6475; --bg: #f5f6f8; --card: #fff; --line: #d9dde5;
  --accent: #2557d6; --accent-fg: #fff; --danger: #b3261e; --ok-bg: #e7f3ec; --err-bg: #fbeaea; }
@media (prefers-color-scheme: dark) {
  :root { --fg: #e6e9ef; --muted: #a3abba; --bg: #15181e; --card: #1e222a; --line: #343a46;
    --accent: #7aa2ff; --accent-fg: #0d1220; --danger: #ff8a80; --ok-bg: #1d3326; --err-bg: #3a1f1f; }
}
* { box-sizing: border-box; }
body { margin: 0; font: 16px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg); background: var(--bg); }
.bar { display: flex; flex-wrap: wrap; gap: .5rem 1.5rem; align-items: center; justify-content: space-between;
  padding: .75rem 1.25rem; background: var(--card); border-bottom: 1px solid var(--line); }
.brand { font-weight: 700; color: var(--fg); text-decoration: none; }
nav { display: flex; flex-wrap: wrap; gap: .25rem 1rem; align-items: center; }
nav form { margin: 0; }
main { max-width: 52rem; margin: 0 auto; padding: 1.5rem 1.25rem 2rem; }
h1 { font-size: 1.6rem; margin: 0 0 .5rem; }
h2 { font-size: 1.15rem; margin: 0 0 .75rem; }
a { color: var(--accent); }
.muted, .hint, footer { color: var(--muted); }
.hint { font-size: .875rem; margin: -.25rem 0 0; }
.wrap, .user-email, dd, .device { overflow-wrap: anywhere; }
.cards { display: grid; gap: 1.25rem; grid-template-columns: repeat(auto-fit, minmax(min(100%, 18rem), 1fr)); margin-top: 1.25rem; }
.card, .session { background: var(--card); border: 1px solid var(--line); border-radius: .75rem; padding: 1.25rem; }
.stack { display: grid; gap: .85rem; }
label { display: grid; gap: .3rem; font-weight: 600; font-size: .95rem; }
input { font: inherit; font-weight: 400; padding: .6rem .7rem; border: 1px solid var(--line); border-radius: .5rem; background: var(--bg); color: var(--fg); width: 100%; }
input:focus, button:focus-visible, a:focus-visible { outline: 3px solid color-mix(in srgb, var(--accent) 45%, transparent); outline-offset: 1px; }
button, .button { font: inherit; font-weight: 600; cursor: pointer; display: inline-block; text-decoration: none; text-align: center;
  padding: .6rem 1rem; border-radius: .5rem; border: 1px solid var(--accent); background: var(--accent); color: var(--accent-fg); }
button.secondary { background: transparent; color: var(--accent); }
button.danger { background: transparent; color: var(--danger); border-color: var(--danger); }
button.link { background: none; border: 0; padding: 0; color: var(--accent); font-weight: 400; text-decoration: underline; }
.notice { padding: .6rem .8rem; border-radius: .5rem; margin: .75rem 0; }
.notice.error { background: var(--err-bg); }
.notice.info { background: var(--ok-bg); }
.sessions { list-style: none; padding: 0; margin: 1.25rem 0; display: grid; gap: 1rem; }
.session.current { border-color: var(--accent); box-shadow: 0 0 0 1px var(--accent) inset; }
.device { display: flex; flex-wrap: wrap; gap: .5rem; align-items: center; font-size: 1.05rem; }
.badge { font-size: .75rem; font-weight: 700; letter-spacing: .02em; text-transform: uppercase; padding: .15rem .5rem;
  border-radius: 999px; background: var(--accent); color: var(--accent-fg); }
dl { display: grid; grid-template-columns: max-content 1fr; gap: .25rem 1rem; margin: .75rem 0; }
dt { color: var(--muted); }
dd { margin: 0; }
.session form { margin: 0; }
.actions { display: flex; flex-wrap: wrap; gap: .75rem; }
.actions form { margin: 0; }
footer { max-width: 52rem; margin: 0 auto; padding: 0 1.25rem 2rem; font-size: .875rem; }
@media (max-width: 30rem) {
  dl { grid-template-columns: 1fr; gap: 0; }
  dd { margin-bottom: .4rem; }
  .actions form, .actions button, .session button { width: 100%; }
}
`;

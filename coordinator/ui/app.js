// @ts-check
/**
 * The Knit console (docs/console.md): sign in with the admin token, then a
 * live view of the mesh — nodes, the path matrix, join tokens — fed by the
 * WebSocket /v1/admin/feed, with the admin API for changes (create / revoke a
 * token, remove a node). Plain DOM, no framework: everything the coordinator
 * or an agent says is inserted as text, never as HTML.
 *
 * The admin token lives in memory and in this tab's sessionStorage (so a
 * reload stays signed in; closing the tab forgets it). A new join token is
 * held only while its dialog is open.
 */
import { api, ApiError, openFeed } from './api.js';
import { ago, applyMessage, createModel, formatRtt, matrix, pathCounts, sortedNodes, tokenRequest, tokenStatus, until } from './model.js';
import { qrSvg } from './qr.js';

const TOKEN_KEY = 'knit.adminToken';
/** Relative times ("12 s ago") are redrawn this often. */
const CLOCK_TICK_MS = 5000;
/** A join changes the tokens' join counts: refetch them, at most this often. */
const TOKENS_REFRESH_DEBOUNCE_MS = 300;

/** @param {string} id */
const $ = (id) => /** @type {HTMLElement} */ (document.getElementById(id));

/**
 * A tiny element builder: strings become text nodes, never HTML.
 * @param {string} tag
 * @param {Record<string, any>} [attrs]
 * @param {...(Node | string | null | undefined | false)} children
 */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children) if (c !== null && c !== undefined && c !== false) el.append(c);
  return el;
}

/** @type {{ token: string, feed: ReturnType<typeof openFeed> } | undefined} */
let session;
let model = createModel();
/** @type {any[]} */
let tokens = [];
/** @type {Set<string>} */
const dirty = new Set();
/** @type {ReturnType<typeof setTimeout> | undefined} */
let renderTimer;
/** @type {ReturnType<typeof setTimeout> | undefined} */
let tokensTimer;
/** @type {ReturnType<typeof setInterval> | undefined} */
let clockTimer;

// ---- session -----------------------------------------------------------------

/** @param {string} token @param {{ quiet?: boolean }} [o] */
async function signIn(token, o = {}) {
  const error = $('login-error');
  error.hidden = true;
  try {
    const r = await api(token, 'GET', '/v1/admin/tokens');
    tokens = r.tokens ?? [];
  } catch (err) {
    sessionStorage.removeItem(TOKEN_KEY);
    if (!o.quiet) {
      error.textContent = err instanceof ApiError && err.status === 401 ? 'That is not this coordinator\'s admin token.' : `Could not sign in: ${errorText(err)}`;
      error.hidden = false;
    }
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, token);
  /** @type {HTMLInputElement} */ ($('admin-token')).value = '';
  model = createModel();
  session = {
    token,
    feed: openFeed({
      token,
      onMessage: onFeedMessage,
      onStatus: setLive,
      onUnauthorized: () => signOut('The coordinator no longer accepts this admin token.'),
    }),
  };
  $('login').hidden = true;
  $('console').hidden = false;
  $('session').hidden = false;
  clockTimer = setInterval(() => { dirty.add('nodes').add('tokens').add('paths'); scheduleRender(); }, CLOCK_TICK_MS);
  dirty.add('nodes').add('paths').add('tokens');
  scheduleRender();
  $('main').focus();
}

/** @param {string} [why] */
function signOut(why) {
  session?.feed.close();
  session = undefined;
  sessionStorage.removeItem(TOKEN_KEY);
  if (clockTimer !== undefined) clearInterval(clockTimer);
  model = createModel();
  tokens = [];
  closeTokenDialog();
  $('console').hidden = true;
  $('session').hidden = true;
  $('login').hidden = false;
  const error = $('login-error');
  error.hidden = !why;
  error.textContent = why ?? '';
  $('admin-token').focus();
}

/** @param {'connecting' | 'live' | 'offline'} s */
function setLive(s) {
  const el = $('live');
  el.dataset.state = s;
  el.textContent = s === 'live' ? 'Live' : s === 'connecting' ? 'Connecting…' : 'Offline, retrying…';
}

/** @param {any} msg */
function onFeedMessage(msg) {
  if (msg.type === 'error') return; // the close that follows says what to do
  const changed = applyMessage(model, msg);
  if (changed.has('resync')) return session?.feed.resync();
  if (changed.has('joined')) scheduleTokensRefresh();
  for (const c of changed) dirty.add(c);
  scheduleRender();
}

/** Runs an admin call; a 401 means the token is gone: sign out. */
async function call(/** @type {'GET' | 'POST' | 'DELETE'} */ method, /** @type {string} */ path, /** @type {unknown} */ body) {
  if (!session) throw new ApiError(401, 'KNIT_ERR_ADMIN_UNAUTHORIZED', 'signed out');
  try {
    return await api(session.token, method, path, body);
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) signOut('The coordinator no longer accepts this admin token.');
    throw err;
  }
}

/** @param {unknown} err */
function errorText(err) {
  return err instanceof Error ? err.message : String(err);
}

function scheduleTokensRefresh() {
  if (tokensTimer !== undefined) return;
  tokensTimer = setTimeout(async () => {
    tokensTimer = undefined;
    await refreshTokens().catch(() => {});
  }, TOKENS_REFRESH_DEBOUNCE_MS);
}

async function refreshTokens() {
  const r = await call('GET', '/v1/admin/tokens');
  tokens = r.tokens ?? [];
  dirty.add('tokens');
  scheduleRender();
}

// ---- rendering -----------------------------------------------------------------

function scheduleRender() {
  if (renderTimer === undefined) renderTimer = setTimeout(render, 16);
}

function render() {
  renderTimer = undefined;
  if (!session) return;
  // Keep keyboard focus on the same control across a redraw.
  const focusKey = document.activeElement instanceof HTMLElement ? document.activeElement.dataset.focusKey : undefined;
  const now = Date.now();
  if (dirty.has('nodes')) renderNodes(now);
  if (dirty.has('nodes') || dirty.has('paths')) renderMatrix(now);
  if (dirty.has('tokens')) renderTokens(now);
  renderSummary();
  dirty.clear();
  if (focusKey) /** @type {HTMLElement | null} */ (document.querySelector(`[data-focus-key="${CSS.escape(focusKey)}"]`))?.focus();
}

function renderSummary() {
  const nodes = [...model.nodes.values()];
  $('stat-nodes').textContent = String(nodes.length);
  $('stat-online').textContent = String(nodes.filter((n) => n.online).length);
  const c = pathCounts(model);
  $('stat-paths').textContent = String(c.lan + c.direct + c.relay);
  $('stat-paths-detail').textContent = `paths up · ${c.lan} lan · ${c.direct} direct · ${c.relay} relay · ${c.none} none`;
}

/** @param {number} now */
function renderNodes(now) {
  const nodes = sortedNodes(model);
  const rows = nodes.map((n) => h('tr', { 'data-node-id': n.id, 'data-name': n.name, class: n.online ? '' : 'is-offline' },
    h('th', { scope: 'row' },
      h('div', { class: 'node-name' }, n.name),
      h('div', { class: 'node-meta' }, `#${n.id}`, ...n.tags.map((t) => h('span', { class: 'tag' }, t)))),
    h('td', { 'data-field': 'state' }, h('span', { class: `state ${n.online ? 'on' : 'off'}` }, n.online ? 'online' : 'offline')),
    h('td', { 'data-field': 'addresses' }, ...n.addresses.map((a) => h('code', { class: 'line' }, a.replace(/\/(32|128)$/, '')))),
    h('td', { 'data-field': 'last-seen', title: n.lastSeen ? new Date(n.lastSeen).toLocaleString() : 'never connected' }, n.online ? 'now' : ago(n.lastSeen, now)),
    h('td', { 'data-field': 'endpoints' }, n.endpoints.length === 0 ? h('span', { class: 'muted' }, 'none reported')
      : h('ul', { class: 'plain' }, ...n.endpoints.map((e) => h('li', {}, h('code', {}, e))))),
    h('td', { 'data-field': 'nat' }, natText(n.natType)),
    h('td', { class: 'actions' }, h('button', {
      type: 'button', class: 'ghost danger-text', 'data-focus-key': `remove-${n.id}`, 'aria-label': `Remove node ${n.name}`,
      onclick: () => removeNode(n.id, n.name),
    }, 'Remove')),
  ));
  $('nodes').querySelector('tbody')?.replaceChildren(...rows);
  $('nodes-empty').hidden = nodes.length > 0;
}

/** @param {string} t */
function natText(t) {
  return { 'endpoint-independent': 'easy (EIM)', 'endpoint-dependent': 'hard (symmetric)', none: 'no NAT', blocked: 'UDP blocked', unknown: 'unknown' }[t] ?? t;
}

/** @param {number} now */
function renderMatrix(now) {
  const mx = matrix(model);
  const table = $('matrix');
  const head = h('tr', {}, h('th', { scope: 'col', class: 'corner' }, h('span', { class: 'sr-only' }, 'From \\ to'), h('span', { 'aria-hidden': 'true' }, 'from ↓ to →')),
    ...mx.nodes.map((n) => h('th', { scope: 'col', class: n.online ? '' : 'is-offline' }, n.name)));
  const rows = mx.nodes.map((from) => h('tr', { 'data-from': from.name, class: from.online ? '' : 'is-offline' },
    h('th', { scope: 'row' }, from.name),
    ...mx.nodes.map((to) => {
      if (to.id === from.id) return h('td', { class: 'self', 'aria-label': 'itself' }, '—');
      const e = mx.cell(from.id, to.id);
      if (!e) {
        return h('td', { class: 'k-unknown', 'data-from': from.name, 'data-to': to.name, 'data-kind': '', title: `${from.name} → ${to.name}: no report yet` },
          h('span', { 'aria-hidden': 'true' }, '·'), h('span', { class: 'sr-only' }, 'no report'));
      }
      const rtt = formatRtt(e.rttMs);
      // A path handed to WireGuard without a handshake over it yet carries nothing: say so.
      const label = e.handshaking ? `${e.kind} (handshaking)` : e.kind;
      const title = `${from.name} → ${to.name}: ${label}${rtt ? `, ${rtt}` : ''}; last handshake ${ago(e.lastHandshake, now)}; reported ${ago(e.reportedAt, now)}`;
      return h('td', { class: `k-${e.kind}${e.handshaking ? ' handshaking' : ''}`, 'data-from': from.name, 'data-to': to.name, 'data-kind': e.kind, ...(e.handshaking ? { 'data-handshaking': 'true' } : {}), title },
        h('span', { class: 'kind' }, label), rtt ? h('span', { class: 'rtt' }, rtt) : null);
    })));
  table.querySelector('thead')?.replaceChildren(head);
  table.querySelector('tbody')?.replaceChildren(...rows);
  $('matrix-empty').hidden = mx.nodes.length >= 2;
  table.hidden = mx.nodes.length < 2;
  const more = $('matrix-more');
  more.hidden = mx.hidden === 0;
  more.textContent = `${mx.hidden} more nodes are not shown; the matrix keeps the first ${mx.nodes.length} (online first).`;
}

/** @param {number} now */
function renderTokens(now) {
  const sorted = [...tokens].sort((a, b) => b.created - a.created);
  const rows = sorted.map((t) => {
    const status = tokenStatus(t, now);
    const kind = [t.reusable ? (t.usesLeft === null ? 'reusable' : `reusable, ${t.usesLeft} left`) : 'single use', t.ephemeral ? 'ephemeral' : ''].filter(Boolean).join(', ');
    return h('tr', { 'data-token-id': t.id, class: status === 'active' ? '' : 'is-inactive' },
      h('th', { scope: 'row' }, h('code', {}, t.id)),
      h('td', {}, kind),
      h('td', {}, ...(t.tags.length ? t.tags.map((/** @type {string} */ x) => h('span', { class: 'tag' }, x)) : [h('span', { class: 'muted' }, '—')])),
      h('td', {}, String(t.joins)),
      h('td', { title: t.expires ? new Date(t.expires).toLocaleString() : 'never expires' }, until(t.expires, now)),
      h('td', { title: new Date(t.created).toLocaleString() }, ago(t.created, now)),
      h('td', { 'data-field': 'status' }, h('span', { class: `badge b-${status}` }, status)),
      h('td', { class: 'actions' }, status === 'active' ? h('button', {
        type: 'button', class: 'ghost danger-text', 'data-focus-key': `revoke-${t.id}`, 'aria-label': `Revoke token ${t.id}`,
        onclick: () => revokeToken(t.id),
      }, 'Revoke') : null),
    );
  });
  $('tokens').querySelector('tbody')?.replaceChildren(...rows);
  $('tokens-empty').hidden = rows.length > 0;
}

// ---- actions -----------------------------------------------------------------

/** @param {string} text */
function toast(text) {
  const el = $('toast');
  el.textContent = text;
  el.classList.add('show');
  clearTimeout(Number(el.dataset.timer));
  el.dataset.timer = String(setTimeout(() => el.classList.remove('show'), 4000));
}

/**
 * @param {string} text
 * @param {string} action
 * @returns {Promise<boolean>}
 */
function confirmDialog(text, action) {
  const d = /** @type {HTMLDialogElement} */ ($('confirm-dialog'));
  $('confirm-text').textContent = text;
  $('confirm-ok').textContent = action;
  d.returnValue = '';
  d.showModal();
  $('confirm-cancel').focus();
  return new Promise((resolve) => d.addEventListener('close', () => resolve(d.returnValue === 'ok'), { once: true }));
}

/** @param {number} id @param {string} name */
async function removeNode(id, name) {
  if (!await confirmDialog(`Remove ${name} from the mesh? Its peers drop it at once and its agent stops; it can join again only with a new token.`, 'Remove node')) return;
  try {
    await call('DELETE', `/v1/admin/nodes/${id}`);
    toast(`Removed ${name}.`);
  } catch (err) {
    toast(`Could not remove ${name}: ${errorText(err)}`);
  }
}

/** @param {string} id */
async function revokeToken(id) {
  if (!await confirmDialog(`Revoke token ${id}? Nodes that already joined stay; nobody can join with it again.`, 'Revoke token')) return;
  try {
    await call('DELETE', `/v1/admin/tokens/${encodeURIComponent(id)}`);
    toast(`Revoked token ${id}.`);
    await refreshTokens();
  } catch (err) {
    toast(`Could not revoke the token: ${errorText(err)}`);
  }
}

async function createToken(/** @type {SubmitEvent} */ ev) {
  ev.preventDefault();
  const error = $('token-error');
  error.hidden = true;
  const v = (/** @type {string} */ id) => /** @type {HTMLInputElement} */ ($(id));
  const req = tokenRequest({ reusable: v('tf-reusable').checked, uses: v('tf-uses').value, ephemeral: v('tf-ephemeral').checked, expires: v('tf-expires').value, tags: v('tf-tags').value });
  if (!req.ok) {
    error.textContent = req.error;
    error.hidden = false;
    return;
  }
  const button = /** @type {HTMLButtonElement} */ ($('create-token'));
  button.disabled = true;
  try {
    const r = await call('POST', '/v1/admin/tokens', req.body);
    await showToken(r.token, r.id);
    await refreshTokens();
  } catch (err) {
    error.textContent = `Could not create a token: ${errorText(err)}`;
    error.hidden = false;
  } finally {
    button.disabled = false;
  }
}

/** Shows a new token once: text, copy button, QR code. Closing the dialog forgets it. */
async function showToken(/** @type {string} */ token, /** @type {string} */ id) {
  const d = /** @type {HTMLDialogElement} */ ($('token-dialog'));
  $('new-token').textContent = token;
  d.dataset.tokenId = id;
  const qr = $('token-qr');
  qr.replaceChildren();
  d.showModal();
  $('copy-token').focus();
  try {
    qr.append(await qrSvg(token, `QR code of join token ${id}`));
  } catch {
    qr.append(h('p', { class: 'muted' }, 'The QR code is unavailable (the coordinator was installed without qrcode-generator); copy the token instead.'));
  }
}

function closeTokenDialog() {
  const d = /** @type {HTMLDialogElement} */ ($('token-dialog'));
  if (d.open) d.close();
  $('new-token').textContent = '';
  $('token-qr').replaceChildren();
}

async function copyToken() {
  const token = $('new-token').textContent ?? '';
  const button = $('copy-token');
  let ok = false;
  try {
    await navigator.clipboard.writeText(token);
    ok = true;
  } catch {
    // No clipboard API (an insecure origin): select the text so Ctrl+C works.
    const range = document.createRange();
    range.selectNodeContents($('new-token'));
    getSelection()?.removeAllRanges();
    getSelection()?.addRange(range);
    ok = document.execCommand?.('copy') ?? false;
  }
  button.textContent = ok ? 'Copied' : 'Press Ctrl+C';
  setTimeout(() => { button.textContent = 'Copy'; }, 2000);
}

// ---- wiring -----------------------------------------------------------------

$('login-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const token = /** @type {HTMLInputElement} */ ($('admin-token')).value.trim();
  if (!token) {
    const error = $('login-error');
    error.textContent = 'Paste the admin token first.';
    error.hidden = false;
    return;
  }
  void signIn(token);
});
$('logout').addEventListener('click', () => signOut());
$('token-form').addEventListener('submit', (ev) => void createToken(/** @type {SubmitEvent} */ (ev)));
$('tf-reusable').addEventListener('change', () => {
  const uses = /** @type {HTMLInputElement} */ ($('tf-uses'));
  uses.disabled = !/** @type {HTMLInputElement} */ ($('tf-reusable')).checked;
  if (uses.disabled) uses.value = '';
});
$('copy-token').addEventListener('click', () => void copyToken());
// The dialog's 'close' event comes a task after it closed (and after Escape): forget the token at
// the click itself too, so no moment exists with the dialog shut and the secret still in the page.
$('token-done').addEventListener('click', closeTokenDialog);
$('token-dialog').addEventListener('close', closeTokenDialog);

const saved = sessionStorage.getItem(TOKEN_KEY);
if (saved) void signIn(saved, { quiet: true });
else $('admin-token').focus();

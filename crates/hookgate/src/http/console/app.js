// hookgate console: a hash-routed page over the admin API (/api), no dependencies.
// Every value from the API reaches the DOM through textContent or attributes
// (the h() helper), never through innerHTML.
'use strict';

// Uncaught errors are kept where a test (or a curious operator) can read them.
window.__hookgateErrors = [];
window.addEventListener('error', (e) => window.__hookgateErrors.push(String(e.message)));
window.addEventListener('unhandledrejection', (e) => window.__hookgateErrors.push(String(e.reason)));

const TOKEN_KEY = 'hookgate.admin-token'; // sessionStorage only: gone when the tab closes
const STATES = ['pending', 'delivering', 'delivered', 'dead', 'superseded', 'unrouted'];
const ACTIVE = new Set(['pending', 'delivering']); // already owed a delivery: not replayable
const TONE = { pending: 'amber', delivering: 'blue', delivered: 'green', dead: 'red', superseded: 'grey', unrouted: 'violet',
  closed: 'green', open: 'red', half_open: 'amber' };
const PAGE = 50;               // events per page (events and dead letters)
const OVERVIEW_POLL_MS = 3000; // stats are a shared snapshot at most 1 s old: faster buys nothing
const DEST_POLL_MS = 5000;
const DETAIL_POLL_MS = 2000;   // only while the event is pending or delivering

// ---- DOM helpers ----------------------------------------------------------

const $ = (sel) => document.querySelector(sel);

// h('a', {href, class, testid, data: {id}, onclick}, ...children): strings become text nodes.
function h(tag, props = {}, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (v == null || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k === 'testid') el.dataset.testid = v;
    else if (k === 'data') for (const [dk, dv] of Object.entries(v)) el.dataset[dk] = String(dv);
    else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const kid of kids.flat(Infinity)) {
    if (kid != null && kid !== false) el.append(kid instanceof Node ? kid : String(kid));
  }
  return el;
}

const badge = (text, tone) => h('span', { class: `badge tone-${tone || 'grey'}` }, text);
const stateBadge = (state) => badge(state, TONE[state]);
const circuitBadge = (c) => badge(c === 'half_open' ? 'half open' : c, TONE[c]);
const mono = (text) => (text == null || text === '' ? h('span', { class: 'muted' }, '—') : h('span', { class: 'mono' }, text));
// The inner span keeps a cell's parts together when phones lay rows out as label/value cards.
const td = (label, content, cls) => h('td', { class: cls, 'data-label': label }, h('span', {}, content));
const eventHref = (id) => `#/event/${encodeURIComponent(id)}`;
// evt_ + UUIDv7: the leading hex is the timestamp, so the tail is what tells ids apart.
const shortId = (id) => (id.length > 16 ? `${id.slice(0, 4)}…${id.slice(-8)}` : id);

// heads: 'Label' or ['Label', 'num'] for right-aligned numeric columns.
function table(heads, rows, emptyText) {
  if (!rows.length) return h('p', { class: 'empty' }, emptyText);
  const th = heads.map((x) => (Array.isArray(x) ? h('th', { class: x[1] }, x[0]) : h('th', {}, x)));
  return h('div', { class: 'table-wrap' },
    h('table', { class: 'grid' }, h('thead', {}, h('tr', {}, th)), h('tbody', {}, rows)));
}

// ---- formatting -----------------------------------------------------------

const num = (n) => (n == null ? '—' : Number(n).toLocaleString());
const rate = (r) => (r == null ? '…' : r < 10 ? r.toFixed(1) : Math.round(r).toLocaleString());

function ms(v) {
  if (v == null) return '—';
  if (v >= 1000) return `${(v / 1000).toFixed(v >= 10000 ? 0 : 1)} s`;
  return `${v < 100 ? Number(v.toFixed(1)) : Math.round(v)} ms`;
}

function ago(t, now = Date.now()) {
  const s = Math.round((now - t) / 1000);
  const a = Math.abs(s);
  const text = a < 60 ? `${a} s` : a < 3600 ? `${Math.floor(a / 60)} min` : a < 86400
    ? `${Math.floor(a / 3600)} h` : `${Math.floor(a / 86400)} d`;
  return s >= 0 ? `${text} ago` : `in ${text}`;
}

// A relative time that stays current (see the ticker at the bottom), absolute in the title.
function timeEl(t) {
  if (t == null) return h('span', { class: 'muted' }, '—');
  const d = new Date(t);
  return h('time', { datetime: d.toISOString(), title: `${d.toLocaleString()} (${d.toISOString()})`, data: { ms: t } }, ago(t));
}

// A body is indented only while that stays cheap: a sender's body nested a
// thousand deep would indent into hundreds of millions of characters (54 s of
// rendering, again at every poll). Past these, the text is shown as sent, and
// past RAW_SHOWN_CHARS cut, with "Show all" and "Download".
const PRETTY_MAX_CHARS = 100000;
const PRETTY_MAX_DEPTH = 20;
const PRETTY_MAX_OUTPUT = 4 * PRETTY_MAX_CHARS;
const RAW_SHOWN_CHARS = 100000;

// Re-indents JSON text without re-serializing values, so big numbers and
// escapes appear exactly as sent (JSON.parse would round 2^53+ integers).
// null when the text is nested deeper than PRETTY_MAX_DEPTH or would indent
// past PRETTY_MAX_OUTPUT characters: it stops as soon as it knows.
function prettyJson(text) {
  let out = '';
  let depth = 0;
  const nl = () => `\n${'  '.repeat(depth)}`;
  const skipWs = (j) => { while (j < text.length && ' \t\r\n'.includes(text[j])) j++; return j; };
  for (let i = 0; i < text.length; i++) {
    if (out.length > PRETTY_MAX_OUTPUT) return null;
    const c = text[i];
    if (c === '"') { // copy the whole string literal, escapes included
      let j = i + 1;
      while (j < text.length && text[j] !== '"') j += text[j] === '\\' ? 2 : 1;
      out += text.slice(i, j + 1);
      i = j;
    } else if (c === '{' || c === '[') {
      const j = skipWs(i + 1);
      if (text[j] === (c === '{' ? '}' : ']')) { out += c + text[j]; i = j; continue; } // {} and []
      if (++depth > PRETTY_MAX_DEPTH) return null;
      out += c + nl();
    } else if (c === '}' || c === ']') { depth--; out += nl() + c; }
    else if (c === ',') out += `,${nl()}`;
    else if (c === ':') out += ': ';
    else if (!' \t\r\n'.includes(c)) out += c;
  }
  return out;
}

// ---- API ------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${sessionStorage.getItem(TOKEN_KEY) || ''}`, Accept: 'application/json' };
  const init = { method, headers, cache: 'no-store', credentials: 'omit' };
  if (body !== undefined) { headers['Content-Type'] = 'application/json'; init.body = JSON.stringify(body); }
  let res;
  try { res = await fetch(`/api${path}`, init); } catch (e) {
    throw new ApiError(0, `Cannot reach hookgate (${e.message}).`);
  }
  let data = null;
  try { data = await res.json(); } catch { /* not JSON: fall back to the status below */ }
  const message = (data && typeof data.error === 'string' && data.error) || `HTTP ${res.status} ${res.statusText}`.trim();
  if (res.status === 401) {
    signOut(`The admin API refused the token (${message}).`);
    throw new ApiError(401, message);
  }
  if (!res.ok) throw new ApiError(res.status, message);
  return data;
}

const query = (params) => {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v != null && v !== '') q.set(k, v);
  const s = q.toString();
  return s ? `?${s}` : '';
};

// ---- view lifecycle: one view at a time; its timers and late answers die with it ----

let gen = 0;      // bumped on every route change; async work checks it before touching the DOM
let timers = [];

function resetView() {
  gen++;
  timers.forEach(clearInterval);
  timers = [];
  hideError();
}

// Runs fn now and every `every` ms while this view lives (skipped in hidden tabs, never overlapping).
function poll(fn, every) {
  const g = gen;
  let busy = false;
  const tick = async () => {
    if (busy || g !== gen) return;
    busy = true;
    try { await fn(); } finally { busy = false; }
  };
  tick();
  timers.push(setInterval(() => { if (!document.hidden) tick(); }, every));
}

// Wraps a view's loader: errors go to the banner unless the view is gone or we
// signed out; the next success clears the banner only if this loader set it.
// `placeholder` ("Loading…") is emptied on failure so it does not spin forever.
function loader(fn, placeholder) {
  const g = gen;
  let failed = false;
  return async () => {
    try {
      await fn(() => g !== gen);
      if (failed && g === gen) hideError();
      failed = false;
    } catch (e) {
      if (g !== gen || e.status === 401) return;
      failed = true;
      showError(e.message);
      if (placeholder && placeholder.firstChild?.classList?.contains('loading')) placeholder.replaceChildren();
    }
  };
}

const loading = () => h('p', { class: 'muted loading' }, 'Loading…');

function showError(message) {
  $('#error-text').textContent = message;
  $('#error').hidden = false;
}
function hideError() { $('#error').hidden = true; }

function mount(...nodes) { $('#view').replaceChildren(...nodes); }

// ---- sign-in --------------------------------------------------------------

function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  renderSignIn(message);
}

function renderSignIn(message) {
  resetView();
  document.body.classList.add('signed-out');
  $('#top').hidden = true;
  document.title = 'Sign in · hookgate';
  const input = h('input', { type: 'password', id: 'token', name: 'token', testid: 'token', required: true,
    autocomplete: 'current-password', spellcheck: 'false', placeholder: 'Admin token' });
  const button = h('button', { type: 'submit', class: 'primary', testid: 'sign-in' }, 'Sign in');
  const form = h('form', { class: 'card signin', onsubmit: (e) => { e.preventDefault(); signIn(input.value.trim(), button); } },
    h('h1', {}, h('span', { class: 'mark' }, '⤳'), 'hookgate'),
    h('p', { class: 'muted' }, 'Enter the admin token from ', h('code', {}, '[admin] token'), '. It is kept in this tab only.'),
    h('input', { type: 'text', name: 'username', autocomplete: 'username', value: 'admin', hidden: true }),
    h('label', { for: 'token' }, 'Admin token'), input, button);
  mount(form);
  if (message) showError(message);
  input.focus();
}

async function signIn(token, button) {
  if (!token) { showError('Enter the admin token.'); return; }
  sessionStorage.setItem(TOKEN_KEY, token);
  button.disabled = true;
  try {
    await api('GET', '/events?limit=1');
  } catch (e) {
    if (e.status === 401) return; // api() is showing the sign-in screen again, with the reason
    // Anything else (storage 503, network) says nothing about the token: the view will show it.
  }
  enterApp();
}

function enterApp() {
  document.body.classList.remove('signed-out');
  $('#top').hidden = false;
  if (!location.hash) history.replaceState(null, '', '#/overview');
  route();
}

// ---- routing --------------------------------------------------------------

function parseHash() {
  const raw = location.hash.replace(/^#\/?/, '');
  const q = raw.indexOf('?');
  const path = q < 0 ? raw : raw.slice(0, q);
  const decode = (x) => { try { return decodeURIComponent(x); } catch { return x; } }; // a hand-typed '%' must not throw
  const [name = 'overview', arg] = path.split('/').filter(Boolean).map(decode);
  return { name, arg, params: new URLSearchParams(q < 0 ? '' : raw.slice(q + 1)) };
}

const VIEWS = { overview: viewOverview, events: viewEvents, event: viewEvent, dead: viewDead, destinations: viewDestinations,
  destination: viewDestination };
const TITLES = { overview: 'Overview', events: 'Events', event: 'Event', dead: 'Dead letters', destinations: 'Destinations',
  destination: 'Destination' };

function route() {
  if (!sessionStorage.getItem(TOKEN_KEY)) { renderSignIn(); return; }
  resetView();
  const { name, arg, params } = parseHash();
  const nav = name === 'event' ? 'events' : name === 'destination' ? 'destinations' : name;
  for (const a of document.querySelectorAll('.nav a')) {
    if (a.dataset.view === nav) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
  }
  document.title = `${TITLES[name] || 'Not found'} · hookgate`;
  const view = VIEWS[name];
  if (view) view(params, arg);
  else mount(h('section', {}, h('h1', {}, 'Not found'), h('p', {}, h('a', { href: '#/overview' }, 'Back to the overview'))));
  window.scrollTo(0, 0);
}

// Navigating to the hash we are on fires no hashchange: re-render by hand.
function go(hash) {
  if (location.hash === hash) route(); else location.hash = hash;
}

const heading = (title, ...extra) => h('div', { class: 'head' }, h('h1', {}, title), ...extra);

// ---- overview -------------------------------------------------------------

// Per source: the counts that matter here. States missing from the map are 0.
function tally(stats) {
  const out = {};
  for (const [source, counts] of Object.entries(stats.sources || {})) {
    const c = (s) => counts[s] || 0;
    out[source] = { queued: c('pending') + c('delivering'), dead: c('dead'), delivered: c('delivered'),
      total: STATES.reduce((n, s) => n + c(s), 0), done: c('delivered') + c('dead') };
  }
  return out;
}

function sparkline(values) {
  const NS = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(NS, 'svg');
  svg.setAttribute('viewBox', '0 0 100 24');
  svg.setAttribute('preserveAspectRatio', 'none');
  svg.setAttribute('class', 'spark');
  svg.setAttribute('aria-hidden', 'true');
  if (values.length > 1) {
    const max = Math.max(...values, 1);
    const pts = values.map((v, i) => `${((i / (values.length - 1)) * 100).toFixed(1)},${(23 - (v / max) * 22).toFixed(1)}`);
    const line = document.createElementNS(NS, 'polyline');
    line.setAttribute('points', pts.join(' '));
    svg.append(line);
  }
  return svg;
}

function viewOverview() {
  // Rates come from differencing two stats snapshots: in = growth of all
  // events, out = growth of delivered + dead. Clamped at 0, because retention
  // deletes old rows and replays move events back to pending.
  let prev = null;
  const history = { in: [], out: [] };
  let rates = { in: null, out: null, bySource: {} };
  const tiles = h('div', { class: 'tiles' });
  const sources = h('div');
  const dests = h('div');
  mount(heading('Overview', h('span', { class: 'muted live' }, 'live')),
    tiles, h('h2', {}, 'Sources'), sources, h('h2', {}, 'Destinations'), dests);

  const tile = (label, value, sub, spark, tone) =>
    h('div', { class: `tile${tone ? ` tile-${tone}` : ''}` }, h('div', { class: 'tile-label' }, label),
      h('div', { class: 'tile-value' }, value), sub && h('div', { class: 'tile-sub muted' }, sub), spark);

  poll(loader(async (stale) => {
    const [stats, dest] = await Promise.allSettled([api('GET', '/stats'), api('GET', '/destinations')]);
    if (stale()) return;
    if (stats.status === 'fulfilled') {
      const now = tally(stats.value);
      const at = stats.value.counted_at_ms || Date.now();
      const dt = prev ? (at - prev.at) / 1000 : 0;
      if (prev && dt >= 0.5) { // the same snapshot twice (dt 0) says nothing new
        const r = (a, b) => Math.max(0, a - b) / dt;
        const sum = (t, k) => Object.values(t).reduce((n, s) => n + s[k], 0);
        rates = { in: r(sum(now, 'total'), sum(prev.t, 'total')), out: r(sum(now, 'done'), sum(prev.t, 'done')), bySource: {} };
        for (const [s, v] of Object.entries(now)) {
          const p = prev.t[s] || { total: v.total, done: v.done };
          rates.bySource[s] = { in: r(v.total, p.total), out: r(v.done, p.done) };
        }
        for (const k of ['in', 'out']) { history[k].push(rates[k]); if (history[k].length > 40) history[k].shift(); }
      }
      if (!prev || dt >= 0.5) prev = { at, t: now };
      const all = Object.values(now);
      const queued = all.reduce((n, s) => n + s.queued, 0);
      const dead = all.reduce((n, s) => n + s.dead, 0);
      tiles.replaceChildren(
        tile('In', rate(rates.in), 'events/s received', sparkline(history.in)),
        tile('Out', rate(rates.out), 'events/s delivered or dead', sparkline(history.out)),
        tile('Queued', num(queued), 'pending + delivering'),
        tile('Dead', num(dead), h('a', { href: '#/dead' }, 'dead letters →'), null, dead ? 'red' : null));
      const rows = Object.entries(now).map(([s, v]) => h('tr', { testid: 'source-row', data: { source: s } },
        td('Source', h('a', { href: `#/events${query({ source: s })}` }, s)),
        td('In/s', rate(rates.bySource[s]?.in), 'num'), td('Out/s', rate(rates.bySource[s]?.out), 'num'),
        td('Queued', num(v.queued), 'num'),
        td('Dead', v.dead ? h('a', { href: `#/dead${query({ source: s })}`, class: 'bad' }, num(v.dead)) : '0', 'num'),
        td('Delivered', num(v.delivered), 'num'), td('Total', num(v.total), 'num')));
      sources.replaceChildren(table(['Source', ['In/s', 'num'], ['Out/s', 'num'], ['Queued', 'num'], ['Dead', 'num'],
        ['Delivered', 'num'], ['Total', 'num']], rows, 'No events yet.'));
    }
    if (dest.status === 'fulfilled') dests.replaceChildren(destinationTable(dest.value.destinations, false));
    // Show what failed; the half that loaded stays on screen.
    const failed = [stats, dest].find((x) => x.status === 'rejected');
    if (failed) throw failed.reason;
  }), OVERVIEW_POLL_MS);
}

// ---- events ---------------------------------------------------------------

const FILTERS = [['source', 'Source'], ['destination', 'Destination'], ['state', 'State'], ['order_key', 'Order key'],
  ['dedupe_key', 'Dedupe key'], ['since', 'Since'], ['until', 'Until']];

// Source names for a filter's suggestions; best effort (an error here is not worth a banner).
function sourceList(id) {
  const list = h('datalist', { id });
  api('GET', '/stats').then((s) => list.append(...Object.keys(s.sources || {}).map((n) => h('option', { value: n }))),
    () => {});
  return list;
}

function pager(base, params, nextCursor, testPrefix) {
  const page = Number(params.get('page')) || 1;
  const first = new URLSearchParams(params);
  first.delete('cursor'); first.delete('page');
  const next = new URLSearchParams(first);
  if (nextCursor) { next.set('cursor', nextCursor); next.set('page', String(page + 1)); }
  const qs = (p) => (p.toString() ? `?${p}` : '');
  return h('div', { class: 'pager' },
    page > 1 || params.has('cursor') ? h('a', { href: `${base}${qs(first)}`, class: 'btn', testid: `${testPrefix}-first` }, '⇤ First page') : null,
    h('span', { class: 'muted' }, `Page ${page}`),
    nextCursor ? h('a', { href: `${base}${qs(next)}`, class: 'btn', testid: `${testPrefix}-next` }, 'Next page →') : null);
}

function eventRow(ev) {
  return h('tr', { testid: 'event-row', data: { id: ev.id, state: ev.state }, class: 'clickable',
    onclick: (e) => { if (!e.target.closest('a') && !getSelection().toString()) go(eventHref(ev.id)); } },
  td('Received', timeEl(ev.received_at_ms)),
  td('ID', h('a', { href: eventHref(ev.id), class: 'mono', title: ev.id }, shortId(ev.id))),
  td('Source', ev.source), td('Destinations', destinationsOf(ev)),
  td('State', [stateBadge(ev.state), ev.warnings?.length ? h('span', { class: 'warn', title: ev.warnings.join('\n') }, ' ⚠') : null]),
  td("Sender's id", h('span', { testid: 'dedupe-key' }, mono(ev.dedupe_key))), td('Order key', mono(ev.order_key)),
  td('Attempts', num(ev.attempt_count), 'num'));
}

// An event's destinations, each a link to its page; "no route" for an unrouted event.
function destinationsOf(ev) {
  const names = ev.destinations || (ev.destination ? [ev.destination] : []);
  if (!names.length) return h('span', { class: 'muted' }, 'no route');
  return names.flatMap((d, i) => [i ? ', ' : null, h('a', { href: destinationHref(d) }, d)]);
}

const destinationHref = (name) => `#/destination/${encodeURIComponent(name)}`;

function viewEvents(params) {
  const fields = FILTERS.map(([key, label]) => {
    const value = params.get(key) || '';
    const input = key === 'state'
      ? h('select', { name: key, id: `f-${key}` }, h('option', { value: '' }, 'any'),
        STATES.map((s) => h('option', { value: s, selected: s === value }, s)))
      : h('input', { name: key, id: `f-${key}`, value, list: key === 'source' ? 'sources' : null, spellcheck: 'false',
        placeholder: key === 'since' || key === 'until' ? 'RFC 3339 or ms' : '',
        title: key === 'since' || key === 'until' ? 'e.g. 2026-11-29T10:00:00Z, or milliseconds since the epoch' : null });
    return h('div', { class: 'field' }, h('label', { for: `f-${key}` }, label), input);
  });
  const form = h('form', { class: 'filters card', testid: 'filters', onsubmit: (e) => {
    e.preventDefault();
    const data = Object.fromEntries([...new FormData(form)].map(([k, v]) => [k, String(v).trim()]));
    go(`#/events${query(data)}`);
  } }, fields, h('div', { class: 'field actions' },
    h('button', { type: 'submit', class: 'primary', testid: 'filter-apply' }, 'Apply'),
    h('button', { type: 'button', class: 'ghost', onclick: () => go('#/events') }, 'Clear')));
  const list = h('div', {}, loading());
  mount(heading('Events'), form, list);
  form.append(sourceList('sources'));

  loader(async (stale) => {
    const q = Object.fromEntries(FILTERS.map(([k]) => [k, params.get(k)]));
    const page = await api('GET', `/events${query({ ...q, limit: PAGE, cursor: params.get('cursor') })}`);
    if (stale()) return;
    list.replaceChildren(
      table(['Received', 'ID', 'Source', 'Destinations', 'State', "Sender's id", 'Order key', ['Attempts', 'num']],
        page.events.map(eventRow), 'No events match these filters.'),
      pager('#/events', params, page.next_cursor, 'events'));
  }, list)();
}

// ---- one event ------------------------------------------------------------

function viewEvent(params, id) {
  const root = h('section', { testid: 'event-detail', class: 'detail' });
  const button = h('button', { type: 'button', class: 'primary', testid: 'replay', disabled: true, onclick: replay }, 'Replay');
  const reroute = h('button', { type: 'button', testid: 'reroute', onclick: rerouteNow,
    title: "Route it again by today's routes: destinations it matches now and has no delivery to get one." }, 'Reroute');
  const hint = h('span', { class: 'muted small' });
  const result = h('p', { class: 'result', testid: 'replay-result', role: 'status', hidden: true });
  const content = h('div', {}, loading());
  const state = h('span');
  root.append(h('a', { href: '#/events', class: 'back' }, '← Events'),
    heading(h('span', { class: 'mono id' }, id || ''), state), h('div', { class: 'actions' }, button, reroute, hint), result, content);
  mount(root);

  let follow = true; // the first load, then again only while the event is active
  const load = loader(async (stale) => {
    follow = false;
    const ev = await api('GET', `/events/${encodeURIComponent(id)}`);
    if (stale()) return;
    follow = ACTIVE.has(ev.state);
    root.dataset.state = ev.state;
    state.replaceChildren(stateBadge(ev.state));
    const deliveries = ev.deliveries || [];
    button.disabled = !deliveries.some((d) => !ACTIVE.has(d.state));
    hint.textContent = !deliveries.length ? 'No route took it: nothing to replay (reroute it once a route matches).'
      : button.disabled ? `Every delivery is already owed.` : '';
    content.replaceChildren(summary(ev), routing(ev),
      ...deliveries.map((d) => deliveryCard(d, replayDelivery)),
      section('Body', bodyBlock(ev)), section(`Headers (${ev.headers.length})`,
        table(['Name', 'Value'], ev.headers.map(([n, v]) => h('tr', {}, td('Name', mono(n)), td('Value', mono(v), 'wrap'))),
          'No headers kept.')));
  }, content);
  // Follow the event while it moves (e.g. after a replay); stop once it settles.
  poll(() => follow && load(), DETAIL_POLL_MS);

  async function act(path, done) {
    const g = gen;
    try {
      const r = await api('POST', path);
      if (g !== gen) return;
      setResult(result, true, done(r));
    } catch (e) {
      if (g !== gen || e.status === 401) return;
      setResult(result, false, `Failed: ${e.message}`);
    }
    follow = true;
    await load();
  }

  async function replay() {
    button.disabled = true;
    await act(`/events/${encodeURIComponent(id)}/replay`,
      (r) => `Replayed: ${r.deliveries} deliver${r.deliveries === 1 ? 'y is' : 'ies are'} ${r.status} again and will be delivered.`);
  }

  async function replayDelivery(delivery, btn) {
    btn.disabled = true;
    await act(`/deliveries/${encodeURIComponent(delivery.id)}/replay`,
      () => `Replayed the delivery to ${delivery.destination}: pending again.`);
  }

  async function rerouteNow() {
    reroute.disabled = true;
    await act(`/events/${encodeURIComponent(id)}/reroute`,
      (r) => `Rerouted: ${r.added} deliver${r.added === 1 ? 'y' : 'ies'} added.`);
    reroute.disabled = false;
  }
}

// Each route of the event's source: matched, or the first condition that failed.
function routing(ev) {
  const verdicts = ev.routing || [];
  if (!verdicts.length) return section('Routes', h('p', { class: 'muted' }, 'Its source has no route.'));
  return section(`Routes (${verdicts.length})`, table(['Route', 'Destination', 'Verdict'],
    verdicts.map((r) => h('tr', { testid: 'route-verdict', data: { route: r.route, matched: String(r.matched) } },
      td('Route', mono(r.route)), td('Destination', h('a', { href: destinationHref(r.destination) }, r.destination)),
      td('Verdict', r.matched ? badge('matched', 'green') : [badge('not matched', 'grey'), ' ', h('span', { class: 'mono wrap', testid: 'route-reason' }, r.reason)], 'wrap'))),
    ''));
}

// One delivery of an event: its state, its queue's key, every attempt, a replay.
function deliveryCard(d, onReplay) {
  const replayButton = h('button', { type: 'button', class: 'small', testid: 'delivery-replay', disabled: ACTIVE.has(d.state),
    onclick: (e) => onReplay(d, e.currentTarget) }, 'Replay');
  const facts = [
    ['State', stateBadge(d.state)],
    d.outcome && ['Outcome', h('span', { testid: 'delivery-outcome' }, d.outcome)],
    ['Route', mono(d.route)],
    ['Delivery id', h('span', { class: 'mono' }, d.id)],
    ['Order key', mono(d.order_key)],
    d.next_attempt_at_ms != null && ['Next attempt', timeEl(d.next_attempt_at_ms)],
    d.superseded_by && ['Superseded by', h('a', { href: eventHref(d.superseded_by), class: 'mono', testid: 'superseded-by' }, d.superseded_by)],
  ].filter(Boolean);
  return h('section', { class: 'card', testid: 'delivery', data: { destination: d.destination, state: d.state, id: d.id } },
    h('div', { class: 'head' }, h('h2', {}, 'To ', h('a', { href: destinationHref(d.destination) }, d.destination)), replayButton),
    h('dl', { class: 'facts' }, facts.map(([k, v]) => [h('dt', {}, k), h('dd', {}, v)])),
    h('h3', {}, `Attempts (${d.attempts.length})`), attempts(d));
}

function setResult(el, ok, text) {
  el.textContent = text;
  el.className = `result ${ok ? 'ok' : 'bad'}`;
  el.hidden = false;
}

const section = (title, ...body) => h('section', { class: 'card' }, h('h2', {}, title), ...body);

function summary(ev) {
  const filterLink = (key, v) => (v == null ? mono(v) : h('a', { href: `#/events${query({ [key]: v })}`, class: 'mono' }, v));
  const rows = [
    ['State', stateBadge(ev.state)], ['Source', ev.source],
    ev.verified_by != null && ['Verified by', h('span', { testid: 'verified-by' }, ev.verified_by)],
    ['Destinations', destinationsOf(ev)],
    ev.event_type != null && ['Event type', mono(ev.event_type)],
    ['Received', timeEl(ev.received_at_ms)], ['Updated', timeEl(ev.updated_at_ms)],
    ev.next_attempt_at_ms != null && ['Next attempt', timeEl(ev.next_attempt_at_ms)],
    ['Attempts', num(ev.attempt_count)],
    ['Duplicates', ev.duplicates
      ? h('span', { testid: 'duplicates' }, `${num(ev.duplicates)} later ${ev.duplicates === 1 ? 'copy' : 'copies'} dropped`,
        ev.last_duplicate_at_ms != null ? [', the last ', timeEl(ev.last_duplicate_at_ms)] : '')
      : 'none'],
    ev.trace_id && ['Trace', h('span', { class: 'mono', testid: 'trace-id' }, ev.trace_id)],
    ['Dedupe key', filterLink('dedupe_key', ev.dedupe_key)], ['Order key', filterLink('order_key', ev.order_key)],
    ['Coalesce key', mono(ev.coalesce_key)],
    ev.superseded_by && ['Superseded by', h('a', { href: eventHref(ev.superseded_by), class: 'mono', testid: 'superseded-by' }, ev.superseded_by)],
    ev.warnings.length && ['Warnings', h('ul', { class: 'warnings' }, ev.warnings.map((w) => h('li', {}, w)))],
  ].filter(Boolean);
  return h('section', { class: 'card' }, h('dl', { class: 'facts' }, rows.map(([k, v]) => [h('dt', {}, k), h('dd', {}, v)])));
}

function bodyBlock(ev) {
  if (ev.body_base64 != null) return rawBody(ev, ev.body_base64, [badge('base64 · not UTF-8', 'grey')]);
  const text = ev.body || '';
  if (!text) return h('p', { class: 'muted' }, 'Empty body.');
  if (text.length > PRETTY_MAX_CHARS) return rawBody(ev, text, [h('span', { class: 'muted small' }, 'Too large to indent: shown as sent.')]);
  let json = false;
  try { JSON.parse(text); json = true; } catch { /* not JSON: shown as sent */ }
  if (!json) return rawBody(ev, text, []);
  const pretty = prettyJson(text); // keeps the sender's literals
  if (pretty == null) return rawBody(ev, text, [badge('JSON', 'blue'), h('span', { class: 'muted small' }, ` Nested deeper than ${PRETTY_MAX_DEPTH} levels: shown as sent.`)]);
  return [badge('JSON', 'blue'), h('pre', { class: 'code', testid: 'body' }, pretty)];
}

// The text as sent, its first RAW_SHOWN_CHARS only until asked for all of it.
function rawBody(ev, text, notes) {
  const pre = h('pre', { class: 'code', testid: 'body' }, text.length > RAW_SHOWN_CHARS ? text.slice(0, RAW_SHOWN_CHARS) : text);
  if (text.length <= RAW_SHOWN_CHARS) return [...notes, pre];
  const cut = h('p', { class: 'muted small', testid: 'body-cut' },
    `Showing the first ${num(RAW_SHOWN_CHARS)} of ${num(text.length)} characters. `);
  const all = h('button', { type: 'button', testid: 'body-show-all', onclick: () => { pre.textContent = text; cut.remove(); } }, 'Show all');
  const download = h('button', { type: 'button', testid: 'body-download', onclick: () => {
    const url = URL.createObjectURL(new Blob([text], { type: 'application/octet-stream' }));
    const a = h('a', { href: url, download: `${ev.id}.body${ev.body_base64 != null ? '.base64' : ''}` });
    document.body.append(a); a.click(); a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 1000);
  } }, 'Download');
  cut.append(all, ' ', download);
  return [...notes, cut, pre];
}

function attempts(ev) {
  if (!ev.attempts.length) return h('p', { class: 'muted' }, 'No attempts yet.');
  return h('ol', { class: 'timeline' }, ev.attempts.map((a) => {
    const ok = a.status != null && a.status >= 200 && a.status < 300;
    return h('li', { class: ok ? 'attempt-ok' : 'attempt-fail', testid: 'attempt', data: { attempt: a.attempt } },
      h('div', { class: 'attempt-head' }, h('strong', {}, `#${a.attempt}`), timeEl(a.started_at_ms),
        h('span', { class: 'muted' }, ms(a.duration_ms)),
        badge(a.status == null ? 'no response' : String(a.status), ok ? 'green' : 'red')),
      a.error && h('div', { class: 'mono attempt-error' }, a.error),
      a.response != null && a.response !== a.error && h('details', { class: 'attempt-response' },
        h('summary', {}, 'Answer'), h('pre', { class: 'code', testid: 'attempt-response' }, a.response)));
  }));
}

// ---- dead letters ---------------------------------------------------------

function viewDead(params) {
  const source = params.get('source') || '';
  const destination = params.get('destination') || '';
  const input = h('input', { name: 'source', id: 'd-source', value: source, list: 'dead-sources', placeholder: 'all sources', spellcheck: 'false' });
  const dest = h('input', { name: 'destination', id: 'd-destination', value: destination, placeholder: 'all destinations', spellcheck: 'false' });
  const form = h('form', { class: 'filters card', onsubmit: (e) => { e.preventDefault(); go(`#/dead${query({ source: input.value.trim(), destination: dest.value.trim() })}`); } },
    h('div', { class: 'field' }, h('label', { for: 'd-source' }, 'Source'), input),
    h('div', { class: 'field' }, h('label', { for: 'd-destination' }, 'Destination'), dest),
    h('div', { class: 'field actions' }, h('button', { type: 'submit', class: 'primary' }, 'Filter')));
  form.append(sourceList('dead-sources'));
  const root = h('div', {});
  mount(heading('Dead letters'), form, root);
  deliveryList(root, params, { state: 'dead', source, destination }, '#/dead',
    source || destination ? 'No dead deliveries match.' : 'No dead letters.', true);
}

// A page of deliveries (a destination's queue or dead letters), each with a
// replay, and a "replay all shown" for the dead.
function deliveryList(root, params, filter, base, emptyText, withReplayAll) {
  const all = h('button', { type: 'button', testid: 'replay-all', class: 'primary', disabled: true, onclick: replayAll }, 'Replay all shown');
  const result = h('p', { class: 'result', testid: 'replay-result', role: 'status', hidden: true });
  const list = h('div', {}, loading());
  root.replaceChildren(withReplayAll ? h('div', { class: 'actions' }, all) : '', result, list);
  let shown = [];

  const load = loader(async (stale) => {
    const page = await api('GET', `/deliveries${query({ ...filter, limit: PAGE, cursor: params.get('cursor') })}`);
    if (stale()) return;
    shown = page.deliveries.map((d) => d.id);
    all.disabled = !shown.length;
    all.textContent = shown.length ? `Replay all shown (${shown.length})` : 'Replay all shown';
    const dead = filter.state === 'dead';
    list.replaceChildren(table([dead ? 'Died' : 'Received', 'Event', 'Source', 'Destination', 'State', 'Order key', ['Attempts', 'num'], ...(dead ? ['Why'] : []), ''],
      page.deliveries.map((d) => h('tr', { testid: dead ? 'dead-row' : 'queue-row', data: { id: d.event, delivery: d.id } },
        td(dead ? 'Died' : 'Received', timeEl(dead ? d.updated_at_ms : d.received_at_ms)),
        td('Event', h('a', { href: eventHref(d.event), class: 'mono', title: d.event }, shortId(d.event))),
        td('Source', d.source), td('Destination', h('a', { href: destinationHref(d.destination) }, d.destination)),
        td('State', stateBadge(d.state)), td('Order key', mono(d.order_key)),
        td('Attempts', num(d.attempt_count), 'num'),
        dead && td('Why', h('span', { class: 'mono why', testid: 'dead-why', title: d.last_error || '' }, d.last_error || '—')),
        td('', ACTIVE.has(d.state) ? '' : h('button', { type: 'button', testid: 'replay', class: 'small', onclick: (e) => replayOne(d.id, e.currentTarget) }, 'Replay'), 'act'))),
      emptyText),
    pager(base, params, page.next_cursor, dead ? 'dead' : 'queue'));
  }, list);
  load();

  async function replayOne(id, btn) {
    btn.disabled = true;
    const g = gen;
    try {
      await api('POST', `/deliveries/${encodeURIComponent(id)}/replay`);
      if (g === gen) setResult(result, true, `Replayed ${id}: pending again.`);
    } catch (e) {
      if (g === gen && e.status !== 401) setResult(result, false, `Replay of ${id} failed: ${e.message}`);
    }
    if (g === gen) await load();
  }

  // Replays exactly the deliveries on screen (not POST /api/replay, which would
  // also take those that died since the page loaded, and other pages), one after
  // another, oldest first: a replay joins the back of its queue, so this keeps
  // each queue's deliveries in their original order (the list is newest first;
  // replays in flight at once could land in any order).
  async function replayAll() {
    const ids = shown.slice().reverse();
    const g = gen;
    all.disabled = true;
    let done = 0;
    const failures = [];
    for (const id of ids) {
      if (g !== gen) break;
      try { await api('POST', `/deliveries/${encodeURIComponent(id)}/replay`); done++; } catch (e) {
        if (e.status === 401) return;
        failures.push(`${id}: ${e.message}`);
      }
    }
    if (g !== gen) return;
    const total = done + failures.length;
    setResult(result, !failures.length, failures.length
      ? `Replayed ${done} of ${total}; ${failures.length} failed (${failures[0]}${failures.length > 1 ? ', …' : ''}).`
      : `Replayed ${done} deliver${done === 1 ? 'y' : 'ies'}: pending again.`);
    await load();
  }
}

// ---- destinations ---------------------------------------------------------

function destinationTable(list, withActions, onToggle) {
  const rows = list.map((d) => h('tr', { testid: withActions ? 'destination-row' : 'overview-destination-row',
    data: { name: d.name, paused: d.paused, circuit: d.circuit } },
  td('Destination', [h('a', { href: destinationHref(d.name) }, h('strong', {}, d.name)), withActions && h('div', { class: 'mono small muted wrap url' }, d.url),
    withActions && d.rate_limit && h('div', { class: 'small muted' }, `rate limit ${d.rate_limit}`)]),
  td('State', [d.paused ? badge('paused', 'violet') : badge('sending', 'plain'), ' ', circuitBadge(d.circuit)], 'nowrap'),
  td('Queue', num(d.queue_depth), 'num'), td('In flight', num(d.in_flight), 'num'),
  td('Dead', d.dead ? h('a', { href: `${destinationHref(d.name)}?tab=dead`, class: 'bad' }, num(d.dead)) : '0', 'num'),
  td('Delivered/min', num(d.delivered_last_minute), 'num'),
  td('Failed/min', d.failed_last_minute ? h('span', { class: 'bad' }, num(d.failed_last_minute)) : '0', 'num'),
  td('p50', ms(d.latency_p50_ms), 'num'), td('p99', ms(d.latency_p99_ms), 'num'),
  withActions && td('', h('button', { type: 'button', class: d.paused ? 'primary small' : 'small',
    testid: d.paused ? 'resume' : 'pause', onclick: (e) => onToggle(d, e.currentTarget) }, d.paused ? 'Resume' : 'Pause'), 'act')));
  const heads = ['Destination', 'State', ['Queue', 'num'], ['In flight', 'num'], ['Dead', 'num'], ['Delivered/min', 'num'],
    ['Failed/min', 'num'], ['p50', 'num'], ['p99', 'num']];
  return table(withActions ? [...heads, ''] : heads, rows, 'No destinations configured.');
}

function viewDestinations() {
  const list = h('div', {}, loading());
  mount(heading('Destinations', h('span', { class: 'muted live' }, 'live')), list);
  const load = loader(async (stale) => {
    const r = await api('GET', '/destinations');
    if (!stale()) list.replaceChildren(destinationTable(r.destinations, true, toggle));
  }, list);
  poll(load, DEST_POLL_MS);

  async function toggle(d, btn) {
    const g = gen;
    btn.disabled = true;
    try {
      const r = await api('POST', `/destinations/${encodeURIComponent(d.name)}/${d.paused ? 'resume' : 'pause'}`);
      if (g === gen) btn.closest('tr').dataset.paused = String(r.paused); // at once; the reload redraws the row
    } catch (e) {
      if (g === gen && e.status !== 401) showError(`${d.paused ? 'Resume' : 'Pause'} ${d.name} failed: ${e.message}`);
      btn.disabled = false;
      return;
    }
    await load();
  }
}

// ---- one destination ------------------------------------------------------

// Its steering and counts, then its own queue (owed deliveries, by event) or its dead letters.
function viewDestination(params, name) {
  const tab = params.get('tab') === 'dead' ? 'dead' : 'queue';
  const facts = h('div', {}, loading());
  const tabs = h('nav', { class: 'tabs' },
    h('a', { href: `${destinationHref(name)}${query({ tab: 'queue' })}`, testid: 'tab-queue', 'aria-current': tab === 'queue' ? 'page' : null }, 'Queue'),
    ' ',
    h('a', { href: `${destinationHref(name)}${query({ tab: 'dead' })}`, testid: 'tab-dead', 'aria-current': tab === 'dead' ? 'page' : null }, 'Dead letters'));
  const list = h('div', {});
  mount(h('a', { href: '#/destinations', class: 'back' }, '← Destinations'),
    h('section', { testid: 'destination-detail', data: { name: name || '' } }, heading(name || ''), facts, tabs, list));
  loader(async (stale) => {
    const r = await api('GET', '/destinations');
    if (stale()) return;
    const d = r.destinations.find((x) => x.name === name);
    facts.replaceChildren(d ? destinationTable([d], false) : h('p', { class: 'muted' }, 'No such destination is configured.'));
  }, facts)();
  if (tab === 'dead') {
    deliveryList(list, params, { destination: name, state: 'dead' }, destinationHref(name), 'No dead letters here.', true);
  } else {
    // Owed: what is being delivered first, then what waits.
    const owed = h('div', {});
    const waiting = h('div', {});
    list.replaceChildren(h('h2', {}, 'Being delivered'), owed, h('h2', {}, 'Waiting'), waiting);
    deliveryList(owed, new URLSearchParams(), { destination: name, state: 'delivering' }, destinationHref(name), 'Nothing in flight.', false);
    deliveryList(waiting, params, { destination: name, state: 'pending' }, destinationHref(name), 'Nothing waiting.', false);
  }
}

// ---- start ----------------------------------------------------------------

window.addEventListener('hashchange', route);
$('#sign-out').addEventListener('click', () => signOut());
$('#error-close').addEventListener('click', hideError);
// Keep "3 s ago" honest without re-rendering views.
setInterval(() => {
  const now = Date.now();
  for (const t of document.querySelectorAll('time[data-ms]')) t.textContent = ago(Number(t.dataset.ms), now);
}, 1000);

if (sessionStorage.getItem(TOKEN_KEY)) enterApp(); else renderSignIn();

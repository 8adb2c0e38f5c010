// The zcaas API from the browser: JSON calls with the user's JWT, and
// Server-Sent Event streams opened with one-use stream tickets.
//
// Where the JWT lives — a trade-off: it is kept in sessionStorage (this tab
// only, gone when the tab closes) and sent as an Authorization header. A
// script injected into the page could read it (an HttpOnly cookie would
// hide it from scripts), but a header is never sent by the browser on its
// own, so there is no cross-site request forgery to defend against, and the
// strict Content-Security-Policy (no inline or remote script) plus
// textContent-only rendering are what keep scripts out. The long-lived JWT
// never goes into a URL: streams use tickets (see stream()).

const TOKEN_KEY = 'zcaas.jwt';

/** The stored JWT, or null. */
export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

/** Stores (or, with null, forgets) the JWT. */
export function setToken(value) {
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
  else sessionStorage.removeItem(TOKEN_KEY);
  me = null;
}

/** An API error: HTTP status plus the body's {code, message, field}. */
export class ApiError extends Error {
  constructor(status, body) {
    const err = (body && body.error) || {};
    super(err.message || `HTTP ${status}`);
    this.status = status;
    this.code = err.code || 'error';
    this.field = err.field || null;
  }
}

/**
 * Calls the API. Resolves with the parsed JSON body (null when empty) on a
 * 2xx; rejects with ApiError otherwise. A 401 forgets the token and goes to
 * the login page.
 */
export async function api(method, path, body) {
  const headers = { Accept: 'application/json' };
  const jwt = token();
  if (jwt) headers.Authorization = `Bearer ${jwt}`;
  const init = { method, headers };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, { error: { code: 'network', message: 'the server cannot be reached' } });
  }
  const text = await res.text();
  let data = null;
  if (text) {
    try { data = JSON.parse(text); } catch (e) { data = { error: { message: text.slice(0, 200) } }; }
  }
  if (res.ok) return data;
  if (res.status === 401 && jwt && !path.startsWith('/api/auth/')) {
    setToken(null);
    location.hash = '#/login';
  }
  throw new ApiError(res.status, data);
}

let me = null;

/** Forgets the cached account, so the next currentUser() asks again. */
export function refreshUser() {
  me = null;
}

/** The signed-in account (`GET /api/me`), cached until refreshUser() or a new token. */
export async function currentUser() {
  if (!token()) return null;
  if (!me) me = api('GET', '/api/me').catch((e) => { me = null; throw e; });
  return me;
}

/**
 * Opens an SSE stream at `path` and keeps it open until close() is called.
 *
 * EventSource cannot send an Authorization header, so each connection
 * first trades the JWT for a one-use ticket (`POST /api/auth/stream-ticket`)
 * and passes it as `?ticket=`. The browser's own reconnect would reuse the
 * spent ticket, so on any error this closes the EventSource and reconnects
 * itself with a new ticket and `after=<last event id>`: events missed
 * meanwhile are replayed by the server, none twice.
 *
 * `handlers`: { [eventName]: (data, messageEvent) => void, onstate(state) }
 * where state is 'connecting' | 'live' | 'retrying' | 'closed'.
 * `options`: { query: {history: N, ...}, reconnect: true }.
 */
export function stream(path, handlers, options = {}) {
  const reconnect = options.reconnect !== false;
  let es = null;
  let closed = false;
  let lastId = null;
  let delay = 1000;
  let timer = null;
  const state = (s) => handlers.onstate && handlers.onstate(s);

  async function connect() {
    if (closed) return;
    state('connecting');
    let ticket;
    try {
      ({ ticket } = await api('POST', '/api/auth/stream-ticket'));
    } catch (e) {
      if (e.status === 401) { close(); return; }
      return retry();
    }
    if (closed) return;
    const params = new URLSearchParams(options.query || {});
    if (lastId !== null) {
      params.delete('history');
      params.set('after', lastId);
    }
    params.set('ticket', ticket);
    es = new EventSource(`${path}?${params}`);
    es.onopen = () => { delay = 1000; state('live'); };
    es.onerror = () => {
      if (es) es.close();
      es = null;
      if (reconnect) retry(); else close();
    };
    for (const [name, fn] of Object.entries(handlers)) {
      if (name === 'onstate') continue;
      es.addEventListener(name, (ev) => {
        if (ev.lastEventId) lastId = ev.lastEventId;
        let data = ev.data;
        try { data = JSON.parse(ev.data); } catch (e) { /* plain text */ }
        fn(data, ev);
      });
    }
  }

  function retry() {
    if (closed) return;
    state('retrying');
    clearTimeout(timer);
    timer = setTimeout(connect, delay);
    delay = Math.min(delay * 2, 15000);
  }

  function close() {
    closed = true;
    clearTimeout(timer);
    if (es) es.close();
    es = null;
    state('closed');
  }

  connect();
  return { close };
}

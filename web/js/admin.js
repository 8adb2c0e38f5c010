// Admin: every agent's state machine live — current state, the path of its
// recent transitions, owner, attempts, last error, resource use and channels
// in error (`GET /api/admin/agents`; "Channels in error" lists the agents
// with one), and the feed of recent transitions of all
// agents (`GET /api/admin/events?history=…`), both updated as events arrive.

import { api, stream } from './api.js';
import { h, append, clear, badge, setBadge, timeEl } from './dom.js';

const HISTORY = 200;
const FEED_MAX = 200;
const PATH_MAX = 8;

/** Renders the admin page into `main`; returns the cleanup. */
export function renderAdmin(main) {
  const live = h('span', { class: 'live', text: 'connecting' });
  const error = h('p', { class: 'form-error hidden', role: 'alert' });
  const tbody = h('tbody', { id: 'admin-agents' });
  const feed = h('ol', { class: 'history', id: 'admin-feed', 'aria-label': 'Recent transitions' });
  const failing = h('ul', { class: 'history', id: 'admin-channel-errors', 'aria-label': 'Agents with a channel in error' });
  const table = h('div', { class: 'table-wrap' }, h('table', {},
    h('thead', {}, h('tr', {}, ['Agent', 'Owner', 'Status', 'Recent path', 'Desired', 'Attempts', 'CPU', 'Memory', 'Channels in error', 'Last error']
      .map((t) => h('th', { scope: 'col', text: t })))),
    tbody));
  append(main,
    h('div', { class: 'row spread' }, h('h1', { text: 'Admin · all agents' }), live),
    error,
    h('section', { class: 'panel' }, h('h2', { text: 'Channels in error' }), failing),
    h('section', { class: 'panel' }, h('h2', { text: 'State machines' }), table),
    h('section', { class: 'panel' }, h('h2', { text: 'Recent transitions' }), feed));

  const rows = new Map();
  // Transitions per agent id, oldest first (also for agents not loaded yet).
  const paths = new Map();
  let refreshing = null;

  async function load() {
    try {
      const agents = await api('GET', '/api/admin/agents');
      clear(tbody);
      rows.clear();
      for (const a of agents) {
        const row = renderRow(a);
        rows.set(a.id, row);
        renderPath(row, paths.get(a.id) || []);
        tbody.append(row.el);
      }
      if (agents.length === 0) tbody.append(h('tr', {}, h('td', { colspan: 10, class: 'muted', text: 'No agents.' })));
      clear(failing);
      for (const a of agents.filter((x) => x.channelErrors && x.channelErrors.length)) {
        failing.append(h('li', { 'data-agent-id': a.id },
          h('strong', { text: a.slug }), h('span', { class: 'mono muted', text: a.ownerEmail }),
          h('span', { class: 'err', text: a.channelErrors.join(', ') })));
      }
      if (failing.childElementCount === 0) failing.append(h('li', { class: 'muted', text: 'None.' }));
      error.classList.add('hidden');
    } catch (e) {
      error.textContent = e.status === 403 ? 'This page is for admins.' : `Could not load agents: ${e.message}`;
      error.classList.remove('hidden');
    }
  }

  function refreshSoon() {
    if (refreshing) return;
    refreshing = setTimeout(() => { refreshing = null; load(); }, 400);
  }

  const events = stream('/api/admin/events', {
    transition: (ev) => {
      const path = paths.get(ev.agentId) || [];
      path.push(ev);
      if (path.length > PATH_MAX) path.shift();
      paths.set(ev.agentId, path);
      feed.prepend(h('li', { 'data-slug': ev.slug, 'data-to': ev.to },
        timeEl(ev.at),
        h('span', {}, h('strong', { text: ev.slug }), ' ', ev.from ? badge(ev.from) : '', ev.from ? ' → ' : '', badge(ev.to)),
        h('span', { class: 'why', text: ev.reason })));
      while (feed.childElementCount > FEED_MAX) feed.lastChild.remove();
      const row = rows.get(ev.agentId);
      if (row) {
        setBadge(row.badge, ev.to);
        renderPath(row, path);
        refreshSoon();
      } else if (ev.from) {
        refreshSoon();
      }
    },
    truncated: () => refreshSoon(),
    onstate: (s) => {
      live.textContent = s === 'live' ? 'live' : s;
      live.classList.toggle('on', s === 'live');
    },
  }, { query: { history: HISTORY } });

  load();
  return () => {
    events.close();
    clearTimeout(refreshing);
  };
}

function renderRow(a) {
  const b = badge(a.status);
  const path = h('div', { class: 'path' });
  const num = (v, unit) => (v === null || v === undefined ? '—' : `${Number(v).toFixed(1)} ${unit}`);
  const el = h('tr', { 'data-agent-id': a.id, 'data-slug': a.slug },
    h('td', { 'data-label': 'Agent' }, h('div', {}, h('div', { text: a.name }), h('div', { class: 'mono muted', text: a.slug }))),
    h('td', { 'data-label': 'Owner' }, h('span', { class: 'mono', text: a.ownerEmail })),
    h('td', { 'data-label': 'Status' }, h('span', {}, b)),
    h('td', { 'data-label': 'Recent path' }, path),
    h('td', { 'data-label': 'Desired' }, h('span', { text: a.desiredState })),
    h('td', { 'data-label': 'Attempts' }, h('span', { text: String(a.attempts) })),
    h('td', { 'data-label': 'CPU' }, h('span', { text: num(a.cpuPercent, '%') })),
    h('td', { 'data-label': 'Memory' }, h('span', { text: num(a.memoryMb, 'MiB') })),
    h('td', { 'data-label': 'Channels in error', class: 'err' }, h('span', { text: (a.channelErrors || []).join(', ') })),
    h('td', { 'data-label': 'Last error', class: 'err' }, h('span', { text: a.lastError || '' })));
  return { el, badge: b, path };
}

function renderPath(row, events) {
  clear(row.path);
  for (const ev of events) {
    const b = badge(ev.to);
    b.title = `${ev.reason} (${ev.at})`;
    row.path.append(b);
  }
}

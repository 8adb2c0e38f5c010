// "My agents": the caller's agents as cards whose status follows the
// caller's event stream (`GET /api/events`) live, without reloading.

import { api, stream } from './api.js';
import { h, append, clear, badge, setBadge, timeEl, channelBadges } from './dom.js';

/** Renders the list into `main`; returns the cleanup (closes the stream). */
export function renderAgents(main) {
  const list = h('ul', { class: 'cards', id: 'agent-list', 'aria-live': 'polite' });
  const live = h('span', { class: 'live', id: 'live-state', text: 'connecting' });
  const error = h('p', { class: 'form-error hidden', role: 'alert' });
  append(main,
    h('div', { class: 'row spread' },
      h('h1', { text: 'My agents' }),
      h('div', { class: 'row' }, live, h('a', { class: 'button', href: '#/new', id: 'new-agent' }, 'New agent'))),
    error, list);

  const cards = new Map();
  let refreshing = null;
  let connectedOnce = false;

  async function load() {
    try {
      const agents = await api('GET', '/api/agents');
      clear(list);
      cards.clear();
      if (agents.length === 0) {
        append(list, h('li', { class: 'card' },
          h('p', { class: 'muted', text: 'No agents yet.' }),
          h('a', { href: '#/new' }, 'Create your first agent')));
      }
      for (const a of agents) {
        const card = renderCard(a);
        cards.set(a.id, card);
        list.append(card.el);
      }
      error.classList.add('hidden');
    } catch (e) {
      error.textContent = `Could not load your agents: ${e.message}`;
      error.classList.remove('hidden');
    }
  }

  function refreshSoon() {
    if (refreshing) return;
    refreshing = setTimeout(() => { refreshing = null; load(); }, 300);
  }

  const events = stream('/api/events', {
    transition: (ev) => {
      const card = cards.get(ev.agentId);
      if (!card) { refreshSoon(); return; }
      setBadge(card.badge, ev.to);
      card.reason.textContent = ev.reason;
      card.el.dataset.status = ev.to;
    },
    truncated: () => refreshSoon(),
    onstate: (s) => {
      live.textContent = s === 'live' ? 'live' : s;
      live.classList.toggle('on', s === 'live');
      // After a reconnect, reload: cheaper to reason about than replaying.
      if (s === 'live' && connectedOnce) refreshSoon();
      if (s === 'live') connectedOnce = true;
    },
  });

  load();
  return () => {
    events.close();
    clearTimeout(refreshing);
  };
}

function renderCard(a) {
  const b = badge(a.status);
  const reason = h('span', { class: 'reason', text: a.lastError || '' });
  const el = h('li', { class: 'card', 'data-agent-id': a.id, 'data-status': a.status },
    h('div', { class: 'row spread' },
      h('a', { class: 'title', href: `#/agents/${encodeURIComponent(a.id)}` }, a.name),
      b),
    h('span', { class: 'mono muted', text: a.subdomain || a.slug }),
    h('span', { class: 'muted', text: `${a.provider.startsWith('custom:') ? 'custom' : a.provider} · ${a.model}` }),
    reason,
    channelBadges(a.channelHealth),
    h('span', { class: 'muted' }, 'created ', timeEl(a.createdAt)));
  return { el, badge: b, reason };
}

// One agent's page: status with the deploy's progress and history (the
// agent's event stream, with history), actions (start/stop/restart/retry,
// delete), CPU and memory (polled), the chat box (POST …/message) and the
// live logs (…/logs?follow=true), the agent's public URL and the access
// tokens that open it (…/tokens). Everything the page opens is closed by the
// cleanup it returns.

import { api, stream } from './api.js';
import {
  h, append, clear, badge, setBadge, timeEl, toast, busy, channelBadges, field, setFieldError, copyable,
} from './dom.js';

const STATS_EVERY_MS = 3000;
const MAX_LOG_LINES = 1000;
const FLOWS = {
  deploy: ['PENDING', 'STARTING', 'RUNNING'],
  stop: ['RUNNING', 'STOPPING', 'STOPPED'],
};

/** Renders agent `id` into `main`; returns the cleanup. */
export function renderAgent(main, id) {
  const base = `/api/agents/${encodeURIComponent(id)}`;
  let agent = null;
  let status = null;
  let since = Date.now();
  const timers = [];
  const closers = [];

  // Header and actions.
  const title = h('h1', { id: 'agent-name', text: 'Agent' });
  const statusBadge = badge('');
  statusBadge.id = 'agent-status';
  const live = h('span', { class: 'live', text: 'connecting' });
  const buttons = {
    start: h('button', { type: 'button', id: 'btn-start', onclick: () => act('start') }, 'Start'),
    stop: h('button', { type: 'button', id: 'btn-stop', class: 'secondary', onclick: () => act('stop') }, 'Stop'),
    restart: h('button', { type: 'button', id: 'btn-restart', class: 'secondary', onclick: () => act('restart') }, 'Restart'),
    retry: h('button', { type: 'button', id: 'btn-retry', onclick: () => act('retry') }, 'Retry deploy'),
    remove: h('button', { type: 'button', id: 'btn-delete', class: 'danger', onclick: () => askDelete() }, 'Delete'),
  };
  const confirmDelete = h('button', { type: 'button', id: 'btn-confirm-delete', class: 'danger hidden', onclick: () => remove() }, 'Confirm delete');
  const cancelDelete = h('button', { type: 'button', class: 'secondary hidden', onclick: () => showConfirm(false) }, 'Keep it');

  // Progress.
  const steps = h('ol', { class: 'steps', id: 'agent-steps', 'aria-label': 'Deploy progress' });
  const note = h('p', { class: 'progress-note', id: 'agent-progress', 'aria-live': 'polite' });
  const lastError = h('p', { class: 'form-error hidden', id: 'agent-error' });
  // Each configured channel's status and last error (from the stats poll).
  const channels = h('div', { class: 'channel-health hidden', id: 'agent-channels' });

  // Panels.
  const history = h('ol', { class: 'history', id: 'agent-history', 'aria-label': 'Status history' });
  const facts = h('dl', { class: 'facts', id: 'agent-facts' });
  const cpu = meter('CPU', 'agent-cpu');
  const mem = meter('Memory', 'agent-mem');
  const chatLog = h('div', { class: 'chat-log', id: 'chat-log', 'aria-live': 'polite' });
  const chatInput = h('textarea', { id: 'chat-input', rows: 2, maxlength: 32768, 'aria-label': 'Message to the agent' });
  const chatSend = h('button', { type: 'submit', id: 'chat-send' }, 'Send');
  const chatForm = h('form', { class: 'chat-form' }, chatInput, chatSend);
  const logs = h('div', { class: 'logs', id: 'agent-logs', tabindex: '0', role: 'log', 'aria-label': 'Container logs' });
  const logState = h('span', { class: 'live', text: 'idle' });
  const publicUrl = publicPanel();
  const tokens = tokensPanel(base, () => status, () => publicUrl.url());

  append(main,
    h('p', {}, h('a', { href: '#/agents' }, '← My agents')),
    h('section', { class: 'panel' },
      h('div', { class: 'row spread' }, h('div', { class: 'row' }, title, statusBadge), live),
      steps, note, lastError, channels,
      h('div', { class: 'row' }, buttons.start, buttons.stop, buttons.restart, buttons.retry, buttons.remove, confirmDelete, cancelDelete)),
    h('div', { class: 'grid two' },
      h('section', { class: 'panel' }, h('h2', { text: 'Chat' }), chatLog, chatForm),
      h('section', { class: 'panel' }, h('h2', { text: 'Resources' }), h('div', { class: 'meters' }, cpu.el, mem.el))),
    h('div', { class: 'grid two' },
      h('section', { class: 'panel' }, h('h2', { text: 'Status history' }), history),
      h('section', { class: 'panel' }, h('h2', { text: 'Configuration' }), facts)),
    h('div', { class: 'grid two' }, publicUrl.el, tokens.el),
    h('section', { class: 'panel' }, h('div', { class: 'row spread' }, h('h2', { text: 'Logs' }), logState), logs));

  // `at`: when the agent entered `next` (ms since the epoch), if known.
  function setStatus(next, reason, at) {
    if (next !== status || at) since = at && !Number.isNaN(at) ? Math.min(at, Date.now()) : Date.now();
    status = next;
    setBadge(statusBadge, next);
    renderSteps(reason);
    const can = {
      start: status === 'STOPPED',
      stop: status === 'RUNNING',
      restart: status === 'RUNNING',
      retry: status === 'ERROR',
    };
    for (const [k, ok] of Object.entries(can)) {
      buttons[k].disabled = !ok;
      buttons[k].classList.toggle('hidden', k === 'retry' && !ok);
    }
    chatSend.disabled = status !== 'RUNNING';
    if (status !== 'RUNNING') { cpu.set(null); mem.set(null); }
    chatInput.placeholder = status === 'RUNNING' ? 'Say something…' : `The agent is ${status}; chat opens when it is RUNNING.`;
    if (status === 'RUNNING' && !logStream) openLogs();
  }

  function renderSteps(reason) {
    const flow = ['STOPPING', 'STOPPED'].includes(status) ? FLOWS.stop : FLOWS.deploy;
    clear(steps);
    const at = flow.indexOf(status);
    flow.forEach((s, i) => {
      let cls = '';
      if (status === 'ERROR') cls = i === 0 ? 'done' : '';
      else if (i < at || (i === at && (s === 'RUNNING' || s === 'STOPPED'))) cls = 'done';
      else if (i === at) cls = 'current';
      steps.append(h('li', { class: cls, 'aria-current': i === at ? 'step' : false, text: s }));
    });
    if (status === 'ERROR') steps.append(h('li', { class: 'failed', 'aria-current': 'step', text: 'ERROR' }));
    if (reason) note.dataset.reason = reason;
    tick();
  }

  // The note says what is happening and for how long, every second, so a
  // long deploy never looks frozen.
  function tick() {
    const secs = Math.round((Date.now() - since) / 1000);
    const reason = note.dataset.reason ? ` — ${note.dataset.reason}` : '';
    const transient = ['PENDING', 'STARTING', 'STOPPING'].includes(status);
    note.textContent = transient ? `${status} for ${secs} s${reason}` : status ? `${status}${reason}` : '';
  }
  timers.push(setInterval(() => { if (['PENDING', 'STARTING', 'STOPPING'].includes(status)) tick(); }, 1000));

  function renderChannels(health) {
    clear(channels);
    const entries = Object.entries(health || {});
    channels.classList.toggle('hidden', entries.length === 0);
    if (entries.length === 0) return;
    append(channels, h('span', { class: 'muted', text: 'Channels ' }), channelBadges(health));
    for (const [name, c] of entries) {
      if (c.lastError) channels.append(h('p', { class: 'reason', text: `${name}: ${c.lastError}` }));
    }
  }

  async function load() {
    try {
      agent = await api('GET', base);
    } catch (e) {
      if (e.status === 404) {
        clear(main);
        append(main, h('h1', { text: 'Agent not found' }), h('p', {}, h('a', { href: '#/agents' }, 'Back to my agents')));
        return false;
      }
      toast(e.message);
      return false;
    }
    title.textContent = agent.name;
    document.title = `zcaas · ${agent.name}`;
    renderFacts(facts, agent);
    publicUrl.set(agent);
    lastError.textContent = agent.lastError ? `Last error: ${agent.lastError}` : '';
    lastError.classList.toggle('hidden', !agent.lastError);
    renderChannels(agent.channelHealth);
    if (!status) setStatus(agent.status);
    return true;
  }

  async function act(what) {
    const done = busy(buttons[what], `${what[0].toUpperCase()}${what.slice(1)}…`);
    try {
      const updated = await api('POST', `${base}/${what}`);
      done();
      setStatus(updated.status, `${what} requested`);
    } catch (e) {
      done();
      setStatus(status);
      toast(e.message);
    }
  }

  function showConfirm(on) {
    buttons.remove.classList.toggle('hidden', on);
    confirmDelete.classList.toggle('hidden', !on);
    cancelDelete.classList.toggle('hidden', !on);
    (on ? confirmDelete : buttons.remove).focus();
  }
  function askDelete() { showConfirm(true); }
  async function remove() {
    const done = busy(confirmDelete, 'Deleting…');
    try {
      await api('DELETE', base);
      toast(`${agent ? agent.name : 'Agent'} deleted`);
      location.hash = '#/agents';
    } catch (e) {
      done();
      toast(e.message);
    }
  }

  // Status history and live status. History replays oldest first; only a
  // newer event (higher id) than the last one applied moves the status.
  let lastEventId = 0;
  let reloadTimer = null;
  const reloadSoon = () => {
    clearTimeout(reloadTimer);
    reloadTimer = setTimeout(load, 400);
  };
  closers.push(() => clearTimeout(reloadTimer));
  const events = stream(`${base}/events`, {
    transition: (ev) => {
      history.prepend(h('li', { 'data-to': ev.to },
        timeEl(ev.at),
        h('span', {}, ev.from ? badge(ev.from) : '', ev.from ? ' → ' : '', badge(ev.to)),
        h('span', { class: 'why', text: ev.reason })));
      if (ev.id > lastEventId) {
        lastEventId = ev.id;
        setStatus(ev.to, ev.reason, Date.parse(ev.at));
        reloadSoon();
      }
    },
    truncated: () => reloadSoon(),
    onstate: (s) => {
      live.textContent = s === 'live' ? 'live' : s;
      live.classList.toggle('on', s === 'live');
    },
  }, { query: { history: 100 } });
  closers.push(() => events.close());

  // Resources, polled while RUNNING.
  async function pollStats() {
    if (status !== 'RUNNING') { cpu.set(null); mem.set(null); return; }
    try {
      const s = await api('GET', `${base}/stats`);
      if (s.visible === false) { cpu.set(null, s.reason); mem.set(null, s.reason); return; }
      cpu.set(s.cpuPercent, `${s.cpuPercent.toFixed(1)} %`, Math.min(100, s.cpuPercent / ((agent && agent.cpus) || 1)));
      const limit = (agent && agent.memoryLimitMb) || 0;
      mem.set(s.memoryMb, `${s.memoryMb.toFixed(1)} MiB${limit ? ` of ${limit}` : ''}`, limit ? (100 * s.memoryMb) / limit : 0);
    } catch (e) {
      cpu.set(null); mem.set(null);
    }
  }
  timers.push(setInterval(pollStats, STATS_EVERY_MS));

  // Chat.
  chatForm.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const text = chatInput.value.trim();
    if (!text) return;
    chatLog.append(h('div', { class: 'msg user', text }));
    chatInput.value = '';
    const done = busy(chatSend, 'Sending…');
    const waiting = h('div', { class: 'msg agent muted', text: '…' });
    chatLog.append(waiting);
    chatLog.scrollTop = chatLog.scrollHeight;
    try {
      const reply = await api('POST', `${base}/message`, { message: text });
      waiting.className = 'msg agent';
      waiting.textContent = reply && typeof reply.response === 'string' ? reply.response : JSON.stringify(reply);
    } catch (e) {
      waiting.className = 'msg failed';
      waiting.textContent = `Not delivered: ${e.message}`;
    }
    done();
    chatSend.disabled = status !== 'RUNNING';
    chatLog.scrollTop = chatLog.scrollHeight;
    chatInput.focus();
  });
  chatInput.addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter' && !ev.shiftKey) { ev.preventDefault(); chatForm.requestSubmit(); }
  });

  // Logs: one stream per container run; it ends when the container stops.
  let logStream = null;
  function openLogs() {
    if (logStream) logStream.close();
    clear(logs);
    logStream = stream(`${base}/logs`, {
      line: (l) => addLog(l.text, l.stream),
      end: (e) => {
        addLog(`— log stream ended (${e.reason}) —`, 'note');
        const s = logStream;
        logStream = null;
        if (s) s.close();
        logState.textContent = 'ended';
        logState.classList.remove('on');
      },
      onstate: (s) => {
        if (s === 'closed') return;
        logState.textContent = s === 'live' ? 'following' : s;
        logState.classList.toggle('on', s === 'live');
      },
    }, { query: { follow: 'true', tail: 200 }, reconnect: false });
  }
  function addLog(text, kind) {
    const stick = logs.scrollTop + logs.clientHeight >= logs.scrollHeight - 4;
    logs.append(h('div', { class: kind === 'stderr' || kind === 'note' ? kind : '', text: text || ' ' }));
    while (logs.childElementCount > MAX_LOG_LINES) logs.firstChild.remove();
    if (stick) logs.scrollTop = logs.scrollHeight;
  }
  closers.push(() => { if (logStream) logStream.close(); });

  load().then((ok) => {
    if (!ok) return;
    tokens.load();
    pollStats();
    if (!logStream && agent.containerId) openLogs();
  });

  return () => {
    timers.forEach(clearInterval);
    closers.forEach((c) => c());
  };
}

// The public URL: `https://<slug>.<domain>` (the agent's `publicUrl`),
// where the agent answers only its public paths, and a ready-to-copy curl
// call of its `/webhook` (DESIGN.md §1: bearer token, `{"message": …}`).
function publicPanel() {
  const link = h('a', { id: 'agent-public-url', class: 'mono', target: '_blank', rel: 'noopener noreferrer' });
  const health = h('a', { id: 'agent-public-health', target: '_blank', rel: 'noopener noreferrer' }, '/health');
  const none = h('p', { class: 'muted', id: 'agent-public-none', text: 'No public URL yet.' });
  const line = h('p', { class: 'public-url' }, link);
  const usage = h('div', {});
  const el = h('section', { class: 'panel', id: 'agent-public', 'aria-labelledby': 'agent-public-title' },
    h('h2', { id: 'agent-public-title', text: 'Public URL' }),
    none, line, usage);
  let shown = null;
  return {
    el,
    /** The URL shown, or null. */
    url: () => (shown && /^https?:/i.test(shown) ? shown : null),
    set(agent) {
      const subdomain = agent.subdomain ? `https://${agent.subdomain}` : null;
      const url = String(agent.publicUrl || subdomain || '').replace(/\/+$/, '');
      if (url === shown) return;
      shown = url;
      // Only an http(s) URL becomes a link.
      const ok = /^https?:\/\/[^\s/]+$/i.test(url);
      none.classList.toggle('hidden', ok);
      line.classList.toggle('hidden', !ok);
      clear(usage);
      if (!ok) return;
      link.textContent = url;
      link.href = url;
      health.href = `${url}/health`;
      append(usage,
        h('p', { class: 'hint' },
          'Only the public paths answer here — by default ', h('code', { text: '/webhook' }), ' (messages, with an access token) and ',
          health, ' — everything else is 404.'),
        h('p', { class: 'hint', text: 'Send a message with an access token (issue one below):' }),
        copyable('public-curl', curlCommand(url, '<token>'), 'A curl call of the webhook', true).el);
    },
  };
}

/** The webhook call from a shell, with `token` as the bearer token. */
function curlCommand(url, token) {
  return `curl ${url}/webhook -H "Authorization: Bearer ${token}" -H 'Content-Type: application/json' -d '{"message":"hello"}'`;
}

// Access tokens for the public URL (`…/tokens`): the list (name, created,
// last four, last use) with a confirmed Revoke on each; the form issues
// one, shown once. Issuing or revoking restarts a RUNNING agent, which
// reads its tokens at start (the page's status follows the restart).
function tokensPanel(base, getStatus, getUrl) {
  const path = `${base}/tokens`;
  const list = h('ul', { class: 'tokens', id: 'token-list', 'aria-live': 'polite' });
  const listError = h('p', { class: 'form-error hidden', role: 'alert', id: 'token-list-error' });
  const name = field('token-name', 'Name', h('input', { type: 'text', name: 'name', maxlength: 64, autocomplete: 'off' }),
    'Where it is used, e.g. "laptop" or "CI".');
  const formError = h('p', { class: 'form-error hidden', role: 'alert', id: 'token-error' });
  const submit = h('button', { type: 'submit', id: 'token-issue' }, 'Issue token');
  const form = h('form', { class: 'token-form', novalidate: true, id: 'token-form', 'aria-label': 'Issue an access token' },
    name.el, submit);
  const fresh = h('div', { class: 'secret hidden', id: 'token-new', role: 'region', 'aria-label': 'New access token' });
  const el = h('section', { class: 'panel', id: 'agent-tokens', 'aria-labelledby': 'agent-tokens-title' },
    h('h2', { id: 'agent-tokens-title', text: 'Access tokens' }),
    h('p', { class: 'hint', id: 'token-restart-note',
      text: 'Tokens open the public URL. Issuing or revoking one restarts the agent if it is running, '
        + 'so it is briefly unavailable.' }),
    listError, list, formError, form, fresh);

  async function load() {
    try {
      const tokens = await api('GET', path);
      render(tokens || []);
      listError.classList.add('hidden');
    } catch (e) {
      listError.textContent = `Could not load the tokens: ${e.message}`;
      listError.classList.remove('hidden');
    }
  }

  function render(tokens) {
    clear(list);
    if (tokens.length === 0) list.append(h('li', { class: 'muted empty', text: 'No tokens yet.' }));
    for (const t of tokens) list.append(row(t));
  }

  function row(t) {
    const revoke = h('button', { type: 'button', class: 'secondary revoke', 'aria-label': `Revoke the token "${t.name}"` }, 'Revoke');
    const confirm = h('button', {
      type: 'button', class: 'danger confirm-revoke hidden', 'aria-label': `Confirm: revoke the token "${t.name}"`,
    }, 'Confirm revoke');
    const keep = h('button', { type: 'button', class: 'secondary keep hidden' }, 'Keep');
    const ask = (on) => {
      revoke.classList.toggle('hidden', on);
      confirm.classList.toggle('hidden', !on);
      keep.classList.toggle('hidden', !on);
      (on ? confirm : revoke).focus();
    };
    revoke.addEventListener('click', () => ask(true));
    keep.addEventListener('click', () => ask(false));
    confirm.addEventListener('click', async () => {
      const done = busy(confirm, 'Revoking…');
      const restarts = getStatus() === 'RUNNING';
      try {
        await api('DELETE', `${path}/${encodeURIComponent(t.id)}`);
        if (fresh.dataset.tokenId === t.id) hideFresh();
        toast(`Token "${t.name}" revoked${restarts ? '; the agent restarts to apply it' : ''}`);
        await load();
      } catch (e) {
        done();
        ask(false);
        toast(`Could not revoke "${t.name}": ${e.message}`);
      }
    });
    return h('li', { 'data-token-id': t.id },
      h('div', { class: 'token-main' },
        h('strong', { class: 'token-name', text: t.name }),
        h('span', { class: 'mono muted token-last4', text: t.lastFour ? `…${t.lastFour}` : '' })),
      h('div', { class: 'token-meta muted' },
        h('span', {}, 'created ', timeEl(t.createdAt)),
        h('span', { class: 'token-used' }, 'last used ', t.lastUsedAt ? timeEl(t.lastUsedAt) : '—')),
      h('div', { class: 'row' }, revoke, confirm, keep));
  }

  function hideFresh() {
    clear(fresh);
    fresh.classList.add('hidden');
    delete fresh.dataset.tokenId;
  }

  // The token itself is in this answer only: shown once, until dismissed.
  function showFresh(t) {
    clear(fresh);
    fresh.dataset.tokenId = t.id;
    const secret = copyable('token-value', t.token, `The new token "${t.name}"`);
    const note = t.restartPending
      ? 'The agent is restarting to accept it; the token works once the agent is RUNNING again.'
      : getStatus() === 'RUNNING' ? null : 'The agent accepts it from its next start.';
    const url = getUrl();
    const dismiss = h('button', { type: 'button', class: 'secondary', id: 'token-dismiss' }, 'Done');
    dismiss.addEventListener('click', () => { hideFresh(); name.input.focus(); });
    append(fresh,
      h('p', {}, h('strong', { text: `Token "${t.name}" issued.` }), ' ',
        h('span', { class: 'once', id: 'token-once', text: 'Copy it now: it will not be shown again.' })),
      secret.el,
      note ? h('p', { class: 'hint', id: 'token-restart', text: note }) : null,
      url ? h('details', {}, h('summary', { text: 'Try it with curl' }),
        copyable('token-curl', curlCommand(url, t.token), 'A curl call with the new token', true).el) : null,
      h('div', { class: 'row' }, dismiss));
    fresh.classList.remove('hidden');
    secret.value.focus();
  }

  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    setFieldError(name, '');
    formError.classList.add('hidden');
    const done = busy(submit, 'Issuing…');
    try {
      const t = await api('POST', path, { name: name.input.value.trim() });
      done();
      name.input.value = '';
      showFresh(t);
      await load();
    } catch (e) {
      done();
      if (e.field === 'name') {
        setFieldError(name, e.message);
        name.input.focus();
      } else {
        formError.textContent = e.message;
        formError.classList.remove('hidden');
      }
    }
  });

  return { el, load };
}

function meter(label, id) {
  const value = h('div', { class: 'value', id, text: '—' });
  const fill = h('span', {});
  const el = h('div', { class: 'meter' }, h('div', { class: 'muted', text: label }), value, h('div', { class: 'bar' }, fill));
  return {
    el,
    set(raw, text, pct) {
      value.textContent = raw === null || raw === undefined ? '—' : text;
      value.title = raw === null || raw === undefined ? (text || '') : '';
      fill.style.width = `${Math.max(0, Math.min(100, pct || 0))}%`;
    },
  };
}

function renderFacts(dl, a) {
  clear(dl);
  const channels = a.channels ? Object.keys(a.channels).join(', ') || 'none' : 'none';
  const rows = [
    ['Slug', a.slug], ['Address', a.subdomain || '—'], ['Persona', a.agentName],
    ['Your name', a.userName || '—'], ['Timezone', a.timezone], ['Style', a.communicationStyle || '—'],
    ['Provider', a.provider], ['Model', a.model], ['Temperature', String(a.temperature)],
    ['Memory', `${a.memoryBackend}${a.autoSave ? ', auto-save' : ''}`], ['API key', a.apiKey || 'none'],
    ['Channels', channels], ['Limits', `${a.cpus} CPU, ${a.memoryLimitMb} MiB`],
    ['Paired', a.paired ? 'yes' : 'no'], ['Port', a.containerPort ? `127.0.0.1:${a.containerPort}` : '—'],
  ];
  for (const [k, v] of rows) append(dl, h('dt', { text: k }), h('dd', { text: v }));
  append(dl, h('dt', { text: 'Created' }), h('dd', {}, timeEl(a.createdAt)));
}

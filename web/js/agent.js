// One agent's page: status with the deploy's progress and history (the
// agent's event stream, with history), actions (start/stop/restart/retry,
// delete), CPU and memory (polled), the chat box (POST …/message) and the
// live logs (…/logs?follow=true). Everything the page opens is closed by
// the cleanup it returns.

import { api, stream } from './api.js';
import { h, append, clear, badge, setBadge, timeEl, toast, busy, channelBadges } from './dom.js';

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
    pollStats();
    if (!logStream && agent.containerId) openLogs();
  });

  return () => {
    timers.forEach(clearInterval);
    closers.forEach((c) => c());
  };
}

function meter(label, id) {
  const value = h('div', { class: 'value', id, text: '—' });
  const fill = h('span', {});
  const el = h('div', { class: 'meter' }, h('div', { class: 'muted', text: label }), value, h('div', { class: 'bar' }, fill));
  return {
    el,
    set(raw, text, pct) {
      value.textContent = raw === null || raw === undefined ? '—' : text;
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

// The create form: every field of seed 003 (identity and persona, provider
// and model, memory, API key, Telegram/Discord/Slack). The API is the one
// judge of validity (the form has `novalidate`): its 422/409 answers name
// the field, and the message is shown under that field, which gets focus.
// On 202 the agent's page opens and shows the deploy's progress live.

import { api } from './api.js';
import { h, append, field, setFieldError, busy } from './dom.js';

const PROVIDERS = ['openrouter', 'openai', 'anthropic', 'ollama', 'groq', 'gemini', 'mistral', 'deepseek', 'together'];
const ZONES = ['UTC', 'Europe/London', 'Europe/Paris', 'Europe/Berlin', 'America/New_York', 'America/Chicago',
  'America/Los_Angeles', 'America/Sao_Paulo', 'Asia/Tokyo', 'Asia/Singapore', 'Asia/Kolkata', 'Australia/Sydney'];

function input(attrs) { return h('input', { type: 'text', ...attrs }); }
function select(options, value) {
  return h('select', {}, options.map(([v, label]) => h('option', { value: v, selected: v === value }, label)));
}
function list(text) { return text.split(/[\s,]+/).map((s) => s.trim()).filter(Boolean); }

/** Renders the create page into `main`. */
export function renderCreate(main) {
  const browserZone = Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC';
  const f = {
    name: field('f-name', 'Name', input({ name: 'name', maxlength: 64, autocomplete: 'off' }), 'Shown in the dashboard.'),
    slug: field('f-slug', 'Slug (optional)', input({ name: 'slug', autocomplete: 'off', spellcheck: 'false' }),
      'Lower-case letters, digits and dashes; names the container and the subdomain. Derived from the name when empty.'),
    agentName: field('f-agent-name', 'Agent name', input({ name: 'agentName' }), 'The persona\'s name (IDENTITY.md). Defaults to the name.'),
    userName: field('f-user-name', 'Your name', input({ name: 'userName', autocomplete: 'name' }), 'How the agent addresses you (USER.md).'),
    timezone: field('f-timezone', 'Timezone', input({ name: 'timezone', list: 'f-zones', value: browserZone }), 'An IANA zone such as Europe/Paris.'),
    communicationStyle: field('f-style', 'Communication style', h('textarea', { name: 'communicationStyle', rows: 3 }),
      'How the agent talks (SOUL.md), e.g. "brief and friendly".'),
    provider: field('f-provider', 'Provider', select([...PROVIDERS.map((p) => [p, p]), ['custom', 'custom (OpenAI-compatible URL)']], 'openrouter')),
    customUrl: field('f-custom-url', 'Custom provider URL', input({ type: 'url', name: 'customUrl', placeholder: 'https://llm.example.com/v1' }),
      'Sent as provider "custom:<url>".'),
    providerUrl: field('f-provider-url', 'Provider base URL override (optional)', input({ type: 'url', name: 'providerUrl' })),
    model: field('f-model', 'Model', input({ name: 'model', placeholder: 'anthropic/claude-sonnet-4' })),
    temperature: field('f-temperature', 'Temperature', input({ type: 'number', name: 'temperature', step: '0.1', value: '0.7', inputmode: 'decimal' }),
      '0 to 2.'),
    apiKey: field('f-api-key', 'API key', input({ type: 'password', name: 'apiKey', autocomplete: 'off' }),
      'Stored encrypted; shown masked afterwards.'),
    memoryBackend: field('f-memory', 'Memory backend', select([['sqlite', 'sqlite'], ['markdown', 'markdown'], ['none', 'none']], 'sqlite')),
    autoSave: field('f-auto-save', 'Save memories automatically', h('input', { type: 'checkbox', name: 'autoSave', checked: true })),
    'channels.telegram.botToken': field('f-tg-token', 'Telegram bot token', input({ type: 'password', autocomplete: 'off' })),
    'channels.telegram.allowedUsers': field('f-tg-users', 'Telegram allowed users', input({}), 'Comma-separated usernames or numeric ids; * allows everyone.'),
    'channels.discord.botToken': field('f-dc-token', 'Discord bot token', input({ type: 'password', autocomplete: 'off' })),
    'channels.discord.guildId': field('f-dc-guild', 'Discord guild id (optional)', input({ inputmode: 'numeric' })),
    'channels.discord.allowedUsers': field('f-dc-users', 'Discord allowed users', input({ inputmode: 'numeric' }), 'Comma-separated user ids; * allows everyone.'),
    'channels.slack.botToken': field('f-sl-token', 'Slack bot token', input({ type: 'password', autocomplete: 'off' })),
    'channels.slack.appToken': field('f-sl-app', 'Slack app token (optional)', input({ type: 'password', autocomplete: 'off' }), 'For Socket Mode.'),
    'channels.slack.channelId': field('f-sl-channel', 'Slack channel id (optional)', input({})),
    'channels.slack.allowedUsers': field('f-sl-users', 'Slack allowed users', input({}), 'Comma-separated member ids (U…); * allows everyone.'),
  };
  const zones = h('datalist', { id: 'f-zones' }, ZONES.map((z) => h('option', { value: z })));
  const showCustom = () => f.customUrl.el.classList.toggle('hidden', f.provider.input.value !== 'custom');
  f.provider.input.addEventListener('change', showCustom);
  showCustom();

  const summary = h('p', { class: 'form-error hidden', role: 'alert', id: 'create-error' });
  const submit = h('button', { type: 'submit', id: 'create-submit' }, 'Create agent');
  const channel = (title, keys) => h('details', {}, h('summary', { text: title }), keys.map((k) => f[k].el));
  const form = h('form', { class: 'stack', novalidate: true, id: 'create-form', 'aria-labelledby': 'create-title' },
    summary,
    h('fieldset', {}, h('legend', { text: 'Identity' }),
      h('div', { class: 'pair' }, f.name.el, f.slug.el),
      h('div', { class: 'pair' }, f.agentName.el, f.userName.el),
      f.timezone.el, zones, f.communicationStyle.el),
    h('fieldset', {}, h('legend', { text: 'Model' }),
      h('div', { class: 'pair' }, f.provider.el, f.model.el),
      f.customUrl.el, f.providerUrl.el,
      h('div', { class: 'pair' }, f.temperature.el, f.apiKey.el)),
    h('fieldset', {}, h('legend', { text: 'Memory' }), f.memoryBackend.el, f.autoSave.el),
    h('fieldset', {}, h('legend', { text: 'Channels (optional)' }),
      channel('Telegram', ['channels.telegram.botToken', 'channels.telegram.allowedUsers']),
      channel('Discord', ['channels.discord.botToken', 'channels.discord.guildId', 'channels.discord.allowedUsers']),
      channel('Slack', ['channels.slack.botToken', 'channels.slack.appToken', 'channels.slack.channelId', 'channels.slack.allowedUsers'])),
    h('div', { class: 'row' }, submit, h('a', { href: '#/agents', class: 'button secondary' }, 'Cancel')));

  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    Object.values(f).forEach((x) => setFieldError(x, ''));
    summary.classList.add('hidden');
    const done = busy(submit, 'Creating…');
    try {
      const agent = await api('POST', '/api/agents', body(f));
      location.hash = `#/agents/${encodeURIComponent(agent.id)}`;
    } catch (e) {
      done();
      showError(f, summary, e);
    }
  });

  append(main, h('h1', { id: 'create-title', text: 'New agent' }), h('section', { class: 'panel narrow' }, form));
  f.name.input.focus();
  return null;
}

/** The request body from the form (optional fields only when filled). */
function body(f) {
  const v = (k) => f[k].input.value.trim();
  const out = { name: v('name'), model: v('model') };
  out.provider = f.provider.input.value === 'custom' ? `custom:${v('customUrl')}` : f.provider.input.value;
  for (const k of ['slug', 'agentName', 'userName', 'timezone', 'communicationStyle', 'providerUrl']) {
    if (v(k)) out[k] = v(k);
  }
  if (v('temperature') !== '') out.temperature = Number(v('temperature'));
  out.memoryBackend = f.memoryBackend.input.value;
  out.autoSave = f.autoSave.input.checked;
  if (f.apiKey.input.value) out.apiKey = f.apiKey.input.value;
  const channels = {};
  const tg = ['channels.telegram.botToken', 'channels.telegram.allowedUsers'];
  if (tg.some(v)) channels.telegram = { botToken: v(tg[0]), allowedUsers: list(v(tg[1])) };
  const dc = ['channels.discord.botToken', 'channels.discord.guildId', 'channels.discord.allowedUsers'];
  if (dc.some(v)) {
    channels.discord = { botToken: v(dc[0]), allowedUsers: list(v(dc[2])) };
    if (v(dc[1])) channels.discord.guildId = v(dc[1]);
  }
  const sl = ['channels.slack.botToken', 'channels.slack.appToken', 'channels.slack.channelId', 'channels.slack.allowedUsers'];
  if (sl.some(v)) {
    channels.slack = { botToken: v(sl[0]), allowedUsers: list(v(sl[3])) };
    if (v(sl[1])) channels.slack.appToken = v(sl[1]);
    if (v(sl[2])) channels.slack.channelId = v(sl[2]);
  }
  if (Object.keys(channels).length) out.channels = channels;
  return out;
}

/** Shows an API error under its field (opening its <details>), or above the form. */
function showError(f, summary, e) {
  let target = e.field ? f[e.field] : null;
  if (e.field === 'provider' && f.provider.input.value === 'custom') target = f.customUrl;
  if (!target && e.field && e.field.startsWith('channels.')) {
    const prefix = e.field.split('.').slice(0, 2).join('.');
    target = f[Object.keys(f).find((k) => k.startsWith(prefix))];
  }
  summary.textContent = target ? `Please fix the highlighted field: ${e.message}` : e.message;
  summary.classList.remove('hidden');
  if (target) {
    setFieldError(target, e.message);
    const details = target.el.closest('details');
    if (details) details.open = true;
    target.input.focus();
  }
}

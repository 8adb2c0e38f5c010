// DOM helpers. Every piece of text from the API goes through textContent
// (text nodes), never innerHTML: agent names, reasons, log lines and replies
// are user- or agent-controlled.

/**
 * Creates an element. `attrs`: `class`, `text` (textContent), `on<event>`
 * handlers, boolean attributes (true/false), anything else via setAttribute.
 * `children`: nodes or strings (added as text nodes); null/false skipped.
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === 'class') el.className = value;
    else if (key === 'text') el.textContent = String(value);
    else if (key.startsWith('on') && typeof value === 'function') el.addEventListener(key.slice(2), value);
    else if (value === true) el.setAttribute(key, '');
    else el.setAttribute(key, String(value));
  }
  append(el, ...children);
  return el;
}

/** Appends nodes or strings (as text) to `el`. */
export function append(el, ...children) {
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** Removes every child of `el`. */
export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

/** A status badge (`RUNNING`, `ERROR`, …). */
export function badge(status) {
  const b = h('span', { class: `badge ${status || ''}`, text: status || '—' });
  b.dataset.status = status || '';
  return b;
}

/** Sets a badge's status in place. */
export function setBadge(el, status) {
  el.className = `badge ${status}`;
  el.textContent = status;
  el.dataset.status = status;
}

/** Local time of an ISO timestamp: `14:03:22` today, else date and time. */
export function time(iso) {
  if (!iso) return '—';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  const today = new Date().toDateString() === d.toDateString();
  return today ? d.toLocaleTimeString() : d.toLocaleString();
}

/** A `<time>` element for an ISO timestamp. */
export function timeEl(iso) {
  return h('time', { datetime: iso || '', text: time(iso) });
}

let toastTimer = null;

/** Shows a short message at the bottom of the screen (announced politely). */
export function toast(message) {
  const el = document.getElementById('toast');
  if (!el) return;
  el.textContent = message;
  el.classList.add('show');
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => el.classList.remove('show'), 4000);
}

/** A labelled form field: { el, input, error }. */
export function field(id, label, input, hint) {
  input.id = id;
  const error = h('div', { class: 'field-error', id: `${id}-error`, 'aria-live': 'polite' });
  const hintEl = hint ? h('div', { class: 'hint', id: `${id}-hint`, text: hint }) : null;
  input.setAttribute('aria-describedby', [hintEl ? hintEl.id : null, error.id].filter(Boolean).join(' '));
  const wrap = h('div', { class: input.type === 'checkbox' ? 'field check' : 'field' },
    input.type === 'checkbox' ? [input, h('label', { for: id, text: label })] : [h('label', { for: id, text: label }), input],
    hintEl, error);
  return { el: wrap, input, error };
}

/** Marks a field invalid with `message`, or clears it (message empty). */
export function setFieldError(f, message) {
  f.error.textContent = message || '';
  f.el.classList.toggle('invalid', Boolean(message));
  if (message) f.input.setAttribute('aria-invalid', 'true');
  else f.input.removeAttribute('aria-invalid');
}

/** Marks a button busy (disabled, spinner, label) until the returned fn runs. */
export function busy(button, label) {
  const before = button.textContent;
  button.disabled = true;
  button.classList.add('busy');
  if (label) button.textContent = label;
  return () => {
    button.disabled = false;
    button.classList.remove('busy');
    button.textContent = before;
  };
}

/**
 * One small badge per configured channel (`telegram ok`, `slack error`),
 * from an agent's `channelHealth`; the last error is the badge's tooltip.
 * Empty when the agent has no channels.
 */
export function channelBadges(health) {
  const el = h('span', { class: 'channels' });
  for (const [name, c] of Object.entries(health || {})) {
    const b = h('span', { class: `badge ch ch-${c.status}`, text: `${name} ${c.status}` });
    b.dataset.channel = name;
    if (c.lastError) b.title = `${c.lastError} (restarts: ${c.restartCount})`;
    el.append(b);
  }
  return el;
}

/**
 * Copies `text` to the clipboard. The Clipboard API needs a secure context
 * (HTTPS or localhost); elsewhere `fallback` (the element showing the text:
 * an input, or any element whose contents are selected) is selected and
 * copied the old way. Resolves with whether the copy worked.
 */
export async function copyText(text, fallback) {
  if (navigator.clipboard && window.isSecureContext) {
    try {
      await navigator.clipboard.writeText(text);
      return true;
    } catch (e) { /* refused: try the fallback */ }
  }
  if (!fallback) return false;
  if (typeof fallback.select === 'function') {
    fallback.focus();
    fallback.select();
  } else {
    const range = document.createRange();
    range.selectNodeContents(fallback);
    const sel = window.getSelection();
    sel.removeAllRanges();
    sel.addRange(range);
  }
  try { return document.execCommand('copy'); } catch (e) { return false; }
}

/**
 * A read-only, copyable value with its Copy button: `{ el, value, button }`.
 * `multiline` shows it as a wrapped block (commands, read with
 * textContent), else as a one-line read-only input (tokens, read with
 * `value`). The text is never parsed as markup.
 */
export function copyable(id, text, label, multiline = false) {
  let value;
  if (multiline) {
    value = h('pre', { id, class: 'snippet', tabindex: '0', 'aria-label': label, text });
  } else {
    value = h('input', { id, type: 'text', class: 'mono', readonly: true, spellcheck: 'false', autocomplete: 'off', 'aria-label': label });
    value.value = text;
    value.addEventListener('focus', () => value.select());
  }
  const button = h('button', { type: 'button', class: 'secondary', id: `${id}-copy` }, 'Copy');
  button.addEventListener('click', async () => {
    const ok = await copyText(text, value);
    toast(ok ? 'Copied to the clipboard' : 'Select the text and copy it (Ctrl+C)');
  });
  return { el: h('div', { class: 'copyable' }, value, button), value, button };
}

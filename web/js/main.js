// The dashboard's entry point: hash routing between the pages, the
// navigation bar, and cleanup of a page's streams and timers on leaving it.
//
// Routes: #/login, #/signup, #/agents, #/new, #/agents/<id>, #/admin.

import { token, setToken, currentUser, refreshUser } from './api.js';
import { h, clear, append } from './dom.js';
import { renderAuth } from './auth.js';
import { renderAgents } from './agents.js';
import { renderCreate } from './create.js';
import { renderAgent } from './agent.js';
import { renderAdmin } from './admin.js';

const main = document.getElementById('main');
const nav = document.getElementById('nav');
let cleanup = null;

function parse(hash) {
  const parts = hash.replace(/^#\/?/, '').split('/').filter(Boolean);
  if (parts[0] === 'agents' && parts[1]) return { page: 'agent', id: decodeURIComponent(parts[1]) };
  return { page: parts[0] || 'agents' };
}

async function renderNav(route) {
  clear(nav);
  if (!token()) {
    append(nav,
      link('#/login', 'Log in', route.page === 'login'),
      link('#/signup', 'Sign up', route.page === 'signup'));
    return;
  }
  let user = null;
  try { user = await currentUser(); } catch (e) { /* shown by the page */ }
  clear(nav);
  append(nav,
    link('#/agents', 'My agents', route.page === 'agents' || route.page === 'agent'),
    link('#/new', 'New agent', route.page === 'new'),
    user && user.role === 'admin' ? link('#/admin', 'Admin', route.page === 'admin') : null,
    user ? h('span', { class: 'who', text: user.email, title: user.email }) : null,
    h('button', {
      class: 'secondary', type: 'button', id: 'logout',
      onclick: () => { setToken(null); location.hash = '#/login'; },
    }, 'Log out'));
}

function link(href, text, current) {
  return h('a', { href, 'aria-current': current ? 'page' : false }, text);
}

async function route() {
  if (cleanup) {
    try { cleanup(); } catch (e) { /* a page's cleanup must not block the next */ }
    cleanup = null;
  }
  const r = parse(location.hash);
  const open = r.page === 'login' || r.page === 'signup';
  if (!token() && !open) {
    location.hash = '#/login';
    return;
  }
  if (token() && open) {
    location.hash = '#/agents';
    return;
  }
  // A role change (promotion to admin) shows at the next navigation.
  if (!open) refreshUser();
  renderNav(r);
  clear(main);
  window.scrollTo(0, 0);
  const pages = {
    login: () => renderAuth(main, 'login'),
    signup: () => renderAuth(main, 'signup'),
    agents: () => renderAgents(main),
    new: () => renderCreate(main),
    agent: () => renderAgent(main, r.id),
    admin: () => renderAdmin(main),
  };
  const render = pages[r.page];
  if (!render) {
    append(main, h('h1', { text: 'Not found' }), h('p', {}, h('a', { href: '#/agents' }, 'Back to my agents')));
    return;
  }
  document.title = `zcaas · ${r.page}`;
  cleanup = render() || null;
  main.focus({ preventScroll: true });
}

window.addEventListener('hashchange', route);
route();

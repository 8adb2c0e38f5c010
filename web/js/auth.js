// Sign up and log in: one form, two modes. Errors from the API are shown
// inline under the field they name (`email`, `password`) or above the form.

import { api, setToken } from './api.js';
import { h, append, field, setFieldError, busy } from './dom.js';

/** Renders the login (`mode` 'login') or sign-up ('signup') page into `main`. */
export function renderAuth(main, mode) {
  const signup = mode === 'signup';
  const email = field('auth-email', 'Email', h('input', { type: 'email', name: 'email', autocomplete: 'email', required: true }));
  const password = field('auth-password', 'Password',
    h('input', { type: 'password', name: 'password', autocomplete: signup ? 'new-password' : 'current-password', required: true }),
    signup ? '8 to 128 characters.' : null);
  const formError = h('p', { class: 'form-error hidden', role: 'alert', id: 'auth-error' });
  const submit = h('button', { type: 'submit', id: 'auth-submit' }, signup ? 'Create account' : 'Log in');
  const fields = { email, password };

  const form = h('form', { class: 'stack', novalidate: true, 'aria-labelledby': 'auth-title' },
    formError, email.el, password.el, h('div', { class: 'row' }, submit));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    Object.values(fields).forEach((f) => setFieldError(f, ''));
    formError.classList.add('hidden');
    const done = busy(submit, signup ? 'Creating account…' : 'Logging in…');
    try {
      const body = { email: email.input.value.trim(), password: password.input.value };
      const reply = await api('POST', signup ? '/api/auth/register' : '/api/auth/login', body);
      setToken(reply.token);
      location.hash = '#/agents';
    } catch (e) {
      done();
      const f = fields[e.field];
      if (f) {
        setFieldError(f, e.message);
        f.input.focus();
      } else {
        formError.textContent = e.message;
        formError.classList.remove('hidden');
      }
    }
  });

  append(main, h('section', { class: 'panel auth' },
    h('h1', { id: 'auth-title', text: signup ? 'Create your account' : 'Log in to zcaas' }),
    form,
    h('p', { class: 'muted' }, signup ? 'Already have an account? ' : 'New here? ',
      h('a', { href: signup ? '#/login' : '#/signup', id: 'auth-switch' }, signup ? 'Log in' : 'Sign up'))));
  email.input.focus();
  return null;
}

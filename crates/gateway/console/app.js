// The console's entry point: sign-in by API token (checked against GET /v2/account at once),
// sign-out, and the hash router (#/clusters, #/clusters/{id}/{tab}, #/audit) that renders pages
// without reloading. The token never appears in the URL.

import { currentAccount, signIn, signOut } from './api.js';
import { alertBox, clear, h } from './dom.js';
import { auditPage, clusterPage, clustersPage } from './pages.js';

const main = document.getElementById('main');
const nav = document.getElementById('nav');
const who = document.getElementById('who');
const signOutButton = document.getElementById('sign-out');
/** Bumped on every navigation: pages refresh themselves only while their view is current. */
let view = 0;

function signInPage(reason) {
  view += 1;
  nav.hidden = true;
  signOutButton.hidden = true;
  who.textContent = '';
  const error = alertBox();
  const input = h('input', { id: 'token', name: 'token', type: 'password', autocomplete: 'off', spellcheck: 'false', required: true });
  const button = h('button', { type: 'submit', class: 'primary' }, 'Sign in');
  const form = h('form', { class: 'sign-in', id: 'sign-in' },
    h('h1', { tabindex: -1 }, 'Sign in to pgplane'),
    h('p', {}, 'Paste an API token (issued with `pgplane token create`). It is checked against the API now and kept only until this browser tab\'s session ends or you sign out.'),
    h('label', { for: 'token' }, 'API token'), input, button, error);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const candidate = input.value.trim();
    if (!candidate) return;
    button.disabled = true;
    error.show(null);
    try {
      await signIn(candidate);
      input.value = '';
      if (!location.hash || location.hash === '#/') location.hash = '#/clusters';
      else route();
    } catch (e) {
      error.show(e.status === 401
        ? new Error('That token was not accepted: it is wrong, expired or revoked.')
        : e);
    } finally {
      button.disabled = false;
    }
  });
  clear(main, form);
  if (reason) error.show(reason);
  input.focus();
}

async function route() {
  view += 1;
  const mine = view;
  const alive = () => mine === view;
  let account;
  try {
    account = await currentAccount();
  } catch (e) {
    if (e.status === 401) signOut();
    signInPage(e);
    return;
  }
  if (!account) {
    signInPage();
    return;
  }
  nav.hidden = false;
  signOutButton.hidden = false;
  const scopes = account.pgplane.scopes.includes('*') ? 'full access' : account.pgplane.scopes.join(', ');
  who.textContent = `Token ${account.pgplane.token_id} (${scopes})`;
  const parts = location.hash.replace(/^#\/?/, '').split('/').map(decodeURIComponent);
  for (const link of nav.querySelectorAll('a')) {
    link.toggleAttribute('aria-current', link.getAttribute('href') === `#/${parts[0] || 'clusters'}`);
  }
  try {
    if (parts[0] === 'audit') await auditPage(main, alive);
    else if (parts[0] === 'clusters' && parts[1]) await clusterPage(main, alive, parts[1], parts[2] || 'overview');
    else await clustersPage(main, alive);
  } catch (e) {
    clear(main, alertBox()).firstChild.show(e);
  }
  const heading = main.querySelector('h1');
  if (heading && alive() && document.activeElement === document.body) heading.focus();
}

signOutButton.addEventListener('click', () => {
  signOut();
  history.replaceState(null, '', '#/');
  signInPage();
});
window.addEventListener('hashchange', route);
route();

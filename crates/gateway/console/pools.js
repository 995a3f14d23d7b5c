// The cluster's Connection pools tab: its pools (mode, size, database, user, and whether the
// pooler beside its server runs them yet), a form to add one, the connection string of the pool
// picked (its password masked until shown) and Delete, confirmed by typing the pool's name.
// Everything goes through /v2/databases/{id}/pools; the API says when no pooler serves the
// cluster's server or its connections would not suffice, and the form shows it.

import { api, can, CREATE, CREDENTIALS, DELETE, path } from './api.js';
import { maskedUri } from './connection.js';
import { addForm, alertBox, clear, confirmDialog, copyButton, h, moreMenu, status, table } from './dom.js';
import { keepFresh, loadInto } from './refresh.js';

const MODES = ['transaction', 'session', 'statement'];

/** A labelled control of the add form. */
function field(label, control) {
  return h('span', { class: 'field' }, h('label', { for: control.id }, label), control);
}

export function poolsTab(body, alive, cluster) {
  const id = cluster.id;
  const errors = alertBox();
  const listBox = h('div', { id: 'pools' }, h('p', { class: 'loading' }, 'Loading pools…'));
  const connectBox = h('div', { id: 'pool-connection' });
  const seesPasswords = can(CREDENTIALS);
  let pools = [];
  /** The pool whose connection string is shown, and whether its password is. */
  let picked = null;
  let shown = false;

  const pick = h('select', { id: 'pick-pool' });
  const reveal = h('button', { type: 'button', id: 'show-pool-password', class: 'secondary', 'aria-pressed': 'false' }, 'Show password');
  const pickers = h('div', { class: 'pickers' }, h('label', { for: 'pick-pool' }, 'Pool'), pick, seesPasswords ? reveal : null);

  function renderConnection() {
    const pool = pools.find((p) => p.name === picked);
    pickers.hidden = !pool;
    if (!pool) {
      clear(connectBox, h('p', { class: 'empty' }, 'No pool yet: add one above.'));
      return;
    }
    const c = pool.connection;
    reveal.hidden = !c.password;
    reveal.textContent = shown ? 'Hide password' : 'Show password';
    reveal.setAttribute('aria-pressed', String(shown));
    const who = pool.user
      ? `Clients connect as ${c.user} with its password, whatever user they name.`
      : 'Each client logs in as itself: put a user of the cluster and its password in the string.';
    clear(connectBox,
      h('section', { class: 'shape', 'data-shape': 'pool-uri', 'data-pool-uri': pool.name },
        h('h3', {}, 'Connection string'),
        h('pre', {}, h('code', {}, shown ? c.uri : maskedUri(c.uri))), copyButton(() => c.uri)),
      h('p', { class: 'muted' }, `The pool's database is its name, ${pool.name}; it leads to the database ${pool.db}. ${who}`),
      pool.status === 'ready' ? null
        : h('p', { class: 'alert' }, `Not served yet (${pool.status}): ${pool.last_error || 'its pooler has not applied it yet.'}`));
  }

  /** Shows `name`'s connection string and moves focus to its picker. */
  function showConnection(name) {
    picked = name;
    shown = false;
    pick.value = name;
    renderConnection();
    pick.focus();
  }

  function deletePool(pool) {
    confirmDialog({
      title: `Delete the pool ${pool.name}?`,
      message: [`Clients connected through ${pool.name} are disconnected and its connection string stops working. The database ${pool.db} and its data are not touched.`],
      confirmLabel: 'Delete pool',
      danger: true,
      typeToConfirm: pool.name,
      action: () => api('DELETE', path('databases', id, 'pools', pool.name)),
      done: async () => {
        await refresh();
        // The row is gone: keyboard focus goes to the add field, when there is one.
        const add = document.getElementById('new-pool');
        if (add && document.activeElement === document.body) add.focus();
      },
    });
  }

  const rows = () => pools.map((p) => {
    const items = [['Connection string', () => showConnection(p.name)]];
    if (can(DELETE)) items.push(['Delete', () => deletePool(p)]);
    return h('tr', { 'data-pool': p.name },
      h('td', { class: 'name' }, p.name),
      h('td', {}, p.mode),
      h('td', { class: 'num' }, String(p.size)),
      h('td', { class: 'name' }, p.db),
      h('td', { class: 'name' }, p.user || h('span', { class: 'muted' }, 'each client\'s own')),
      status(p.status, p.last_error),
      h('td', { class: 'actions' }, moreMenu(p.name, items)));
  });

  const load = async () => {
    ({ pools } = await api('GET', path('databases', id, 'pools')));
    clear(listBox, table('Connection pools', ['Name', 'Mode', 'Size', 'Database', 'User', 'Status', ''], rows(), 'No connection pools yet.'));
    const names = pools.map((p) => p.name);
    if (!names.includes(picked)) picked = names.length ? names[0] : null;
    // Rebuilt only when the pools changed, so that a refresh does not close an open picker.
    if (names.join('\n') !== [...pick.options].map((o) => o.value).join('\n')) {
      clear(pick, names.map((n) => h('option', { value: n }, n)));
    }
    if (picked) pick.value = picked;
    renderConnection();
    return pools.some((p) => p.status === 'pending');
  };
  const refresh = loadInto(load, errors);

  pick.addEventListener('change', () => showConnection(pick.value));
  reveal.addEventListener('click', () => {
    shown = !shown;
    renderConnection();
  });

  let form = null;
  if (can(CREATE)) {
    const mode = h('select', { id: 'new-pool-mode' }, MODES.map((m) => h('option', { value: m }, m)));
    const size = h('input', { id: 'new-pool-size', type: 'number', min: '1', max: '10000', step: '1', value: '10', required: true });
    const db = h('select', { id: 'new-pool-db' },
      cluster.db_names.map((d) => h('option', { value: d, selected: d === cluster.pgplane.default_database }, d)));
    const user = h('select', { id: 'new-pool-user' }, h('option', { value: '' }, 'each client\'s own'),
      cluster.users.filter((u) => u.status !== 'deleting').map((u) => h('option', { value: u.name }, u.name)));
    form = addForm('pool', async (name) => {
      const spec = { name, mode: mode.value, size: Number(size.value), db: db.value };
      if (user.value) spec.user = user.value;
      const { pool } = await api('POST', path('databases', id, 'pools'), spec);
      picked = pool.name;
      shown = false;
      await refresh();
    }, [field('Mode', mode), field('Size', size), field('Database', db), field('User', user)], 'Add new pool');
  }

  clear(body, errors,
    h('section', { 'aria-labelledby': 'pools-h' },
      h('h2', { id: 'pools-h' }, 'Connection pools'),
      h('p', { class: 'muted' }, 'A pool shares a few server connections among many clients (PgBouncer, run by `pgplane pooler` beside the cluster\'s server). Transaction mode lends a connection for each transaction (most applications), session mode for each client\'s session, statement mode for each statement (no transactions of several statements). The size is the most server connections it uses.'),
      form, listBox),
    h('section', { 'aria-labelledby': 'pool-conn-h' },
      h('h2', { id: 'pool-conn-h' }, 'Connect through a pool'), pickers, connectBox));
  return keepFresh(alive, load, errors);
}

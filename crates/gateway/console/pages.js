// The console's pages: clusters, a cluster's Overview, Users & Databases (with each user's
// access levels, settings, expiry and lease, and their editors) and Insights tabs (its Plan,
// Connection pools and Trusted sources tabs live in preview.js, pools.js and sources.js), and
// the team's audit log. Each page reads and writes through the /v2 API only, offers only what
// the token's scopes allow, shows errors where they happened, and refreshes itself while an
// object is not yet ready (no page reloads).

import { api, can, CREATE, CREDENTIALS, DELETE, path, UPDATE } from './api.js';
import { MASK, shapes } from './connection.js';
import { addForm, alertBox, clear, confirmDialog, copyButton, h, moreMenu, secretDialog, status, table, when } from './dom.js';
import { poolsTab } from './pools.js';
import { dependencyPreview, planTab } from './preview.js';
import { keepFresh, loadInto } from './refresh.js';
import { sourcesTab } from './sources.js';

// ---------------------------------------------------------------- clusters

export async function clustersPage(main, alive) {
  const errors = alertBox();
  const list = h('div', { class: 'list' }, h('p', { class: 'loading' }, 'Loading clusters…'));
  clear(main, h('h1', { tabindex: -1 }, 'Database clusters'), errors, list);
  await keepFresh(alive, async () => {
    const { databases } = await api('GET', '/v2/databases');
    const rows = databases.map((c) => h('tr', { 'data-cluster': c.id },
      h('td', {}, h('a', { href: `#/clusters/${encodeURIComponent(c.id)}/overview` }, c.name)),
      h('td', {}, `PostgreSQL ${c.version}`, h('span', { class: 'muted' }, ` (${c.semantic_version})`)),
      h('td', {}, h('span', { class: `badge ${c.status}` }, c.status)),
      h('td', { class: 'num' }, String(c.users.length)),
      h('td', { class: 'num' }, String(c.db_names.length)),
      h('td', {}, c.tags.map((t) => h('span', { class: 'tag' }, t))),
      h('td', {}, when(c.created_at))));
    clear(list, table('Clusters', ['Name', 'Engine', 'Status', 'Users', 'Databases', 'Tags', 'Created'], rows,
      'No clusters yet. Register one with the API (POST /v2/databases) or `pgplane databases create`.'));
    return false;
  }, errors);
}

// ---------------------------------------------------------------- one cluster

const TABS = [
  ['overview', 'Overview'],
  ['users', 'Users & Databases'],
  ['pools', 'Connection pools'],
  ['sources', 'Trusted sources'],
  ['insights', 'Drift & unmanaged'],
  ['plan', 'Plan'],
];

export async function clusterPage(main, alive, id, tab) {
  const errors = alertBox();
  const body = h('div', {}, h('p', { class: 'loading' }, 'Loading…'));
  const heading = h('h1', { tabindex: -1 }, 'Cluster');
  const nav = h('nav', { class: 'tabs', 'aria-label': 'Cluster' },
    TABS.map(([key, label]) => h('a', {
      href: `#/clusters/${encodeURIComponent(id)}/${key}`,
      'aria-current': key === tab ? 'page' : null,
    }, label)));
  clear(main, h('p', { class: 'crumbs' }, h('a', { href: '#/clusters' }, 'Clusters')), heading, nav, errors, body);
  let cluster;
  try {
    ({ database: cluster } = await api('GET', path('databases', id)));
  } catch (e) {
    clear(body);
    errors.show(e);
    return;
  }
  clear(heading, cluster.name, ' ', h('span', { class: `badge ${cluster.status}` }, cluster.status));
  if (tab === 'users') return usersTab(body, alive, cluster);
  if (tab === 'pools') return poolsTab(body, alive, cluster);
  if (tab === 'sources') return sourcesTab(body, cluster);
  if (tab === 'insights') return insightsTab(body, alive, cluster);
  if (tab === 'plan') return planTab(body, cluster);
  return overviewTab(body, cluster);
}

// ---------------------------------------------------------------- overview

function overviewTab(body, cluster) {
  const seesPasswords = can(CREDENTIALS);
  const users = cluster.users.filter((u) => u.status !== 'deleting');
  const userPick = h('select', { id: 'pick-user' },
    users.map((u) => h('option', { value: u.name, selected: u.name === cluster.connection.user }, u.name)));
  const dbPick = h('select', { id: 'pick-db' },
    cluster.db_names.map((d) => h('option', { value: d, selected: d === cluster.connection.database }, d)));
  let shown = false;
  const reveal = h('button', { type: 'button', id: 'show-password', class: 'secondary', 'aria-pressed': 'false' }, 'Show password');
  const details = h('div', { class: 'connection' });

  const current = () => {
    const user = users.find((u) => u.name === userPick.value);
    return {
      host: cluster.connection.host,
      port: cluster.connection.port,
      user: userPick.value,
      password: seesPasswords && user && user.password ? user.password : null,
      database: dbPick.value,
      sslmode: cluster.pgplane.sslmode,
    };
  };
  const field = (label, shownValue, copyValue, key) => h('div', { class: 'field', 'data-field': key },
    h('dt', {}, label),
    h('dd', {}, h('code', {}, shownValue), ' ', copyButton(copyValue)));
  const render = () => {
    const c = current();
    const view = shapes(c, !shown);
    const full = shapes(c, false);
    const params = [
      field('host', c.host, () => c.host, 'host'),
      field('port', String(c.port), () => String(c.port), 'port'),
      field('user', c.user, () => c.user, 'user'),
      c.password == null ? null : field('password', shown ? c.password : MASK, () => c.password, 'password'),
      field('database', c.database, () => c.database, 'database'),
      field('sslmode', c.sslmode, () => c.sslmode, 'sslmode'),
    ];
    clear(details,
      h('section', { 'aria-labelledby': 'params-h' }, h('h3', { id: 'params-h' }, 'Connection parameters'), h('dl', { class: 'params' }, params)));
    for (const [key, label] of [['uri', 'Connection string'], ['psql', 'psql'], ['jdbc', 'JDBC URL']]) {
      details.append(h('section', { class: 'shape', 'data-shape': key },
        h('h3', {}, label), h('pre', {}, h('code', {}, view[key])), copyButton(() => full[key])));
    }
  };
  reveal.addEventListener('click', () => {
    shown = !shown;
    reveal.textContent = shown ? 'Hide password' : 'Show password';
    reveal.setAttribute('aria-pressed', String(shown));
    render();
  });
  userPick.addEventListener('change', render);
  dbPick.addEventListener('change', render);
  clear(body,
    h('section', { 'aria-labelledby': 'conn-h' },
      h('h2', { id: 'conn-h' }, 'Connection details'),
      h('div', { class: 'pickers' },
        h('label', { for: 'pick-user' }, 'User'), userPick,
        h('label', { for: 'pick-db' }, 'Database'), dbPick,
        seesPasswords ? reveal : h('span', { class: 'muted', id: 'no-credentials' }, 'Your token cannot view credentials: passwords are not shown.')),
      details),
    h('section', { 'aria-labelledby': 'about-h' },
      h('h2', { id: 'about-h' }, 'About this cluster'),
      h('dl', { class: 'params' },
        [['Engine', `PostgreSQL ${cluster.semantic_version}`], ['Primary user', cluster.pgplane.primary_user],
          ['Default database', cluster.pgplane.default_database], ['Created', when(cluster.created_at)],
          ['Last reconciled', when(cluster.pgplane.last_reconciled_at) || 'not yet'],
          ['Tags', cluster.tags.join(', ') || 'none']]
          .map(([k, v]) => h('div', { class: 'field' }, h('dt', {}, k), h('dd', {}, v)))),
      cluster.pgplane.last_error ? h('p', { class: 'alert' }, `Last reconcile error: ${cluster.pgplane.last_error}`) : null));
  render();
}

// ---------------------------------------------------------------- users & databases

/** The access levels the console offers, with their labels. */
const LEVELS = [['none', 'No access'], ['read_only', 'Read only'], ['read_write', 'Read write']];

/** A user's access levels, one per database ("owner" for the primary user). */
function accessCell(primary, access) {
  if (primary) return h('td', { class: 'access' }, h('span', { class: 'muted' }, 'owner of every database'));
  if (access.length === 0) return h('td', { class: 'access' }, h('span', { class: 'muted' }, 'none'));
  const label = (level) => (LEVELS.find(([v]) => v === level) || [level, level])[1].toLowerCase();
  return h('td', { class: 'access' }, h('ul', { class: 'levels' }, access.map((e) =>
    h('li', { 'data-access-db': e.database, 'data-level': e.level }, h('span', { class: 'name' }, e.database), `: ${label(e.level)}`))));
}

/** The session parameters a user may have, as the API accepts them, with a hint of their values. */
const PARAMETERS = [
  ['statement_timeout', 'a time: 30s, 500ms, 5min'],
  ['lock_timeout', 'a time: 5s'],
  ['idle_in_transaction_session_timeout', 'a time: 1min'],
  ['idle_session_timeout', 'a time: 1h'],
  ['work_mem', 'memory: 64MB'],
  ['search_path', 'schemas: "$user", public'],
  ['default_transaction_read_only', 'on or off'],
];

/** Lifetimes offered for a lease (a user deleted at its end unless renewed), as the API takes them. */
const LIFETIMES = [['', 'permanent user'], ['15m', 'lease: 15 minutes'], ['1h', 'lease: 1 hour'],
  ['8h', 'lease: 8 hours'], ['1d', 'lease: 1 day'], ['7d', 'lease: 7 days']];

/** Graces offered for a password reset: how long the old password keeps working. */
const GRACES = [['', 'no: it stops at once'], ['10m', 'for 10 minutes'], ['1h', 'for 1 hour'], ['1d', 'for 1 day']];

/** A lease's lifetime in words (`3600` → `1h`). */
function lifetime(seconds) {
  for (const [unit, size] of [['d', 86400], ['h', 3600], ['m', 60]]) {
    if (seconds % size === 0) return `${seconds / size}${unit}`;
  }
  return `${seconds}s`;
}

/** A moment as a `datetime-local` input shows it (the browser's time zone, to the minute). */
function localInput(iso) {
  if (!iso) return '';
  const t = new Date(iso);
  return new Date(t.getTime() - t.getTimezoneOffset() * 60000).toISOString().slice(0, 16);
}

/** A user's connection limit, parameters, expiry, lease and rotation grace ("default" when it
 * has none). */
function settingsCell(settings, lease, grace) {
  const limit = settings && settings.connection_limit;
  const params = (settings && settings.parameters) || [];
  const until = settings && settings.valid_until;
  if ((limit == null || limit < 0) && params.length === 0 && !until && !grace) {
    return h('td', { class: 'settings' }, h('span', { class: 'muted' }, 'default'));
  }
  const past = until && new Date(until) <= new Date();
  return h('td', { class: 'settings' }, h('ul', { class: 'levels' },
    grace ? h('li', { 'data-grace': grace.login }, `old password works as ${grace.login} until ${when(grace.until)}`) : null,
    until ? h('li', { 'data-valid-until': until, title: until },
      lease ? `lease (${lifetime(lease.ttl_seconds)}), ${past ? 'ended' : 'ends'} ${when(until)}` : `${past ? 'expired' : 'expires'} ${when(until)}`) : null,
    limit != null && limit >= 0 ? h('li', { 'data-limit': limit }, `at most ${limit} connections`) : null,
    params.map((p) => h('li', { 'data-parameter': p.name, 'data-parameter-db': p.database || '' },
      h('code', {}, `${p.name} = ${p.value}`), p.database ? h('span', { class: 'muted' }, ` in ${p.database}`) : null))));
}

/** A password cell: hidden until shown; `revealed` (names) keeps the choice across refreshes. */
function passwordCell(name, password, revealed) {
  if (password == null) return h('td', { class: 'muted' }, '—');
  const code = h('code', { class: 'password' });
  const toggle = h('button', { type: 'button', class: 'link show-password' });
  const paint = () => {
    const showing = revealed.has(name);
    code.textContent = showing ? password : MASK;
    toggle.textContent = showing ? 'hide' : 'show';
    toggle.setAttribute('aria-pressed', String(showing));
  };
  toggle.addEventListener('click', () => {
    if (revealed.has(name)) revealed.delete(name);
    else revealed.add(name);
    paint();
  });
  paint();
  return h('td', {}, code, ' ', toggle, ' ', copyButton(() => password));
}

function usersTab(body, alive, cluster) {
  const id = cluster.id;
  const errors = alertBox();
  const usersBox = h('div', { id: 'users' });
  const dbsBox = h('div', { id: 'dbs' });
  const actionErrors = alertBox();
  const seesPasswords = can(CREDENTIALS);
  /** Users whose password is shown. */
  const revealed = new Set();
  let refresh = async () => false;

  /** The databases as last loaded (the access editor offers them). */
  let databases = [];
  const userRows = (users) => users.map((u) => {
    const primary = u.role === 'primary' || u.name === cluster.pgplane.primary_user;
    const items = [];
    if (!primary && u.status !== 'deleting') {
      if (can(UPDATE)) items.push(['Reset password', () => resetPassword(u.name)]);
      if (can(DELETE)) items.push(['Delete', () => deleteObject('user', u.name, users)]);
      if (can(UPDATE)) items.push(['Edit access', () => editAccess(u.name)]);
      if (u.lease && can(UPDATE)) items.push(['Renew lease', () => renewLease(u)]);
    }
    if (u.status !== 'deleting' && can(UPDATE)) items.push(['Edit settings', () => editSettings(u)]);
    return h('tr', { 'data-user': u.name },
      h('td', { class: 'name' }, u.name,
        u.login ? h('span', { class: 'muted', 'data-login': u.login }, ` (logs in as ${u.login})`) : null),
      h('td', {}, primary ? 'primary' : 'normal'),
      accessCell(primary, u.access || []),
      settingsCell(u.settings, u.lease, u.grace),
      status(u.status, u.last_error),
      seesPasswords ? passwordCell(u.name, u.password, revealed) : null,
      h('td', { class: 'actions' }, items.length ? moreMenu(u.name, items) : null));
  });
  const dbRows = (dbs) => dbs.map((d) => {
    const isDefault = d.name === cluster.pgplane.default_database;
    const items = !isDefault && d.status !== 'deleting' && can(DELETE) ? [['Delete', () => deleteObject('database', d.name)]] : [];
    return h('tr', { 'data-db': d.name },
      h('td', { class: 'name' }, d.name, isDefault ? h('span', { class: 'muted' }, ' (default)') : null),
      status(d.status, d.last_error),
      h('td', { class: 'actions' }, items.length ? moreMenu(d.name, items) : null));
  });

  const load = async () => {
    const [{ users }, { dbs }] = await Promise.all([
      api('GET', path('databases', id, 'users')),
      api('GET', path('databases', id, 'dbs')),
    ]);
    databases = dbs.filter((d) => d.status !== 'deleting').map((d) => d.name);
    const userHeads = ['Name', 'Role', 'Access', 'Settings', 'Status', seesPasswords ? 'Password' : null, ''].filter((x) => x !== null);
    clear(usersBox, table('Users', userHeads, userRows(users), 'No users.'));
    clear(dbsBox, table('Databases', ['Name', 'Status', ''], dbRows(dbs), 'No databases.'));
    // An expired user is settled: only its renewal or a new expiry changes it.
    return users.some((u) => u.status !== 'ready' && u.status !== 'expired') || dbs.some((d) => d.status && d.status !== 'ready');
  };
  refresh = loadInto(load, errors);

  /** The access editor: one level per database (none, read only, read write), saved as a whole. */
  async function editAccess(name) {
    actionErrors.show(null);
    let current;
    try {
      current = (await api('GET', path('databases', id, 'users', name, 'access'))).access;
    } catch (e) {
      actionErrors.show(e);
      return;
    }
    const picks = databases.map((db, i) => {
      const held = current.find((e) => e.database === db);
      const select = h('select', { id: `access-${i}`, 'data-access-db': db },
        LEVELS.map(([value, label]) => h('option', { value, selected: (held ? held.level : 'none') === value }, label)));
      return h('div', { class: 'field' }, h('label', { for: `access-${i}` }, db), select);
    });
    confirmDialog({
      title: `Access of ${name}`,
      message: ['Pick what the user may do in each database. Read only: read every table and sequence. Read write: also insert, update, delete and truncate rows (no schema changes). Tables the primary user creates later are covered too.'],
      content: h('div', { class: 'access-picks' }, picks.length ? picks : h('p', { class: 'empty' }, 'No databases.')),
      confirmLabel: 'Save access',
      action: () => api('PUT', path('databases', id, 'users', name, 'access'), {
        access: picks.map((p) => p.querySelector('select')).map((s) => ({ database: s.dataset.accessDb, level: s.value }))
          .filter((e) => e.level !== 'none'),
      }),
      done: (answer) => {
        if (answer && answer.status !== 'ready') {
          actionErrors.show(new Error(`The access of ${name} was saved and is not on the server yet: ${answer.last_error || 'pending'}`));
        }
        refresh();
      },
    });
  }

  /** Renewing a lease: its end moves to the lifetime picked (its own by default) from now. */
  function renewLease(user) {
    actionErrors.show(null);
    const own = lifetime(user.lease.ttl_seconds);
    const choices = [[own, `${own} (its lifetime)`], ...LIFETIMES.filter(([v]) => v && v !== own)];
    const pick = h('select', { id: 'renew-ttl' }, choices.map(([value, label]) => h('option', { value }, label.replace('lease: ', ''))));
    confirmDialog({
      title: `Renew the lease ${user.name}?`,
      message: [`The lease ends ${when(user.settings.valid_until)}. Renewed, it ends this long from now, and that becomes its lifetime.`],
      content: h('div', { class: 'field' }, h('label', { for: 'renew-ttl' }, 'Lifetime'), pick),
      confirmLabel: 'Renew lease',
      action: () => api('POST', path('databases', id, 'users', user.name, 'renew'), { ttl: pick.value }),
      done: () => refresh(),
    });
  }

  /** The settings editor: a connection limit, session parameters (each for every database or
   * one) and, for a user that may expire, its expiry; saved as a whole; pg_allow_replication is
   * sent back as it is. */
  function editSettings(user) {
    actionErrors.show(null);
    const settings = user.settings || {};
    const expires = user.role !== 'primary' && !user.lease;
    const until = h('input', { id: 'settings-valid-until', type: 'datetime-local', value: localInput(settings.valid_until) });
    const limit = h('input', {
      id: 'settings-limit', type: 'number', min: '0', step: '1', placeholder: 'no limit',
      value: settings.connection_limit >= 0 ? String(settings.connection_limit) : '',
    });
    const rows = h('div', { class: 'parameter-rows' });
    const addRow = (p = { name: PARAMETERS[0][0], value: '' }) => {
      const n = rows.children.length;
      const name = h('select', { 'aria-label': 'Parameter', 'data-field': 'name', id: `param-name-${n}` },
        PARAMETERS.map(([value]) => h('option', { value, selected: value === p.name }, value)));
      const value = h('input', { type: 'text', 'aria-label': 'Value', 'data-field': 'value', value: p.value });
      const hint = () => { value.placeholder = (PARAMETERS.find(([v]) => v === name.value) || ['', ''])[1]; };
      name.addEventListener('change', hint);
      hint();
      const where = h('select', { 'aria-label': 'Database', 'data-field': 'database' },
        h('option', { value: '', selected: !p.database }, 'every database'),
        databases.map((db) => h('option', { value: db, selected: db === p.database }, db)));
      const line = h('div', { class: 'parameter-row', 'data-parameter-row': n }, name, value, where,
        h('button', { type: 'button', class: 'link', on: { click: () => line.remove() } }, 'Remove'));
      rows.append(line);
      return value;
    };
    (settings.parameters || []).forEach((p) => addRow(p));
    const add = h('button', { type: 'button', class: 'secondary', 'data-add-parameter': true,
      on: { click: () => addRow().focus() } }, 'Add parameter');
    confirmDialog({
      title: `Settings of ${user.name}`,
      message: ['A connection limit, and session parameters set at each of the user\'s logins (for every database or one). Sessions already open keep what they had.'],
      content: h('div', { class: 'settings-form' },
        h('div', { class: 'field' }, h('label', { for: 'settings-limit' }, 'Connection limit'), limit),
        expires ? h('div', { class: 'field' }, h('label', { for: 'settings-valid-until' }, 'Expires (empty: never)'), until) : null,
        h('h3', {}, 'Parameters'), rows, add),
      confirmLabel: 'Save settings',
      action: () => api('PUT', path('databases', id, 'users', user.name), {
        settings: {
          pg_allow_replication: Boolean(settings.pg_allow_replication),
          connection_limit: limit.value.trim() === '' ? -1 : Number(limit.value),
          parameters: [...rows.querySelectorAll('.parameter-row')].map((line) => {
            const field = (f) => line.querySelector(`[data-field="${f}"]`).value;
            const p = { name: field('name'), value: field('value') };
            if (field('database')) p.database = field('database');
            return p;
          }),
          ...(expires ? { valid_until: until.value ? new Date(until.value).toISOString() : null } : {}),
        },
      }),
      done: (answer) => {
        const saved = answer && answer.user;
        if (saved && saved.status !== 'ready' && saved.status !== 'expired') {
          actionErrors.show(new Error(`The settings of ${user.name} were saved and are not on the server yet: ${saved.last_error || 'pending'}`));
        }
        refresh();
      },
    });
  }

  function resetPassword(name) {
    actionErrors.show(null);
    const grace = h('select', { id: 'reset-grace' }, GRACES.map(([value, label]) => h('option', { value }, label)));
    confirmDialog({
      title: `Reset the password of ${name}?`,
      message: [`A new password is generated for the user ${name}.`,
        'Without a grace, anything that uses the old password (applications, scripts, connection pools) stops working until it is given the new one. With one, the old password keeps working that long, and the new one logs in as the user\'s second login, which acts as the user.'],
      content: h('div', { class: 'field' }, h('label', { for: 'reset-grace' }, 'Old password keeps working'), grace),
      confirmLabel: 'Reset password',
      danger: true,
      action: () => api('POST', path('databases', id, 'users', name, 'reset_auth'), grace.value ? { grace: grace.value } : {}),
      done: (answer) => {
        const user = answer && answer.user;
        const password = user && user.password;
        if (password) {
          const login = user.login || name;
          const old = user.grace ? `The old password keeps working until ${when(user.grace.until)}.` : 'The old password no longer works.';
          secretDialog({ title: `New password of ${name}`, message: `Copy it now and give it to whatever connects as this user, logging in as ${login}. ${old}`, secret: password });
        } else {
          actionErrors.show(new Error(`The password of ${name} was reset; your token cannot view credentials, so it is not shown.`));
        }
        refresh();
      },
    });
  }

  function deleteObject(kind, name, users = []) {
    actionErrors.show(null);
    const segment = kind === 'user' ? 'users' : 'dbs';
    // A user's confirmation shows what it owns and to whom it goes.
    const preview = kind === 'user' ? dependencyPreview(id, name, users, cluster.pgplane.primary_user) : null;
    confirmDialog({
      title: `Delete the ${kind} ${name}?`,
      message: kind === 'user'
        ? [`The user ${name} is dropped from the server; the objects it owns are handed to the user chosen below.`, preview.node, 'This cannot be undone.']
        : [`The database ${name} and everything in it are dropped from the server.`, 'This cannot be undone.'],
      confirmLabel: `Delete ${kind}`,
      danger: true,
      action: () => api('DELETE', path('databases', id, segment, name) + (preview ? preview.query() : '')),
      done: async () => {
        await refresh();
        // The row is gone: keyboard focus goes to the section's add field, when there is one.
        const field = document.getElementById(kind === 'user' ? 'new-user' : 'new-database');
        if (field && document.activeElement === document.body) field.focus();
      },
    });
  }

  const lifetimePick = h('select', { id: 'new-user-ttl', 'aria-label': 'Lifetime of the new user' },
    LIFETIMES.map(([value, label]) => h('option', { value }, label)));
  const userSection = h('section', { 'aria-labelledby': 'users-h' }, h('h2', { id: 'users-h' }, 'Users'),
    can(CREATE) ? addForm('user', async (name) => {
      await api('POST', path('databases', id, 'users'), lifetimePick.value ? { name, ttl: lifetimePick.value } : { name });
      await refresh();
    }, lifetimePick) : null,
    usersBox);
  const dbSection = h('section', { 'aria-labelledby': 'dbs-h' }, h('h2', { id: 'dbs-h' }, 'Databases'),
    can(CREATE) ? addForm('database', async (name) => {
      await api('POST', path('databases', id, 'dbs'), { name });
      await refresh();
    }) : null,
    dbsBox);
  clear(body, errors, actionErrors, userSection, dbSection);
  return keepFresh(alive, load, errors);
}

// ---------------------------------------------------------------- drift & unmanaged

function insightsTab(body, alive, cluster) {
  const id = cluster.id;
  const driftErrors = alertBox();
  const unmanagedErrors = alertBox();
  const driftBox = h('div', { id: 'drift' });
  const unmanagedBox = h('div', { id: 'unmanaged' });
  clear(body,
    h('section', { 'aria-labelledby': 'drift-h' },
      h('h2', { id: 'drift-h' }, 'Drift events'),
      h('p', { class: 'muted' }, 'Changes found on the server behind pgplane\'s back, and when pgplane put them back.'),
      driftErrors, driftBox),
    h('section', { 'aria-labelledby': 'unmanaged-h' },
      h('h2', { id: 'unmanaged-h' }, 'Left alone'),
      h('p', { class: 'muted' }, 'Roles and databases on the server that pgplane does not manage and never alters or drops.'),
      unmanagedErrors, unmanagedBox));
  keepFresh(alive, async () => {
    const { drift_events: events } = await api('GET', path('databases', id, 'drift'));
    clear(driftBox, table('Drift events', ['Found', 'Kind', 'Name', 'What', 'Repaired'], events.map((e) => h('tr', {},
      h('td', {}, when(e.found_at)), h('td', {}, e.kind), h('td', { class: 'name' }, e.name),
      h('td', {}, e.description), h('td', {}, e.repaired_at ? when(e.repaired_at) : 'not yet'))), 'No drift found.'));
    return false;
  }, driftErrors);
  return (async () => {
    try {
      const { roles, databases } = await api('GET', path('databases', id, 'unmanaged'));
      clear(unmanagedBox,
        h('h3', {}, 'Roles'), roles.length ? h('ul', { class: 'names' }, roles.map((r) => h('li', {}, r))) : h('p', { class: 'empty' }, 'None.'),
        h('h3', {}, 'Databases'), databases.length ? h('ul', { class: 'names' }, databases.map((d) => h('li', {}, d))) : h('p', { class: 'empty' }, 'None.'));
    } catch (e) {
      unmanagedErrors.show(e);
    }
  })();
}

// ---------------------------------------------------------------- audit log

export async function auditPage(main, alive) {
  const errors = alertBox();
  const list = h('div', {}, h('p', { class: 'loading' }, 'Loading…'));
  clear(main, h('h1', { tabindex: -1 }, 'Audit log'),
    h('p', { class: 'muted' }, 'Every change made to your team\'s clusters through the API (this console included), newest first.'),
    errors, list);
  await keepFresh(alive, async () => {
    const { audit_events: events } = await api('GET', '/v2/audit_events?limit=200');
    clear(list, table('Audit events', ['When', 'Action', 'Object', 'Status', 'Token', 'Request id'], events.map((e) => h('tr', {},
      h('td', {}, when(e.at)), h('td', {}, e.action), h('td', { class: 'name' }, e.object || ''),
      h('td', {}, h('span', { class: e.status < 400 ? 'badge ready' : 'badge pending' }, String(e.status))),
      h('td', {}, h('code', {}, e.token_id)), h('td', {}, h('code', {}, e.request_id || '')))), 'No events yet.'));
    return false;
  }, errors);
}

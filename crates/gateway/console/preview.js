// Seeing before doing, in the console: what a user owns on the server (shown in its Delete
// confirmation, with the user to hand it to) and what the reconciler would do on the server
// right now (the cluster's Plan tab). Both read pgplane's extensions of the /v2 API only.

import { api, path } from './api.js';
import { alertBox, clear, h } from './dom.js';

/** `3 tables (public.a, public.b, …)` for each group. */
function describe(groups) {
  return groups.map((g) => {
    const more = g.count > g.first.length ? ', …' : '';
    return `${g.count} ${g.kind}${g.count === 1 ? '' : 's'} (${g.first.join(', ')}${more})`;
  }).join('; ');
}

function renderReport(report) {
  if (!report.exists) return [h('p', {}, 'It does not exist on the server: nothing depends on it.')];
  const lines = [];
  if (report.server.owned.length) lines.push(h('li', { 'data-database': '' }, h('strong', {}, 'Server-wide'), ': ', describe(report.server.owned)));
  for (const db of report.databases) {
    const parts = [];
    if (db.error) parts.push(`cannot be read: ${db.error}`);
    if (db.owned.length) parts.push(`owns ${describe(db.owned)}`);
    if (db.privileges.length) parts.push(`privileges on ${describe(db.privileges)}`);
    if (db.default_privileges.length) parts.push(`${db.default_privileges.length} default privilege setting(s)`);
    lines.push(h('li', { 'data-database': db.database }, h('strong', {}, db.database), ': ', parts.join('; ')));
  }
  const summary = report.owns_objects ? 'It owns objects on the server:' : 'It owns nothing on the server.';
  const memberships = report.member_of.length
    ? h('p', {}, `Member of: ${report.member_of.map((m) => m.role).join(', ')}.`) : null;
  return [h('p', {}, summary), lines.length ? h('ul', { class: 'names' }, lines) : null, memberships];
}

/**
 * The dependency preview of the user `name` for its Delete confirmation, read live, with a
 * choice of heir (the primary user by default, or another ready user of the cluster).
 * `query()` gives the DELETE's query string for the chosen heir.
 */
export function dependencyPreview(clusterId, name, users, primaryUser) {
  const errors = alertBox();
  const report = h('div', { class: 'report' }, h('p', { class: 'loading' }, 'Checking what it owns on the server…'));
  const heirs = users.filter((u) => u.name !== name && u.name !== primaryUser && u.status === 'ready');
  const select = h('select', { id: 'heir' },
    h('option', { value: '' }, `${primaryUser} (primary user)`),
    heirs.map((u) => h('option', { value: u.name }, u.name)));
  const node = h('div', { id: 'dependency-preview' }, errors, report,
    h('label', { for: 'heir' }, 'Hand what it owns to '), select);
  (async () => {
    try {
      const { dependencies } = await api('GET', path('databases', clusterId, 'users', name, 'dependencies'));
      clear(report, ...renderReport(dependencies));
    } catch (e) {
      clear(report);
      errors.show(e);
    }
  })();
  return { node, query: () => (select.value ? `?reassign_to=${encodeURIComponent(select.value)}` : '') };
}

/** The cluster's Plan tab: the steps of the next pass, with their SQL, read on demand. */
export function planTab(body, cluster) {
  const errors = alertBox();
  const box = h('div', { id: 'plan' }, h('p', { class: 'loading' }, 'Planning…'));
  const again = h('button', { type: 'button', class: 'secondary', id: 'replan' }, 'Plan again');
  const load = async () => {
    errors.show(null);
    try {
      const { plan } = await api('GET', path('databases', cluster.id, 'plan'));
      if (plan.steps.length === 0) {
        clear(box, h('p', { class: 'empty' }, `Nothing to do: the server matches what pgplane manages (${plan.in_sync} objects in sync).`));
        return;
      }
      clear(box, h('ol', { class: 'plan' }, plan.steps.map((s) => h('li', { 'data-step': `${s.kind}:${s.name}` },
        h('strong', {}, s.step.replaceAll('_', ' ')), ' ', s.kind, ' ', h('code', { class: 'name' }, s.name),
        s.drift ? h('span', { class: 'badge pending drift' }, `drift: ${s.drift}`) : null,
        s.note ? h('p', { class: 'muted' }, s.note) : null,
        s.statements.length ? h('pre', {}, h('code', {}, s.statements.map((st) => `${st.database ? `-- in ${st.database}\n` : ''}${st.sql};`).join('\n'))) : null))),
        h('p', { class: 'muted' }, `${plan.in_sync} other objects are in sync.`));
    } catch (e) {
      clear(box);
      errors.show(e);
    }
  };
  again.addEventListener('click', load);
  clear(body, h('section', { 'aria-labelledby': 'plan-h' },
    h('h2', { id: 'plan-h' }, 'Plan'),
    h('p', { class: 'muted' }, 'What pgplane would do on the server if it looked now, statement by statement (passwords redacted), including drift it would put back. Nothing is changed by looking.'),
    again, errors, box));
  return load();
}

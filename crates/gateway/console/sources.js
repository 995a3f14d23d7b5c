// The cluster's Trusted sources tab: the addresses let in (DigitalOcean's firewall rules, the
// whole list replaced on each change), said plainly as what pgplane enforces (at the pooler,
// for connections through the cluster's pools) beside what it only reports (the entries of the
// server's own pg_hba.conf that let anyone in, read live and never changed by pgplane).

import { api, can, path, UPDATE } from './api.js';
import { addForm, alertBox, clear, confirmDialog, h, moreMenu, table, when } from './dom.js';
import { loadInto } from './refresh.js';

/** What the server's pg_hba.conf lets in, as the API read it. */
function hbaReport(hba) {
  if (!hba.readable) {
    return h('p', { class: 'muted', id: 'hba-unreadable' }, `pgplane could not read the server's pg_hba.conf: ${hba.reason || 'no reason given'}`);
  }
  if (hba.open_entries.length === 0) {
    return h('p', { class: 'empty', id: 'hba-closed' }, 'Nothing in the server\'s pg_hba.conf lets anyone in from every address or without a strong password.');
  }
  const list = (names) => names.join(', ');
  return [
    h('p', {}, `${hba.open_entries.length} entries of the server's pg_hba.conf let connections straight to the server in, whatever the trusted sources above say:`),
    table('Open entries of pg_hba.conf', ['Line', 'Type', 'Databases', 'Users', 'Address', 'Method', 'Open because'],
      hba.open_entries.map((e) => h('tr', { 'data-hba-line': e.line_number },
        h('td', { class: 'num' }, String(e.line_number)), h('td', {}, e.type), h('td', { class: 'name' }, list(e.database)),
        h('td', { class: 'name' }, list(e.user_name)), h('td', {}, e.address || 'local socket'), h('td', {}, e.auth_method),
        h('td', {}, e.findings.join('; ')))), ''),
  ];
}

export function sourcesTab(body, cluster) {
  const id = cluster.id;
  const errors = alertBox();
  const rulesBox = h('div', { id: 'rules' }, h('p', { class: 'loading' }, 'Loading trusted sources…'));
  const hbaBox = h('div', { id: 'server-hba' }, h('p', { class: 'loading' }, 'Reading the server\'s pg_hba.conf…'));
  let rules = [];

  /** Replaces the cluster's rules with `next` (as the API takes them). */
  const replace = (next) => api('PUT', path('databases', id, 'firewall'), {
    rules: next.map((r) => ({ type: 'ip_addr', value: r.value, ...(r.description ? { description: r.description } : {}) })),
  });

  function removeRule(rule) {
    confirmDialog({
      title: `Remove the trusted source ${rule.value}?`,
      message: [rules.length === 1
        ? 'It is the last one: without trusted sources, connections through the cluster\'s pools are let in from any address.'
        : `Connections through the cluster's pools from ${rule.value} are refused from now on, unless another trusted source lets them in.`],
      confirmLabel: 'Remove',
      danger: true,
      action: () => replace(rules.filter((r) => r.value !== rule.value)),
      done: async () => {
        await refresh();
        const add = document.getElementById('new-source');
        if (add && document.activeElement === document.body) add.focus();
      },
    });
  }

  const load = async () => {
    const answer = await api('GET', path('databases', id, 'firewall'));
    ({ rules } = answer);
    clear(rulesBox,
      h('p', { id: 'rules-summary' }, rules.length
        ? `Connections through the cluster's pools are let in only from the ${rules.length === 1 ? 'address or network' : `${rules.length} addresses and networks`} below.`
        : 'No trusted sources: connections through the cluster\'s pools are let in from any address.'),
      table('Trusted sources', ['Address or network', 'Added', ''], rules.map((r) => h('tr', { 'data-rule': r.value },
        h('td', { class: 'name' }, h('code', {}, r.value), r.description ? h('span', { class: 'muted' }, ` ${r.description}`) : null),
        h('td', {}, when(r.created_at)),
        h('td', { class: 'actions' }, can(UPDATE) ? moreMenu(r.value, [['Remove', () => removeRule(r)]]) : null))), ''));
    clear(hbaBox, hbaReport(answer.pgplane.server_hba));
    return false;
  };
  const refresh = loadInto(load, errors);

  const says = (term, text) => h('div', { class: 'field' }, h('dt', {}, term), h('dd', {}, text));
  clear(body, errors,
    h('section', { 'aria-labelledby': 'sources-h' },
      h('h2', { id: 'sources-h' }, 'Trusted sources'),
      h('dl', { class: 'params', id: 'enforcement' },
        says('Enforced', 'at the pooler: the cluster\'s connection pools let in only these addresses (none listed: any address).'),
        says('Only reported', 'connections straight to the server, which its own pg_hba.conf governs: pgplane does not change that file, and lists below what in it lets anyone in.')),
      can(UPDATE) ? addForm('source', async (value) => {
        await replace([...rules, { value }]);
        await refresh();
      }, null, 'Add a trusted source (an IP address or a CIDR network)') : null,
      rulesBox),
    h('section', { 'aria-labelledby': 'hba-h' },
      h('h2', { id: 'hba-h' }, 'Straight to the server: its pg_hba.conf (reported, not enforced)'),
      hbaBox));
  return refresh();
}

-- Access groups are trusted by provenance, not by name. Each recorded group keeps the name
-- pgplane chose for it (random, recorded before CREATE ROLE, so that no other tenant can
-- predict it) and the oid of the role pgplane created (recorded before the CREATE ROLE is
-- committed): a role found under the name with another oid, or before pgplane created one,
-- is someone else's, a conflict shown on the access entries that need it.
alter table cluster_access_groups
    add column role text,
    add column role_oid bigint,
    add column conflict text;

-- Groups recorded before: their names were sha256(cluster id, database name) (see the
-- reconciler of that time); they keep them, and the first pass that finds the role adopts it
-- (records its oid) after checking it like every pass does (no LOGIN, no password, no foreign
-- member or ADMIN holder).
update cluster_access_groups
   set role = 'pgplane_access_' || case level when 'read_only' then 'ro' else 'rw' end || '_'
              || substr(encode(sha256(uuid_send(cluster_id) || convert_to(database_name, 'UTF8')), 'hex'), 1, 20),
       role_oid = 0
 where role is null;
alter table cluster_access_groups alter column role set not null;
create unique index cluster_access_groups_role on cluster_access_groups (role);
comment on column cluster_access_groups.role_oid is
    'the oid of the role pgplane created under "role"; null before it is created; 0 for a group recorded before oids were, adopted by the next pass that checks it';

-- On a server shared with other clusters, pgplane's databases are closed to PUBLIC (no
-- CONNECT, no TEMPORARY); set once done, so that PUBLIC's rights granted back by hand are
-- told apart (drift) from a database closed for the first time.
alter table cluster_databases add column closed_to_public boolean not null default false;

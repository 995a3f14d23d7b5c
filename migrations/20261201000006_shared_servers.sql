-- Shared servers: one PostgreSQL server may host clusters of several teams. A server is known by
-- what it is, `pg_control_system().system_identifier` and its configured port
-- ("<system_identifier>:<port>"), not by the name it was reached by. No two clusters on one
-- server may manage the same role or database name: server_names holds every name a cluster
-- manages there, with a primary key across the server, kept in step with the object rows by the
-- triggers below, so that the check cannot be raced.

-- Null for clusters registered before this migration; the reconciler learns it on its next pass.
alter table clusters add column server_id text;
create index clusters_server on clusters (server_id) where server_id is not null;

-- Replaced by server_names, which knows the server by its identity rather than its address.
drop index clusters_target_primary_user;

create table server_names (
    server_id  text not null,
    kind       text not null check (kind in ('role', 'database')),
    name       text not null,
    cluster_id uuid not null references clusters on delete cascade,
    primary key (server_id, kind, name)
);
create index server_names_cluster on server_names (cluster_id);

-- Claims a new object's name on its cluster's server (a unique violation on server_names_pkey
-- means another cluster there manages it).
create function server_names_claim() returns trigger language plpgsql as $$
begin
    insert into server_names (server_id, kind, name, cluster_id)
    select c.server_id, tg_argv[0], new.name, new.cluster_id
      from clusters c
     where c.cluster_id = new.cluster_id and c.server_id is not null;
    return null;
end $$;

-- Gives the name back once the object's row is gone (dropped from the target, or unregistered).
create function server_names_release() returns trigger language plpgsql as $$
begin
    delete from server_names
     where cluster_id = old.cluster_id and kind = tg_argv[0] and name = old.name;
    return null;
end $$;

-- A cluster whose server identity is learnt or changes (a confirmed move) claims all its names
-- on the new server at once.
create function server_names_rekey() returns trigger language plpgsql as $$
begin
    delete from server_names where cluster_id = new.cluster_id;
    if new.server_id is not null then
        insert into server_names (server_id, kind, name, cluster_id)
        select new.server_id, 'role', u.name, u.cluster_id from cluster_users u where u.cluster_id = new.cluster_id
        union all
        select new.server_id, 'database', d.name, d.cluster_id from cluster_databases d where d.cluster_id = new.cluster_id;
    end if;
    return null;
end $$;

create trigger cluster_users_claim after insert on cluster_users
    for each row execute function server_names_claim('role');
create trigger cluster_users_release after delete on cluster_users
    for each row execute function server_names_release('role');
create trigger cluster_databases_claim after insert on cluster_databases
    for each row execute function server_names_claim('database');
create trigger cluster_databases_release after delete on cluster_databases
    for each row execute function server_names_release('database');
create trigger clusters_rekey after update of server_id on clusters
    for each row when (old.server_id is distinct from new.server_id)
    execute function server_names_rekey();

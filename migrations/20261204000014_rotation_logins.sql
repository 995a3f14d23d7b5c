-- Rotation without downtime: a reset with a grace period (`POST …/reset_auth` with `grace`, a
-- pgplane extension) keeps the old credentials working while the new ones are taken up.
-- PostgreSQL keeps one password per role, so a user may get a second login role that
-- alternates with its own: `alternate_login` (its name, chosen at the user's first rotation
-- with a grace and kept until the user is deleted), a member of the user's role that acts as
-- it at each login (what either login creates belongs to the user's role). `alternate_claimed`:
-- pgplane created it on the target (as `claimed` is for the user's role).
-- `alternate_active`: the credentials in `credentials_sealed` are the alternate login's (else
-- the user's own role's); `other_credentials_sealed` holds the other login's, sealed under
-- their own context. `grace_until`: until when the other login still accepts logins; at that
-- moment its logins stop and its sessions end (`Store::due_clusters` makes the cluster due;
-- a pass after it clears the column). Null: the other login accepts none.
-- Existing users have no alternate login. Read by the store's user queries
-- (pgplane_core::model::User).
alter table cluster_users
    add column alternate_login text,
    add column alternate_claimed boolean not null default false,
    add column alternate_active boolean not null default false,
    add column other_credentials_sealed bytea,
    add column grace_until timestamptz;

create index cluster_users_grace_due on cluster_users (grace_until) where grace_until is not null;

-- An alternate login's name is claimed on the cluster's server as a role name, like a user's
-- (no other cluster there may manage it), and given back with its user.
create function server_names_claim_alternate() returns trigger language plpgsql as $$
begin
    insert into server_names (server_id, kind, name, cluster_id)
    select c.server_id, 'role', new.alternate_login, new.cluster_id
      from clusters c
     where c.cluster_id = new.cluster_id and c.server_id is not null;
    return null;
end $$;

create function server_names_release_alternate() returns trigger language plpgsql as $$
begin
    delete from server_names
     where cluster_id = old.cluster_id and kind = 'role' and name = old.alternate_login;
    return null;
end $$;

create trigger cluster_users_claim_alternate after update of alternate_login on cluster_users
    for each row when (old.alternate_login is null and new.alternate_login is not null)
    execute function server_names_claim_alternate();
create trigger cluster_users_release_alternate after delete on cluster_users
    for each row when (old.alternate_login is not null)
    execute function server_names_release_alternate();

-- A cluster that claims its names on a new server claims its alternate logins' too.
create or replace function server_names_rekey() returns trigger language plpgsql as $$
begin
    delete from server_names where cluster_id = new.cluster_id;
    if new.server_id is not null then
        insert into server_names (server_id, kind, name, cluster_id)
        select new.server_id, 'role', u.name, u.cluster_id from cluster_users u where u.cluster_id = new.cluster_id
        union all
        select new.server_id, 'role', u.alternate_login, u.cluster_id from cluster_users u
         where u.cluster_id = new.cluster_id and u.alternate_login is not null
        union all
        select new.server_id, 'database', d.name, d.cluster_id from cluster_databases d where d.cluster_id = new.cluster_id;
    end if;
    return null;
end $$;

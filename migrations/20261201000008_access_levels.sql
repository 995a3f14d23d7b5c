-- Access presets: per (user, database) of a cluster, one named level (read_only, read_write);
-- no row means no access. pgplane carries a level out through a group role per (database,
-- level) that holds the level's privileges and default privileges, and the user's membership
-- in it (see crates/reconciler/src/access.rs).
create table cluster_user_access (
    cluster_id    uuid not null,
    user_name     text not null,
    database_name text not null,
    level         text not null check (level in ('read_only', 'read_write')),
    primary key (cluster_id, user_name, database_name),
    -- A user's or database's levels go with its row (once it is dropped from the target).
    foreign key (cluster_id, user_name) references cluster_users (cluster_id, name) on delete cascade,
    foreign key (cluster_id, database_name) references cluster_databases (cluster_id, name) on delete cascade
);
create index cluster_user_access_database on cluster_user_access (cluster_id, database_name);

-- A change to a user's levels bumps access_generation (and the cluster's generation); a pass
-- that carried it out records access_applied_generation, or access_error when it failed.
alter table cluster_users
    add column access_generation bigint not null default 0,
    add column access_applied_generation bigint not null default 0,
    add column access_error text;
create index cluster_users_access_changed on cluster_users (cluster_id)
    where access_applied_generation < access_generation;

-- The group roles pgplane has created (or is about to create) on a cluster's server, so that
-- a later pass can remove them when no level needs them any more, also after their database
-- row is gone. Recorded before CREATE ROLE, removed after DROP ROLE.
create table cluster_access_groups (
    cluster_id    uuid not null references clusters on delete cascade,
    database_name text not null,
    level         text not null check (level in ('read_only', 'read_write')),
    primary key (cluster_id, database_name, level)
);

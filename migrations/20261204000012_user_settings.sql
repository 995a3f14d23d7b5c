-- Per-user settings beyond DigitalOcean's pg_allow_replication (pgplane extensions of a user's
-- `settings`): a connection limit (-1: none), and session parameters set at each login, in
-- every database (database_name null) or in one database of the user's cluster. Which
-- parameters and values are accepted is checked before they are stored
-- (pgplane_core::parameters). A parameter goes with its user; a database's go when its
-- deletion is requested (the store deletes them in the same transaction), the foreign key
-- being the safety net. Existing users get no limit and no parameters. Read by the store's
-- user queries (`parameters`, `connection_limit` of pgplane_core::model::User).
alter table cluster_users
    add column connection_limit int not null default -1 check (connection_limit >= -1);

create table cluster_user_parameters (
    cluster_id    uuid not null,
    user_name     text not null,
    database_name text,
    name          text not null,
    value         text not null,
    foreign key (cluster_id, user_name) references cluster_users (cluster_id, name) on delete cascade,
    foreign key (cluster_id, database_name) references cluster_databases (cluster_id, name) on delete cascade
);
create unique index cluster_user_parameters_once
    on cluster_user_parameters (cluster_id, user_name, coalesce(database_name, ''), name);

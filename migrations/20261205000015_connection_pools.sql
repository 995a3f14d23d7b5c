-- Connection pools and trusted sources (DigitalOcean's `…/pools` and `…/firewall`), carried out
-- by `pgplane pooler`: one process beside each target server that runs a PgBouncer per cluster
-- with pools there, configures it from these tables and reports back (crates/pooler). No
-- existing row changes. Read and written by `Store`'s pool, firewall and pooler queries
-- (crates/core/src/store/pools.rs, firewall.rs) and by the events listing.

-- A pooler, known by the server address it sits beside (clusters registered at that host and
-- port are its own) and what it tells clients: the host of its pools' connection strings and
-- the ports it may listen on. `server_connections`: how many server connections pools there may
-- use in all (max_connections less the server's reserved slots and the room the pooler keeps
-- for administration), read on the server by the pooler; `team_share`: the percentage of them
-- one team's pools may use, so that on a server several teams share no team can take every
-- connection.
create table poolers (
    server_host        text not null,
    server_port        integer not null,
    advertise_host     text not null,
    port_first         integer not null,
    port_last          integer not null check (port_last >= port_first),
    server_connections integer not null,
    team_share         integer not null check (team_share between 1 and 100),
    heartbeat_at       timestamptz not null default now(),
    primary key (server_host, server_port)
);

-- The port a cluster's PgBouncer listens on, given out at the cluster's first pool and kept
-- while the cluster is registered (its pools' connection strings stay valid).
create table pool_listeners (
    cluster_id  uuid primary key references clusters on delete cascade,
    server_host text not null,
    server_port integer not null,
    port        integer not null,
    unique (server_host, server_port, port)
);

-- A pool: PgBouncer's `[databases]` entry named `name` (the database clients ask for), leading
-- to `database_name` as `user_name` (null: as each client's own user). `generation` moves with
-- every change; the pooler sets `applied_generation` once PgBouncer runs it, and `last_error`
-- when it cannot.
create table cluster_pools (
    cluster_id         uuid not null,
    name               text not null,
    mode               text not null check (mode in ('session', 'transaction', 'statement')),
    size               integer not null check (size > 0),
    database_name      text not null,
    user_name          text,
    generation         bigint not null default 1,
    applied_generation bigint not null default 0,
    last_error         text,
    created_at         timestamptz not null default now(),
    updated_at         timestamptz not null default now(),
    primary key (cluster_id, name),
    foreign key (cluster_id, database_name) references cluster_databases (cluster_id, name) on delete cascade
);
create index cluster_pools_user on cluster_pools (cluster_id, user_name) where user_name is not null;

-- Trusted sources: the addresses (ip_addr rules, a host or a CIDR network) allowed to log in
-- through the cluster's pools. None: any address may.
create table cluster_firewall_rules (
    rule_id     uuid primary key,
    cluster_id  uuid not null references clusters on delete cascade,
    type        text not null check (type = 'ip_addr'),
    value       text not null,
    description text,
    created_at  timestamptz not null default now(),
    unique (cluster_id, value)
);

-- Drift a pooler found in its PgBouncer (a pool missing or changed, PgBouncer not running) is
-- recorded with the target's.
alter table drift_events drop constraint drift_events_kind_check;
alter table drift_events add constraint drift_events_kind_check check (kind in ('user', 'database', 'pool'));

-- pgplane metadata schema: teams, API tokens, registered clusters (targets) and the users and
-- databases pgplane manages on them, with their desired state and reconcile status.
-- Never edit an applied migration: sqlx records checksums. Add a new file instead.

create table teams (
    team_id    uuid primary key,
    name       text not null unique,
    created_at timestamptz not null default now()
);

-- Every token acts for exactly one team. The bootstrap team owns what `pgplane token create`
-- makes when no team is named.
insert into teams (team_id, name) values ('00000000-0000-0000-0000-000000000001', 'default');

create table api_tokens (
    -- The public, non-secret part of a token ("pgp_<token_id>_<secret>"): finds the row.
    token_id     text primary key,
    team_id      uuid not null references teams on delete cascade,
    name         text not null,
    -- argon2id PHC string of the whole token. The token itself is never stored.
    secret_hash  text not null,
    -- "*" is full access; finer scopes (database:read, ...) fit the same column.
    scopes       text[] not null default '{*}',
    created_at   timestamptz not null default now(),
    expires_at   timestamptz,
    last_used_at timestamptz,
    revoked_at   timestamptz
);

create table clusters (
    cluster_id            uuid primary key,
    team_id               uuid not null references teams on delete restrict,
    name                  text not null,
    region                text not null,
    size                  text not null,
    num_nodes             integer not null,
    tags                  text[] not null default '{}',
    -- The admin connection to the target server. The password is sealed (AEAD).
    host                  text not null,
    port                  integer not null check (port between 1 and 65535),
    admin_user            text not null,
    admin_password_sealed bytea not null,
    admin_database        text not null,
    sslmode               text not null,
    primary_user          text not null,
    default_database      text not null,
    server_version_num    integer not null,
    server_version        text not null,
    status                text not null default 'creating' check (status in ('creating', 'online')),
    -- Desired-state generation: bumped by every change to the cluster's users or databases.
    -- A pass that converged everything it read at generation G records reconciled_generation = G.
    generation            bigint not null default 1,
    reconciled_generation bigint not null default 0,
    last_error            text,
    last_reconciled_at    timestamptz,
    attempts              integer not null default 0,
    next_attempt_at       timestamptz not null default now(),
    created_at            timestamptz not null default now(),
    updated_at            timestamptz not null default now(),
    unique (team_id, name)
);

-- Two clusters must not manage the same primary role on one server, or they would fight over it.
create unique index clusters_target_primary_user on clusters (lower(host), port, primary_user);

create table cluster_users (
    cluster_id          uuid not null references clusters on delete cascade,
    name                text not null,
    role                text not null check (role in ('primary', 'normal')),
    -- Sealed JSON {"password", "verifier"}: the generated password (shown by the API, as DO
    -- does) and the SCRAM-SHA-256 verifier that pgplane sent to the target.
    credentials_sealed  bytea not null,
    allow_replication   boolean not null default false,
    -- present: should exist on the target; absent: deletion requested, row kept until dropped.
    state               text not null default 'present' check (state in ('present', 'absent')),
    generation          bigint not null default 1,
    applied_generation  bigint not null default 0,
    sync_status         text not null default 'pending' check (sync_status in ('pending', 'ready', 'conflict')),
    last_error          text,
    -- true once pgplane has issued CREATE for this name (or adopted it: the primary user).
    -- A role that exists on the target while this is false belongs to someone else.
    claimed             boolean not null default false,
    created_at          timestamptz not null default now(),
    updated_at          timestamptz not null default now(),
    primary key (cluster_id, name)
);

create table cluster_databases (
    cluster_id          uuid not null references clusters on delete cascade,
    name                text not null,
    is_default          boolean not null default false,
    state               text not null default 'present' check (state in ('present', 'absent')),
    generation          bigint not null default 1,
    applied_generation  bigint not null default 0,
    sync_status         text not null default 'pending' check (sync_status in ('pending', 'ready', 'conflict')),
    last_error          text,
    claimed             boolean not null default false,
    created_at          timestamptz not null default now(),
    updated_at          timestamptz not null default now(),
    primary key (cluster_id, name)
);

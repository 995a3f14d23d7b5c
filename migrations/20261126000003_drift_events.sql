-- Drift: a managed role or database found changed or missing on its target (someone ran DDL
-- behind pgplane's back), what was found, when, and when pgplane put it back.
create table drift_events (
    event_id    bigint generated always as identity primary key,
    cluster_id  uuid not null references clusters on delete cascade,
    kind        text not null check (kind in ('user', 'database')),
    name        text not null,
    description text not null,
    found_at    timestamptz not null default now(),
    repaired_at timestamptz
);

create index drift_events_cluster on drift_events (cluster_id, event_id desc);

-- Audit log: every mutating API request (who, for which team, what, on which object, with what
-- outcome, when, under which request id). Never holds a secret: no bodies, only paths and ids.
create table audit_events (
    event_id    bigint generated always as identity primary key,
    at          timestamptz not null default now(),
    team_id     uuid not null references teams on delete cascade,
    token_id    text not null,
    action      text not null,
    cluster_id  uuid,
    object      text,
    status      integer not null,
    request_id  text
);

create index audit_events_team_at on audit_events (team_id, at desc);

-- Allowances every gateway replica shares (registration probes per team, failed
-- authentications per client address and per token id): one windowed counter per subject,
-- counted with one atomic upsert. A window starts with the first event after the last one
-- ended.
create table limit_counters (
    subject      text primary key,
    window_start timestamptz not null,
    count        integer not null
);
create index limit_counters_window_start on limit_counters (window_start);

-- What an audited request chose beyond its path (a deleted user's heir and ownership mode),
-- as a JSON object.
alter table audit_events add column detail text;

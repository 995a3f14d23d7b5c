-- Retention: pgplane prunes audit and drift events older than the configured number of days,
-- oldest first and in batches; these indexes find them without reading the whole table.
create index audit_events_at on audit_events (at);
create index drift_events_found_at on drift_events (found_at);

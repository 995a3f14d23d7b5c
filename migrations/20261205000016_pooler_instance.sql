-- One pooler per server: each `pgplane pooler` process draws an instance id at start and holds
-- its server's row in `poolers` while it keeps the heartbeat fresh; another process for the same
-- server (which would claim the same pool ports) is refused until the row is released (a
-- pooler stopping clears it) or its heartbeat is stale. Existing rows get no instance: the next
-- pooler to register takes them. Read by crates/core/src/store/pools.rs (register_pooler,
-- release_pooler).
alter table poolers add column instance_id uuid;

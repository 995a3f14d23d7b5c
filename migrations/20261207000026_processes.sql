-- The pgplane processes that have worked from this metadata database, by the name their
-- sessions carry (`application_name`, `pgplane_core::instance`), so that a pass can tell a
-- process of this deployment that died mid-pass (its name here, no session of it left on this
-- database) from a live replica or another deployment sharing a target server. A pass that
-- finds sessions of a dead one still running statements on its target ends them before it reads
-- the catalogs (`Store::dead_processes`, reconciler `pass/connect.rs`). A process adds its row
-- when its reconciler starts (`Store::register_process`), which also forgets the rows of
-- processes started more than a week before that have no session left. New table: nothing to
-- backfill; older processes, which have no row, are never taken for dead.
create table processes (
    name       text primary key,
    started_at timestamptz not null default now()
);

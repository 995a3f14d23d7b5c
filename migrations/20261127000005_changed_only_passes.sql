-- Passes woken by a write look only at the objects that changed; the periodic resync pass
-- compares everything (drift detection). last_resync_at is when a full pass last finished
-- without error; a cluster whose target registration changes gets a full pass at once.
alter table clusters add column last_resync_at timestamptz;
update clusters set last_resync_at = last_reconciled_at;

-- The objects a changed-only pass reads: those whose desired state moved past what was applied.
create index cluster_users_changed on cluster_users (cluster_id) where applied_generation < generation;
create index cluster_databases_changed on cluster_databases (cluster_id) where applied_generation < generation;

-- A write to a cluster's users or databases bumps the cluster's generation (a new
-- generation, a pass due at once, any backoff over) and wakes the reconcilers: see
-- `crates/core/src/lifecycle/cluster.rs`. The store did it in the write's own statement, so
-- the cluster's row stayed locked from that statement to the end of the transaction: over the
-- round trips that followed it (a user's parameters, COMMIT) and while the next writer of the
-- same cluster, and the pass's end, queued behind it. The bump is now a deferred (commit-time)
-- trigger: the row is locked only while the transaction commits. It fires when a user or a
-- database row is inserted or its generation rises (what every desired-state write does, and
-- what a pass recording its outcomes never does), once per transaction: a cluster row this
-- transaction wrote already (bumped, or ended a pass) is left alone, as are its wake-ups.
--
-- Its triggers are named to fire before the listing version's (triggers on one event fire in
-- name order), so every transaction locks the cluster's row before its listing version's.
-- Existing rows are unaffected. Old replicas, which bump in the statement, are not bumped
-- twice (their transaction wrote the cluster's row already).
--
-- Both commit-time bumps fire once per row a transaction wrote; only the first for a cluster
-- changes anything, but each ran its UPDATE to find that out (a pass recording the outcomes of
-- 8 users ran 8). The transaction now notes, in a setting local to it
-- (`pgplane.cluster_bumped`, `pgplane.listing_bumped`), the cluster it bumped last, and a
-- trigger for the same cluster returns at once. The UPDATEs keep their own check, so a
-- transaction over several clusters is still bumped once per cluster.
create function pgplane_bump_cluster() returns trigger language plpgsql as $$
begin
    if current_setting('pgplane.cluster_bumped', true) is distinct from new.cluster_id::text then
        update clusters
           set generation = generation + 1, attempts = 0, next_attempt_at = now(), updated_at = now()
         where cluster_id = new.cluster_id
           and xmin <> pg_current_xact_id()::xid;
        if found then
            -- `pgplane_wake` is `store::WAKE_CHANNEL`; the payload is the cluster id.
            perform pg_notify('pgplane_wake', new.cluster_id::text);
        end if;
        perform set_config('pgplane.cluster_bumped', new.cluster_id::text, true);
    end if;
    return null;
end $$;

-- On each table: <table>_bump_insert and <table>_bump_update.
do $$
declare
    t text;
begin
    foreach t in array array['cluster_users', 'cluster_databases'] loop
        execute format('create constraint trigger %I after insert on %I
                            deferrable initially deferred for each row
                            execute function pgplane_bump_cluster()', t || '_bump_insert', t);
        execute format('create constraint trigger %I after update of generation on %I
                            deferrable initially deferred for each row
                            when (new.generation > old.generation)
                            execute function pgplane_bump_cluster()', t || '_bump_update', t);
    end loop;
end $$;

create or replace function pgplane_bump_listing_version() returns trigger language plpgsql as $$
declare
    id uuid := case when tg_op = 'DELETE' then old.cluster_id else new.cluster_id end;
begin
    if current_setting('pgplane.listing_bumped', true) is distinct from id::text then
        update cluster_listing_versions
           set version = version + 1
         where cluster_id = id
           and xmin <> pg_current_xact_id()::xid;
        perform set_config('pgplane.listing_bumped', id::text, true);
    end if;
    return null;
end $$;

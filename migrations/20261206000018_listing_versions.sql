-- A cluster's users listing (`GET /v2/databases/{id}/users`) is kept rendered by each pgplane
-- process and served again while the cluster's listing version has not moved
-- (`crates/gateway/src/listings.rs`). The version moves once in every transaction that changes
-- the cluster's users, their parameters, their access levels or its databases, whatever code
-- wrote them: a trigger, not the store's care. It is a deferred (commit-time) trigger, so that
-- the version's row is the last lock a writer takes: two writers never wait on each other in a
-- cycle (a statement's own row locks come first, and nothing follows the version's). It is
-- bumped once per transaction: a row this transaction wrote already is left alone.
--
-- The version is read with the cluster (`select_rows!(Cluster)`, `Cluster::listing_version`);
-- nothing else writes it. Existing clusters start at 0; a new cluster's row is made with it;
-- a deleted cluster's goes with it. Old replicas, which do not read it, are unaffected.
create table cluster_listing_versions (
    cluster_id uuid primary key references clusters (cluster_id) on delete cascade,
    version bigint not null default 0
);
insert into cluster_listing_versions (cluster_id) select cluster_id from clusters;

create function pgplane_create_listing_version() returns trigger language plpgsql as $$
begin
    insert into cluster_listing_versions (cluster_id) values (new.cluster_id);
    return null;
end $$;

create trigger clusters_listing_version after insert on clusters
    for each row execute function pgplane_create_listing_version();

create function pgplane_bump_listing_version() returns trigger language plpgsql as $$
begin
    update cluster_listing_versions
       set version = version + 1
     where cluster_id = case when tg_op = 'DELETE' then old.cluster_id else new.cluster_id end
       and xmin <> pg_current_xact_id()::xid;
    return null;
end $$;

create constraint trigger cluster_users_listing_version
    after insert or update or delete on cluster_users
    deferrable initially deferred for each row execute function pgplane_bump_listing_version();
create constraint trigger cluster_user_parameters_listing_version
    after insert or update or delete on cluster_user_parameters
    deferrable initially deferred for each row execute function pgplane_bump_listing_version();
create constraint trigger cluster_user_access_listing_version
    after insert or update or delete on cluster_user_access
    deferrable initially deferred for each row execute function pgplane_bump_listing_version();
create constraint trigger cluster_databases_listing_version
    after insert or update or delete on cluster_databases
    deferrable initially deferred for each row execute function pgplane_bump_listing_version();

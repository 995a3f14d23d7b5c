-- Expiring users and leased credentials (pgplane extensions of a user).
--
-- `valid_until`: the moment the server stops accepting the user's logins (PostgreSQL's
-- `VALID UNTIL`); null: never. `expiry_enforced_at`: when a pass that ran after that moment
-- finished, its sessions ended; null while that is still to do, which makes the cluster due
-- (`Store::due_clusters`). A new `valid_until` clears it.
-- `lease_seconds`: set for a lease, a user created for one job with a lifetime: renewing it
-- moves `valid_until` that far from the renewal, and at `valid_until` its deletion is
-- requested (what it owns goes to its heir, `reassign_to`, or the primary user) by
-- `Store::end_leases`. Null for every other user.
-- Existing users never expire and are not leases. Read by the store's user queries
-- (pgplane_core::model::User).
alter table cluster_users
    add column valid_until timestamptz,
    add column expiry_enforced_at timestamptz,
    add column lease_seconds int check (lease_seconds > 0);

-- The few rows the reconcilers' once-a-second queries look at: expiries still to enforce, and
-- leases.
create index cluster_users_expiry_due on cluster_users (valid_until)
    where valid_until is not null and expiry_enforced_at is null;
create index cluster_users_leases on cluster_users (valid_until) where lease_seconds is not null;

-- A pass woken by a write reads only the users whose access levels wait to be carried out
-- (`Store::pending_access`): those whose levels changed have an index already
-- (cluster_users_access_changed); those whose last attempt failed get this one, so that the
-- read is two index probes, not a scan of every user of the cluster (about 1 ms a pass at
-- 1,000 users). No rows change.
create index cluster_users_access_failed on cluster_users (cluster_id) where access_error is not null;

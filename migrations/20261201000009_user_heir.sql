-- The heir of a user being deleted: the role its objects are handed to (REASSIGN OWNED) when
-- the reconciler drops it. Written with the deletion request, so that a pass after a restart
-- still hands them to the role the caller named. NULL: the cluster's primary user.
alter table cluster_users add column reassign_to text;

-- Creating a user asks whether its name is another user's alternate login (a rotation's second
-- role: `Store::insert_user`), which read every user row of the cluster to find none: about 280
-- buffers a create at a few thousand rows and row versions, the cost growing with the cluster.
-- Alternate logins are few (users in a rotation), so a partial index finds the answer at once.
-- No rows change.
create index cluster_users_alternate_logins on cluster_users (cluster_id, alternate_login)
    where alternate_login is not null;

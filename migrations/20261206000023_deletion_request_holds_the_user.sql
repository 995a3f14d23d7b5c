-- `pgplane_request_user_deletion` (migration 22) marked the user even when the user's own row
-- was not among the rows its first statement locked: a row inserted (or dropped by a pass and
-- created again) while that statement waited on the heir's row is not in its snapshot. The mark
-- then locked the row itself, and when it had to wait for it, rechecked the pools and pending
-- deletions with its older snapshot: a pool created meanwhile for that user went unseen, and
-- the user was marked for deletion under a pool that logs in as it. The function now returns
-- no row unless both the user's row and its heir's are held; the store then asks again in its
-- transaction (`Store::request_user_deletion`), which locks the rows it sees and answers as
-- before (404, 409, 422, or the mark). Only the function changes; no rows change, and old
-- replicas call the same signature.
--
-- The lock itself is now a function of its own, `pgplane_hold_deletion_rows`, which that
-- transaction calls too (it repeated the statement).
create function pgplane_hold_deletion_rows(p_cluster uuid, p_name text, p_heir text, p_stored boolean)
returns table (name text, state text, role text, reassign_to text)
language sql as $$
    -- The user's row and its heir's, locked in name order (two deletions naming each other
    -- cannot deadlock); with a stored heir, the one the row holds.
    select u.name, u.state, u.role, u.reassign_to
      from cluster_users u
     where u.cluster_id = p_cluster
       and u.name = any(array[p_name, p_heir,
                              (select s.reassign_to from cluster_users s
                                where s.cluster_id = p_cluster and s.name = p_name and p_stored)])
     order by u.name
       for update
$$;

create or replace function pgplane_request_user_deletion(
    p_cluster uuid, p_name text, p_heir text, p_stored boolean,
    p_absent text, p_present text, p_primary text, p_kept text, p_after_write text)
returns table (written_generation bigint, written_at timestamptz)
language plpgsql as $$
declare
    locked text[];
    heir text;
begin
    select array_agg(h.name) into locked from pgplane_hold_deletion_rows(p_cluster, p_name, p_heir, p_stored) h;
    heir := case when p_stored
                 then (select u.reassign_to from cluster_users u where u.cluster_id = p_cluster and u.name = p_name)
                 else p_heir end;
    -- Only rows this function holds are judged: the user's, and its heir's (a stored heir that
    -- changed before the lock was granted is not held). Otherwise no answer here.
    if not coalesce(p_name = any(locked), false)
       or (heir is not null and not coalesce(heir = any(locked), false)) then
        return;
    end if;
    -- Marked absent unless it is the primary user, its heir is not a present user, a pool logs
    -- in as it (the pool would stop working without a word) or it inherits from a pending
    -- deletion.
    return query
    update cluster_users u
       set state = p_absent, generation = u.generation + 1, updated_at = now(),
           sync_status = case when u.sync_status = p_kept then p_kept else p_after_write end,
           reassign_to = heir
     where u.cluster_id = p_cluster and u.name = p_name and u.role <> p_primary
       and (heir is null
            or exists (select 1 from cluster_users h
                        where h.cluster_id = p_cluster and h.name = heir and h.state = p_present))
       and not exists (select 1 from cluster_pools p where p.cluster_id = p_cluster and p.user_name = p_name)
       and not exists (select 1 from cluster_users h
                        where h.cluster_id = p_cluster and h.state = p_absent and h.reassign_to = p_name)
    returning u.generation, u.updated_at;
end $$;

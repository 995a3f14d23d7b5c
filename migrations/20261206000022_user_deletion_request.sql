-- A user's deletion is asked for in one round trip (`Store::request_user_deletion`) instead of a
-- transaction of four (BEGIN, the rows locked, the user marked, COMMIT): the same two statements,
-- in a function. Each statement of a volatile function takes a new snapshot, so the mark sees
-- every pool and every deletion committed before the locks were granted, as the mark that
-- followed the lock in its own statement did. The function marks the user, or returns no row
-- when the request is refused (or the user is not there): the store then finds out why in the
-- transaction it used before, which holds the same rows. The state words come from the caller
-- (the Rust enums). No rows change; old replicas keep their transaction and are unaffected.
create function pgplane_request_user_deletion(
    p_cluster uuid, p_name text, p_heir text, p_stored boolean,
    p_absent text, p_present text, p_primary text, p_kept text, p_after_write text)
returns table (written_generation bigint, written_at timestamptz)
language plpgsql as $$
declare
    locked text[];
    heir text;
begin
    -- The user's row and its heir's, locked in name order (two deletions naming each other
    -- cannot deadlock); with a stored heir, the one the row holds.
    select array_agg(l.name) into locked
      from (select u.name from cluster_users u
             where u.cluster_id = p_cluster
               and u.name = any(array[p_name, p_heir,
                                      (select s.reassign_to from cluster_users s
                                        where s.cluster_id = p_cluster and s.name = p_name and p_stored)])
             order by u.name for update) l;
    heir := case when p_stored
                 then (select u.reassign_to from cluster_users u where u.cluster_id = p_cluster and u.name = p_name)
                 else p_heir end;
    -- A stored heir that changed before the lock was granted is not held: no answer here.
    if heir is not null and not heir = any(locked) then
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

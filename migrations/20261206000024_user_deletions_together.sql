-- Deletion requests for one cluster's users that arrive while another is being written are
-- marked together, in one transaction (`Store::request_user_deletion`, `store/batches.rs`):
-- one commit, one bump of the cluster's generation and of its listing version, and one wake-up
-- for them all, where each request paid for its own (under 16 requests in flight the commits
-- queued on the cluster's row). The judgement is `pgplane_request_user_deletion`'s (migrations
-- 22 and 23), request by request:
--
-- - Every row the requests concern (the users, the heirs they name, the heirs their rows hold)
--   is locked first, in name order, in one statement, as every writer of a cluster's users
--   locks them (ARCHITECTURE.md, "The order rows are locked in").
-- - Then, in a statement of its own (which sees every pool and deletion committed before the
--   locks were granted), a user is marked absent unless it is the primary user, its heir is
--   not a present user, a pool logs in as it, or it inherits from a pending deletion.
-- - A request is left unanswered (no row) when its user's row or its heir's is not among the
--   rows held, when its heir is deleted by another request of the same batch, or when it names
--   as heir a user another request deletes. The store then asks again for that request alone
--   (this function, with one name, in a transaction that holds the rows first), which answers
--   as before (404, 409, 422, or the mark), after this batch's commit.
--
-- No rows change; the single-request function stays for old replicas, which call it.
create function pgplane_request_user_deletions(
    p_cluster uuid, p_names text[], p_heirs text[], p_stored boolean[],
    p_absent text, p_present text, p_primary text, p_kept text, p_after_write text)
returns table (marked text, written_generation bigint, written_at timestamptz)
language plpgsql as $$
declare
    locked text[];
begin
    select array_agg(h.name) into locked
      from (select u.name
              from cluster_users u
             where u.cluster_id = p_cluster
               and u.name = any(p_names || p_heirs
                                || array(select s.reassign_to
                                           from unnest(p_names, p_stored) as q(name, stored)
                                           join cluster_users s on s.cluster_id = p_cluster and s.name = q.name
                                          where q.stored and s.reassign_to is not null))
             order by u.name
               for update) h;
    return query
    with asked as (
        select q.name, case when q.stored then s.reassign_to else q.heir end as heir
          from unnest(p_names, p_heirs, p_stored) as q(name, heir, stored)
          join cluster_users s on s.cluster_id = p_cluster and s.name = q.name
    ), judged as (
        select a.name, a.heir
          from asked a
         where a.name = any(locked)
           and (a.heir is null or a.heir = any(locked))
           and not exists (select 1 from asked o where o.heir = a.name)
           and not exists (select 1 from asked o where o.name = a.heir)
    )
    update cluster_users u
       set state = p_absent, generation = u.generation + 1, updated_at = now(),
           sync_status = case when u.sync_status = p_kept then p_kept else p_after_write end,
           reassign_to = j.heir
      from judged j
     where u.cluster_id = p_cluster and u.name = j.name and u.role <> p_primary
       and (j.heir is null
            or exists (select 1 from cluster_users h
                        where h.cluster_id = p_cluster and h.name = j.heir and h.state = p_present))
       and not exists (select 1 from cluster_pools p where p.cluster_id = p_cluster and p.user_name = j.name)
       and not exists (select 1 from cluster_users h
                        where h.cluster_id = p_cluster and h.state = p_absent and h.reassign_to = j.name)
    returning u.name, u.generation, u.updated_at;
end $$;

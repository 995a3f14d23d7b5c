-- A deletion batch's statements (migration 24's `pgplane_request_user_deletions`) look up each
-- user they name in the primary key, one lookup per name. Where the statistics take a cluster
-- for a few rows (a fresh metadata database has none, and a cluster's users grow faster than
-- autovacuum analyzes them), `name = any(…)` and the join with the requests were planned as
-- scans of every user of the cluster: on a cluster of 1,000 users each batch read its 1,250
-- index entries and 900 rows twice, to mark a handful.
--
-- What the function does is unchanged (migration 24's header): every row concerned is locked
-- first in one statement, in name order (the names, sorted, drive the lookups, each taking its
-- row's lock), then each request is judged in a statement of its own. The lookups are kept
-- apart from the rest of their statement (`offset 0`, or the lock), so that the planner cannot
-- turn them back into a join over the cluster's rows. No rows change.
create or replace function pgplane_request_user_deletions(
    p_cluster uuid, p_names text[], p_heirs text[], p_stored boolean[],
    p_absent text, p_present text, p_primary text, p_kept text, p_after_write text)
returns table (marked text, written_generation bigint, written_at timestamptz)
language plpgsql as $$
declare
    locked text[];
begin
    select array_agg(l.name) into locked
      from unnest(array(
               select distinct k.name
                 from unnest(p_names || p_heirs
                             || array(select s.reassign_to
                                        from unnest(p_names, p_stored) as q(name, stored),
                                             lateral (select u.reassign_to from cluster_users u
                                                       where u.cluster_id = p_cluster and u.name = q.name
                                                      offset 0) s
                                       where q.stored)) as k(name)
                where k.name is not null
                order by k.name)) as k(name),
           lateral (select u.name from cluster_users u
                     where u.cluster_id = p_cluster and u.name = k.name
                       for update) l;
    return query
    with asked as (
        select q.name, case when q.stored then s.reassign_to else q.heir end as heir
          from unnest(p_names, p_heirs, p_stored) as q(name, heir, stored),
               lateral (select u.reassign_to from cluster_users u
                         where u.cluster_id = p_cluster and u.name = q.name offset 0) s
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

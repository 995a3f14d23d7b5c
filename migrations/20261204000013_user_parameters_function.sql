-- A user's parameters as one JSON array (every database's first, then each database's, by
-- name), read by the store's user queries (`parameters` of pgplane_core::model::User) so that
-- the query is written once. Nothing changes in the rows.
create function user_parameters(cluster uuid, username text) returns jsonb
    language sql stable
    return (select coalesce(jsonb_agg(jsonb_build_object('name', p.name, 'value', p.value,
                                                         'database', p.database_name)
                                      order by p.database_name nulls first, p.name), '[]')
              from cluster_user_parameters p
             where p.cluster_id = cluster and p.user_name = username);

//! The audit log: one row per mutating API request, readable by the team that made it.

use uuid::Uuid;

use super::Store;
use crate::error::Result;
use crate::model::{AuditEvent, ClusterEvent};

/// What the gateway records about a mutating request.
#[derive(Debug, Clone)]
pub struct NewAuditEvent {
    pub team_id: Uuid,
    pub token_id: String,
    /// For example "user.create", "database.delete", "cluster.register".
    pub action: String,
    pub cluster_id: Option<Uuid>,
    /// The user or database name, when the request names one.
    pub object: Option<String>,
    pub status: u16,
    pub request_id: Option<String>,
    /// What the request chose beyond its path, as a JSON object (a deleted user's heir and
    /// ownership mode), if anything.
    pub detail: Option<String>,
}

impl Store {
    /// Appends events, in one statement (and one commit), in order.
    pub async fn record_audit_events(&self, events: &[NewAuditEvent]) -> Result<()> {
        let column = |f: fn(&NewAuditEvent) -> Option<&str>| events.iter().map(f).collect::<Vec<_>>();
        let teams: Vec<Uuid> = events.iter().map(|e| e.team_id).collect();
        let clusters: Vec<Option<Uuid>> = events.iter().map(|e| e.cluster_id).collect();
        let statuses: Vec<i32> = events.iter().map(|e| i32::from(e.status)).collect();
        sqlx::query!(
            "insert into audit_events (team_id, token_id, action, cluster_id, object, status, request_id, detail)
             select t, k, a, c, o, s, r, d from unnest($1::uuid[], $2::text[], $3::text[], $4::uuid[], $5::text[], $6::int4[],
                                  $7::text[], $8::text[]) with ordinality as e(t, k, a, c, o, s, r, d, n)
              order by n",
            &teams,
            &column(|e| Some(e.token_id.as_str())) as &[Option<&str>],
            &column(|e| Some(e.action.as_str())) as &[Option<&str>],
            &clusters as &[Option<Uuid>],
            &column(|e| e.object.as_deref()) as &[Option<&str>],
            &statuses,
            &column(|e| e.request_id.as_deref()) as &[Option<&str>],
            &column(|e| e.detail.as_deref()) as &[Option<&str>]
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A team's most recent events, newest first, optionally for one cluster.
    pub async fn list_audit_events(
        &self,
        team_id: Uuid,
        cluster_id: Option<Uuid>,
        limit: i64,
    ) -> Result<Vec<AuditEvent>> {
        Ok(sqlx::query_as!(
            AuditEvent,
            "select event_id, at, team_id, token_id, action, cluster_id, object, status, request_id, detail
               from audit_events
              where team_id = $1 and ($2::uuid is null or cluster_id = $2)
              order by event_id desc limit $3",
            team_id,
            cluster_id,
            limit
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// A cluster's event log, newest first: the changes made to it through the API (answered
    /// with success; dry runs left out) and the drift found on its objects.
    pub async fn cluster_events(&self, cluster_id: Uuid, limit: i64) -> Result<Vec<ClusterEvent>> {
        let rows = sqlx::query!(
            r#"select id as "id!", action as "action!", object, at as "at!" from (
                   select 'audit-' || event_id as id, replace(action, '.', '_') as action, object, at
                     from audit_events
                    where cluster_id = $1 and status < 400 and action not like '%dry_run'
                   union all
                   select 'drift-' || event_id, kind || case when repaired_at is null then '_drift_found'
                                                            else '_drift_repaired' end,
                          name, coalesce(repaired_at, found_at)
                     from drift_events where cluster_id = $1
               ) e order by at desc, id desc limit $2"#,
            cluster_id,
            limit
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| ClusterEvent { id: r.id, action: r.action, object: r.object, at: r.at })
            .collect())
    }
}

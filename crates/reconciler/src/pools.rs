//! One small deadpool-postgres pool per cluster, to its admin database: the sessions a pass
//! runs on. Rebuilt when the registration changes; closed when the cluster is gone.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use pgplane_target::{SessionLimits, TargetError, TargetSpec, CONNECT_TIMEOUT};
use uuid::Uuid;

/// One small pool per cluster, to its admin database; rebuilt when the registration changes.
#[derive(Default)]
pub(crate) struct Pools {
    pools: Mutex<HashMap<Uuid, (TargetSpec, Pool)>>,
}

impl Pools {
    /// The pool for a cluster, created on first use.
    pub(crate) fn get(
        &self,
        cluster_id: Uuid,
        spec: &TargetSpec,
        limits: SessionLimits,
    ) -> Result<Pool, TargetError> {
        let mut pools = self.pools.lock().expect("pools lock");
        if let Some((known, pool)) = pools.get(&cluster_id) {
            if known == spec {
                return Ok(pool.clone());
            }
        }
        let pool = pool_for(spec, limits, 2)?;
        if let Some((_, old)) = pools.insert(cluster_id, (spec.clone(), pool.clone())) {
            old.close();
        }
        Ok(pool)
    }

    /// Closes pools of clusters that are no longer registered.
    pub(crate) fn retain(&self, keep: impl Fn(&Uuid) -> bool) {
        self.pools.lock().expect("pools lock").retain(|id, (_, pool)| {
            let kept = keep(id);
            if !kept {
                pool.close();
            }
            kept
        });
    }
}

/// A pool of up to `max_size` sessions to the target's admin database.
pub(crate) fn pool_for(
    spec: &TargetSpec,
    limits: SessionLimits,
    max_size: usize,
) -> Result<Pool, TargetError> {
    let manager = Manager::from_config(
        spec.config(spec.admin_database(), limits)?,
        spec.tls()?,
        ManagerConfig { recycling_method: RecyclingMethod::Fast },
    );
    Ok(Pool::builder(manager)
        .max_size(max_size)
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .create_timeout(Some(CONNECT_TIMEOUT))
        .wait_timeout(Some(Duration::from_secs(30)))
        .build()
        .expect("pool configuration is valid"))
}

//! The state every handler shares: the metadata store, the sealer (and the cache of opened
//! credentials), the token authenticator, the registration prober, the waiter that learns when
//! reconcile passes finish, and what bounds and keeps users listings.

use std::sync::Arc;

use tokio::sync::Semaphore;

use pgplane_core::secrets::Sealer;
use pgplane_core::Store;

use crate::audit::AuditWriter;
use crate::auth::Authenticator;
use crate::probes::Prober;
use crate::rate::Limiter;
use crate::rendered::RenderedListings;
use crate::wait::Waiter;
use crate::GatewayConfig;
use pgplane_core::credentials::CredentialsCache;

/// Shared handler state; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub(crate) store: Store,
    pub(crate) sealer: Sealer,
    pub(crate) credentials: CredentialsCache,
    pub(crate) config: Arc<GatewayConfig>,
    pub(crate) auth: Arc<Authenticator>,
    pub(crate) limiter: Arc<Limiter>,
    pub(crate) prober: Arc<Prober>,
    pub(crate) waiter: Arc<Waiter>,
    /// Permits to build answers that list a cluster's users (see `listing`).
    pub(crate) listings: Arc<Semaphore>,
    /// Users listings kept rendered (see `rendered`).
    pub(crate) rendered: RenderedListings,
    pub(crate) audit: AuditWriter,
}

impl AppState {
    pub fn new(store: Store, sealer: Sealer, config: GatewayConfig) -> Self {
        Self {
            auth: Authenticator::start(store.clone(), config.auth_failures),
            limiter: Arc::new(Limiter::new(config.rate_limit_per_minute)),
            prober: Arc::new(Prober::new(
                config.target_policy.clone(),
                config.probes_per_minute,
                store.clone(),
            )),
            waiter: Waiter::start(&store),
            audit: AuditWriter::start(store.clone()),
            listings: crate::listing::permits(),
            rendered: RenderedListings::new(),
            credentials: CredentialsCache::new(sealer.clone()),
            store,
            sealer,
            config: Arc::new(config),
        }
    }
}

//! The sessions one pgplane process may hold on each target server at once
//! (`--max-sessions-per-server`), however many clusters the server hosts. Every session pgplane
//! opens on a target takes one of its server's permits before connecting and holds it until the
//! connection has really closed ([`crate::wire`]): passes' pooled sessions, plan previews,
//! dependency reports, listings, access visits and registration probes alike. One budget is made
//! per process (by its composition root) and shared by the API and the reconciler; with several
//! replicas each process has its own.
//!
//! A server is its lowest checked address and its port. A session opened by a caller that
//! already holds one there (a pass or a report visiting another database) must not wait behind
//! callers that would then wait for it: sessions opened first ([`Opening::First`]) may take at
//! most all permits but one, so that one is always left, in time, for the sessions opened
//! beside them ([`Opening::Beside`]), which hold nothing else while they wait.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::TargetError;

/// A target server: its lowest checked address and its port.
pub type ServerKey = (Option<IpAddr>, u16);

/// Whether the caller already holds a session on the server (see the module's header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opening {
    /// The caller holds no session on the server.
    First,
    /// The caller holds another session on the server while this one is open.
    Beside,
}

/// Asked to close an idle session on a server whose permits are all taken (the reconciler's
/// pools keep idle sessions for a while).
pub trait GiveWay: Send + Sync {
    fn give_way(&self, server: ServerKey);
}

/// The per-server budget of a process. Cheap to clone; clones share it.
#[derive(Clone)]
pub struct SessionBudget(Arc<Inner>);

struct Inner {
    per_server: usize,
    servers: Mutex<HashMap<ServerKey, Server>>,
    give_way: Mutex<Vec<Weak<dyn GiveWay>>>,
}

/// One server's permits: `all` counts every session, `first` those opened first.
#[derive(Clone)]
struct Server {
    all: Arc<Semaphore>,
    first: Arc<Semaphore>,
}

/// A session's hold on its server, given back when dropped.
#[derive(Debug)]
pub struct SessionPermit {
    _first: Option<OwnedSemaphorePermit>,
    _all: OwnedSemaphorePermit,
}

impl SessionBudget {
    /// A budget of `per_server` sessions on each server (at least two: a pass holds one while
    /// it visits another database).
    pub fn new(per_server: usize) -> Self {
        Self(Arc::new(Inner {
            per_server: per_server.max(2),
            servers: Mutex::default(),
            give_way: Mutex::default(),
        }))
    }

    /// The sessions allowed on each server.
    pub fn per_server(&self) -> usize {
        self.0.per_server
    }

    /// Asks `hook` to close an idle session whenever a server's permits are all taken.
    pub fn on_shortage(&self, hook: Weak<dyn GiveWay>) {
        let mut hooks = self.0.give_way.lock().expect("budget lock");
        hooks.retain(|h| h.strong_count() > 0);
        hooks.push(hook);
    }

    /// Whether a session could be opened on `server` at once.
    pub fn available(&self, server: ServerKey, opening: Opening) -> bool {
        let s = self.server(server);
        s.all.available_permits() > 0 && (opening == Opening::Beside || s.first.available_permits() > 0)
    }

    /// A permit for a session on `server`, waiting up to `wait` for one (idle sessions there are
    /// asked to give way first); refused with [`TargetError::Busy`] after that.
    pub async fn acquire(
        &self,
        server: ServerKey,
        opening: Opening,
        wait: Duration,
    ) -> Result<SessionPermit, TargetError> {
        let s = self.server(server);
        if let Some(permit) = s.try_take(opening) {
            return Ok(permit);
        }
        let hooks: Vec<_> =
            self.0.give_way.lock().expect("budget lock").iter().filter_map(Weak::upgrade).collect();
        for hook in hooks {
            hook.give_way(server);
        }
        tokio::time::timeout(wait, s.take(opening)).await.map_err(|_| {
            TargetError::Busy(format!(
                "all {} sessions pgplane may hold on the target server were busy for {} s; try again shortly",
                self.0.per_server,
                wait.as_secs().max(1)
            ))
        })
    }

    /// `server`'s permits, made on first use; servers with no session and no waiter are
    /// forgotten then, so that the map does not grow with the servers ever reached.
    fn server(&self, key: ServerKey) -> Server {
        let mut servers = self.0.servers.lock().expect("budget lock");
        if let Some(s) = servers.get(&key) {
            return s.clone();
        }
        servers.retain(|_, s| Arc::strong_count(&s.all) > 1);
        let per_server = self.0.per_server;
        let s = Server {
            all: Arc::new(Semaphore::new(per_server)),
            first: Arc::new(Semaphore::new(per_server - 1)),
        };
        servers.insert(key, s.clone());
        s
    }
}

impl Server {
    fn try_take(&self, opening: Opening) -> Option<SessionPermit> {
        let first = match opening {
            Opening::First => Some(self.first.clone().try_acquire_owned().ok()?),
            Opening::Beside => None,
        };
        let all = self.all.clone().try_acquire_owned().ok()?;
        Some(SessionPermit { _first: first, _all: all })
    }

    async fn take(&self, opening: Opening) -> SessionPermit {
        let first = match opening {
            Opening::First => Some(self.first.clone().acquire_owned().await.expect("never closed")),
            Opening::Beside => None,
        };
        let all = self.all.clone().acquire_owned().await.expect("never closed");
        SessionPermit { _first: first, _all: all }
    }
}

impl PartialEq for SessionBudget {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for SessionBudget {}

impl std::fmt::Debug for SessionBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionBudget").field("per_server", &self.0.per_server).finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVER: ServerKey = (None, 5432);
    const NOW: Duration = Duration::from_millis(20);

    #[tokio::test]
    async fn sessions_opened_first_leave_one_for_those_opened_beside_them() {
        let budget = SessionBudget::new(3);
        let a = budget.acquire(SERVER, Opening::First, NOW).await.unwrap();
        let _b = budget.acquire(SERVER, Opening::First, NOW).await.unwrap();
        let refused = budget.acquire(SERVER, Opening::First, NOW).await.unwrap_err();
        assert!(matches!(refused, TargetError::Busy(_)), "{refused}");
        assert!(refused.to_string().contains("all 3 sessions"), "{refused}");
        let beside = budget.acquire(SERVER, Opening::Beside, NOW).await.unwrap();
        assert!(budget.acquire(SERVER, Opening::Beside, NOW).await.is_err(), "three in all");
        drop(beside);
        assert!(budget.available(SERVER, Opening::Beside));
        drop(a);
        budget.acquire(SERVER, Opening::First, NOW).await.unwrap();
        // Another server has its own permits.
        budget.acquire((None, 5433), Opening::First, NOW).await.unwrap();
    }

    struct Closer(Mutex<Option<SessionPermit>>);

    impl GiveWay for Closer {
        fn give_way(&self, _: ServerKey) {
            self.0.lock().unwrap().take();
        }
    }

    #[tokio::test]
    async fn idle_sessions_are_asked_to_give_way() {
        let budget = SessionBudget::new(2);
        let idle = budget.acquire(SERVER, Opening::First, NOW).await.unwrap();
        let closer: Arc<dyn GiveWay> = Arc::new(Closer(Mutex::new(Some(idle))));
        budget.on_shortage(Arc::downgrade(&closer));
        budget.acquire(SERVER, Opening::First, NOW).await.expect("the idle session gave way");
    }

    #[tokio::test]
    async fn servers_without_sessions_are_forgotten() {
        let budget = SessionBudget::new(2);
        drop(budget.acquire((None, 1), Opening::First, NOW).await.unwrap());
        let _held = budget.acquire((None, 2), Opening::First, NOW).await.unwrap();
        budget.acquire((None, 3), Opening::First, NOW).await.unwrap();
        let servers = budget.0.servers.lock().unwrap();
        assert!(!servers.contains_key(&(None, 1)) && servers.contains_key(&(None, 2)));
    }
}

//! Users lists kept rendered: the JSON of a cluster's users as `GET …/users` shows them, and as
//! a cluster's own answer (`GET /v2/databases[/{id}]`) does, one per cluster and kind of caller
//! (with the passwords or without), served again while nothing it shows can have changed. That
//! is while the cluster's listing version, which the metadata database moves in every
//! transaction that changes the cluster's users, their parameters and access levels, or its
//! databases (migration `listing_versions`), is the one the answer was rendered at, and the
//! clock has not reached the first expiry or end of a grace the answer shows. An answer is kept
//! as raw JSON, shared: served as a body without a copy, or embedded without being parsed again.
//!
//! The version is read with the cluster before the rows are read, so an answer is at least as
//! new as its version says; one that is newer is only rendered again sooner than needed. Every
//! replica keeps its own answers and checks them against the version on every request, so a
//! change made through any replica (or by a reconcile pass) is seen by all at once. The team
//! check comes first, and an answer with passwords is only given to callers who may see them.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use chrono::{DateTime, Utc};
use moka::sync::Cache;
use pgplane_core::model::Cluster;
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::error::ApiError;

/// Most bytes of rendered answers kept, over every cluster (about 300 kB per thousand users).
const CAPACITY_BYTES: u64 = 64 << 20;
/// How long an answer that no request has used stays.
const IDLE: Duration = Duration::from_secs(300);

#[derive(Clone)]
struct Rendered {
    version: i64,
    /// When the clock alone changes what it shows (an expiry reached, a grace ended).
    fresh_until: Option<DateTime<Utc>>,
    body: Arc<RawValue>,
}

/// Which list of users a cluster's answer shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Shape {
    /// `GET …/users`: `{"users": [...]}`, each user with its access levels.
    Listing,
    /// The `users` array of the cluster's own answer.
    InCluster,
}

/// Which answer: its shape, its cluster's, with the passwords or without.
type Key = (Shape, Uuid, bool);

/// Rendered users listings, bounded by their size.
#[derive(Clone)]
pub(crate) struct RenderedListings {
    answers: Cache<Key, Rendered>,
}

impl RenderedListings {
    pub fn new() -> Self {
        let answers = Cache::builder()
            .max_capacity(CAPACITY_BYTES)
            .weigher(|_, r: &Rendered| u32::try_from(r.body.get().len()).unwrap_or(u32::MAX))
            .time_to_idle(IDLE)
            .build();
        Self { answers }
    }

    /// The answer rendered for a cluster whose listing version was just read as `version`, if
    /// nothing it shows has changed since.
    pub fn get(
        &self,
        shape: Shape,
        cluster_id: Uuid,
        version: Option<i64>,
        with_passwords: bool,
    ) -> Option<Arc<RawValue>> {
        let kept = self.answers.get(&(shape, cluster_id, with_passwords))?;
        let fresh = kept.fresh_until.is_none_or(|until| Utc::now() < until);
        (Some(kept.version) == version && fresh).then_some(kept.body)
    }

    /// Keeps an answer rendered from rows read after the cluster's listing version `version`
    /// (none: not kept).
    pub fn keep(
        &self,
        shape: Shape,
        cluster_id: Uuid,
        version: Option<i64>,
        with_passwords: bool,
        body: Arc<RawValue>,
        fresh_until: Option<DateTime<Utc>>,
    ) {
        if let Some(version) = version {
            self.answers.insert((shape, cluster_id, with_passwords), Rendered { version, fresh_until, body });
        }
    }

    /// The answer of `shape` for `cluster` (as just read, with its listing version): the kept
    /// one, else what `render` makes (given the clock, read before it reads anything), kept.
    pub async fn get_or_render<F, Fut>(
        &self,
        shape: Shape,
        cluster: &Cluster,
        with_passwords: bool,
        render: F,
    ) -> Result<Arc<RawValue>, ApiError>
    where
        F: FnOnce(DateTime<Utc>) -> Fut,
        Fut: Future<Output = Result<Rendering, ApiError>>,
    {
        let (id, version) = (cluster.cluster_id, cluster.listing_version);
        if let Some(body) = self.get(shape, id, version, with_passwords) {
            return Ok(body);
        }
        let Rendering { body, fresh_until } = render(Utc::now()).await?;
        let body = Arc::from(body);
        self.keep(shape, id, version, with_passwords, Arc::clone(&body), fresh_until);
        Ok(body)
    }
}

/// A kept answer as an HTTP body, sharing its bytes.
pub(crate) fn http_body(json: Arc<RawValue>) -> Bytes {
    struct Shared(Arc<RawValue>);
    impl AsRef<[u8]> for Shared {
        fn as_ref(&self) -> &[u8] {
            self.0.get().as_bytes()
        }
    }
    Bytes::from_owner(Shared(json))
}

/// An answer as rendered, and when the clock alone changes it (None: never).
pub(crate) struct Rendering {
    pub body: Box<RawValue>,
    pub fresh_until: Option<DateTime<Utc>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_is_served_only_at_its_version_before_its_clock_runs_out_to_its_kind_of_caller() {
        let kept = RenderedListings::new();
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let body: Arc<RawValue> = RawValue::from_string(r#"{"users":[]}"#.into()).unwrap().into();
        let got = |shape, id, version, with_passwords| {
            kept.get(shape, id, version, with_passwords).map(|json| json.get().to_string())
        };
        let text = Some(body.get().to_string());
        kept.keep(Shape::Listing, a, Some(7), true, body.clone(), None);
        assert_eq!(got(Shape::Listing, a, Some(7), true), text);
        assert_eq!(got(Shape::Listing, a, Some(8), true), None, "the cluster's rows changed since");
        assert_eq!(got(Shape::Listing, a, Some(7), false), None, "rendered with passwords, asked without");
        assert_eq!(got(Shape::Listing, b, Some(7), true), None, "another cluster");
        assert_eq!(got(Shape::Listing, a, None, true), None, "no version read");

        let soon = Utc::now() + chrono::Duration::hours(1);
        kept.keep(Shape::Listing, a, Some(8), false, body.clone(), Some(soon));
        assert_eq!(got(Shape::Listing, a, Some(8), false), text);
        kept.keep(Shape::Listing, a, Some(8), false, body.clone(), Some(Utc::now()));
        assert_eq!(got(Shape::Listing, a, Some(8), false), None, "an expiry it shows was reached");

        assert_eq!(got(Shape::InCluster, a, Some(8), false), None, "the cluster's answer is another");
        kept.keep(Shape::Listing, b, None, false, body.clone(), None);
        assert_eq!(got(Shape::Listing, b, None, false), None, "nothing kept without a version");
        assert_eq!(&http_body(body)[..], br#"{"users":[]}"#, "served as it was kept");
    }
}

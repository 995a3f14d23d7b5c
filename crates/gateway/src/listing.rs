//! Bounds how many answers that list a cluster's users are being built at once. Such an answer
//! holds every user's row, its view and its JSON (about a megabyte per thousand users) until it
//! is written; a burst of reads waits for a permit instead of growing memory with the burst.
//! The work is CPU time and a metadata query, so a few per core keep the cores busy.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::ApiError;
use crate::state::AppState;

/// Answers built at once: four per core, at least eight.
pub(crate) fn permits() -> Arc<Semaphore> {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    Arc::new(Semaphore::new((4 * cores).max(8)))
}

/// Held by a handler that lists a cluster's users, for as long as it runs.
pub(crate) struct ListingPermit {
    _held: OwnedSemaphorePermit,
}

impl FromRequestParts<AppState> for ListingPermit {
    type Rejection = ApiError;

    async fn from_request_parts(_: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let permit = state.listings.clone().acquire_owned().await.map_err(|_| ApiError::internal())?;
        Ok(Self { _held: permit })
    }
}

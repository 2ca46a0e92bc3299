//! What the SQL stores share: how values are stored and read back, and the
//! endpoint cache.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use time::OffsetDateTime;

use super::StoreError;
use crate::delivery::{Delivery, DeliveryState, EndpointId};
use crate::endpoint::{Endpoint, EndpointRecord};

pub(super) fn backend(error: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::Backend(Box::new(error))
}

/// A stored value that could not be read back.
#[derive(Debug, thiserror::Error)]
#[error("corrupt {what} in the database: {reason}")]
struct Corrupt {
    what: &'static str,
    reason: String,
}

pub(super) fn corrupt(what: &'static str, reason: impl std::fmt::Display) -> StoreError {
    backend(Corrupt {
        what,
        reason: reason.to_string(),
    })
}

/// Nanoseconds since the Unix epoch, the form times are indexed in
/// (1677 to 2262; times outside are clamped).
pub(super) fn nanos(at: OffsetDateTime) -> i64 {
    i64::try_from(at.unix_timestamp_nanos()).unwrap_or(if at.year() < 1970 {
        i64::MIN
    } else {
        i64::MAX
    })
}

pub(super) fn from_nanos(n: i64) -> Result<OffsetDateTime, StoreError> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(n)).map_err(|e| corrupt("timestamp", e))
}

/// When a finished delivery finished.
pub(super) fn finished_at(delivery: &Delivery) -> Option<OffsetDateTime> {
    match delivery.state() {
        DeliveryState::Delivered { at } | DeliveryState::Failed { at, .. } => Some(*at),
        _ => None,
    }
}

pub(super) fn to_json<T: serde::Serialize>(
    value: &T,
    what: &'static str,
) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| corrupt(what, e))
}

pub(super) fn from_json<T: serde::de::DeserializeOwned>(
    text: &str,
    what: &'static str,
) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| corrupt(what, e))
}

/// The claim count as stored (a count that large never happens).
pub(super) fn claims(delivery: &Delivery) -> i64 {
    i64::try_from(delivery.claims()).unwrap_or(i64::MAX)
}

/// Endpoints built from their records, kept while their row's revision is
/// unchanged (building one keys its HMAC states, which is worth skipping on
/// every publish and claim).
#[derive(Default)]
pub(super) struct EndpointCache {
    built: Mutex<HashMap<EndpointId, (i64, Arc<Endpoint>)>>,
}

impl EndpointCache {
    /// The endpoint of a row: from the cache if `revision` is current, else
    /// built from `record`.
    pub(super) fn get(
        &self,
        id: &str,
        revision: i64,
        record: impl FnOnce() -> Result<String, StoreError>,
        enabled: bool,
    ) -> Result<Arc<Endpoint>, StoreError> {
        let id = EndpointId::new(id).map_err(|e| corrupt("endpoint id", e))?;
        if let Some((cached, endpoint)) = self.lock().get(&id) {
            if *cached == revision {
                return Ok(Arc::clone(endpoint));
            }
        }
        let record: EndpointRecord = from_json(&record()?, "endpoint record")?;
        let mut endpoint = Endpoint::from_record(record).map_err(|e| corrupt("endpoint", e))?;
        endpoint.set_enabled(enabled);
        let endpoint = Arc::new(endpoint);
        self.lock().insert(id, (revision, Arc::clone(&endpoint)));
        Ok(endpoint)
    }

    /// The cached endpoint, if it is built from `revision`.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(super) fn current(&self, id: &str, revision: i64) -> Option<Arc<Endpoint>> {
        self.lock()
            .get(id)
            .filter(|(cached, _)| *cached == revision)
            .map(|(_, endpoint)| Arc::clone(endpoint))
    }

    /// Forgets an endpoint this process changed.
    pub(super) fn forget(&self, id: &EndpointId) {
        self.lock().remove(id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<EndpointId, (i64, Arc<Endpoint>)>> {
        self.built.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

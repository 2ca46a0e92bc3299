//! The transport: [`Dispatcher`] sends one signed request.
//!
//! The delivery engine talks to the network only through this trait, so any
//! HTTP client can be plugged in. The `reqwest` feature provides one with
//! connection pooling, TLS 1.2+, HTTPS required by default and an SSRF
//! guard; [`testing::ScriptedDispatcher`](crate::testing::ScriptedDispatcher)
//! records requests and plays scripted answers for tests.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use bytes::Bytes;

pub use crate::retry::TransportErrorKind;

/// The default cap on how much of a response body a dispatcher reads (the
/// rest is discarded): enough for an error message in the delivery log.
pub const DEFAULT_MAX_RESPONSE_BODY: usize = 64 * 1024;

/// Sends one signed webhook request.
///
/// Implementations must:
///
/// - send `request` as given (method, URI, headers, body), following no
///   redirects;
/// - give up after `timeout` (connecting, sending and reading the response
///   together) with [`TransportErrorKind::Timeout`];
/// - read at most a bounded number of response body bytes (see
///   [`DEFAULT_MAX_RESPONSE_BODY`]) and return the rest of the response as
///   received, whatever its status: classifying it is the caller's job;
/// - never put secrets (URL credentials, headers) into a [`TransportError`]
///   message;
/// - present the [`ClientIdentity`](crate::endpoint::ClientIdentity) found in
///   the request's extensions as the TLS client certificate, or, if they
///   cannot, refuse the request with a [`TransportError`] of kind
///   [`TransportErrorKind::RefusedByPolicy`] rather than send it without the
///   certificate (over plain `http://` there is no TLS and it is ignored).
///
/// The returned future must be `Send`, so the engine can run it on any tokio
/// worker.
pub trait Dispatcher: Send + Sync + 'static {
    /// Sends `request`, waiting at most `timeout`.
    fn send(
        &self,
        request: http::Request<Bytes>,
        timeout: Duration,
    ) -> impl Future<Output = Result<http::Response<Bytes>, TransportError>> + Send;
}

impl<D: Dispatcher> Dispatcher for std::sync::Arc<D> {
    fn send(
        &self,
        request: http::Request<Bytes>,
        timeout: Duration,
    ) -> impl Future<Output = Result<http::Response<Bytes>, TransportError>> + Send {
        (**self).send(request, timeout)
    }
}

/// Why a request got no HTTP response.
#[derive(Clone, PartialEq, Eq)]
pub struct TransportError {
    kind: TransportErrorKind,
    message: String,
}

impl TransportError {
    /// An error of `kind` with a human-readable `message` (which must hold no
    /// secrets).
    pub fn new(kind: TransportErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    /// What went wrong, for classification and retries.
    pub fn kind(&self) -> TransportErrorKind {
        self.kind
    }

    /// The detail, for the delivery log.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Debug for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TransportError")
            .field("kind", &self.kind)
            .field("message", &self.message)
            .finish()
    }
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.message.is_empty() {
            write!(f, "{}", self.kind)
        } else {
            write!(f, "{}: {}", self.kind, self.message)
        }
    }
}

impl std::error::Error for TransportError {}

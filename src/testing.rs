//! Test doubles for users' own tests: a [`Dispatcher`] that records every
//! request and answers from a script, with no network.
//!
//! ```
//! use std::time::Duration;
//! use hookway::testing::{Reply, ScriptedDispatcher};
//! use hookway::dispatch::{Dispatcher, TransportErrorKind};
//!
//! let dispatcher = ScriptedDispatcher::new()
//!     .reply(Reply::status(503))
//!     .reply(Reply::error(TransportErrorKind::Timeout));
//! // Afterwards every request gets the fallback, 200 OK by default.
//!
//! # let run = async {
//! let request = http::Request::post("https://example.com/hook").body("{}".into())?;
//! let first = dispatcher.send(request.clone(), Duration::from_secs(30)).await?;
//! assert_eq!(first.status(), 503);
//! assert!(dispatcher.send(request.clone(), Duration::from_secs(30)).await.is_err());
//! assert_eq!(dispatcher.send(request, Duration::from_secs(30)).await?.status(), 200);
//! assert_eq!(dispatcher.requests().len(), 3);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # };
//! # futures_executor_block_on(run).unwrap();
//! # fn futures_executor_block_on<F: std::future::Future>(f: F) -> F::Output {
//! #     // The future is ready at once; poll it with a no-op waker.
//! #     let mut f = std::pin::pin!(f);
//! #     let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
//! #     match f.as_mut().poll(&mut cx) { std::task::Poll::Ready(v) => v, _ => unreachable!() }
//! # }
//! ```

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

use crate::dispatch::{Dispatcher, TransportError, TransportErrorKind};

/// One scripted answer: a response, or a transport error.
#[derive(Clone, Debug)]
pub struct Reply(ReplyKind);

#[derive(Clone, Debug)]
enum ReplyKind {
    Response {
        status: StatusCode,
        headers: HeaderMap,
        body: Bytes,
    },
    Error(TransportErrorKind),
}

impl Reply {
    /// A response with `status` and an empty body.
    ///
    /// # Panics
    ///
    /// Panics if `status` is not between 100 and 999.
    pub fn status(status: u16) -> Self {
        Self(ReplyKind::Response {
            status: StatusCode::from_u16(status).expect("a status between 100 and 999"),
            headers: HeaderMap::new(),
            body: Bytes::new(),
        })
    }

    /// A transport error of `kind`: no response at all.
    pub fn error(kind: TransportErrorKind) -> Self {
        Self(ReplyKind::Error(kind))
    }

    /// Adds a response header (ignored on an error reply).
    ///
    /// # Panics
    ///
    /// Panics if `name` or `value` is not valid in a header.
    #[must_use]
    pub fn header(mut self, name: &str, value: &str) -> Self {
        if let ReplyKind::Response { headers, .. } = &mut self.0 {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).expect("a valid header name"),
                HeaderValue::from_str(value).expect("a valid header value"),
            );
        }
        self
    }

    /// Sets the response body (ignored on an error reply).
    #[must_use]
    pub fn body(mut self, bytes: impl Into<Bytes>) -> Self {
        if let ReplyKind::Response { body, .. } = &mut self.0 {
            *body = bytes.into();
        }
        self
    }

    fn into_result(self) -> Result<http::Response<Bytes>, TransportError> {
        match self.0 {
            ReplyKind::Response {
                status,
                headers,
                body,
            } => {
                let mut response = http::Response::new(body);
                *response.status_mut() = status;
                *response.headers_mut() = headers;
                Ok(response)
            }
            ReplyKind::Error(kind) => Err(TransportError::new(kind, "scripted")),
        }
    }
}

/// A request as the dispatcher saw it.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    /// The request, body included.
    pub request: http::Request<Bytes>,
    /// The timeout it was sent with.
    pub timeout: Duration,
}

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<Reply>,
    by_uri: HashMap<String, VecDeque<Reply>>,
    requests: Vec<RecordedRequest>,
}

/// A [`Dispatcher`] that records requests and answers from a script.
///
/// Each request takes the next reply queued for its exact URI
/// ([`reply_for`](Self::reply_for)), else the next from the shared queue
/// ([`reply`](Self::reply)), else the fallback ([`otherwise`](Self::otherwise),
/// 200 OK by default).
#[derive(Debug)]
pub struct ScriptedDispatcher {
    state: Mutex<State>,
    fallback: Reply,
}

impl Default for ScriptedDispatcher {
    fn default() -> Self {
        Self::new()
    }
}

impl ScriptedDispatcher {
    /// A dispatcher that answers 200 OK to everything.
    pub fn new() -> Self {
        Self {
            state: Mutex::new(State::default()),
            fallback: Reply::status(200),
        }
    }

    /// Queues a reply for the next request to any URI.
    #[must_use]
    pub fn reply(self, reply: Reply) -> Self {
        self.lock().queue.push_back(reply);
        self
    }

    /// Queues a reply for the next request to exactly `uri`.
    #[must_use]
    pub fn reply_for(self, uri: &str, reply: Reply) -> Self {
        self.lock()
            .by_uri
            .entry(uri.to_owned())
            .or_default()
            .push_back(reply);
        self
    }

    /// The reply once the script has run out.
    #[must_use]
    pub fn otherwise(mut self, reply: Reply) -> Self {
        self.fallback = reply;
        self
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.lock().requests.clone()
    }

    /// The requests received so far for `uri`.
    pub fn requests_for(&self, uri: &str) -> Vec<RecordedRequest> {
        self.lock()
            .requests
            .iter()
            .filter(|r| r.request.uri() == uri)
            .cloned()
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Dispatcher for ScriptedDispatcher {
    fn send(
        &self,
        request: http::Request<Bytes>,
        timeout: Duration,
    ) -> impl Future<Output = Result<http::Response<Bytes>, TransportError>> + Send {
        let mut state = self.lock();
        let uri = request.uri().to_string();
        let reply = state
            .by_uri
            .get_mut(&uri)
            .and_then(VecDeque::pop_front)
            .or_else(|| state.queue.pop_front())
            .unwrap_or_else(|| self.fallback.clone());
        state.requests.push(RecordedRequest { request, timeout });
        std::future::ready(reply.into_result())
    }
}

#![doc = include_str!("../README.md")]
//!
//! # Where things are
//!
//! - [`event`]: the envelope ([`Event`], [`MessageId`], [`EventType`],
//!   [`EventFilter`]).
//! - [`secret`]: key material ([`Secret`], [`Keyring`]) and which constructor
//!   fits which provider.
//! - [`scheme`]: every supported signature layout ([`Scheme`]).
//! - [`Signer`] and [`Verifier`]: the two sides; [`error`] for what can go
//!   wrong.
//! - [`retry`]: [`RetryPolicy`](retry::RetryPolicy) and the classification of
//!   delivery attempts into an [`Outcome`](retry::Outcome).
//! - [`dispatch`]: the [`Dispatcher`](dispatch::Dispatcher) transport trait;
//!   [`testing`] has a scripted one for tests.
//! - [`clock`]: the one place that reads wall time.
//! - `receive` (feature `receive`): the receiving pipeline, `Receiver`, with
//!   de-duplication, typed routing and inline, queued or durable-inbox
//!   processing; the axum adapter (feature `axum`) serves it.
//!
//! `Signer` and `Verifier` share their names with RustCrypto's `signature`
//! traits; if you use both, refer to these as `hookway::Signer` and
//! `hookway::Verifier`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

/// Adapters to third-party HTTP stacks, each behind its own cargo feature.
#[cfg(any(feature = "reqwest", feature = "axum"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "reqwest", feature = "axum"))))]
pub mod adapters;
pub mod clock;
pub mod delivery;
pub mod dispatch;
pub mod endpoint;
pub mod error;
pub mod event;
pub mod oauth;
#[cfg(feature = "outbox")]
#[cfg_attr(docsrs, doc(cfg(feature = "outbox")))]
pub mod outbox;
mod random;
#[cfg(feature = "receive")]
#[cfg_attr(docsrs, doc(cfg(feature = "receive")))]
pub mod receive;
pub mod retry;
pub mod scheme;
pub mod secret;
mod serde_util;
mod sign;
pub mod store;
pub mod testing;
mod verify;

pub use error::{KeyError, SignError, VerifyError};
pub use event::{Event, EventFilter, EventType, MessageId};
pub use scheme::{Algorithm, Encoding, Scheme};
pub use secret::{Key, Keyring, Secret};
pub use sign::{SignEventError, Signer};
pub use verify::{Verified, Verifier, DEFAULT_TOLERANCE};

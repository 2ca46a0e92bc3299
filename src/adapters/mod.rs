//! The core of hookway speaks only `http` types; these modules connect it to
//! a concrete client or server. None of them is compiled by default, so the
//! default build pulls no async runtime, HTTP stack or TLS library.
//!
//! | feature | module | provides |
//! | --- | --- | --- |
//! | `reqwest` | [`reqwest`](crate::adapters::reqwest) | [`ReqwestDispatcher`](crate::adapters::reqwest::ReqwestDispatcher): a pooled HTTPS [`Dispatcher`](crate::dispatch::Dispatcher) with an SSRF guard |
//! | `axum` | [`axum`](crate::adapters::axum) | [`webhook`](crate::adapters::axum::webhook) and [`router`](crate::adapters::axum::router) to mount a [`Receiver`](crate::receive::Receiver) at any path; the [`VerifiedEvent`](crate::adapters::axum::VerifiedEvent) extractor |

#[cfg(feature = "reqwest")]
#[cfg_attr(docsrs, doc(cfg(feature = "reqwest")))]
pub mod reqwest;

#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub mod axum;

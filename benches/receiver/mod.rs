//! The loopback receiver of the `outbox` bench: a small hyper HTTP/1.1
//! server on 127.0.0.1, run in its own process (the bench starts its own
//! executable again with `HOOKWAY_BENCH_ROLE=receiver`), so its work is not
//! scheduled on the runtime being measured.
//!
//! It prints `listening <port>` on stdout, then serves:
//!
//! - `POST /ok`: reads the body, counts the request, answers 200 with an
//!   empty body (the throughput rounds);
//! - `POST /log`: as `/ok`, and logs the `webhook-id` header with the
//!   wall-clock time the whole request had arrived (the latency phase);
//! - `POST /flaky/<pct>`: as `/log`, but answers 500 to the first request of
//!   about `pct`% of message ids (chosen by a hash of the id, so the choice
//!   does not depend on arrival order) and 200 to every later one;
//! - `GET /stats`: the number of requests answered 2xx since `/reset`;
//! - `GET /records`: the log as `<id> <status> <unix-nanos>` lines, and
//!   clears it (and the first-attempt memory of `/flaky`);
//! - `GET /reset`: sets the counter to 0.
//!
//! It exits when its standard input closes (the bench ends or drops it), and
//! in any case after `OUTBOX_BENCH_RECEIVER_LIFETIME_SECS` (default 900).

use std::collections::HashSet;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::io::{Read as _, Write as _};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use hookway::clock::Clock as _;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

/// The environment variable that selects a role in the bench executable.
pub const ROLE_ENV: &str = "HOOKWAY_BENCH_ROLE";

/// Starts the receiver as a child process of the bench executable.
pub fn spawn() -> crate::process::Process {
    crate::process::Process::spawn(ROLE_ENV, "receiver")
}

/// One logged request.
struct Record {
    id: String,
    status: u16,
    at_ns: i128,
}

#[derive(Default)]
struct State {
    ok: AtomicU64,
    log: Mutex<Vec<Record>>,
    /// Message ids whose first request `/flaky` already failed.
    failed_once: Mutex<HashSet<String>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Wall-clock time, read the way the Outbox reads it.
fn unix_nanos() -> i128 {
    hookway::clock::SystemClock.now().unix_timestamp_nanos()
}

/// FNV-1a, so "which ids fail" is the same in every run.
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn reply(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
}

async fn handle(
    state: Arc<State>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    if method == Method::GET {
        return Ok(match path.as_str() {
            "/stats" => reply(StatusCode::OK, state.ok.load(Ordering::Relaxed).to_string()),
            "/reset" => {
                state.ok.store(0, Ordering::Relaxed);
                reply(StatusCode::OK, "")
            }
            "/records" => {
                let records = std::mem::take(&mut *lock(&state.log));
                lock(&state.failed_once).clear();
                let mut text = String::with_capacity(records.len() * 64);
                for r in records {
                    let _ = writeln!(text, "{} {} {}", r.id, r.status, r.at_ns);
                }
                reply(StatusCode::OK, text)
            }
            _ => reply(StatusCode::NOT_FOUND, ""),
        });
    }
    let id = request
        .headers()
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    // Read the whole body, as a real receiver must before it can verify.
    let complete = request.into_body().collect().await.is_ok();
    let at_ns = unix_nanos();
    if !complete {
        return Ok(reply(StatusCode::BAD_REQUEST, ""));
    }
    let status = if path == "/ok" || path == "/log" {
        StatusCode::OK
    } else if let Some(pct) = path
        .strip_prefix("/flaky/")
        .and_then(|p| p.parse::<u64>().ok())
    {
        let id = id.as_deref().unwrap_or("");
        let fail = fnv1a(id) % 100 < pct && lock(&state.failed_once).insert(id.to_owned());
        if fail {
            StatusCode::INTERNAL_SERVER_ERROR
        } else {
            StatusCode::OK
        }
    } else {
        return Ok(reply(StatusCode::NOT_FOUND, ""));
    };
    if status.is_success() {
        state.ok.fetch_add(1, Ordering::Relaxed);
    }
    if path != "/ok" {
        lock(&state.log).push(Record {
            id: id.unwrap_or_default(),
            status: status.as_u16(),
            at_ns,
        });
    }
    Ok(reply(status, ""))
}

/// Runs the receiver until standard input closes.
pub fn run() {
    let threads = std::env::var("OUTBOX_BENCH_RECEIVER_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(2)
        .max(1);
    let lifetime = std::env::var("OUTBOX_BENCH_RECEIVER_LIFETIME_SECS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(900);
    // Stop when the bench closes our stdin (or dies), or after `lifetime`.
    std::thread::spawn(|| {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
        std::process::exit(0);
    });
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(lifetime));
        eprintln!("bench receiver: lifetime of {lifetime} s reached, exiting");
        std::process::exit(1);
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .expect("receiver runtime");
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1");
        let port = listener.local_addr().expect("local address").port();
        let mut out = std::io::stdout();
        writeln!(out, "listening {port}").expect("stdout");
        out.flush().expect("stdout");
        let state = Arc::new(State::default());
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let state = Arc::clone(&state);
            tokio::spawn(async move {
                let service = service_fn(move |request| handle(Arc::clone(&state), request));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
}

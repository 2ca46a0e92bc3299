//! The receiving side end to end over loopback HTTP: verified requests per
//! second through the axum adapter (`adapters::axum::webhook`) beside a
//! bare axum handler that does no verification, on the same server. See
//! BENCHMARKS.md, "Receiving (axum)".
//!
//! Not a criterion bench (`harness = false`): each measurement is a whole
//! run of tens of thousands of requests timed with `Instant`, and the bench
//! prints its own tables.
//!
//! `cargo bench --bench receive --features axum,reqwest`
//!
//! The server (one axum app, one tokio runtime) runs in a second process:
//! this executable started again with `HOOKWAY_BENCH_ROLE=server`. It
//! serves, on 127.0.0.1:
//!
//! - `POST /bare`: a bare handler, `Bytes` in, `200` out, no verification
//!   (it counts the request: the same trivial work as the handlers below);
//! - `POST /verify` (diagnostic): `HeaderMap` and `Bytes` in,
//!   `Verifier::verify`, `200`: what the signature alone costs;
//! - `POST /manual` (diagnostic): as `/verify`, then the body parsed as a
//!   `serde_json::Value`: a verifying handler written by hand, without
//!   de-duplication or routing;
//! - `POST /hookway`: `webhook(receiver)`: a Standard Webhooks `Verifier`,
//!   the default envelope, one route `on::<serde_json::Value>("bench.*")`
//!   whose handler counts the event, the default `MemoryIdempotencyStore`,
//!   inline processing (the default);
//! - `POST /queued`: the same receiver with `Processing::queued`;
//! - `GET /stats`: one counter per path.
//!
//! This process is the load generator: a fixed number of keep-alive HTTP/1.1
//! connections (hyper's client connection, one task per connection, one
//! request at a time on each), on its own tokio runtime. Every request is
//! signed before its round starts, with a unique message id, so the timed
//! window holds only HTTP and the server's work, and de-duplication never
//! short-circuits. The body is the same 4 KiB Standard Webhooks payload
//! (`{"type","timestamp","data"}`, no `id`: the receiver takes the signed
//! `webhook-id`) for every request and every path.
//!
//! Each round runs every contender once, in an order that rotates. Each
//! run must get the expected status for every request, and the server's
//! counter for its path must rise by exactly the number sent (for the
//! hookway paths the route's handler counts, so every request was
//! verified and processed); a tampered body must get 401 first. The tables
//! give requests per second and the ratio to `bare` per round, CPU time
//! per request of the server and of this process (`/proc/<pid>/stat`), and
//! how many CPUs other processes kept busy meanwhile (`/proc/stat`), which
//! shows a disturbed round.
//!
//! Sizes come from environment variables (defaults in brackets). Run
//! without a `--bench` argument (as `cargo test --benches` does), the
//! defaults shrink to a smoke run of about a second; pass `--bench` when
//! running the executable by hand.
//!
//! | variable | meaning |
//! | --- | --- |
//! | `RECEIVE_BENCH_ROUNDS` | measured rounds; the order of the contenders rotates each round [10] |
//! | `RECEIVE_BENCH_REQUESTS` | requests per contender per round (and a fifth of that per contender to warm up) [30000] |
//! | `RECEIVE_BENCH_CONCURRENCY` | connections, each with one request in flight [64] |
//! | `RECEIVE_BENCH_PAYLOAD` | body bytes (JSON) [4096] |
//! | `RECEIVE_BENCH_CONTENDERS` | which paths, comma-separated; `bare` is required [bare,verify,manual,hookway,queued] |
//! | `RECEIVE_BENCH_CLIENT_THREADS` | tokio worker threads of the load generator [2] |
//! | `RECEIVE_BENCH_SERVER_THREADS` | tokio worker threads of the server [2] |
//! | `RECEIVE_BENCH_QUEUE` | `/queued`: queue capacity and workers [4096,2] |
//! | `RECEIVE_BENCH_PROFILE` | one contender's name: run only its rounds, no warm-up, no tables (for `perf record -p <server pid>`) |

mod process;

use std::fmt;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hookway::clock::{Clock as _, SystemClock};
use hookway::{EventType, MessageId, Scheme, Secret, Signer};
use http::header::{HeaderValue, CONTENT_TYPE, HOST};
use http::{HeaderMap, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt as _, Empty, Full};
use hyper_util::rt::TokioIo;
use serde::Serialize;

/// The environment variable that selects a role in the bench executable.
const ROLE_ENV: &str = "HOOKWAY_BENCH_ROLE";
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const EVENT_TYPE: EventType = EventType::from_static("bench.event");

fn secret() -> Secret {
    Secret::base64(SECRET).expect("secret")
}

fn env_usize(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a whole number")),
        Err(_) => default,
    }
}

// ---------------------------------------------------------------------------
// Contenders
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Contender {
    /// `POST /bare`: axum, `Bytes`, 200; no verification.
    Bare,
    /// `POST /verify`: `Bytes`, `Verifier::verify`, 200 (diagnostic: the
    /// cost of the signature alone).
    Verify,
    /// `POST /manual`: `Bytes`, `Verifier::verify`, `serde_json::Value`,
    /// 200 (diagnostic: a hand-written verifying handler, without
    /// de-duplication or routing).
    Manual,
    /// `POST /hookway`: `webhook(receiver)`, inline processing.
    Hookway,
    /// `POST /queued`: `webhook(receiver)`, acknowledge-then-process.
    Queued,
}

impl Contender {
    const ALL: [Contender; 5] = [
        Contender::Bare,
        Contender::Verify,
        Contender::Manual,
        Contender::Hookway,
        Contender::Queued,
    ];

    fn name(self) -> &'static str {
        match self {
            Self::Bare => "bare",
            Self::Verify => "verify",
            Self::Manual => "manual",
            Self::Hookway => "hookway",
            Self::Queued => "queued",
        }
    }

    fn parse(name: &str) -> Self {
        Self::ALL
            .into_iter()
            .find(|c| c.name() == name.trim())
            .unwrap_or_else(|| {
                panic!("unknown contender {name:?} (bare, verify, manual, hookway, queued)")
            })
    }

    fn path(self) -> &'static str {
        match self {
            Self::Bare => "/bare",
            Self::Verify => "/verify",
            Self::Manual => "/manual",
            Self::Hookway => "/hookway",
            Self::Queued => "/queued",
        }
    }

    /// The status every request of this contender must get.
    fn status(self) -> StatusCode {
        match self {
            Self::Queued => StatusCode::ACCEPTED,
            _ => StatusCode::OK,
        }
    }

    /// Its counter in the server's `/stats`.
    fn count(self, stats: Stats) -> u64 {
        stats.0[self as usize]
    }
}

impl fmt::Display for Contender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

// ---------------------------------------------------------------------------
// Settings
// ---------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct Config {
    rounds: usize,
    requests: usize,
    concurrency: usize,
    payload: usize,
    contenders: Vec<Contender>,
    client_threads: usize,
}

impl Config {
    fn from_env(quick: bool) -> Self {
        let pick = |full: usize, smoke: usize| if quick { smoke } else { full };
        let contenders = std::env::var("RECEIVE_BENCH_CONTENDERS")
            .unwrap_or_else(|_| "bare,verify,manual,hookway,queued".to_owned());
        let contenders: Vec<Contender> = contenders.split(',').map(Contender::parse).collect();
        assert!(
            contenders.contains(&Contender::Bare),
            "RECEIVE_BENCH_CONTENDERS must include bare, the baseline"
        );
        Self {
            rounds: env_usize("RECEIVE_BENCH_ROUNDS", pick(10, 1)).max(1),
            requests: env_usize("RECEIVE_BENCH_REQUESTS", pick(30_000, 2000)).max(1),
            concurrency: env_usize("RECEIVE_BENCH_CONCURRENCY", 64).max(1),
            payload: env_usize("RECEIVE_BENCH_PAYLOAD", 4096),
            contenders,
            client_threads: env_usize("RECEIVE_BENCH_CLIENT_THREADS", 2).max(1),
        }
    }
}

// ---------------------------------------------------------------------------
// The payload
// ---------------------------------------------------------------------------

#[derive(Serialize)]
struct Data<'a> {
    ticket: &'static str,
    pad: &'a str,
}

/// A Standard Webhooks body (`type`, `timestamp`, `data`) of exactly `size`
/// bytes, when that is at least the size of the empty shape.
fn body(size: usize) -> Bytes {
    #[derive(Serialize)]
    struct Body<'a> {
        #[serde(rename = "type")]
        event_type: &'a str,
        #[serde(with = "time::serde::rfc3339")]
        timestamp: time::OffsetDateTime,
        data: Data<'a>,
    }
    let timestamp = SystemClock
        .now()
        .replace_nanosecond(0)
        .expect("whole seconds");
    let make = |pad: &str| {
        serde_json::to_vec(&Body {
            event_type: EVENT_TYPE.as_str(),
            timestamp,
            data: Data {
                ticket: "tkt_01HZX3",
                pad,
            },
        })
        .expect("serialise")
    };
    let empty = make("").len();
    let pad = "x".repeat(size.saturating_sub(empty));
    Bytes::from(make(&pad))
}

// ---------------------------------------------------------------------------
// The server process
// ---------------------------------------------------------------------------

mod server {
    use std::io::{Read as _, Write as _};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    use axum::extract::State;
    use axum::routing::{get, post};
    use axum::Router;
    use bytes::Bytes;
    use hookway::adapters::axum::webhook;
    use hookway::receive::{Processing, Receiver};
    use hookway::{Event, Scheme, Verifier};
    use http::{HeaderMap, StatusCode};

    use super::Contender;

    struct Counters {
        /// One per contender, in `Contender` order.
        counts: [AtomicU64; Contender::ALL.len()],
        verifier: Verifier,
    }

    impl Counters {
        fn add(&self, contender: Contender) {
            self.counts[contender as usize].fetch_add(1, Ordering::Relaxed);
        }
    }

    async fn bare(State(counters): State<Arc<Counters>>, _body: Bytes) -> StatusCode {
        counters.add(Contender::Bare);
        StatusCode::OK
    }

    async fn verify(
        State(counters): State<Arc<Counters>>,
        headers: HeaderMap,
        body: Bytes,
    ) -> StatusCode {
        match counters.verifier.verify(&headers, &body) {
            Ok(_) => {
                counters.add(Contender::Verify);
                StatusCode::OK
            }
            Err(_) => StatusCode::UNAUTHORIZED,
        }
    }

    async fn manual(
        State(counters): State<Arc<Counters>>,
        headers: HeaderMap,
        body: Bytes,
    ) -> StatusCode {
        if counters.verifier.verify(&headers, &body).is_err() {
            return StatusCode::UNAUTHORIZED;
        }
        match serde_json::from_slice::<serde_json::Value>(&body) {
            Ok(event) if event["data"].is_object() => {
                counters.add(Contender::Manual);
                StatusCode::OK
            }
            _ => StatusCode::BAD_REQUEST,
        }
    }

    async fn stats(State(counters): State<Arc<Counters>>) -> String {
        let counts: Vec<String> = counters
            .counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed).to_string())
            .collect();
        counts.join(" ")
    }

    /// A receiver whose one route counts the events it gets.
    fn receiver(
        processing: Processing,
        count: impl Fn(&Event) + Send + Sync + 'static,
    ) -> Receiver {
        let verifier = Verifier::new(Scheme::standard(), super::secret()).expect("verifier");
        let count = Arc::new(count);
        Receiver::builder(verifier)
            .on("bench.*", move |event: Event<serde_json::Value>| {
                let count = Arc::clone(&count);
                async move {
                    count(&event);
                    Ok(())
                }
            })
            .processing(processing)
            .build()
            .expect("receiver")
    }

    /// Runs the server until standard input closes.
    pub fn run() {
        let threads = super::env_usize("RECEIVE_BENCH_SERVER_THREADS", 2).max(1);
        let queue = std::env::var("RECEIVE_BENCH_QUEUE").unwrap_or_else(|_| "4096,2".to_owned());
        let (capacity, workers) = queue
            .split_once(',')
            .and_then(|(c, w)| Some((c.trim().parse().ok()?, w.trim().parse().ok()?)))
            .unwrap_or_else(|| panic!("RECEIVE_BENCH_QUEUE={queue:?}: want capacity,workers"));
        // Stop when the bench closes our stdin (or dies).
        std::thread::spawn(|| {
            let mut sink = Vec::new();
            let _ = std::io::stdin().read_to_end(&mut sink);
            std::process::exit(0);
        });
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
            .expect("server runtime");
        runtime.block_on(async {
            let counters = Arc::new(Counters {
                counts: Default::default(),
                verifier: Verifier::new(Scheme::standard(), super::secret()).expect("verifier"),
            });
            let inline = {
                let c = Arc::clone(&counters);
                receiver(Processing::inline(), move |event| {
                    if event.data.is_object() {
                        c.add(Contender::Hookway);
                    }
                })
            };
            let queued = {
                let c = Arc::clone(&counters);
                receiver(Processing::queued(capacity, workers), move |event| {
                    if event.data.is_object() {
                        c.add(Contender::Queued);
                    }
                })
            };
            let app = Router::new()
                .route("/bare", post(bare))
                .route("/verify", post(verify))
                .route("/manual", post(manual))
                .route("/hookway", webhook(inline))
                .route("/queued", webhook(queued))
                .route("/stats", get(stats))
                .with_state(counters);
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind 127.0.0.1");
            let port = listener.local_addr().expect("local address").port();
            let mut out = std::io::stdout();
            writeln!(out, "listening {port}").expect("stdout");
            out.flush().expect("stdout");
            axum::serve(listener, app).await.expect("serve");
        });
    }
}

// ---------------------------------------------------------------------------
// Measuring
// ---------------------------------------------------------------------------

/// CPU time the whole machine has been busy (every state but idle and
/// iowait), from the first line of `/proc/stat`, in seconds (10 ms ticks).
fn machine_busy_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is
    // already counted in user).
    let busy: u64 = ticks
        .iter()
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, t)| t)
        .sum();
    busy as f64 / 100.0
}

#[derive(Clone, Copy)]
struct CpuMark {
    client: f64,
    server: f64,
    machine: f64,
}

impl CpuMark {
    fn now(server_pid: u32) -> Self {
        Self {
            client: process::cpu_seconds("self"),
            server: process::cpu_seconds(&server_pid.to_string()),
            machine: machine_busy_seconds(),
        }
    }
}

/// One contender's round.
#[derive(Clone, Copy)]
struct Measured {
    n: usize,
    elapsed: Duration,
    client_cpu: f64,
    server_cpu: f64,
    /// CPU seconds the rest of the machine used meanwhile.
    others_cpu: f64,
}

impl Measured {
    /// How many CPUs other processes kept busy on average: a disturbed
    /// round shows here.
    fn others_cpus(&self) -> f64 {
        (self.others_cpu / self.elapsed.as_secs_f64()).max(0.0)
    }

    fn rate(&self) -> f64 {
        self.n as f64 / self.elapsed.as_secs_f64()
    }

    fn client_us(&self) -> f64 {
        self.client_cpu * 1e6 / self.n as f64
    }

    fn server_us(&self) -> f64 {
        self.server_cpu * 1e6 / self.n as f64
    }
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The median; of an even count, the mean of the middle two.
fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    if v.len().is_multiple_of(2) && !v.is_empty() {
        (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
    } else {
        quantile(&v, 0.5)
    }
}

// ---------------------------------------------------------------------------
// The load generator
// ---------------------------------------------------------------------------

type Conn = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// The server's counters, one per contender.
#[derive(Clone, Copy, Debug, Default)]
struct Stats([u64; Contender::ALL.len()]);

struct Load {
    config: Config,
    port: u16,
    host: HeaderValue,
    body: Bytes,
    signer: Signer,
    server_pid: u32,
    /// One per connection, handed to its task for a round and back.
    conns: Vec<Option<Conn>>,
    /// The next message id's number: ids are unique over the whole run.
    next_id: u64,
}

async fn connect(port: u16) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            eprintln!("client connection: {e}");
        }
    });
    sender
}

impl Load {
    async fn new(config: Config, port: u16, server_pid: u32) -> Self {
        let mut conns = Vec::with_capacity(config.concurrency);
        for _ in 0..config.concurrency {
            conns.push(Some(connect(port).await));
        }
        Self {
            body: body(config.payload),
            host: HeaderValue::from_str(&format!("127.0.0.1:{port}")).expect("host"),
            signer: Signer::new(Scheme::standard(), secret()).expect("signer"),
            config,
            port,
            server_pid,
            conns,
            next_id: 0,
        }
    }

    /// The server's counters, over a connection of their own.
    async fn stats(&self) -> Stats {
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .expect("connect");
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
                .await
                .expect("handshake");
        tokio::spawn(conn);
        let request = Request::get("/stats")
            .header(HOST, self.host.clone())
            .body(Empty::new())
            .expect("request");
        let response = sender.send_request(request).await.expect("stats");
        let text = response.into_body().collect().await.expect("stats body");
        let text = String::from_utf8_lossy(&text.to_bytes()).into_owned();
        let mut stats = Stats::default();
        for (slot, v) in stats.0.iter_mut().zip(text.split_whitespace()) {
            *slot = v.parse().expect("a count");
        }
        stats
    }

    /// `n` requests' headers, signed now with fresh ids, dealt out to the
    /// connections.
    fn sign(&mut self, n: usize) -> Vec<Vec<HeaderMap>> {
        let c = self.config.concurrency;
        let mut dealt: Vec<Vec<HeaderMap>> =
            (0..c).map(|_| Vec::with_capacity(n / c + 1)).collect();
        let now = SystemClock.now();
        for i in 0..n {
            let id = MessageId::new(format!("msg_{:026}", self.next_id)).expect("message id");
            self.next_id += 1;
            let mut headers = self.signer.sign(&id, now, &self.body).expect("sign");
            headers.insert(HOST, self.host.clone());
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            dealt[i % c].push(headers);
        }
        dealt
    }

    /// Sends `n` signed requests to `contender` over every connection, and
    /// waits until the server has counted all of them (for `queued`, until
    /// the workers have run every handler). Panics on any other status.
    async fn round(&mut self, contender: Contender, n: usize) -> Measured {
        let dealt = self.sign(n);
        let before = contender.count(self.stats().await);
        let uri: Uri = contender.path().parse().expect("uri");
        let expected = contender.status();
        let mark = CpuMark::now(self.server_pid);
        let started = Instant::now();
        let mut tasks = Vec::with_capacity(dealt.len());
        for (slot, headers) in self.conns.iter_mut().zip(dealt) {
            let mut conn = slot.take().expect("connection");
            let (uri, body) = (uri.clone(), self.body.clone());
            tasks.push(tokio::spawn(async move {
                let mut unexpected: Option<StatusCode> = None;
                for headers in headers {
                    conn.ready().await.expect("connection ready");
                    let mut request = Request::new(Full::new(body.clone()));
                    *request.method_mut() = Method::POST;
                    *request.uri_mut() = uri.clone();
                    *request.headers_mut() = headers;
                    let response = conn.send_request(request).await.expect("response");
                    let status = response.status();
                    response.into_body().collect().await.expect("response body");
                    if status != expected {
                        unexpected.get_or_insert(status);
                    }
                }
                (conn, unexpected)
            }));
        }
        let mut unexpected = None;
        for (slot, task) in self.conns.iter_mut().zip(tasks) {
            let (conn, bad) = task.await.expect("connection task");
            *slot = Some(conn);
            unexpected = unexpected.or(bad);
        }
        // Every response is in; for the queue, wait for its workers too.
        let mut counted = contender.count(self.stats().await) - before;
        let deadline = Instant::now() + Duration::from_secs(60);
        while counted < n as u64 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(1)).await;
            counted = contender.count(self.stats().await) - before;
        }
        let elapsed = started.elapsed();
        let now = CpuMark::now(self.server_pid);
        if let Some(status) = unexpected {
            panic!("{contender}: a request was answered {status}, not {expected}");
        }
        assert_eq!(
            counted, n as u64,
            "{contender}: the server counted {counted} of {n} requests"
        );
        let (client_cpu, server_cpu) = (now.client - mark.client, now.server - mark.server);
        Measured {
            n,
            elapsed,
            client_cpu,
            server_cpu,
            others_cpu: now.machine - mark.machine - client_cpu - server_cpu,
        }
    }

    /// A request the receiver must refuse: the body changed after signing.
    async fn check_refuses_tampered(&mut self) {
        let mut dealt = self.sign(1);
        let headers = dealt[0].pop().expect("one request");
        let mut tampered = self.body.to_vec();
        let last = tampered.len() - 3;
        tampered[last] ^= 0x01;
        for contender in Contender::ALL.into_iter().skip(1) {
            let conn = self.conns[0].as_mut().expect("connection");
            conn.ready().await.expect("ready");
            let mut request = Request::new(Full::new(Bytes::from(tampered.clone())));
            *request.method_mut() = Method::POST;
            *request.uri_mut() = contender.path().parse().expect("uri");
            *request.headers_mut() = headers.clone();
            let response = conn.send_request(request).await.expect("response");
            let status = response.status();
            response.into_body().collect().await.expect("body");
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{contender}: tampered body"
            );
        }
    }
}

// ---------------------------------------------------------------------------
// Rounds and tables
// ---------------------------------------------------------------------------

struct Round {
    by: Vec<(Contender, Measured)>,
}

impl Round {
    fn get(&self, contender: Contender) -> Measured {
        self.by
            .iter()
            .find(|(c, _)| *c == contender)
            .map(|(_, m)| *m)
            .expect("contender ran")
    }

    fn ratio(&self, contender: Contender) -> f64 {
        self.get(contender).rate() / self.get(Contender::Bare).rate()
    }

    /// The most CPUs other processes kept busy during any of the round's
    /// runs.
    fn others_cpus(&self) -> f64 {
        self.by
            .iter()
            .map(|(_, m)| m.others_cpus())
            .fold(0.0, f64::max)
    }
}

/// The order of round `round`: rotated so no contender is always first.
fn order(contenders: &[Contender], round: usize) -> Vec<Contender> {
    let mut order = contenders.to_vec();
    let len = order.len();
    order.rotate_left(round % len);
    order
}

async fn measure(load: &mut Load) -> Vec<Round> {
    let config = load.config.clone();
    load.check_refuses_tampered().await;
    // Warm-up: connections, allocator, the stores' first entries; not
    // recorded.
    for &contender in &config.contenders {
        load.round(contender, (config.requests / 5).max(1)).await;
    }
    let mut rounds = Vec::new();
    for round in 0..config.rounds {
        let mut by = Vec::new();
        for contender in order(&config.contenders, round) {
            let m = load.round(contender, config.requests).await;
            by.push((contender, m));
        }
        let r = Round { by };
        let mut line = format!("round {}:", round + 1);
        for &contender in &config.contenders {
            let m = r.get(contender);
            line.push_str(&format!(
                " {contender} {:.0}/s ({:.3}× bare; CPU µs/request server {:.1}, client {:.1});",
                m.rate(),
                r.ratio(contender),
                m.server_us(),
                m.client_us()
            ));
        }
        println!(
            "{}; other processes: up to {:.2} CPUs",
            line.trim_end_matches(';'),
            r.others_cpus()
        );
        rounds.push(r);
    }
    rounds
}

fn print_tables(config: &Config, rounds: &[Round]) {
    let med = |f: &dyn Fn(&Round) -> f64| median(&rounds.iter().map(f).collect::<Vec<_>>());
    let others: Vec<Contender> = config
        .contenders
        .iter()
        .copied()
        .filter(|c| *c != Contender::Bare)
        .collect();
    println!(
        "### Throughput ({} requests per contender per round, {} connections, {}-byte bodies)\n",
        config.requests,
        config.concurrency,
        body(config.payload).len()
    );
    let mut head = String::from("| round |");
    let mut rule = String::from("| --- |");
    for c in &config.contenders {
        head.push_str(&format!(" {} |", label(*c)));
        rule.push_str(" --- |");
    }
    for c in &others {
        head.push_str(&format!(" **{} / bare** |", c));
        rule.push_str(" --- |");
    }
    head.push_str(" other processes (CPUs) |");
    rule.push_str(" --- |");
    println!("{head}\n{rule}");
    let row = |name: String,
               rate: &dyn Fn(Contender) -> f64,
               ratio: &dyn Fn(Contender) -> f64,
               disturbance: String| {
        let mut line = format!("| {name} |");
        for c in &config.contenders {
            line.push_str(&format!(" {:.0}/s |", rate(*c)));
        }
        for c in &others {
            line.push_str(&format!(" **{:.3}×** |", ratio(*c)));
        }
        line.push_str(&format!(" {disturbance} |"));
        println!("{line}");
    };
    for (i, r) in rounds.iter().enumerate() {
        row(
            (i + 1).to_string(),
            &|c| r.get(c).rate(),
            &|c| r.ratio(c),
            format!("{:.2}", r.others_cpus()),
        );
    }
    row(
        "**median**".to_owned(),
        &|c| med(&|r| r.get(c).rate()),
        &|c| med(&|r| r.ratio(c)),
        String::new(),
    );
    println!();
    println!(
        "CPU time per request (µs), median over the rounds; the last column is what the \
         throughput ratio tends to when the two processes have the two CPUs to themselves:\n"
    );
    println!("| contender | server process | load generator | both | bare's both ÷ this both |");
    println!("| --- | --- | --- | --- | --- |");
    let both = |r: &Round, c: Contender| r.get(c).server_us() + r.get(c).client_us();
    for &c in &config.contenders {
        println!(
            "| {} | {:.1} | {:.1} | {:.1} | {:.3}× |",
            label(c),
            med(&|r| r.get(c).server_us()),
            med(&|r| r.get(c).client_us()),
            med(&|r| both(r, c)),
            med(&|r| both(r, Contender::Bare) / both(r, c)),
        );
    }
    println!();
}

fn label(c: Contender) -> &'static str {
    match c {
        Contender::Bare => "bare axum handler",
        Contender::Verify => "verify only",
        Contender::Manual => "verify + `Value`",
        Contender::Hookway => "hookway, inline",
        Contender::Queued => "hookway, queued",
    }
}

fn main() {
    if std::env::var(ROLE_ENV).as_deref() == Ok("server") {
        return server::run();
    }
    // `cargo bench` passes `--bench`; `cargo test --benches` does not, and
    // gets a smoke run instead of the full measurement.
    let quick = !std::env::args().any(|a| a == "--bench");
    let config = Config::from_env(quick);
    if quick {
        println!("no --bench argument: smoke run with small sizes (use `cargo bench`)");
    }
    println!("hookway receive bench: {config:?}");
    let total = Instant::now();
    let server = process::Process::spawn(ROLE_ENV, "server");
    let server_pid = server.child.id();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.client_threads)
        .enable_all()
        .build()
        .expect("runtime");
    let rounds = runtime.block_on(async {
        let mut load = Load::new(config.clone(), server.port, server_pid).await;
        println!(
            "server pid {server_pid}, port {}; body {} bytes",
            server.port,
            load.body.len()
        );
        if let Ok(only) = std::env::var("RECEIVE_BENCH_PROFILE") {
            // One contender only, for `perf record -p <server pid>`.
            let contender = Contender::parse(&only);
            for _ in 0..config.rounds {
                let m = load.round(contender, config.requests).await;
                println!(
                    "{contender} {:.0}/s, CPU µs/request: server {:.1}, client {:.1}",
                    m.rate(),
                    m.server_us(),
                    m.client_us()
                );
            }
            return Vec::new();
        }
        measure(&mut load).await
    });
    drop(runtime);
    drop(server);
    if !rounds.is_empty() {
        println!();
        print_tables(&config, &rounds);
    }
    println!("total time {:.1} s", total.elapsed().as_secs_f64());
}

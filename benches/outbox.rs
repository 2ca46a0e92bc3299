//! The Outbox end to end over loopback HTTP: throughput beside a plain
//! reqwest loop, publish → receiver latency, lateness of retries against
//! their due time, and memory per pending delivery. See BENCHMARKS.md.
//!
//! Not a criterion bench (`harness = false`): each measurement is a whole
//! run of thousands of requests timed with `Instant`, and the bench prints
//! its own tables.
//!
//! `cargo bench --bench outbox --features outbox,reqwest`
//!
//! The receiver (a hyper HTTP/1.1 server, `benches/receiver/mod.rs`) runs in
//! a second process: this executable started again with
//! `HOOKWAY_BENCH_ROLE=receiver`. Each memory measurement runs in a fresh
//! process too (`HOOKWAY_BENCH_ROLE=memory`), so memory freed by earlier
//! phases cannot hide growth. Everything binds 127.0.0.1 only.
//!
//! Sizes come from environment variables (defaults in brackets). Run
//! without a `--bench` argument (as `cargo test --benches` does), the
//! defaults shrink to a smoke run of a few seconds; pass `--bench` when
//! running the executable by hand.
//!
//! | variable | meaning |
//! | --- | --- |
//! | `OUTBOX_BENCH_ROUNDS` | throughput rounds [5] |
//! | `OUTBOX_BENCH_DELIVERIES` | requests per contender per round [60000] |
//! | `OUTBOX_BENCH_CONCURRENCY` | requests in flight, for every contender [64] |
//! | `OUTBOX_BENCH_WORKERS` | Outbox worker tasks [4] |
//! | `OUTBOX_BENCH_CLAIM_BATCH` | `OutboxConfig::claim_batch` [64] |
//! | `OUTBOX_BENCH_PAYLOAD` | payload bytes (JSON) [4096] |
//! | `OUTBOX_BENCH_THREADS` | tokio worker threads of the sender [2] |
//! | `OUTBOX_BENCH_RECEIVER_THREADS` | tokio worker threads of the receiver [2] |
//! | `OUTBOX_BENCH_LATENCY_RATE`, `_SECS` | latency phase: events/s and seconds [1000, 5] |
//! | `OUTBOX_BENCH_RETRY_RATE`, `_SECS` | retry phase: events/s and seconds [5000, 5] |
//! | `OUTBOX_BENCH_RETRY_FAIL_PCT` | share of first attempts the receiver fails [30] |
//! | `OUTBOX_BENCH_RETRY_DELAY_MS` | fixed retry delay [250] |
//! | `OUTBOX_BENCH_MEMORY_COUNT` | events published in each memory measurement [100000] |
//! | `OUTBOX_BENCH_HOLD_LIMIT_COUNT` | events published to a disabled endpoint under the default hold limit, timed [5000] |
//! | `OUTBOX_BENCH_PHASES` | which phases, comma-separated [throughput,latency,retry,memory] |
//! | `OUTBOX_BENCH_PROFILE` | `plain`, `dispatcher` or `outbox`: run only that contender's throughput rounds (for `perf record`) |
//! | `OUTBOX_BENCH_BALLAST` | with `OUTBOX_BENCH_PROFILE`: first publish this many events to an Outbox without workers, kept meanwhile (a large heap) [0] |

mod process;
mod receiver;

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hookway::adapters::reqwest::ReqwestDispatcher;
use hookway::clock::{Clock as _, SystemClock};
use hookway::delivery::{AttemptOutcome, DeliveryId, EndpointId};
use hookway::dispatch::Dispatcher as _;
use hookway::endpoint::Endpoint;
use hookway::outbox::{Notification, Outbox, OutboxConfig};
use hookway::retry::RetryPolicy;
use hookway::store::{MemoryStore, Store as _};
use hookway::{EventType, MessageId, Scheme, Secret, Signer};
use http::header::{HeaderValue, CONTENT_TYPE, USER_AGENT};
use serde::Serialize;
use tokio::sync::{Notify, Semaphore};

const EVENT_TYPE: EventType = EventType::from_static("bench.event");
const USER_AGENT_VALUE: &str = concat!("hookway/", env!("CARGO_PKG_VERSION"));

type BenchOutbox = Outbox<MemoryStore, ReqwestDispatcher>;

// ---------------------------------------------------------------------------
// Settings
// ---------------------------------------------------------------------------

fn env_usize(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a whole number")),
        Err(_) => default,
    }
}

#[derive(Clone, Debug)]
struct Config {
    rounds: usize,
    deliveries: usize,
    concurrency: usize,
    workers: usize,
    claim_batch: usize,
    payload: usize,
    threads: usize,
    latency_rate: usize,
    latency_secs: usize,
    retry_rate: usize,
    retry_secs: usize,
    retry_fail_pct: usize,
    retry_delay: Duration,
    memory_count: usize,
    hold_limit_count: usize,
    phases: Vec<String>,
}

impl Config {
    /// The settings from the environment. `quick` (run by `cargo test`
    /// rather than `cargo bench`) shrinks the defaults to a smoke run of a
    /// few seconds.
    fn from_env(quick: bool) -> Self {
        let pick = |full: usize, smoke: usize| if quick { smoke } else { full };
        let phases = std::env::var("OUTBOX_BENCH_PHASES")
            .unwrap_or_else(|_| "throughput,latency,retry,memory".to_owned());
        Self {
            rounds: env_usize("OUTBOX_BENCH_ROUNDS", pick(5, 1)).max(1),
            deliveries: env_usize("OUTBOX_BENCH_DELIVERIES", pick(60_000, 2000)).max(1),
            concurrency: env_usize("OUTBOX_BENCH_CONCURRENCY", 64).max(1),
            workers: env_usize("OUTBOX_BENCH_WORKERS", 4).max(1),
            claim_batch: env_usize("OUTBOX_BENCH_CLAIM_BATCH", 64).max(1),
            payload: env_usize("OUTBOX_BENCH_PAYLOAD", 4096),
            threads: env_usize("OUTBOX_BENCH_THREADS", 2).max(1),
            latency_rate: env_usize("OUTBOX_BENCH_LATENCY_RATE", 1000).max(1),
            latency_secs: env_usize("OUTBOX_BENCH_LATENCY_SECS", pick(5, 1)).max(1),
            retry_rate: env_usize("OUTBOX_BENCH_RETRY_RATE", pick(5000, 1000)).max(1),
            retry_secs: env_usize("OUTBOX_BENCH_RETRY_SECS", pick(5, 1)).max(1),
            retry_fail_pct: env_usize("OUTBOX_BENCH_RETRY_FAIL_PCT", 30).min(100),
            retry_delay: Duration::from_millis(
                env_usize("OUTBOX_BENCH_RETRY_DELAY_MS", 250).max(1) as u64,
            ),
            memory_count: env_usize("OUTBOX_BENCH_MEMORY_COUNT", pick(100_000, 5000)).max(1),
            hold_limit_count: env_usize("OUTBOX_BENCH_HOLD_LIMIT_COUNT", pick(5000, 200)).max(10),
            phases: phases.split(',').map(|p| p.trim().to_owned()).collect(),
        }
    }

    fn runs(&self, phase: &str) -> bool {
        self.phases.iter().any(|p| p == phase)
    }
}

// ---------------------------------------------------------------------------
// The payload
// ---------------------------------------------------------------------------

/// The event body: JSON of exactly `Config::payload` bytes (when that is
/// at least the size of the empty shape).
#[derive(Serialize)]
struct Payload<'a> {
    id: String,
    kind: &'static str,
    data: &'a str,
}

/// The filler that pads a payload with a 20-character id to `size` bytes.
fn filler(size: usize) -> String {
    let empty = serde_json::to_vec(&Payload {
        id: format!("{:020}", 0),
        kind: "bench",
        data: "",
    })
    .expect("serialise");
    "x".repeat(size.saturating_sub(empty.len()))
}

fn payload<'a>(i: u64, filler: &'a str) -> Payload<'a> {
    Payload {
        id: format!("{i:020}"),
        kind: "bench",
        data: filler,
    }
}

// ---------------------------------------------------------------------------
// The receiver process
// ---------------------------------------------------------------------------

/// Talks to the receiver's control paths.
#[derive(Clone)]
struct Control {
    client: reqwest::Client,
    base: String,
}

/// One request as the receiver logged it.
struct Received {
    status: u16,
    at_ns: i128,
}

impl Control {
    async fn get(&self, path: &str) -> String {
        self.client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("control request")
            .text()
            .await
            .expect("control response")
    }

    async fn ok_count(&self) -> u64 {
        self.get("/stats").await.trim().parse().expect("a count")
    }

    /// The log since the last call, by message id, in arrival order.
    async fn records(&self) -> HashMap<String, Vec<Received>> {
        let mut by_id: HashMap<String, Vec<Received>> = HashMap::new();
        for line in self.get("/records").await.lines() {
            let mut parts = line.split(' ');
            let (Some(id), Some(status), Some(at)) = (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            by_id.entry(id.to_owned()).or_default().push(Received {
                status: status.parse().expect("status"),
                at_ns: at.parse().expect("time"),
            });
        }
        by_id
    }
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// Wall-clock time, read the way the Outbox and the receiver read it.
fn unix_nanos() -> i128 {
    SystemClock.now().unix_timestamp_nanos()
}

/// The `q` quantile (nearest rank) of sorted `values`.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    quantile(&v, 0.5)
}

/// CPU time of this process and of the receiver, to split a round's cost.
#[derive(Clone, Copy)]
struct CpuMark {
    sender: f64,
    receiver: f64,
}

impl CpuMark {
    fn now(receiver_pid: u32) -> Self {
        Self {
            sender: process::cpu_seconds("self"),
            receiver: process::cpu_seconds(&receiver_pid.to_string()),
        }
    }
}

/// What one contender's round measured.
#[derive(Clone, Copy)]
struct Measured {
    elapsed: Duration,
    /// CPU seconds used by this process / the receiver during the round.
    sender_cpu: f64,
    receiver_cpu: f64,
}

impl Measured {
    fn since(started: Instant, mark: CpuMark, receiver_pid: u32) -> Self {
        let elapsed = started.elapsed();
        let now = CpuMark::now(receiver_pid);
        Self {
            elapsed,
            sender_cpu: now.sender - mark.sender,
            receiver_cpu: now.receiver - mark.receiver,
        }
    }
}

fn secret() -> Secret {
    Secret::base64("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("secret")
}

fn dispatcher() -> ReqwestDispatcher {
    ReqwestDispatcher::builder()
        .allow_http(true)
        .allow_network("127.0.0.0/8")
        .build()
        .expect("dispatcher")
}

/// A reqwest client set up like `ReqwestDispatcher`'s (HTTP/1.1, no proxy,
/// no redirects, no retries, pooled), without the SSRF-guarding resolver.
fn plain_client() -> reqwest::Client {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .redirect(reqwest::redirect::Policy::none())
        .retry(reqwest::retry::never())
        .no_proxy()
        .referer(false)
        .pool_idle_timeout(Duration::from_secs(90))
        .build()
        .expect("reqwest client")
}

fn endpoint(url: &str, policy: Option<RetryPolicy>, enabled: bool) -> Endpoint {
    let mut builder = Endpoint::builder(
        "ep_bench".parse().expect("endpoint id"),
        url,
        Scheme::standard(),
        secret(),
    )
    .enabled(enabled);
    if let Some(policy) = policy {
        builder = builder.retry_policy(policy);
    }
    builder.build().expect("endpoint")
}

/// Counts finished attempts; wakes a waiter once `target` were delivered.
struct Tally {
    delivered: AtomicUsize,
    failed: AtomicUsize,
    target: usize,
    done: Notify,
}

impl Tally {
    fn watch(outbox: &BenchOutbox, target: usize) -> Arc<Self> {
        let tally = Arc::new(Self {
            delivered: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
            target,
            done: Notify::new(),
        });
        let t = Arc::clone(&tally);
        outbox.subscribe(move |n: &Notification| {
            if let Notification::AttemptFinished { attempt, .. } = n {
                if matches!(attempt.outcome(), AttemptOutcome::Delivered) {
                    if t.delivered.fetch_add(1, Ordering::AcqRel) + 1 == t.target {
                        t.done.notify_one();
                    }
                } else {
                    t.failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        tally
    }

    async fn wait(&self, limit: Duration) {
        if tokio::time::timeout(limit, self.done.notified())
            .await
            .is_err()
        {
            panic!(
                "only {} of {} delivered within {limit:?}",
                self.delivered.load(Ordering::Acquire),
                self.target
            );
        }
    }
}

fn outbox_config(config: &Config) -> OutboxConfig {
    let mut c = OutboxConfig::default();
    c.max_in_flight = config.concurrency;
    c.claim_batch = config.claim_batch;
    c
}

// ---------------------------------------------------------------------------
// Throughput
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Contender {
    /// reqwest directly, signed with hookway's `Signer`.
    Plain,
    /// `Endpoint::request` + `ReqwestDispatcher::send` in the same loop.
    Dispatcher,
    /// Published to the Outbox, delivered by its workers.
    Outbox,
}

struct Shared {
    config: Config,
    url: String,
    body: Bytes,
    filler: String,
    control: Control,
    receiver_pid: u32,
}

/// The plain loop: a task per request, at most `concurrency` at once.
/// Returns the time from the first send to the last response read.
async fn plain_round(shared: &Shared, tag: &str) -> Measured {
    let n = shared.config.deliveries;
    let c = shared.config.concurrency;
    let client = plain_client();
    let signer = Arc::new(Signer::new(Scheme::standard(), secret()).expect("signer"));
    let url: reqwest::Url = shared.url.parse().expect("url");
    let failures = Arc::new(AtomicUsize::new(0));
    let semaphore = Arc::new(Semaphore::new(c));
    let mark = CpuMark::now(shared.receiver_pid);
    let started = Instant::now();
    for i in 0..n {
        let permit = Arc::clone(&semaphore)
            .acquire_owned()
            .await
            .expect("semaphore");
        let (client, signer, url, body, failures) = (
            client.clone(),
            Arc::clone(&signer),
            url.clone(),
            shared.body.clone(),
            Arc::clone(&failures),
        );
        let id = MessageId::new(format!("msg_{tag}_{i}")).expect("message id");
        tokio::spawn(async move {
            let mut headers = signer.sign(&id, SystemClock.now(), &body).expect("sign");
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            headers.insert(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE));
            let ok = match client.post(url).headers(headers).body(body).send().await {
                Ok(response) => {
                    let status = response.status();
                    response.bytes().await.is_ok() && status.is_success()
                }
                Err(_) => false,
            };
            if !ok {
                failures.fetch_add(1, Ordering::Relaxed);
            }
            drop(permit);
        });
    }
    let _all = semaphore.acquire_many(c as u32).await.expect("semaphore");
    let measured = Measured::since(started, mark, shared.receiver_pid);
    assert_eq!(failures.load(Ordering::Relaxed), 0, "plain loop failures");
    measured
}

/// The same loop through hookway's `Endpoint::request` and
/// `ReqwestDispatcher` (diagnostic: the adapter's cost without the engine).
async fn dispatcher_round(shared: &Shared, tag: &str) -> Measured {
    let n = shared.config.deliveries;
    let c = shared.config.concurrency;
    let dispatcher = dispatcher();
    let endpoint = Arc::new(endpoint(&shared.url, None, true));
    let failures = Arc::new(AtomicUsize::new(0));
    let semaphore = Arc::new(Semaphore::new(c));
    let mark = CpuMark::now(shared.receiver_pid);
    let started = Instant::now();
    for i in 0..n {
        let permit = Arc::clone(&semaphore)
            .acquire_owned()
            .await
            .expect("semaphore");
        let (dispatcher, endpoint, body, failures) = (
            dispatcher.clone(),
            Arc::clone(&endpoint),
            shared.body.clone(),
            Arc::clone(&failures),
        );
        let id = MessageId::new(format!("msg_{tag}_{i}")).expect("message id");
        tokio::spawn(async move {
            let now = SystemClock.now();
            let delivery = DeliveryId::generate_at(now);
            let request = endpoint
                .request(body, &id, &EVENT_TYPE, &delivery, now, None)
                .expect("request");
            let ok = matches!(
                dispatcher.send(request, endpoint.timeout()).await,
                Ok(response) if response.status().is_success()
            );
            if !ok {
                failures.fetch_add(1, Ordering::Relaxed);
            }
            drop(permit);
        });
    }
    let _all = semaphore.acquire_many(c as u32).await.expect("semaphore");
    let measured = Measured::since(started, mark, shared.receiver_pid);
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "dispatcher loop failures"
    );
    measured
}

/// Publishes `deliveries` events (timed apart), then starts the workers and
/// times until the last delivery is stored as delivered. Returns (publish,
/// drain).
async fn outbox_round(shared: &Shared, tag: &str) -> (Duration, Measured) {
    let config = &shared.config;
    let n = config.deliveries;
    let outbox = Outbox::with_config(
        MemoryStore::new(),
        dispatcher(),
        outbox_config(config),
        SystemClock,
    );
    outbox
        .add_endpoint(endpoint(&shared.url, None, true))
        .await
        .expect("endpoint");
    let tally = Tally::watch(&outbox, n);
    let started = Instant::now();
    for i in 0..n {
        let id = MessageId::new(format!("msg_{tag}_{i}")).expect("message id");
        let ids = outbox
            .publish(id, EVENT_TYPE, &payload(i as u64, &shared.filler), &[])
            .await
            .expect("publish");
        debug_assert_eq!(ids.len(), 1);
    }
    let publish = started.elapsed();
    let mark = CpuMark::now(shared.receiver_pid);
    let started = Instant::now();
    let workers = outbox.start(config.workers);
    tally.wait(Duration::from_secs(120)).await;
    let drain = Measured::since(started, mark, shared.receiver_pid);
    workers.shutdown(Duration::from_secs(5)).await;
    assert_eq!(tally.failed.load(Ordering::Relaxed), 0, "outbox failures");
    (publish, drain)
}

struct RoundResult {
    plain: Measured,
    dispatcher: Measured,
    outbox: Measured,
    publish: Duration,
    n: f64,
}

impl RoundResult {
    fn rate(&self, m: &Measured) -> f64 {
        self.n / m.elapsed.as_secs_f64()
    }

    fn outbox_ratio(&self) -> f64 {
        self.rate(&self.outbox) / self.rate(&self.plain)
    }

    fn dispatcher_ratio(&self) -> f64 {
        self.rate(&self.dispatcher) / self.rate(&self.plain)
    }

    /// Publishing and draining one after the other, against the plain loop.
    fn with_publish_ratio(&self) -> f64 {
        let total = self.outbox.elapsed + self.publish;
        (self.n / total.as_secs_f64()) / self.rate(&self.plain)
    }

    fn publish_rate(&self) -> f64 {
        self.n / self.publish.as_secs_f64()
    }

    /// Microseconds of CPU per request, in this process and the receiver.
    fn cpu_us(&self, m: &Measured) -> (f64, f64) {
        (m.sender_cpu * 1e6 / self.n, m.receiver_cpu * 1e6 / self.n)
    }
}

async fn throughput(shared: &Shared) -> Vec<RoundResult> {
    let config = &shared.config;
    // Warm-up: connections, allocator, page cache; not recorded.
    {
        let mut warm = Shared {
            config: config.clone(),
            url: shared.url.clone(),
            body: shared.body.clone(),
            filler: shared.filler.clone(),
            control: shared.control.clone(),
            receiver_pid: shared.receiver_pid,
        };
        warm.config.deliveries = (config.deliveries / 5).max(1);
        plain_round(&warm, "warm_p").await;
        dispatcher_round(&warm, "warm_d").await;
        outbox_round(&warm, "warm_o").await;
    }
    let mut results = Vec::new();
    for round in 0..config.rounds {
        // Rotate the order so no contender always runs first or last.
        let order = match round % 3 {
            0 => [Contender::Plain, Contender::Outbox, Contender::Dispatcher],
            1 => [Contender::Outbox, Contender::Dispatcher, Contender::Plain],
            _ => [Contender::Dispatcher, Contender::Plain, Contender::Outbox],
        };
        let (mut plain, mut disp, mut outbox, mut publish) = (None, None, None, Duration::ZERO);
        for contender in order {
            shared.control.get("/reset").await;
            let tag = format!("r{round}_{contender:?}").to_lowercase();
            match contender {
                Contender::Plain => plain = Some(plain_round(shared, &tag).await),
                Contender::Dispatcher => disp = Some(dispatcher_round(shared, &tag).await),
                Contender::Outbox => {
                    let (p, d) = outbox_round(shared, &tag).await;
                    publish = p;
                    outbox = Some(d);
                }
            }
            let received = shared.control.ok_count().await;
            assert_eq!(
                received, config.deliveries as u64,
                "{contender:?}: the receiver answered {received} requests"
            );
        }
        let r = RoundResult {
            plain: plain.expect("plain ran"),
            dispatcher: disp.expect("dispatcher ran"),
            outbox: outbox.expect("outbox ran"),
            publish,
            n: config.deliveries as f64,
        };
        println!(
            "round {}: plain {:.0}/s, dispatcher {:.0}/s, outbox {:.0}/s ({:.3}× plain), publish {:.0}/s; \
             sender CPU µs/request: plain {:.1}, dispatcher {:.1}, outbox {:.1}",
            round + 1,
            r.rate(&r.plain),
            r.rate(&r.dispatcher),
            r.rate(&r.outbox),
            r.outbox_ratio(),
            r.publish_rate(),
            r.cpu_us(&r.plain).0,
            r.cpu_us(&r.dispatcher).0,
            r.cpu_us(&r.outbox).0,
        );
        results.push(r);
    }
    results
}

fn print_throughput(config: &Config, rounds: &[RoundResult]) {
    let med = |f: &dyn Fn(&RoundResult) -> f64| median(&rounds.iter().map(f).collect::<Vec<_>>());
    println!(
        "### Throughput ({} requests per contender per round, concurrency {}, {} workers, claim batch {})\n",
        config.deliveries, config.concurrency, config.workers, config.claim_batch
    );
    println!(
        "| round | plain reqwest loop | dispatcher loop | Outbox (drain) | **Outbox / plain** | \
         dispatcher / plain | Outbox incl. publish / plain | publish alone |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    for (i, r) in rounds.iter().enumerate() {
        println!(
            "| {} | {:.0}/s | {:.0}/s | {:.0}/s | **{:.3}×** | {:.3}× | {:.3}× | {:.0}/s |",
            i + 1,
            r.rate(&r.plain),
            r.rate(&r.dispatcher),
            r.rate(&r.outbox),
            r.outbox_ratio(),
            r.dispatcher_ratio(),
            r.with_publish_ratio(),
            r.publish_rate()
        );
    }
    println!(
        "| **median** | {:.0}/s | {:.0}/s | {:.0}/s | **{:.3}×** | {:.3}× | {:.3}× | {:.0}/s |",
        med(&|r| r.rate(&r.plain)),
        med(&|r| r.rate(&r.dispatcher)),
        med(&|r| r.rate(&r.outbox)),
        med(&|r| r.outbox_ratio()),
        med(&|r| r.dispatcher_ratio()),
        med(&|r| r.with_publish_ratio()),
        med(&|r| r.publish_rate()),
    );
    println!();
    println!("CPU time per request (µs), median over the rounds:\n");
    println!("| contender | this process (sender) | receiver process |");
    println!("| --- | --- | --- |");
    for (name, pick) in [
        (
            "plain reqwest loop",
            (|r: &RoundResult| r.plain) as fn(&RoundResult) -> Measured,
        ),
        ("dispatcher loop", |r| r.dispatcher),
        ("Outbox (drain)", |r| r.outbox),
    ] {
        println!(
            "| {name} | {:.1} | {:.1} |",
            med(&|r| r.cpu_us(&pick(r)).0),
            med(&|r| r.cpu_us(&pick(r)).1),
        );
    }
    println!();
}

// ---------------------------------------------------------------------------
// Latency and retry lateness
// ---------------------------------------------------------------------------

struct Published {
    msg: String,
    delivery: DeliveryId,
    at_ns: i128,
}

/// Publishes `rate` events per second for `secs` seconds to an endpoint at
/// `path`, with workers running; waits until all are delivered.
async fn steady(
    shared: &Shared,
    path: &str,
    rate: usize,
    secs: usize,
    policy: Option<RetryPolicy>,
    tag: &str,
) -> (BenchOutbox, Vec<Published>) {
    let config = &shared.config;
    let outbox = Outbox::with_config(
        MemoryStore::new(),
        dispatcher(),
        outbox_config(config),
        SystemClock,
    );
    let base = shared.url.trim_end_matches("/ok");
    outbox
        .add_endpoint(endpoint(&format!("{base}{path}"), policy, true))
        .await
        .expect("endpoint");
    let total = rate * secs;
    let tally = Tally::watch(&outbox, total);
    let workers = outbox.start(config.workers);
    let _ = shared.control.records().await;
    let spacing = Duration::from_secs(1).as_nanos() as f64 / rate as f64;
    let mut published = Vec::with_capacity(total);
    let start = tokio::time::Instant::now();
    for i in 0..total {
        let due = start + Duration::from_nanos((i as f64 * spacing) as u64);
        if due > tokio::time::Instant::now() {
            tokio::time::sleep_until(due).await;
        }
        let msg = format!("msg_{tag}_{i}");
        let id = MessageId::new(msg.clone()).expect("message id");
        let at_ns = unix_nanos();
        let mut ids = outbox
            .publish(id, EVENT_TYPE, &payload(i as u64, &shared.filler), &[])
            .await
            .expect("publish");
        published.push(Published {
            msg,
            delivery: ids.pop().expect("one delivery"),
            at_ns,
        });
    }
    let late = start.elapsed().as_secs_f64() - secs as f64;
    if late > 0.05 {
        println!("  (publishing fell {late:.2} s behind the schedule)");
    }
    tally.wait(Duration::from_secs(60 + 2 * secs as u64)).await;
    workers.shutdown(Duration::from_secs(5)).await;
    (outbox, published)
}

struct Percentiles {
    count: usize,
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
}

impl Percentiles {
    fn of_ns(values: &[i128]) -> Self {
        let mut ms: Vec<f64> = values.iter().map(|v| *v as f64 / 1e6).collect();
        ms.sort_by(f64::total_cmp);
        Self {
            count: ms.len(),
            p50: quantile(&ms, 0.50),
            p90: quantile(&ms, 0.90),
            p99: quantile(&ms, 0.99),
            max: ms.last().copied().unwrap_or(f64::NAN),
        }
    }

    fn row(&self, name: &str) -> String {
        format!(
            "| {name} | {} | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms |",
            self.count, self.p50, self.p90, self.p99, self.max
        )
    }
}

async fn latency(shared: &Shared) -> Percentiles {
    let c = &shared.config;
    let (_outbox, published) =
        steady(shared, "/log", c.latency_rate, c.latency_secs, None, "lat").await;
    let records = shared.control.records().await;
    let latencies: Vec<i128> = published
        .iter()
        .map(|p| {
            let got = records.get(&p.msg).expect("every event received");
            got[0].at_ns - p.at_ns
        })
        .collect();
    Percentiles::of_ns(&latencies)
}

struct RetryResult {
    first: Percentiles,
    received_late: Percentiles,
    started_late: Percentiles,
    failed_first: usize,
    total: usize,
}

async fn retry_lateness(shared: &Shared) -> RetryResult {
    let c = &shared.config;
    let delay = c.retry_delay;
    let policy = RetryPolicy::fixed([delay, delay, delay])
        .build()
        .expect("policy");
    let path = format!("/flaky/{}", c.retry_fail_pct);
    let (outbox, published) = steady(
        shared,
        &path,
        c.retry_rate,
        c.retry_secs,
        Some(policy),
        "rty",
    )
    .await;
    let records = shared.control.records().await;
    let delay = time::Duration::try_from(delay).expect("delay");
    let (mut first, mut received_late, mut started_late) = (Vec::new(), Vec::new(), Vec::new());
    for p in &published {
        let got = records.get(&p.msg).expect("every event received");
        first.push(got[0].at_ns - p.at_ns);
        if got[0].status == 200 {
            continue;
        }
        let attempts = outbox
            .store()
            .attempts(&p.delivery)
            .await
            .expect("attempts");
        assert!(attempts.len() >= 2, "a failed first attempt was retried");
        let a1 = &attempts[0];
        // `Delivery::complete` schedules the retry from the end of the
        // attempt: started_at + duration, plus the fixed delay (no jitter).
        let due =
            a1.started_at() + time::Duration::try_from(a1.duration()).expect("duration") + delay;
        let due_ns = due.unix_timestamp_nanos();
        let second = got
            .iter()
            .find(|r| r.status == 200)
            .expect("retry received");
        received_late.push(second.at_ns - due_ns);
        started_late.push(attempts[1].started_at().unix_timestamp_nanos() - due_ns);
    }
    RetryResult {
        first: Percentiles::of_ns(&first),
        received_late: Percentiles::of_ns(&received_late),
        started_late: Percentiles::of_ns(&started_late),
        failed_first: received_late.len(),
        total: published.len(),
    }
}

// ---------------------------------------------------------------------------
// Memory per pending delivery (in a child process each)
// ---------------------------------------------------------------------------

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    let resident: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("resident pages");
    // x86_64 and aarch64 Linux default page size.
    resident * 4096
}

/// The child side: publishes `OUTBOX_BENCH_MEMORY_COUNT` events with a
/// payload of `OUTBOX_BENCH_PAYLOAD` bytes to one endpoint, enabled with no
/// workers (`pending`) or disabled with no hold limit (`held`), and prints
/// the RSS growth. Mode `hold-limit` instead times publishing to a disabled
/// endpoint under the default hold limit.
fn memory_child() {
    let mode = std::env::var("OUTBOX_BENCH_MEMORY_MODE").expect("mode");
    let count = env_usize("OUTBOX_BENCH_MEMORY_COUNT", 100_000);
    let size = env_usize("OUTBOX_BENCH_PAYLOAD", 4096);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let mut config = OutboxConfig::default();
        if mode == "held" {
            // Measure memory, not the hold limit (10 000 by default).
            config.max_held_per_endpoint = None;
        }
        let outbox = Outbox::with_config(MemoryStore::new(), dispatcher(), config, SystemClock);
        let enabled = mode == "pending";
        outbox
            .add_endpoint(endpoint("http://127.0.0.1:9/never", None, enabled))
            .await
            .expect("endpoint");
        let fill = filler(size);
        let body = serde_json::to_vec(&payload(0, &fill)).expect("json");
        let publish = |prefix: &'static str, i: u64| {
            let outbox = outbox.clone();
            let fill = fill.clone();
            async move {
                let id = MessageId::new(format!("msg_{prefix}_{i:012}")).expect("id");
                outbox
                    .publish(id, EVENT_TYPE, &payload(i, &fill), &[])
                    .await
                    .expect("publish");
            }
        };
        if mode == "hold-limit" {
            let tenth = (count / 10).max(1) as u64;
            let mut times = Vec::new();
            let mut started = Instant::now();
            for i in 0..count as u64 {
                publish("hold", i).await;
                if (i + 1) % tenth == 0 {
                    times.push(started.elapsed().as_secs_f64() * 1e6 / tenth as f64);
                    started = Instant::now();
                }
            }
            let first = times.first().copied().unwrap_or(f64::NAN);
            let last = times.last().copied().unwrap_or(f64::NAN);
            println!("holdlimit {count} {first:.1} {last:.1}");
            return;
        }
        // Warm up the allocator and the store's maps a little.
        for i in 0..1000u64 {
            publish("warm", i).await;
        }
        let before = rss_bytes();
        for i in 0..count as u64 {
            publish("mem", i).await;
        }
        let after = rss_bytes();
        let ep: EndpointId = "ep_bench".parse().expect("id");
        let stored = outbox
            .store()
            .deliveries(&hookway::store::DeliveryQuery {
                endpoint: Some(ep),
                limit: 1,
                ..Default::default()
            })
            .await
            .expect("list");
        let state = stored
            .first()
            .map(|d| format!("{:?}", d.state().kind()))
            .unwrap_or_default();
        println!(
            "memory {mode} {count} {} {before} {after} {state} {}",
            body.len(),
            body.capacity()
        );
        println!(
            "sizes Delivery {} StoredEvent {} Attempt {} DeliveryId {} MessageId {}",
            std::mem::size_of::<hookway::delivery::Delivery>(),
            std::mem::size_of::<hookway::store::StoredEvent>(),
            std::mem::size_of::<hookway::delivery::Attempt>(),
            std::mem::size_of::<DeliveryId>(),
            std::mem::size_of::<MessageId>(),
        );
    });
}

struct MemoryResult {
    mode: String,
    count: u64,
    body: u64,
    /// The capacity of the `Vec` that `serde_json::to_vec` returns for the
    /// payload (what `Bytes::from(vec)` keeps).
    body_capacity: u64,
    growth: u64,
    state: String,
}

fn memory_process(mode: &str, count: usize, payload: usize) -> String {
    let exe = std::env::current_exe().expect("own executable");
    let output = Command::new(exe)
        .env(receiver::ROLE_ENV, "memory")
        .env("OUTBOX_BENCH_MEMORY_MODE", mode)
        .env("OUTBOX_BENCH_MEMORY_COUNT", count.to_string())
        .env("OUTBOX_BENCH_PAYLOAD", payload.to_string())
        .stderr(Stdio::inherit())
        .output()
        .expect("memory child");
    assert!(output.status.success(), "memory child failed");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn memory(mode: &str, count: usize, payload: usize) -> MemoryResult {
    let text = memory_process(mode, count, payload);
    let line = text
        .lines()
        .find(|l| l.starts_with("memory "))
        .expect("memory result");
    if let Some(sizes) = text.lines().find(|l| l.starts_with("sizes ")) {
        println!("{mode}: {sizes}");
    }
    let f: Vec<&str> = line.split(' ').collect();
    let num = |i: usize| f[i].parse::<u64>().expect("number");
    MemoryResult {
        mode: f[1].to_owned(),
        count: num(2),
        body: num(3),
        growth: num(5).saturating_sub(num(4)),
        state: f[6].to_owned(),
        body_capacity: num(7),
    }
}

/// Publishing to a disabled endpoint under the default hold limit: µs per
/// publish over the first and the last tenth of `count`.
fn hold_limit(count: usize, payload: usize) -> (usize, f64, f64) {
    let text = memory_process("hold-limit", count, payload);
    let line = text
        .lines()
        .find(|l| l.starts_with("holdlimit "))
        .expect("hold-limit result");
    let f: Vec<&str> = line.split(' ').collect();
    (
        f[1].parse().expect("count"),
        f[2].parse().expect("µs"),
        f[3].parse().expect("µs"),
    )
}

// ---------------------------------------------------------------------------
// Main
// ---------------------------------------------------------------------------

fn main() {
    match std::env::var(receiver::ROLE_ENV).as_deref() {
        Ok("receiver") => return receiver::run(),
        Ok("memory") => return memory_child(),
        _ => {}
    }
    // `cargo bench` passes `--bench`; `cargo test --benches` does not, and
    // gets a smoke run instead of the full measurement.
    let quick = !std::env::args().any(|a| a == "--bench");
    let config = Config::from_env(quick);
    if quick {
        println!("no --bench argument: smoke run with small sizes (use `cargo bench`)");
    }
    println!("hookway outbox bench: {config:?}");
    let total = Instant::now();

    let mut memory_results = Vec::new();
    if config.runs("memory") {
        // First, before this process has done anything else.
        memory_results.push(memory("pending", config.memory_count, config.payload));
        memory_results.push(memory("held", config.memory_count, config.payload));
        memory_results.push(memory("pending", config.memory_count, 64));
    }
    let hold = config
        .runs("memory")
        .then(|| hold_limit(config.hold_limit_count, config.payload));

    let receiver = receiver::spawn();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.threads)
        .enable_all()
        .build()
        .expect("runtime");
    let filler = filler(config.payload);
    let body = Bytes::from(serde_json::to_vec(&payload(0, &filler)).expect("json"));
    let shared = Shared {
        url: format!("http://127.0.0.1:{}/ok", receiver.port),
        control: Control {
            client: plain_client(),
            base: format!("http://127.0.0.1:{}", receiver.port),
        },
        config: config.clone(),
        body,
        filler,
        receiver_pid: receiver.child.id(),
    };
    println!("payload: {} bytes", shared.body.len());

    if let Ok(only) = std::env::var("OUTBOX_BENCH_PROFILE") {
        // One contender only, for `perf record`: no warm-up, no table.
        runtime.block_on(async {
            // Optionally hold a store of `OUTBOX_BENCH_BALLAST` published
            // events (never sent) meanwhile, to see what a large heap costs.
            let ballast = Outbox::with_config(
                MemoryStore::new(),
                dispatcher(),
                outbox_config(&config),
                SystemClock,
            );
            ballast
                .add_endpoint(endpoint("http://127.0.0.1:9/never", None, true))
                .await
                .expect("endpoint");
            for i in 0..env_usize("OUTBOX_BENCH_BALLAST", 0) {
                let id = MessageId::new(format!("msg_ballast_{i}")).expect("id");
                ballast
                    .publish(id, EVENT_TYPE, &payload(i as u64, &shared.filler), &[])
                    .await
                    .expect("publish");
            }
            for round in 0..config.rounds {
                let tag = format!("p{round}");
                let m = match only.as_str() {
                    "plain" => plain_round(&shared, &tag).await,
                    "dispatcher" => dispatcher_round(&shared, &tag).await,
                    _ => outbox_round(&shared, &tag).await.1,
                };
                let n = config.deliveries as f64;
                println!(
                    "{only} {:.0}/s, CPU µs/request: sender {:.1}, receiver {:.1}",
                    n / m.elapsed.as_secs_f64(),
                    m.sender_cpu * 1e6 / n,
                    m.receiver_cpu * 1e6 / n
                );
            }
        });
        return;
    }
    let (rounds, lat, retry) = runtime.block_on(async {
        let rounds = if config.runs("throughput") {
            throughput(&shared).await
        } else {
            Vec::new()
        };
        let lat = if config.runs("latency") {
            Some(latency(&shared).await)
        } else {
            None
        };
        let retry = if config.runs("retry") {
            Some(retry_lateness(&shared).await)
        } else {
            None
        };
        (rounds, lat, retry)
    });
    drop(runtime);
    drop(receiver);

    println!();
    if !rounds.is_empty() {
        print_throughput(&config, &rounds);
    }
    if lat.is_some() || retry.is_some() {
        println!("### Latency and retry lateness\n");
        println!("| measure | samples | p50 | p90 | p99 | max |");
        println!("| --- | --- | --- | --- | --- | --- |");
        if let Some(lat) = &lat {
            println!(
                "{}",
                lat.row(&format!("publish → receiver at {}/s", config.latency_rate))
            );
        }
        if let Some(r) = &retry {
            println!(
                "{}",
                r.first.row(&format!(
                    "publish → receiver (first attempt) at {}/s, {}% failing",
                    config.retry_rate, config.retry_fail_pct
                ))
            );
            println!(
                "{}",
                r.received_late
                    .row("retry lateness: received at receiver − due_at")
            );
            println!(
                "{}",
                r.started_late
                    .row("retry lateness: attempt started_at − due_at")
            );
            println!(
                "\n{} of {} first attempts failed and were retried after {:?}; target p99 < 50 ms: {}",
                r.failed_first,
                r.total,
                config.retry_delay,
                if r.received_late.p99 < 50.0 { "met" } else { "MISSED" }
            );
        }
        println!();
    }
    if !memory_results.is_empty() {
        println!("### Memory per pending delivery\n");
        println!(
            "| deliveries | state | payload (its Vec's capacity) | RSS growth | per delivery | \
             per delivery beyond the payload |"
        );
        println!("| --- | --- | --- | --- | --- | --- |");
        for m in &memory_results {
            let per = m.growth as f64 / m.count as f64;
            println!(
                "| {} ({}) | {} | {} B ({} B) | {:.1} MiB | {:.0} B | {:.0} B |",
                m.count,
                m.mode,
                m.state,
                m.body,
                m.body_capacity,
                m.growth as f64 / (1024.0 * 1024.0),
                per,
                per - m.body as f64
            );
        }
        println!();
    }
    if let Some((count, first, last)) = hold {
        println!(
            "Publishing {count} events to a disabled endpoint (default hold limit): \
             {first:.1} µs per publish over the first tenth, {last:.1} µs over the last.\n"
        );
    }
    println!("total time {:.1} s", total.elapsed().as_secs_f64());
}

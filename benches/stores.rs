//! Durable delivery: the Outbox over `MemoryStore`, `SqliteStore` and
//! `PostgresStore` side by side, publishing and delivering to a loopback
//! receiver in another process; and how long a claim takes with a million
//! pending deliveries in the table.
//!
//! Run with `cargo bench --bench stores --features outbox,reqwest,sqlite,postgres`.
//! Postgres is reached at `HOOKWAY_BENCH_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test?sslmode=disable`: the server is
//! on loopback, where TLS would only add its CPU), in a schema of the bench's
//! own that is dropped and made again for every run.
//!
//! | variable | meaning [default] |
//! | --- | --- |
//! | `STORES_BENCH_ROUNDS` | rounds; each runs every store once, in a rotating order [3] |
//! | `STORES_BENCH_EVENTS` | events per run, one endpoint [20000] |
//! | `STORES_BENCH_FANOUT_EVENTS` | events per fan-out run (each to 10 endpoints) [3000] |
//! | `STORES_BENCH_PAYLOAD` | payload bytes [4096] |
//! | `STORES_BENCH_PUBLISHERS` | tasks publishing at once, each waiting for its publish to commit [64] |
//! | `STORES_BENCH_WORKERS`, `_IN_FLIGHT`, `_CLAIM_BATCH` | Outbox settings [4, 64, 64] |
//! | `STORES_BENCH_CLAIM_ROWS` | pending rows for the claim-latency phase, timed in turns with 12 801 [1000000] |
//! | `STORES_BENCH_PHASES` | `throughput`, `claim` [both] |
//! | `STORES_BENCH_STORES` | `memory`, `sqlite`, `postgres` [all three] |
//! | `STORES_BENCH_SCENARIOS` | `single`, `fanout` [both] |
//!
//! Without `--bench` (as `cargo test --benches` runs it) every size shrinks
//! to a smoke run.
#![allow(clippy::disallowed_methods)] // wall-clock timing is the point

mod process;
mod receiver;

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hookway::adapters::reqwest::ReqwestDispatcher;
use hookway::clock::SystemClock;
use hookway::delivery::EndpointId;
use hookway::endpoint::Endpoint;
use hookway::outbox::{Notification, Outbox, OutboxConfig};
use hookway::store::{MemoryStore, PostgresStore, SqliteStore, Store};
use hookway::{EventType, MessageId, Scheme, Secret};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::Connection as _;
use tokio::sync::Notify;

const EVENT_TYPE: EventType = EventType::from_static("bench.event");

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.trim()
                .parse()
                .unwrap_or_else(|_| panic!("{name}={v:?} is not a whole number"))
        })
        .unwrap_or(default)
}

/// A comma-separated list from the environment.
fn list(name: &str, default: &str) -> Vec<String> {
    std::env::var(name)
        .unwrap_or_else(|_| default.to_owned())
        .split(',')
        .map(|p| p.trim().to_ascii_lowercase())
        .filter(|p| !p.is_empty())
        .collect()
}

#[derive(Clone, Debug)]
struct Config {
    rounds: usize,
    events: usize,
    fanout_events: usize,
    payload: usize,
    publishers: usize,
    workers: usize,
    in_flight: usize,
    claim_batch: usize,
    claim_rows: usize,
    phases: Vec<String>,
    stores: Vec<Kind>,
    scenarios: Vec<String>,
    postgres: String,
}

impl Config {
    fn from_env(quick: bool) -> Self {
        let pick = |full: usize, smoke: usize| if quick { smoke } else { full };
        Self {
            rounds: env_usize("STORES_BENCH_ROUNDS", pick(3, 1)).max(1),
            events: env_usize("STORES_BENCH_EVENTS", pick(20_000, 500)).max(1),
            fanout_events: env_usize("STORES_BENCH_FANOUT_EVENTS", pick(3_000, 50)).max(1),
            payload: env_usize("STORES_BENCH_PAYLOAD", 4096),
            publishers: env_usize("STORES_BENCH_PUBLISHERS", 64).max(1),
            workers: env_usize("STORES_BENCH_WORKERS", 4).max(1),
            in_flight: env_usize("STORES_BENCH_IN_FLIGHT", 64).max(1),
            claim_batch: env_usize("STORES_BENCH_CLAIM_BATCH", 64).max(1),
            claim_rows: env_usize("STORES_BENCH_CLAIM_ROWS", pick(1_000_000, 2_000)).max(1),
            phases: list("STORES_BENCH_PHASES", "throughput,claim"),
            stores: list("STORES_BENCH_STORES", "memory,sqlite,postgres")
                .iter()
                .map(|name| {
                    Kind::ALL
                        .into_iter()
                        .find(|k| k.name().eq_ignore_ascii_case(name))
                        .unwrap_or_else(|| panic!("STORES_BENCH_STORES: unknown store {name:?}"))
                })
                .collect(),
            scenarios: list("STORES_BENCH_SCENARIOS", "single,fanout"),
            postgres: std::env::var("HOOKWAY_BENCH_POSTGRES_URL").unwrap_or_else(|_| {
                "postgres://postgres@127.0.0.1:5432/test?sslmode=disable".to_owned()
            }),
        }
    }

    fn runs(&self, phase: &str) -> bool {
        self.phases.iter().any(|p| p == phase)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Memory,
    Sqlite,
    Postgres,
}

impl Kind {
    const ALL: [Kind; 3] = [Kind::Memory, Kind::Sqlite, Kind::Postgres];

    fn name(self) -> &'static str {
        match self {
            Kind::Memory => "memory",
            Kind::Sqlite => "SQLite",
            Kind::Postgres => "Postgres",
        }
    }
}

/// CPU seconds used so far by every Postgres server process on this
/// machine (the server runs here; its backends are `postgres` processes).
fn postgres_cpu() -> f64 {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|name| name.bytes().all(|b| b.is_ascii_digit()))
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.trim() == "postgres")
        })
        .map(|pid| process::cpu_seconds(&pid))
        .sum()
}

/// A fresh, empty schema for one Postgres run.
async fn postgres_store(url: &str, schema: &str, pool: u32) -> PostgresStore {
    let mut admin = sqlx::PgConnection::connect(url)
        .await
        .unwrap_or_else(|e| panic!("Postgres at {url} is unreachable: {e}"));
    for sql in [
        format!("DROP SCHEMA IF EXISTS {schema} CASCADE"),
        format!("CREATE SCHEMA {schema}"),
    ] {
        sqlx::query(&sql).execute(&mut admin).await.expect("schema");
    }
    admin.close().await.expect("close");
    let options: PgConnectOptions = url.parse().expect("url");
    PostgresStore::connect_with(
        PgPoolOptions::new().max_connections(pool),
        options.options([("search_path", schema)]),
    )
    .await
    .expect("connect")
}

fn sqlite_path(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join("hookway-stores-bench");
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(format!("{name}.db"));
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.clone().into_os_string();
        p.push(suffix);
        let _ = std::fs::remove_file(p);
    }
    path
}

fn dispatcher() -> ReqwestDispatcher {
    ReqwestDispatcher::builder()
        .allow_http(true)
        .allow_network("127.0.0.0/8")
        .build()
        .expect("dispatcher")
}

fn secret() -> Secret {
    Secret::from_bytes(b"stores-bench-secret-of-32-bytes!").expect("secret")
}

/// Counts delivered attempts; wakes a waiter at the target.
struct Tally {
    delivered: AtomicUsize,
    failed: AtomicUsize,
    target: usize,
    done: Notify,
}

/// One run: `events` events published by `publishers` tasks while the
/// workers run, each to `endpoints` endpoints; returns deliveries, elapsed
/// time, and CPU seconds of this process, the receiver, and Postgres.
async fn run<S: Store>(
    store: S,
    config: &Config,
    receiver: &process::Process,
    events: usize,
    endpoints: usize,
    tag: &str,
) -> (usize, Duration, [f64; 3]) {
    let mut outbox_config = OutboxConfig::default();
    outbox_config.max_in_flight = config.in_flight;
    outbox_config.claim_batch = config.claim_batch;
    let outbox = Outbox::with_config(store, dispatcher(), outbox_config, SystemClock);
    for i in 0..endpoints {
        outbox
            .add_endpoint(
                Endpoint::builder(
                    EndpointId::new(format!("ep_{i}")).expect("id"),
                    &format!("http://127.0.0.1:{}/ok", receiver.port),
                    Scheme::standard(),
                    secret(),
                )
                .build()
                .expect("endpoint"),
            )
            .await
            .expect("add endpoint");
    }
    let deliveries = events * endpoints;
    let tally = Arc::new(Tally {
        delivered: AtomicUsize::new(0),
        failed: AtomicUsize::new(0),
        target: deliveries,
        done: Notify::new(),
    });
    let sink = Arc::clone(&tally);
    outbox.subscribe(move |n: &Notification| {
        if let Notification::AttemptFinished { attempt, .. } = n {
            let counter = if attempt.outcome().is_delivered() {
                &sink.delivered
            } else {
                &sink.failed
            };
            if counter.fetch_add(1, Ordering::Relaxed) + 1 == sink.target {
                sink.done.notify_one();
            }
        }
    });
    let filler = "x".repeat(config.payload.saturating_sub(40));
    let body: Arc<serde_json::Value> =
        Arc::new(serde_json::json!({ "kind": "bench", "data": filler }));
    let cpu = || {
        [
            process::cpu_seconds("self"),
            process::cpu_seconds(&receiver.child.id().to_string()),
            postgres_cpu(),
        ]
    };
    let before = cpu();
    let started = Instant::now();
    let workers = outbox.start(config.workers);
    let next = Arc::new(AtomicUsize::new(0));
    let mut publishers = Vec::new();
    for _ in 0..config.publishers {
        let (outbox, next, body, tag) = (
            outbox.clone(),
            Arc::clone(&next),
            Arc::clone(&body),
            tag.to_owned(),
        );
        publishers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= events {
                    return;
                }
                let id = MessageId::new(format!("msg_{tag}_{i}")).expect("id");
                outbox
                    .publish(id, EVENT_TYPE, &*body, &[])
                    .await
                    .expect("publish");
            }
        }));
    }
    for p in publishers {
        p.await.expect("publisher");
    }
    let wait = tally.done.notified();
    if tally.delivered.load(Ordering::Relaxed) < deliveries {
        tokio::time::timeout(Duration::from_secs(600), wait)
            .await
            .expect("every delivery within 10 minutes");
    }
    let elapsed = started.elapsed();
    let after = cpu();
    workers.shutdown(Duration::from_secs(5)).await;
    assert_eq!(tally.failed.load(Ordering::Relaxed), 0, "failed attempts");
    let used = [0, 1, 2].map(|i| after[i] - before[i]);
    (deliveries, elapsed, used)
}

struct Row {
    kind: Kind,
    scenario: &'static str,
    rate: f64,
    cpu_us: [f64; 3],
}

async fn throughput(config: &Config, receiver: &process::Process) -> Vec<Vec<Row>> {
    let mut rounds = Vec::new();
    for round in 0..config.rounds {
        let mut rows = Vec::new();
        for offset in 0..config.stores.len() {
            let kind = config.stores[(round + offset) % config.stores.len()];
            for (scenario, events, endpoints) in [
                ("single", "1 endpoint", config.events, 1),
                ("fanout", "fan-out to 10", config.fanout_events, 10),
            ]
            .into_iter()
            .filter(|(name, ..)| config.scenarios.iter().any(|s| s == name))
            .map(|(_, scenario, events, endpoints)| (scenario, events, endpoints))
            {
                let tag = format!("r{round}_{}_{endpoints}", kind.name());
                let (n, elapsed, cpu) = match kind {
                    Kind::Memory => {
                        run(
                            MemoryStore::new(),
                            config,
                            receiver,
                            events,
                            endpoints,
                            &tag,
                        )
                        .await
                    }
                    Kind::Sqlite => {
                        let path = sqlite_path(&tag);
                        let store = SqliteStore::open(&path).await.expect("sqlite");
                        let out =
                            run(store.clone(), config, receiver, events, endpoints, &tag).await;
                        store.close().await;
                        let _ = std::fs::remove_file(&path);
                        out
                    }
                    Kind::Postgres => {
                        let store = postgres_store(&config.postgres, "hookway_bench", 16).await;
                        let out =
                            run(store.clone(), config, receiver, events, endpoints, &tag).await;
                        store.pool().close().await;
                        out
                    }
                };
                let rate = n as f64 / elapsed.as_secs_f64();
                let cpu_us = cpu.map(|s| s * 1e6 / n as f64);
                println!(
                    "round {}: {:<8} {scenario:<14} {n} deliveries in {:.2} s = {rate:.0}/s; CPU µs per delivery: sender {:.1}, receiver {:.1}, postgres {:.1}",
                    round + 1,
                    kind.name(),
                    elapsed.as_secs_f64(),
                    cpu_us[0],
                    cpu_us[1],
                    cpu_us[2]
                );
                rows.push(Row {
                    kind,
                    scenario,
                    rate,
                    cpu_us,
                });
            }
        }
        rounds.push(rows);
    }
    rounds
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

fn report_throughput(config: &Config, rounds: &[Vec<Row>]) {
    println!(
        "\n### Durable delivery ({} events to 1 endpoint, {} events × 10 endpoints; {}-byte payloads; {} publishers, {} workers, {} in flight)\n",
        config.events, config.fanout_events, config.payload, config.publishers, config.workers, config.in_flight
    );
    println!("| store | scenario | deliveries/s (median of {}) | rounds | vs memory | sender CPU µs | receiver CPU µs | Postgres CPU µs |", rounds.len());
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    for scenario in ["1 endpoint", "fan-out to 10"] {
        let memory = median(
            rounds
                .iter()
                .flatten()
                .filter(|r| r.kind == Kind::Memory && r.scenario == scenario)
                .map(|r| r.rate)
                .collect(),
        );
        for &kind in &config.stores {
            let rows: Vec<&Row> = rounds
                .iter()
                .flatten()
                .filter(|r| r.kind == kind && r.scenario == scenario)
                .collect();
            if rows.is_empty() {
                continue;
            }
            let rate = median(rows.iter().map(|r| r.rate).collect());
            let each: Vec<String> = rows.iter().map(|r| format!("{:.0}", r.rate)).collect();
            let cpu = |i: usize| median(rows.iter().map(|r| r.cpu_us[i]).collect());
            println!(
                "| {} | {scenario} | {rate:.0} | {} | {:.2}× | {:.1} | {:.1} | {} |",
                kind.name(),
                each.join(", "),
                rate / memory,
                cpu(0),
                cpu(1),
                if kind == Kind::Postgres {
                    format!("{:.1}", cpu(2))
                } else {
                    "—".to_owned()
                }
            );
        }
    }
}

fn main() {
    if std::env::var(receiver::ROLE_ENV).as_deref() == Ok("receiver") {
        return receiver::run();
    }
    let quick = !std::env::args().any(|a| a == "--bench");
    let config = Config::from_env(quick);
    if quick {
        println!("no --bench argument: smoke run with small sizes (use `cargo bench`)");
    }
    println!("hookway stores bench: {config:?}");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let receiver = receiver::spawn();
    let total = Instant::now();
    runtime.block_on(async {
        if config.runs("throughput") {
            let rounds = throughput(&config, &receiver).await;
            report_throughput(&config, &rounds);
        }
        if config.runs("claim") {
            let results = claim_latency(&config).await;
            report_claims(&config, &results);
        }
    });
    println!("\ntotal time {:.1} s", total.elapsed().as_secs_f64());
}

// ---------------------------------------------------------------------------
// Claim latency with many pending rows
// ---------------------------------------------------------------------------

/// Publishes one event with one delivery through the store, then copies
/// that delivery's row `rows - 1` times in SQL (publishing a million events
/// one by one would take far longer than the measurement). The copies
/// differ in id and due time and share the event, which claiming does not
/// mind.
const TEMPLATE: &str = "dlv_template";

async fn seed<S: Store>(store: &S) {
    let t0 = time::OffsetDateTime::UNIX_EPOCH + time::Duration::days(20_000);
    let delivery = hookway::delivery::Delivery::new(
        hookway::delivery::DeliveryId::from_static(TEMPLATE),
        MessageId::new("msg_template").expect("id"),
        EVENT_TYPE,
        EndpointId::from_static("ep_0"),
        t0,
    );
    store
        .insert_event(
            hookway::store::StoredEvent {
                id: MessageId::new("msg_template").expect("id"),
                event_type: EVENT_TYPE,
                channels: Vec::new(),
                payload: bytes::Bytes::from(vec![b'x'; 4096]),
                created_at: t0,
            },
            vec![delivery],
        )
        .await
        .expect("seed event");
}

/// Times `samples` claims of `batch` deliveries each on two stores, taking
/// turns, so that the machine's noise falls on both alike.
async fn time_claims<S: Store>(
    stores: [&S; 2],
    samples: usize,
    batch: usize,
) -> [Vec<Duration>; 2] {
    let now = time::OffsetDateTime::UNIX_EPOCH + time::Duration::days(30_000);
    let mut times = [Vec::with_capacity(samples), Vec::with_capacity(samples)];
    for _ in 0..samples {
        for (store, times) in stores.iter().zip(times.iter_mut()) {
            let started = Instant::now();
            let claimed = store
                .claim_due(now, Duration::from_secs(3600), batch)
                .await
                .expect("claim");
            times.push(started.elapsed());
            assert_eq!(claimed.len(), batch, "the table ran out of due deliveries");
        }
    }
    for times in &mut times {
        times.sort();
    }
    times
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// A SQLite store with `rows` pending deliveries.
async fn sqlite_with(name: &str, rows: usize) -> (SqliteStore, PathBuf) {
    let path = sqlite_path(&format!("claim_{name}"));
    let store = SqliteStore::open(&path).await.expect("sqlite");
    seed(&store).await;
    let started = Instant::now();
    // A bulk copy through a connection of our own.
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .expect("sqlite connection");
    sqlx::query(
        "WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < ?1)
         INSERT INTO hookway_deliveries
            (id, event_seq, endpoint_id, state, due_at, claims, created_at, finished_at, data)
         SELECT 'dlv_' || n, t.event_seq, t.endpoint_id, t.state, t.due_at + n, 0,
                t.created_at, NULL, replace(t.data, ?2, 'dlv_' || n)
         FROM g, (SELECT * FROM hookway_deliveries WHERE id = ?2) AS t",
    )
    .bind(i64::try_from(rows - 1).expect("rows"))
    .bind(TEMPLATE)
    .execute(&mut conn)
    .await
    .expect("fill");
    // Analyse, and move the copy from the WAL into the database file now
    // rather than in the middle of the timed claims.
    for sql in ["ANALYZE", "PRAGMA wal_checkpoint(TRUNCATE)"] {
        sqlx::query(sql).execute(&mut conn).await.expect(sql);
    }
    conn.close().await.expect("close");
    println!(
        "SQLite: {rows} pending rows written in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    (store, path)
}

/// A Postgres store, in a schema of its own, with `rows` pending
/// deliveries.
async fn postgres_with(config: &Config, name: &str, rows: usize) -> PostgresStore {
    let store = postgres_store(&config.postgres, &format!("hookway_bench_claim_{name}"), 4).await;
    seed(&store).await;
    let started = Instant::now();
    sqlx::query(
        "INSERT INTO hookway_deliveries
            (id, event_seq, endpoint_id, state, due_at, claims, created_at, finished_at, data)
         SELECT 'dlv_' || n, t.event_seq, t.endpoint_id, t.state, t.due_at + n, 0,
                t.created_at, NULL, replace(t.data, $2, 'dlv_' || n)
         FROM generate_series(1, $1) AS n,
              (SELECT * FROM hookway_deliveries WHERE id = $2) AS t",
    )
    .bind(i64::try_from(rows - 1).expect("rows"))
    .bind(TEMPLATE)
    .execute(store.pool())
    .await
    .expect("fill");
    sqlx::query("ANALYZE hookway_deliveries")
        .execute(store.pool())
        .await
        .expect("analyze");
    println!(
        "Postgres: {rows} pending rows written in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    store
}

async fn claim_latency(config: &Config) -> Vec<(Kind, usize, Vec<Duration>)> {
    let samples = 200;
    let batch = config.claim_batch;
    let few = 1_000.max(samples * batch + 1);
    let many = config.claim_rows.max(samples * batch + 1);
    let mut results = Vec::new();
    if config.stores.contains(&Kind::Sqlite) {
        let (small, small_path) = sqlite_with("few", few).await;
        let (large, large_path) = sqlite_with("many", many).await;
        let [a, b] = time_claims([&small, &large], samples, batch).await;
        results.push((Kind::Sqlite, few, a));
        results.push((Kind::Sqlite, many, b));
        for (store, path) in [(small, small_path), (large, large_path)] {
            store.close().await;
            let _ = std::fs::remove_file(&path);
        }
    }
    if config.stores.contains(&Kind::Postgres) {
        let small = postgres_with(config, "few", few).await;
        let large = postgres_with(config, "many", many).await;
        let [a, b] = time_claims([&small, &large], samples, batch).await;
        results.push((Kind::Postgres, few, a));
        results.push((Kind::Postgres, many, b));
        for (store, name) in [(small, "few"), (large, "many")] {
            store.pool().close().await;
            drop_schema(config, &format!("hookway_bench_claim_{name}")).await;
        }
    }
    results
}

/// Drops a schema the bench made (a table of millions of rows is not worth
/// keeping around).
async fn drop_schema(config: &Config, schema: &str) {
    let mut admin = sqlx::PgConnection::connect(&config.postgres)
        .await
        .expect("postgres");
    sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .execute(&mut admin)
        .await
        .expect("drop schema");
    admin.close().await.expect("close");
}

fn report_claims(config: &Config, results: &[(Kind, usize, Vec<Duration>)]) {
    println!(
        "\n### Claim latency: `claim_due` of {} deliveries, 200 times, with N pending rows\n",
        config.claim_batch
    );
    println!("| store | pending rows | p50 | p90 | p99 | max |");
    println!("| --- | --- | --- | --- | --- | --- |");
    for (kind, rows, times) in results {
        let ms = |d: Duration| format!("{:.2} ms", d.as_secs_f64() * 1e3);
        println!(
            "| {} | {rows} | {} | {} | {} | {} |",
            kind.name(),
            ms(percentile(times, 0.5)),
            ms(percentile(times, 0.9)),
            ms(percentile(times, 0.99)),
            ms(times.last().copied().unwrap_or_default())
        );
    }
}

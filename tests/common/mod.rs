//! What the multi-process tests share: a loopback receiver that verifies,
//! counts and can freeze; sender processes (this test binary run again in
//! the sender role); and the stores as the test process sees them.
//!
//! A sender process is the test binary itself, started with
//! [`SENDER_VAR`] holding its [`SenderConfig`] as JSON and a filter that
//! runs only the `sender_process` test, which does nothing without the
//! variable. It opens the store, starts an `Outbox` with workers, publishes
//! its share of events, and runs until its stdin closes (the test says it
//! is done, or the test process is gone); it then waits until nothing is
//! pending or in flight, shuts down and prints how many attempts it
//! recorded. Its reports to the test are on its stdout:
//! `[sender] published <n>` and `[sender] attempts <n>`.
//!
//! Senders tag their requests with [`SENDER_HEADER`] (a wrapper around the
//! real `ReqwestDispatcher`), so the receiver can count each process's
//! requests.
//!
//! Each test binary uses part of this module.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hookway::adapters::reqwest::ReqwestDispatcher;
use hookway::clock::SystemClock;
use hookway::delivery::{Delivery, EndpointId};
use hookway::dispatch::{Dispatcher, TransportError};
use hookway::endpoint::Endpoint;
use hookway::outbox::{Notification, Outbox, OutboxConfig};
use hookway::retry::RetryPolicy;
use hookway::store::{DeliveryQuery, PostgresStore, SqliteStore, Store, StoredEvent};
use hookway::{EventType, MessageId, Scheme, Secret, Verifier};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::Connection;
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Holds a sender process's [`SenderConfig`], as JSON.
pub const SENDER_VAR: &str = "HOOKWAY_TEST_SENDER";

/// The Postgres server for these tests.
pub const POSTGRES_VAR: &str = "HOOKWAY_TEST_POSTGRES_URL";

/// The event id of event `n`.
pub fn msg(n: u32) -> String {
    format!("msg_{n:05}")
}

/// The number in an event id made by [`msg`].
pub fn msg_number(id: &str) -> Option<u32> {
    id.strip_prefix("msg_")?.parse().ok()
}

/// The Postgres URL, or `None` with a one-line notice when the variable is
/// unset (the test then passes without running). The notice is written to
/// stderr directly, past the test harness's capture, so it shows in a
/// normal `cargo test` run.
pub fn postgres_url(test: &str) -> Option<String> {
    match std::env::var(POSTGRES_VAR) {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            let _ = writeln!(
                std::io::stderr(),
                "skipped {test}: set {POSTGRES_VAR} to run it against Postgres"
            );
            None
        }
    }
}

// ---------------------------------------------------------------------------
// Stores
// ---------------------------------------------------------------------------

/// Where the senders' store lives.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Backend {
    /// A SQLite file.
    Sqlite { path: PathBuf },
    /// A schema of its own in a Postgres database.
    Postgres { url: String, schema: String },
}

/// A SQLite file in the temp dir, removed with its WAL files when dropped.
pub struct TempDb(pub PathBuf);

impl TempDb {
    pub fn new(tag: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join("hookway-process-tests");
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join(format!(
            "{tag}-{}-{}.db",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let db = Self(path);
        db.remove();
        db
    }

    fn remove(&self) {
        for suffix in ["", "-wal", "-shm"] {
            let mut path = self.0.clone().into_os_string();
            path.push(suffix);
            let _ = std::fs::remove_file(path);
        }
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        self.remove();
    }
}

/// A fresh schema (`hookway_test_…`, which `.ci/run` drops if a failed
/// run leaves it behind). Fails the test if the server is unreachable.
pub async fn fresh_schema(url: &str, tag: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let schema = format!(
        "hookway_test_{tag}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let mut admin = sqlx::PgConnection::connect(url)
        .await
        .unwrap_or_else(|e| panic!("{POSTGRES_VAR} is set but Postgres is unreachable: {e}"));
    for sql in [
        format!("DROP SCHEMA IF EXISTS {schema} CASCADE"),
        format!("CREATE SCHEMA {schema}"),
    ] {
        sqlx::query(&sql).execute(&mut admin).await.unwrap();
    }
    admin.close().await.unwrap();
    schema
}

pub async fn drop_schema(url: &str, schema: &str) {
    let mut admin = sqlx::PgConnection::connect(url).await.unwrap();
    sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .execute(&mut admin)
        .await
        .unwrap();
    admin.close().await.unwrap();
}

pub async fn postgres_store(url: &str, schema: &str, connections: u32) -> PostgresStore {
    let options: PgConnectOptions = url.parse().expect("Postgres URL");
    PostgresStore::connect_with(
        PgPoolOptions::new().max_connections(connections),
        options.options([("search_path", schema)]),
    )
    .await
    .unwrap_or_else(|e| panic!("{POSTGRES_VAR} is set but the store cannot connect: {e}"))
}

/// The store as the test process opens it, to set it up and to look at it
/// between and after the senders' runs.
pub enum Opened {
    Sqlite(SqliteStore),
    Postgres(PostgresStore),
}

macro_rules! with_store {
    ($opened:expr, $store:ident => $body:expr) => {
        match $opened {
            Opened::Sqlite($store) => $body,
            Opened::Postgres($store) => $body,
        }
    };
}

impl Opened {
    pub async fn open(backend: &Backend) -> Self {
        match backend {
            Backend::Sqlite { path } => Self::Sqlite(SqliteStore::open(path).await.unwrap()),
            Backend::Postgres { url, schema } => {
                Self::Postgres(postgres_store(url, schema, 2).await)
            }
        }
    }

    pub async fn put_endpoint(&self, endpoint: Endpoint) {
        with_store!(self, s => s.put_endpoint(endpoint).await.unwrap());
    }

    /// Every delivery, oldest first.
    pub async fn deliveries(&self) -> Vec<Delivery> {
        let all = DeliveryQuery::default();
        with_store!(self, s => s.deliveries(&all).await.unwrap())
    }

    /// Every event.
    pub async fn events(&self) -> Vec<StoredEvent> {
        with_store!(self, s => s.events_since(OffsetDateTime::UNIX_EPOCH).await.unwrap())
    }

    pub async fn close(self) {
        match self {
            Self::Sqlite(s) => s.close().await,
            Self::Postgres(s) => s.pool().close().await,
        }
    }
}

/// An endpoint of the receiver's: Standard Webhooks signatures, retries
/// every 200 ms (up to 1 000 attempts: none fails for good within a test).
pub fn endpoint(id: &str, url: &str, secret: &Secret, timeout: Duration) -> Endpoint {
    let policy = RetryPolicy::fixed([Duration::from_millis(200)])
        .repeat_last()
        .with_max_attempts(1_000)
        .build()
        .unwrap();
    Endpoint::builder(
        EndpointId::new(id).unwrap(),
        url,
        Scheme::standard(),
        secret.clone(),
    )
    .timeout(timeout)
    .retry_policy(policy)
    .build()
    .unwrap()
}

// ---------------------------------------------------------------------------
// The receiver
// ---------------------------------------------------------------------------

/// What the script sees of a request.
#[derive(Clone, Debug)]
pub struct Incoming<'a> {
    pub path: &'a str,
    pub msg_id: &'a str,
    /// 1 for the first request of this message on this path, 2 for the
    /// second, …
    pub nth: u32,
}

/// Counts, as of one moment.
#[derive(Clone, Debug, Default)]
pub struct Tally {
    /// Requests with a valid signature.
    pub requests: u64,
    /// Requests whose signature did not verify (answered 401).
    pub bad_signatures: u64,
    /// Requests that were a message's first on its path.
    pub first_attempts: u64,
    /// Requests that were not.
    pub retries: u64,
    /// (path, message) pairs answered 2xx at least once.
    pub acked_pairs: u64,
    /// Requests held by a freeze (the swallowed one included).
    pub held: u64,
    /// Requests per sender process (its [`SENDER_HEADER`]).
    pub by_agent: HashMap<String, u64>,
}

/// What the receiver knows of one (path, message) pair.
#[derive(Clone, Copy, Debug, Default)]
pub struct Pair {
    pub requests: u32,
    /// Requests it processed with a 2xx (the swallowed one included).
    pub acks: u32,
}

/// A request processed with a 2xx whose answer was withheld: the receiver
/// has the event, its sender does not know.
#[derive(Clone, Debug)]
pub struct Swallowed {
    pub path: String,
    pub msg_id: String,
    pub sender: String,
    pub at: Instant,
}

/// Decides the status of a request, given the counts before it.
type Script = dyn Fn(&Incoming<'_>, &Tally) -> u16 + Send + Sync;
type Trigger = dyn Fn(&Tally) -> bool + Send + Sync;

/// When and how the receiver freezes: once `when` holds, the next request
/// from `swallow_from` that the script answers 2xx is processed (counted as
/// acknowledged) but gets no answer, and every other request from then on
/// is held unprocessed, until [`Receiver::unfreeze`]. Nothing more is
/// acknowledged, so the counts stay as they were, and each sender has
/// attempts outstanding (claims held) for as long as the freeze lasts.
pub struct Freeze {
    pub when: Box<Trigger>,
    pub swallow_from: String,
}

struct Shared {
    verifier: Verifier,
    script: Box<Script>,
    freeze: Option<Freeze>,
    frozen: watch::Sender<bool>,
    log: Mutex<Log>,
}

#[derive(Default)]
struct Log {
    tally: Tally,
    pairs: HashMap<(String, String), Pair>,
    /// The trigger fires once.
    fired: bool,
    swallowed: Option<Swallowed>,
}

/// An HTTP/1.1 receiver on 127.0.0.1 that verifies each request's Standard
/// Webhooks signature, answers with the status its script gives, and can
/// [`Freeze`].
pub struct Receiver {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl Receiver {
    pub async fn start(
        secret: &Secret,
        script: impl Fn(&Incoming<'_>, &Tally) -> u16 + Send + Sync + 'static,
        freeze: Option<Freeze>,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1");
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            verifier: Verifier::new(Scheme::standard(), secret.clone()).unwrap(),
            script: Box::new(script),
            freeze,
            frozen: watch::Sender::new(false),
            log: Mutex::new(Log::default()),
        });
        let for_task = Arc::clone(&shared);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let _ = stream.set_nodelay(true);
                tokio::spawn(serve(stream, Arc::clone(&for_task)));
            }
        });
        Self { addr, shared }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn tally(&self) -> Tally {
        self.shared.log.lock().unwrap().tally.clone()
    }

    pub fn pairs(&self) -> HashMap<(String, String), Pair> {
        self.shared.log.lock().unwrap().pairs.clone()
    }

    pub fn pair(&self, path: &str, msg_id: &str) -> Pair {
        let log = self.shared.log.lock().unwrap();
        log.pairs
            .get(&(path.to_owned(), msg_id.to_owned()))
            .copied()
            .unwrap_or_default()
    }

    /// The request swallowed by the freeze, if it has happened.
    pub fn swallowed(&self) -> Option<Swallowed> {
        self.shared.log.lock().unwrap().swallowed.clone()
    }

    /// Ends the freeze: held requests get their connection closed.
    pub fn unfreeze(&self) {
        self.shared.frozen.send_replace(false);
    }
}

/// Serves one connection: requests one after another (keep-alive).
async fn serve(mut stream: TcpStream, shared: Arc<Shared>) {
    let mut buf = Vec::with_capacity(8 * 1024);
    loop {
        let Some((path, headers, body)) = read_request(&mut stream, &mut buf).await else {
            return;
        };
        let Some(status) = shared.handle(&path, &headers, &body) else {
            // Held: wait for the end of the freeze, then close unanswered.
            let mut frozen = shared.frozen.subscribe();
            let _ = frozen.wait_for(|f| !*f).await;
            return;
        };
        let out = format!("HTTP/1.1 {status} Whatever\r\nContent-Length: 0\r\n\r\n");
        if stream.write_all(out.as_bytes()).await.is_err() {
            return;
        }
    }
}

impl Shared {
    /// Verifies and logs one request; the status to answer with, or `None`
    /// to hold it.
    fn handle(&self, path: &str, headers: &HeaderMap, body: &[u8]) -> Option<u16> {
        let msg_id = headers
            .get("webhook-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let agent = headers
            .get(SENDER_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let verified = self
            .verifier
            .verify(headers, body)
            .is_ok_and(|v| v.signed_id() == Some(msg_id));
        let mut log = self.log.lock().unwrap();
        if !verified {
            log.tally.bad_signatures += 1;
            return Some(401);
        }
        let Log {
            tally,
            pairs,
            fired,
            swallowed,
        } = &mut *log;
        let pair = pairs
            .entry((path.to_owned(), msg_id.to_owned()))
            .or_default();
        pair.requests += 1;
        let nth = pair.requests;
        let status = (self.script)(&Incoming { path, msg_id, nth }, tally);
        tally.requests += 1;
        if nth == 1 {
            tally.first_attempts += 1;
        } else {
            tally.retries += 1;
        }
        *tally.by_agent.entry(agent.to_owned()).or_default() += 1;
        let ok = (200..300).contains(&status);
        let frozen = *self.frozen.borrow();
        let answer = match &self.freeze {
            Some(freeze) if frozen => {
                let swallow = swallowed.is_none() && ok && agent == freeze.swallow_from;
                if swallow {
                    *swallowed = Some(Swallowed {
                        path: path.to_owned(),
                        msg_id: msg_id.to_owned(),
                        sender: agent.to_owned(),
                        at: Instant::now(),
                    });
                    pair.acks += 1;
                    tally.acked_pairs += u64::from(pair.acks == 1);
                }
                tally.held += 1;
                None
            }
            _ => {
                if ok {
                    pair.acks += 1;
                    tally.acked_pairs += u64::from(pair.acks == 1);
                }
                Some(status)
            }
        };
        if !*fired && self.freeze.as_ref().is_some_and(|f| (f.when)(tally)) {
            *fired = true;
            self.frozen.send_replace(true);
        }
        answer
    }
}

/// Reads one request (request line, headers, a `Content-Length` body) from
/// `stream`, keeping any bytes past it in `buf` for the next one.
async fn read_request(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
) -> Option<(String, HeaderMap, Vec<u8>)> {
    let mut chunk = [0u8; 16 * 1024];
    let head_end = loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos;
        }
        if buf.len() > 64 * 1024 {
            return None;
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = std::str::from_utf8(&buf[..head_end]).ok()?;
    let mut lines = head.split("\r\n");
    let mut start = lines.next()?.split(' ');
    let (_method, target) = (start.next()?, start.next()?.to_owned());
    let mut headers = HeaderMap::new();
    for line in lines {
        let (name, value) = line.split_once(':')?;
        headers.append(
            HeaderName::from_bytes(name.trim().as_bytes()).ok()?,
            HeaderValue::from_str(value.trim()).ok()?,
        );
    }
    let length: usize = match headers.get("content-length") {
        Some(v) => v.to_str().ok()?.parse().ok()?,
        None => 0,
    };
    let total = head_end + 4 + length;
    while buf.len() < total {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = buf[head_end + 4..total].to_vec();
    buf.drain(..total);
    Some((target, headers, body))
}

// ---------------------------------------------------------------------------
// Sender processes
// ---------------------------------------------------------------------------

/// Which events a sender publishes: `msg(from)`, `msg(from + step)`, …
/// below `to`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Publish {
    pub from: u32,
    pub to: u32,
    pub step: u32,
    /// Publishing tasks, each taking every `tasks`-th of the events.
    pub tasks: u32,
    /// A pause after each publish (per task), in milliseconds.
    pub pace_ms: u64,
    /// Report `published <n>` once each publish has returned.
    pub report: bool,
}

impl Publish {
    pub fn none() -> Self {
        Self {
            from: 0,
            to: 0,
            step: 1,
            tasks: 1,
            pace_ms: 0,
            report: false,
        }
    }
}

/// Marks a sender's reports on its stdout (the test harness may have
/// started the line: `test sender_process ... `).
const REPORT: &str = "[sender] ";

/// Names the sender process on each request (added after signing; the
/// signature does not cover it).
pub const SENDER_HEADER: &str = "x-test-sender";

/// The real dispatcher, adding [`SENDER_HEADER`] to each request.
struct Tagged {
    inner: ReqwestDispatcher,
    sender: HeaderValue,
}

impl Dispatcher for Tagged {
    async fn send(
        &self,
        mut request: http::Request<Bytes>,
        timeout: Duration,
    ) -> Result<http::Response<Bytes>, TransportError> {
        request
            .headers_mut()
            .insert(SENDER_HEADER, self.sender.clone());
        self.inner.send(request, timeout).await
    }
}

/// What a sender process does; passed to it as JSON in [`SENDER_VAR`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SenderConfig {
    /// Its name, sent in [`SENDER_HEADER`] so the receiver can tell the
    /// senders apart.
    pub name: String,
    pub backend: Backend,
    pub publish: Publish,
    /// `OutboxConfig::lease`, in milliseconds.
    pub lease_ms: u64,
    pub workers: usize,
}

/// The body of the `sender_process` test: a sender, if [`SENDER_VAR`] says
/// so; otherwise nothing.
pub fn sender_process_if_asked() {
    let Ok(json) = std::env::var(SENDER_VAR) else {
        return;
    };
    let config: SenderConfig = serde_json::from_str(&json).expect("a sender config");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        match &config.backend {
            Backend::Sqlite { path } => {
                let store = SqliteStore::open(path)
                    .await
                    .expect("open the SQLite store");
                run_sender(store, &config).await;
            }
            Backend::Postgres { url, schema } => {
                run_sender(postgres_store(url, schema, 8).await, &config).await;
            }
        }
    });
}

async fn run_sender<S: Store>(store: S, config: &SenderConfig) {
    let dispatcher = ReqwestDispatcher::builder()
        .allow_http(true)
        .allow_network("127.0.0.0/8")
        .build()
        .unwrap();
    let dispatcher = Tagged {
        inner: dispatcher,
        sender: HeaderValue::from_str(&config.name).expect("a sender name"),
    };
    let mut settings = OutboxConfig::default();
    settings.lease = Duration::from_millis(config.lease_ms);
    let outbox = Outbox::with_config(store, dispatcher, settings, SystemClock);
    // Attempts whose results this process stored.
    let attempts = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&attempts);
    outbox.subscribe(move |n: &Notification| {
        if matches!(n, Notification::AttemptFinished { .. }) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    });
    // Stdin closes when the test is done with this process, or is gone.
    let (done_tx, mut done) = watch::channel(false);
    std::thread::spawn(move || {
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        let _ = done_tx.send(true);
    });
    let workers = outbox.start(config.workers);

    let p = &config.publish;
    let mut publishers = tokio::task::JoinSet::new();
    for task in 0..p.tasks.max(1) {
        let (outbox, p) = (outbox.clone(), p.clone());
        publishers.spawn(async move {
            let step = p.step.max(1);
            let mut n = p.from + task * step;
            while n < p.to {
                let id = MessageId::new(msg(n)).unwrap();
                let body = serde_json::json!({ "n": n, "subject": "process test" });
                outbox
                    .publish(id, EventType::from_static("ticket.created"), &body, &[])
                    .await
                    .unwrap_or_else(|e| panic!("publishing {} failed: {e}", msg(n)));
                if p.report {
                    println!("{REPORT}published {n}");
                }
                if p.pace_ms > 0 {
                    tokio::time::sleep(Duration::from_millis(p.pace_ms)).await;
                }
                n += step * p.tasks.max(1);
            }
        });
    }
    while let Some(joined) = publishers.join_next().await {
        joined.expect("a publishing task panicked");
    }

    let _ = done.wait_for(|d| *d).await;
    // Finish what is left (a test closes stdin once the receiver has
    // everything, but a delivery can still be in flight, or claimed by a
    // dead process and waiting for its lease to run out).
    let deadline = Instant::now() + Duration::from_secs(15);
    while let Some(due) = outbox.store().next_due().await.unwrap() {
        assert!(
            Instant::now() < deadline,
            "{}: deliveries still pending at shutdown (next due {due})",
            config.name
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    workers.shutdown(Duration::from_secs(5)).await;
    println!("{REPORT}attempts {}", attempts.load(Ordering::Relaxed));
}

/// A sender process; killed (SIGKILL) when dropped if still running, so a
/// failing test leaves none behind.
pub struct Sender {
    pub name: String,
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
    /// The threads reading its stdout and stderr.
    readers: Vec<std::thread::JoinHandle<()>>,
    exit: Option<ExitStatus>,
}

/// Reads `from` line by line into `into`, until end of file.
fn collect(
    from: impl Read + Send + 'static,
    into: Arc<Mutex<Vec<String>>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(from).lines() {
            let Ok(line) = line else { return };
            into.lock().unwrap().push(line);
        }
    })
}

impl Sender {
    /// Starts this test binary as a sender.
    pub fn spawn(config: &SenderConfig) -> Self {
        let exe = std::env::current_exe().expect("the test binary's path");
        let mut child = Command::new(exe)
            .args([
                "--exact",
                "sender_process",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(SENDER_VAR, serde_json::to_string(config).unwrap())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start a sender process");
        let (stdout, stderr) = Default::default();
        let readers = vec![
            collect(child.stdout.take().unwrap(), Arc::clone(&stdout)),
            collect(child.stderr.take().unwrap(), Arc::clone(&stderr)),
        ];
        Self {
            name: config.name.clone(),
            stdin: child.stdin.take(),
            child: Some(child),
            stdout,
            stderr,
            readers,
            exit: None,
        }
    }

    /// SIGKILL, and reap it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            self.exit = child.wait().ok();
            self.drain_output();
        }
    }

    /// Once it has exited: waits until everything it wrote has been read.
    fn drain_output(&mut self) {
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
    }

    /// Tells it the test is done: it finishes what is pending and exits.
    pub fn finish(&mut self) {
        self.stdin.take();
    }

    /// Whether it has exited (on its own, or killed); reaps it if so.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        if let Some(child) = &mut self.child {
            if let Some(status) = child.try_wait().expect("try_wait") {
                self.exit = Some(status);
                self.child = None;
                self.drain_output();
            }
        }
        self.exit
    }

    /// Waits for it to exit, until `deadline`.
    pub async fn wait_exit(&mut self, deadline: Instant) -> ExitStatus {
        loop {
            if let Some(status) = self.exited() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit in time\n{}",
                self.name,
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The numbers it reported as `<word> <n>`.
    pub fn reported(&self, word: &str) -> Vec<u64> {
        let marker = format!("{REPORT}{word} ");
        self.stdout
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| l[l.find(&marker)? + marker.len()..].parse().ok())
            .collect()
    }

    /// The last lines of its stderr and stdout, for failure messages.
    pub fn output(&self) -> String {
        let tail = |lines: &Mutex<Vec<String>>| {
            let lines = lines.lock().unwrap();
            lines[lines.len().saturating_sub(30)..].join("\n")
        };
        format!(
            "--- {} stderr (tail) ---\n{}\n--- {} stdout (tail) ---\n{}",
            self.name,
            tail(&self.stderr),
            self.name,
            tail(&self.stdout)
        )
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits until `done` holds, failing with `what` (and the senders' output)
/// at `deadline`, or as soon as one of `running` exits.
pub async fn wait_until(
    deadline: Instant,
    what: impl Fn() -> String,
    running: &mut [&mut Sender],
    mut done: impl FnMut() -> bool,
) {
    loop {
        if done() {
            return;
        }
        for sender in running.iter_mut() {
            if let Some(status) = sender.exited() {
                panic!(
                    "{} exited ({status}) while waiting for {}\n{}",
                    sender.name,
                    what(),
                    sender.output()
                );
            }
        }
        if Instant::now() >= deadline {
            let output: Vec<String> = running.iter().map(|s| s.output()).collect();
            panic!("timed out waiting for {}\n{}", what(), output.join("\n"));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

//! Crash survival of the durable inbox: a receiver process acknowledges
//! events whose handlers never finish, is killed with SIGKILL once the
//! sender has every 2xx, and is started again on the same database; every
//! acknowledged event's handler then runs, once. Once with the SQLite
//! inbox, once with Postgres (which needs `HOOKWAY_TEST_POSTGRES_URL`;
//! without it that test passes with a notice).
//!
//! The receiver is this test binary run again in the receiver role (see
//! `receiver_process`): it opens the store, serves a `Receiver` with an
//! inbox through the axum adapter on 127.0.0.1, and writes what its handler
//! does to a file (`started <id>` in the first run, whose handler then
//! waits forever; `handled <id>` in the second). The test process sends
//! the signed requests over loopback with hookway's reqwest dispatcher.
#![cfg(all(
    feature = "axum",
    feature = "reqwest",
    feature = "sqlite",
    feature = "postgres",
    feature = "outbox"
))]

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{drop_schema, fresh_schema, msg, postgres_store, postgres_url, Backend, TempDb};
use hookway::adapters::reqwest::ReqwestDispatcher;
use hookway::clock::{Clock, SystemClock};
use hookway::dispatch::Dispatcher;
use hookway::receive::{EntryState, InboxConfig, InboxStore, RawEvent, Receiver};
use hookway::store::SqliteStore;
use hookway::{Event, EventType, Scheme, Secret, Signer, Verifier};
use serde::{Deserialize, Serialize};

/// Holds a receiver process's [`ReceiverConfig`], as JSON.
const RECEIVER_VAR: &str = "HOOKWAY_TEST_INBOX_RECEIVER";
/// Marks the receiver's reports on its stdout.
const REPORT: &str = "[receiver] ";
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const PATH: &str = "/hooks";
const EVENTS: u32 = 40;
const WORKERS: usize = 2;
/// Short, so the dead process's claims come back soon.
const LEASE: Duration = Duration::from_secs(1);
/// How long a test may take, failing or not (it takes about 2 s).
const BUDGET: Duration = Duration::from_secs(60);

/// The tests in this binary start processes: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum Mode {
    /// Record `started <id>`, then never finish.
    Block,
    /// Record `handled <id>` and succeed.
    Record,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct ReceiverConfig {
    backend: Backend,
    /// Where the handler writes what it does.
    log: PathBuf,
    mode: Mode,
}

/// The receiver role; does nothing in a normal test run.
#[test]
fn receiver_process() {
    let Ok(json) = std::env::var(RECEIVER_VAR) else {
        return;
    };
    let config: ReceiverConfig = serde_json::from_str(&json).expect("a receiver config");
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
                run_receiver(store.inbox(), &config).await;
                store.close().await;
            }
            Backend::Postgres { url, schema } => {
                let store = postgres_store(url, schema, 4).await;
                run_receiver(store.inbox(), &config).await;
                store.pool().close().await;
            }
        }
    });
}

fn append(log: &Path, line: &str) {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("open the handler log");
    file.write_all(line.as_bytes())
        .expect("write the handler log");
}

async fn run_receiver(inbox: impl InboxStore, config: &ReceiverConfig) {
    let (log, mode) = (config.log.clone(), config.mode);
    let mut settings = InboxConfig::default();
    settings.workers = WORKERS;
    settings.lease = LEASE;
    settings.idle_poll = Duration::from_millis(50);
    let verifier = Verifier::new(Scheme::standard(), Secret::base64(SECRET).unwrap()).unwrap();
    let receiver = Receiver::builder(verifier)
        .on_raw("ticket.*", move |event: RawEvent| {
            let log = log.clone();
            async move {
                match mode {
                    Mode::Block => {
                        append(&log, &format!("started {}\n", event.id));
                        std::future::pending::<()>().await;
                    }
                    Mode::Record => append(&log, &format!("handled {}\n", event.id)),
                }
                Ok(())
            }
        })
        .inbox(inbox)
        .inbox_config(settings)
        .build()
        .expect("build the receiver");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().route(PATH, hookway::adapters::axum::webhook(receiver.clone()));
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
    });
    println!("{REPORT}listening {addr}");
    // Stdin closes when the test is done with this process, or is gone.
    let (done_tx, done) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        let _ = done_tx.send(());
    });
    let _ = done.await;
    let report = receiver.shutdown(Duration::from_secs(5)).await;
    println!(
        "{REPORT}shutdown drained={} unfinished={}",
        report.drained, report.unfinished
    );
}

// ---------------------------------------------------------------------------
// The test's side
// ---------------------------------------------------------------------------

/// The lines a process wrote, as read so far.
type Lines = Arc<Mutex<Vec<String>>>;

/// A receiver process; killed (SIGKILL) when dropped if still running.
struct Process {
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    stdout: Lines,
    stderr: Lines,
}

fn collect(from: impl Read + Send + 'static, into: Lines) {
    std::thread::spawn(move || {
        for line in BufReader::new(from).lines() {
            let Ok(line) = line else { return };
            into.lock().unwrap().push(line);
        }
    });
}

impl Process {
    fn spawn(config: &ReceiverConfig) -> Self {
        let exe = std::env::current_exe().expect("the test binary's path");
        let mut child = Command::new(exe)
            .args([
                "--exact",
                "receiver_process",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(RECEIVER_VAR, serde_json::to_string(config).unwrap())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start a receiver process");
        let (stdout, stderr) = (Lines::default(), Lines::default());
        collect(child.stdout.take().unwrap(), Arc::clone(&stdout));
        collect(child.stderr.take().unwrap(), Arc::clone(&stderr));
        Self {
            stdin: child.stdin.take(),
            child: Some(child),
            stdout,
            stderr,
        }
    }

    /// The text after the first `<REPORT><word> ` on its stdout, waiting
    /// for it until `deadline`.
    async fn report(&mut self, word: &str, deadline: Instant) -> String {
        let marker = format!("{REPORT}{word} ");
        loop {
            let found = self
                .stdout
                .lock()
                .unwrap()
                .iter()
                .find_map(|l| Some(l[l.find(&marker)? + marker.len()..].to_owned()));
            if let Some(found) = found {
                return found;
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!(
                    "the receiver exited ({status}) before reporting {word}\n{}",
                    self.output()
                );
            }
            assert!(
                Instant::now() < deadline,
                "no `{word}` report\n{}",
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// SIGKILL, and reap it.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Closes its stdin (it shuts down and exits) and waits for it.
    async fn finish(&mut self, deadline: Instant) {
        self.stdin.take();
        let Some(child) = self.child.as_mut() else {
            return;
        };
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(
                    status.success(),
                    "the receiver failed: {status}\n{}",
                    self.output()
                );
                self.child = None;
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the receiver did not exit\n{}",
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn output(&self) -> String {
        let tail = |lines: &Mutex<Vec<String>>| {
            let lines = lines.lock().unwrap();
            lines[lines.len().saturating_sub(30)..].join("\n")
        };
        format!(
            "--- stderr (tail) ---\n{}\n--- stdout (tail) ---\n{}",
            tail(&self.stderr),
            tail(&self.stdout)
        )
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What the handlers wrote: for each word (`started`, `handled`), how
/// many times each id.
fn read_log(log: &Path) -> BTreeMap<String, BTreeMap<String, u32>> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut seen: BTreeMap<String, BTreeMap<String, u32>> = BTreeMap::new();
    for line in text.lines() {
        let (word, id) = line.split_once(' ').expect("a log line");
        *seen
            .entry(word.to_owned())
            .or_default()
            .entry(id.to_owned())
            .or_default() += 1;
    }
    seen
}

async fn wait_for(
    deadline: Instant,
    what: &str,
    process: &mut Process,
    mut done: impl FnMut() -> bool,
) {
    while !done() {
        if let Some(status) = process.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
            panic!(
                "the receiver exited ({status}) while waiting for {what}\n{}",
                process.output()
            );
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}\n{}",
            process.output()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Signs and posts event `n` (as a sender would: signed afresh each time);
/// the status and body of the answer.
async fn send(client: &ReqwestDispatcher, addr: SocketAddr, n: u32) -> (u16, String) {
    let now = SystemClock.now();
    let event = Event::new_at(
        EventType::from_static("ticket.created"),
        serde_json::json!({ "n": n }),
        now,
    )
    .with_id(msg(n).parse().unwrap());
    let (body, headers) = Signer::new(Scheme::standard(), Secret::base64(SECRET).unwrap())
        .unwrap()
        .sign_event(&event, now)
        .unwrap();
    let mut request = http::Request::post(format!("http://{addr}{PATH}"))
        .body(Bytes::from(body))
        .unwrap();
    request.headers_mut().extend(headers);
    let response = client
        .send(request, Duration::from_secs(10))
        .await
        .expect("the receiver answers");
    (
        response.status().as_u16(),
        String::from_utf8_lossy(response.body()).into_owned(),
    )
}

async fn all_processed_once<S: InboxStore>(inbox: &S, ids: &[String]) {
    for id in ids {
        let status = inbox.status(&id.parse().unwrap()).await.unwrap().unwrap();
        assert!(
            matches!(status.state, EntryState::Processed { .. }),
            "{id}: {status:?}"
        );
        assert_eq!(status.attempts, 1, "{id}");
    }
    assert!(inbox.failed(None, 0).await.unwrap().is_empty());
    assert_eq!(inbox.next_due().await.unwrap(), None);
}

async fn killed_and_restarted(backend: Backend) {
    let deadline = Instant::now() + BUDGET;
    let log = TempDb::new("inbox-handled");
    let config = |mode| ReceiverConfig {
        backend: backend.clone(),
        log: log.0.clone(),
        mode,
    };
    let client = ReqwestDispatcher::builder()
        .allow_http(true)
        .allow_network("127.0.0.0/8")
        .build()
        .unwrap();

    // First run: every event acknowledged, no handler ever finishes.
    let mut first = Process::spawn(&config(Mode::Block));
    let addr: SocketAddr = first.report("listening", deadline).await.parse().unwrap();
    for n in 0..EVENTS {
        assert_eq!(
            send(&client, addr, n).await,
            (202, "accepted".to_owned()),
            "{}",
            msg(n)
        );
    }
    assert_eq!(send(&client, addr, 7).await, (200, "duplicate".to_owned()));
    // Every worker is inside a handler when the process dies.
    wait_for(
        deadline,
        "every worker to start a handler",
        &mut first,
        || {
            read_log(&log.0)
                .get("started")
                .is_some_and(|s| s.len() == WORKERS)
        },
    )
    .await;
    first.kill();
    let before = read_log(&log.0);
    assert!(
        !before.contains_key("handled"),
        "nothing finished before the kill: {before:?}"
    );
    let cut_off: Vec<String> = before["started"].keys().cloned().collect();

    // Second run on the same database: everything acknowledged is handled,
    // the cut-off handlers once their dead claims' leases end.
    let mut second = Process::spawn(&config(Mode::Record));
    let addr: SocketAddr = second.report("listening", deadline).await.parse().unwrap();
    // The inbox remembers what it acknowledged across the crash.
    assert_eq!(send(&client, addr, 3).await, (200, "duplicate".to_owned()));
    let all: Vec<String> = (0..EVENTS).map(msg).collect();
    wait_for(
        deadline,
        "every acknowledged event to be handled",
        &mut second,
        || {
            read_log(&log.0)
                .get("handled")
                .is_some_and(|h| h.len() == all.len())
        },
    )
    .await;
    second.finish(deadline).await;
    assert_eq!(
        second.report("shutdown", deadline).await,
        "drained=true unfinished=0"
    );

    let handled = read_log(&log.0).remove("handled").unwrap_or_default();
    let expected: BTreeMap<String, u32> = all.iter().map(|id| (id.clone(), 1)).collect();
    assert_eq!(
        handled, expected,
        "each acknowledged event handled exactly once"
    );
    for id in &cut_off {
        assert!(
            handled.contains_key(id),
            "{id} was cut off and never handled"
        );
    }

    // The store agrees: every entry processed after one recorded run (the
    // dead process's claims lapsed, they were not runs), none failed,
    // nothing due.
    match &backend {
        Backend::Sqlite { path } => {
            let store = SqliteStore::open(path).await.unwrap();
            all_processed_once(&store.inbox(), &all).await;
            store.close().await;
        }
        Backend::Postgres { url, schema } => {
            let store = postgres_store(url, schema, 2).await;
            all_processed_once(&store.inbox(), &all).await;
            store.pool().close().await;
        }
    }
    eprintln!(
        "{EVENTS} events acknowledged, receiver killed with {} handlers running ({cut_off:?}); \
         all handled once after the restart",
        cut_off.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_receiver_killed_after_acknowledging_loses_nothing() {
    let _serial = SERIAL.lock().await;
    let db = TempDb::new("inbox-crash");
    killed_and_restarted(Backend::Sqlite { path: db.0.clone() }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_receiver_killed_after_acknowledging_loses_nothing() {
    let Some(url) = postgres_url("postgres_receiver_killed_after_acknowledging_loses_nothing")
    else {
        return;
    };
    let _serial = SERIAL.lock().await;
    let schema = fresh_schema(&url, "inbox_crash").await;
    killed_and_restarted(Backend::Postgres {
        url: url.clone(),
        schema: schema.clone(),
    })
    .await;
    drop_schema(&url, &schema).await;
}

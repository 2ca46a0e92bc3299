//! Several sender processes sharing one delivery queue in Postgres.
//!
//! ```sh
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/test \
//!     cargo run --example postgres_sender --features outbox,reqwest,postgres
//! ```
//!
//! The example starts a loopback receiver, publishes 300 events from this
//! process, and starts two copies of itself as sender processes (in a real
//! deployment: your service, running on several machines). Each opens the
//! same database with `PostgresStore` and runs an `Outbox` with workers;
//! nothing coordinates them but the table: workers claim due deliveries
//! with `FOR UPDATE SKIP LOCKED` under a lease, so each delivery is sent by
//! one process, and a process that dies leaves its claims to expire and be
//! taken over by the others.
//!
//! It prints how many deliveries each process made and checks that every
//! event arrived. The tables live in a schema of their own
//! (`hookway_example`), dropped and made again on each run.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hookway::adapters::reqwest::ReqwestDispatcher;
use hookway::clock::SystemClock;
use hookway::endpoint::Endpoint;
use hookway::outbox::{Notification, Outbox, OutboxConfig};
use hookway::store::PostgresStore;
use hookway::{EventType, MessageId, Scheme, Secret};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::Connection as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SCHEMA: &str = "hookway_example";
const EVENTS: usize = 300;
const SENDERS: usize = 2;

async fn store(url: &str) -> Result<PostgresStore, Box<dyn std::error::Error>> {
    let options: PgConnectOptions = url.parse()?;
    Ok(PostgresStore::connect_with(
        PgPoolOptions::new().max_connections(8),
        options.options([("search_path", SCHEMA)]),
    )
    .await?)
}

/// One sender process: an Outbox with workers until every delivery is
/// made; prints how many it made itself.
async fn sender(url: &str, name: &str) -> Result<(), Box<dyn std::error::Error>> {
    let store = store(url).await?;
    let dispatcher = ReqwestDispatcher::builder()
        // Loopback for the demo only; production keeps HTTPS and the SSRF
        // guard's defaults.
        .allow_http(true)
        .allow_network("127.0.0.0/8")
        .build()?;
    let mut config = OutboxConfig::default();
    // A process that dies leaves its claims for this long.
    config.lease = Duration::from_secs(30);
    let outbox = Outbox::with_config(store.clone(), dispatcher, config, SystemClock);
    let mine = Arc::new(Mutex::new(0_usize));
    let count = Arc::clone(&mine);
    outbox.subscribe(move |n: &Notification| {
        if let Notification::AttemptFinished { attempt, .. } = n {
            if attempt.outcome().is_delivered() {
                *count.lock().unwrap_or_else(|e| e.into_inner()) += 1;
            }
        }
    });
    let workers = outbox.start(4);
    // Until nothing is pending or in flight anywhere.
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let left: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM hookway_deliveries WHERE state IN ('pending', 'in_flight')",
        )
        .fetch_one(store.pool())
        .await?;
        if left == 0 {
            break;
        }
    }
    workers.shutdown(Duration::from_secs(5)).await;
    let made = *mine.lock().unwrap_or_else(|e| e.into_inner());
    println!("{name} delivered {made}");
    Ok(())
}

/// A receiver that accepts every request and counts message ids.
async fn receiver() -> Result<(SocketAddr, Arc<Mutex<HashMap<String, u32>>>), std::io::Error> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let seen: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
    let log = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                // Keep-alive HTTP/1.1, just enough for the demo: read one
                // request's head and body, answer 204, repeat.
                let mut buffer = Vec::new();
                let mut chunk = [0_u8; 16 * 1024];
                loop {
                    let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") else {
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buffer[..end]).to_ascii_lowercase();
                    let header = |name: &str| {
                        head.lines()
                            .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_owned()))
                    };
                    let length: usize = header("content-length:")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    while buffer.len() < end + 4 + length {
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                        }
                    }
                    if let Some(id) = header("webhook-id:") {
                        *log.lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .entry(id)
                            .or_default() += 1;
                    }
                    buffer.drain(..end + 4 + length);
                    if stream
                        .write_all(b"HTTP/1.1 204 No Content\r\n\r\n")
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    Ok((address, seen))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    if let Ok(name) = std::env::var("HOOKWAY_EXAMPLE_SENDER") {
        return sender(&url, &name).await;
    }

    // A clean schema for the demo.
    let mut admin = sqlx::PgConnection::connect(&url).await?;
    sqlx::query(&format!("DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"))
        .execute(&mut admin)
        .await?;
    sqlx::query(&format!("CREATE SCHEMA {SCHEMA}"))
        .execute(&mut admin)
        .await?;
    admin.close().await?;

    let (address, seen) = receiver().await?;
    // Publishing: any process can; here this one, with no workers.
    let publisher = Outbox::new(store(&url).await?, ReqwestDispatcher::builder().build()?);
    publisher
        .add_endpoint(
            Endpoint::builder(
                "ep_crm".parse()?,
                &format!("http://{address}/hooks"),
                Scheme::standard(),
                Secret::generate(),
            )
            .build()?,
        )
        .await?;
    for n in 0..EVENTS {
        publisher
            .publish(
                MessageId::new(format!("msg_example_{n}"))?,
                EventType::new("ticket.created")?,
                &serde_json::json!({ "ticket": n }),
                &[],
            )
            .await?;
    }
    println!("published {EVENTS} events; starting {SENDERS} sender processes");

    let exe = std::env::current_exe()?;
    let mut children = Vec::new();
    for i in 0..SENDERS {
        children.push(
            tokio::process::Command::new(&exe)
                .env("HOOKWAY_EXAMPLE_SENDER", format!("sender {}", i + 1))
                .env("DATABASE_URL", &url)
                .stdout(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()?,
        );
    }
    for mut child in children {
        let status = tokio::time::timeout(Duration::from_secs(60), child.wait()).await??;
        if !status.success() {
            return Err(format!("a sender process failed: {status}").into());
        }
    }
    let seen = seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let twice = seen.values().filter(|n| **n > 1).count();
    println!(
        "the receiver got {} distinct events ({twice} more than once)",
        seen.len()
    );
    if seen.len() != EVENTS {
        return Err(format!("{} of {EVENTS} events arrived", seen.len()).into());
    }
    Ok(())
}

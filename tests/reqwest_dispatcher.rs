//! `ReqwestDispatcher` over real loopback sockets (127.0.0.1 and [::1] only).
//!
//! A tiny hand-written HTTP/1.1 server, one request per connection, scripted
//! per test; it counts connections so a test can assert nothing reached it.
#![cfg(feature = "reqwest")]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hookway::adapters::reqwest::{
    BuildError, IdentityError, ReqwestDispatcher, ReqwestDispatcherBuilder,
    DEFAULT_IDENTITY_CLIENT_CAPACITY, DEFAULT_USER_AGENT,
};
use hookway::dispatch::{
    Dispatcher, TransportError, TransportErrorKind, DEFAULT_MAX_RESPONSE_BODY,
};
use hookway::endpoint::{ClientIdentity, Endpoint};
use hookway::{Scheme, Secret};
use http::{Request, Response, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Long enough for any loopback exchange; tests that expect a timeout pass
/// their own short one.
const TIMEOUT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------
// The test server
// ---------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct Recorded {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Recorded {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

enum Reply {
    /// Waits `delay`, writes `head` (status line and headers, without the
    /// blank line) and a `Content-Length` for `body`, then the body.
    Full {
        delay: Duration,
        head: String,
        body: Vec<u8>,
    },
    /// Sends the head and `sent` bytes of a body of `length`, then stalls.
    Stall { length: usize, sent: usize },
    /// Closes the connection without answering.
    Close,
    /// Resets the connection (TCP RST) without answering.
    Reset,
}

impl Reply {
    fn status(head: &str, body: &[u8]) -> Self {
        Self::Full {
            delay: Duration::ZERO,
            head: head.to_owned(),
            body: body.to_vec(),
        }
    }
}

type Handler = Arc<dyn Fn(&Recorded) -> Reply + Send + Sync>;

struct Server {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    requests: Arc<Mutex<Vec<Recorded>>>,
}

impl Server {
    async fn start(handler: impl Fn(&Recorded) -> Reply + Send + Sync + 'static) -> Self {
        Self::start_on("127.0.0.1:0", handler)
            .await
            .expect("bind 127.0.0.1")
    }

    async fn start_on(
        bind: &str,
        handler: impl Fn(&Recorded) -> Reply + Send + Sync + 'static,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind(bind).await?;
        let addr = listener.local_addr()?;
        let connections = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let handler: Handler = Arc::new(handler);
        let (conns, reqs) = (Arc::clone(&connections), Arc::clone(&requests));
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                conns.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(stream, Arc::clone(&handler), Arc::clone(&reqs)));
            }
        });
        Ok(Self {
            addr,
            connections,
            requests,
        })
    }

    fn port(&self) -> u16 {
        self.addr.port()
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }
}

async fn serve(mut stream: TcpStream, handler: Handler, requests: Arc<Mutex<Vec<Recorded>>>) {
    let Some(request) = read_request(&mut stream).await else {
        // Not HTTP (e.g. a TLS ClientHello): answer in plain text.
        let _ = stream
            .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            .await;
        return;
    };
    requests.lock().unwrap().push(request.clone());
    match handler(&request) {
        Reply::Full { delay, head, body } => {
            tokio::time::sleep(delay).await;
            let head = format!(
                "{head}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes()).await;
            // The client may stop reading early; that is the point of some tests.
            let _ = stream.write_all(&body).await;
            let _ = stream.shutdown().await;
        }
        Reply::Stall { length, sent } => {
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {length}\r\n\r\n");
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.write_all(&vec![b'x'; sent]).await;
            tokio::time::sleep(Duration::from_secs(30)).await;
        }
        Reply::Close => {}
        Reply::Reset => {
            let _ = stream.set_zero_linger();
        }
    }
}

async fn read_request(stream: &mut TcpStream) -> Option<Recorded> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
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
        // A TLS ClientHello (0x16) or other binary: not HTTP.
        if !buf[0].is_ascii_uppercase() {
            return None;
        }
    };
    let head = std::str::from_utf8(&buf[..head_end]).ok()?;
    let mut lines = head.split("\r\n");
    let mut start = lines.next()?.split(' ');
    let (method, target) = (start.next()?.to_owned(), start.next()?.to_owned());
    if !start.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .map_or(Some(0), |(_, v)| v.parse().ok())?;
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some(Recorded {
        method,
        target,
        headers,
        body,
    })
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

fn local() -> ReqwestDispatcherBuilder {
    ReqwestDispatcher::builder()
        .allow_http(true)
        .allow_network("127.0.0.0/8")
        .allow_network("::1/128")
}

fn post(url: &str, body: &'static [u8]) -> Request<Bytes> {
    Request::post(url)
        .header("content-type", "application/json")
        .body(Bytes::from_static(body))
        .unwrap()
}

async fn send(
    dispatcher: &ReqwestDispatcher,
    request: Request<Bytes>,
) -> Result<Response<Bytes>, TransportError> {
    dispatcher.send(request, TIMEOUT).await
}

#[track_caller]
fn assert_kind(
    result: Result<Response<Bytes>, TransportError>,
    kind: TransportErrorKind,
) -> TransportError {
    match result {
        Ok(response) => panic!("expected {kind:?}, got a response: {}", response.status()),
        Err(error) => {
            assert_eq!(error.kind(), kind, "{error}");
            error
        }
    }
}

/// A port with nothing listening: bind, note the port, close.
async fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().port()
}

// ---------------------------------------------------------------------------
// Responses come back as received
// ---------------------------------------------------------------------------

#[tokio::test]
async fn delivers_body_and_signature_headers_intact() {
    let server =
        Server::start(|_| Reply::status("HTTP/1.1 200 OK\r\nX-Receiver: yes", b"ok")).await;
    let dispatcher = local().build().unwrap();
    // Not UTF-8 on purpose: the body is bytes, sent untouched.
    let body: &'static [u8] = b"{\"type\":\"ticket.created\",\"raw\":\"\xff\xfe\"}";
    let request = Request::post(server.url("/hooks/in?tenant=7"))
        .header("content-type", "application/json")
        .header("webhook-id", "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W")
        .header("webhook-timestamp", "1674087231")
        .header(
            "webhook-signature",
            "v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4= v1,Zm9v",
        )
        .body(Bytes::from_static(body))
        .unwrap();

    let response = send(&dispatcher, request).await.unwrap();

    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-receiver"], "yes");
    assert_eq!(response.body().as_ref(), b"ok");
    let seen = server.requests();
    assert_eq!(seen.len(), 1);
    let seen = &seen[0];
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.target, "/hooks/in?tenant=7");
    assert_eq!(seen.body, body);
    assert_eq!(seen.header("content-type"), Some("application/json"));
    assert_eq!(
        seen.header("content-length"),
        Some(body.len().to_string().as_str())
    );
    assert_eq!(
        seen.header("webhook-id"),
        Some("msg_2KWPBgLlAfxdpx2AI54pPJ85f4W")
    );
    assert_eq!(seen.header("webhook-timestamp"), Some("1674087231"));
    assert_eq!(
        seen.header("webhook-signature"),
        Some("v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4= v1,Zm9v")
    );
    assert_eq!(seen.header("user-agent"), Some(DEFAULT_USER_AGENT));
    assert!(DEFAULT_USER_AGENT.starts_with("hookway/"));
}

#[tokio::test]
async fn keeps_the_requests_own_user_agent() {
    let server = Server::start(|_| Reply::status("HTTP/1.1 204 No Content", b"")).await;
    let dispatcher = local().build().unwrap();
    let request = Request::post(server.url("/"))
        .header("user-agent", "acme-webhooks/2.1")
        .body(Bytes::new())
        .unwrap();
    let response = send(&dispatcher, request).await.unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        server.requests()[0].header("user-agent"),
        Some("acme-webhooks/2.1")
    );

    let custom = local().user_agent("sender/1").build().unwrap();
    send(&custom, post(&server.url("/"), b"{}")).await.unwrap();
    assert_eq!(server.requests()[1].header("user-agent"), Some("sender/1"));
}

#[tokio::test]
async fn a_redirect_is_returned_not_followed() {
    let server = Server::start(|r| {
        if r.target == "/start" {
            Reply::status("HTTP/1.1 302 Found\r\nLocation: /elsewhere", b"")
        } else {
            Reply::status("HTTP/1.1 200 OK", b"followed")
        }
    })
    .await;
    let dispatcher = local().build().unwrap();

    let response = send(&dispatcher, post(&server.url("/start"), b"{}"))
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::FOUND);
    assert_eq!(response.headers()["location"], "/elsewhere");
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn a_503_with_retry_after_is_returned_as_is() {
    let server = Server::start(|_| {
        Reply::status(
            "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 120",
            b"down for maintenance",
        )
    })
    .await;
    let dispatcher = local().build().unwrap();

    let response = send(&dispatcher, post(&server.url("/"), b"{}"))
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()["retry-after"], "120");
    assert_eq!(response.body().as_ref(), b"down for maintenance");
}

#[tokio::test]
async fn an_oversized_body_is_cut_at_the_cap() {
    let big: Vec<u8> = (0..1024 * 1024).map(|i| (i % 251) as u8).collect();
    let expected = big.clone();
    let server =
        Server::start(move |_| Reply::status("HTTP/1.1 500 Internal Server Error", &big)).await;

    let capped = local().max_response_body(1000).build().unwrap();
    let response = send(&capped, post(&server.url("/"), b"{}")).await.unwrap();
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(response.body().as_ref(), &expected[..1000]);
    // Headers are as received, even though the body was cut.
    assert_eq!(response.headers()["content-length"], "1048576");

    let default = local().build().unwrap();
    let response = send(&default, post(&server.url("/"), b"{}")).await.unwrap();
    assert_eq!(response.body().len(), DEFAULT_MAX_RESPONSE_BODY);
    assert_eq!(
        response.body().as_ref(),
        &expected[..DEFAULT_MAX_RESPONSE_BODY]
    );

    let none = local().max_response_body(0).build().unwrap();
    let response = send(&none, post(&server.url("/"), b"{}")).await.unwrap();
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(response.body().is_empty());
}

#[tokio::test]
async fn a_body_under_the_cap_is_read_whole() {
    let server = Server::start(|_| Reply::status("HTTP/1.1 400 Bad Request", &[b'e'; 5000])).await;
    let dispatcher = local().max_response_body(5000).build().unwrap();
    let response = send(&dispatcher, post(&server.url("/"), b"{}"))
        .await
        .unwrap();
    assert_eq!(response.body().as_ref(), &[b'e'; 5000][..]);
}

// ---------------------------------------------------------------------------
// Transport failures
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_slow_response_times_out() {
    let server = Server::start(|_| Reply::Full {
        delay: Duration::from_secs(5),
        head: "HTTP/1.1 200 OK".to_owned(),
        body: Vec::new(),
    })
    .await;
    let dispatcher = local().build().unwrap();

    let started = Instant::now();
    let result = dispatcher
        .send(post(&server.url("/"), b"{}"), Duration::from_millis(200))
        .await;

    assert_kind(result, TransportErrorKind::Timeout);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn a_stalled_body_times_out_too() {
    let server = Server::start(|_| Reply::Stall {
        length: 100,
        sent: 10,
    })
    .await;
    let dispatcher = local().build().unwrap();

    let started = Instant::now();
    let result = dispatcher
        .send(post(&server.url("/"), b"{}"), Duration::from_millis(200))
        .await;

    assert_kind(result, TransportErrorKind::Timeout);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn connection_refused_is_connect_and_the_message_hides_the_url() {
    let port = closed_port().await;
    let dispatcher = local().build().unwrap();
    let url = format!("http://127.0.0.1:{port}/hooks/s3cr3t-path?token=s3cr3t-token");

    let error = assert_kind(
        send(&dispatcher, post(&url, b"{}")).await,
        TransportErrorKind::Connect,
    );

    let message = error.to_string();
    assert!(!message.contains("s3cr3t"), "{message}");
    assert!(!message.contains("/hooks"), "{message}");
}

#[tokio::test]
async fn a_connection_closed_or_reset_without_an_answer_is_connect() {
    for reply in [|_: &Recorded| Reply::Close, |_: &Recorded| Reply::Reset] {
        let server = Server::start(reply).await;
        let dispatcher = local().build().unwrap();

        let result = send(&dispatcher, post(&server.url("/"), b"{}")).await;

        assert_kind(result, TransportErrorKind::Connect);
        assert_eq!(server.requests().len(), 1);
    }
}

#[tokio::test]
async fn https_to_a_plain_http_server_is_a_tls_error() {
    let server = Server::start(|_| Reply::status("HTTP/1.1 200 OK", b"")).await;
    let dispatcher = local().build().unwrap();
    let url = format!("https://127.0.0.1:{}/", server.port());

    assert_kind(
        send(&dispatcher, post(&url, b"{}")).await,
        TransportErrorKind::Tls,
    );
}

// ---------------------------------------------------------------------------
// Policy: HTTPS and the SSRF guard
// ---------------------------------------------------------------------------

#[tokio::test]
async fn plain_http_is_refused_without_allow_http() {
    let server = Server::start(|_| Reply::status("HTTP/1.1 200 OK", b"")).await;
    let dispatcher = ReqwestDispatcher::builder()
        .allow_network("127.0.0.0/8")
        .build()
        .unwrap();
    assert!(!dispatcher.allows_http());

    assert_kind(
        send(&dispatcher, post(&server.url("/"), b"{}")).await,
        TransportErrorKind::RefusedByPolicy,
    );
    assert_eq!(server.connections(), 0);
}

#[tokio::test]
async fn other_schemes_and_relative_uris_are_refused() {
    let dispatcher = local().build().unwrap();
    for uri in ["ftp://127.0.0.1/x", "/relative/path", "ws://127.0.0.1/x"] {
        let request = Request::post(uri).body(Bytes::new()).unwrap();
        assert_kind(
            send(&dispatcher, request).await,
            TransportErrorKind::RefusedByPolicy,
        );
    }
}

#[tokio::test]
async fn loopback_ip_literals_are_refused_without_an_allowlist() {
    let server = Server::start(|_| Reply::status("HTTP/1.1 200 OK", b"")).await;
    let dispatcher = ReqwestDispatcher::builder()
        .allow_http(true)
        .build()
        .unwrap();
    let port = server.port();

    for url in [
        format!("http://127.0.0.1:{port}/"),
        format!("http://[::ffff:127.0.0.1]:{port}/"),
        format!("http://[::1]:{port}/"),
        // The URL parser normalises these to 127.0.0.1 before the check.
        format!("http://2130706433:{port}/"),
        format!("http://0x7f.1:{port}/"),
        format!("http://127.1:{port}/"),
    ] {
        let error = assert_kind(
            send(&dispatcher, post(&url, b"{}")).await,
            TransportErrorKind::RefusedByPolicy,
        );
        assert!(error.message().contains("loopback"), "{url}: {error}");
    }
    assert_eq!(server.connections(), 0);
}

#[tokio::test]
async fn a_hostname_resolving_to_loopback_is_refused_after_resolution() {
    let server = Server::start(|_| Reply::status("HTTP/1.1 200 OK", b"")).await;
    let dispatcher = ReqwestDispatcher::builder()
        .allow_http(true)
        .build()
        .unwrap();
    let url = format!("http://localhost:{}/hooks?token=s3cr3t", server.port());

    let error = assert_kind(
        send(&dispatcher, post(&url, b"{}")).await,
        TransportErrorKind::RefusedByPolicy,
    );

    assert!(error.message().contains("loopback"), "{error}");
    assert!(!error.message().contains("s3cr3t"), "{error}");
    assert_eq!(server.connections(), 0);
    assert!(server.requests().is_empty());
}

#[tokio::test]
async fn allowlisted_loopback_is_reached_by_ip_and_by_name() {
    let server = Server::start(|_| Reply::status("HTTP/1.1 200 OK", b"hi")).await;
    let dispatcher = local().build().unwrap();
    let port = server.port();

    for url in [
        format!("http://127.0.0.1:{port}/a"),
        format!("http://localhost:{port}/b"),
        format!("http://[::ffff:127.0.0.1]:{port}/c"),
    ] {
        let response = send(&dispatcher, post(&url, b"{}")).await;
        assert_eq!(response.unwrap().body().as_ref(), b"hi", "{url}");
    }
    assert_eq!(server.requests().len(), 3);

    // A narrower allowlist: 127.0.0.1 only.
    let narrow = ReqwestDispatcher::builder()
        .allow_http(true)
        .allow_network("127.0.0.1/32")
        .build()
        .unwrap();
    let response = send(&narrow, post(&format!("http://127.0.0.1:{port}/"), b"{}")).await;
    assert_eq!(response.unwrap().status(), StatusCode::OK);
    assert_kind(
        send(&narrow, post(&format!("http://127.0.0.2:{port}/"), b"{}")).await,
        TransportErrorKind::RefusedByPolicy,
    );
}

#[tokio::test]
async fn ipv6_loopback_is_refused_then_allowed() {
    let Ok(server) = Server::start_on("[::1]:0", |_| Reply::status("HTTP/1.1 200 OK", b"v6")).await
    else {
        eprintln!("no IPv6 loopback here; skipping");
        return;
    };
    let url = format!("http://[::1]:{}/", server.port());

    let guarded = ReqwestDispatcher::builder()
        .allow_http(true)
        .build()
        .unwrap();
    assert_kind(
        send(&guarded, post(&url, b"{}")).await,
        TransportErrorKind::RefusedByPolicy,
    );
    assert_eq!(server.connections(), 0);

    // 127.0.0.0/8 alone does not open ::1.
    let v4_only = ReqwestDispatcher::builder()
        .allow_http(true)
        .allow_network("127.0.0.0/8")
        .build()
        .unwrap();
    assert_kind(
        send(&v4_only, post(&url, b"{}")).await,
        TransportErrorKind::RefusedByPolicy,
    );
    assert_eq!(server.connections(), 0);

    let response = send(&local().build().unwrap(), post(&url, b"{}"))
        .await
        .unwrap();
    assert_eq!(response.body().as_ref(), b"v6");
    assert_eq!(server.connections(), 1);
}

// ---------------------------------------------------------------------------
// Builder: client certificates and settings
// ---------------------------------------------------------------------------

// A throwaway self-signed P-256 certificate and its key, made for these tests
// only (`openssl req -x509 -newkey ec ...`); nothing trusts them.
const TEST_CERT: &str = "-----BEGIN CERTIFICATE-----
MIIBkzCCATmgAwIBAgIUaCvpeDgmb8qT5k0fUzNdVH7HR64wCgYIKoZIzj0EAwIw
HjEcMBoGA1UEAwwTaG9va3dheSB0ZXN0IGNsaWVudDAgFw0yNjExMjMwMDA0NTRa
GA8yMTI2MTAzMDAwMDQ1NFowHjEcMBoGA1UEAwwTaG9va3dheSB0ZXN0IGNsaWVu
dDBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABJH/fW7sDA29MPputyq1p2UFLa8g
9u8FX8Ys9ojsVAO25Laxa0rd7fwi9areuZamfQIlOM7Ymd4pS1lT2Y072qGjUzBR
MB0GA1UdDgQWBBSaSG9IPqpDXu9+q5SkILjhcrXeDzAfBgNVHSMEGDAWgBSaSG9I
PqpDXu9+q5SkILjhcrXeDzAPBgNVHRMBAf8EBTADAQH/MAoGCCqGSM49BAMCA0gA
MEUCIEGIy6oocE13GaJo/5FYXU8Apr4mF1JK/G6gNUpJMRWTAiEAlnoiYp2KsIs9
EbxVhI81sXeGqP09D7T3+XBRJGvJ7+k=
-----END CERTIFICATE-----
";

const TEST_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgpXfUaNJbJzUJK8at
4H4YULDAXjauy/3zrmVFcgSmBLahRANCAASR/31u7AwNvTD6brcqtadlBS2vIPbv
BV/GLPaI7FQDtuS2sWtK3e38IvWq3rmWpn0CJTjO2JneKUtZU9mNO9qh
-----END PRIVATE KEY-----
";

/// Another P-256 key that does not belong to `TEST_CERT`.
const OTHER_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgZn2U3hWvrVbgLUDe
/f/6oUXWPn0mheeCkO/+m//0tDChRANCAAS3v4R8teGOpYc0jYWvmYNcqYSswOu7
Q7/iy44lnAqpwKLFX0UlrI36wzdJDFWYGBDItw+yfia8+qEadwJQ+3BG
-----END PRIVATE KEY-----
";

fn identity_error(pem: &str) -> IdentityError {
    match ReqwestDispatcher::builder()
        .identity_pem(pem.as_bytes())
        .build()
    {
        Err(BuildError::InvalidIdentity(e)) => e,
        other => panic!("expected InvalidIdentity, got {other:?}"),
    }
}

#[tokio::test]
async fn a_client_certificate_is_accepted_and_bad_pem_is_typed() {
    let both = format!("{TEST_CERT}{TEST_KEY}");
    let dispatcher = ReqwestDispatcher::builder()
        .identity_pem(both.as_bytes())
        .build()
        .unwrap();
    assert!(!format!("{dispatcher:?}").contains("PRIVATE"));
    // The key may come first too.
    ReqwestDispatcher::builder()
        .identity_pem(format!("{TEST_KEY}{TEST_CERT}").as_bytes())
        .build()
        .unwrap();

    assert_eq!(identity_error(TEST_CERT), IdentityError::NoPrivateKey);
    assert_eq!(identity_error(TEST_KEY), IdentityError::NoCertificate);
    assert_eq!(
        identity_error(&format!("{TEST_CERT}{OTHER_KEY}")),
        IdentityError::Rejected
    );
    assert_eq!(identity_error("garbage"), IdentityError::NoPrivateKey);
    let corrupt = TEST_CERT.replace("MIIB", "!!!!");
    assert_eq!(
        identity_error(&format!("{corrupt}{TEST_KEY}")),
        IdentityError::MalformedPem
    );
}

// ---------------------------------------------------------------------------
// Client certificates per request (per endpoint)
// ---------------------------------------------------------------------------

/// `request` carrying `identity`, as `Endpoint::request` makes it.
fn with_identity(mut request: Request<Bytes>, identity: &ClientIdentity) -> Request<Bytes> {
    request.extensions_mut().insert(identity.clone());
    request
}

#[tokio::test]
async fn a_request_identity_is_accepted_and_its_client_cached() {
    let server = Server::start(|_| Reply::status("HTTP/1.1 200 OK", b"ok")).await;
    let dispatcher = local().user_agent("sender/1").build().unwrap();
    assert_eq!(
        dispatcher.identity_client_capacity(),
        DEFAULT_IDENTITY_CLIENT_CAPACITY
    );
    assert_eq!(dispatcher.cached_identity_clients(), 0);
    let first = ClientIdentity::from_pem(format!("{TEST_CERT}{TEST_KEY}"));
    // Same pair, other order: other bytes, so another identity.
    let second = ClientIdentity::from_pem(format!("{TEST_KEY}{TEST_CERT}"));
    assert_ne!(first.id(), second.id());

    // Plain HTTP has no TLS: the identity is checked, then has nothing to do.
    for _ in 0..2 {
        let request = with_identity(post(&server.url("/a"), b"{}"), &first);
        let response = send(&dispatcher, request).await.unwrap();
        assert_eq!(response.body().as_ref(), b"ok");
    }
    assert_eq!(dispatcher.cached_identity_clients(), 1);

    let request = with_identity(post(&server.url("/b"), b"{}"), &second);
    assert_eq!(
        send(&dispatcher, request).await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(dispatcher.cached_identity_clients(), 2);

    // Without an identity: the dispatcher's own client, nothing cached.
    let response = send(&dispatcher, post(&server.url("/c"), b"{}"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(dispatcher.cached_identity_clients(), 2);

    // Clones share the cache.
    let clone = dispatcher.clone();
    let request = with_identity(post(&server.url("/d"), b"{}"), &second);
    send(&clone, request).await.unwrap();
    assert_eq!(clone.cached_identity_clients(), 2);
    assert_eq!(dispatcher.cached_identity_clients(), 2);

    let seen = server.requests();
    assert_eq!(seen.len(), 5);
    assert_eq!(seen[0].body, b"{}");
    // The identity's client has the dispatcher's settings.
    assert_eq!(seen[0].header("user-agent"), Some("sender/1"));
}

#[tokio::test]
async fn an_endpoint_identity_reaches_the_dispatcher() {
    let server = Server::start(|_| Reply::status("HTTP/1.1 204 No Content", b"")).await;
    // A dispatcher-wide certificate too: the endpoint's takes its place.
    let dispatcher = local()
        .identity_pem(format!("{TEST_CERT}{TEST_KEY}").as_bytes())
        .build()
        .unwrap();
    let identity = ClientIdentity::from_pem(format!("{TEST_KEY}{TEST_CERT}"));
    let endpoint = Endpoint::builder(
        "ep_mtls".parse().unwrap(),
        &server.url("/hooks"),
        Scheme::standard(),
        Secret::generate(),
    )
    .client_identity(identity)
    .build()
    .unwrap();
    let request = endpoint
        .request(
            Bytes::from_static(b"{\"a\":1}"),
            &"msg_1".parse().unwrap(),
            &"ticket.created".parse().unwrap(),
            &"dlv_1".parse().unwrap(),
            hookway::clock::Clock::now(&hookway::clock::SystemClock),
            None,
        )
        .unwrap();
    assert!(request.extensions().get::<ClientIdentity>().is_some());

    let response = dispatcher.send(request, endpoint.timeout()).await.unwrap();

    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(dispatcher.cached_identity_clients(), 1);
    let seen = server.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].target, "/hooks");
    assert_eq!(seen[0].header("webhook-id"), Some("msg_1"));
}

#[tokio::test]
async fn an_unusable_request_identity_is_a_tls_error_and_nothing_is_sent() {
    let server = Server::start(|_| Reply::status("HTTP/1.1 200 OK", b"")).await;
    let dispatcher = local().build().unwrap();
    let corrupt = TEST_CERT.replace("MIIB", "!!!!");
    let https = format!("https://127.0.0.1:{}/", server.port());
    for pem in [
        TEST_CERT.to_owned(),
        TEST_KEY.to_owned(),
        format!("{TEST_CERT}{OTHER_KEY}"),
        format!("{corrupt}{TEST_KEY}"),
        "garbage".to_owned(),
        String::new(),
    ] {
        let identity = ClientIdentity::from_pem(pem);
        for url in [server.url("/"), https.clone()] {
            let request = with_identity(post(&url, b"{}"), &identity);
            let error = assert_kind(send(&dispatcher, request).await, TransportErrorKind::Tls);
            let message = error.to_string();
            assert!(message.contains("client certificate"), "{message}");
            for secret in ["BEGIN", "MIGHAgEA", "pXfUaNJb", "Zn2U3hWv"] {
                assert!(!message.contains(secret), "{message}");
            }
        }
    }
    assert_eq!(server.connections(), 0);
    assert!(server.requests().is_empty());
    assert_eq!(dispatcher.cached_identity_clients(), 0);

    // The dispatcher is unharmed.
    let response = send(&dispatcher, post(&server.url("/"), b"{}"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn the_identity_client_cache_is_bounded() {
    let server = Server::start(|_| Reply::status("HTTP/1.1 200 OK", b"")).await;
    let dispatcher = local().identity_client_capacity(2).build().unwrap();
    assert_eq!(dispatcher.identity_client_capacity(), 2);
    let identities = [
        format!("{TEST_CERT}{TEST_KEY}"),
        format!("{TEST_KEY}{TEST_CERT}"),
        format!("{TEST_CERT}\n{TEST_KEY}"),
    ]
    .map(ClientIdentity::from_pem);
    for identity in identities.iter().chain(&identities) {
        let request = with_identity(post(&server.url("/"), b"{}"), identity);
        send(&dispatcher, request).await.unwrap();
        assert!(dispatcher.cached_identity_clients() <= 2);
    }
    assert_eq!(dispatcher.cached_identity_clients(), 2);
    assert_eq!(server.requests().len(), 6);

    let one = local().identity_client_capacity(0).build().unwrap();
    assert_eq!(one.identity_client_capacity(), 1);
}

#[tokio::test]
async fn invalid_networks_are_reported_by_build() {
    for bad in ["127.0.0.1/8", "localhost", "10.0.0.0/33", ""] {
        match ReqwestDispatcher::builder().allow_network(bad).build() {
            Err(BuildError::InvalidNetwork { input, .. }) => assert_eq!(input, bad),
            other => panic!("{bad:?}: expected InvalidNetwork, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn clones_share_one_pool_and_settings() {
    let server = Server::start(|_| Reply::status("HTTP/1.1 200 OK", b"")).await;
    let dispatcher = local().max_response_body(10).build().unwrap();
    let clone = dispatcher.clone();
    assert_eq!(clone.max_response_body(), 10);
    assert_eq!(clone.address_policy(), dispatcher.address_policy());
    assert_eq!(clone.address_policy().allowed().len(), 2);

    let shared = Arc::new(clone);
    let response = shared
        .send(post(&server.url("/"), b"{}"), TIMEOUT)
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

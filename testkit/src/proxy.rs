//! A fault-injecting HTTP proxy in front of Azurite, so the blob client meets the failures of a
//! real network and a real service: error statuses (503, 500, 429), slow answers, dropped
//! connections, corrupted or truncated bodies, altered headers — without mocking the blob API
//! (every request that is not failed goes to Azurite and back).
//!
//! Point a connection string's `BlobEndpoint` at [`Proxy::blob_endpoint`]. Rules match requests
//! by method and a substring of the path and query (`comp=block`, `comp=blocklist`, …) and
//! fire for the first `times` matching requests; every request is logged with when it
//! arrived and what was done to it, so tests can count tries and measure backoff.
//!
//! For uploads under latency, [`Proxy::set_delay`] adds a fixed delay to every request (a
//! network round trip), and the proxy counts how many Put Blocks are outstanding at once
//! ([`Proxy::peak_put_blocks`]). [`Fault::Barrier`] and [`Fault::HoldUntilFinished`] order
//! requests by what else has happened, not by time, so a test can make blocks finish out of
//! order, or prove that several were in flight, deterministically.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::sync::watch;

use cdc_copy::config::DEV_ACCOUNT;

/// What to do to a matching request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Answer this status with a storage error body, without forwarding.
    Status(u16),
    /// Wait, then forward.
    Delay(Duration),
    /// Close the connection without an answer (before forwarding).
    Drop,
    /// Forward, then close the connection without an answer (the request took effect, the
    /// reply was lost).
    DropAfterForward,
    /// Flip a byte of the request body on the way to the service.
    CorruptRequestBody,
    /// Forward, then flip a byte of the response body.
    CorruptResponseBody,
    /// Forward, then send only half of the response body (the full length announced) and
    /// close the connection.
    TruncateResponseBody,
    /// Forward, then alter this response header's value (flip its first character).
    CorruptResponseHeader(&'static str),
    /// Wait until this many requests carrying a barrier have arrived (this one included),
    /// then forward: they are all outstanding at once.
    Barrier(u32),
    /// Wait until this many other requests have finished, then forward: they finish first.
    HoldUntilFinished(u64),
}

/// A fault for the first `times` requests matching `method` (any when `None`) and containing
/// `path_contains` in their path and query.
#[derive(Debug, Clone)]
pub struct Rule {
    pub method: Option<&'static str>,
    pub path_contains: &'static str,
    /// Requests containing this are not matched (`comp=blocklist` for Put Block).
    pub path_excludes: Option<&'static str>,
    pub fault: Fault,
    pub times: u32,
}

impl Rule {
    pub fn new(
        method: Option<&'static str>,
        path_contains: &'static str,
        fault: Fault,
        times: u32,
    ) -> Rule {
        Rule {
            method,
            path_contains,
            path_excludes: None,
            fault,
            times,
        }
    }

    fn matches(&self, method: &str, uri: &str) -> bool {
        self.times > 0
            && self.method.is_none_or(|m| m == method)
            && uri.contains(self.path_contains)
            && self.path_excludes.is_none_or(|x| !uri.contains(x))
    }

    /// Put Block requests.
    pub fn put_block(fault: Fault, times: u32) -> Rule {
        Rule {
            path_excludes: Some("comp=blocklist"),
            ..Rule::new(Some("PUT"), "comp=block", fault, times)
        }
    }

    /// Put Block List requests (the commit).
    pub fn put_block_list(fault: Fault, times: u32) -> Rule {
        Rule::new(Some("PUT"), "comp=blocklist", fault, times)
    }

    /// Every request.
    pub fn any(fault: Fault, times: u32) -> Rule {
        Rule::new(None, "", fault, times)
    }
}

/// One request as the proxy saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub at: Instant,
    pub method: String,
    /// Path and query.
    pub uri: String,
    pub fault: Option<Fault>,
    /// The status answered (`None` when the connection was dropped or the body cut).
    pub status: Option<u16>,
    /// In which order the proxy finished the requests (1 for the first; `None` while this
    /// one is in progress).
    pub finished: Option<u64>,
}

impl Seen {
    /// A Put Block (not a Put Block List).
    pub fn is_put_block(&self) -> bool {
        self.uri.contains("comp=block") && !self.uri.contains("comp=blocklist")
    }
}

#[derive(Default)]
struct State {
    rules: Vec<Rule>,
    log: Vec<Seen>,
    /// Added to every request before it is forwarded.
    delay: Duration,
    put_blocks_outstanding: u32,
    put_blocks_peak: u32,
}

/// What requests wait on: counts that only grow.
#[derive(Debug, Default, Clone, Copy)]
struct Progress {
    finished: u64,
    at_barrier: u32,
}

/// The state and the progress requests wait on.
#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    progress: watch::Sender<Progress>,
}

/// Counts a request as outstanding until dropped, whichever way the request ends.
struct Outstanding {
    shared: Arc<Shared>,
    index: usize,
    put_block: bool,
}

impl Drop for Outstanding {
    fn drop(&mut self) {
        let mut s = self.shared.state.lock().unwrap();
        if self.put_block {
            s.put_blocks_outstanding -= 1;
        }
        let mut order = 0;
        self.shared.progress.send_modify(|p| {
            p.finished += 1;
            order = p.finished;
        });
        s.log[self.index].finished = Some(order);
    }
}

/// The proxy; stops when dropped.
pub struct Proxy {
    pub port: u16,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Proxy {
    /// A proxy on a free loopback port forwarding to `upstream` (`http://127.0.0.1:PORT`).
    pub async fn start(upstream_port: u16) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let upstream = format!("http://127.0.0.1:{upstream_port}");
        let shared = Arc::new(Shared::default());
        let client = reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(0)
            .build()
            .unwrap();
        let task = {
            let shared = shared.clone();
            let upstream = upstream.clone();
            tokio::spawn(async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let shared = shared.clone();
                    let upstream = upstream.clone();
                    let client = client.clone();
                    tokio::spawn(async move {
                        // Each request runs on its own task, so a client that gives up (a
                        // try cut off by its timeout) does not cancel it: like a real network,
                        // the late request still reaches the service, and its answer is logged.
                        let service = service_fn(move |req| {
                            let request =
                                handle(req, shared.clone(), upstream.clone(), client.clone());
                            async move { tokio::spawn(request).await.map_err(std::io::Error::other)? }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            })
        };
        Proxy { port, shared, task }
    }

    /// The blob endpoint through the proxy.
    pub fn blob_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/{DEV_ACCOUNT}", self.port)
    }

    /// The Azurite account-key connection string, through the proxy.
    pub fn connection_string(&self) -> String {
        super::azurite::connection_string(self.port)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.shared.state.lock().unwrap()
    }

    pub fn add(&self, rule: Rule) {
        self.state().rules.push(rule);
    }

    /// Removes every rule (the outage is over).
    pub fn heal(&self) {
        self.state().rules.clear();
    }

    /// Adds `delay` to every request from now on, before it is forwarded: a network round
    /// trip to a service farther away than loopback (zero removes it).
    pub fn set_delay(&self, delay: Duration) {
        self.state().delay = delay;
    }

    pub fn log(&self) -> Vec<Seen> {
        self.state().log.clone()
    }

    /// Clears the log and the Put Block high-water mark.
    pub fn clear_log(&self) {
        let mut s = self.state();
        s.log.clear();
        s.put_blocks_peak = s.put_blocks_outstanding;
    }

    /// Put Block requests seen.
    pub fn put_blocks(&self) -> Vec<Seen> {
        self.log().into_iter().filter(Seen::is_put_block).collect()
    }

    /// The most Put Blocks that were outstanding at once (arrived, not yet finished).
    pub fn peak_put_blocks(&self) -> u32 {
        self.state().put_blocks_peak
    }

    /// Requests whose path and query contain `needle`.
    pub fn requests(&self, needle: &str) -> Vec<Seen> {
        self.log()
            .into_iter()
            .filter(|s| s.uri.contains(needle))
            .collect()
    }

    /// How many requests faults were applied to.
    pub fn faults_applied(&self) -> usize {
        self.log().iter().filter(|s| s.fault.is_some()).count()
    }
}

type ProxyBody = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

fn full(bytes: impl Into<Bytes>) -> ProxyBody {
    Full::new(bytes.into())
        .map_err(|never: Infallible| match never {})
        .boxed()
}

/// Logs a request on arrival (so a request still in progress is counted) and counts it as
/// outstanding until the returned guard is dropped.
fn arrive(shared: &Arc<Shared>, seen: Seen) -> Outstanding {
    let mut s = shared.state.lock().unwrap();
    let put_block = seen.is_put_block();
    if put_block {
        s.put_blocks_outstanding += 1;
        s.put_blocks_peak = s.put_blocks_peak.max(s.put_blocks_outstanding);
    }
    s.log.push(seen);
    Outstanding {
        shared: shared.clone(),
        index: s.log.len() - 1,
        put_block,
    }
}

/// Records the status answered to request `index`.
fn answered(state: &Mutex<State>, index: usize, status: Option<u16>) {
    state.lock().unwrap().log[index].status = status;
}

/// Waits until `done` holds for the proxy's progress.
async fn wait_for(shared: &Shared, done: impl FnMut(&Progress) -> bool) {
    let mut rx = shared.progress.subscribe();
    // The sender lives as long as `shared`, which the caller holds.
    let _ = rx.wait_for(done).await;
}

async fn handle(
    req: Request<Incoming>,
    shared: Arc<Shared>,
    upstream: String,
    client: reqwest::Client,
) -> Result<Response<ProxyBody>, std::io::Error> {
    let at = Instant::now();
    let method = req.method().to_string();
    let uri = req
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    let (fault, delay) = {
        let mut s = shared.state.lock().unwrap();
        let rule = s.rules.iter_mut().find(|r| r.matches(&method, &uri));
        let fault = rule.map(|r| {
            r.times -= 1;
            r.fault.clone()
        });
        (fault, s.delay)
    };
    let outstanding = arrive(
        &shared,
        Seen {
            at,
            method: method.clone(),
            uri: uri.clone(),
            fault: fault.clone(),
            status: None,
            finished: None,
        },
    );
    let (index, state) = (outstanding.index, &shared.state);
    let (parts, body) = req.into_parts();
    let mut body = body
        .collect()
        .await
        .map_err(std::io::Error::other)?
        .to_bytes()
        .to_vec();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }

    match &fault {
        Some(Fault::Status(code)) => {
            answered(state, index, Some(*code));
            let code_name = match code {
                503 => "ServerBusy",
                500 => "InternalError",
                429 => "TooManyRequests",
                _ => "InjectedFault",
            };
            let xml = format!(
                "<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>{code_name}</Code><Message>injected by the test proxy</Message></Error>"
            );
            return Ok(Response::builder()
                .status(*code)
                .header("content-type", "application/xml")
                .header("x-ms-error-code", code_name)
                .body(full(xml))
                .unwrap());
        }
        Some(Fault::Drop) => {
            return Err(std::io::Error::other("injected: connection dropped"));
        }
        Some(Fault::Delay(d)) => tokio::time::sleep(*d).await,
        Some(Fault::Barrier(n)) => {
            shared.progress.send_modify(|p| p.at_barrier += 1);
            wait_for(&shared, |p| p.at_barrier >= *n).await;
        }
        Some(Fault::HoldUntilFinished(n)) => {
            let until = shared.progress.borrow().finished + n;
            wait_for(&shared, |p| p.finished >= until).await;
        }
        Some(Fault::CorruptRequestBody) if !body.is_empty() => {
            let i = body.len() / 2;
            body[i] ^= 0x01;
        }
        _ => {}
    }

    // Forward to Azurite with the same method, path, headers and body.
    let mut forward = client.request(parts.method.clone(), format!("{upstream}{uri}"));
    for (name, value) in parts.headers.iter() {
        if matches!(
            name.as_str(),
            "host" | "connection" | "transfer-encoding" | "content-length"
        ) {
            continue;
        }
        forward = forward.header(name, value);
    }
    let upstream_rsp = match forward.body(body).send().await {
        Ok(r) => r,
        Err(e) => {
            return Err(std::io::Error::other(e));
        }
    };
    let status = upstream_rsp.status();
    let headers = upstream_rsp.headers().clone();
    let mut rsp_body = upstream_rsp
        .bytes()
        .await
        .map_err(std::io::Error::other)?
        .to_vec();
    let status_code = Some(status.as_u16());

    let mut builder = Response::builder().status(status.as_u16());
    for (name, value) in headers.iter() {
        if matches!(
            name.as_str(),
            "connection" | "transfer-encoding" | "content-length" | "keep-alive"
        ) {
            continue;
        }
        let mut value = value.as_bytes().to_vec();
        if let Some(Fault::CorruptResponseHeader(wanted)) = &fault {
            if name.as_str().eq_ignore_ascii_case(wanted) && !value.is_empty() {
                value[0] = if value[0] == b'A' { b'B' } else { b'A' };
            }
        }
        builder = builder.header(name, value);
    }
    match &fault {
        Some(Fault::DropAfterForward) => Err(std::io::Error::other("injected: reply lost")),
        Some(Fault::CorruptResponseBody) if !rsp_body.is_empty() => {
            let i = rsp_body.len() / 2;
            rsp_body[i] ^= 0x01;
            answered(state, index, status_code);
            Ok(builder.body(full(rsp_body)).unwrap())
        }
        Some(Fault::TruncateResponseBody) => {
            let half = Bytes::from(rsp_body[..rsp_body.len() / 2].to_vec());
            let frames: Vec<Result<Frame<Bytes>, std::io::Error>> = vec![
                Ok(Frame::data(half)),
                Err(std::io::Error::other("injected: body truncated")),
            ];
            let body = StreamBody::new(futures::stream::iter(frames)).boxed();
            Ok(builder
                .header("content-length", rsp_body.len().to_string())
                .body(body)
                .unwrap())
        }
        _ => {
            answered(state, index, status_code);
            Ok(builder.body(full(rsp_body)).unwrap())
        }
    }
}

//! A fault-injecting HTTP proxy in front of Azurite, so the blob client meets the failures of a
//! real network and a real service: error statuses (503, 500, 429), slow answers, dropped
//! connections, corrupted or truncated bodies, altered headers — without mocking the blob API
//! (every request that is not failed goes to Azurite and back).
//!
//! Point a connection string's `BlobEndpoint` at [`Proxy::blob_endpoint`]. Rules match requests
//! by method and a substring of the path and query (`comp=block`, `comp=blocklist`, …) and
//! fire for the first `times` matching requests; every request is logged with when it
//! arrived and what was done to it, so tests can count tries and measure backoff.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

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
}

#[derive(Default)]
struct State {
    rules: Vec<Rule>,
    log: Vec<Seen>,
}

/// The proxy; stops when dropped.
pub struct Proxy {
    pub port: u16,
    state: Arc<Mutex<State>>,
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
        let state = Arc::new(Mutex::new(State::default()));
        let client = reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(0)
            .build()
            .unwrap();
        let task = {
            let state = state.clone();
            let upstream = upstream.clone();
            tokio::spawn(async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let state = state.clone();
                    let upstream = upstream.clone();
                    let client = client.clone();
                    tokio::spawn(async move {
                        // Each request runs on its own task, so a client that gives up (a
                        // try cut off by its timeout) does not cancel it: like a real network,
                        // the late request still reaches the service, and its answer is logged.
                        let service = service_fn(move |req| {
                            let request =
                                handle(req, state.clone(), upstream.clone(), client.clone());
                            async move { tokio::spawn(request).await.map_err(std::io::Error::other)? }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            })
        };
        Proxy { port, state, task }
    }

    /// The blob endpoint through the proxy.
    pub fn blob_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/{DEV_ACCOUNT}", self.port)
    }

    /// The Azurite account-key connection string, through the proxy.
    pub fn connection_string(&self) -> String {
        super::azurite::connection_string(self.port)
    }

    pub fn add(&self, rule: Rule) {
        self.state.lock().unwrap().rules.push(rule);
    }

    /// Removes every rule (the outage is over).
    pub fn heal(&self) {
        self.state.lock().unwrap().rules.clear();
    }

    pub fn log(&self) -> Vec<Seen> {
        self.state.lock().unwrap().log.clone()
    }

    pub fn clear_log(&self) {
        self.state.lock().unwrap().log.clear();
    }

    /// Put Block requests seen.
    pub fn put_blocks(&self) -> Vec<Seen> {
        self.log()
            .into_iter()
            .filter(|s| s.uri.contains("comp=block") && !s.uri.contains("comp=blocklist"))
            .collect()
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

/// Logs a request on arrival (so a request still in progress is counted); returns its index.
fn arrive(state: &Mutex<State>, seen: Seen) -> usize {
    let mut s = state.lock().unwrap();
    s.log.push(seen);
    s.log.len() - 1
}

/// Records the status answered to request `index`.
fn answered(state: &Mutex<State>, index: usize, status: Option<u16>) {
    state.lock().unwrap().log[index].status = status;
}

async fn handle(
    req: Request<Incoming>,
    state: Arc<Mutex<State>>,
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
    let fault = {
        let mut s = state.lock().unwrap();
        let rule = s.rules.iter_mut().find(|r| r.matches(&method, &uri));
        rule.map(|r| {
            r.times -= 1;
            r.fault.clone()
        })
    };
    let index = arrive(
        &state,
        Seen {
            at,
            method: method.clone(),
            uri: uri.clone(),
            fault: fault.clone(),
            status: None,
        },
    );
    let (parts, body) = req.into_parts();
    let mut body = body
        .collect()
        .await
        .map_err(std::io::Error::other)?
        .to_bytes()
        .to_vec();

    match &fault {
        Some(Fault::Status(code)) => {
            answered(&state, index, Some(*code));
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
            answered(&state, index, status_code);
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
            answered(&state, index, status_code);
            Ok(builder.body(full(rsp_body)).unwrap())
        }
    }
}

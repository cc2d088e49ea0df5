//! The HTTP server the Functions host talks to.
//!
//! One catch-all warp filter dispatches by hand instead of composing warp routes: the status
//! codes are part of the contract (404 unknown function, 405 wrong method, 413 too large, 400
//! malformed envelope) and hand dispatch keeps them explicit instead of depending on warp's
//! rejection ranking. The body is read as a stream with our own cap, not with
//! `content_length_limit`, because the host may send chunked bodies (no `Content-Length`),
//! which that filter would refuse with 411.
//!
//! Status choices ([`render`] decides them; see also `docs/settings.md`):
//! - `IncrementalCopy`: 500 only when a table failed in a way a retry may fix. A non-2xx
//!   marks the invocation FAILED for the host, which then applies the function's retry
//!   policy; a `Blocked` table (a definite failure) answers 200 with an error line instead.
//! - `FullLoad` answers its caller through the `res` output binding. Caller mistakes
//!   (`BadRequest` → 400, `Conflict` → 409) and `InProgress` (202) are answers, so the handler
//!   returns 200 and the invocation succeeds. `Failed` and `Blocked` return handler status
//!   500 (HTTP triggers have no retry policy) and still carry `res` with status 500.
//! - `CopyTable` (queue trigger): 500 only for a failure a retry may fix; the host makes the
//!   message visible again after `visibilityTimeout` and, once `DequeueCount` reaches
//!   `maxDequeueCount`, moves it to `cdc-copy-tables-poison`. A table that needs a person
//!   (`Blocked`, or not configured) answers 200 and puts the message with its error on the
//!   poison queue itself through the `poison` output binding, so no retry is spent on it.
//! - A malformed invocation (not JSON, wrong types, missing `Data`) is the host's problem,
//!   not the caller's: handler 400 naming the field, `Outputs` empty. It never panics, and
//!   a panicking job becomes a 500 too (jobs run in their own task).

use std::future::Future;
use std::sync::Arc;

use bytes::Buf;
use chrono::SecondsFormat;
use futures::{Stream, StreamExt};
use serde_json::{json, Value};
use tracing::Instrument;
use warp::http::{HeaderMap, Method, StatusCode};
use warp::reply::{Reply, Response};
use warp::Filter;

use super::payload::{
    full_load_request, parse_json, table_message, HttpInvocation, PayloadError, QueueInvocation,
    TimerInvocation, HTTP_OUTPUT_BINDING, POISON_OUTPUT_BINDING,
};
use super::render;
use super::{Delivery, Jobs};
use crate::report::{Report, Status};

/// Largest invocation body accepted (the payloads are a few hundred bytes).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// The header carrying the host's invocation id.
pub const INVOCATION_ID_HEADER: &str = "x-azure-functions-invocationid";

/// Serves the host contract on `listener` until `shutdown` completes, then finishes the
/// requests in flight. `GET /` answers at once (readiness): nothing is done lazily there.
///
/// Use it as `run(listener, jobs, shutdown).await` or `tokio::spawn(run(...))`. It is a plain
/// `fn` returning warp's server future rather than an `async fn`: awaiting warp's
/// `Server::run` inside another async fn loses the `Send` proof (warp 0.4 uses async fns in
/// traits and rustc cannot see through them generically), and the server could then not be
/// spawned.
pub fn run(
    listener: tokio::net::TcpListener,
    jobs: Arc<dyn Jobs>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> impl Future<Output = ()> + Send + 'static {
    let routes = warp::method()
        .and(warp::path::full())
        .and(warp::header::headers_cloned())
        .and(warp::body::stream())
        .then(move |method, path: warp::path::FullPath, headers, body| {
            let jobs = jobs.clone();
            let path = path.as_str().to_string();
            dispatch(jobs, method, path, headers, body)
        });
    warp::serve(routes)
        .incoming(listener)
        .graceful(shutdown)
        .run()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Function {
    IncrementalCopy,
    FullLoad,
    CopyTable,
    LoadRange,
}

impl Function {
    fn name(self) -> &'static str {
        match self {
            Function::IncrementalCopy => "IncrementalCopy",
            Function::FullLoad => "FullLoad",
            Function::CopyTable => "CopyTable",
            Function::LoadRange => "LoadRange",
        }
    }
}

async fn dispatch<S, B>(
    jobs: Arc<dyn Jobs>,
    method: Method,
    path: String,
    headers: HeaderMap,
    body: S,
) -> Response
where
    S: Stream<Item = Result<B, warp::Error>> + Send,
    B: Buf,
{
    let function = match path.as_str() {
        "/" => {
            return if method == Method::GET || method == Method::HEAD {
                StatusCode::OK.into_response()
            } else {
                plain(StatusCode::METHOD_NOT_ALLOWED, "use GET /")
            };
        }
        p if p.eq_ignore_ascii_case("/IncrementalCopy") => Function::IncrementalCopy,
        p if p.eq_ignore_ascii_case("/FullLoad") => Function::FullLoad,
        p if p.eq_ignore_ascii_case("/CopyTable") => Function::CopyTable,
        p if p.eq_ignore_ascii_case("/LoadRange") => Function::LoadRange,
        _ => {
            return plain(
                StatusCode::NOT_FOUND,
                "no such function; this handler serves IncrementalCopy, FullLoad, CopyTable and LoadRange",
            )
        }
    };
    if method != Method::POST {
        return plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "functions are invoked with POST",
        );
    }
    let invocation_id = headers
        .get(INVOCATION_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let span = tracing::info_span!(
        "invocation",
        function = function.name(),
        invocation_id = %invocation_id
    );
    invoke(jobs, function, body).instrument(span).await
}

async fn invoke<S, B>(jobs: Arc<dyn Jobs>, function: Function, body: S) -> Response
where
    S: Stream<Item = Result<B, warp::Error>> + Send,
    B: Buf,
{
    let started = std::time::Instant::now();
    let bytes = match read_capped(body, MAX_BODY_BYTES).await {
        Ok(bytes) => bytes,
        Err(ReadError::TooLarge) => {
            let e = PayloadError::TooLarge {
                limit: MAX_BODY_BYTES,
            };
            tracing::warn!(error = %e, "invocation refused");
            return envelope_error(StatusCode::PAYLOAD_TOO_LARGE, &e.to_string());
        }
        Err(ReadError::Io(e)) => {
            tracing::warn!(error = %e, "invocation body could not be read");
            return envelope_error(
                StatusCode::BAD_REQUEST,
                &format!("body: could not be read: {e}"),
            );
        }
    };
    let response = match function {
        Function::IncrementalCopy => incremental_copy(jobs, &bytes).await,
        Function::FullLoad => full_load(jobs, &bytes).await,
        Function::CopyTable => copy_table(jobs, &bytes).await,
        Function::LoadRange => load_range(jobs, &bytes).await,
    };
    tracing::info!(
        status = response.status().as_u16(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "invocation answered"
    );
    response
}

async fn incremental_copy(jobs: Arc<dyn Jobs>, bytes: &[u8]) -> Response {
    let invocation = match parse_json(bytes).and_then(|v| TimerInvocation::from_json(&v)) {
        Ok(invocation) => invocation,
        Err(e) => return malformed(&e),
    };
    let trigger = invocation.trigger(chrono::Utc::now());
    tracing::info!(
        trigger_time = %trigger.trigger_time.to_rfc3339_opts(SecondsFormat::AutoSi, true),
        last = %trigger.last.map_or_else(|| "none".to_string(), |t| t.to_rfc3339_opts(SecondsFormat::AutoSi, true)),
        is_past_due = trigger.is_past_due,
        retry_count = invocation.metadata.retry_context.as_ref().map(|r| r.retry_count),
        "IncrementalCopy invoked"
    );
    let report = run_job("IncrementalCopy", async move { jobs.timer(trigger).await }).await;
    log_outcome(&report);
    invocation_response(
        render::timer_status(report.status),
        json!(report.outputs),
        report.logs(),
        report.return_value(),
    )
}

async fn copy_table(jobs: Arc<dyn Jobs>, bytes: &[u8]) -> Response {
    let invocation = match parse_json(bytes).and_then(|v| QueueInvocation::from_json(&v)) {
        Ok(invocation) => invocation,
        Err(e) => return malformed(&e),
    };
    let message = match table_message(&invocation.message) {
        Ok(message) => message,
        Err(e) => return malformed(&PayloadError::Invalid(e)),
    };
    let delivery = Delivery {
        dequeue_count: invocation.dequeue_count(),
        id: invocation.metadata.id.clone(),
    };
    tracing::info!(
        table = %message.table,
        trigger_time = %message.trigger_time.to_rfc3339_opts(SecondsFormat::AutoSi, true),
        dequeue_count = delivery.dequeue_count,
        message_id = delivery.id.as_deref().unwrap_or(""),
        "CopyTable invoked"
    );
    let job_message = message.clone();
    let job_delivery = delivery.clone();
    let report = run_job("CopyTable", async move {
        jobs.copy_table(job_message, job_delivery).await
    })
    .await;
    log_outcome(&report);
    let mut outputs = report.outputs.clone();
    if render::needs_a_person(report.status) {
        // Straight to the poison queue, with why: retries cannot help.
        let poison = json!({
            "message": message,
            "status": report.status,
            "error": report.logs().join("; "),
            "dequeueCount": delivery.dequeue_count,
            "id": delivery.id,
        });
        tracing::error!(
            table = %message.table,
            status = ?report.status,
            "CopyTable needs a person: the message goes to the poison queue now, not retried"
        );
        outputs
            .entry(POISON_OUTPUT_BINDING.to_string())
            .or_default()
            .push(poison);
    }
    invocation_response(
        render::queue_status(report.status),
        json!(outputs),
        report.logs(),
        report.return_value(),
    )
}

async fn full_load(jobs: Arc<dyn Jobs>, bytes: &[u8]) -> Response {
    let invocation = match parse_json(bytes).and_then(|v| HttpInvocation::from_json(&v)) {
        Ok(invocation) => invocation,
        Err(e) => return malformed(&e),
    };
    let request = match full_load_request(&invocation.req.body) {
        Ok(request) => request,
        Err(e) => {
            let message = format!("FullLoad request refused: {e}");
            tracing::warn!(field = %e.field, error = %e, "FullLoad request refused");
            let res = http_output(
                StatusCode::BAD_REQUEST,
                &json!({"status": Status::BadRequest, "field": e.field, "error": e.to_string(), "logs": [&message]}),
            );
            return invocation_response(
                StatusCode::OK,
                json!({ HTTP_OUTPUT_BINDING: res }),
                vec![message],
                Value::Null,
            );
        }
    };
    tracing::info!(tables = ?request.tables, reset = request.reset, "FullLoad invoked");
    let report = run_job("FullLoad", async move {
        jobs.full_load_invocation(request).await
    })
    .await;
    log_outcome(&report);
    let (caller_status, handler_status) = render::full_load_status(report.status);
    let logs = report.logs();
    let return_value = report.return_value();
    let mut body = return_value.clone();
    body["logs"] = json!(logs);
    let res = http_output(caller_status, &body);
    // A split load sent to the queue: its range messages (RANGES_OUTPUT_BINDING) beside `res`.
    let mut outputs = json!(report.outputs);
    outputs[HTTP_OUTPUT_BINDING] = res;
    invocation_response(handler_status, outputs, logs, return_value)
}

/// `LoadRange` (queue trigger, `cdc-copy-ranges`): one key range of a split full load, with
/// the same answers as `CopyTable` (500 only when a retry may help). A range not finished
/// within the budget sends its own message again through the `ranges` output.
async fn load_range(jobs: Arc<dyn Jobs>, bytes: &[u8]) -> Response {
    let invocation = match parse_json(bytes).and_then(|v| QueueInvocation::from_json(&v)) {
        Ok(invocation) => invocation,
        Err(e) => return malformed(&e),
    };
    let message = match super::payload::range_message(&invocation.message) {
        Ok(message) => message,
        Err(e) => return malformed(&PayloadError::Invalid(e)),
    };
    let delivery = Delivery {
        dequeue_count: invocation.dequeue_count(),
        id: invocation.metadata.id.clone(),
    };
    tracing::info!(
        table = %message.table,
        load_id = %message.load_id,
        range = message.range,
        dequeue_count = delivery.dequeue_count,
        "LoadRange invoked"
    );
    let report = run_job("LoadRange", async move {
        jobs.load_range(message, delivery).await
    })
    .await;
    log_outcome(&report);
    invocation_response(
        render::queue_status(report.status),
        json!(report.outputs),
        report.logs(),
        report.return_value(),
    )
}

/// Runs a job in its own task so that a panic becomes a failed invocation instead of a
/// dropped connection, and so that the job finishes even if the host gives up waiting.
async fn run_job(name: &'static str, job: impl Future<Output = Report> + Send + 'static) -> Report {
    match tokio::spawn(job.in_current_span()).await {
        Ok(report) => report,
        Err(e) => {
            tracing::error!(error = %e, "{name} job panicked or was cancelled");
            Report::failed(format!(
                "{name} failed: the job stopped unexpectedly ({}); see the handler log",
                if e.is_panic() { "panic" } else { "cancelled" }
            ))
        }
    }
}

fn log_outcome(report: &Report) {
    if report.status == Status::Failed {
        tracing::error!(status = ?report.status, logs = ?report.logs(), "job finished");
    } else {
        tracing::info!(status = ?report.status, "job finished");
    }
}

/// The value of an `http` output binding: status, JSON body as a string, content type.
fn http_output(status: StatusCode, body: &Value) -> Value {
    json!({
        "statusCode": status.as_u16(),
        "body": body.to_string(),
        "headers": {"Content-Type": "application/json"},
    })
}

fn invocation_response(
    status: StatusCode,
    outputs: Value,
    logs: Vec<String>,
    return_value: Value,
) -> Response {
    let body = json!({"Outputs": outputs, "Logs": logs, "ReturnValue": return_value});
    warp::reply::with_status(warp::reply::json(&body), status).into_response()
}

fn malformed(e: &PayloadError) -> Response {
    tracing::warn!(field = e.field(), error = %e, "malformed invocation");
    envelope_error(StatusCode::BAD_REQUEST, &e.to_string())
}

fn envelope_error(status: StatusCode, message: &str) -> Response {
    invocation_response(
        status,
        json!({}),
        vec![format!("malformed invocation: {message}")],
        Value::Null,
    )
}

fn plain(status: StatusCode, message: &'static str) -> Response {
    warp::reply::with_status(message, status).into_response()
}

#[derive(Debug)]
enum ReadError {
    TooLarge,
    Io(warp::Error),
}

/// Reads a body stream into memory, refusing it as soon as it passes `limit` bytes.
async fn read_capped<S, B>(body: S, limit: usize) -> Result<Vec<u8>, ReadError>
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    let mut body = std::pin::pin!(body);
    let mut out = Vec::new();
    while let Some(chunk) = body.next().await {
        let mut chunk = chunk.map_err(ReadError::Io)?;
        if out.len() + chunk.remaining() > limit {
            return Err(ReadError::TooLarge);
        }
        while chunk.has_remaining() {
            let piece = chunk.chunk();
            out.extend_from_slice(piece);
            let n = piece.len();
            chunk.advance(n);
        }
    }
    Ok(out)
}

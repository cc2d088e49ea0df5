//! Plays the Functions host against the handler.
//!
//! (a) The real binary, started the way the host starts it (`FUNCTIONS_CUSTOMHANDLER_PORT`,
//!     readiness by polling `GET /`), with no CDC settings: every invocation must fail with a
//!     log line naming the missing setting, and a missing or bad port must stop it with a
//!     message naming the variable. The time from exec to the first 200 is printed.
//! (b) In process: `host::run` with a recording [`Jobs`] double (a double of our own trait,
//!     not of Azure) to check what the jobs receive and how each outcome is answered, and that
//!     malformed invocations get a 4xx naming the field while the server keeps serving.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use cdc_copy::cdc::TableRef;
use cdc_copy::config::SETTINGS;
use cdc_copy::host::{self, FullLoadRequest, Jobs, TimerTrigger};
use cdc_copy::report::{Report, Status, TableResult};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

// ---------------------------------------------------------------------------------------
// Payloads, as the host sends them (see reference/functions-host-contract.md).

const NORMAL: &str = r#"{"Data":{"timer":{"Schedule":{"AdjustForDST":true},"ScheduleStatus":{"Last":"2026-11-21T10:00:00+00:00","Next":"2026-11-21T10:15:00+00:00","LastUpdated":"2026-11-21T10:00:00.0141+00:00"},"IsPastDue":false}},"Metadata":{"sys":{"MethodName":"IncrementalCopy","UtcNow":"2026-11-21T10:15:00.0209Z","RandGuid":"0d6a9d1e-5a7e-4c1c-9d59-8a0e8d3c6f21"}}}"#;
const FIRST_RUN: &str = r#"{"Data":{"timer":{"Schedule":{"AdjustForDST":true},"ScheduleStatus":{"Last":"0001-01-01T00:00:00","Next":"2026-11-21T10:15:00","LastUpdated":"0001-01-01T00:00:00"},"IsPastDue":false}},"Metadata":{"sys":{"MethodName":"IncrementalCopy","UtcNow":"2026-11-21T10:15:00.0031234Z","RandGuid":"9b0c7a4e-0000-4000-8000-000000000001"}}}"#;
const PAST_DUE: &str = r#"{"Data":{"timer":{"Schedule":{"AdjustForDST":true},"ScheduleStatus":{"Last":"2026-11-21T06:00:00.012+00:00","Next":"2026-11-21T06:15:00+00:00","LastUpdated":"2026-11-21T06:00:00.0141+00:00"},"IsPastDue":true}},"Metadata":{"sys":{"MethodName":"IncrementalCopy","UtcNow":"2026-11-21T10:07:12.5Z","RandGuid":"9b0c7a4e-0000-4000-8000-000000000002"},"RetryContext":{"RetryCount":1,"MaxRetryCount":5,"Exception":null}}}"#;
const NULL_STATUS: &str = r#"{"Data":{"timer":{"Schedule":{"AdjustForDST":true},"ScheduleStatus":null,"IsPastDue":false}},"Metadata":{"sys":{"MethodName":"IncrementalCopy","UtcNow":"2026-11-21T10:15:00.0209Z","RandGuid":"9b0c7a4e-0000-4000-8000-000000000003"}}}"#;

fn http_trigger(body: Value) -> String {
    json!({
        "Data": {"req": {
            "Url": "https://cdc-copy.azurewebsites.net/api/FullLoad?code=xyz",
            "Method": "POST",
            "Query": {"code": "xyz"},
            "Headers": {"Content-Type": ["application/json"], "Host": ["cdc-copy.azurewebsites.net"]},
            "Params": {},
            "Identities": [{"AuthenticationType": "WebJobsAuthLevel", "IsAuthenticated": true}],
            "Body": body,
        }},
        "Metadata": {"sys": {"MethodName": "FullLoad", "UtcNow": "2026-11-21T10:20:00.5Z", "RandGuid": "9b0c7a4e-0000-4000-8000-000000000004"}},
    })
    .to_string()
}

fn t(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .expect("test timestamp")
        .with_timezone(&Utc)
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client")
}

async fn invoke(
    base: &str,
    function: &str,
    body: impl Into<reqwest::Body>,
    invocation_id: &str,
) -> (u16, Value) {
    let response = client()
        .post(format!("{base}/{function}"))
        .header("Content-Type", "application/json")
        .header("X-Azure-Functions-InvocationId", invocation_id)
        .header("X-Azure-Functions-HostVersion", "4.1037.0.0")
        .body(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST /{function}: {e}"));
    let status = response.status().as_u16();
    let text = response.text().await.expect("response body");
    let value = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!("POST /{function} answered {status} with non-JSON {text:?}: {e}")
    });
    (status, value)
}

/// The envelope every invocation response has.
fn assert_envelope(body: &Value) {
    let obj = body.as_object().expect("response is an object");
    assert!(obj["Outputs"].is_object(), "Outputs: {body}");
    assert!(obj["Logs"].is_array(), "Logs: {body}");
    assert!(obj.contains_key("ReturnValue"), "ReturnValue: {body}");
    assert!(
        obj["Logs"].as_array().unwrap().iter().all(Value::is_string),
        "Logs are strings: {body}"
    );
}

fn logs(body: &Value) -> String {
    body["Logs"]
        .as_array()
        .map(|l| {
            l.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default()
}

/// `Outputs.res` with its body parsed.
fn res(body: &Value) -> (u64, Value) {
    let res = &body["Outputs"]["res"];
    assert_eq!(
        res["headers"]["Content-Type"], "application/json",
        "res headers: {body}"
    );
    let status = res["statusCode"].as_u64().expect("res.statusCode");
    let inner = res["body"].as_str().expect("res.body is a JSON string");
    (
        status,
        serde_json::from_str(inner).expect("res.body parses"),
    )
}

// ---------------------------------------------------------------------------------------
// (a) The real binary.

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// The handler binary with no CDC settings at all (and no inherited port).
fn handler() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_handler"));
    for s in SETTINGS {
        cmd.env_remove(s.name);
    }
    cmd.env("RUST_LOG", "info");
    cmd
}

/// One `GET /` over a raw socket; `Some(status line)` when the server answered.
fn get_root(addr: SocketAddr) -> Option<String> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    response.lines().next().map(str::to_string)
}

struct Started {
    child: Child,
    port: u16,
    ready_after: Duration,
    log: tempfile::NamedTempFile,
}

/// Starts the binary the way the host does and polls `GET /` until it answers.
fn start_handler(envs: &[(&str, &str)]) -> Started {
    let port = free_port();
    let log = tempfile::NamedTempFile::new().expect("log file");
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let started = Instant::now();
    let mut child = handler()
        .env("FUNCTIONS_CUSTOMHANDLER_PORT", port.to_string())
        .envs(envs.iter().copied())
        .stdout(Stdio::from(log.reopen().expect("log file")))
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn handler");
    loop {
        if let Some(status) = get_root(addr) {
            assert!(status.starts_with("HTTP/1.1 200"), "GET / → {status}");
            break;
        }
        if let Ok(Some(exit)) = child.try_wait() {
            let mut stderr = String::new();
            child
                .stderr
                .take()
                .map(|mut e| e.read_to_string(&mut stderr));
            panic!("handler exited with {exit} before answering: {stderr}");
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "handler not ready after 10 s"
        );
        std::thread::sleep(Duration::from_micros(200));
    }
    Started {
        child,
        ready_after: started.elapsed(),
        port,
        log,
    }
}

/// SIGTERM (graceful stop) by pid, then wait; falls back to kill.
fn stop(mut child: Child) -> std::process::ExitStatus {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return status;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    panic!("handler did not stop within 5 s of SIGTERM");
}

#[test]
fn binary_is_ready_fast() {
    let mut times = Vec::new();
    for _ in 0..5 {
        let started = start_handler(&[]);
        times.push(started.ready_after);
        assert!(stop(started.child).success());
    }
    times.sort();
    println!(
        "time from exec to first 200 on GET /: min {:?}, median {:?}, max {:?} (5 starts)",
        times[0], times[2], times[4]
    );
    // The host allows 30-60 s; anything near that would be a bug, not a slow machine.
    assert!(times[2] < Duration::from_secs(2), "{times:?}");
}

#[tokio::test]
async fn binary_without_settings_fails_each_invocation_naming_the_setting() {
    let started = start_handler(&[]);
    let base = format!("http://127.0.0.1:{}", started.port);

    for (name, payload) in [
        ("normal", NORMAL),
        ("first run", FIRST_RUN),
        ("past due", PAST_DUE),
        ("null status", NULL_STATUS),
    ] {
        let id = format!("binary-{}", name.replace(' ', "-"));
        let (status, body) = invoke(&base, "IncrementalCopy", payload, &id).await;
        assert_eq!(status, 500, "{name}: {body}");
        assert_envelope(&body);
        assert!(
            logs(&body).contains("CDC_SQL_CONNECTION_STRING"),
            "{name}: {body}"
        );
    }

    let (status, body) = invoke(
        &base,
        "FullLoad",
        http_trigger(json!("{\"tables\":[\"dbo.customers\"]}")),
        "binary-full-load",
    )
    .await;
    assert_eq!(status, 500, "{body}");
    assert_envelope(&body);
    let (res_status, res_body) = res(&body);
    assert_eq!(res_status, 500);
    assert_eq!(res_body["status"], "failed");
    assert!(
        res_body.to_string().contains("CDC_SQL_CONNECTION_STRING"),
        "{res_body}"
    );

    let (status, body) = invoke(&base, "IncrementalCopy", "{not json", "binary-bad").await;
    assert_eq!(status, 400, "{body}");
    assert_envelope(&body);

    let status = client()
        .post(format!("{base}/NoSuchFunction"))
        .send()
        .await
        .expect("POST")
        .status();
    assert_eq!(status.as_u16(), 404);

    let exit = stop(started.child);
    assert!(exit.success(), "graceful stop: {exit}");
    let log = std::fs::read_to_string(started.log.path()).expect("log");
    assert!(
        log.contains("binary-past-due"),
        "invocation id is a log field:\n{log}"
    );
    assert!(
        log.contains("invalid setting") && log.contains("CDC_TABLES"),
        "start-up warns about settings:\n{log}"
    );
}

/// A recognisable password in a refused connection string reaches neither a response nor
/// the process log.
#[tokio::test]
async fn binary_never_shows_the_sql_password() {
    const PASSWORD: &str = "Recognisable-Pa55word-4711";
    let conn = format!(
        "Server=tcp:127.0.0.1,1433;Database=shop;User ID=sa;Password={PASSWORD};Encrypt=DANGER_PLAINTEXT"
    );
    let started = start_handler(&[
        ("CDC_SQL_CONNECTION_STRING", conn.as_str()),
        ("CDC_TABLES", "dbo.customers"),
        (
            "CDC_STORAGE_CONNECTION_STRING",
            "UseDevelopmentStorage=true",
        ),
        ("RUST_LOG", "trace"),
    ]);
    let base = format!("http://127.0.0.1:{}", started.port);
    let (status, body) = invoke(&base, "IncrementalCopy", NORMAL, "secret-1").await;
    assert_eq!(status, 500);
    assert!(logs(&body).contains("DANGER_PLAINTEXT"), "{body}");
    let (_, full) = invoke(&base, "FullLoad", http_trigger(json!("")), "secret-2").await;
    assert!(stop(started.child).success());
    let log = std::fs::read_to_string(started.log.path()).expect("log");
    for text in [body.to_string(), full.to_string(), log] {
        assert!(!text.contains(PASSWORD), "password leaked: {text}");
    }
}

#[test]
fn binary_refuses_a_missing_or_bad_port() {
    for port in [None, Some(""), Some("abc"), Some("0"), Some("70000")] {
        let mut cmd = handler();
        cmd.env_remove("FUNCTIONS_CUSTOMHANDLER_PORT");
        if let Some(port) = port {
            cmd.env("FUNCTIONS_CUSTOMHANDLER_PORT", port);
        }
        let out = cmd.output().expect("run handler");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{port:?}: {}", out.status);
        assert!(
            stderr.contains("FUNCTIONS_CUSTOMHANDLER_PORT"),
            "{port:?}: {stderr}"
        );
    }
}

#[test]
fn binary_help_and_usage_errors() {
    let out = handler().arg("--help").output().expect("run");
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("incremental-copy"));
    let out = handler().arg("frobnicate").output().expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("frobnicate"));
    // Operator commands without settings: non-zero, naming the setting.
    let out = handler().arg("check").output().expect("run");
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("CDC_SQL_CONNECTION_STRING") && stdout.contains("CDC_TABLES"),
        "{stdout}"
    );
    let out = handler()
        .args(["incremental-copy", "--at", "2026-11-21T10:15:00Z"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("CDC_SQL_CONNECTION_STRING"));
}

// ---------------------------------------------------------------------------------------
// (b) In process, with a recording double of our Jobs trait.

#[derive(Default)]
struct Recorder {
    timers: Mutex<Vec<TimerTrigger>>,
    loads: Mutex<Vec<FullLoadRequest>>,
    status: Mutex<Option<Status>>,
    panic: Mutex<bool>,
}

impl Recorder {
    fn answer(&self, what: &str) -> Report {
        if *self.panic.lock().unwrap() {
            panic!("job exploded");
        }
        let status = self.status.lock().unwrap().unwrap_or(Status::Done);
        let mut table = TableResult::new(
            &TableRef::parse("dbo.customers").unwrap(),
            status,
            "recorded",
        );
        table.rows = 3;
        table.error = Some(format!("{what} said {status:?}"));
        Report::of(vec![table])
    }
    fn set(&self, outcome: Status) {
        *self.status.lock().unwrap() = Some(outcome);
    }
}

/// The double the server gets; the test keeps the `Arc<Recorder>` to inspect it.
struct Fake(Arc<Recorder>);

#[async_trait]
impl Jobs for Fake {
    async fn incremental_copy(&self, trigger: TimerTrigger) -> Report {
        self.0.timers.lock().unwrap().push(trigger);
        self.0.answer("IncrementalCopy")
    }
    async fn full_load(&self, request: FullLoadRequest) -> Report {
        self.0.loads.lock().unwrap().push(request);
        self.0.answer("FullLoad")
    }
}

struct Server {
    base: String,
    addr: SocketAddr,
    recorder: Arc<Recorder>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

async fn serve() -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let recorder = Arc::new(Recorder::default());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let jobs: Arc<dyn Jobs> = Arc::new(Fake(recorder.clone()));
    let task = tokio::spawn(host::run(listener, jobs, async move {
        let _ = stopped.await;
    }));
    Server {
        base: format!("http://{addr}"),
        addr,
        recorder,
        stop: Some(stop),
        task,
    }
}

impl Server {
    async fn still_serving(&self) {
        let status = client()
            .get(format!("{}/", self.base))
            .send()
            .await
            .expect("GET /")
            .status();
        assert_eq!(status.as_u16(), 200);
        let (status, _) = invoke(&self.base, "IncrementalCopy", NORMAL, "after").await;
        assert_eq!(status, 200);
    }

    async fn shutdown(mut self) {
        let _ = self.stop.take().map(|s| s.send(()));
        tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .expect("run returns after shutdown")
            .expect("server task");
    }
}

#[tokio::test]
async fn timer_payloads_give_the_documented_trigger() {
    let server = serve().await;
    let cases = [
        (
            "normal",
            NORMAL,
            TimerTrigger {
                trigger_time: t("2026-11-21T10:15:00Z"),
                last: Some(t("2026-11-21T10:00:00Z")),
                is_past_due: false,
            },
        ),
        (
            "first run",
            FIRST_RUN,
            TimerTrigger {
                trigger_time: t("2026-11-21T10:15:00Z"),
                last: None,
                is_past_due: false,
            },
        ),
        (
            "past due",
            PAST_DUE,
            TimerTrigger {
                trigger_time: t("2026-11-21T06:15:00Z"),
                last: Some(t("2026-11-21T06:00:00.012Z")),
                is_past_due: true,
            },
        ),
        (
            "null status",
            NULL_STATUS,
            TimerTrigger {
                trigger_time: t("2026-11-21T10:15:00.0209Z"),
                last: None,
                is_past_due: false,
            },
        ),
    ];
    for (name, payload, want) in cases {
        let (status, body) = invoke(&server.base, "IncrementalCopy", payload, name).await;
        assert_eq!(status, 200, "{name}: {body}");
        assert_envelope(&body);
        assert_eq!(body["Outputs"], json!({}));
        assert_eq!(
            body["ReturnValue"]["tables"][0]["rows"], 3,
            "summary is the ReturnValue"
        );
        assert_eq!(
            server.recorder.timers.lock().unwrap().last(),
            Some(&want),
            "{name}"
        );
    }
    assert_eq!(server.recorder.timers.lock().unwrap().len(), 4);
    server.shutdown().await;
}

#[tokio::test]
async fn each_outcome_is_answered_as_documented() {
    let server = serve().await;
    // (status, IncrementalCopy handler status, FullLoad handler status, res.statusCode):
    // only what a retry may fix answers the timer with 500 (the host then retries).
    let table = [
        (Status::Done, 200, 200, 200),
        (Status::Superseded, 200, 200, 200),
        (Status::InProgress, 200, 200, 202),
        (Status::BadRequest, 200, 200, 400),
        (Status::Conflict, 200, 200, 409),
        (Status::Blocked, 200, 500, 500),
        (Status::Failed, 500, 500, 500),
    ];
    for (outcome, incremental, full, caller) in table {
        server.recorder.set(outcome);
        let (status, body) = invoke(&server.base, "IncrementalCopy", NORMAL, "o").await;
        assert_eq!(status, incremental, "{outcome:?}: {body}");
        assert_envelope(&body);
        assert!(logs(&body).contains("dbo.customers"), "{body}");
        assert_eq!(body["ReturnValue"]["status"], json!(outcome), "{body}");

        let (status, body) = invoke(
            &server.base,
            "FullLoad",
            http_trigger(json!("{\"tables\":[\"dbo.customers\"],\"reset\":true}")),
            "o",
        )
        .await;
        assert_eq!(status, full, "{outcome:?}: {body}");
        assert_envelope(&body);
        let (res_status, res_body) = res(&body);
        assert_eq!(res_status, caller, "{outcome:?}: {body}");
        assert_eq!(res_body["tables"][0]["rows"], 3);
        assert_eq!(res_body["status"], json!(outcome), "{res_body}");
        assert!(
            res_body["logs"][0]
                .as_str()
                .unwrap()
                .starts_with("dbo.customers: "),
            "{res_body}"
        );
    }
    server.shutdown().await;
}

#[tokio::test]
async fn full_load_requests_reach_the_jobs_or_are_refused_naming_the_field() {
    let server = serve().await;
    let dbo = |t: &str| TableRef::parse(t).unwrap();
    let accepted = [
        (
            json!("{\"tables\":[\"dbo.customers\"],\"reset\":true}"),
            FullLoadRequest {
                tables: vec![dbo("dbo.customers")],
                reset: true,
            },
        ),
        (
            json!(""),
            FullLoadRequest {
                tables: vec![],
                reset: false,
            },
        ),
        (
            Value::Null,
            FullLoadRequest {
                tables: vec![],
                reset: false,
            },
        ),
    ];
    for (body, want) in accepted {
        let (status, response) = invoke(&server.base, "FullLoad", http_trigger(body), "f").await;
        assert_eq!(status, 200, "{response}");
        assert_eq!(server.recorder.loads.lock().unwrap().last(), Some(&want));
    }
    let calls = server.recorder.loads.lock().unwrap().len();

    let refused = [
        ("{\"tables\":[\"dbo.customers\",\"orders\"]}", "tables[1]"),
        ("{\"tables\":[\"dbo.x'; drop table y;--\"]}", "tables[0]"),
        ("{\"tabels\":[]}", "tabels"),
        ("{\"reset\":1}", "reset"),
        ("not json", "body"),
    ];
    for (body, field) in refused {
        let (status, response) =
            invoke(&server.base, "FullLoad", http_trigger(json!(body)), "f").await;
        assert_eq!(status, 200, "the invocation answered: {response}");
        let (res_status, res_body) = res(&response);
        assert_eq!(res_status, 400, "{body}: {response}");
        assert_eq!(res_body["field"], field, "{res_body}");
        assert!(logs(&response).contains(field), "{response}");
    }
    assert_eq!(
        server.recorder.loads.lock().unwrap().len(),
        calls,
        "refused requests never reach the jobs"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn malformed_invocations_get_4xx_naming_the_field_and_the_server_keeps_serving() {
    let server = serve().await;
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let deep_in_data = format!(
        "{{\"Data\":{{\"timer\":{}1{}}}}}",
        "{\"a\":".repeat(5_000),
        "}".repeat(5_000)
    );
    let mut invalid_utf8 = br#"{"Data":{"timer":{"IsPastDue":false,"Schedule":""#.to_vec();
    invalid_utf8.extend_from_slice(&[0xff, 0xfe]);
    invalid_utf8.extend_from_slice(br#""}}}"#);

    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        ("IncrementalCopy", b"{not json".to_vec(), 400, "body"),
        ("IncrementalCopy", b"".to_vec(), 400, "body"),
        ("IncrementalCopy", b"[]".to_vec(), 400, "body"),
        ("IncrementalCopy", b"{}".to_vec(), 400, "Data"),
        ("IncrementalCopy", br#"{"Data":[]}"#.to_vec(), 400, "Data"),
        (
            "IncrementalCopy",
            br#"{"Data":{}}"#.to_vec(),
            400,
            "Data.timer",
        ),
        (
            "IncrementalCopy",
            br#"{"Data":{"timer":"tick"}}"#.to_vec(),
            400,
            "Data.timer",
        ),
        (
            "IncrementalCopy",
            br#"{"Data":{"timer":{"IsPastDue":"yes"}}}"#.to_vec(),
            400,
            "Data.timer.IsPastDue",
        ),
        (
            "IncrementalCopy",
            br#"{"Data":{"timer":{"ScheduleStatus":{"Next":"tomorrow"}}}}"#.to_vec(),
            400,
            "Data.timer.ScheduleStatus.Next",
        ),
        (
            "IncrementalCopy",
            br#"{"Data":{"timer":{}},"Metadata":{"sys":{"UtcNow":5}}}"#.to_vec(),
            400,
            "Metadata.sys.UtcNow",
        ),
        ("IncrementalCopy", invalid_utf8, 400, "body"),
        ("IncrementalCopy", deep.clone().into_bytes(), 400, "body"),
        ("IncrementalCopy", deep_in_data.into_bytes(), 400, "body"),
        (
            "FullLoad",
            br#"{"Data":{"timer":{}}}"#.to_vec(),
            400,
            "Data.req",
        ),
        (
            "FullLoad",
            br#"{"Data":{"req":{"Body":17}}}"#.to_vec(),
            400,
            "Data.req.Body",
        ),
        ("FullLoad", deep.into_bytes(), 400, "body"),
        (
            "IncrementalCopy",
            vec![b' '; host::MAX_BODY_BYTES + 1],
            413,
            "body",
        ),
        (
            "FullLoad",
            vec![b'{'; 4 * host::MAX_BODY_BYTES],
            413,
            "body",
        ),
    ];
    for (function, payload, want, field) in cases {
        let shown = String::from_utf8_lossy(&payload[..payload.len().min(60)]).to_string();
        let (status, body) = invoke(&server.base, function, payload, "bad").await;
        assert_eq!(status, want, "{function} {shown}: {body}");
        assert_envelope(&body);
        assert_eq!(body["Outputs"], json!({}), "{body}");
        assert_eq!(body["ReturnValue"], Value::Null, "{body}");
        let log = logs(&body);
        assert!(
            log.contains(&format!("{field}:")),
            "{function} {shown}: {log}"
        );
        server.still_serving().await;
    }
    assert!(
        server.recorder.loads.lock().unwrap().is_empty(),
        "malformed invocations never reach the jobs"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn routes_methods_and_readiness() {
    let server = serve().await;
    let c = client();
    let cases = [
        (reqwest::Method::GET, "/", 200),
        (reqwest::Method::HEAD, "/", 200),
        (reqwest::Method::POST, "/", 405),
        (reqwest::Method::GET, "/IncrementalCopy", 405),
        (reqwest::Method::PUT, "/FullLoad", 405),
        (reqwest::Method::POST, "/Nope", 404),
        (reqwest::Method::GET, "/api/FullLoad", 404),
    ];
    for (method, path, want) in cases {
        let status = c
            .request(method.clone(), format!("{}{path}", server.base))
            .send()
            .await
            .expect("request")
            .status();
        assert_eq!(status.as_u16(), want, "{method} {path}");
    }
    server.shutdown().await;
}

/// A chunked body (no Content-Length), as .NET's HttpClient may send it.
#[tokio::test]
async fn chunked_invocation_body_is_accepted() {
    let server = serve().await;
    let mut stream = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    let (a, b) = NORMAL.split_at(NORMAL.len() / 2);
    let request = format!(
        "POST /IncrementalCopy HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\n\r\n",
        a.len(),
        b.len()
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert_eq!(
        server.recorder.timers.lock().unwrap()[0].trigger_time,
        t("2026-11-21T10:15:00Z")
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_panicking_job_fails_the_invocation_not_the_server() {
    let server = serve().await;
    *server.recorder.panic.lock().unwrap() = true;
    let (status, body) = invoke(&server.base, "IncrementalCopy", NORMAL, "boom").await;
    assert_eq!(status, 500, "{body}");
    assert_envelope(&body);
    assert!(logs(&body).contains("stopped unexpectedly"), "{body}");
    let (status, body) = invoke(&server.base, "FullLoad", http_trigger(json!("")), "boom").await;
    assert_eq!(status, 500, "{body}");
    assert_eq!(res(&body).0, 500);
    *server.recorder.panic.lock().unwrap() = false;
    server.still_serving().await;
    server.shutdown().await;
}

/// `NotConfigured`, what main wires in until the production jobs exist.
#[tokio::test]
async fn not_configured_names_its_reason() {
    let jobs = host::NotConfigured::new("settings are invalid: CDC_TABLES is not set: list them");
    let report = jobs
        .incremental_copy(TimerTrigger {
            trigger_time: Utc::now(),
            last: None,
            is_past_due: false,
        })
        .await;
    assert_eq!(report.status, Status::Failed);
    assert!(
        report.logs()[0].contains("IncrementalCopy cannot run")
            && report.logs()[0].contains("CDC_TABLES")
    );
    let checks = jobs.check().await;
    assert!(checks.iter().any(|(_, r)| r.is_err()));
}

//! Guarantee 7 under generated input: thousands of invocation payloads (proptest) posted to
//! `host::run` on a loopback port with a recording `Jobs`, every setting given invalid values,
//! and table / capture-instance names crafted for SQL injection.
//!
//! Properties: the server never panics or hangs (each request has a timeout, and `GET /`
//! answers after every case), a malformed invocation gets a 4xx whose message names the field,
//! a FullLoad request naming a bad table is refused before any job (so any SQL) runs, and a
//! bad setting is refused naming the setting. `CDC_COPY_FUZZ_CASES` sets the number of cases
//! per property (default 1000; docs/guarantees.md).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use serde_json::{json, Value};

use cdc_copy::config::{Settings, SETTINGS};
use cdc_copy::host::{self, Delivery, FullLoadRequest, Jobs, TableMessage, TimerTrigger};
use cdc_copy::report::Report;

fn cases() -> u32 {
    std::env::var("CDC_COPY_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
}

/// Counts what reaches the jobs; answers Done.
#[derive(Default)]
struct Counting {
    incremental: AtomicU64,
    full_load: AtomicU64,
    copy_table: AtomicU64,
    last_tables: std::sync::Mutex<Vec<String>>,
}

struct Shared(Arc<Counting>);

#[async_trait::async_trait]
impl Jobs for Shared {
    async fn incremental_copy(&self, _trigger: TimerTrigger) -> Report {
        self.0.incremental.fetch_add(1, Ordering::SeqCst);
        done()
    }
    async fn copy_table(&self, _message: TableMessage, _delivery: Delivery) -> Report {
        self.0.copy_table.fetch_add(1, Ordering::SeqCst);
        done()
    }
    async fn full_load(&self, request: FullLoadRequest) -> Report {
        self.0.full_load.fetch_add(1, Ordering::SeqCst);
        *self.0.last_tables.lock().unwrap() =
            request.tables.iter().map(|t| t.to_string()).collect();
        done()
    }
}

fn done() -> Report {
    Report::of(Vec::new())
}

/// The server on its own runtime, and a client with a timeout (a hang fails the case).
struct Server {
    rt: tokio::runtime::Runtime,
    addr: SocketAddr,
    jobs: Arc<Counting>,
    client: reqwest::Client,
}

impl Server {
    fn start() -> Server {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let jobs = Arc::new(Counting::default());
        let addr = rt.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let jobs: Arc<dyn Jobs> = Arc::new(Shared(jobs.clone()));
            tokio::spawn(host::run(listener, jobs, std::future::pending()));
            addr
        });
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        Server {
            rt,
            addr,
            jobs,
            client,
        }
    }

    /// POSTs `body` to `/function`; (status, parsed JSON body or Null).
    fn post(&self, function: &str, body: Vec<u8>) -> (u16, Value) {
        self.rt.block_on(async {
            let rsp = self
                .client
                .post(format!("http://{}/{function}", self.addr))
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .expect("an answer in time (no hang, no dropped connection)");
            let status = rsp.status().as_u16();
            let bytes = rsp.bytes().await.expect("a whole body");
            (
                status,
                serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            )
        })
    }

    fn assert_alive(&self) {
        let status = self.rt.block_on(async {
            self.client
                .get(format!("http://{}/", self.addr))
                .send()
                .await
                .expect("GET / answers")
                .status()
        });
        assert_eq!(status.as_u16(), 200, "the server keeps serving");
    }
}

fn server() -> &'static Server {
    static SERVER: std::sync::OnceLock<Server> = std::sync::OnceLock::new();
    SERVER.get_or_init(Server::start)
}

fn timer_payload() -> Value {
    json!({
        "Data": {"timer": {
            "Schedule": {"AdjustForDST": true},
            "ScheduleStatus": {
                "Last": "2026-11-21T10:00:00.0000000+00:00",
                "Next": "2026-11-21T10:15:00+00:00",
                "LastUpdated": "2026-11-21T10:00:00.0012345+00:00"
            },
            "IsPastDue": false
        }},
        "Metadata": {"sys": {"MethodName": "IncrementalCopy", "UtcNow": "2026-11-21T10:15:00.0123456Z", "RandGuid": "x"}}
    })
}

fn http_payload(body: Value) -> Value {
    json!({
        "Data": {"req": {
            "Url": "http://localhost/api/FullLoad",
            "Method": "POST",
            "Query": {},
            "Headers": {"Content-Type": ["application/json"]},
            "Params": {},
            "Identities": [],
            "Body": body
        }},
        "Metadata": {"sys": {"MethodName": "FullLoad", "UtcNow": "2026-11-21T10:15:00Z"}}
    })
}

/// Arbitrary JSON, a few levels deep.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        odd_time().prop_map(Value::String),
        ".{0,20}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(".{0,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Timestamps a host could send and ones it should not.
fn odd_time() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("0001-01-01T00:00:00".to_string()),
        Just("0001-01-01T00:00:00+00:00".to_string()),
        Just("9999-12-31T23:59:59.9999999Z".to_string()),
        Just("+262143-12-31T23:59:59Z".to_string()),
        Just("-262143-01-01T00:00:00Z".to_string()),
        Just("2026-02-30T00:00:00Z".to_string()),
        Just("2026-11-21T24:00:00Z".to_string()),
        Just("2026-11-21T10:15:60Z".to_string()),
        Just("2026-11-21T10:15:00.1234567891234Z".to_string()),
        Just("2026-11-21T10:15:00+14:00".to_string()),
        Just("2026-11-21T10:15:00-12:00".to_string()),
        Just("2026-11-21T10:15:00+99:00".to_string()),
        Just("2026-11-21".to_string()),
        Just("".to_string()),
        Just(" ".to_string()),
        (0i64..=400_000_000_000i64).prop_map(|s| {
            chrono::DateTime::from_timestamp(s - 200_000_000_000, 0)
                .map(|t| t.to_rfc3339())
                .unwrap_or_default()
        }),
        "[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{1,9})?(Z|[+-][0-9]{2}:[0-9]{2})?",
    ]
}

/// A JSON path in a payload and how to break it.
#[derive(Debug, Clone)]
enum Edit {
    Remove,
    Replace(Value),
}

fn apply(root: &mut Value, path: &[&str], edit: &Edit) {
    let (last, parents) = path.split_last().unwrap();
    let mut node = root;
    for key in parents {
        node = match node.get_mut(*key) {
            Some(n) => n,
            None => return,
        };
    }
    if let Some(obj) = node.as_object_mut() {
        match edit {
            Edit::Remove => {
                obj.remove(*last);
            }
            Edit::Replace(v) => {
                obj.insert(last.to_string(), v.clone());
            }
        }
    }
}

const TIMER_PATHS: &[&[&str]] = &[
    &["Data"],
    &["Data", "timer"],
    &["Data", "timer", "ScheduleStatus"],
    &["Data", "timer", "ScheduleStatus", "Last"],
    &["Data", "timer", "ScheduleStatus", "Next"],
    &["Data", "timer", "ScheduleStatus", "LastUpdated"],
    &["Data", "timer", "IsPastDue"],
    &["Metadata"],
    &["Metadata", "sys"],
    &["Metadata", "sys", "UtcNow"],
    &["Metadata", "sys", "MethodName"],
    &["Metadata", "RetryContext"],
];

/// A `CopyTable` invocation; the message as an object (sent as its text when `as_text`).
fn queue_payload() -> Value {
    json!({
        "Data": {"message": {"table": "dbo.customers", "triggerTime": "2026-11-21T10:15:00Z", "isPastDue": false}},
        "Metadata": {
            "DequeueCount": 1,
            "ExpirationTime": "2026-11-28T10:15:01+00:00",
            "Id": "800ae4b3-bdd2-4c08-badd-f08e5a34b865",
            "InsertionTime": "2026-11-21T10:15:01+00:00",
            "NextVisibleTime": "2026-11-21T10:25:01+00:00",
            "PopReceipt": "AgAAAAMAAAAAAAAAAgtnj8x+1QE=",
            "sys": {"MethodName": "CopyTable", "UtcNow": "2026-11-21T10:15:01.2205399Z", "RandGuid": "x"}
        }
    })
}

const QUEUE_PATHS: &[&[&str]] = &[
    &["Data"],
    &["Data", "message"],
    &["Data", "message", "table"],
    &["Data", "message", "triggerTime"],
    &["Data", "message", "isPastDue"],
    &["Data", "message", "extra"],
    &["Metadata"],
    &["Metadata", "DequeueCount"],
    &["Metadata", "Id"],
    &["Metadata", "InsertionTime"],
    &["Metadata", "NextVisibleTime"],
    &["Metadata", "PopReceipt"],
];

const HTTP_PATHS: &[&[&str]] = &[
    &["Data"],
    &["Data", "req"],
    &["Data", "req", "Body"],
    &["Data", "req", "Url"],
    &["Data", "req", "Method"],
    &["Metadata", "sys", "UtcNow"],
];

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        1 => Just(Edit::Remove),
        4 => any_json().prop_map(Edit::Replace),
    ]
}

/// The invocation-level checks shared by both functions: a known status, a 400 names the
/// field, a 200 carries the envelope.
fn check_envelope(status: u16, body: &Value, path: &str) -> Result<(), TestCaseError> {
    check_envelope_any(status, body, &[path])
}

/// [`check_envelope`] where a 400 may name any of `paths` (two fields were broken).
fn check_envelope_any(status: u16, body: &Value, paths: &[&str]) -> Result<(), TestCaseError> {
    prop_assert!(
        matches!(status, 200 | 400 | 413 | 500),
        "unexpected status {status}: {body}"
    );
    if status == 400 {
        let log = body["Logs"][0].as_str().unwrap_or_default();
        prop_assert!(
            log.starts_with("malformed invocation: "),
            "400 without a message: {body}"
        );
        prop_assert!(
            !log_field(log).trim().is_empty(),
            "400 naming no field: {log}"
        );
        prop_assert!(
            paths.is_empty()
                || paths
                    .iter()
                    .any(|path| log.contains(path) || path.starts_with(log_field(log))),
            "400 does not name {paths:?}: {log}"
        );
    }
    Ok(())
}

/// The field a "malformed invocation: FIELD: …" message names.
fn log_field(log: &str) -> &str {
    log.trim_start_matches("malformed invocation: ")
        .split(':')
        .next()
        .unwrap_or_default()
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    /// IncrementalCopy: one field of a real payload removed or replaced by anything.
    #[test]
    fn timer_payload_fields(path in prop::sample::select(TIMER_PATHS), edit in edit()) {
        let s = server();
        let mut payload = timer_payload();
        apply(&mut payload, path, &edit);
        let before = s.jobs.incremental.load(Ordering::SeqCst);
        let (status, body) = s.post("IncrementalCopy", payload.to_string().into_bytes());
        let dotted = path.join(".");
        check_envelope(status, &body, &dotted)?;
        let ran = s.jobs.incremental.load(Ordering::SeqCst) > before;
        prop_assert_eq!(ran, status == 200, "a job runs exactly when the invocation is accepted: {}", body);
        // Definitely wrong types must be refused.
        let leaf_time = matches!(path.last(), Some(&"Last" | &"Next" | &"LastUpdated" | &"UtcNow"));
        if let Edit::Replace(v) = &edit {
            if leaf_time && (v.is_number() || v.is_boolean() || v.is_array() || v.is_object()) {
                prop_assert_eq!(status, 400, "{} = {} accepted", dotted, v);
            }
            if path.last() == Some(&"IsPastDue") && !(v.is_boolean() || v.is_null()) {
                prop_assert_eq!(status, 400, "{} = {} accepted", dotted, v);
            }
        }
        s.assert_alive();
    }

    /// CopyTable: one field of a real queue invocation (its message included, sent as an
    /// object or as its text, as the host does) removed or replaced by anything; a job runs
    /// exactly when it is accepted, and a 400 names the field.
    #[test]
    fn queue_payload_fields(path in prop::sample::select(QUEUE_PATHS), edit in edit(), as_text in any::<bool>()) {
        let s = server();
        let mut payload = queue_payload();
        apply(&mut payload, path, &edit);
        if as_text {
            if let Some(message) = payload.get("Data").and_then(|d| d.get("message")).filter(|m| m.is_object()).cloned() {
                payload["Data"]["message"] = Value::String(message.to_string());
            }
        }
        let before = s.jobs.copy_table.load(Ordering::SeqCst);
        let (status, body) = s.post("CopyTable", payload.to_string().into_bytes());
        check_envelope(status, &body, &path.join("."))?;
        let ran = s.jobs.copy_table.load(Ordering::SeqCst) > before;
        prop_assert_eq!(ran, status == 200, "a job runs exactly when the invocation is accepted: {}", body);
        if path.last() == Some(&"extra") && matches!(edit, Edit::Replace(_)) {
            prop_assert_eq!(status, 400, "an unknown message field is refused: {}", body);
        }
        s.assert_alive();
    }

    /// IncrementalCopy, FullLoad and CopyTable: arbitrary JSON and arbitrary bytes.
    #[test]
    fn arbitrary_bodies(json in any_json(), bytes in prop::collection::vec(any::<u8>(), 0..256), function in prop::sample::select(&["IncrementalCopy", "FullLoad", "CopyTable"][..])) {
        let s = server();
        for body in [json.to_string().into_bytes(), bytes.clone()] {
            let (status, reply) = s.post(function, body);
            check_envelope_any(status, &reply, &[])?;
        }
        s.assert_alive();
    }

    /// FullLoad: the request body (the caller's) fuzzed, including table names crafted for
    /// SQL injection; a bad one is answered 400 naming the field, and no job runs.
    #[test]
    fn full_load_request_bodies(body in full_load_body(), as_text in any::<bool>(), path in prop::sample::select(HTTP_PATHS), envelope_edit in prop::option::of(edit())) {
        let s = server();
        let body = if as_text { Value::String(body.to_string()) } else { body };
        let mut payload = http_payload(body.clone());
        let mut dotted = String::new();
        if let Some(edit) = &envelope_edit {
            apply(&mut payload, path, edit);
            dotted = path.join(".");
        }
        let before = s.jobs.full_load.load(Ordering::SeqCst);
        let (status, reply) = s.post("FullLoad", payload.to_string().into_bytes());
        // The host passes the caller's body as a string (or parsed JSON object); any other
        // JSON there is a malformed envelope (see host_contract.rs).
        let mut paths: Vec<&str> = Some(dotted.as_str()).filter(|d| !d.is_empty()).into_iter().collect();
        if !(body.is_string() || body.is_object() || body.is_null()) {
            paths.push("Data.req.Body");
        }
        check_envelope_any(status, &reply, &paths)?;
        prop_assert!(!(paths.is_empty() && status == 400), "a sound envelope refused: {}", reply);
        let ran = s.jobs.full_load.load(Ordering::SeqCst) > before;
        if status == 200 {
            let res = &reply["Outputs"]["res"];
            let code = res["statusCode"].as_u64().unwrap_or(0);
            prop_assert!(code == 200 || code == 400, "res {}", res);
            let inner: Value = serde_json::from_str(res["body"].as_str().unwrap_or("null")).unwrap_or(Value::Null);
            if code == 400 {
                prop_assert!(!ran, "a refused request ran a job");
                let field = inner["field"].as_str().unwrap_or_default();
                prop_assert!(!field.is_empty(), "no field named: {}", inner);
                prop_assert!(inner["error"].as_str().unwrap_or_default().starts_with(field));
            } else {
                prop_assert!(ran);
                // Whatever was accepted is a list of plain identifiers.
                for t in s.jobs.last_tables.lock().unwrap().iter() {
                    prop_assert!(t.chars().all(|c| c.is_alphanumeric() || "_$@#-.".contains(c)), "{} accepted", t);
                }
            }
        } else {
            prop_assert!(!ran);
        }
        s.assert_alive();
    }
}

/// Table names, some honest, some crafted for SQL injection.
fn table_name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("dbo.customers".to_string()),
        Just("dbo.customers; DROP TABLE dbo.customers--".to_string()),
        Just("dbo].[customers".to_string()),
        Just("dbo.cust'omers".to_string()),
        Just("dbo.customers/*".to_string()),
        Just("dbo.customers' OR '1'='1".to_string()),
        Just("dbo.[x]".to_string()),
        Just("a.b.c".to_string()),
        Just("customers".to_string()),
        Just("dbo.".to_string()),
        Just(format!("dbo.{}", "x".repeat(200))),
        Just("dbo.cu\u{0}stomers".to_string()),
        Just("dbo.customers\nGO".to_string()),
        "[a-z]{1,5}\\.[a-z_]{1,8}",
        ".{0,30}",
    ]
}

fn full_load_body() -> impl Strategy<Value = Value> {
    prop_oneof![
        prop::collection::vec(table_name(), 0..4)
            .prop_flat_map(|tables| (Just(tables), any_json()))
            .prop_map(|(tables, reset)| json!({"tables": tables, "reset": reset})),
        prop::collection::vec(table_name(), 0..3).prop_map(|t| json!({"tables": t})),
        any_json(),
        Just(json!({"tabels": ["dbo.customers"]})),
    ]
}

/// Bodies past the cap, nesting past the JSON parser's depth limit, invalid UTF-8: refused
/// with a message naming the body, the server unharmed.
#[test]
fn huge_deep_and_invalid_bodies_are_refused() {
    let s = server();
    let huge = vec![b' '; host::MAX_BODY_BYTES + 1];
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)).into_bytes();
    let deep_object = format!(
        "{{\"Data\":{{\"timer\":{}1{}}}}}",
        "{\"a\":".repeat(10_000),
        "}".repeat(10_000)
    )
    .into_bytes();
    let invalid_utf8 = b"{\"Data\":{\"timer\":\"\xff\xfe\"}}".to_vec();
    for function in ["IncrementalCopy", "FullLoad"] {
        for (body, want_status) in [
            (huge.clone(), 413),
            (deep.clone(), 400),
            (deep_object.clone(), 400),
            (invalid_utf8.clone(), 400),
        ] {
            let (status, reply) = s.post(function, body);
            assert_eq!(status, want_status, "{function}: {reply}");
            let log = reply["Logs"][0].as_str().unwrap_or_default();
            assert!(log.contains("body"), "{function}: {log}");
        }
    }
    s.assert_alive();
}

/// Valid settings for the checks below.
fn base_settings() -> HashMap<String, String> {
    [
        ("CDC_SQL_CONNECTION_STRING", "Server=tcp:db.example,1433;Database=db;User ID=u;Password=Secr3t-Passw0rd;Encrypt=true"),
        ("CDC_STORAGE_CONNECTION_STRING", "AccountName=acct;AccountKey=c2VjcmV0LWtleS1zZWNyZXQta2V5LXNlY3JldC1rZXk=;EndpointSuffix=core.windows.net"),
        ("CDC_TABLES", "dbo.customers"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// Every setting in `config::SETTINGS` with invalid values: the error names it. Settings the
/// handler does not validate (read by the host or the logger, which fall back loudly) are
/// listed, so a new setting cannot slip through unlisted.
#[test]
fn every_setting_refuses_invalid_values_naming_it() {
    assert!(Settings::from_map(&base_settings()).is_ok());
    let bad_values = [
        "-1",
        "0",
        "abc",
        "99999999999999999999",
        "1e3",
        "1.5",
        "dbo.x; DROP TABLE y--",
        "dbo].[x",
        "\u{0}",
        "UPPER-Case_",
        "http://not-https.example",
        "https://acct.blob.core.windows.net/?sv=2020&sig=abc",
        "AccountName=a",
        "Server=x",
        "* * *",
        "garbage=;;",
        "tcp:",
    ];
    // Not validated by Settings: the logger and the host read these.
    let unvalidated = [
        "RUST_LOG",
        "CDC_LOG_FORMAT",
        "FUNCTIONS_CUSTOMHANDLER_PORT",
        "AZURE_CLIENT_ID",
    ];
    let mut uncovered = Vec::new();
    for doc in SETTINGS {
        let mut named = 0;
        for bad in bad_values {
            let mut vars = base_settings();
            vars.insert(doc.name.to_string(), bad.to_string());
            if let Err(e) = Settings::from_map(&vars) {
                let text = e.to_string();
                // Settings that conflict with the base ones name either of the pair.
                assert!(
                    text.contains(doc.name),
                    "{}={bad:?} refused without naming it: {text}",
                    doc.name
                );
                if doc.secret {
                    assert!(
                        !text.contains(bad) || bad.len() < 4,
                        "{}: value echoed: {text}",
                        doc.name
                    );
                }
                named += 1;
            }
        }
        if named == 0 && !unvalidated.contains(&doc.name) {
            uncovered.push(doc.name);
        }
    }
    assert!(
        uncovered.is_empty(),
        "settings that accept every invalid value tried: {uncovered:?}"
    );
}

/// Table and capture-instance names crafted for SQL injection are refused by the settings
/// (naming CDC_TABLES / CDC_WATERMARK_TABLE), before a source exists to send SQL.
#[test]
fn injection_names_in_settings_are_refused() {
    let crafted = [
        "dbo.customers; DROP TABLE dbo.customers--",
        "dbo.customers' OR 1=1--",
        "dbo].[customers",
        "dbo.customers=dbo_customers'; EXEC xp_cmdshell 'dir'--",
        "dbo.customers=dbo_customers]",
        "dbo.customers=dbo customers",
        "dbo.customers=",
        "dbo.customers,dbo.x/*",
        "dbo.customers\nGO",
    ];
    for value in crafted {
        let mut vars = base_settings();
        vars.insert("CDC_TABLES".into(), value.into());
        let err = Settings::from_map(&vars).expect_err(value).to_string();
        assert!(err.contains("CDC_TABLES"), "{value}: {err}");
        if value.contains('=') {
            continue;
        }
        let mut vars = base_settings();
        vars.insert("CDC_WATERMARK_TABLE".into(), value.into());
        let err = Settings::from_map(&vars).expect_err(value).to_string();
        assert!(err.contains("CDC_WATERMARK_TABLE"), "{value}: {err}");
    }
}

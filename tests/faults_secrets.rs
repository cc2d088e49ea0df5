//! Guarantee 7, second half: secrets never reach a log, an error, a response or stdout/stderr.
//!
//! Each scenario runs the real `handler` binary (or, for a job failing against the blob
//! service, the jobs in process under a TRACE subscriber) with recognisable secrets — a SQL
//! password, a storage account key, a SAS token — in the settings, captures everything it
//! writes and every response body, and looks for the secrets in all of it.

mod common;

use std::io::Read;
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cdc_copy::config::StorageAccount;
use cdc_copy::report::Status;
use cdc_copy::sink::blob::BlobTarget;
use cdc_copy_testkit::model::CdcModel;

use common::azurite::{free_port, Azurite};
use common::cdc::{customer, start_time, Bench};

const PASSWORD: &str = "Pw-SECRET-7f3c9e1a";
/// Valid base64 (so it parses as a key) that is not the Azurite key: auth fails with 403.
const ACCOUNT_KEY: &str = "S0VZLVNFQ1JFVC0xMjM0NTY3ODkwLWFiY2RlZmdoaWprbG1ub3A=";
const SAS_SIG: &str = "sig-SECRET-TOKEN-4d2a";

/// The secrets and the distinctive parts of them a partial leak would show.
fn secrets() -> Vec<&'static str> {
    vec![
        PASSWORD,
        "SECRET-7f3c9e1a",
        ACCOUNT_KEY,
        &ACCOUNT_KEY[..24],
        SAS_SIG,
        "SECRET-TOKEN",
    ]
}

fn assert_clean(what: &str, text: &str) {
    for secret in secrets() {
        assert!(
            !text.contains(secret),
            "{what} contains the secret {secret:?}:\n{text}"
        );
    }
}

fn sql_connection_string(port: u16) -> String {
    format!(
        "Server=tcp:127.0.0.1,{port};Database=shop;User ID=cdc_reader;Password={PASSWORD};Encrypt=true;TrustServerCertificate=true;Connect Timeout=2"
    )
}

fn storage_connection_string(blob_port: u16) -> String {
    format!(
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={ACCOUNT_KEY};BlobEndpoint=http://127.0.0.1:{blob_port}/devstoreaccount1;"
    )
}

/// Good-looking settings with the secrets; SQL points at a closed port.
fn envs() -> Vec<(String, String)> {
    vec![
        (
            "CDC_SQL_CONNECTION_STRING".into(),
            sql_connection_string(free_port()),
        ),
        (
            "CDC_STORAGE_CONNECTION_STRING".into(),
            storage_connection_string(Azurite::shared().blob_port),
        ),
        ("CDC_TABLES".into(), "dbo.customers".into()),
        ("CDC_CONTAINER".into(), "secrets".into()),
        ("RUST_LOG".into(), "trace".into()),
        ("RUST_BACKTRACE".into(), "1".into()),
    ]
}

fn handler(args: &[&str], envs: &[(String, String)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_handler"));
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(envs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Runs a one-shot command; returns (exit code, stdout + stderr).
fn run(args: &[&str], envs: &[(String, String)]) -> (i32, String) {
    let out = handler(args, envs).output().expect("run handler");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// `handler check` and `handler incremental-copy` / `full-load` with a SQL server that is not
/// there and a wrong account key: they fail, saying why, without the secrets.
#[test]
fn operator_commands_fail_without_leaking() {
    let envs = envs();
    for args in [
        vec!["check"],
        vec!["incremental-copy", "--at", "2026-11-21T10:15:00Z"],
        vec!["full-load", "--table", "dbo.customers"],
    ] {
        let (code, text) = run(&args, &envs);
        assert_ne!(code, 0, "{args:?}: {text}");
        assert!(
            text.contains("SQL") || text.contains("sql") || text.contains("127.0.0.1"),
            "{args:?} says what failed: {text}"
        );
        assert!(
            text.contains("TRACE") || text.contains("DEBUG") || text.contains("INFO"),
            "{args:?}: logs captured at trace level: {text}"
        );
        assert_clean(&format!("handler {args:?}"), &text);
    }
    // `check` reports the blob auth failure (403) too.
    let (_, text) = run(&["check"], &envs);
    assert!(text.contains("403"), "{text}");
}

/// Settings errors where the secret is part of the bad value: the error names the setting,
/// never the value.
#[test]
fn settings_errors_do_not_echo_secret_values() {
    let cases: Vec<(&str, String)> = vec![
        (
            "CDC_SQL_CONNECTION_STRING",
            format!("Server=tcp:x,1433;User ID=u;Password={PASSWORD}"),
        ),
        (
            "CDC_SQL_CONNECTION_STRING",
            format!("Server=tcp:x,1433;Database=db;Password={PASSWORD};Encrypt=maybe"),
        ),
        (
            "CDC_SQL_CONNECTION_STRING",
            format!("Server=tcp:x,1433;Database=db;Password={PASSWORD};Bogus"),
        ),
        (
            "CDC_STORAGE_CONNECTION_STRING",
            format!("AccountName=a;AccountKey={PASSWORD}!!"),
        ),
        (
            "CDC_STORAGE_CONNECTION_STRING",
            format!("AccountName=a;SharedAccessSignature=sv=2024-01-01&{SAS_SIG}"),
        ),
        (
            "CDC_STORAGE_CONNECTION_STRING",
            format!("AccountName=a;AccountKey{ACCOUNT_KEY}"),
        ),
        (
            "CDC_STORAGE_ACCOUNT_URL",
            format!("https://acct.blob.core.windows.net/?sv=2024&{SAS_SIG}"),
        ),
    ];
    for (name, value) in cases {
        let mut envs: Vec<(String, String)> = envs()
            .into_iter()
            .filter(|(k, _)| k != name && !k.starts_with("CDC_STORAGE"))
            .collect();
        if !name.starts_with("CDC_STORAGE") {
            envs.push((
                "CDC_STORAGE_CONNECTION_STRING".into(),
                storage_connection_string(1),
            ));
        }
        envs.push((name.to_string(), value.clone()));
        let (code, text) = run(&["check"], &envs);
        assert_ne!(code, 0, "{name}={value}: {text}");
        assert!(text.contains(name), "{name}: the error names it: {text}");
        assert_clean(&format!("check with a bad {name}"), &text);
    }
}

/// `handler serve` with the secrets: invocations fail (SQL down) and their responses, logs,
/// stdout and stderr hold no secret; the same for a handler whose settings are invalid.
#[tokio::test]
async fn served_invocations_do_not_leak() {
    let good = envs();
    let mut bad = good.clone();
    bad.retain(|(k, _)| k != "CDC_SQL_CONNECTION_STRING");
    bad.push((
        "CDC_SQL_CONNECTION_STRING".into(),
        format!("Server=tcp:x,1;Password={PASSWORD}"),
    ));
    for envs in [good, bad] {
        let port = free_port();
        let dir = tempfile::tempdir().unwrap();
        let out_path = dir.path().join("out.log");
        let out = std::fs::File::create(&out_path).unwrap();
        let mut child = handler(&["serve", "--port", &port.to_string()], &envs)
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("start handler");
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "handler did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let mut bodies = String::new();
        let timer = serde_json::json!({
            "Data": {"timer": {"ScheduleStatus": {"Last": "0001-01-01T00:00:00", "Next": "2026-11-21T10:15:00Z"}, "IsPastDue": false}},
            "Metadata": {"sys": {"UtcNow": "2026-11-21T10:15:00Z"}}
        });
        let full = serde_json::json!({
            "Data": {"req": {"Method": "POST", "Body": "{\"tables\":[\"dbo.customers\"]}"}},
            "Metadata": {}
        });
        for (function, body) in [("IncrementalCopy", timer), ("FullLoad", full)] {
            let rsp = client
                .post(format!("http://127.0.0.1:{port}/{function}"))
                .json(&body)
                .send()
                .await
                .expect("an answer");
            let status = rsp.status();
            let text = rsp.text().await.unwrap();
            assert_eq!(status.as_u16(), 500, "{function} fails: {text}");
            bodies.push_str(&text);
        }
        let _ = child.kill();
        let _ = child.wait();
        let mut log = String::new();
        std::fs::File::open(&out_path)
            .unwrap()
            .read_to_string(&mut log)
            .unwrap();
        assert!(!log.is_empty());
        assert_clean("response bodies", &bodies);
        assert_clean("handler serve output", &log);
        assert!(!log.contains("panicked"), "{log}");
    }
}

/// A job failing against the blob service with a wrong account key, in process under a TRACE
/// subscriber (the SDK's and ours): the report and every log line are free of the key.
#[tokio::test(flavor = "current_thread")]
async fn a_blob_auth_failure_logs_no_key() {
    let buffer = Arc::new(Mutex::new(Vec::<u8>::new()));
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || Capture(writer.clone()))
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let mut bench = Bench::new(3, CdcModel::new(start_time()), &[]).await;
    assert_eq!(bench.full_load().await.status, Status::Done);
    bench.ctx.blobs = BlobTarget::new(
        &StorageAccount::from_connection_string(&storage_connection_string(
            Azurite::shared().blob_port,
        ))
        .unwrap(),
        &bench.ctx.settings.container,
    )
    .unwrap();
    bench.model.insert(&bench.table, customer(100, 1)).unwrap();
    bench.model.advance(chrono::Duration::minutes(15));
    let report = bench.incremental(bench.model.now()).await;
    assert_eq!(report.status, Status::Blocked, "definite: not retried");
    let logs = String::from_utf8_lossy(&buffer.lock().unwrap()).to_string();
    assert!(logs.contains("403"), "the failure is logged: {logs}");
    assert_clean("report", &format!("{report:?}"));
    assert_clean("trace logs", &logs);
    assert_clean("target debug", &format!("{:?}", bench.ctx.blobs));
    assert_clean("settings debug", &format!("{:?}", bench.ctx.settings));
}

struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

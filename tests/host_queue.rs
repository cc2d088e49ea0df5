//! The queue side of the host contract (issue 12): `CopyTable` (queue trigger) and the
//! `IncrementalCopy` timer's queue output.
//!
//! (a) In process: `host::run` with a [`Jobs`] double, to pin what each outcome answers —
//!     the status (non-2xx only for what a retry may fix), `Outputs.tables` with one message
//!     per table, `Outputs.poison` for a table that needs a person — and that a malformed
//!     queue invocation gets a 400 naming the field.
//! (b) The real binary, started as the host starts it, with no SQL settings, behind the
//!     host stand-in (`cdc_copy_testkit::queue`) and a real Azurite queue service: a message
//!     every instance fails is tried `maxDequeueCount` times, over two handler processes, and
//!     then sits in `cdc-copy-tables-poison`.

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use cdc_copy::cdc::TableRef;
use cdc_copy::config::SETTINGS;
use cdc_copy::host::{self, Delivery, FullLoadRequest, Jobs, TableMessage, TimerTrigger};
use cdc_copy::report::{Report, Status, TableResult};
use cdc_copy_testkit::azurite::{free_port, unique_container, AzuriteQueue};
use cdc_copy_testkit::queue::{Instance, QueueFunction, QueueHost};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

fn t(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap()
        .with_timezone(&Utc)
}

fn dbo(name: &str) -> TableRef {
    TableRef::parse(&format!("dbo.{name}")).unwrap()
}

/// A `CopyTable` invocation as the host posts it (the custom handlers page's shape).
fn queue_invocation(message: &str, dequeue_count: i64) -> Value {
    json!({
        "Data": {"message": message},
        "Metadata": {
            "DequeueCount": dequeue_count,
            "ExpirationTime": "2026-11-28T10:15:01+00:00",
            "Id": "800ae4b3-bdd2-4c08-badd-f08e5a34b865",
            "InsertionTime": "2026-11-21T10:15:01+00:00",
            "NextVisibleTime": "2026-11-21T10:25:01+00:00",
            "PopReceipt": "AgAAAAMAAAAAAAAAAgtnj8x+1QE=",
            "sys": {"MethodName": "CopyTable", "UtcNow": "2026-11-21T10:15:01.2205399Z", "RandGuid": "24ad4c06-24ad-4e5b-8294-3da9714877e9"}
        }
    })
}

const MESSAGE: &str =
    r#"{"table":"dbo.customers","triggerTime":"2026-11-21T10:15:00Z","isPastDue":false}"#;

const TIMER: &str = r#"{"Data":{"timer":{"Schedule":{"AdjustForDST":true},"ScheduleStatus":{"Last":"2026-11-21T10:00:00+00:00","Next":"2026-11-21T10:15:00+00:00","LastUpdated":"2026-11-21T10:00:00.0141+00:00"},"IsPastDue":false}},"Metadata":{"sys":{"MethodName":"IncrementalCopy","UtcNow":"2026-11-21T10:15:00.0209Z","RandGuid":"0d6a9d1e-5a7e-4c1c-9d59-8a0e8d3c6f21"}}}"#;

async fn post(base: &str, function: &str, body: String) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{base}/{function}"))
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await
        .expect("POST");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{status} {text:?}: {e}")),
    )
}

// ---------------------------------------------------------------------------------------
// (a) In process.

/// Answers `CopyTable` with the status it is given and records what it received; its timer
/// fans out like `CDC_FANOUT=queue`.
struct Double {
    status: Mutex<Status>,
    received: Mutex<Vec<(TableMessage, Delivery)>>,
}

#[async_trait]
impl Jobs for Double {
    async fn incremental_copy(&self, _trigger: TimerTrigger) -> Report {
        panic!("the timer function calls Jobs::timer")
    }

    async fn timer(&self, trigger: TimerTrigger) -> Report {
        let tables = [dbo("a"), dbo("b")];
        let mut report = Report::of(
            tables
                .iter()
                .map(|t| TableResult::new(t, Status::Done, "queued"))
                .collect(),
        );
        report.outputs.insert(
            "tables".into(),
            tables
                .iter()
                .map(|table| {
                    serde_json::to_value(TableMessage {
                        table: table.clone(),
                        trigger_time: trigger.trigger_time,
                        is_past_due: trigger.is_past_due,
                    })
                    .unwrap()
                })
                .collect(),
        );
        report
    }

    async fn copy_table(&self, message: TableMessage, delivery: Delivery) -> Report {
        self.received
            .lock()
            .unwrap()
            .push((message.clone(), delivery));
        let status = *self.status.lock().unwrap();
        let mut result = TableResult::new(&message.table, status, "x");
        if status >= Status::Conflict {
            result.error = Some("dbo.customers: changes were cleaned up".into());
        }
        Report::of(vec![result])
    }

    async fn full_load(&self, _request: FullLoadRequest) -> Report {
        Report::failed("not here")
    }
}

async fn serve(jobs: Arc<dyn Jobs>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(host::run(listener, jobs, futures::future::pending()));
    base
}

#[tokio::test]
async fn the_timer_answers_one_queue_message_per_table() {
    let jobs = Arc::new(Double {
        status: Mutex::new(Status::Done),
        received: Mutex::default(),
    });
    let base = serve(jobs).await;
    let (status, body) = post(&base, "IncrementalCopy", TIMER.to_string()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["Outputs"]["tables"],
        json!([
            {"table": "dbo.a", "triggerTime": "2026-11-21T10:15:00Z", "isPastDue": false},
            {"table": "dbo.b", "triggerTime": "2026-11-21T10:15:00Z", "isPastDue": false},
        ]),
        "{body}"
    );
    assert!(
        body["ReturnValue"].get("outputs").is_none(),
        "outputs are not part of ReturnValue: {body}"
    );
}

/// Each outcome's answer: retried (500, no output), done (200), or poisoned at once (200
/// with the message and its error in `Outputs.poison`).
#[tokio::test]
async fn copy_table_answers_by_whether_a_retry_may_help() {
    let jobs = Arc::new(Double {
        status: Mutex::new(Status::Done),
        received: Mutex::default(),
    });
    let base = serve(jobs.clone()).await;
    let cases = [
        (Status::Done, 200, false),
        (Status::Superseded, 200, false),
        (Status::InProgress, 200, false),
        (Status::Failed, 500, false),
        (Status::Blocked, 200, true),
        (Status::BadRequest, 200, true),
    ];
    for (i, (outcome, want_status, poisoned)) in cases.into_iter().enumerate() {
        *jobs.status.lock().unwrap() = outcome;
        let (status, body) = post(
            &base,
            "CopyTable",
            queue_invocation(MESSAGE, i as i64 + 1).to_string(),
        )
        .await;
        assert_eq!(status, want_status, "{outcome:?}: {body}");
        let poison = &body["Outputs"]["poison"];
        assert_eq!(poison.is_array(), poisoned, "{outcome:?}: {body}");
        if poisoned {
            let item = &poison[0];
            assert_eq!(item["message"]["table"], "dbo.customers", "{body}");
            assert_eq!(item["dequeueCount"], i as i64 + 1, "{body}");
            assert!(
                item["error"].as_str().unwrap().contains("cleaned up"),
                "{body}"
            );
        }
    }
    let received = jobs.received.lock().unwrap().clone();
    assert_eq!(received.len(), 6);
    assert_eq!(
        received[0].0,
        TableMessage {
            table: TableRef::parse("dbo.customers").unwrap(),
            trigger_time: t("2026-11-21T10:15:00Z"),
            is_past_due: false,
        }
    );
    assert_eq!(
        received
            .iter()
            .map(|(_, d)| d.dequeue_count)
            .collect::<Vec<_>>(),
        [1, 2, 3, 4, 5, 6]
    );
    assert_eq!(
        received[0].1.id.as_deref(),
        Some("800ae4b3-bdd2-4c08-badd-f08e5a34b865")
    );
}

#[tokio::test]
async fn malformed_queue_invocations_get_400_naming_the_field() {
    let jobs = Arc::new(Double {
        status: Mutex::new(Status::Done),
        received: Mutex::default(),
    });
    let base = serve(jobs.clone()).await;
    let cases = [
        ("{not json".to_string(), "body"),
        (json!({"Data": {}}).to_string(), "Data.message"),
        (
            queue_invocation(
                "{\"table\":\"customers\",\"triggerTime\":\"2026-11-21T10:15:00Z\"}",
                1,
            )
            .to_string(),
            "Data.message.table",
        ),
        (
            queue_invocation("{\"table\":\"dbo.a\"}", 1).to_string(),
            "Data.message",
        ),
        (
            {
                let mut v = queue_invocation(MESSAGE, 1);
                v["Metadata"]["DequeueCount"] = json!("2");
                v.to_string()
            },
            "Metadata.DequeueCount",
        ),
    ];
    for (body, field) in cases {
        let (status, answer) = post(&base, "CopyTable", body.clone()).await;
        assert_eq!(status, 400, "{body}: {answer}");
        let logs = answer["Logs"].to_string();
        assert!(logs.contains(field), "{body}: {answer}");
        assert_eq!(answer["Outputs"], json!({}), "{answer}");
    }
    assert!(jobs.received.lock().unwrap().is_empty());
    // The server still serves after them.
    let (status, _) = post(&base, "CopyTable", queue_invocation(MESSAGE, 1).to_string()).await;
    assert_eq!(status, 200);
}

// ---------------------------------------------------------------------------------------
// (b) The real binary behind the host stand-in.

/// The handler binary with no CDC settings, listening where the host tells it.
fn start_handler() -> (Child, u16) {
    let port = free_port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_handler"));
    for s in SETTINGS {
        cmd.env_remove(s.name);
    }
    let mut child = cmd
        .env("FUNCTIONS_CUSTOMHANDLER_PORT", port.to_string())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn handler");
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(exit)) = child.try_wait() {
            let mut stderr = String::new();
            child
                .stderr
                .take()
                .map(|mut e| e.read_to_string(&mut stderr));
            panic!("handler exited with {exit}: {stderr}");
        }
        assert!(started.elapsed() < Duration::from_secs(10), "not ready");
        std::thread::sleep(Duration::from_millis(5));
    }
    (child, port)
}

#[tokio::test]
async fn a_message_every_instance_fails_is_tried_max_times_then_poisoned() {
    let azurite = AzuriteQueue::shared();
    let queue = unique_container("tables");
    let function = QueueFunction {
        name: "CopyTable".into(),
        queue: queue.clone(),
        binding: "message".into(),
        outputs: [("poison".to_string(), format!("{queue}-poison"))].into(),
        max_dequeue_count: 3,
        // A failed message is visible again at once (Update Message, visibility 0).
        retry_after: Duration::ZERO,
        lease: Duration::from_secs(30),
    };
    let standin = QueueHost::new(azurite.client(), function.clone());
    standin.create_queues().await.unwrap();
    standin.client.put(&queue, MESSAGE).await.unwrap();
    let (mut a, port_a) = start_handler();
    let (mut b, port_b) = start_handler();
    let instances = [
        Instance::new(format!("http://127.0.0.1:{port_a}")),
        Instance::new(format!("http://127.0.0.1:{port_b}")),
    ];
    let poll = Duration::from_millis(20);
    let (fa, fb) = tokio::join!(
        standin.listen(&instances[0], poll),
        standin.listen(&instances[1], poll)
    );
    let _ = a.kill();
    let _ = b.kill();
    let _ = a.wait();
    let _ = b.wait();
    println!("instance a: {fa:?}\ninstance b: {fb:?}");
    assert_eq!(fa.invocations + fb.invocations, 3, "maxDequeueCount tries");
    assert_eq!(fa.succeeded + fb.succeeded, 0);
    assert_eq!(fa.poisoned + fb.poisoned, 1);
    let poisoned = standin.client.peek(&function.poison_queue()).await.unwrap();
    assert_eq!(poisoned, [MESSAGE], "the host moves the message as it was");
    assert_eq!(standin.client.count(&queue).await.unwrap(), 0);
}

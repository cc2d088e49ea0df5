//! A split full load through the host contract and the queue (issue 12): `POST /FullLoad`
//! with `CDC_FANOUT=queue` answers 202 with one `cdc-copy-ranges` message per key range, and
//! the host stand-in (`cdc_copy_testkit::queue`) delivers them over a real Azurite queue to
//! three handler instances serving `LoadRange`, each with its own jobs context and sessions.
//! A duplicate message is in the mix (the re-sent message of a range whose budget ran out
//! is `jobs_parload::a_range_out_of_budget_sends_its_message_again`).
//! The instances are `host::run` servers in this process: the source is the in-memory model,
//! which a child process cannot reach (the live suite covers the real server).

mod common;

use std::sync::Arc;
use std::time::Duration;

use cdc_copy::cdc::TableState;
use cdc_copy::host::{self, Jobs};
use cdc_copy::jobs::Runner;
use cdc_copy_testkit::azurite::{unique_container, AzuriteQueue};
use cdc_copy_testkit::model::CdcModel;
use cdc_copy_testkit::queue::{Instance, QueueFunction, QueueHost};
use serde_json::{json, Value};

use common::cdc::{start_time, Bench};

fn full_load_invocation() -> String {
    json!({
        "Data": {"req": {
            "Url": "https://cdc-copy.azurewebsites.net/api/FullLoad",
            "Method": "POST",
            "Query": {},
            "Headers": {"Content-Type": ["application/json"]},
            "Params": {},
            "Body": "",
        }},
        "Metadata": {"sys": {"MethodName": "FullLoad", "UtcNow": "2026-11-21T10:20:00.5Z", "RandGuid": "9b0c7a4e-0000-4000-8000-00000000000a"}},
    })
    .to_string()
}

async fn serve(jobs: Arc<dyn Jobs>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(host::run(listener, jobs, futures::future::pending()));
    base
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_load_ranges_go_through_the_queue_to_three_instances() {
    let queue = unique_container("ranges");
    let bench = Bench::new(
        3_000,
        CdcModel::new(start_time()),
        &[
            ("CDC_FULL_LOAD_RANGES", "4"),
            ("CDC_FULL_LOAD_RANGE_MIN_ROWS", "100"),
            ("CDC_FULL_LOAD_PART_ROWS", "200"),
            ("CDC_FANOUT", "queue"),
        ],
    )
    .await;
    // Each instance: its own jobs (context, sessions) over the same model and container.
    let mut bases = Vec::new();
    for _ in 0..3 {
        let jobs = Runner::new(
            bench.ctx.settings.clone(),
            bench.ctx.source.clone(),
            bench.ctx.blobs.clone(),
        );
        bases.push(serve(Arc::new(jobs)).await);
    }

    let response: Value = reqwest::Client::new()
        .post(format!("{}/FullLoad", bases[0]))
        .header("Content-Type", "application/json")
        .body(full_load_invocation())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(response["Outputs"]["res"]["statusCode"], 202, "{response}");
    let messages = response["Outputs"]["ranges"]
        .as_array()
        .unwrap_or_else(|| panic!("no ranges output: {response}"))
        .clone();
    assert_eq!(messages.len(), 4, "{response}");
    bench.ctx.ensure_container().await.unwrap();
    assert!(
        bench.blobs("dbo/customers/full/").await.is_empty(),
        "FullLoad only plans and queues"
    );

    let azurite = AzuriteQueue::shared();
    let function = QueueFunction {
        name: "LoadRange".into(),
        queue: queue.clone(),
        binding: "message".into(),
        // LoadRange/function.json: its `ranges` output is its own trigger queue.
        outputs: [("ranges".to_string(), queue.clone())].into(),
        max_dequeue_count: 5,
        retry_after: Duration::ZERO,
        lease: Duration::from_secs(30),
    };
    let standin = QueueHost::new(azurite.client(), function.clone());
    standin.create_queues().await.unwrap();
    for message in &messages {
        standin
            .client
            .put(&queue, &message.to_string())
            .await
            .unwrap();
    }
    // A duplicate delivery of range 1.
    standin
        .client
        .put(&queue, &messages[1].to_string())
        .await
        .unwrap();

    let instances: Vec<Instance> = bases.iter().map(Instance::new).collect();
    let poll = Duration::from_millis(20);
    let figures =
        futures::future::join_all(instances.iter().map(|i| standin.listen(i, poll))).await;
    for (i, f) in figures.iter().enumerate() {
        println!("instance {i}: {f:?}");
    }
    let invocations: u64 = figures.iter().map(|f| f.invocations).sum();
    assert!(invocations >= 5, "{figures:?}");
    assert!(
        figures.iter().all(|f| f.failed == 0 && f.poisoned == 0),
        "{figures:?}"
    );
    assert_eq!(
        standin
            .client
            .count(&function.poison_queue())
            .await
            .unwrap(),
        0
    );

    let wm = bench.watermark();
    assert!(matches!(wm.state, TableState::Ready), "{:?}", wm.state);
    assert_eq!(wm.rows_copied, 3_000);
    bench.assert_consistent("ranges through the queue").await;
    let parts = bench.blobs("dbo/customers/full/").await;
    assert!(parts.iter().all(|p| p.contains("/range-")), "{parts:?}");
    println!(
        "4 ranges, {} parts, {invocations} LoadRange invocations over 3 instances (1 duplicate message); 3000 rows, lost = 0, duplicated = 0",
        parts.len()
    );
}

/// A `LoadRange` message that is not a range message is the host's problem: 400 naming the
/// field, nothing run.
#[tokio::test]
async fn a_malformed_range_message_gets_400_naming_the_field() {
    struct Never;
    #[async_trait::async_trait]
    impl Jobs for Never {
        async fn incremental_copy(&self, _t: host::TimerTrigger) -> cdc_copy::report::Report {
            unreachable!()
        }
        async fn full_load(&self, _r: host::FullLoadRequest) -> cdc_copy::report::Report {
            unreachable!()
        }
    }
    let base = serve(Arc::new(Never)).await;
    let cases = [
        (r#"{"table":"dbo.customers","loadId":"x-r4"}"#, "range"),
        (
            r#"{"table":"dbo.customers","loadId":"x-r4","range":-1}"#,
            "Data.message.range",
        ),
        (
            r#"{"table":"customers","loadId":"x-r4","range":1}"#,
            "Data.message.table",
        ),
        (
            r#"{"table":"dbo.customers","loadId":"x-r4","range":1,"extra":1}"#,
            "extra",
        ),
    ];
    for (message, field) in cases {
        let body = json!({
            "Data": {"message": message},
            "Metadata": {"DequeueCount": 1, "Id": "m1", "sys": {"MethodName": "LoadRange", "UtcNow": "2026-11-21T10:20:00Z", "RandGuid": "9b0c7a4e-0000-4000-8000-00000000000b"}},
        });
        let response = reqwest::Client::new()
            .post(format!("{base}/LoadRange"))
            .header("Content-Type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        assert_eq!(status, 400, "{message}: {text}");
        assert!(text.contains(field), "{message}: {text}");
    }
}

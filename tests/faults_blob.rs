//! Guarantees 1–4 when Blob Storage misbehaves: the jobs write through a fault-injecting proxy
//! in front of a real Azurite (tests/common/proxy.rs) — error statuses, slow answers, dropped
//! connections, corrupted and truncated bodies — and the replay oracle checks the container
//! directly (not through the proxy) after every invocation. Also the SQL side dropping the
//! connection mid-stream.
//!
//! The blob client's retry policy is shortened (`BlobTarget::with_retry`) so outages that
//! exhaust it take milliseconds. Tries are counted in the proxy's request log, not timed.

mod common;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use cdc_copy::config::StorageAccount;
use cdc_copy::host::TimerTrigger;
use cdc_copy::jobs::{self, Context};
use cdc_copy::report::{Report, Status};
use cdc_copy::sink::blob::BlobTarget;
use cdc_copy::sink::retry::RetryPolicy;
use cdc_copy_testkit::faults::{Fault as SourceFault, Method};
use cdc_copy_testkit::model::CdcModel;

use common::azurite::Azurite;
use common::cdc::{customer, start_time, Bench, WatermarkExt};
use common::ledger::Ledger;
use common::proxy::{Fault, Proxy, Rule};

fn short_retry() -> RetryPolicy {
    RetryPolicy {
        max_tries: 4,
        initial_delay: Duration::from_millis(40),
        max_delay: Duration::from_millis(200),
        try_timeout: Duration::from_millis(400),
    }
}

/// The bench (direct to Azurite, for the oracle), the proxy, and a job context whose blob
/// target goes through the proxy.
struct Rig {
    bench: Bench,
    proxy: Proxy,
    job: Context,
    ledger: Ledger,
    next_id: i64,
}

impl Rig {
    async fn new() -> Rig {
        let mut bench = Bench::new(10, CdcModel::new(start_time()), &[]).await;
        let mut settings = (*bench.ctx.settings).clone();
        settings.block_size = 256;
        bench.ctx.settings = Arc::new(settings);
        assert_eq!(bench.full_load().await.status, Status::Done);
        let mut ledger = Ledger::new();
        ledger.check(&bench, "after the full load").await;
        let proxy = Proxy::start(Azurite::shared().blob_port).await;
        let mut job = bench.ctx.clone();
        job.blobs = proxied(
            &proxy,
            &bench.ctx.settings.container,
            &proxy.connection_string(),
        );
        Rig {
            bench,
            proxy,
            job,
            ledger,
            next_id: 100,
        }
    }

    /// `rows` inserts (several blocks of 256 bytes), then 15 minutes; returns the trigger.
    fn changes(&mut self, rows: i64) -> DateTime<Utc> {
        for _ in 0..rows {
            self.bench
                .model
                .insert(&self.bench.table, customer(self.next_id, 1))
                .unwrap();
            self.next_id += 1;
        }
        self.bench.model.advance(chrono::Duration::minutes(15));
        self.bench.model.now()
    }

    async fn run(&mut self, at: DateTime<Utc>, context: &str) -> Report {
        let report = jobs::incremental::run(
            &self.job,
            &TimerTrigger {
                trigger_time: at,
                last: None,
                is_past_due: false,
            },
        )
        .await;
        self.ledger.check(&self.bench, context).await;
        report
    }
}

fn proxied(proxy: &Proxy, container: &str, connection_string: &str) -> BlobTarget {
    let _ = proxy;
    BlobTarget::new(
        &StorageAccount::from_connection_string(connection_string).unwrap(),
        container,
    )
    .unwrap()
    .with_retry(short_retry())
}

/// Tries per block ID in the proxy's log (several blocks are in flight at once).
fn tries_per_block(proxy: &Proxy) -> std::collections::HashMap<String, u32> {
    let mut tries = std::collections::HashMap::new();
    for put in proxy.put_blocks() {
        let id = put.uri.split("blockid=").nth(1).unwrap_or_default();
        *tries
            .entry(id.split('&').next().unwrap_or(id).to_string())
            .or_default() += 1;
    }
    tries
}

fn error_of(report: &Report) -> String {
    report.return_value()["tables"][0]["error"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Guarantees 2 and 3 in an outage: every Put Block answers 503. The blob client tries each
/// request `max_tries` times with growing, jittered waits, then the invocation fails with the
/// operation, the blob and the status; the watermark has not advanced, nothing is visible;
/// once the outage is over the retried trigger completes the window.
#[tokio::test]
async fn an_outage_exhausts_bounded_retries_then_a_retry_completes_the_window() {
    let mut rig = Rig::new().await;
    let trigger = rig.changes(12);
    let before = rig.bench.watermark();
    rig.proxy.add(Rule::put_block(Fault::Status(503), 1000));
    let report = rig.run(trigger, "during the outage").await;
    assert_eq!(report.status, Status::Failed);
    let error = error_of(&report);
    assert!(
        error.contains("put block") && error.contains("HTTP 503") && error.contains("ServerBusy"),
        "{error}"
    );
    assert_eq!(report.return_value()["tables"][0]["transient"], true);

    // Bounded: several blocks are in flight at once; none was tried more than max_tries
    // times, and the one that failed the window exactly max_tries (the waits between tries
    // are the pure schedule unit-tested in `sink::retry`).
    let tries = tries_per_block(&rig.proxy);
    assert_eq!(
        tries.values().max(),
        Some(&short_retry().max_tries),
        "{tries:?}"
    );

    // The watermark's position did not move: the failure surfaced while the window streamed
    // (nothing recorded) or at its end, with the window recorded for the retry (several
    // blocks in flight can all still be trying when the stream ends); nothing is visible.
    let wm = rig.bench.watermark();
    assert_eq!(
        (wm.last_lsn, wm.last_window_end),
        (before.last_lsn, before.last_window_end)
    );
    assert!(
        rig.bench.incremental_blobs().await.is_empty(),
        "nothing visible"
    );

    rig.proxy.heal();
    let retry = rig.run(trigger, "the host's retry").await;
    assert_eq!(retry.status, Status::Done, "{:?}", retry.logs());
    let name = rig
        .bench
        .ctx
        .settings
        .path_template
        .render(&rig.bench.table, trigger);
    assert_eq!(
        rig.bench.incremental_blobs().await,
        vec![name],
        "the same window, same name"
    );
    assert_eq!(rig.bench.watermark().last_window_end, trigger);
    assert_eq!(rig.ledger.figures.change_rows, 12);
}

/// Guarantees 1 and 3 at the commit: the window is recorded before its block list is
/// committed, so an outage of Put Block List leaves the recorded window, nothing visible and
/// the watermark's LSN where it was; the host's retry commits that window under its name.
#[tokio::test]
async fn a_commit_outage_leaves_the_window_recorded_for_the_retry() {
    let mut rig = Rig::new().await;
    let trigger = rig.changes(12);
    let before = rig.bench.watermark();
    rig.proxy
        .add(Rule::put_block_list(Fault::Status(503), 1000));
    let report = rig.run(trigger, "commit outage").await;
    assert_eq!(report.status, Status::Failed);
    assert!(
        error_of(&report).contains("put block list"),
        "{}",
        error_of(&report)
    );
    let wm = rig.bench.watermark();
    assert_eq!(
        (wm.last_lsn, wm.last_window_end),
        (before.last_lsn, before.last_window_end)
    );
    let pending = wm.pending().cloned().expect("recorded before the commit");
    assert!(
        rig.bench.incremental_blobs().await.is_empty(),
        "nothing visible"
    );

    rig.proxy.heal();
    let retry = rig.run(trigger, "the host's retry").await;
    assert_eq!(retry.status, Status::Done, "{:?}", retry.logs());
    assert_eq!(rig.bench.incremental_blobs().await, vec![pending.blob]);
    assert_eq!(rig.bench.watermark().last_window_end, trigger);
    assert_eq!(rig.ledger.figures.change_rows, 12);
}

/// Throttling (429) and server errors (500, 503) within the retry budget are absorbed: the
/// invocation succeeds, each fault cost one more try.
#[tokio::test]
async fn throttling_and_server_errors_within_the_budget_are_absorbed() {
    let mut rig = Rig::new().await;
    let trigger = rig.changes(8);
    rig.proxy.add(Rule::put_block(Fault::Status(429), 2));
    rig.proxy.add(Rule::put_block(Fault::Status(500), 1));
    rig.proxy.add(Rule::put_block_list(Fault::Status(503), 2));
    let report = rig.run(trigger, "throttled").await;
    assert_eq!(report.status, Status::Done, "{:?}", report.logs());
    assert_eq!(rig.proxy.faults_applied(), 5);
    assert_eq!(rig.bench.incremental_blobs().await.len(), 1);
    assert_eq!(rig.ledger.figures.change_rows, 8);
}

/// Slow answers past the per-try timeout are cut off and retried; the late requests still
/// reach the service (a block staged twice, a block list committed twice) and change nothing:
/// the blob is the same bytes (the ledger compares every commit of a name).
#[tokio::test]
async fn slow_answers_are_cut_off_and_retried_idempotently() {
    let mut rig = Rig::new().await;
    let trigger = rig.changes(8);
    rig.proxy
        .add(Rule::put_block(Fault::Delay(Duration::from_millis(700)), 1));
    rig.proxy.add(Rule::put_block_list(
        Fault::Delay(Duration::from_millis(700)),
        1,
    ));
    let report = rig.run(trigger, "slow").await;
    assert_eq!(report.status, Status::Done, "{:?}", report.logs());
    assert_eq!(rig.proxy.requests("comp=blocklist").len(), 2);
    // Let the late commit land (the proxy records its answer), then check again: still one
    // blob, same bytes.
    while rig
        .proxy
        .requests("comp=blocklist")
        .iter()
        .any(|seen| seen.status.is_none())
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    rig.ledger.check(&rig.bench, "after the late commit").await;
    assert_eq!(rig.bench.incremental_blobs().await.len(), 1);
}

/// Dropped connections: before the request reached the service, and after the commit took
/// effect with its reply lost. Both retried; the second commit writes the same blob again.
#[tokio::test]
async fn dropped_connections_are_retried() {
    let mut rig = Rig::new().await;
    let trigger = rig.changes(8);
    rig.proxy.add(Rule::put_block(Fault::Drop, 2));
    rig.proxy
        .add(Rule::put_block_list(Fault::DropAfterForward, 1));
    let report = rig.run(trigger, "dropped").await;
    assert_eq!(report.status, Status::Done, "{:?}", report.logs());
    assert_eq!(rig.proxy.faults_applied(), 3);
    assert_eq!(rig.proxy.requests("comp=blocklist").len(), 2);
    assert_eq!(rig.bench.incremental_blobs().await.len(), 1);
}

/// A block corrupted on the way to the service is refused by its Content-MD5 (nothing
/// committed, nothing visible), and a corrupted acknowledgement (a different MD5 echoed) is
/// caught and the block staged again.
#[tokio::test]
async fn corrupted_blocks_and_acknowledgements_are_detected() {
    let mut rig = Rig::new().await;
    let trigger = rig.changes(8);
    rig.proxy.add(Rule::put_block(Fault::CorruptRequestBody, 1));
    let report = rig.run(trigger, "corrupted block").await;
    let rejected = rig
        .proxy
        .log()
        .into_iter()
        .find(|s| s.fault == Some(Fault::CorruptRequestBody))
        .expect("a corrupted block");
    assert_eq!(rejected.status, Some(400), "the service refused it");
    if report.status != Status::Done {
        let error = error_of(&report);
        assert!(error.contains("Md5Mismatch"), "{error}");
        assert!(rig.bench.incremental_blobs().await.is_empty());
        let retry = rig.run(trigger, "after the corrupted block").await;
        assert_eq!(retry.status, Status::Done, "{:?}", retry.logs());
    }
    assert_eq!(rig.bench.incremental_blobs().await.len(), 1);

    let trigger = rig.changes(8);
    rig.proxy.clear_log();
    rig.proxy.add(Rule::put_block(
        Fault::CorruptResponseHeader("content-md5"),
        1,
    ));
    let report = rig.run(trigger, "corrupted acknowledgement").await;
    assert_eq!(report.status, Status::Done, "{:?}", report.logs());
    assert_eq!(rig.proxy.faults_applied(), 1);
    assert_eq!(rig.bench.incremental_blobs().await.len(), 2);
    assert_eq!(rig.ledger.figures.change_rows, 16);
}

/// Reads: a truncated or corrupted download is detected (length, and the Content-MD5 the
/// writer commits with every blob) and retried; a read that never gets good bytes fails
/// saying so instead of returning them.
#[tokio::test]
async fn truncated_and_corrupted_downloads_are_detected() {
    let mut rig = Rig::new().await;
    let trigger = rig.changes(10);
    assert_eq!(rig.run(trigger, "a window").await.status, Status::Done);
    let name = rig.bench.incremental_blobs().await.remove(0);
    let good = rig.bench.read(&name).await;
    let through = rig.job.blobs.clone();

    rig.proxy.add(Rule::new(
        Some("GET"),
        "incremental",
        Fault::TruncateResponseBody,
        1,
    ));
    assert_eq!(through.read(&name).await.unwrap().unwrap().to_vec(), good);
    rig.proxy.add(Rule::new(
        Some("GET"),
        "incremental",
        Fault::CorruptResponseBody,
        1,
    ));
    assert_eq!(through.read(&name).await.unwrap().unwrap().to_vec(), good);
    rig.proxy.add(Rule::new(
        Some("GET"),
        "comp=list",
        Fault::TruncateResponseBody,
        1,
    ));
    // The load's part, the window and the table's schema document.
    assert_eq!(through.list("dbo/").await.unwrap().len(), 3);
    assert_eq!(rig.proxy.faults_applied(), 3);

    rig.proxy.add(Rule::new(
        Some("GET"),
        "incremental",
        Fault::CorruptResponseBody,
        100,
    ));
    let err = through.read(&name).await.unwrap_err().to_string();
    assert!(err.contains("Content-MD5"), "{err}");
}

/// The SQL connection dropped mid-stream (after several blocks were staged): the invocation
/// fails as transient, nothing is visible, the watermark is untouched (the window is
/// recorded only once it has streamed whole), and the next run copies everything from the
/// watermark on, the staged blocks of the failed attempt never committed.
#[tokio::test]
async fn a_sql_connection_dropped_mid_stream_holds_the_window() {
    let mut rig = Rig::new().await;
    // One block in flight: each block waits for the one before it, so blocks are surely
    // staged before the stream fails (with more, the failure may abort them on the way).
    rig.job.blobs = rig.job.blobs.clone().with_blocks_in_flight(1);
    let first = rig.changes(12);
    let before = rig.bench.watermark();
    rig.bench
        .faults
        .arm(Method::NetChanges, SourceFault::MidStream(9));
    let report = rig.run(first, "dropped mid-stream").await;
    assert_eq!(report.status, Status::Failed);
    assert_eq!(report.return_value()["tables"][0]["transient"], true);
    assert!(rig.proxy.put_blocks().len() >= 2, "blocks were staged");
    assert!(rig.bench.incremental_blobs().await.is_empty());
    // The stream comes before the window is recorded: the watermark holds still, whole.
    assert_eq!(
        rig.bench.watermark(),
        before,
        "the watermark holds the window's start"
    );

    let second = rig.changes(3);
    let report = rig.run(second, "next timer run").await;
    assert_eq!(report.status, Status::Done, "{:?}", report.logs());
    let blobs = rig.bench.incremental_blobs().await;
    assert_eq!(
        blobs.len(),
        1,
        "the first window's staged blocks never became a blob"
    );
    let settings = &rig.bench.ctx.settings;
    assert_eq!(
        blobs[0],
        settings.path_template.render(&rig.bench.table, second),
        "one window from the watermark to the next trigger"
    );
    assert_eq!(rig.ledger.figures.change_rows, 15);
}

/// A wrong account key is definite: one try, no retries, a 403 naming the operation and the
/// blob — and not the key.
#[tokio::test]
async fn a_wrong_account_key_fails_at_once_without_leaking_it() {
    let mut rig = Rig::new().await;
    let wrong_key = "V3JvbmdLZXlXcm9uZ0tleVdyb25nS2V5V3JvbmdLZXk=";
    let cs = format!(
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={wrong_key};BlobEndpoint={}",
        rig.proxy.blob_endpoint()
    );
    rig.job.blobs = proxied(&rig.proxy, &rig.bench.ctx.settings.container, &cs);
    let trigger = rig.changes(3);
    let report = rig.run(trigger, "wrong key").await;
    assert_eq!(
        report.status,
        Status::Blocked,
        "definite: not retried by the host"
    );
    let error = error_of(&report);
    assert!(
        error.contains("HTTP 403")
            && (error.contains("AuthenticationFailed") || error.contains("AuthorizationFailure")),
        "{error}"
    );
    assert_eq!(report.return_value()["tables"][0]["transient"], false);
    assert!(!format!("{report:?}").contains(wrong_key));
    // Every request (a block in flight, the schema document's listing before the commit) is
    // refused once and never tried again.
    let requests = rig.proxy.log();
    let mut tries = std::collections::HashMap::new();
    for r in &requests {
        assert_eq!(r.status, Some(403), "{r:?}");
        *tries.entry((&r.method, &r.uri)).or_insert(0) += 1;
    }
    assert!(
        !tries.is_empty() && tries.values().all(|&n| n == 1),
        "no retries: {tries:?}"
    );
}

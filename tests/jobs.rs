//! The jobs against the in-memory CDC model and a real Azurite, checked by replaying the
//! blobs (tests/common/cdc.rs). Each test names the guarantee it proves, numbered as in
//! docs/guarantees.md.

mod common;

use chrono::{DateTime, Duration, Utc};
use rand::rngs::StdRng;
use rand::SeedableRng;

use cdc_copy::cdc::Value;
use cdc_copy::report::Status;
use cdc_copy_testkit::faults::{Fault, Method};
use cdc_copy_testkit::model::{CdcModel, FoldedScanTimes};

use common::cdc::{customer, random_dml, start_time, Bench, WatermarkExt};
use common::ledger::Ledger;
use common::traces::Captured;

/// Guarantees 1, 3 and 4: full load, then 40 windows of random DML; after every run the blobs
/// replay to the source as of the watermark; empty windows write no blob.
#[tokio::test]
async fn full_load_then_random_windows_replay_to_the_source() {
    let bench = Bench::new(50, CdcModel::new(start_time()), &[]).await;
    assert_eq!(bench.full_load().await.status, Status::Done);
    bench.assert_consistent("after the full load").await;
    let mut rng = StdRng::seed_from_u64(7);
    let mut next_id = 1000;
    let mut empty_windows = 0;
    for window in 1..=40u64 {
        if window % 5 != 0 {
            random_dml(&bench, &mut rng, &mut next_id, window);
        }
        bench.model.advance(Duration::minutes(15));
        let trigger = bench.model.now() - Duration::seconds(30);
        let before = bench.incremental_blobs().await.len();
        let report = bench.incremental(trigger).await;
        assert_eq!(
            report.status,
            Status::Done,
            "window {window}: {:?}",
            report.logs()
        );
        assert_eq!(report.logs().len(), 1, "one log line per table");
        let after = bench.incremental_blobs().await.len();
        let rows = report.return_value()["tables"][0]["rows"].as_u64().unwrap();
        if rows == 0 {
            empty_windows += 1;
            assert_eq!(
                after, before,
                "window {window}: an empty window writes no blob"
            );
        } else {
            assert_eq!(
                after,
                before + 1,
                "window {window}: one blob per window with changes"
            );
        }
        assert_eq!(bench.watermark().last_window_end, trigger);
        bench.assert_consistent(&format!("window {window}")).await;
    }
    assert!(
        empty_windows >= 8,
        "every fifth window has no DML ({empty_windows} empty)"
    );
}

/// Guarantee 4 and the retry path: the host retrying the same trigger is a no-op.
#[tokio::test]
async fn the_same_trigger_twice_writes_once() {
    let bench = Bench::new(10, CdcModel::new(start_time()), &[]).await;
    bench.full_load().await;
    bench.model.insert(&bench.table, customer(100, 1)).unwrap();
    bench.model.advance(Duration::minutes(15));
    let trigger = bench.model.now();
    assert_eq!(bench.incremental(trigger).await.status, Status::Done);
    let blobs = bench.incremental_blobs().await;
    assert_eq!(blobs.len(), 1);
    let bytes = bench.read(&blobs[0]).await;
    let wm = bench.watermark();
    let again = bench.incremental(trigger).await;
    assert_eq!(again.status, Status::Done);
    assert_eq!(again.return_value()["tables"][0]["note"], "up to date");
    assert_eq!(bench.incremental_blobs().await, blobs);
    assert_eq!(bench.read(&blobs[0]).await, bytes);
    assert_eq!(
        bench.watermark(),
        wm,
        "a retried trigger leaves the watermark alone"
    );
}

/// The blob is named by the trigger time with the default template.
#[tokio::test]
async fn blob_name_follows_the_trigger_time() {
    let bench = Bench::new(1, CdcModel::new(start_time()), &[]).await;
    bench.full_load().await;
    bench.model.insert(&bench.table, customer(5, 1)).unwrap();
    bench.model.advance(Duration::minutes(20));
    let trigger = start_time() + Duration::minutes(15) + Duration::milliseconds(123);
    bench.incremental(trigger).await;
    assert_eq!(
        bench.incremental_blobs().await,
        vec!["dbo/customers/incremental/2026/11/21/20261121101500123.csv".to_string()]
    );
}

/// Guarantees 1–4 under crashes: the job is stopped once at every point between its side
/// effects (a failed call at the source seam, as a dying process would stop), then re-run
/// with a later trigger; the pending window is finished byte-identically and nothing is lost
/// or duplicated.
#[tokio::test]
async fn a_crash_at_every_step_loses_and_duplicates_nothing() {
    // (point, the call that fails, calls of it let through first, how it fails)
    // The order: stream (staged blocks), record the window, commit the blob, advance.
    let points = [
        ("before the stream", Method::NetChanges, 0, Fault::Before),
        (
            "between staged blocks",
            Method::NetChanges,
            0,
            Fault::MidStream(3),
        ),
        (
            "after the last row, before the window is recorded",
            Method::NetChanges,
            0,
            Fault::AfterEffect,
        ),
        (
            "after the stream, before the window is recorded",
            Method::UpdateWatermark,
            0,
            Fault::Before,
        ),
        (
            "after the window is recorded, before the commit",
            Method::UpdateWatermark,
            0,
            Fault::AfterEffect,
        ),
        (
            "after the commit, before the advance",
            Method::UpdateWatermark,
            1,
            Fault::Before,
        ),
    ];
    for (seed, (step, method, skip, fault)) in points.into_iter().enumerate() {
        let mut bench = Bench::new(20, CdcModel::new(start_time()), &[]).await;
        bench.set_block_size(256);
        bench.full_load().await;
        let mut rng = StdRng::seed_from_u64(seed as u64);
        let mut next_id = 1000;
        random_dml(&bench, &mut rng, &mut next_id, 1);
        // Enough rows for several 256-byte blocks, so the stream can break between them.
        for _ in 0..8 {
            bench
                .model
                .insert(&bench.table, customer(next_id, 1))
                .unwrap();
            next_id += 1;
        }
        bench.model.advance(Duration::minutes(15));
        let first = bench.model.now();

        bench.faults.arm_after(method, skip, fault);
        let crashed = bench.incremental(first).await;
        assert_eq!(bench.faults.injected(), 1, "{step}: the fault struck");
        assert_eq!(crashed.status, Status::Failed, "{step}");
        assert!(
            crashed.logs()[0].contains("injected"),
            "{:?}",
            crashed.logs()
        );
        bench
            .assert_consistent(&format!("after a crash {step}"))
            .await;
        let committed_at_crash = bench.incremental_blobs().await;
        let bytes_at_crash = match committed_at_crash.first() {
            Some(name) => Some(bench.read(name).await),
            None => None,
        };

        // More changes, then the next timer run finishes the pending window first.
        random_dml(&bench, &mut rng, &mut next_id, 2);
        bench.model.advance(Duration::minutes(15));
        let second = bench.model.now();
        let report = bench.incremental(second).await;
        assert_eq!(report.status, Status::Done, "{step}: {:?}", report.logs());
        bench
            .assert_consistent(&format!("after recovering from a crash {step}"))
            .await;
        assert_eq!(bench.watermark().last_window_end, second);
        assert!(bench.watermark().pending().is_none());
        if let (Some(name), Some(bytes)) = (committed_at_crash.first(), bytes_at_crash) {
            assert_eq!(
                bench.read(name).await,
                bytes,
                "{step}: the pending window was rewritten byte-identically"
            );
        }
    }
}

/// Guarantee 1 with overlapping invocations: three runs of the same trigger at once; exactly
/// one copies, the others end cleanly, the blob content appears once.
#[tokio::test]
async fn overlapping_invocations_advance_the_watermark_once() {
    let bench = Bench::new(20, CdcModel::new(start_time()), &[]).await;
    bench.full_load().await;
    let mut rng = StdRng::seed_from_u64(3);
    let mut next_id = 1000;
    random_dml(&bench, &mut rng, &mut next_id, 1);
    bench
        .model
        .insert(&bench.table, customer(next_id, 1))
        .unwrap();
    bench.model.advance(Duration::minutes(15));
    let trigger = bench.model.now();
    let version = bench.watermark().version;
    let (a, b, c) = tokio::join!(
        bench.incremental(trigger),
        bench.incremental(trigger),
        bench.incremental(trigger)
    );
    for report in [&a, &b, &c] {
        assert!(
            matches!(report.status, Status::Done | Status::Superseded),
            "{:?}",
            report.logs()
        );
    }
    let notes: Vec<String> = [&a, &b, &c]
        .iter()
        .map(|r| {
            r.return_value()["tables"][0]["note"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        notes
            .iter()
            .filter(|n| !n.starts_with("superseded"))
            .count(),
        1,
        "{notes:?}"
    );
    assert_eq!(bench.incremental_blobs().await.len(), 1);
    assert_eq!(
        bench.watermark().version,
        version + 2,
        "pending recorded once, advanced once"
    );
    bench.assert_consistent("after overlapping runs").await;
}

/// Guarantee 5: changes cleaned up before they were copied fail the run loudly, naming the
/// table and both LSNs, and the watermark stays where it was.
#[tokio::test]
async fn a_cleanup_gap_fails_loudly_and_keeps_the_watermark() {
    let bench = Bench::new(5, CdcModel::new(start_time()), &[]).await;
    bench.full_load().await;
    bench.model.insert(&bench.table, customer(100, 1)).unwrap();
    bench.model.advance(Duration::minutes(10));
    let after_gap = bench.model.insert(&bench.table, customer(101, 1)).unwrap();
    bench.model.advance(Duration::minutes(10));
    bench.model.cleanup(after_gap);
    let wm = bench.watermark();
    let report = bench.incremental(bench.model.now()).await;
    assert_eq!(report.status, Status::Blocked, "definite: not retried");
    let line = &report.logs()[0];
    assert!(line.contains("dbo.customers"), "{line}");
    assert!(
        line.contains(&wm.last_lsn.increment().unwrap().to_string()),
        "{line}"
    );
    assert!(
        line.contains(&bench.model.min_lsn("dbo_customers").to_string()),
        "{line}"
    );
    assert!(line.contains("reset"), "says what to do: {line}");
    assert_eq!(report.return_value()["tables"][0]["transient"], false);
    assert_eq!(bench.watermark(), wm);
    assert!(bench.incremental_blobs().await.is_empty());
}

/// A capture process lagging longer than the wait: the run copies what is captured, and the
/// late changes land in the next window — none lost.
#[tokio::test]
async fn capture_lag_longer_than_the_wait_defers_changes_to_the_next_window() {
    let model = CdcModel::new(start_time()).with_capture_lag(Duration::minutes(10));
    let bench = Bench::new(5, model, &[]).await;
    bench.model.advance(Duration::minutes(11));
    bench.full_load().await;
    bench.model.insert(&bench.table, customer(100, 1)).unwrap();
    bench.model.advance(Duration::minutes(5));
    bench.model.insert(&bench.table, customer(101, 1)).unwrap();
    bench.model.advance(Duration::minutes(6));
    // 100 is captured (11 min old), 101 is not (6 min old, lag 10).
    let report = bench.incremental(bench.model.now()).await;
    assert_eq!(report.status, Status::Done, "{:?}", report.logs());
    assert!(
        report.return_value()["tables"][0]["captureLagMs"]
            .as_i64()
            .unwrap()
            > 0
    );
    assert_eq!(report.return_value()["tables"][0]["rows"], 1);
    bench.assert_consistent("lagging window").await;
    bench.model.advance(Duration::minutes(15));
    let report = bench.incremental(bench.model.now()).await;
    assert_eq!(
        report.return_value()["tables"][0]["rows"],
        1,
        "101 arrives in the next window"
    );
    bench.assert_consistent("next window").await;
    assert_eq!(bench.replay().await.len(), 7);
}

/// A run hours late (the timer's one past-due run after downtime) copies everything since the
/// watermark in one window.
#[tokio::test]
async fn a_run_hours_late_copies_everything_since_the_watermark() {
    let bench = Bench::new(5, CdcModel::new(start_time()), &[]).await;
    bench.full_load().await;
    let mut rng = StdRng::seed_from_u64(11);
    let mut next_id = 1000;
    for hour in 0..6 {
        random_dml(&bench, &mut rng, &mut next_id, hour);
        bench.model.advance(Duration::hours(1));
    }
    let report = bench.incremental(bench.model.now()).await;
    assert_eq!(report.status, Status::Done);
    assert!(bench.incremental_blobs().await.len() <= 1);
    bench.assert_consistent("after six hours").await;
}

/// The server's zone is not UTC (lsn_time_mapping is local time): windows still split at the
/// right changes, for zones behind and ahead of UTC.
#[tokio::test]
async fn non_utc_server_zones_map_windows_correctly() {
    for offset in [-300, 330] {
        let model = CdcModel::new(start_time()).with_utc_offset(offset);
        let bench = Bench::new(5, model, &[]).await;
        bench.full_load().await;
        bench.model.insert(&bench.table, customer(100, 1)).unwrap();
        bench.model.advance(Duration::minutes(10));
        let boundary = bench.model.now();
        bench.model.advance(Duration::minutes(1));
        bench.model.insert(&bench.table, customer(101, 1)).unwrap();
        bench.model.advance(Duration::minutes(10));
        let report = bench.incremental(boundary).await;
        assert_eq!(
            report.return_value()["tables"][0]["rows"],
            1,
            "offset {offset}: only 100 is before the boundary"
        );
        bench.assert_consistent("first window").await;
        let report = bench.incremental(bench.model.now()).await;
        assert_eq!(
            report.return_value()["tables"][0]["rows"],
            1,
            "offset {offset}: 101 in the second window"
        );
        bench.assert_consistent("second window").await;
    }
}

/// The zero-change run costs at most five SQL round trips (besides opening the session).
#[tokio::test]
async fn a_zero_change_run_takes_five_round_trips() {
    let bench = Bench::new(5, CdcModel::new(start_time()), &[]).await;
    bench.full_load().await;
    bench.model.advance(Duration::minutes(15));
    bench.faults.reset_calls();
    let report = bench.incremental(bench.model.now()).await;
    assert_eq!(report.return_value()["tables"][0]["note"], "no changes");
    let calls = bench.faults.calls();
    let statements: u64 = calls
        .iter()
        .filter(|(m, _)| **m != Method::Session)
        .map(|(_, n)| n)
        .sum();
    assert_eq!(statements, 5, "{calls:?}");
    assert!(bench.incremental_blobs().await.is_empty());
}

/// A table without a watermark was never loaded: the run fails naming it and the remedy.
#[tokio::test]
async fn a_table_never_loaded_fails_with_the_remedy() {
    let bench = Bench::new(5, CdcModel::new(start_time()), &[]).await;
    let report = bench.incremental(bench.model.now()).await;
    assert_eq!(report.status, Status::Blocked, "definite: not retried");
    assert!(
        report.logs()[0].contains("dbo.customers") && report.logs()[0].contains("FullLoad"),
        "{:?}",
        report.logs()
    );
}

/// A capture instance name that is not in cdc.change_tables is refused before any read.
#[tokio::test]
async fn an_unknown_capture_instance_is_named() {
    let bench = Bench::new(
        5,
        CdcModel::new(start_time()),
        &[("CDC_TABLES", "dbo.customers=dbo_nope")],
    )
    .await;
    let report = bench.full_load().await;
    assert_eq!(report.status, Status::Blocked, "definite: not retried");
    assert!(report.logs()[0].contains("dbo_nope"), "{:?}", report.logs());
}

/// FullLoad: parts of bounded size, resumable across invocations (the HTTP budget runs out,
/// the timer run finishes it), refusing to reset a loaded table unless asked.
#[tokio::test]
async fn full_load_is_resumable_and_refuses_a_silent_reset() {
    let bench = Bench::new(
        23,
        CdcModel::new(start_time()),
        &[("CDC_FULL_LOAD_PART_ROWS", "5")],
    )
    .await;
    let request = cdc_copy::host::FullLoadRequest::default_all();
    let first =
        cdc_copy::jobs::full_load::run(&bench.ctx, &request, std::time::Duration::ZERO).await;
    assert_eq!(first.status, Status::InProgress, "{:?}", first.logs());
    let progress = bench.watermark().loading().cloned().expect("a checkpoint");
    assert_eq!(progress.parts_done, 1);
    assert_eq!(progress.last_key, Some(vec![Value::Int(4)]));
    // Changes during the load go to the incremental side: an update in the scanned range
    // appears there only; an insert in the range still to scan appears in both the load and
    // the incremental blob (the documented overlap; consumers upsert by key).
    bench
        .model
        .update(&bench.table, &[Value::Int(2)], customer(2, 9))
        .unwrap();
    bench.model.insert(&bench.table, customer(500, 1)).unwrap();
    bench.model.advance(Duration::minutes(15));
    let timer = bench.incremental(bench.model.now()).await;
    assert_eq!(timer.status, Status::Done, "{:?}", timer.logs());
    assert!(bench.watermark().loading().is_none());
    let parts = bench.blobs("dbo/customers/full/").await;
    assert_eq!(parts.len(), 5, "23 rows in parts of 5: {parts:?}");
    assert!(parts[4].ends_with("part-00004.csv"));
    bench.model.advance(Duration::minutes(15));
    bench.incremental(bench.model.now()).await;
    bench
        .assert_consistent_with("after a resumed load", false)
        .await;
    let replayed = bench.replay_with(false).await;
    assert_eq!(
        replayed["2"][2].as_deref(),
        Some("Last v9"),
        "the update during the load"
    );
    assert!(replayed.contains_key("500"), "the insert during the load");

    let again = bench.full_load().await;
    assert_eq!(again.status, Status::Conflict);
    assert!(again.logs()[0].contains("reset"), "{:?}", again.logs());

    let reset = cdc_copy::host::FullLoadRequest {
        tables: vec![],
        reset: true,
    };
    bench.model.advance(Duration::seconds(1));
    let report =
        cdc_copy::jobs::full_load::run(&bench.ctx, &reset, std::time::Duration::from_secs(60))
            .await;
    assert_eq!(report.status, Status::Done, "{:?}", report.logs());
}

/// An empty table still gets a full-load blob with its header.
#[tokio::test]
async fn an_empty_table_loads_as_a_header() {
    let bench = Bench::new(0, CdcModel::new(start_time()), &[]).await;
    assert_eq!(bench.full_load().await.status, Status::Done);
    let parts = bench.blobs("dbo/customers/full/").await;
    assert_eq!(parts.len(), 1);
    assert_eq!(
        bench.read(&parts[0]).await,
        b"customer_id,first_name,last_name,email,city\r\n"
    );
}

/// A transient SQL failure mid-stream fails the invocation (the host retries); the stream
/// comes before the window is recorded, so the watermark is untouched and the retry plans
/// and completes the same window.
#[tokio::test]
async fn a_dropped_connection_mid_stream_is_retried_by_the_next_run() {
    let bench = Bench::new(5, CdcModel::new(start_time()), &[]).await;
    bench.full_load().await;
    for id in 100..110 {
        bench.model.insert(&bench.table, customer(id, 1)).unwrap();
    }
    bench.model.advance(Duration::minutes(15));
    let trigger = bench.model.now();
    let before = bench.watermark();
    bench.faults.arm(Method::NetChanges, Fault::MidStream(4));
    let report = bench.incremental(trigger).await;
    assert_eq!(report.status, Status::Failed);
    assert_eq!(report.return_value()["tables"][0]["transient"], true);
    assert!(
        bench.incremental_blobs().await.is_empty(),
        "nothing half-visible"
    );
    assert_eq!(
        bench.watermark(),
        before,
        "nothing recorded before the stream ended"
    );
    let retry = bench.incremental(trigger).await;
    assert_eq!(retry.status, Status::Done, "{:?}", retry.logs());
    assert_eq!(retry.return_value()["tables"][0]["rows"], 10);
    assert_eq!(bench.incremental_blobs().await.len(), 1);
    bench.assert_consistent("after the retry").await;
}

/// Watermark table missing: the error says how to create it.
#[tokio::test]
async fn a_missing_watermark_table_says_how_to_create_it() {
    let bench = Bench::new(1, CdcModel::new(start_time()), &[]).await;
    bench.model.drop_watermark_table();
    let report = bench.full_load().await;
    assert_eq!(report.status, Status::Blocked, "definite: not retried");
    assert!(
        report.logs()[0].contains("setup.sql"),
        "{:?}",
        report.logs()
    );
}

/// Full-load parts are create-only: a run resuming after a crash between a part's commit and
/// its checkpoint (or racing another run continuing the same load) adopts the committed part
/// and its recorded last key instead of replacing it, so the checkpoint always matches the
/// part that exists and no row between two parts can fall through.
#[tokio::test]
async fn a_committed_full_load_part_is_adopted_not_replaced() {
    let model = CdcModel::new(start_time());
    let bench = Bench::new(0, model, &[("CDC_FULL_LOAD_PART_ROWS", "5")]).await;
    for id in 0..23 {
        bench
            .model
            .insert(&bench.table, customer(id * 10, 0))
            .unwrap();
    }
    bench.model.advance(Duration::seconds(1));
    // Let part 0's checkpoint through, crash right after part 1 is committed.
    bench
        .faults
        .arm_after(Method::UpdateWatermark, 1, Fault::Before);
    assert_eq!(bench.full_load().await.status, Status::Failed);
    let parts = bench.blobs("dbo/customers/full/").await;
    assert_eq!(parts.len(), 2);
    let part1 = bench.read(&parts[1]).await;
    assert_eq!(
        bench.watermark().loading().cloned().unwrap().parts_done,
        1,
        "part 1 committed, not checkpointed"
    );

    // A row inserted into part 1's key range after it was written: a re-scan would differ.
    bench.model.insert(&bench.table, customer(55, 1)).unwrap();
    bench.model.advance(Duration::seconds(1));
    let report = bench.full_load().await;
    assert_eq!(report.status, Status::Done, "{:?}", report.logs());
    assert_eq!(
        bench.read(&parts[1]).await,
        part1,
        "the committed part was adopted, not replaced"
    );
    assert_eq!(bench.blobs("dbo/customers/full/").await.len(), 5);
    bench.model.advance(Duration::minutes(15));
    bench.incremental(bench.model.now()).await;
    // 55 arrives through the incremental side; every other row exactly once in the load.
    bench.assert_consistent("after adopting a part").await;
}

/// Tables run side by side: one table's failure (here: CDC not enabled on it) is reported and
/// fails the invocation, and the other table is still copied.
#[tokio::test]
async fn one_failing_table_does_not_stop_the_others() {
    let bench = Bench::new(
        3,
        CdcModel::new(start_time()),
        &[("CDC_TABLES", "dbo.customers,dbo.orders")],
    )
    .await;
    let report = bench.full_load().await;
    assert_eq!(
        report.status,
        Status::Blocked,
        "definite: a retry cannot enable CDC"
    );
    let logs = report.logs();
    assert_eq!(logs.len(), 2, "{logs:?}");
    let orders = logs.iter().find(|l| l.starts_with("dbo.orders")).unwrap();
    assert!(orders.contains("sp_cdc_enable_table"), "{orders}");
    assert!(
        report
            .logs()
            .iter()
            .any(|l| l.starts_with("dbo.customers: loaded")),
        "{:?}",
        report.logs()
    );
    assert_eq!(bench.blobs("dbo/customers/full/").await.len(), 1);
    bench.assert_consistent("customers loaded").await;
}

/// A watermark at the current end of the change stream, its last window ending `ago` before
/// the model's clock: the next window holds no change, so a run does no blob I/O at all and
/// the test can own the clock.
fn loaded_at_the_end(bench: &Bench, ago: Duration) -> cdc_copy::cdc::Watermark {
    let now = bench.model.now();
    let row = cdc_copy::cdc::Watermark {
        table: bench.table.clone(),
        capture_instance: "dbo_customers".into(),
        last_lsn: bench.model.max_lsn(),
        last_window_end: now - ago,
        state: cdc_copy::cdc::TableState::Ready,
        rows_copied: 0,
        bytes_copied: 0,
        version: 1,
        updated_at: now,
    };
    bench.model.set_watermark(row.clone());
    row
}

/// The run waits for the capture process, polling every `CDC_CAPTURE_POLL_SECONDS`, and goes
/// on as soon as capture has passed the trigger time. Paused time: the polls are counted, and
/// the model's clock moves with the test's.
#[tokio::test(start_paused = true)]
async fn the_run_waits_for_capture_then_goes_on() {
    let model = CdcModel::new(start_time()).with_capture_lag(Duration::seconds(12));
    let bench = Bench::new(
        2,
        model,
        &[
            ("CDC_CAPTURE_WAIT_SECONDS", "60"),
            ("CDC_CAPTURE_POLL_SECONDS", "5"),
        ],
    )
    .await;
    bench.model.advance(Duration::minutes(1));
    loaded_at_the_end(&bench, Duration::minutes(15));
    let trigger = bench.model.now();
    // The server's clock runs with the test's: one model second per second of tokio time.
    let clock = bench.model.clone();
    let ticker = tokio::spawn(async move {
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            clock.advance(Duration::seconds(1));
        }
    });
    let started = tokio::time::Instant::now();
    let report = bench.incremental(trigger).await;
    let waited = started.elapsed();
    ticker.abort();
    assert_eq!(report.status, Status::Done, "{:?}", report.logs());
    let polls = bench.faults.calls()[&Method::CaptureProgress];
    // Capture passes the trigger 12 s after it (the lag); polls at 0, 5, 10 and 15 s.
    assert_eq!(polls, 4, "{:?}", report.logs());
    assert_eq!(waited, std::time::Duration::from_secs(15));
    assert_eq!(report.return_value()["tables"][0]["captureLagMs"], 0);
    assert_eq!(bench.watermark().last_window_end, trigger);
}

/// Capture stopped (SQL Server Agent down): the run polls for exactly
/// `CDC_CAPTURE_WAIT_SECONDS`, then copies what is captured and reports the lag.
#[tokio::test(start_paused = true)]
async fn a_stopped_capture_is_waited_for_within_the_bound() {
    let bench = Bench::new(
        2,
        CdcModel::new(start_time()),
        &[
            ("CDC_CAPTURE_WAIT_SECONDS", "30"),
            ("CDC_CAPTURE_POLL_SECONDS", "5"),
        ],
    )
    .await;
    bench.model.advance(Duration::minutes(1));
    loaded_at_the_end(&bench, Duration::minutes(15));
    bench.model.pause_capture();
    bench.model.advance(Duration::minutes(2));
    let trigger = bench.model.now();
    let started = tokio::time::Instant::now();
    let report = bench.incremental(trigger).await;
    assert_eq!(started.elapsed(), std::time::Duration::from_secs(30));
    assert_eq!(report.status, Status::Done, "{:?}", report.logs());
    // Polls at 0, 5, …, 30 s.
    assert_eq!(bench.faults.calls()[&Method::CaptureProgress], 7);
    let lag = report.return_value()["tables"][0]["captureLagMs"]
        .as_i64()
        .expect("a lag");
    assert!(
        lag >= 120_000,
        "capture is at least two minutes behind: {lag} ms"
    );
    assert_eq!(bench.watermark().last_window_end, trigger);
}

/// Issue 9, item 3: a FullLoad right after `sys.sp_cdc_enable_table`, before the capture job
/// has recognised the instance (NULL start LSN, NULL max LSN), is refused with a transient
/// error naming the capture job, and writes no watermark (IncrementalCopy answers the same);
/// once the capture job has run the
/// load and the first incremental run succeed — never the cleanup message — and the replay
/// oracle finds no change lost.
#[tokio::test]
async fn a_full_load_before_the_capture_job_has_run_is_retried_not_misbaselined() {
    let model = CdcModel::new(start_time()).with_capture_lag(Duration::seconds(30));
    let bench = Bench::new(5, model, &[]).await;
    assert_eq!(bench.model.start_lsn("dbo_customers"), None);
    let report = bench.full_load().await;
    assert_eq!(
        report.status,
        Status::Failed,
        "transient: {:?}",
        report.logs()
    );
    let line = &report.logs()[0];
    for needle in [
        "capture",
        "SQL Server Agent job cdc.db_capture",
        "Azure SQL Database",
        "20 seconds",
        "Retry",
    ] {
        assert!(line.contains(needle), "{needle:?} missing from {line}");
    }
    assert!(!line.contains("cleaned up"), "{line}");
    assert_eq!(report.return_value()["tables"][0]["transient"], true);
    assert_eq!(
        bench.model.watermark(&bench.table),
        None,
        "no watermark row"
    );
    // `handler check` says so too.
    let runner = cdc_copy::jobs::Runner::new(
        bench.ctx.settings.clone(),
        bench.ctx.source.clone(),
        bench.ctx.blobs.clone(),
    );
    let checks = runner.check().await;
    let capture = checks
        .iter()
        .find(|(what, _)| what == "CDC capture instance of dbo.customers")
        .expect("a capture-instance check");
    assert!(
        capture
            .1
            .as_ref()
            .is_err_and(|e| e.contains("cdc.db_capture")),
        "{checks:?}"
    );
    // IncrementalCopy says the same (before anything else about the table).
    let report = bench.incremental(bench.model.now()).await;
    assert_eq!(report.status, Status::Failed, "{:?}", report.logs());
    assert!(
        report.logs()[0].contains("SQL Server Agent job cdc.db_capture"),
        "{:?}",
        report.logs()
    );

    // Changes keep coming while the capture job catches up; then it runs.
    bench.model.insert(&bench.table, customer(50, 1)).unwrap();
    bench.model.advance(Duration::seconds(40));
    assert!(bench.model.start_lsn("dbo_customers").is_some());
    let mut ledger = Ledger::new();
    let report = bench.full_load().await;
    assert_eq!(report.status, Status::Done, "{:?}", report.logs());
    ledger.check(&bench, "after the full load").await;

    bench.model.insert(&bench.table, customer(100, 1)).unwrap();
    bench
        .model
        .update(&bench.table, &[Value::Int(1)], customer(1, 2))
        .unwrap();
    bench.model.advance(Duration::minutes(15));
    let report = bench.incremental(bench.model.now()).await;
    assert_eq!(report.status, Status::Done, "{:?}", report.logs());
    assert!(
        !report.logs()[0].contains("cleaned up"),
        "{:?}",
        report.logs()
    );
    assert_eq!(report.return_value()["tables"][0]["rows"], 2);
    ledger
        .check(&bench, "after the first incremental run")
        .await;
    assert_eq!(ledger.figures.lost, 0);
    assert_eq!(ledger.figures.duplicated, 0);
    assert_eq!(bench.replay().await.len(), 7);
}

/// A model configured like an idle SQL Server: the capture job scans the log every 5 s and
/// writes a dummy mapping row at most every 5 minutes; `visible`: whether the login can read
/// `sys.dm_cdc_log_scan_sessions`.
fn idle_sql_server(visible: bool) -> CdcModel {
    CdcModel::new(start_time())
        .like_idle_sql_server(Duration::seconds(5))
        .with_log_scan_sessions(visible)
}

/// Lets the model's clock run with tokio's, one second per second, half a second out of step
/// with the job's polls so that which of the two runs first at an instant never matters.
fn run_the_clock(model: &CdcModel) -> tokio::task::JoinHandle<()> {
    let clock = model.clone();
    tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        loop {
            clock.advance(Duration::seconds(1));
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
    })
}

/// Guarantee 1 at no cost: on an idle database the mapping table shows capture minutes behind
/// the trigger, yet a drained log scan that began after it proves everything before it is
/// captured, so the run goes on within seconds; without the view (no permission) it waits
/// the whole `CDC_CAPTURE_WAIT_SECONDS` as before. Paused time: the wait and the statements
/// are exact.
#[tokio::test(start_paused = true)]
async fn an_idle_run_goes_on_at_the_first_drained_log_scan_after_the_trigger() {
    // (view readable, wait, CaptureProgress polls)
    for (visible, wait_s, polls) in [(true, 2, 3), (false, 120, 25)] {
        let (bench, trigger) = idle_table(idle_sql_server(visible), Duration::minutes(1)).await;
        assert_idle_run(
            &bench,
            trigger,
            wait_s,
            polls,
            &format!("visible {visible}"),
        )
        .await;
    }
}

/// A table on `model` (wait 120 s, polls every 5 s) whose last change is 15 minutes old after
/// `idle` more, and a trigger between two of the capture job's scans, 1.5 s before the next
/// (`Bench::new` already moved the clock 1 s).
async fn idle_table(model: CdcModel, idle: Duration) -> (Bench, DateTime<Utc>) {
    let bench = Bench::new(
        2,
        model,
        &[
            ("CDC_CAPTURE_WAIT_SECONDS", "120"),
            ("CDC_CAPTURE_POLL_SECONDS", "5"),
        ],
    )
    .await;
    bench.model.advance(idle);
    loaded_at_the_end(&bench, Duration::minutes(15));
    bench.model.advance(Duration::milliseconds(2500));
    let trigger = bench.model.now();
    (bench, trigger)
}

/// Runs IncrementalCopy at `trigger` with the model's clock running and checks an idle run:
/// no changes, exactly `wait_s` of waiting, `polls` capture-progress polls and besides them
/// only CaptureInstance, ReadWatermark and UpdateWatermark (no new LSN to read), no warning.
async fn assert_idle_run(
    bench: &Bench,
    trigger: DateTime<Utc>,
    wait_s: u64,
    polls: u64,
    case: &str,
) {
    bench.faults.reset_calls();
    let clock = run_the_clock(&bench.model);
    let started = tokio::time::Instant::now();
    let report = bench.incremental(trigger).await;
    let waited = started.elapsed();
    clock.abort();
    let table = &report.return_value()["tables"][0];
    assert_eq!(report.status, Status::Done, "{:?}", report.logs());
    assert_eq!(table["note"], "no changes", "{case}");
    assert_eq!(waited, std::time::Duration::from_secs(wait_s), "{case}");
    assert_eq!(table["captureWaitMs"], wait_s * 1000, "{case}");
    assert!(table.get("warning").is_none(), "idle is healthy: {table}");
    let calls = bench.faults.calls();
    assert_eq!(calls[&Method::CaptureProgress], polls, "{case}");
    let statements: u64 = calls
        .iter()
        .filter(|(m, _)| **m != Method::Session)
        .map(|(_, n)| n)
        .sum();
    assert_eq!(statements, 3 + polls, "{case}: {calls:?}");
    assert_eq!(bench.watermark().last_window_end, trigger);
}

/// Guarantee 1 when the signal is wrong: a change committed a second before the trigger but
/// captured 20 s late (a capture process slower than its own scans say) is not in this
/// window, and lands in the next one; the replay oracle finds nothing lost or duplicated.
#[tokio::test]
async fn a_change_captured_after_a_drained_scan_lands_in_the_next_window() {
    let model = idle_sql_server(true).with_capture_lag(Duration::seconds(20));
    let bench = Bench::new(3, model, &[("CDC_CAPTURE_WAIT_SECONDS", "60")]).await;
    bench.model.advance(Duration::minutes(1));
    bench.full_load().await;
    bench.model.advance(Duration::minutes(1));
    bench.model.insert(&bench.table, customer(100, 1)).unwrap();
    bench.model.advance(Duration::seconds(1));
    let first = bench.model.now();
    // Two seconds per round trip: the scans after the trigger find nothing due yet.
    bench.model.set_time_per_call(Some(Duration::seconds(2)));
    let report = bench.incremental(first).await;
    assert_eq!(report.status, Status::Done, "{:?}", report.logs());
    let table = &report.return_value()["tables"][0];
    assert_eq!(
        table["rows"], 0,
        "not captured when the run looked: {table}"
    );
    assert_eq!(
        table["captureWaitMs"], 0,
        "the drained scan was trusted at once"
    );
    lands_in_the_next_window(&bench).await;
}

/// After a first window that went on without a change captured late: the replay oracle is
/// satisfied, and 15 minutes on the next window holds that one change and is satisfied too.
async fn lands_in_the_next_window(bench: &Bench) {
    bench.assert_consistent("first window").await;
    bench.model.advance(Duration::minutes(15));
    let report = bench.incremental(bench.model.now()).await;
    assert_eq!(report.status, Status::Done, "{:?}", report.logs());
    assert_eq!(
        report.return_value()["tables"][0]["rows"],
        1,
        "the late change is in the next window"
    );
    bench.assert_consistent("second window").await;
}

/// The model like an idle SQL Server whose folded row of empty scans keeps its first scan's
/// times (`FoldedScanTimes::First`, the pessimistic reading of the documentation): the newest
/// drained scan's `start_time` is as old as the idle period, so only the scan marks can show
/// that capture passed the trigger.
fn idle_sql_server_first_times() -> CdcModel {
    idle_sql_server(true).with_folded_scan_times(FoldedScanTimes::First)
}

/// Issue 9, item 8, robust to how SQL Server dates a folded row: even if the row of empty
/// scans keeps its first scan's `start_time`, an idle run goes on once the newest row's
/// `empty_scan_count` has grown by two since its first poll after the trigger (the second
/// scan began after the trigger and found nothing), about two capture polling intervals,
/// instead of the whole `CDC_CAPTURE_WAIT_SECONDS`. The capture job scans every 5 s; the
/// trigger falls 1.5 s before a scan. Paused time: the wait and the statements are exact.
#[tokio::test(start_paused = true)]
async fn an_idle_run_goes_on_after_two_empty_scans_even_if_the_scan_row_keeps_its_first_times() {
    // (idle for before the trigger, wait, CaptureProgress polls)
    let cases = [
        // The first empty scan (+10 s) is within a minute of the trigger: the job is seen
        // scanning, polls every second (0, 1, …, 7 s); scans 1.5 s and 6.5 s after the
        // trigger.
        (Duration::minutes(1), 7, 8),
        // An hour idle: the row's start_time is an hour old, so the run polls every 5 s
        // until it has counted one empty scan (polls at 0 and 5 s), then every second (6, 7 s).
        (Duration::hours(1), 7, 4),
    ];
    for (idle, wait_s, polls) in cases {
        let (bench, trigger) = idle_table(idle_sql_server_first_times(), idle).await;
        let drained = bench.model.log_scan_sessions();
        let newest = drained.last().expect("a scan row");
        assert!(
            newest.empty_scan_count > 2
                && newest.start_time < (trigger - Duration::seconds(40)).naive_utc(),
            "the folded row keeps its first scan's time: {newest:?}"
        );
        assert_idle_run(&bench, trigger, wait_s, polls, &format!("idle {idle}")).await;
    }
}

/// Guarantee 1 when the scan marks are wrong: a change committed a second before the trigger
/// but captured 60 s late (a capture process slower than its own scans say) while the newest
/// scan row counts two more empty scans after the trigger: the run goes on at the marks,
/// without the change, and the change lands in the next window; the replay oracle finds
/// nothing lost or duplicated.
#[tokio::test]
async fn a_change_captured_after_two_empty_scans_lands_in_the_next_window() {
    let model = idle_sql_server_first_times().with_capture_lag(Duration::seconds(60));
    let bench = Bench::new(
        3,
        model,
        &[
            ("CDC_CAPTURE_WAIT_SECONDS", "60"),
            ("CDC_CAPTURE_POLL_SECONDS", "1"),
        ],
    )
    .await;
    bench.model.advance(Duration::minutes(2));
    bench.full_load().await;
    bench.model.advance(Duration::minutes(1));
    bench.model.insert(&bench.table, customer(100, 1)).unwrap();
    bench.model.advance(Duration::seconds(1));
    let first = bench.model.now();
    // Five seconds per round trip: each poll sees one more empty scan, none captures the
    // change (due 60 s after its commit).
    bench.model.set_time_per_call(Some(Duration::seconds(5)));
    bench.faults.reset_calls();
    let report = bench.incremental(first).await;
    assert_eq!(report.status, Status::Done, "{:?}", report.logs());
    let table = &report.return_value()["tables"][0];
    assert_eq!(
        table["rows"], 0,
        "not captured when the run looked: {table}"
    );
    assert_eq!(
        bench.faults.calls()[&Method::CaptureProgress],
        3,
        "the reference mark, one more empty scan, two more: {table}"
    );
    assert!(table.get("warning").is_none(), "{table}");
    lands_in_the_next_window(&bench).await;
}

/// A stopped capture job is loud: an hour behind with no drained scan since, the run warns
/// (a tracing warning with the lag in fields, and `warning` in its ReturnValue entry and log
/// line) naming SQL Server Agent and the capture job. An idle but healthy capture (a dummy
/// mapping row every five minutes), even with the view unreadable, does not warn.
#[tokio::test(start_paused = true)]
async fn a_stopped_capture_job_warns_and_an_idle_one_does_not() {
    // (view readable, capture stopped)
    for (visible, stopped) in [(true, true), (false, true), (false, false), (true, false)] {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::WARN)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);

        let bench = Bench::new(
            2,
            idle_sql_server(visible),
            &[
                ("CDC_CAPTURE_WAIT_SECONDS", "30"),
                ("CDC_CAPTURE_POLL_SECONDS", "5"),
            ],
        )
        .await;
        bench.model.advance(Duration::minutes(1));
        loaded_at_the_end(&bench, Duration::minutes(15));
        if stopped {
            bench.model.pause_capture();
        }
        bench
            .model
            .advance(Duration::hours(1) + Duration::milliseconds(2500));
        let trigger = bench.model.now();
        let clock = run_the_clock(&bench.model);
        let report = bench.incremental(trigger).await;
        clock.abort();
        let case = format!("visible {visible}, stopped {stopped}");
        if stopped {
            // Polls at 0, 5, …, 30 s: a job not seen scanning is not asked every second.
            assert_eq!(bench.faults.calls()[&Method::CaptureProgress], 7, "{case}");
        }
        assert_eq!(report.status, Status::Done, "{case}: {:?}", report.logs());
        let table = &report.return_value()["tables"][0];
        let text = captured.text();
        if stopped {
            let warning = table["warning"].as_str().expect("a warning");
            for words in [
                "SQL Server Agent",
                "cdc.<database>_capture",
                "CDC scheduler",
                "paused serverless",
            ] {
                assert!(warning.contains(words), "{case}: {words}: {warning}");
            }
            assert!(warning.contains("dbo_customers"), "{warning}");
            assert!(
                report.logs()[0].contains("WARNING: capture looks stopped"),
                "{:?}",
                report.logs()
            );
            assert!(
                text.contains("the CDC capture process looks stopped"),
                "{case}: {text}"
            );
            assert!(
                text.contains("capture_lag_s=3"),
                "{case}: the lag in a field: {text}"
            );
            assert!(text.contains("capture_instance=dbo_customers"), "{text}");
            assert!(table["captureLagMs"].as_i64().unwrap() >= 3_600_000);
        } else {
            assert!(table.get("warning").is_none(), "{case}: {table}");
            assert!(!report.logs()[0].contains("WARNING"), "{:?}", report.logs());
            assert!(!text.contains("looks stopped"), "{case}: {text}");
        }
    }
}

/// A window with changes costs one evaluation of the net-changes function (the stream; there
/// is no count query before it) and six statements: capture instance, watermark, capture
/// progress, net changes, record, advance.
#[tokio::test]
async fn a_copying_run_evaluates_the_net_changes_function_once() {
    let bench = Bench::new(5, CdcModel::new(start_time()), &[]).await;
    bench.full_load().await;
    for id in 100..103 {
        bench.model.insert(&bench.table, customer(id, 1)).unwrap();
    }
    bench.model.advance(Duration::minutes(15));
    bench.faults.reset_calls();
    let report = bench.incremental(bench.model.now()).await;
    assert_eq!(
        report.return_value()["tables"][0]["rows"],
        3,
        "{:?}",
        report.logs()
    );
    let calls = bench.faults.calls();
    assert_eq!(calls[&Method::NetChanges], 1, "{calls:?}");
    assert_eq!(
        calls[&Method::UpdateWatermark],
        2,
        "record, then advance: {calls:?}"
    );
    let statements: u64 = calls
        .iter()
        .filter(|(m, _)| **m != Method::Session)
        .map(|(_, n)| n)
        .sum();
    assert_eq!(statements, 6, "{calls:?}");
    bench.assert_consistent("one window").await;
}

//! Guarantees 1, 3 and 5 when time misbehaves: the host's clock ahead of or behind the
//! database's, a DST change in the server's zone between windows, a schedule change
//! (irregular trigger intervals, late and repeated triggers), the timer's first run
//! (`Last` = `0001-01-01`), and a week offline (`IsPastDue`), with and without CDC cleanup
//! having removed changes in the meantime. Every run is checked by the replay oracle.

mod common;

use chrono::{DateTime, Duration, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

use cdc_copy::host::{self, TimerTrigger};
use cdc_copy::jobs;
use cdc_copy::report::{Report, Status};
use cdc_copy_testkit::model::CdcModel;

use common::cdc::{customer, random_dml, start_time, Bench};
use common::ledger::Ledger;

async fn loaded(model: CdcModel) -> (Bench, Ledger) {
    let bench = Bench::new(10, model, &[]).await;
    assert_eq!(bench.full_load().await.status, Status::Done);
    let mut ledger = Ledger::new();
    ledger.check(&bench, "after the full load").await;
    (bench, ledger)
}

async fn run(bench: &Bench, trigger: &TimerTrigger) -> Report {
    jobs::incremental::run(&bench.ctx, trigger).await
}

fn at(t: DateTime<Utc>) -> TimerTrigger {
    TimerTrigger {
        trigger_time: t,
        last: None,
        is_past_due: false,
    }
}

/// The timer payload the host sends, decoded as the handler does.
fn payload(
    last: &str,
    next: DateTime<Utc>,
    utc_now: DateTime<Utc>,
    past_due: bool,
) -> TimerTrigger {
    let body = json!({
        "Data": {"timer": {
            "Schedule": {"AdjustForDST": true},
            "ScheduleStatus": {"Last": last, "Next": next.to_rfc3339(), "LastUpdated": last},
            "IsPastDue": past_due
        }},
        "Metadata": {"sys": {"UtcNow": utc_now.to_rfc3339()}}
    });
    host::timer_trigger(&body, utc_now).expect("a valid payload")
}

/// The host's clock ahead of and behind the database's by up to 7 minutes, varying per run:
/// windows end at the host's times, changes committed after a window's end in database time
/// arrive in the next window, none lost.
#[tokio::test]
async fn clock_skew_between_host_and_database_loses_nothing() {
    let (bench, mut ledger) = loaded(CdcModel::new(start_time())).await;
    let mut rng = StdRng::seed_from_u64(21);
    let mut next_id = 1000;
    let mut last_trigger = bench.model.now();
    for window in 1..=30u64 {
        random_dml(&bench, &mut rng, &mut next_id, window);
        bench.model.advance(Duration::minutes(15));
        let skew = Duration::seconds(rng.random_range(-420..=420));
        let trigger = (bench.model.now() + skew).max(last_trigger + Duration::seconds(1));
        last_trigger = trigger;
        let report = run(&bench, &at(trigger)).await;
        assert_eq!(
            report.status,
            Status::Done,
            "window {window}: {:?}",
            report.logs()
        );
        ledger
            .check(&bench, &format!("window {window}, skew {skew}"))
            .await;
        // A change right after the run, before the (skewed) window end in database time.
        bench
            .model
            .insert(&bench.table, customer(next_id, window))
            .unwrap();
        next_id += 1;
    }
    bench.model.advance(Duration::minutes(30));
    run(&bench, &at(bench.model.now())).await;
    ledger.check(&bench, "final").await;
    assert!(ledger.figures.change_rows > 30);
}

/// The server's zone changes its UTC offset between windows (spring forward, fall back):
/// `lsn_time_mapping` is local time, so the mapping jumps; the LSN lower bound keeps every
/// change.
#[tokio::test]
async fn a_dst_change_in_the_server_zone_loses_nothing() {
    let (bench, mut ledger) = loaded(CdcModel::new(start_time()).with_utc_offset(60)).await;
    let mut rng = StdRng::seed_from_u64(22);
    let mut next_id = 1000;
    // Offsets per window: CET, then CEST (spring forward), then CET again (fall back).
    let offsets = [60, 60, 120, 120, 120, 60, 60, 60, 120, 60, 60];
    for (window, offset) in offsets.iter().enumerate() {
        random_dml(&bench, &mut rng, &mut next_id, window as u64);
        bench
            .model
            .insert(&bench.table, customer(next_id, 1))
            .unwrap();
        next_id += 1;
        bench.model.advance(Duration::minutes(20));
        if bench.model.utc_offset_minutes() != *offset {
            bench.model.set_utc_offset(*offset);
        }
        bench.model.advance(Duration::minutes(1));
        let report = run(&bench, &at(bench.model.now() - Duration::seconds(30))).await;
        assert_eq!(report.status, Status::Done, "{:?}", report.logs());
        ledger
            .check(&bench, &format!("window {window}, offset {offset}"))
            .await;
    }
    bench.model.advance(Duration::hours(2));
    run(&bench, &at(bench.model.now())).await;
    ledger.check(&bench, "final").await;
    assert_eq!(
        bench.replay().await,
        bench.source_at(bench.model.max_lsn()),
        "everything arrived"
    );
}

/// A schedule change between runs: intervals of seconds to hours, a trigger repeated (a
/// retry) and one older than the last window end (a late run), which is up to date.
#[tokio::test]
async fn irregular_trigger_intervals_lose_nothing() {
    let (bench, mut ledger) = loaded(CdcModel::new(start_time())).await;
    let mut rng = StdRng::seed_from_u64(23);
    let mut next_id = 1000;
    let gaps = [60, 37 * 60, 5, 3 * 3600, 15 * 60, 1, 24 * 3600, 90, 15 * 60];
    let mut previous = bench.model.now();
    for (i, gap) in gaps.iter().enumerate() {
        random_dml(&bench, &mut rng, &mut next_id, i as u64);
        bench.model.advance(Duration::seconds(*gap));
        let trigger = bench.model.now();
        let report = run(&bench, &at(trigger)).await;
        assert_eq!(report.status, Status::Done, "{:?}", report.logs());
        ledger.check(&bench, &format!("gap {gap}s")).await;
        let again = run(&bench, &at(trigger)).await;
        assert_eq!(again.return_value()["tables"][0]["note"], "up to date");
        let late = run(&bench, &at(previous)).await;
        assert_eq!(late.return_value()["tables"][0]["note"], "up to date");
        ledger.check(&bench, &format!("gap {gap}s, repeated")).await;
        previous = trigger;
    }
}

/// The timer's first run ever: `Last` is `0001-01-01T00:00:00`. The window starts at the
/// watermark (the full load's baseline), not at year 1.
#[tokio::test]
async fn a_first_run_with_last_at_min_value_starts_at_the_watermark() {
    let (bench, mut ledger) = loaded(CdcModel::new(start_time())).await;
    let mut rng = StdRng::seed_from_u64(24);
    let mut next_id = 1000;
    random_dml(&bench, &mut rng, &mut next_id, 1);
    bench.model.insert(&bench.table, customer(999, 1)).unwrap();
    bench.model.advance(Duration::minutes(15));
    let now = bench.model.now();
    let trigger = payload("0001-01-01T00:00:00", now, now, false);
    assert_eq!(trigger.last, None);
    assert_eq!(trigger.trigger_time, now);
    let window_start = bench.watermark().last_window_end;
    let report = run(&bench, &trigger).await;
    assert_eq!(report.status, Status::Done, "{:?}", report.logs());
    ledger.check(&bench, "first run").await;
    let blobs = bench.incremental_blobs().await;
    assert_eq!(blobs.len(), 1);
    let info = bench
        .ctx
        .blobs
        .properties(&blobs[0])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        info.metadata["window_start"]
            .parse::<DateTime<Utc>>()
            .unwrap(),
        window_start
    );
}

/// A week offline, then the host's one past-due run. As the host sends it, `Next` is the
/// first missed occurrence (a week old), so that run's window ends there and the next
/// occurrence copies the rest of the week; with a status whose `Next` is now, one run copies
/// the week. Either way nothing is lost.
#[tokio::test]
async fn a_week_offline_is_caught_up_without_loss() {
    for next_is_now in [false, true] {
        let (bench, mut ledger) = loaded(CdcModel::new(start_time())).await;
        let mut rng = StdRng::seed_from_u64(25);
        let mut next_id = 1000;
        bench.model.advance(Duration::minutes(15));
        let last_run = bench.model.now();
        assert_eq!(run(&bench, &at(last_run)).await.status, Status::Done);
        let first_missed = last_run + Duration::minutes(15);
        for hour in 0..(7 * 24 / 4) {
            random_dml(&bench, &mut rng, &mut next_id, hour);
            bench.model.advance(Duration::hours(4));
        }
        let now = bench.model.now();
        let next = if next_is_now { now } else { first_missed };
        let trigger = payload(&last_run.to_rfc3339(), next, now, true);
        assert!(trigger.is_past_due);
        let report = run(&bench, &trigger).await;
        assert_eq!(report.status, Status::Done, "{:?}", report.logs());
        ledger.check(&bench, "past-due run").await;
        if next_is_now {
            assert_eq!(
                bench.watermark().last_window_end,
                now,
                "one run copies the week"
            );
        } else {
            bench.model.advance(Duration::minutes(15));
            let report = run(&bench, &at(first_missed + Duration::minutes(15))).await;
            assert_eq!(report.status, Status::Done, "{:?}", report.logs());
            let report = run(&bench, &at(bench.model.now())).await;
            assert_eq!(report.status, Status::Done, "{:?}", report.logs());
            ledger.check(&bench, "the next occurrence").await;
        }
        assert_eq!(
            bench.replay().await,
            bench.source_at(bench.model.max_lsn()),
            "the whole week arrived (Next is now: {next_is_now})"
        );
        assert!(ledger.figures.change_rows > 20);
    }
}

/// A week offline with a CDC retention of three days: the changes of the first days are gone.
/// The past-due run fails loudly (table, both LSNs, what to do), not transient, the watermark
/// and the container untouched — then a FullLoad with reset re-baselines and copying resumes.
#[tokio::test]
async fn cleanup_shorter_than_the_outage_fails_loudly() {
    let (bench, mut ledger) = loaded(CdcModel::new(start_time())).await;
    let mut rng = StdRng::seed_from_u64(26);
    let mut next_id = 1000;
    bench.model.advance(Duration::minutes(15));
    let last_run = bench.model.now();
    assert_eq!(run(&bench, &at(last_run)).await.status, Status::Done);
    for hour in 0..(7 * 24 / 4) {
        random_dml(&bench, &mut rng, &mut next_id, hour);
        bench
            .model
            .insert(&bench.table, customer(next_id, 1))
            .unwrap();
        next_id += 1;
        bench.model.advance(Duration::hours(4));
    }
    let now = bench.model.now();
    // The oracle rebuilds past states from the change tables, so it checks before cleanup.
    ledger.check(&bench, "before the cleanup").await;
    bench
        .model
        .cleanup_before_time(now - Duration::days(3))
        .expect("cleanup removed something");
    let wm = bench.watermark();
    let blobs = bench.incremental_blobs().await;
    let trigger = payload(&last_run.to_rfc3339(), now, now, true);
    for attempt in 0..2 {
        let report = run(&bench, &trigger).await;
        assert_eq!(report.status, Status::Blocked, "definite: not retried");
        let line = &report.logs()[0];
        for needed in [
            "dbo.customers".to_string(),
            wm.last_lsn.increment().unwrap().to_string(),
            bench.model.min_lsn("dbo_customers").to_string(),
            "reset".to_string(),
        ] {
            assert!(
                line.contains(&needed),
                "attempt {attempt}: {needed} in {line}"
            );
        }
        assert_eq!(report.return_value()["tables"][0]["transient"], false);
        assert_eq!(bench.watermark(), wm, "the watermark stays");
        assert_eq!(bench.incremental_blobs().await, blobs, "no blob written");
    }

    let reset = host::FullLoadRequest {
        tables: vec![],
        reset: true,
    };
    bench.model.advance(Duration::seconds(1));
    let report = jobs::full_load::run(&bench.ctx, &reset, std::time::Duration::from_secs(60)).await;
    assert_eq!(report.status, Status::Done, "{:?}", report.logs());
    random_dml(&bench, &mut rng, &mut next_id, 99);
    bench.model.advance(Duration::minutes(15));
    let report = run(&bench, &at(bench.model.now())).await;
    assert_eq!(report.status, Status::Done, "{:?}", report.logs());
}

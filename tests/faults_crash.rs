//! Guarantees 1–4 under crashes, retries and overlapping invocations, against the CDC model and
//! a real Azurite, checked by the replay oracle after every invocation (tests/common/ledger.rs).
//!
//! The crash test is randomized but seeded and reproducible: `CDC_COPY_FAULT_SEED` picks the
//! seed (printed in the summary and in every failure message), `CDC_COPY_FAULT_RUNS` the number
//! of invocations (500 by default; docs/guarantees.md has the long modes). Faults are failed
//! calls at the source seam (`cdc_copy_testkit::faults`), which is where every point between
//! a job's side effects lies, so the product carries no test hooks:
//! - a crash at every such point, in the order stream, record, commit, advance: before the
//!   stream, between staged blocks (blocks of 256 bytes so that windows span several), after
//!   the last row before the window is recorded, after it is recorded before the commit,
//!   after the commit before the advance;
//! - the watermark update lost after it committed or refused before, on the pending-window
//!   record and on the advance;
//! - the SQL connection dropped mid-stream, and before the login, the watermark read, the
//!   capture-progress query or the capture-instance read;
//! - during the full load: crashes between blocks, after a part, mid-scan, a lost checkpoint
//!   reply; the load is resumed by FullLoad or by the timer run.
//!
//! After a failed invocation the test either retries the same trigger (the host's retry
//! policy) or moves on to the next timer occurrence, sometimes skipping one (a missed run).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use cdc_copy::host::TimerTrigger;
use cdc_copy::jobs::{self, Context};
use cdc_copy::report::{Report, Status};
use cdc_copy_testkit::faults::{Fault, Faults, Method};
use cdc_copy_testkit::model::CdcModel;

use common::cdc::{customer, random_dml, start_time, Bench, WatermarkExt};
use common::ledger::Ledger;

/// Small blocks so that most windows and parts are several blocks.
const BLOCK_SIZE: usize = 256;

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be a number, not {v:?}")),
        Err(_) => default,
    }
}

/// A bench with small blocks and parts of 8 rows.
async fn bench(rows: i64) -> Bench {
    let mut bench = Bench::new(
        rows,
        CdcModel::new(start_time()),
        &[("CDC_FULL_LOAD_PART_ROWS", "8")],
    )
    .await;
    bench.set_block_size(BLOCK_SIZE);
    bench
}

/// A fault to arm for the next invocation, with the point between side effects it stands
/// for. Crashes are failed calls at the source seam: the job stops there as a dying process
/// would, and nothing in the product knows it is being tested.
#[derive(Debug, Clone, Copy)]
struct Armed {
    label: &'static str,
    method: Method,
    skip: u32,
    fault: Fault,
}

fn armed(label: &'static str, method: Method, skip: u32, fault: Fault) -> Option<Armed> {
    Some(Armed {
        label,
        method,
        skip,
        fault,
    })
}

/// Arms `fault` (if any) for one invocation, runs it, disarms what did not strike, and
/// records what struck. A report fails exactly when a fault struck.
async fn invoke(
    bench: &Bench,
    fault: Option<Armed>,
    tally: &mut BTreeMap<&'static str, u64>,
    context: &str,
    job: impl std::future::Future<Output = Report>,
) -> bool {
    let before = bench.faults.injected();
    if let Some(a) = fault {
        bench.faults.arm_after(a.method, a.skip, a.fault);
    }
    let report = job.await;
    bench.faults.clear();
    let struck = bench.faults.injected() > before;
    if struck {
        assert_eq!(
            report.status,
            Status::Failed,
            "{context}: {:?}",
            report.logs()
        );
        assert!(
            report.logs()[0].contains("injected failure"),
            "{context}: {:?}",
            report.logs()
        );
        *tally.entry(fault.expect("struck").label).or_default() += 1;
    } else {
        assert!(
            matches!(
                report.status,
                Status::Done | Status::Superseded | Status::InProgress
            ),
            "{context}: failed without an injected fault: {:?}",
            report.logs()
        );
    }
    struck
}

/// One random incremental-copy fault (or none). A run that copies a window streams it into
/// staged blocks, records it, commits the blob and advances (a pending window found first is
/// streamed, committed and advanced the same way), so its watermark updates are: (advance
/// past the pending window), record the new window, advance.
fn incremental_fault(rng: &mut StdRng) -> Option<Armed> {
    use Fault::*;
    use Method::*;
    let update = |rng: &mut StdRng| rng.random_range(0..2);
    match rng.random_range(0..20) {
        // The window is streamed (blocks staged, invisible), then recording it fails.
        0 => armed(
            "crash before the window is recorded",
            UpdateWatermark,
            0,
            Before,
        ),
        // The stream fails before it starts: of a pending window (recorded, no blob), or of
        // a new one (nothing recorded, nothing staged).
        1 => armed("crash before the stream", NetChanges, 0, Before),
        2 | 3 => armed(
            "crash between staged blocks",
            NetChanges,
            0,
            MidStream(rng.random_range(3..=12)),
        ),
        4 => armed(
            "crash after the last row, before the window is recorded",
            NetChanges,
            0,
            AfterEffect,
        ),
        5 | 6 => armed(
            "crash after the commit, before the advance",
            UpdateWatermark,
            1,
            Before,
        ),
        7 | 8 => armed(
            "UpdateWatermark committed, reply lost",
            UpdateWatermark,
            update(rng),
            AfterEffect,
        ),
        9 => armed(
            "connection dropped before UpdateWatermark",
            UpdateWatermark,
            update(rng),
            Before,
        ),
        10 => armed(
            "connection dropped mid-stream",
            NetChanges,
            0,
            MidStream(rng.random_range(0..3)),
        ),
        11 => {
            let method =
                [Session, ReadWatermark, CaptureProgress, CaptureInstance][rng.random_range(0..4)];
            armed("connection dropped before a read", method, 0, Before)
        }
        // The record commits and the run stops there: recorded, staged, nothing visible.
        12 => armed(
            "crash after the window is recorded, before the commit",
            UpdateWatermark,
            0,
            AfterEffect,
        ),
        _ => None,
    }
}

/// A full-load fault for attempt `attempt` (from 1). Each part is a scan, a create-only commit
/// and a checkpoint (a watermark update); the load starts with an insert. The first seven
/// attempts take each kind once, in an order in which every one strikes (so every seed
/// covers them all); later attempts draw at random.
fn full_load_fault(rng: &mut StdRng, attempt: u32) -> Option<Armed> {
    use Fault::*;
    use Method::*;
    let kind = match attempt {
        1..=7 => [5, 2, 0, 1, 3, 6, 4][attempt as usize - 1],
        _ => rng.random_range(0..7),
    };
    let skip = |rng: &mut StdRng| {
        if attempt <= 7 {
            0
        } else {
            rng.random_range(0..3)
        }
    };
    match kind {
        0 => armed(
            "crash between staged blocks of a part",
            Scan,
            skip(rng),
            MidStream(rng.random_range(1..=7)),
        ),
        1 => armed(
            "crash after a part's last row, before its commit",
            Scan,
            skip(rng),
            AfterEffect,
        ),
        2 => armed(
            "crash after a part's commit, before its checkpoint",
            UpdateWatermark,
            skip(rng),
            Before,
        ),
        3 => armed(
            "checkpoint committed, reply lost",
            UpdateWatermark,
            0,
            AfterEffect,
        ),
        4 => armed(
            "connection dropped mid-scan",
            Scan,
            0,
            MidStream(rng.random_range(0..8)),
        ),
        5 => armed(
            "load start committed, reply lost",
            InsertWatermark,
            0,
            AfterEffect,
        ),
        _ => armed("connection dropped before a scan", Scan, 0, Before),
    }
}

fn timer(at: DateTime<Utc>) -> TimerTrigger {
    TimerTrigger {
        trigger_time: at,
        last: None,
        is_past_due: false,
    }
}

/// Guarantees 1–4: a full load and hundreds of windows of random DML with a fault injected in
/// most invocations, the oracle checked after every one of them.
#[tokio::test]
async fn random_crashes_and_retries_lose_and_duplicate_nothing() {
    let seed = env_u64("CDC_COPY_FAULT_SEED", 0x5eed_cdc0);
    let runs = env_u64("CDC_COPY_FAULT_RUNS", 500);
    let started = std::time::Instant::now();
    let mut rng = StdRng::seed_from_u64(seed);
    let bench = bench(60).await;
    let mut ledger = Ledger::new();
    let mut faults: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut invocations = 0u64;

    // The full load, crashed and resumed until done (by FullLoad, or by the timer run).
    let mut attempts = 0;
    loop {
        attempts += 1;
        assert!(attempts < 100, "seed {seed}: the full load never finished");
        let context = format!("seed {seed}, full-load attempt {attempts}");
        let fault = if attempts < 12 {
            full_load_fault(&mut rng, attempts)
        } else {
            None
        };
        let failed = if attempts > 1 && rng.random_bool(0.3) {
            bench.model.advance(Duration::seconds(1));
            let trigger = timer(bench.model.now());
            let job = jobs::incremental::run(&bench.ctx, &trigger);
            invoke(&bench, fault, &mut faults, &context, job).await
        } else {
            invoke(&bench, fault, &mut faults, &context, bench.full_load()).await
        };
        invocations += 1;
        ledger.check(&bench, &context).await;
        if !failed
            && bench
                .model
                .watermark(&bench.table)
                .is_some_and(|w| w.loading().is_none())
        {
            break;
        }
    }

    let mut next_id = 1000;
    let mut window = 0u64;
    let mut trigger = bench.model.now();
    let mut retry = false;
    while invocations < runs {
        if !retry {
            window += 1;
            random_dml(&bench, &mut rng, &mut next_id, window);
            if rng.random_bool(0.2) {
                // A change at the very edge of the window.
                bench
                    .model
                    .insert(&bench.table, customer(next_id, window))
                    .unwrap();
                next_id += 1;
            }
            bench.model.advance(Duration::minutes(15));
            if rng.random_bool(0.05) {
                // A missed occurrence: the next run covers two periods.
                random_dml(&bench, &mut rng, &mut next_id, window);
                bench.model.advance(Duration::minutes(15));
            }
            trigger = bench.model.now() - Duration::seconds(rng.random_range(0..60));
        }
        let context = format!("seed {seed}, invocation {invocations}, window {window}");
        let fault = if rng.random_bool(0.6) {
            incremental_fault(&mut rng)
        } else {
            None
        };
        let at = timer(trigger);
        let job = jobs::incremental::run(&bench.ctx, &at);
        let failed = invoke(&bench, fault, &mut faults, &context, job).await;
        invocations += 1;
        ledger.check(&bench, &context).await;
        if failed {
            // The host retries the same trigger, or the next occurrence comes.
            retry = rng.random_bool(0.5);
        } else {
            retry = false;
            let wm = bench.watermark();
            assert!(
                wm.pending().is_none(),
                "{context}: a done run leaves no pending window"
            );
            assert_eq!(wm.last_window_end, trigger, "{context}: window end");
        }
    }

    // A clean final run, then the full replay of Bench as a cross-check of the ledger.
    bench.model.advance(Duration::minutes(15));
    let report = jobs::incremental::run(&bench.ctx, &timer(bench.model.now())).await;
    assert_eq!(
        report.status,
        Status::Done,
        "seed {seed}: {:?}",
        report.logs()
    );
    ledger
        .check(&bench, &format!("seed {seed}, final run"))
        .await;
    bench
        .assert_consistent(&format!("seed {seed}, final full replay"))
        .await;

    let f = &ledger.figures;
    let injected: u64 = faults.values().sum();
    let source_changes = bench
        .model
        .changes_since(&bench.table, cdc_copy::cdc::Lsn::ZERO)
        .len();
    println!(
        "faults_crash: seed {seed:#x}: {invocations} invocations ({window} windows), {injected} faults injected {faults:?}; \
         {} commits checked ({} byte-identical re-commits), {} incremental blobs, {} change rows replayed, \
         {source_changes} source changes covered, {} full-load rows; lost = {}, duplicated = {}; {:.1}s",
        f.commits_checked,
        f.recommits,
        f.incremental_blobs,
        f.change_rows,
        f.full_load_rows,
        f.lost,
        f.duplicated,
        started.elapsed().as_secs_f64()
    );
    assert_eq!((f.lost, f.duplicated), (0, 0));
    assert!(invocations >= runs);
    // Every kind of fault was exercised.
    for kind in [
        "crash before the stream",
        "crash between staged blocks",
        "crash after the last row, before the window is recorded",
        "crash before the window is recorded",
        "crash after the window is recorded, before the commit",
        "crash after the commit, before the advance",
        "crash between staged blocks of a part",
        "crash after a part's last row, before its commit",
        "crash after a part's commit, before its checkpoint",
        "checkpoint committed, reply lost",
        "load start committed, reply lost",
        "connection dropped mid-scan",
        "connection dropped before a scan",
        "UpdateWatermark committed, reply lost",
        "connection dropped before UpdateWatermark",
        "connection dropped mid-stream",
    ] {
        if runs >= 500 {
            assert!(
                faults.contains_key(kind),
                "seed {seed}: never injected {kind}: {faults:?}"
            );
        }
    }
}

/// Which invocations run at once in a round of the overlap test.
#[derive(Debug, Clone, Copy)]
enum Runner {
    /// The timer occurrence.
    Timer,
    /// The host retrying the same occurrence (e.g. after a timeout it took for a failure).
    Retry,
    /// The previous occurrence, arriving late.
    Late,
    /// `handler incremental-copy` from a shell: its own trigger time, a little later.
    Cli,
}

/// Guarantee 1 with overlapping invocations: 2–4 runs at once (the timer, a retry racing it,
/// a late run of the previous occurrence, a CLI run with another trigger time), sometimes one
/// of them crashing. Each window is claimed by exactly one invocation, the others end cleanly
/// (superseded / up to date), and the strict replay holds after every round.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn overlapping_invocations_claim_each_window_once() {
    let seed = env_u64("CDC_COPY_FAULT_SEED", 0x0e7a_0001);
    let rounds = env_u64("CDC_COPY_OVERLAP_ROUNDS", 40);
    let mut rng = StdRng::seed_from_u64(seed);
    let bench = bench(20).await;
    assert_eq!(bench.full_load().await.status, Status::Done);
    let mut ledger = Ledger::new();
    ledger.check(&bench, "after the full load").await;
    let mut claimed: BTreeSet<String> = BTreeSet::new();
    let mut notes: BTreeMap<String, u64> = BTreeMap::new();
    let mut crashes = 0;
    let mut next_id = 1000;
    let mut previous = bench.model.now();
    for round in 1..=rounds {
        random_dml(&bench, &mut rng, &mut next_id, round);
        bench
            .model
            .insert(&bench.table, customer(next_id, round))
            .unwrap();
        next_id += 1;
        bench.model.advance(Duration::minutes(15));
        let occurrence = bench.model.now() - Duration::seconds(10);
        let mut runners = vec![Runner::Timer, Runner::Retry, Runner::Late, Runner::Cli];
        let keep = rng.random_range(2..=4);
        while runners.len() > keep {
            runners.remove(rng.random_range(0..runners.len()));
        }
        // One invocation may crash: its own fault plan in front of the shared model.
        let crash_one = rng.random_bool(0.3).then(|| {
            // Crashes only, no lost replies: an advance that committed with its reply lost
            // would be a window no report can claim.
            let crashes = [
                (Method::NetChanges, 0, Fault::Before),
                (
                    Method::NetChanges,
                    0,
                    Fault::MidStream(rng.random_range(3..=12)),
                ),
                (Method::NetChanges, 0, Fault::AfterEffect),
                (Method::UpdateWatermark, 1, Fault::Before),
            ];
            (
                rng.random_range(0..runners.len()),
                crashes[rng.random_range(0..crashes.len())],
            )
        });
        let mut handles = Vec::new();
        for (i, runner) in runners.iter().enumerate() {
            let mut ctx: Context = bench.ctx.clone();
            if let Some((_, (method, skip, fault))) = crash_one.filter(|(who, _)| *who == i) {
                let faults = Faults::new();
                faults.arm_after(method, skip, fault);
                ctx.source = faults.wrap(Arc::new(bench.model.clone()));
            }
            let at = match runner {
                Runner::Timer | Runner::Retry => occurrence,
                Runner::Late => previous,
                Runner::Cli => bench.model.now(),
            };
            let runner = *runner;
            handles.push(tokio::spawn(async move {
                (runner, jobs::incremental::run(&ctx, &timer(at)).await)
            }));
        }
        previous = occurrence;
        for handle in handles {
            let (runner, report) = handle.await.expect("no panic");
            let context = format!("seed {seed}, round {round}, {runner:?}");
            let table = &report.return_value()["tables"][0];
            // What an invocation committed and advanced past is its claim, also when it failed
            // afterwards (a crash after finishing a pending window).
            for blob in table["blobs"].as_array().unwrap() {
                let blob = blob.as_str().unwrap().to_string();
                assert!(
                    claimed.insert(blob.clone()),
                    "{context}: {blob} claimed by a second invocation"
                );
            }
            if report.status == Status::Failed {
                assert!(
                    report.logs()[0].contains("injected failure"),
                    "{context}: {:?}",
                    report.logs()
                );
                crashes += 1;
                continue;
            }
            assert!(
                matches!(report.status, Status::Done | Status::Superseded),
                "{context}: {:?}",
                report.logs()
            );
            let note = table["note"].as_str().unwrap().to_string();
            let key = note.split(':').next().unwrap().to_string();
            *notes.entry(key).or_default() += 1;
        }
        ledger
            .check(&bench, &format!("seed {seed}, after round {round}"))
            .await;
    }
    // A last clean run finishes any window a crash left pending.
    bench.model.advance(Duration::minutes(15));
    let report = bench.incremental(bench.model.now()).await;
    assert_eq!(report.status, Status::Done, "{:?}", report.logs());
    for blob in report.return_value()["tables"][0]["blobs"]
        .as_array()
        .unwrap()
    {
        assert!(claimed.insert(blob.as_str().unwrap().to_string()));
    }
    ledger.check(&bench, "after the last run").await;
    bench.assert_consistent("overlap: final full replay").await;
    let blobs: BTreeSet<String> = bench.incremental_blobs().await.into_iter().collect();
    assert_eq!(
        claimed, blobs,
        "every committed window is claimed by exactly one invocation"
    );
    assert!(
        notes.get("superseded").copied().unwrap_or(0)
            + notes.get("up to date").copied().unwrap_or(0)
            > 0,
        "some invocations lost the race: {notes:?}"
    );
    println!(
        "faults_crash overlap: seed {seed:#x}: {rounds} rounds, outcomes {notes:?}, {crashes} crashed, {} windows each claimed once; lost = {}, duplicated = {}",
        claimed.len(),
        ledger.figures.lost,
        ledger.figures.duplicated
    );
}

//! Guarantees 1–4 under crashes, retries and overlapping invocations, against the CDC model and
//! a real Azurite, checked by the replay oracle after every invocation (tests/common/ledger.rs).
//!
//! The crash test is randomized but seeded and reproducible: `CDC_COPY_FAULT_SEED` picks the
//! seed (printed in the summary and in every failure message), `CDC_COPY_FAULT_RUNS` the number
//! of invocations (500 by default; docs/guarantees.md has the long modes). Faults:
//! - a crash at every job [`Step`] (the hook returns an error there, as a dying process
//!   would stop), including between staged blocks ([`Step::BlockStaged`], blocks of 256 bytes
//!   so that windows span several);
//! - the watermark update lost after it committed (`fail_after_effect`) or refused before
//!   (`fail_next`), on the pending-window record and on the advance;
//! - the SQL connection dropped mid-stream, and before the login, the watermark read, the
//!   capture-progress query or the count;
//! - during the full load: crashes between blocks, after a part, mid-scan, a lost checkpoint
//!   reply; the load is resumed by FullLoad or by the timer run.
//!
//! After a failed invocation the test either retries the same trigger (the host's retry
//! policy) or moves on to the next timer occurrence, sometimes skipping one (a missed run).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use cdc_copy::host::{JobReport, Outcome, TimerTrigger};
use cdc_copy::jobs::{self, Context, JobError, Step};
use cdc_copy_testkit::model::{CdcModel, Method};

use common::cdc::{customer, random_dml, start_time, Bench};
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

/// A model fault armed when the job reaches a step (so it hits the next call of its kind).
#[derive(Debug, Clone, Copy)]
enum ModelFault {
    /// The next watermark update commits, then its reply is lost.
    LostReply,
    /// The next watermark update fails before it runs.
    Refused,
    /// The next net-changes stream drops after this many rows.
    MidStream(u64),
    /// The next full-load scan drops after this many rows.
    MidScan(u64),
}

/// What the fault hook does in the current invocation.
#[derive(Debug, Default)]
struct Armed {
    /// Crash at the n-th occurrence of the step.
    crash: Option<(Step, u32)>,
    /// Arm a model fault at the first occurrence of the step.
    model: Option<(Step, ModelFault)>,
}

/// Installs the hook on the bench; the returned handle arms it per invocation.
fn install_hook(bench: &mut Bench) -> Arc<Mutex<Armed>> {
    let armed = Arc::new(Mutex::new(Armed::default()));
    let hook_armed = armed.clone();
    let model = bench.model.clone();
    bench.ctx.faults = Some(Arc::new(move |_, step| {
        let mut a = hook_armed.lock().unwrap();
        if let Some((at, n)) = a.crash.as_mut() {
            if *at == step {
                *n -= 1;
                if *n == 0 {
                    a.crash = None;
                    return Err(JobError::Injected(step));
                }
            }
        }
        if let Some((at, fault)) = a.model {
            if at == step {
                a.model = None;
                match fault {
                    ModelFault::LostReply => model.fail_after_effect(Method::UpdateWatermark, 1),
                    ModelFault::Refused => model.fail_next(Method::UpdateWatermark, 1),
                    ModelFault::MidStream(rows) => model.fail_mid_stream(rows),
                    ModelFault::MidScan(rows) => model.fail_mid_scan(rows),
                }
            }
        }
        Ok(())
    }));
    armed
}

/// A bench with small blocks and parts of 8 rows.
async fn bench(rows: i64) -> Bench {
    let mut bench = Bench::new(
        rows,
        CdcModel::new(start_time()),
        &[("CDC_FULL_LOAD_PART_ROWS", "8")],
    )
    .await;
    let mut settings = (*bench.ctx.settings).clone();
    settings.block_size = BLOCK_SIZE;
    bench.ctx.settings = Arc::new(settings);
    bench
}

/// The kind of fault a failed report shows (from its message), `None` when it shows none.
fn injected_kind(report: &JobReport) -> Option<String> {
    let line = report.logs.join("\n");
    if let Some(at) = line.split("injected fault at ").nth(1) {
        let step: String = at.chars().take_while(|c| c.is_alphanumeric()).collect();
        return Some(format!("crash at {step}"));
    }
    for method in [
        "UpdateWatermark",
        "InsertWatermark",
        "Session",
        "ReadWatermark",
        "CaptureProgress",
        "CountNetChanges",
        "Scan",
    ] {
        if line.contains(&format!("connection dropped after {method} ran")) {
            return Some(format!("{method} committed, reply lost"));
        }
        if line.contains(&format!("connection dropped before {method}")) {
            return Some(format!("connection dropped before {method}"));
        }
    }
    if line.contains("connection dropped during NetChanges") {
        return Some("connection dropped mid-stream".to_string());
    }
    if line.contains("connection dropped during Scan") {
        return Some("connection dropped mid-scan".to_string());
    }
    None
}

/// Records what an invocation injected; a report fails exactly when a fault was injected.
fn tally(report: &JobReport, faults: &mut BTreeMap<String, u64>, context: &str) -> bool {
    match injected_kind(report) {
        Some(kind) => {
            assert_eq!(
                report.outcome,
                Outcome::Failed,
                "{context}: {:?}",
                report.logs
            );
            *faults.entry(kind).or_default() += 1;
            true
        }
        None => {
            assert!(
                matches!(report.outcome, Outcome::Done | Outcome::InProgress),
                "{context}: failed without an injected fault: {:?}",
                report.logs
            );
            false
        }
    }
}

/// Arms one random incremental-copy fault (or none) for the next invocation.
fn arm_incremental(rng: &mut StdRng, armed: &Mutex<Armed>, model: &CdcModel) {
    let mut a = armed.lock().unwrap();
    *a = Armed::default();
    let update_at = |rng: &mut StdRng| {
        if rng.random_bool(0.5) {
            Step::Planned
        } else {
            Step::BlobCommitted
        }
    };
    match rng.random_range(0..20) {
        0 => a.crash = Some((Step::Planned, 1)),
        1 => a.crash = Some((Step::PendingRecorded, 1)),
        2 | 3 => a.crash = Some((Step::BlockStaged, rng.random_range(1..=3))),
        4 => a.crash = Some((Step::BlocksStaged, 1)),
        5 | 6 => a.crash = Some((Step::BlobCommitted, 1)),
        7 | 8 => a.model = Some((update_at(rng), ModelFault::LostReply)),
        9 => a.model = Some((update_at(rng), ModelFault::Refused)),
        10 => {
            a.model = Some((
                Step::PendingRecorded,
                ModelFault::MidStream(rng.random_range(0..6)),
            ))
        }
        11 => {
            let method = [
                Method::Session,
                Method::ReadWatermark,
                Method::CaptureProgress,
                Method::CountNetChanges,
            ][rng.random_range(0..4)];
            model.fail_next(method, 1);
        }
        _ => {}
    }
}

/// Arms one random full-load fault for the next invocation.
fn arm_full_load(rng: &mut StdRng, armed: &Mutex<Armed>, model: &CdcModel) {
    let mut a = armed.lock().unwrap();
    *a = Armed::default();
    match rng.random_range(0..7) {
        0 => a.crash = Some((Step::BlockStaged, rng.random_range(1..=4))),
        1 => a.crash = Some((Step::BlocksStaged, rng.random_range(1..=3))),
        2 => a.crash = Some((Step::PartCommitted, rng.random_range(1..=3))),
        3 => a.model = Some((Step::PartCommitted, ModelFault::LostReply)),
        4 => {
            a.model = Some((
                Step::PartCommitted,
                ModelFault::MidScan(rng.random_range(0..8)),
            ))
        }
        5 => model.fail_after_effect(Method::InsertWatermark, 1),
        _ => model.fail_next(Method::Scan, 1),
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
    let mut bench = bench(60).await;
    let armed = install_hook(&mut bench);
    let mut ledger = Ledger::new();
    let mut faults: BTreeMap<String, u64> = BTreeMap::new();
    let mut invocations = 0u64;

    // The full load, crashed and resumed until done (by FullLoad, or by the timer run).
    let mut attempts = 0;
    loop {
        attempts += 1;
        assert!(attempts < 100, "seed {seed}: the full load never finished");
        let context = format!("seed {seed}, full-load attempt {attempts}");
        if attempts < 12 {
            arm_full_load(&mut rng, &armed, &bench.model);
        } else {
            *armed.lock().unwrap() = Armed::default();
        }
        let report = if attempts > 1 && rng.random_bool(0.3) {
            bench.model.advance(Duration::seconds(1));
            jobs::incremental::run(&bench.ctx, &timer(bench.model.now())).await
        } else {
            bench.full_load().await
        };
        invocations += 1;
        let failed = tally(&report, &mut faults, &context);
        ledger.check(&bench, &context).await;
        if !failed
            && bench
                .model
                .watermark(&bench.table)
                .is_some_and(|w| w.full_load.is_none())
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
        if rng.random_bool(0.6) {
            arm_incremental(&mut rng, &armed, &bench.model);
        } else {
            *armed.lock().unwrap() = Armed::default();
        }
        let report = jobs::incremental::run(&bench.ctx, &timer(trigger)).await;
        invocations += 1;
        let failed = tally(&report, &mut faults, &context);
        ledger.check(&bench, &context).await;
        if failed {
            // The host retries the same trigger, or the next occurrence comes.
            retry = rng.random_bool(0.5);
        } else {
            retry = false;
            let wm = bench.watermark();
            assert!(
                wm.pending.is_none(),
                "{context}: a done run leaves no pending window"
            );
            assert_eq!(wm.last_window_end, trigger, "{context}: window end");
        }
    }

    // A clean final run, then the full replay of Bench as a cross-check of the ledger.
    *armed.lock().unwrap() = Armed::default();
    bench.model.advance(Duration::minutes(15));
    let report = jobs::incremental::run(&bench.ctx, &timer(bench.model.now())).await;
    assert_eq!(
        report.outcome,
        Outcome::Done,
        "seed {seed}: {:?}",
        report.logs
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
        "crash at Planned",
        "crash at PendingRecorded",
        "crash at BlockStaged",
        "crash at BlocksStaged",
        "crash at BlobCommitted",
        "crash at PartCommitted",
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
    assert_eq!(bench.full_load().await.outcome, Outcome::Done);
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
        let crash_one = rng.random_bool(0.3).then(|| {
            let steps = [
                Step::PendingRecorded,
                Step::BlockStaged,
                Step::BlocksStaged,
                Step::BlobCommitted,
            ];
            (
                rng.random_range(0..runners.len()),
                steps[rng.random_range(0..steps.len())],
            )
        });
        let mut handles = Vec::new();
        for (i, runner) in runners.iter().enumerate() {
            let mut ctx: Context = bench.ctx.clone();
            if let Some((who, step)) = crash_one.filter(|(who, _)| *who == i) {
                let _ = who;
                ctx.faults = Some(Arc::new(move |_, at| {
                    if at == step {
                        Err(JobError::Injected(at))
                    } else {
                        Ok(())
                    }
                }));
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
            let table = &report.summary["tables"][0];
            if report.outcome == Outcome::Failed {
                assert!(
                    report.logs[0].contains("injected fault"),
                    "{context}: {:?}",
                    report.logs
                );
                crashes += 1;
                continue;
            }
            assert_eq!(
                report.outcome,
                Outcome::Done,
                "{context}: {:?}",
                report.logs
            );
            let note = table["note"].as_str().unwrap().to_string();
            for blob in table["blobs"].as_array().unwrap() {
                let blob = blob.as_str().unwrap().to_string();
                assert!(
                    claimed.insert(blob.clone()),
                    "{context}: {blob} claimed by a second invocation"
                );
            }
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
    assert_eq!(report.outcome, Outcome::Done, "{:?}", report.logs);
    for blob in report.summary["tables"][0]["blobs"].as_array().unwrap() {
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

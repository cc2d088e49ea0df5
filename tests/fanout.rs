//! Guarantee 9 with real parts: `CDC_FANOUT=queue` over 100 tables of random DML, 1, 2 and 4
//! handler instances behind the Functions host's queue listener (the stand-in of
//! `cdc_copy_testkit::queue`) on a real Azurite queue service, blobs in a real Azurite, the CDC
//! model as SQL Server. After every round the replay oracle (tests/common/ledger.rs) checks
//! each table: every change in exactly one blob, a re-committed blob byte-identical.
//!
//! What is thrown at it, on purpose:
//! - duplicate messages (the same table and trigger time twice);
//! - late messages: a round's message held back and delivered after the next round's (a
//!   message that arrives after a later trigger's message) — and, at the end, stale copies of
//!   every round's messages;
//! - an instance killed mid-message in each round: at a chosen round trip of a
//!   chosen job (before the changes are read, before the window is recorded, after the blob
//!   is committed and before the watermark advances), the instance stops dead — its runtime is
//!   dropped with the job in it, as SIGKILL would, and its listener lets go of nothing — and a
//!   fresh instance takes its place. Its message reappears when its lease runs out.
//!
//! Instances are `host::run` servers with the production `jobs::Runner`, each on a tokio
//! runtime of its own (dropping the runtime is the kill), in this process, because the CDC
//! model is in-process memory: N handler processes could not share one SQL Server here. The
//! handler binary itself is driven by the same stand-in in tests/host_queue.rs.
//!
//! Time: the model's clock is the test's (random DML advances it); the queue's leases are
//! Azurite's, so they are short real timeouts (a 1 s lease for a killed instance's message,
//! 0 s before a failed one is tried again): a paused tokio clock cannot move Azurite's.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use cdc_copy::cdc::{TableRef, TableState};
use cdc_copy::config::Settings;
use cdc_copy::host::FullLoadRequest;
use cdc_copy::jobs::{self, Context};
use cdc_copy::sink::blob::BlobTarget;
use cdc_copy_testkit::azurite::{unique_container, Azurite, AzuriteQueue};
use cdc_copy_testkit::faults::{Faults, Method};
use cdc_copy_testkit::model::CdcModel;
use cdc_copy_testkit::queue::{HandlerInstance, ListenerFigures, QueueFunction, QueueHost};

use common::cdc::{customer, random_dml, settings, start_time, Bench, COLUMNS};
use common::ledger::{Figures, Ledger};

const TABLES: usize = 100;
const ROUNDS: usize = 5;

/// One handler instance ([`HandlerInstance`]) over the shared model.
fn start(settings: &Arc<Settings>, model: &CdcModel) -> Arc<HandlerInstance> {
    HandlerInstance::start(settings, Arc::new(model.clone()), "instance")
}

/// Where a kill strikes, in a job's order of side effects. Every window has rows, so an
/// instance's first watermark write of a round records its first window and the second
/// advances past it (its blob committed in between) — unless a duplicate of that message
/// won the record elsewhere first, when the second write is the next message's record.
const KILL_POINTS: [(&str, Method, u32); 4] = [
    ("before the changes are read", Method::NetChanges, 0),
    ("before the window is recorded", Method::UpdateWatermark, 0),
    (
        "after the blob is committed, before the advance",
        Method::UpdateWatermark,
        1,
    ),
    ("before the watermark is read", Method::ReadWatermark, 0),
];

fn table(i: usize) -> TableRef {
    TableRef::parse(&format!("dbo.t{i:03}")).unwrap()
}

/// The timer invocation for `at`, as the host posts it.
fn timer_payload(at: DateTime<Utc>) -> String {
    let at = at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
    json!({
        "Data": {"timer": {"Schedule": {"AdjustForDST": true},
            "ScheduleStatus": {"Last": "0001-01-01T00:00:00", "Next": at, "LastUpdated": at},
            "IsPastDue": false}},
        "Metadata": {"sys": {"MethodName": "IncrementalCopy", "UtcNow": at, "RandGuid": "x"}},
    })
    .to_string()
}

#[derive(Debug, Default)]
struct Tally {
    rounds: u64,
    messages: u64,
    duplicates: u64,
    late: u64,
    stale: u64,
    kills: BTreeMap<&'static str, u64>,
    listeners: ListenerFigures,
    oracle: Figures,
}

/// The tables (customers-shaped, CDC on, three rows each, fully loaded), the settings every
/// instance shares, the oracle's benches and the host stand-in with its queues.
struct World {
    model: CdcModel,
    tables: Vec<TableRef>,
    settings: Arc<Settings>,
    benches: Vec<Bench>,
    standin: QueueHost,
}

async fn world(count: usize) -> World {
    let model = CdcModel::new(start_time());
    let tables: Vec<TableRef> = (0..count).map(table).collect();
    for t in &tables {
        model
            .create_table(
                t.clone(),
                COLUMNS.iter().map(|c| c.to_string()).collect(),
                vec!["customer_id".to_string()],
            )
            .unwrap();
        model
            .enable_cdc(t, &format!("dbo_{}", t.table), true)
            .unwrap();
        for id in 0..3 {
            model.insert(t, customer(id, 0)).unwrap();
        }
    }
    model.advance(chrono::Duration::seconds(1));

    let azurite = Azurite::shared();
    let container = unique_container("fanout");
    let names: Vec<String> = tables.iter().map(ToString::to_string).collect();
    let names = names.join(",");
    let settings = Arc::new(settings(
        azurite,
        &container,
        &[
            ("CDC_TABLES", names.as_str()),
            ("CDC_FANOUT", "queue"),
            ("CDC_QUEUE_MAX_DEQUEUE_COUNT", "5"),
        ],
    ));
    // The oracle's view: one bench per table over the shared model and container.
    let clock_model = model.clone();
    let ctx = Context {
        settings: settings.clone(),
        source: Arc::new(model.clone()),
        blobs: BlobTarget::new(&settings.storage, &settings.container).unwrap(),
        clock: Arc::new(move || clock_model.now()),
        container_ready: Arc::default(),
    };
    let report = jobs::full_load::run(
        &ctx,
        &FullLoadRequest::default_all(),
        Duration::from_secs(600),
    )
    .await;
    assert_eq!(
        report.status,
        cdc_copy::report::Status::Done,
        "{:?}",
        report.logs()
    );
    let benches = tables
        .iter()
        .map(|t| Bench {
            model: model.clone(),
            faults: Faults::new(),
            ctx: ctx.clone(),
            table: t.clone(),
        })
        .collect();

    let queue = unique_container("tables");
    let function = QueueFunction {
        name: "CopyTable".into(),
        queue: queue.clone(),
        binding: "message".into(),
        outputs: [("poison".to_string(), format!("{queue}-poison"))].into(),
        max_dequeue_count: 5,
        retry_after: Duration::ZERO,
        lease: Duration::from_secs(1),
    };
    let standin = QueueHost::new(AzuriteQueue::shared().client(), function);
    standin.create_queues().await.unwrap();
    World {
        model,
        tables,
        settings,
        benches,
        standin,
    }
}

async fn run(instances: usize, kills: bool, seed: u64) -> Tally {
    let mut rng = StdRng::seed_from_u64(seed);
    let World {
        model,
        tables,
        settings,
        benches,
        standin,
    } = world(TABLES).await;
    let queue = standin.function.queue.clone();
    let mut ledgers: Vec<Ledger> = tables.iter().map(|_| Ledger::new()).collect();
    let mut next_ids = vec![3i64; TABLES];
    let slots: Vec<Mutex<Arc<HandlerInstance>>> = (0..instances)
        .map(|_| Mutex::new(start(&settings, &model)))
        .collect();

    let mut tally = Tally::default();
    let mut held: Vec<String> = Vec::new();
    let mut sent: Vec<String> = Vec::new();
    let http = reqwest::Client::new();
    for round in 0..=ROUNDS {
        let last = round == ROUNDS;
        if !last {
            for (i, bench) in benches.iter().enumerate() {
                random_dml(bench, &mut rng, &mut next_ids[i], round as u64 + 1);
                // At least one change per table and round, so every window has rows and a
                // kill point names the step it strikes (see KILL_POINTS).
                model
                    .insert(&bench.table, customer(next_ids[i], 0))
                    .unwrap();
                next_ids[i] += 1;
            }
        }
        model.advance(chrono::Duration::seconds(30));
        // The timer fires on one instance; its Outputs.tables go to the queue.
        let base = slots[0].lock().unwrap().instance.base_url.clone();
        let answer: Value = http
            .post(format!("{base}/IncrementalCopy"))
            .body(timer_payload(model.now()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let messages: Vec<String> = answer["Outputs"]["tables"]
            .as_array()
            .unwrap_or_else(|| panic!("no Outputs.tables: {answer}"))
            .iter()
            .map(Value::to_string)
            .collect();
        assert_eq!(messages.len(), TABLES);
        tally.messages += messages.len() as u64;
        // Late ones from the previous round go in after this round's.
        let late = std::mem::take(&mut held);
        for message in &messages {
            if !last && rng.random_bool(0.1) {
                held.push(message.clone());
                continue;
            }
            standin.client.put(&queue, message).await.unwrap();
            if rng.random_bool(0.2) {
                standin.client.put(&queue, message).await.unwrap();
                tally.duplicates += 1;
            }
        }
        for message in &late {
            standin.client.put(&queue, message).await.unwrap();
            tally.late += 1;
        }
        if last {
            // Stale copies of every earlier message: all older than the watermarks by now.
            for message in sent.iter().step_by(7) {
                standin.client.put(&queue, message).await.unwrap();
                tally.stale += 1;
            }
        }
        sent.extend(messages);
        let mut armed = None;
        if kills && !last {
            let victim = rng.random_range(0..instances);
            let (label, method, nth) = KILL_POINTS[rng.random_range(0..KILL_POINTS.len())];
            slots[victim].lock().unwrap().kill_at(method, nth);
            armed = Some(label);
        }
        // Every instance listens until the queue is empty; a killed one is replaced.
        let killed = AtomicU64::new(0);
        let figures = futures::future::join_all(slots.iter().map(|slot| async {
            let mut figures = ListenerFigures::default();
            loop {
                let current = slot.lock().unwrap().clone();
                let got = standin
                    .listen(&current.instance, Duration::from_millis(20))
                    .await;
                add(&mut figures, &got);
                if !current.instance.is_killed() {
                    return figures;
                }
                killed.fetch_add(1, Ordering::SeqCst);
                *slot.lock().unwrap() = start(&settings, &model);
            }
        }))
        .await;
        for f in &figures {
            add(&mut tally.listeners, f);
        }
        let struck = killed.load(Ordering::SeqCst);
        match armed {
            Some(label) if struck == 1 => *tally.kills.entry(label).or_default() += 1,
            // The point was not reached this round: disarm it, so it cannot strike unseen.
            Some(_) => slots.iter().for_each(|s| s.lock().unwrap().faults.clear()),
            None => {}
        }
        assert!(struck <= 1, "one kill armed, {struck} instances died");
        for (i, bench) in benches.iter().enumerate() {
            ledgers[i]
                .check(
                    bench,
                    &format!("seed {seed}, round {round}, {}", bench.table),
                )
                .await;
        }
        tally.rounds += 1;
    }
    // Every table is copied up to the last trigger, nothing pending, nothing poisoned.
    for t in &tables {
        let wm = model.watermark(t).unwrap();
        assert!(matches!(wm.state, TableState::Ready), "{t}: {:?}", wm.state);
        assert_eq!(wm.last_window_end, model.now(), "{t}");
        assert_eq!(model.last_error(t), None, "{t}");
    }
    assert!(
        standin
            .client
            .peek(&standin.function.poison_queue())
            .await
            .unwrap()
            .is_empty(),
        "nothing poisoned"
    );
    for ledger in &ledgers {
        let f = &ledger.figures;
        let o = &mut tally.oracle;
        o.checks += f.checks;
        o.commits_checked += f.commits_checked;
        o.recommits += f.recommits;
        o.incremental_blobs += f.incremental_blobs;
        o.change_rows += f.change_rows;
        o.full_load_rows += f.full_load_rows;
        o.lost += f.lost;
        o.duplicated += f.duplicated;
    }
    tally
}

fn add(total: &mut ListenerFigures, f: &ListenerFigures) {
    total.invocations += f.invocations;
    total.succeeded += f.succeeded;
    total.failed += f.failed;
    total.poisoned += f.poisoned;
    total.outputs += f.outputs;
}

fn summary(name: &str, seed: u64, t: &Tally) {
    let o = &t.oracle;
    println!(
        "{name} (seed {seed}): {TABLES} tables, {} rounds, {} messages + {} duplicates + {} late + {} stale; \
         {} invocations ({} ok, {} failed, {} poisoned); kills {:?}; \
         oracle: {} blobs checked ({} re-committed byte-identical), {} incremental blobs, {} change rows, \
         {} full-load rows; lost = {}, duplicated = {}",
        t.rounds,
        t.messages,
        t.duplicates,
        t.late,
        t.stale,
        t.listeners.invocations,
        t.listeners.succeeded,
        t.listeners.failed,
        t.listeners.poisoned,
        t.kills,
        o.commits_checked,
        o.recommits,
        o.incremental_blobs,
        o.change_rows,
        o.full_load_rows,
        o.lost,
        o.duplicated,
    );
}

fn seed() -> u64 {
    std::env::var("CDC_COPY_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(12)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_instance_killed_and_replaced_copies_every_change_exactly_once() {
    let seed = seed();
    let t = run(1, true, seed).await;
    summary("1 instance", seed, &t);
    assert_eq!((t.oracle.lost, t.oracle.duplicated), (0, 0));
    assert_eq!(t.listeners.failed, 0, "a kill is not a failed invocation");
    assert!(!t.kills.is_empty(), "{t:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_with_a_kill_per_round_lose_and_duplicate_nothing() {
    let seed = seed() + 1;
    let t = run(2, true, seed).await;
    summary("2 instances", seed, &t);
    assert_eq!((t.oracle.lost, t.oracle.duplicated), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_instances_with_kills_duplicates_and_late_messages_lose_and_duplicate_nothing() {
    let seed = seed() + 2;
    let t = run(4, true, seed).await;
    summary("4 instances", seed, &t);
    assert_eq!((t.oracle.lost, t.oracle.duplicated), (0, 0));
    assert!(t.duplicates > 0 && t.late > 0 && t.stale > 0, "{t:?}");
}

/// Poison handling with the production jobs behind the stand-in, one instance:
/// - a table blocked by a cleanup gap (a definite failure) is invoked once, answered 200, and
///   its message goes to `cdc-copy-tables-poison` at once with its error;
/// - a table whose every try fails transiently is tried `maxDequeueCount` times (each answer
///   500) and then moved to the poison queue by the host, as it was;
/// - both record `last_error`; the healthy table is copied and has none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn definite_failures_are_poisoned_at_once_transient_ones_after_the_last_try() {
    let w = world(3).await;
    let (good, blocked, flaky) = (&w.tables[0], &w.tables[1], &w.tables[2]);
    w.model.insert(blocked, customer(100, 1)).unwrap();
    w.model.advance(chrono::Duration::minutes(10));
    let after_gap = w.model.insert(blocked, customer(101, 1)).unwrap();
    w.model.advance(chrono::Duration::minutes(10));
    // The cleanup job's low-water mark applies to every capture instance: the other two
    // tables are copied past it first, so only the blocked one has a gap.
    for t in [good, flaky] {
        let r = jobs::timer_table(&w.benches[0].ctx, t, w.model.now()).await;
        assert_eq!(r.status, cdc_copy::report::Status::Done, "{r:?}");
    }
    w.model.cleanup(after_gap);
    for t in &w.tables {
        w.model.insert(t, customer(200, 2)).unwrap();
    }
    w.model.advance(chrono::Duration::minutes(10));
    let slot = start(&w.settings, &w.model);
    let queue = &w.standin.function.queue;
    let message = |t: &TableRef| {
        json!({"table": t.to_string(), "triggerTime": w.model.now(), "isPastDue": false})
            .to_string()
    };
    let poll = Duration::from_millis(20);

    // The good and the blocked table.
    for t in [good, blocked] {
        w.standin.client.put(queue, &message(t)).await.unwrap();
    }
    let first = w.standin.listen(&slot.instance, poll).await;
    assert_eq!(
        (first.invocations, first.succeeded, first.failed),
        (2, 2, 0),
        "a definite failure spends no retry: {first:?}"
    );
    let poison = w.standin.function.poison_queue();
    let poisoned = w.standin.client.peek(&poison).await.unwrap();
    assert_eq!(poisoned.len(), 1, "{poisoned:?}");
    let item: Value = serde_json::from_str(&poisoned[0]).unwrap();
    assert_eq!(item["message"]["table"], blocked.to_string(), "{item}");
    assert_eq!(item["status"], "blocked", "{item}");
    assert_eq!(item["dequeueCount"], 1, "{item}");
    let error = item["error"].as_str().unwrap();
    assert!(
        error.contains(&blocked.to_string()) && error.contains("reset"),
        "{error}"
    );
    let recorded = w
        .model
        .last_error(blocked)
        .expect("last_error of the blocked table");
    assert!(recorded.message.contains("dbo.t001"), "{recorded:?}");
    assert_eq!(w.model.last_error(good), None);
    assert_eq!(
        w.model.watermark(good).unwrap().last_window_end,
        w.model.now()
    );

    // The flaky table: its watermark read fails on every try.
    for _ in 0..5 {
        slot.faults.arm(
            Method::ReadWatermark,
            cdc_copy_testkit::faults::Fault::Before,
        );
    }
    w.standin.client.put(queue, &message(flaky)).await.unwrap();
    let second = w.standin.listen(&slot.instance, poll).await;
    assert_eq!(
        (second.invocations, second.failed, second.poisoned),
        (5, 5, 1),
        "maxDequeueCount tries, then the poison queue: {second:?}"
    );
    let poisoned = w.standin.client.peek(&poison).await.unwrap();
    assert_eq!(poisoned.len(), 2, "{poisoned:?}");
    assert_eq!(poisoned[1], message(flaky), "moved as it was");
    let recorded = w
        .model
        .last_error(flaky)
        .expect("last_error of the flaky table");
    assert!(
        recorded.message.contains("injected failure"),
        "{recorded:?}"
    );
}

/// `last_error`: set by a failed run on the table's watermark row (without moving its
/// version), cleared by the next run that writes the watermark.
#[tokio::test]
async fn last_error_is_set_by_a_failure_and_cleared_by_the_next_success() {
    let bench = Bench::new(3, CdcModel::new(start_time()), &[]).await;
    bench.full_load().await;
    bench.model.insert(&bench.table, customer(100, 1)).unwrap();
    bench.model.advance(chrono::Duration::minutes(1));
    bench
        .faults
        .arm(Method::NetChanges, cdc_copy_testkit::faults::Fault::Before);
    let before = bench.watermark();
    let report = bench.incremental(bench.model.now()).await;
    assert_eq!(report.status, cdc_copy::report::Status::Failed);
    let recorded = bench.model.last_error(&bench.table).expect("recorded");
    assert_eq!(recorded.message, report.tables[0].error.clone().unwrap());
    assert_eq!(
        recorded.at,
        bench.model.now(),
        "stamped with the run's clock"
    );
    assert_eq!(
        bench.watermark(),
        before,
        "the error is not part of the row runs act on"
    );
    let report = bench.incremental(bench.model.now()).await;
    assert_eq!(
        report.status,
        cdc_copy::report::Status::Done,
        "{:?}",
        report.logs()
    );
    assert_eq!(bench.model.last_error(&bench.table), None, "cleared");
    assert_eq!(bench.faults.calls()[&Method::SetLastError], 1);
}

/// The case a redelivery alone never shows: an instance dies after committing a window's
/// blob and before advancing the watermark, and the next trigger's message is taken by
/// another instance while the dead one's message is still leased. The later message must
/// finish the recorded window first (same name, same bytes), then copy its own; the
/// redelivered message, when its lease runs out, is up to date.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_left_by_a_killed_instance_is_finished_before_a_later_trigger_s_window() {
    let mut w = world(1).await;
    w.standin.function.lease = Duration::from_secs(4);
    let (t, bench) = (w.tables[0].clone(), &w.benches[0]);
    let mut ledger = Ledger::new();
    let poll = Duration::from_millis(20);
    let message = |at: DateTime<Utc>| {
        json!({"table": t.to_string(), "triggerTime": at, "isPastDue": false}).to_string()
    };

    w.model.insert(&t, customer(100, 1)).unwrap();
    w.model.advance(chrono::Duration::seconds(30));
    let first = w.model.now();
    let dying = start(&w.settings, &w.model);
    dying.kill_at(Method::UpdateWatermark, 1);
    let queue = w.standin.function.queue.clone();
    w.standin.client.put(&queue, &message(first)).await.unwrap();
    w.standin.listen(&dying.instance, poll).await;
    assert!(dying.instance.is_killed(), "killed after the commit");
    let wm = w.model.watermark(&t).unwrap();
    let TableState::Pending(pending) = &wm.state else {
        panic!("the window is recorded: {:?}", wm.state)
    };
    assert!(
        bench
            .ctx
            .blobs
            .properties(&pending.blob)
            .await
            .unwrap()
            .is_some(),
        "and committed"
    );
    ledger.check(bench, "after the kill").await;

    w.model.insert(&t, customer(101, 1)).unwrap();
    w.model.advance(chrono::Duration::seconds(30));
    let second = w.model.now();
    w.standin
        .client
        .put(&queue, &message(second))
        .await
        .unwrap();
    let survivor = start(&w.settings, &w.model);
    let figures = w.standin.listen(&survivor.instance, poll).await;
    assert_eq!(
        (figures.invocations, figures.succeeded),
        (2, 2),
        "{figures:?}"
    );
    ledger
        .check(bench, "after the later trigger and the redelivery")
        .await;
    let wm = w.model.watermark(&t).unwrap();
    assert!(matches!(wm.state, TableState::Ready), "{:?}", wm.state);
    assert_eq!(wm.last_window_end, second);
    let f = &ledger.figures;
    println!(
        "killed after the commit, finished by the next trigger's message: {} incremental blobs, \
         {} re-committed byte-identical, {} change rows; lost = {}, duplicated = {}",
        f.incremental_blobs, f.recommits, f.change_rows, f.lost, f.duplicated
    );
    assert_eq!((f.incremental_blobs, f.recommits), (2, 1));
}

/// A transient failure on the message's last try (`DequeueCount` = `CDC_QUEUE_MAX_DEQUEUE_COUNT`)
/// is logged as the table's final failure, with the error; an earlier try's is not.
#[tokio::test]
async fn the_last_try_logs_the_table_as_failed_for_good() {
    use cdc_copy::host::{Delivery, Jobs, TableMessage};
    let captured = common::traces::Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::ERROR)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let bench = Bench::new(3, CdcModel::new(start_time()), &[]).await;
    bench.full_load().await;
    let runner = cdc_copy::jobs::Runner::new(
        bench.ctx.settings.clone(),
        bench.ctx.source.clone(),
        bench.ctx.blobs.clone(),
    );
    let message = TableMessage {
        table: bench.table.clone(),
        trigger_time: bench.model.now(),
        is_past_due: false,
    };
    for (count, last) in [(4, false), (5, true)] {
        let before = captured.text().len();
        bench.faults.arm(
            Method::ReadWatermark,
            cdc_copy_testkit::faults::Fault::Before,
        );
        let delivery = Delivery {
            dequeue_count: count,
            id: Some(format!("try-{count}")),
        };
        let report = runner.copy_table(message.clone(), delivery).await;
        assert_eq!(report.status, cdc_copy::report::Status::Failed);
        let log = captured.text()[before..].to_string();
        assert_eq!(log.contains("failed for good"), last, "try {count}: {log}");
        if last {
            assert!(
                log.contains("injected failure") && log.contains("try-5"),
                "{log}"
            );
        }
    }
}

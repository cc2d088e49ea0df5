//! Issue 10 under crashes and overlapping runs, against the CDC model and a real Azurite:
//! a capture-instance switch through a schema change, and a table without a key copied from
//! all changes. Each test replays every committed blob (full load, then incremental blobs in
//! name order, columns taken from each blob's header) after every invocation and compares the
//! result with the source as of the watermark:
//! - switch: keyed by `customer_id`, a column a blob does not carry reads NULL (the new
//!   column before the new instance, as SQL Server gives it); blobs' LSN ranges never overlap;
//! - keyless: the table as a multiset of rows, every all-changes row applied in file order
//!   (1 and 3 remove one equal row, 2 and 4 add one).
//!
//! Seeded and reproducible: `CDC_COPY_FAULT_SEED`, `CDC_COPY_SWITCH_RUNS`.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use cdc_copy::cdc::{Lsn, TableState, Value};
use cdc_copy::host::TimerTrigger;
use cdc_copy::jobs::{self, Context};
use cdc_copy::report::{Report, Status};
use cdc_copy_testkit::faults::{Fault, Method};
use cdc_copy_testkit::model::{CdcModel, ColumnDef};

use common::cdc::{customer, parse_csv, random_dml, render, start_time, Bench};

const BLOCK_SIZE: usize = 256;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|v| v.trim().parse().expect("a number"))
        .unwrap_or(default)
}

fn timer(at: DateTime<Utc>) -> TimerTrigger {
    TimerTrigger {
        trigger_time: at,
        last: None,
        is_past_due: false,
    }
}

/// A random crash point of an incremental run (or none): every call between its side
/// effects, on whichever instance it reads.
fn crash(rng: &mut StdRng, changes: Method) -> Option<(Method, u32, Fault)> {
    let skip = rng.random_range(0..3);
    Some(match rng.random_range(0..12) {
        0 => (changes, skip, Fault::Before),
        1 => (changes, skip, Fault::MidStream(rng.random_range(0..6))),
        2 => (changes, skip, Fault::AfterEffect),
        3 => (Method::UpdateWatermark, skip, Fault::Before),
        4 => (Method::UpdateWatermark, skip, Fault::AfterEffect),
        5 => (Method::CaptureInstance, 0, Fault::Before),
        6 => (Method::CaptureProgress, 0, Fault::Before),
        7 => (Method::ReadWatermark, 0, Fault::Before),
        _ => return None,
    })
}

/// Runs `job` with `fault` armed; a report fails exactly when the fault struck.
async fn invoke(
    bench: &Bench,
    fault: Option<(Method, u32, Fault)>,
    context: &str,
    job: impl std::future::Future<Output = Report>,
) -> (bool, Report) {
    let before = bench.faults.injected();
    if let Some((method, skip, fault)) = fault {
        bench.faults.arm_after(method, skip, fault);
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
    (struck, report)
}

/// One committed blob, parsed: its header and rows.
struct Blob {
    name: String,
    metadata: BTreeMap<String, String>,
    header: Vec<String>,
    rows: Vec<Vec<Option<String>>>,
}

async fn read_blobs(bench: &Bench, prefix: &str) -> Vec<Blob> {
    let mut out = Vec::new();
    for name in bench.blobs(prefix).await {
        let bytes = bench.read(&name).await;
        let metadata = bench
            .ctx
            .blobs
            .properties(&name)
            .await
            .unwrap()
            .unwrap()
            .metadata
            .into_iter()
            .collect();
        let mut records = parse_csv(&bytes);
        let header = records
            .remove(0)
            .into_iter()
            .map(|c| c.expect("header cell"))
            .collect();
        out.push(Blob {
            name,
            metadata,
            header,
            rows: records,
        });
    }
    out
}

/// The latest finished load's parts, in order.
fn load_parts<'a>(blobs: &'a [Blob], table: &str) -> Vec<&'a Blob> {
    let prefix = format!("{table}/full/");
    let latest = blobs
        .iter()
        .filter(|b| b.name.starts_with(&prefix))
        .filter_map(|b| b.name.split('/').nth(3))
        .max()
        .map(str::to_string);
    blobs
        .iter()
        .filter(|b| {
            latest
                .as_deref()
                .is_some_and(|id| b.name.starts_with(&format!("{prefix}{id}/")))
        })
        .collect()
}

/// Incremental blobs in name order, checked never to overlap in LSN; each with its range.
fn incremental<'a>(blobs: &'a [Blob], table: &str, context: &str) -> Vec<&'a Blob> {
    let prefix = format!("{table}/incremental/");
    let list: Vec<&Blob> = blobs
        .iter()
        .filter(|b| b.name.starts_with(&prefix))
        .collect();
    let mut previous: Option<Lsn> = None;
    for blob in &list {
        let from: Lsn = blob.metadata["from_lsn"].parse().unwrap();
        let to: Lsn = blob.metadata["to_lsn"].parse().unwrap();
        if let Some(prev) = previous {
            assert!(
                from > prev,
                "{context}: {} overlaps the blob before it (duplicate)",
                blob.name
            );
        }
        assert_eq!(
            blob.metadata.get("row_count"),
            Some(&blob.rows.len().to_string()),
            "{context}: {}",
            blob.name
        );
        previous = Some(to);
    }
    list
}

/// A row as column name → value, from a blob row under `header`, CDC columns left out.
fn named(header: &[String], row: &[Option<String>]) -> BTreeMap<String, Option<String>> {
    header
        .iter()
        .zip(row)
        .filter(|(h, _)| !h.starts_with("__$"))
        .map(|(h, v)| (h.clone(), v.clone()))
        .collect()
}

/// The columns every row is compared on: a column a blob does not carry reads NULL.
fn normalised(mut row: BTreeMap<String, Option<String>>, columns: &[&str]) -> Vec<Option<String>> {
    columns.iter().map(|c| row.remove(*c).flatten()).collect()
}

// ----- the switch --------------------------------------------------------------------------

const SWITCH_COLUMNS: [&str; 6] = [
    "customer_id",
    "first_name",
    "last_name",
    "email",
    "city",
    "loyalty",
];

/// The replay of a keyed table's blobs, by key.
fn replay_keyed(blobs: &[Blob], context: &str) -> BTreeMap<String, Vec<Option<String>>> {
    let mut rows = BTreeMap::new();
    for part in load_parts(blobs, "dbo/customers") {
        for row in &part.rows {
            let row = normalised(named(&part.header, row), &SWITCH_COLUMNS);
            rows.insert(row[0].clone().unwrap(), row);
        }
    }
    for blob in incremental(blobs, "dbo/customers", context) {
        let op = blob
            .header
            .iter()
            .position(|h| h == "__$operation")
            .unwrap();
        for row in &blob.rows {
            let values = normalised(named(&blob.header, row), &SWITCH_COLUMNS);
            let key = values[0].clone().unwrap();
            match row[op].as_deref() {
                Some("1") => {
                    assert!(
                        rows.remove(&key).is_some(),
                        "{context}: {}: delete of absent {key} (lost)",
                        blob.name
                    )
                }
                Some("2") => assert!(
                    rows.insert(key.clone(), values).is_none(),
                    "{context}: {}: insert of present {key} (duplicate)",
                    blob.name
                ),
                Some("4") => assert!(
                    rows.insert(key.clone(), values).is_some(),
                    "{context}: {}: update of absent {key} (lost)",
                    blob.name
                ),
                other => panic!("{context}: {}: operation {other:?}", blob.name),
            }
        }
    }
    rows
}

/// The source table as of `lsn` by key, over [`SWITCH_COLUMNS`] (a row logged before the new
/// column existed reads NULL there).
fn source_keyed(bench: &Bench, lsn: Lsn) -> BTreeMap<String, Vec<Option<String>>> {
    let mut rows = BTreeMap::new();
    for (at, op, row) in bench.model.changes_since(&bench.table, Lsn::ZERO) {
        if at > lsn {
            break;
        }
        let mut values: Vec<Option<String>> = row.iter().map(render).collect();
        values.resize(SWITCH_COLUMNS.len(), None);
        let key = values[0].clone().unwrap();
        if op == 1 {
            rows.remove(&key);
        } else {
            rows.insert(key, values);
        }
    }
    rows
}

/// What the blobs hold reaches exactly the watermark (or its pending window, once committed).
async fn check_switch(bench: &Bench, context: &str) -> (usize, u64) {
    let blobs = read_blobs(bench, "dbo/customers/").await;
    let wm = bench.watermark();
    if matches!(wm.state, TableState::Loading(_)) {
        return (0, 0);
    }
    let mut copied_to = wm.last_lsn;
    if let TableState::Pending(p) = &wm.state {
        if blobs.iter().any(|b| b.name == p.blob) {
            copied_to = p.range.to();
        }
    }
    let replayed = replay_keyed(&blobs, context);
    let expected = source_keyed(bench, copied_to);
    let lost = expected
        .iter()
        .filter(|(k, v)| replayed.get(*k) != Some(v))
        .count() as u64;
    let duplicated = replayed
        .keys()
        .filter(|k| !expected.contains_key(*k))
        .count() as u64;
    assert_eq!(
        (lost, duplicated),
        (0, 0),
        "{context}: replay differs from the source at {copied_to}"
    );
    let changes = blobs.iter().map(|b| b.rows.len()).sum();
    (changes, lost + duplicated)
}

/// A row of the table after `ALTER TABLE … ADD loyalty`: `loyalty` set only once the new
/// instance exists (before it, the old instance would drop the value, as SQL Server's does).
fn customer6(id: i64, version: u64, loyalty: bool) -> Vec<Value> {
    let mut row = customer(id, version);
    row.push(if loyalty {
        Value::Text(format!("tier {version}"))
    } else {
        Value::Null
    });
    row
}

/// Random DML on the six-column table.
fn random_dml6(bench: &Bench, rng: &mut StdRng, next_id: &mut i64, version: u64, loyalty: bool) {
    let table = &bench.table;
    for _ in 0..rng.random_range(0..10) {
        let keys: Vec<i64> = bench
            .model
            .table_rows(table)
            .iter()
            .map(|r| match r[0] {
                Value::Int(k) => k,
                _ => unreachable!(),
            })
            .collect();
        match rng.random_range(0..8) {
            0..=2 => {
                bench
                    .model
                    .insert(table, customer6(*next_id, version, loyalty))
                    .unwrap();
                *next_id += 1;
            }
            3..=4 if !keys.is_empty() => {
                let k = keys[rng.random_range(0..keys.len())];
                bench
                    .model
                    .update(table, &[Value::Int(k)], customer6(k, version, loyalty))
                    .unwrap();
            }
            5 if !keys.is_empty() => {
                let k = keys[rng.random_range(0..keys.len())];
                bench
                    .model
                    .update(
                        table,
                        &[Value::Int(k)],
                        customer6(*next_id, version, loyalty),
                    )
                    .unwrap();
                *next_id += 1;
            }
            _ if !keys.is_empty() => {
                let k = keys[rng.random_range(0..keys.len())];
                bench.model.delete(table, &[Value::Int(k)]).unwrap();
            }
            _ => {}
        }
        bench
            .model
            .advance(Duration::seconds(rng.random_range(1..60)));
    }
}

/// Random DML with an `ADD COLUMN` and a second capture instance created mid-stream, a crash
/// in most runs and overlapping runs around the switch: nothing lost, nothing duplicated, the
/// new column in the lake from the new instance's start on, and the switch recorded once.
#[tokio::test]
async fn a_schema_change_and_a_second_instance_mid_stream_lose_and_duplicate_nothing() {
    let seed = env_u64("CDC_COPY_FAULT_SEED", 0x5eed_cdc0);
    let runs = env_u64("CDC_COPY_SWITCH_RUNS", 120);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut bench = Bench::new(
        20,
        CdcModel::new(start_time()),
        &[("CDC_FULL_LOAD_PART_ROWS", "8")],
    )
    .await;
    bench.set_block_size(BLOCK_SIZE);
    assert_eq!(bench.full_load().await.status, Status::Done);

    let (ddl_at, enable_at, disable_at) = (runs / 4, runs / 3, runs * 2 / 3);
    let (mut next_id, mut window, mut invocations, mut crashes) = (1000, 0u64, 0u64, 0u64);
    let (mut switches, mut changes_checked) = (0u64, 0usize);
    let mut trigger = bench.model.now();
    let mut retry = false;
    let mut altered = false;
    let mut second = false;
    while invocations < runs {
        if !retry {
            window += 1;
            if window == ddl_at {
                bench
                    .model
                    .add_column(&bench.table, ColumnDef::untyped("loyalty").nullable())
                    .unwrap();
                altered = true;
            }
            if window == enable_at {
                bench
                    .model
                    .enable_cdc(&bench.table, "dbo_customers_v2", true)
                    .unwrap();
                second = true;
            }
            if window == disable_at {
                // The DBA disables the old instance once the switch is logged.
                assert_eq!(
                    bench.watermark().capture_instance,
                    "dbo_customers_v2",
                    "seed {seed}: switched before {window}"
                );
                bench.model.disable_cdc("dbo_customers").unwrap();
            }
            if altered {
                random_dml6(&bench, &mut rng, &mut next_id, window, second);
            } else {
                random_dml(&bench, &mut rng, &mut next_id, window);
            }
            bench.model.advance(Duration::minutes(15));
            trigger = bench.model.now() - Duration::seconds(rng.random_range(0..60));
        }
        let context = format!("seed {seed}, invocation {invocations}, window {window}");
        let overlap = second && rng.random_bool(0.2);
        let failed = if overlap {
            // The timer, its retry and the previous occurrence at once, none crashing.
            let runs: Vec<_> = [trigger, trigger, trigger - Duration::minutes(15)]
                .into_iter()
                .map(|at| {
                    let ctx: Context = bench.ctx.clone();
                    tokio::spawn(async move { jobs::incremental::run(&ctx, &timer(at)).await })
                })
                .collect();
            for run in runs {
                let report = run.await.unwrap();
                assert!(
                    matches!(report.status, Status::Done | Status::Superseded),
                    "{context}: {:?}",
                    report.logs()
                );
                switches += u64::from(report.return_value()["tables"][0].get("switched").is_some());
            }
            false
        } else {
            let fault = if rng.random_bool(0.6) {
                crash(&mut rng, Method::NetChanges)
            } else {
                None
            };
            let at = timer(trigger);
            let job = jobs::incremental::run(&bench.ctx, &at);
            let (failed, report) = invoke(&bench, fault, &context, job).await;
            switches += u64::from(report.return_value()["tables"][0].get("switched").is_some());
            failed
        };
        crashes += u64::from(failed);
        invocations += 1;
        changes_checked = check_switch(&bench, &context).await.0;
        retry = failed && rng.random_bool(0.5);
    }
    bench.model.advance(Duration::minutes(15));
    let report = bench.incremental(bench.model.now()).await;
    assert_eq!(report.status, Status::Done, "{:?}", report.logs());
    check_switch(&bench, &format!("seed {seed}: final run")).await;
    let wm = bench.watermark();
    assert_eq!(wm.capture_instance, "dbo_customers_v2");
    assert_eq!(wm.last_lsn, bench.model.max_lsn().min(wm.last_lsn));
    let blobs = read_blobs(&bench, "dbo/customers/incremental/").await;
    let with_loyalty = blobs
        .iter()
        .filter(|b| b.header.iter().any(|h| h == "loyalty"))
        .count();
    let tails = blobs
        .iter()
        .filter(|b| b.name.ends_with("-dbo_customers.csv"))
        .count();
    assert!(
        with_loyalty > 0,
        "seed {seed}: no blob carries the new column"
    );
    assert!(
        blobs
            .iter()
            .all(|b| b.metadata["capture_instance"] == "dbo_customers_v2"
                || !b.header.iter().any(|h| h == "loyalty")),
        "seed {seed}: only the new instance's blobs carry the new column"
    );
    assert!(switches >= 1, "seed {seed}: the switch was never reported");
    println!(
        "faults_switch: seed {seed:#x}: {invocations} invocations ({window} windows, {crashes} crashed), \
         {switches} switch reported ({tails} tail blob(s) of the old instance), {} blobs with the new column, \
         {changes_checked} change rows checked; lost = 0, duplicated = 0",
        with_loyalty
    );
}

/// A crash at every call of a run whose window spans the new instance's start LSN — the
/// tail's stream, its record, its commit-and-advance (the switch), the new instance's
/// stream, record and advance; before the call, mid-stream, or with the reply lost — then
/// the host's retry of the same trigger: the same two blob names as a run without a crash,
/// and the replay equals the source, nothing twice.
#[tokio::test]
async fn a_crash_at_every_step_of_a_split_window_resumes_exactly() {
    let mut points = Vec::new();
    for skip in 0..2 {
        points.push((Method::NetChanges, skip, Fault::Before));
        points.push((Method::NetChanges, skip, Fault::MidStream(1)));
        points.push((Method::NetChanges, skip, Fault::AfterEffect));
    }
    for skip in 0..4 {
        points.push((Method::UpdateWatermark, skip, Fault::Before));
        points.push((Method::UpdateWatermark, skip, Fault::AfterEffect));
    }
    let mut expected: Option<Vec<String>> = None;
    let mut struck = 0;
    for point in [None].into_iter().chain(points.iter().copied().map(Some)) {
        let context = format!("crash {point:?}");
        let bench = Bench::new(4, CdcModel::new(start_time()), &[]).await;
        assert_eq!(bench.full_load().await.status, Status::Done, "{context}");
        for id in 100..103 {
            bench.model.insert(&bench.table, customer(id, 1)).unwrap();
        }
        bench.model.advance(Duration::seconds(5));
        bench
            .model
            .enable_cdc(&bench.table, "dbo_customers_v2", true)
            .unwrap();
        bench.model.advance(Duration::seconds(5));
        for id in 200..203 {
            bench.model.insert(&bench.table, customer(id, 1)).unwrap();
        }
        bench
            .model
            .update(&bench.table, &[Value::Int(100)], customer(100, 2))
            .unwrap();
        bench.model.advance(Duration::minutes(15));
        let trigger = bench.model.now();
        let (failed, _) = invoke(&bench, point, &context, bench.incremental(trigger)).await;
        struck += u64::from(failed);
        assert_eq!(failed, point.is_some(), "{context}: the fault struck");
        let (retried, report) = invoke(&bench, None, &context, bench.incremental(trigger)).await;
        assert!(!retried);
        assert_eq!(
            report.status,
            Status::Done,
            "{context}: {:?}",
            report.logs()
        );
        check_switch(&bench, &context).await;
        let names = bench.incremental_blobs().await;
        assert_eq!(names.len(), 2, "{context}: {names:?}");
        assert_eq!(
            bench.watermark().capture_instance,
            "dbo_customers_v2",
            "{context}"
        );
        match &expected {
            None => expected = Some(names),
            Some(first) => assert_eq!(&names, first.iter().as_slice(), "{context}: the same names"),
        }
    }
    println!(
        "faults_switch split window: {} crash points, each struck and resumed; the same 2 blob names every time; lost = 0, duplicated = 0",
        struck
    );
}

/// The old instance disabled before the copier switched: the changes between the watermark
/// and the new instance's start are in no instance, and the run says so instead of skipping.
#[tokio::test]
async fn an_old_instance_disabled_before_the_switch_blocks_with_the_remedy() {
    let bench = Bench::new(3, CdcModel::new(start_time()), &[]).await;
    assert_eq!(bench.full_load().await.status, Status::Done);
    bench.model.insert(&bench.table, customer(100, 1)).unwrap();
    bench.model.advance(Duration::minutes(1));
    bench
        .model
        .enable_cdc(&bench.table, "dbo_customers_v2", true)
        .unwrap();
    bench.model.advance(Duration::minutes(1));
    bench.model.disable_cdc("dbo_customers").unwrap();
    bench.model.advance(Duration::minutes(15));
    let report = bench.incremental(bench.model.now()).await;
    assert_eq!(report.status, Status::Blocked, "{:?}", report.logs());
    let error = report.return_value()["tables"][0]["error"]
        .as_str()
        .unwrap()
        .to_string();
    for word in [
        "dbo_customers",
        "dbo_customers_v2",
        "no longer exists",
        "lost",
        "reset",
    ] {
        assert!(error.contains(word), "{word:?} missing from {error}");
    }
    assert!(bench.incremental_blobs().await.is_empty());
}

// ----- keyless -----------------------------------------------------------------------------

const LOG_COLUMNS: [&str; 3] = ["at", "source", "message"];

/// The replay of a keyless table's blobs as a multiset (rows → count).
fn replay_multiset(blobs: &[Blob], context: &str) -> BTreeMap<Vec<Option<String>>, u64> {
    let mut rows: BTreeMap<Vec<Option<String>>, u64> = BTreeMap::new();
    let take =
        |rows: &mut BTreeMap<Vec<Option<String>>, u64>, row: Vec<Option<String>>, what: &str| {
            match rows.get_mut(&row) {
                Some(n) if *n > 1 => *n -= 1,
                Some(_) => {
                    rows.remove(&row);
                }
                None => panic!("{context}: {what} of a row not in the replay (lost): {row:?}"),
            }
        };
    for part in load_parts(blobs, "dbo/audit_log") {
        for row in &part.rows {
            *rows
                .entry(normalised(named(&part.header, row), &LOG_COLUMNS))
                .or_default() += 1;
        }
    }
    for blob in incremental(blobs, "dbo/audit_log", context) {
        let op = blob
            .header
            .iter()
            .position(|h| h == "__$operation")
            .unwrap();
        let mut last: Option<(String, String)> = None;
        let (lsn, seq) = (
            blob.header
                .iter()
                .position(|h| h == "__$start_lsn")
                .unwrap(),
            blob.header
                .iter()
                .position(|h| h == "__$seqval")
                .expect("all changes carry __$seqval"),
        );
        for row in &blob.rows {
            let order = (row[lsn].clone().unwrap(), row[seq].clone().unwrap());
            assert!(
                last.as_ref().is_none_or(|l| *l <= order),
                "{context}: {} out of order",
                blob.name
            );
            last = Some(order);
            let values = normalised(named(&blob.header, row), &LOG_COLUMNS);
            match row[op].as_deref() {
                Some("1") => take(&mut rows, values, "delete"),
                Some("3") => take(&mut rows, values, "update"),
                Some("2") | Some("4") => *rows.entry(values).or_default() += 1,
                other => panic!("{context}: {}: operation {other:?}", blob.name),
            }
        }
    }
    rows
}

/// A model with `dbo.audit_log`, a table without a key, CDC enabled without net changes.
fn audit_log() -> (CdcModel, cdc_copy::cdc::TableRef) {
    let model = CdcModel::new(start_time());
    let table = cdc_copy::cdc::TableRef::parse("dbo.audit_log").unwrap();
    model
        .create_heap(
            table.clone(),
            LOG_COLUMNS.iter().map(|c| ColumnDef::untyped(c)).collect(),
        )
        .unwrap();
    model.enable_cdc(&table, "dbo_audit_log", false).unwrap();
    (model, table)
}

/// An `app` row of the audit log with `message`.
fn row(message: &str) -> Vec<Value> {
    vec![
        Value::Int(1),
        Value::Text("app".into()),
        Value::Text(message.into()),
    ]
}

fn multiset(rows: Vec<Vec<Value>>) -> BTreeMap<Vec<Option<String>>, u64> {
    let mut out = BTreeMap::new();
    for row in rows {
        *out.entry(row.iter().map(render).collect()).or_default() += 1;
    }
    out
}

fn log_row(rng: &mut StdRng, n: u64) -> Vec<Value> {
    // Few distinct values, so duplicate rows are common.
    vec![
        Value::Int(rng.random_range(0..4)),
        Value::Text(["app", "job", "web"][rng.random_range(0..3)].to_string()),
        Value::Text(format!("event {}", n % 5)),
    ]
}

/// A table without a key, random DML with duplicate rows, a crash in most runs: the load and
/// the all-changes files, applied in order, equal the source as a multiset.
#[tokio::test]
async fn a_keyless_table_replays_to_the_source_as_a_multiset() {
    let seed = env_u64("CDC_COPY_FAULT_SEED", 0x5eed_cdc0);
    let runs = env_u64("CDC_COPY_SWITCH_RUNS", 120);
    let mut rng = StdRng::seed_from_u64(seed);
    let (model, table) = audit_log();
    for n in 0..30 {
        model.insert(&table, log_row(&mut rng, n)).unwrap();
    }
    let mut bench = Bench::over_table(model, table.clone(), &[]).await;
    bench.set_block_size(BLOCK_SIZE);
    let report = bench.full_load().await;
    assert_eq!(report.status, Status::Done, "{:?}", report.logs());

    let (mut invocations, mut crashes, mut n) = (0u64, 0u64, 100u64);
    let mut retry = false;
    let mut trigger = bench.model.now();
    while invocations < runs {
        if !retry {
            for _ in 0..rng.random_range(0..10) {
                let rows = bench.model.table_rows(&table);
                match rng.random_range(0..6) {
                    0..=2 => {
                        bench.model.insert(&table, log_row(&mut rng, n)).unwrap();
                    }
                    3 if !rows.is_empty() => {
                        let old = rows[rng.random_range(0..rows.len())].clone();
                        bench
                            .model
                            .update_row(&table, &old, log_row(&mut rng, n))
                            .unwrap();
                    }
                    _ if !rows.is_empty() => {
                        let old = rows[rng.random_range(0..rows.len())].clone();
                        bench.model.delete_row(&table, &old).unwrap();
                    }
                    _ => {}
                }
                n += 1;
                bench
                    .model
                    .advance(Duration::seconds(rng.random_range(1..60)));
            }
            bench.model.advance(Duration::minutes(15));
            trigger = bench.model.now();
        }
        let context = format!("seed {seed}, invocation {invocations}");
        let fault = if rng.random_bool(0.6) {
            crash(&mut rng, Method::AllChanges)
        } else {
            None
        };
        let (failed, report) = invoke(&bench, fault, &context, bench.incremental(trigger)).await;
        if !failed {
            assert_eq!(
                report.return_value()["tables"][0]["mode"],
                "all",
                "{context}"
            );
            // Everything up to the trigger time is captured: the replay is the table now.
            let blobs = read_blobs(&bench, "dbo/audit_log/").await;
            assert_eq!(
                replay_multiset(&blobs, &context),
                multiset(bench.model.table_rows(&table)),
                "{context}: replay vs source"
            );
        }
        crashes += u64::from(failed);
        invocations += 1;
        retry = failed && rng.random_bool(0.5);
    }
    let blobs = read_blobs(&bench, "dbo/audit_log/").await;
    let rows: usize = blobs.iter().map(|b| b.rows.len()).sum();
    let before_images: usize = blobs
        .iter()
        .flat_map(|b| {
            let op = b
                .header
                .iter()
                .position(|h| h == "__$operation")
                .unwrap_or(0);
            b.rows.iter().filter(move |r| r[op].as_deref() == Some("3"))
        })
        .count();
    assert!(
        before_images > 0,
        "updates carry their before-image (all update old)"
    );
    println!(
        "faults_switch keyless: seed {seed:#x}: {invocations} invocations ({crashes} crashed), {} blobs, \
         {rows} rows replayed as a multiset ({before_images} before-images); lost = 0, duplicated = 0",
        blobs.len()
    );
}

/// Writers wait while a keyless table is loaded: a write attempted at the two points where
/// the load holds its lock after the scan (waiting for capture, releasing the lock) is
/// blocked; once the load is done it commits after the baseline and is copied once, by the
/// first window. A load that fails with the lock held releases it (its session is gone).
#[tokio::test]
async fn writers_wait_while_a_keyless_table_is_loaded() {
    let (model, table) = audit_log();
    model.insert(&table, row("before")).unwrap();
    model.insert(&table, row("before")).unwrap();
    let bench = Bench::over_table(model, table.clone(), &[]).await;

    // A load that fails after its scan, with the lock held: the dropped session releases it.
    bench.faults.arm(Method::CaptureProgress, Fault::Before);
    let report = bench.full_load().await;
    assert_eq!(report.status, Status::Failed, "{:?}", report.logs());
    bench.faults.clear();
    bench
        .model
        .insert(&table, row("after a failed load"))
        .unwrap();

    let attempts = Arc::new(std::sync::Mutex::new(Vec::new()));
    for method in [Method::CaptureProgress, Method::ReleaseLock] {
        let (model, table, attempts) = (bench.model.clone(), table.clone(), attempts.clone());
        bench.faults.before_next(method, move || {
            let outcome = model.insert(&table, row("a writer during the load"));
            attempts
                .lock()
                .unwrap()
                .push((method, format!("{outcome:?}")));
        });
    }
    let report = bench.full_load().await;
    assert_eq!(report.status, Status::Done, "{:?}", report.logs());
    let attempts = attempts.lock().unwrap().clone();
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    for (method, outcome) in &attempts {
        assert!(
            outcome.contains("Blocked"),
            "a write at {method}: {outcome}"
        );
    }
    let baseline = bench.watermark().last_lsn;
    let after = bench
        .model
        .insert(&table, row("the writer, once the lock is gone"))
        .unwrap();
    assert!(
        after > baseline,
        "the waiting write commits after the baseline"
    );
    bench.model.advance(Duration::minutes(15));
    let report = bench.incremental(bench.model.now()).await;
    assert_eq!(report.status, Status::Done, "{:?}", report.logs());
    let blobs = read_blobs(&bench, "dbo/audit_log/").await;
    assert_eq!(
        replay_multiset(&blobs, "after the load"),
        multiset(bench.model.table_rows(&table))
    );
    let parts = load_parts(&blobs, "dbo/audit_log");
    assert_eq!(parts.len(), 1, "one blob for a keyless load");
    assert_eq!(parts[0].metadata["parts"], "1");
    assert_eq!(
        parts[0].rows.len(),
        3,
        "the rows committed before the lock, once"
    );
}

/// A keyless load that does not fit a FullLoad call's budget is handed to the timer run: the
/// call answers in progress saying so (the lock released, nothing written), and the next
/// IncrementalCopy run loads the table in one statement, then copies its first window.
#[tokio::test]
async fn a_keyless_load_too_long_for_a_call_is_handed_to_the_timer() {
    let (model, table) = audit_log();
    for _ in 0..3 {
        model.insert(&table, row("before")).unwrap();
    }
    let bench = Bench::over_table(model, table.clone(), &[]).await;
    let request = cdc_copy::host::FullLoadRequest::default_all();
    let report = jobs::full_load::run(&bench.ctx, &request, std::time::Duration::ZERO).await;
    assert_eq!(report.status, Status::InProgress, "{:?}", report.logs());
    let t = &report.return_value()["tables"][0];
    assert_eq!(t["note"], jobs::full_load::KEYLESS_HANDED_OFF);
    assert!(
        bench.blobs("dbo/audit_log/").await.is_empty(),
        "nothing written"
    );
    // The lock went with the call.
    bench.model.insert(&table, row("after the call")).unwrap();

    bench.model.advance(Duration::minutes(15));
    let report = bench.incremental(bench.model.now()).await;
    assert_eq!(report.status, Status::Done, "{:?}", report.logs());
    let blobs = read_blobs(&bench, "dbo/audit_log/").await;
    assert_eq!(load_parts(&blobs, "dbo/audit_log")[0].rows.len(), 4);
    assert_eq!(
        replay_multiset(&blobs, "after the timer's load"),
        multiset(bench.model.table_rows(&table))
    );
}

//! Parallel full load (issue 12) against the model: a table split into key ranges, loaded by
//! 1–4 concurrent invocations (separate contexts, so separate sessions) while the fault
//! decorator crashes calls, must land every row in exactly one part — uniform, skewed and
//! composite (case-insensitive text + int) keys alike.

mod common;

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use cdc_copy::cdc::{KeyType, TableRef, TableState, Value};
use cdc_copy::report::Status;
use cdc_copy_testkit::faults::{Fault, Method};
use cdc_copy_testkit::model::{CdcModel, ColumnDef, KeyIndex};

use common::cdc::{customer, customers, parse_csv, render, start_time, Bench};

/// The key distributions the oracle runs on.
#[derive(Debug, Clone, Copy)]
enum Shape {
    Uniform,
    /// 80 % of the rows in a dense block at the bottom, the rest spread over a wide range.
    Skewed,
    /// `(region varchar CI, id int)`: a low-cardinality leading column in mixed case.
    Composite,
}

const ROWS: i64 = 2_000;

fn settings() -> Vec<(&'static str, &'static str)> {
    vec![
        ("CDC_FULL_LOAD_RANGES", "4"),
        ("CDC_FULL_LOAD_RANGE_MIN_ROWS", "100"),
        ("CDC_FULL_LOAD_PART_ROWS", "150"),
    ]
}

fn orders() -> TableRef {
    TableRef::parse("dbo.orders").unwrap()
}

async fn bench(shape: Shape, rng: &mut StdRng) -> Bench {
    let model = CdcModel::new(start_time());
    match shape {
        Shape::Uniform | Shape::Skewed => {
            model
                .create_table(
                    customers(),
                    common::cdc::COLUMNS.iter().map(|c| c.to_string()).collect(),
                    vec!["customer_id".to_string()],
                )
                .unwrap();
            model
                .enable_cdc(&customers(), "dbo_customers", true)
                .unwrap();
            let mut ids = std::collections::BTreeSet::new();
            while ids.len() < ROWS as usize {
                let id = match shape {
                    Shape::Uniform => rng.random_range(0..100_000),
                    _ if rng.random_bool(0.8) => rng.random_range(0..3_000),
                    _ => rng.random_range(0..1_000_000_000),
                };
                ids.insert(id);
            }
            for id in ids {
                model.insert(&customers(), customer(id, 0)).unwrap();
            }
            Bench::over(model, &settings()).await
        }
        Shape::Composite => {
            let collation =
                cdc_copy::cdc::Collation::parse("SQL_Latin1_General_CP1_CI_AS").unwrap();
            model
                .create_typed_table(
                    orders(),
                    vec![
                        ColumnDef::new(
                            "region",
                            KeyType::VarChar {
                                length: 10,
                                collation,
                            },
                        ),
                        ColumnDef::new("id", KeyType::Int),
                        ColumnDef::untyped("amount"),
                    ],
                    KeyIndex::primary_key(&["region", "id"]),
                )
                .unwrap();
            model.enable_cdc(&orders(), "dbo_orders", true).unwrap();
            let regions = ["north", "North", "SOUTH", "east", "west-1", "west1"];
            let mut keys = std::collections::BTreeSet::new();
            while keys.len() < ROWS as usize {
                // Case-insensitive: one spelling per region and id.
                let region = regions[rng.random_range(0..regions.len())];
                let id = rng.random_range(0..2_000);
                if keys.insert((region.to_lowercase(), id)) {
                    model
                        .insert(
                            &orders(),
                            vec![
                                Value::Text(region.into()),
                                Value::Int(id),
                                Value::Int(id * 7),
                            ],
                        )
                        .unwrap();
                }
            }
            let mut extra = settings();
            extra.push(("CDC_TABLES", "dbo.orders"));
            Bench::over_table(model, orders(), &extra).await
        }
    }
}

/// One fault for a round, or none: every kind of step of a split load, struck somewhere.
fn fault(rng: &mut StdRng) -> Option<(&'static str, Method, u32, Fault)> {
    use Fault::*;
    use Method::*;
    let skip = rng.random_range(0..4);
    Some(match rng.random_range(0..9) {
        0 => (
            "range plan committed, reply lost",
            InsertRanges,
            0,
            AfterEffect,
        ),
        1 => ("crash before the plan", SampleKeys, 0, Before),
        2 => (
            "crash mid-part",
            Scan,
            skip,
            MidStream(rng.random_range(0..5)),
        ),
        3 => (
            "crash after a part's rows, before its commit",
            Scan,
            skip,
            AfterEffect,
        ),
        4 => (
            "crash after a part's commit, before its checkpoint",
            UpdateRange,
            skip,
            Before,
        ),
        5 => (
            "range checkpoint committed, reply lost",
            UpdateRange,
            skip,
            AfterEffect,
        ),
        6 => (
            "a worker's session fails to open",
            Session,
            rng.random_range(0..3),
            Before,
        ),
        7 => (
            "crash reading the plan",
            ReadRanges,
            rng.random_range(0..2),
            Before,
        ),
        _ => return None,
    })
}

/// Every row of the load's parts, rendered, counted: a row in two parts counts 2.
async fn loaded_rows(bench: &Bench) -> (BTreeMap<Vec<Option<String>>, u32>, usize, String) {
    let TableState::Ready = bench.watermark().state else {
        panic!("the load is not finished");
    };
    let prefix = format!("{}/{}/full/", bench.table.schema, bench.table.table);
    let names = bench.blobs(&prefix).await;
    let load_id = names
        .iter()
        .filter_map(|n| n.split('/').nth(3))
        .max()
        .expect("a load")
        .to_string();
    let mut rows = BTreeMap::new();
    let mut parts = 0;
    for name in names
        .iter()
        .filter(|n| n.split('/').nth(3) == Some(&load_id))
    {
        parts += 1;
        for record in parse_csv(&bench.read(name).await).into_iter().skip(1) {
            *rows.entry(record).or_insert(0) += 1;
        }
    }
    (rows, parts, load_id)
}

fn source_rows(bench: &Bench) -> BTreeMap<Vec<Option<String>>, u32> {
    bench
        .model
        .table_rows(&bench.table)
        .into_iter()
        .map(|row| (row.iter().map(render).collect(), 1))
        .collect()
}

/// The oracle: for each shape and 1–4 concurrent invocations, crashes struck in most rounds
/// until the watermark is ready; then the union of the parts equals the table exactly (no
/// row missing, none twice) and the watermark's totals match.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_workers_and_crashes_load_every_row_exactly_once() {
    let seed = 0x9a7_10ad;
    let mut rng = StdRng::seed_from_u64(seed);
    for shape in [Shape::Uniform, Shape::Skewed, Shape::Composite] {
        for workers in 1..=4usize {
            let bench = bench(shape, &mut rng).await;
            let mut crashes: BTreeMap<&str, u32> = BTreeMap::new();
            let mut rounds = 0;
            while !matches!(
                bench.model.watermark(&bench.table).map(|w| w.state),
                Some(TableState::Ready)
            ) {
                rounds += 1;
                assert!(rounds < 60, "{shape:?} x{workers}: the load never finished");
                for _ in 0..rng.random_range(1..=3) {
                    if let Some((what, method, skip, f)) = fault(&mut rng).filter(|_| rounds < 25) {
                        bench.faults.arm_after(method, skip, f);
                        *crashes.entry(what).or_default() += 1;
                    }
                }
                let runs = (0..workers).map(|_| {
                    let ctx = bench.ctx.clone();
                    async move {
                        cdc_copy::jobs::full_load::run(
                            &ctx,
                            &cdc_copy::host::FullLoadRequest::default_all(),
                            std::time::Duration::from_secs(600),
                        )
                        .await
                    }
                });
                for report in futures::future::join_all(runs).await {
                    assert!(
                        matches!(
                            report.status,
                            Status::Done
                                | Status::InProgress
                                | Status::Failed
                                | Status::Superseded
                                | Status::Conflict
                        ),
                        "{shape:?}: {:?}",
                        report.logs()
                    );
                }
                bench.faults.clear();
            }
            let (loaded, parts, load_id) = loaded_rows(&bench).await;
            let expected = source_rows(&bench);
            let twice: Vec<_> = loaded.iter().filter(|(_, n)| **n > 1).collect();
            let missing = expected.keys().filter(|r| !loaded.contains_key(*r)).count();
            let extra = loaded.keys().filter(|r| !expected.contains_key(*r)).count();
            assert!(
                twice.is_empty() && missing == 0 && extra == 0,
                "{shape:?} x{workers}: {} rows twice, {missing} missing, {extra} not in the table",
                twice.len()
            );
            let ranges = cdc_copy::jobs::full_load::split_count(&load_id);
            assert!(ranges > 1, "{shape:?}: load {load_id} was not split");
            let wm = bench.watermark();
            assert_eq!(wm.rows_copied, ROWS as u64, "{shape:?} x{workers}");
            let armed: u32 = crashes.values().sum();
            let struck = bench.faults.injected();
            let mut session = bench.ctx.source.session().await.unwrap();
            let sizes: Vec<u64> = session
                .read_ranges(&bench.table, &load_id)
                .await
                .unwrap()
                .iter()
                .map(|r| r.rows_done)
                .collect();
            println!(
                "{shape:?} keys, {workers} worker(s): {ranges} ranges of {sizes:?} rows, {parts} parts, {rounds} rounds, {struck} of {armed} armed faults struck; {} rows loaded, lost = {missing}, duplicated = {}",
                loaded.len(),
                twice.len()
            );
        }
    }
}

/// With `CDC_FULL_LOAD_RANGES` at its default the load is the single stream it always was:
/// no row count, no sample, no range table, the same part names.
#[tokio::test]
async fn an_unsplit_load_touches_no_range_state() {
    let model = CdcModel::new(start_time());
    let bench = Bench::new(250, model, &[("CDC_FULL_LOAD_PART_ROWS", "100")]).await;
    let report = bench.full_load().await;
    assert_eq!(report.status, Status::Done, "{:?}", report.logs());
    let calls = bench.faults.calls();
    for method in [
        Method::TableRows,
        Method::SampleKeys,
        Method::ReadRanges,
        Method::InsertRanges,
        Method::UpdateRange,
    ] {
        assert_eq!(calls.get(&method), None, "{method}");
    }
    let names = bench.blobs("dbo/customers/full/").await;
    assert_eq!(names.len(), 3);
    assert!(names.iter().all(|n| n.contains("/part-0000")), "{names:?}");
    bench.assert_consistent("unsplit").await;
}

/// A table below twice `CDC_FULL_LOAD_RANGE_MIN_ROWS` is not split (one row count read, no
/// sample); a larger one is, with one baseline for all ranges and range-numbered parts.
#[tokio::test]
async fn a_table_is_split_only_when_large_enough() {
    for (rows, split) in [(150, false), (600, true)] {
        let model = CdcModel::new(start_time());
        let bench = Bench::new(rows, model, &settings()).await;
        let report = bench.full_load().await;
        assert_eq!(report.status, Status::Done, "{:?}", report.logs());
        let calls = bench.faults.calls();
        assert_eq!(calls.get(&Method::TableRows), Some(&1), "{rows} rows");
        assert_eq!(
            calls.contains_key(&Method::SampleKeys),
            split,
            "{rows} rows"
        );
        let names = bench.blobs("dbo/customers/full/").await;
        assert_eq!(
            names.iter().all(|n| n.contains("/range-")),
            split,
            "{rows} rows: {names:?}"
        );
        let baselines: std::collections::BTreeSet<String> = {
            let mut b = std::collections::BTreeSet::new();
            for name in &names {
                let info = bench.ctx.blobs.properties(name).await.unwrap().unwrap();
                b.insert(info.metadata["baseline_lsn"].clone());
            }
            b
        };
        assert_eq!(
            baselines.len(),
            1,
            "one baseline for every range: {baselines:?}"
        );
        assert_eq!(bench.watermark().rows_copied, rows as u64);
        bench.assert_consistent("split").await;
    }
}

/// `handler status` reads a split load's progress by range while it runs (a call whose
/// budget is spent after one part per range), then the table ready at its baseline.
#[tokio::test]
async fn status_shows_progress_by_range_then_ready() {
    let model = CdcModel::new(start_time());
    let bench = Bench::new(600, model, &settings()).await;
    let report = cdc_copy::jobs::full_load::run(
        &bench.ctx,
        &cdc_copy::host::FullLoadRequest::default_all(),
        std::time::Duration::ZERO,
    )
    .await;
    assert_eq!(report.status, Status::InProgress, "{:?}", report.logs());
    let status = cdc_copy::status::collect(&bench.ctx).await;
    assert_eq!(status.len(), 1);
    let s = &status[0];
    assert_eq!((s.state, s.error.as_deref()), ("loading", None));
    assert_eq!(s.capture_instance.as_deref(), Some("dbo_customers"));
    let load = s.full_load.as_ref().expect("a load in progress");
    assert_eq!(load.ranges.len(), 4);
    assert!(
        load.ranges.iter().all(|r| r.parts_done == 1 && !r.done),
        "{load:?}"
    );
    assert_eq!(load.rows_done, 4 * 150);
    let text = cdc_copy::status::render(&status);
    assert!(text.contains("0/4 ranges, 600 rows"), "{text}");

    assert_eq!(bench.full_load().await.status, Status::Done);
    let status = cdc_copy::status::collect(&bench.ctx).await;
    let s = &status[0];
    assert_eq!(s.state, "ready");
    assert!(s.full_load.is_none());
    assert_eq!(s.last_lsn, Some(bench.watermark().last_lsn));
    assert!(s.max_lsn.is_some_and(|m| m >= bench.watermark().last_lsn));
    assert!(s.lag_seconds.is_some());
    assert_eq!(s.last_error, None);
    // The contract's last error (set by a failed copy) is shown with its time.
    let at = bench.model.now();
    let mut session = bench.ctx.source.session().await.unwrap();
    let error = cdc_copy::cdc::LastError::new("capture instance dbo_customers is gone", at);
    session
        .set_last_error(&bench.table, Some(&error))
        .await
        .unwrap();
    let status = cdc_copy::status::collect(&bench.ctx).await;
    assert_eq!(
        (status[0].last_error.as_deref(), status[0].last_error_at),
        (Some("capture instance dbo_customers is gone"), Some(at))
    );
    let text = cdc_copy::status::render(&status);
    assert!(text.contains("  last error at "), "{text}");
    println!("{text}");
}

/// `LoadRange` with its budget spent after one part answers in progress and sends its own
/// message again (the `ranges` output); repeated, the range and then the load complete. A
/// message of a load that was replaced does nothing.
#[tokio::test]
async fn a_range_out_of_budget_sends_its_message_again() {
    let model = CdcModel::new(start_time());
    let bench = Bench::new(600, model, &settings()).await;
    let queued = cdc_copy::jobs::full_load::run_queued(
        &bench.ctx,
        &cdc_copy::host::FullLoadRequest::default_all(),
        std::time::Duration::from_secs(60),
    )
    .await;
    assert_eq!(queued.status, Status::InProgress, "{:?}", queued.logs());
    let mut pending: Vec<cdc_copy::host::RangeMessage> = queued.outputs["ranges"]
        .iter()
        .map(|m| serde_json::from_value(m.clone()).unwrap())
        .collect();
    assert_eq!(pending.len(), 4);
    let stale = pending[0].clone();
    let mut invocations = 0;
    while let Some(message) = pending.pop() {
        invocations += 1;
        assert!(invocations < 40, "never finished");
        let report =
            cdc_copy::jobs::full_load::run_range(&bench.ctx, &message, std::time::Duration::ZERO)
                .await;
        match report.outputs.get("ranges") {
            Some(again) => {
                assert_eq!(report.status, Status::InProgress, "{:?}", report.logs());
                assert_eq!(again, &vec![serde_json::to_value(&message).unwrap()]);
                pending.insert(0, message);
            }
            None => assert_eq!(report.status, Status::Done, "{:?}", report.logs()),
        }
    }
    assert!(matches!(bench.watermark().state, TableState::Ready));
    bench.assert_consistent("queued ranges").await;
    // 4 ranges of 150 rows, parts of 150: each range is one full part, then an empty one.
    assert_eq!(invocations, 8);
    let late =
        cdc_copy::jobs::full_load::run_range(&bench.ctx, &stale, std::time::Duration::ZERO).await;
    assert_eq!(late.status, Status::Superseded, "{:?}", late.logs());
    assert!(late.outputs.is_empty());
}

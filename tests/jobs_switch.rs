//! The capture-instance switch and the per-table mode, one situation at a time, against the
//! CDC model and a real Azurite (the random crash and overlap runs are in faults_switch.rs).

mod common;

use chrono::Duration;

use cdc_copy::cdc::Value;
use cdc_copy::report::Status;
use cdc_copy_testkit::model::CdcModel;

use common::cdc::{customer, start_time, Bench};

async fn loaded(extra: &[(&str, &str)]) -> Bench {
    let bench = Bench::new(2, CdcModel::new(start_time()), extra).await;
    let report = bench.full_load().await;
    assert_eq!(report.status, Status::Done, "{:?}", report.logs());
    bench
}

async fn metadata(bench: &Bench, name: &str) -> std::collections::BTreeMap<String, String> {
    bench
        .ctx
        .blobs
        .properties(name)
        .await
        .unwrap()
        .unwrap()
        .metadata
}

/// "A transition from one to the other can be accomplished without loss of change data"
/// (Work with change data): a window that spans the new instance's start LSN is copied as
/// the rest of the old instance, then the new one from its start LSN, one blob each, named
/// from the trigger time; the switch is recorded in the watermark row and reported once.
#[tokio::test]
async fn a_window_across_the_start_lsn_is_split_at_it() {
    let bench = loaded(&[]).await;
    bench.model.insert(&bench.table, customer(100, 1)).unwrap();
    bench.model.advance(Duration::seconds(5));
    let start = bench
        .model
        .enable_cdc(&bench.table, "dbo_customers_v2", true)
        .unwrap();
    bench.model.advance(Duration::seconds(5));
    assert_eq!(bench.model.start_lsn("dbo_customers_v2"), Some(start));
    bench.model.insert(&bench.table, customer(101, 1)).unwrap();
    bench
        .model
        .update(&bench.table, &[Value::Int(100)], customer(100, 2))
        .unwrap();
    bench.model.advance(Duration::minutes(15));
    let trigger = bench.model.now();

    let report = bench.incremental(trigger).await;
    assert_eq!(report.status, Status::Done, "{:?}", report.logs());
    let table = &report.return_value()["tables"][0];
    assert_eq!(table["switched"]["from"], "dbo_customers");
    assert_eq!(table["switched"]["to"], "dbo_customers_v2");
    assert_eq!(table["captureInstance"], "dbo_customers_v2");
    assert_eq!(table["mode"], "net");
    let blobs = bench.incremental_blobs().await;
    assert_eq!(blobs.len(), 2, "{blobs:?}");
    let (tail, window) = (&blobs[0], &blobs[1]);
    assert!(tail.ends_with("-dbo_customers.csv"), "{tail}");
    assert_eq!(
        tail.replace("-dbo_customers.csv", ".csv"),
        *window,
        "both named from the trigger time, the tail first"
    );
    let (old, new) = (metadata(&bench, tail).await, metadata(&bench, window).await);
    assert_eq!(old["capture_instance"], "dbo_customers");
    assert_eq!(new["capture_instance"], "dbo_customers_v2");
    let before_start = start.decrement().unwrap().to_string();
    assert_eq!(old["to_lsn"], before_start);
    assert_eq!(new["from_lsn"], start.to_string());
    assert_eq!(
        old["window_start"], old["window_end"],
        "the tail does not advance time"
    );
    assert_eq!(
        new["columns"],
        "customer_id,first_name,last_name,email,city"
    );
    assert_eq!(
        (old["row_count"].as_str(), new["row_count"].as_str()),
        ("1", "2")
    );
    let wm = bench.watermark();
    assert_eq!(wm.capture_instance, "dbo_customers_v2");
    assert_eq!(wm.last_window_end, trigger);
    bench.assert_consistent("after the split window").await;

    // A retry of the same trigger time is up to date: nothing new, no second switch.
    let again = bench.incremental(trigger).await;
    assert_eq!(again.return_value()["tables"][0].get("switched"), None);
    assert_eq!(bench.incremental_blobs().await, blobs);
}

/// A crash between the two blobs of a split window: the retry of the same trigger time
/// writes the second blob under the same name, from the new instance (the watermark row
/// recorded the switch with the first).
#[tokio::test]
async fn a_crash_between_the_tail_and_the_window_resumes_with_the_same_names() {
    use cdc_copy_testkit::faults::{Fault, Method};
    let bench = loaded(&[]).await;
    bench.model.insert(&bench.table, customer(100, 1)).unwrap();
    bench.model.advance(Duration::seconds(5));
    bench
        .model
        .enable_cdc(&bench.table, "dbo_customers_v2", true)
        .unwrap();
    bench.model.advance(Duration::seconds(5));
    bench.model.insert(&bench.table, customer(101, 1)).unwrap();
    bench.model.advance(Duration::minutes(15));
    let trigger = bench.model.now();
    // Updates: record the tail, advance past it (the switch), record the window: fail there.
    bench
        .faults
        .arm_after(Method::UpdateWatermark, 2, Fault::Before);
    let report = bench.incremental(trigger).await;
    assert_eq!(report.status, Status::Failed, "{:?}", report.logs());
    let first = bench.incremental_blobs().await;
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(bench.watermark().capture_instance, "dbo_customers_v2");
    bench.faults.clear();
    let report = bench.incremental(trigger).await;
    assert_eq!(report.status, Status::Done, "{:?}", report.logs());
    let blobs = bench.incremental_blobs().await;
    assert_eq!(blobs.len(), 2, "{blobs:?}");
    assert_eq!(blobs[0], first[0]);
    assert_eq!(blobs[0].replace("-dbo_customers.csv", ".csv"), blobs[1]);
    bench.assert_consistent("after the resumed split").await;
}

/// A new instance whose start LSN lies before the window: the switch happens at the window
/// boundary, recorded by the run's advance even when the window has no change.
#[tokio::test]
async fn an_idle_window_records_the_switch_without_a_blob() {
    let bench = loaded(&[]).await;
    bench
        .model
        .enable_cdc(&bench.table, "dbo_customers_v2", true)
        .unwrap();
    bench.model.advance(Duration::minutes(15));
    let report = bench.incremental(bench.model.now()).await;
    assert_eq!(report.status, Status::Done, "{:?}", report.logs());
    assert_eq!(
        report.return_value()["tables"][0]["switched"]["to"],
        "dbo_customers_v2"
    );
    assert!(bench.incremental_blobs().await.is_empty());
    assert_eq!(bench.watermark().capture_instance, "dbo_customers_v2");
    // The old instance can go now; the next change comes from the new one.
    bench.model.disable_cdc("dbo_customers").unwrap();
    bench.model.insert(&bench.table, customer(7, 1)).unwrap();
    bench.model.advance(Duration::minutes(15));
    let report = bench.incremental(bench.model.now()).await;
    assert_eq!(report.status, Status::Done, "{:?}", report.logs());
    let blobs = bench.incremental_blobs().await;
    assert_eq!(
        metadata(&bench, &blobs[0]).await["capture_instance"],
        "dbo_customers_v2"
    );
    bench.assert_consistent("after the idle switch").await;
}

/// `CDC_TABLES`' `table=capture_instance` pins an instance: no switch, whatever exists.
#[tokio::test]
async fn a_pinned_instance_is_not_switched_away_from() {
    let bench = loaded(&[("CDC_TABLES", "dbo.customers=dbo_customers")]).await;
    bench
        .model
        .enable_cdc(&bench.table, "dbo_customers_v2", true)
        .unwrap();
    bench.model.advance(Duration::seconds(5));
    bench.model.insert(&bench.table, customer(100, 1)).unwrap();
    bench.model.advance(Duration::minutes(15));
    let report = bench.incremental(bench.model.now()).await;
    assert_eq!(report.status, Status::Done, "{:?}", report.logs());
    assert_eq!(report.return_value()["tables"][0].get("switched"), None);
    let blobs = bench.incremental_blobs().await;
    assert_eq!(blobs.len(), 1);
    assert_eq!(
        metadata(&bench, &blobs[0]).await["capture_instance"],
        "dbo_customers"
    );
    assert_eq!(bench.watermark().capture_instance, "dbo_customers");
}

/// `:all` reads a table that has net changes by all changes: every change, in order, with
/// `__$seqval`, and the update's before-image (`all update old`, the default).
#[tokio::test]
async fn a_table_can_be_read_by_all_changes_on_request() {
    let bench = loaded(&[("CDC_TABLES", "dbo.customers:all")]).await;
    bench.model.insert(&bench.table, customer(100, 1)).unwrap();
    bench
        .model
        .update(&bench.table, &[Value::Int(100)], customer(100, 2))
        .unwrap();
    bench.model.advance(Duration::minutes(15));
    let report = bench.incremental(bench.model.now()).await;
    assert_eq!(report.status, Status::Done, "{:?}", report.logs());
    assert_eq!(report.return_value()["tables"][0]["mode"], "all");
    let blobs = bench.incremental_blobs().await;
    let meta = metadata(&bench, &blobs[0]).await;
    assert_eq!(
        (meta["mode"].as_str(), meta["row_filter"].as_str()),
        ("all", "all update old")
    );
    let records = common::cdc::parse_csv(&bench.read(&blobs[0]).await);
    let header: Vec<&str> = records[0].iter().map(|c| c.as_deref().unwrap()).collect();
    assert_eq!(
        &header[..4],
        [
            "__$start_lsn",
            "__$seqval",
            "__$operation",
            "__$update_mask"
        ]
    );
    let ops: Vec<&str> = records[1..]
        .iter()
        .map(|r| r[2].as_deref().unwrap())
        .collect();
    assert_eq!(
        ops,
        ["2", "3", "4"],
        "insert, then the update's before- and after-image"
    );
    assert_eq!(records[2][5].as_deref(), Some("First100"));
}

/// `:net` on an instance without net changes is refused by name, before anything is read.
#[tokio::test]
async fn net_changes_forced_on_an_instance_without_them_is_refused() {
    let model = CdcModel::new(start_time());
    let bench = Bench::over(model.clone(), &[("CDC_TABLES", "dbo.customers:net")]).await;
    model
        .create_table(
            bench.table.clone(),
            common::cdc::COLUMNS.iter().map(|c| c.to_string()).collect(),
            vec!["customer_id".to_string()],
        )
        .unwrap();
    model
        .enable_cdc(&bench.table, "dbo_customers", false)
        .unwrap();
    model.advance(Duration::seconds(5));
    let report = bench.full_load().await;
    assert_eq!(report.status, Status::Blocked, "{:?}", report.logs());
    let error = report.return_value()["tables"][0]["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(error.contains("@supports_net_changes = 1"), "{error}");
    assert_eq!(bench.model.watermark(&bench.table), None);
}

/// "cdc.ddl_history … DDL changes to source tables that are enabled for change data capture":
/// DDL the instance being read does not follow, with no newer instance to switch to, is
/// warned about by every run (log and `ReturnValue`) and by `handler check`, naming the DDL
/// and the command to run; once a second instance exists, the warning stops.
#[tokio::test]
async fn ddl_without_a_second_instance_is_warned_about_until_one_exists() {
    use cdc_copy_testkit::model::ColumnDef;
    let bench = loaded(&[]).await;
    bench
        .model
        .add_column(&bench.table, ColumnDef::untyped("loyalty").nullable())
        .unwrap();
    bench.model.advance(Duration::minutes(15));
    let runner = cdc_copy::jobs::Runner::new(
        bench.ctx.settings.clone(),
        bench.ctx.source.clone(),
        bench.ctx.blobs.clone(),
    );
    let report = bench.incremental(bench.model.now()).await;
    assert_eq!(report.status, Status::Done, "{:?}", report.logs());
    let warning = report.return_value()["tables"][0]["warning"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    for word in [
        "dbo.customers",
        "loyalty",
        "sys.sp_cdc_enable_table",
        "@capture_instance = N'dbo_customers_v2'",
    ] {
        assert!(warning.contains(word), "{word:?} missing from {warning}");
    }
    let checks = runner.check().await;
    let ddl = checks
        .iter()
        .find(|(what, _)| what.starts_with("schema changes of dbo.customers"))
        .expect("a schema-change check");
    assert!(
        ddl.1
            .as_ref()
            .is_err_and(|e| e.contains("sys.sp_cdc_enable_table")),
        "{checks:?}"
    );

    bench
        .model
        .enable_cdc(&bench.table, "dbo_customers_v2", true)
        .unwrap();
    bench.model.advance(Duration::minutes(15));
    let report = bench.incremental(bench.model.now()).await;
    assert_eq!(report.status, Status::Done, "{:?}", report.logs());
    assert_eq!(report.return_value()["tables"][0].get("warning"), None);
    let checks = runner.check().await;
    assert!(checks.iter().all(|(_, r)| r.is_ok()), "{checks:?}");
    assert!(
        checks.iter().any(|(what, _)| what.contains(
            "dbo_customers_v2 (net changes; instances: dbo_customers, dbo_customers_v2)"
        )),
        "{checks:?}"
    );
}

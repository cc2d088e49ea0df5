//! The jobs against the model for tables whose key and columns need care (issue 9): a unique
//! index with nullable columns, and a capture instance that leaves a column out and has a
//! computed column.

mod common;

use chrono::Duration;

use cdc_copy::cdc::{KeyType, Value};
use cdc_copy::report::Status;
use cdc_copy_testkit::model::{CdcModel, ColumnDef, KeyIndex};

use common::cdc::{customers, parse_csv, start_time, Bench};

/// FullLoad and IncrementalCopy both refuse a capture instance keyed by a nullable unique
/// index (its NULL-key changes would never come out of net changes), naming the column, the
/// index and the remedy; definite, so nothing retries it.
#[tokio::test]
async fn a_nullable_unique_index_is_refused_by_both_jobs() {
    let model = CdcModel::new(start_time());
    model
        .create_typed_table(
            customers(),
            vec![
                ColumnDef::new("email", KeyType::Int).nullable(),
                ColumnDef::untyped("name"),
            ],
            KeyIndex::unique("ux_customers_email", &["email"]),
        )
        .unwrap();
    model
        .enable_cdc(&customers(), "dbo_customers", true)
        .unwrap();
    model
        .insert(&customers(), vec![Value::Int(1), Value::Text("a".into())])
        .unwrap();
    let bench = Bench::over(model, &[]).await;
    let load = bench.full_load().await;
    bench.model.advance(Duration::minutes(15));
    let copy = bench.incremental(bench.model.now()).await;
    for (job, report) in [("FullLoad", load), ("IncrementalCopy", copy)] {
        assert_eq!(report.status, Status::Blocked, "{job}: {:?}", report.logs());
        let log = &report.logs()[0];
        for part in ["email", "ux_customers_email", "NOT NULL", "primary key"] {
            assert!(log.contains(part), "{job}: {part:?} missing from {log}");
        }
    }
    bench.ctx.ensure_container().await.unwrap();
    assert!(
        bench.blobs("dbo/customers/").await.is_empty(),
        "nothing written"
    );
}

/// Item 4: a column left out of `@captured_column_list` and a computed column. The full-load
/// part and the incremental blob carry the same columns in the same order (the incremental
/// one after the CDC columns): the captured, non-computed ones.
#[tokio::test]
async fn full_load_and_incremental_files_have_the_same_columns() {
    let model = CdcModel::new(start_time());
    model
        .create_typed_table(
            customers(),
            vec![
                ColumnDef::new("customer_id", KeyType::Int),
                ColumnDef::untyped("name"),
                ColumnDef::untyped("ssn"),
                ColumnDef::untyped("total").computed(),
                ColumnDef::untyped("city"),
            ],
            KeyIndex::primary_key(&["customer_id"]),
        )
        .unwrap();
    model
        .enable_cdc_columns(
            &customers(),
            "dbo_customers",
            true,
            &["customer_id", "name", "total", "city"],
        )
        .unwrap();
    let row = |id: i64, name: &str| {
        vec![
            Value::Int(id),
            Value::Text(name.into()),
            Value::Text("000-00".into()),
            Value::Int(id * 10),
            Value::Text("Oslo".into()),
        ]
    };
    model.insert(&customers(), row(1, "a")).unwrap();
    let bench = Bench::over(model, &[]).await;
    assert_eq!(bench.full_load().await.status, Status::Done);
    bench.model.insert(&customers(), row(2, "b")).unwrap();
    bench
        .model
        .update(&customers(), &[Value::Int(1)], row(1, "a2"))
        .unwrap();
    bench.model.advance(Duration::minutes(15));
    let report = bench.incremental(bench.model.now()).await;
    assert_eq!(report.status, Status::Done, "{:?}", report.logs());

    let full = bench.blobs("dbo/customers/full").await;
    let incremental = bench.incremental_blobs().await;
    assert_eq!(
        (full.len(), incremental.len()),
        (1, 1),
        "{full:?} {incremental:?}"
    );
    let full = parse_csv(&bench.read(&full[0]).await);
    let incremental = parse_csv(&bench.read(&incremental[0]).await);
    let names = |header: &[Option<String>]| -> Vec<String> {
        header.iter().map(|c| c.clone().unwrap()).collect()
    };
    let expected = ["customer_id", "name", "city"];
    assert_eq!(names(&full[0]), expected);
    let cdc_columns = incremental[0].len() - expected.len();
    assert_eq!(names(&incremental[0][cdc_columns..]), expected);
    assert!(
        names(&incremental[0][..cdc_columns])
            .iter()
            .all(|c| c.starts_with("__$")),
        "{:?}",
        incremental[0]
    );
    // The values line up under the same header: row 1 as loaded, then as updated.
    assert_eq!(
        full[1],
        vec![Some("1".into()), Some("a".into()), Some("Oslo".into())]
    );
    let updated = incremental
        .iter()
        .skip(1)
        .find(|r| r[cdc_columns] == Some("1".into()))
        .expect("the update of row 1");
    assert_eq!(updated[cdc_columns + 1], Some("a2".into()));
}

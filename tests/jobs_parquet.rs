//! `CDC_FORMAT=parquet` through the real jobs (issue 11): full-load parts and incremental
//! windows are Parquet files named `.parquet`, holding the rows the CSV would hold, with the
//! blob metadata in their footer; a pending window is finished under the name it recorded, in
//! that name's format, even after the setting changed.

mod common;

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Int32Type, Int64Type};
use arrow_array::RecordBatch;
use bytes::Bytes;
use cdc_copy::report::Status;
use cdc_copy::sink::format::Format;
use cdc_copy_testkit::faults::{Fault, Method};
use cdc_copy_testkit::model::CdcModel;
use chrono::Duration;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use common::cdc::{customer, start_time, Bench, WatermarkExt};

const PARQUET: &[(&str, &str)] = &[("CDC_FORMAT", "parquet")];

/// The batches and the footer's key/value metadata of a Parquet file.
fn read_parquet(bytes: Vec<u8>) -> (Vec<RecordBatch>, Vec<(String, String)>) {
    let builder = ParquetRecordBatchReaderBuilder::try_new(Bytes::from(bytes)).unwrap();
    let kv = builder
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|kv| kv.key != "ARROW:schema")
        .map(|kv| (kv.key, kv.value.unwrap_or_default()))
        .collect();
    let batches = builder
        .build()
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    (batches, kv)
}

fn ids(batches: &[RecordBatch], column: &str) -> Vec<i64> {
    batches
        .iter()
        .flat_map(|b| {
            b.column_by_name(column)
                .unwrap()
                .as_primitive::<Int64Type>()
                .values()
                .to_vec()
        })
        .collect()
}

#[tokio::test]
async fn full_loads_and_windows_are_parquet_files_of_the_same_rows() {
    let bench = Bench::new(12, CdcModel::new(start_time()), PARQUET).await;
    assert_eq!(bench.full_load().await.status, Status::Done);
    let parts = bench.blobs("dbo/customers/full/").await;
    assert_eq!(parts.len(), 1, "{parts:?}");
    assert!(parts[0].ends_with("/part-00000.parquet"), "{parts:?}");
    let (batches, kv) = read_parquet(bench.read(&parts[0]).await);
    let schema = batches[0].schema();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(
        names,
        ["customer_id", "first_name", "last_name", "email", "city"]
    );
    assert_eq!(ids(&batches, "customer_id"), (0..12).collect::<Vec<_>>());
    let meta = |kv: &[(String, String)], key: &str| {
        kv.iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("no {key} in the footer: {kv:?}"))
    };
    assert_eq!(meta(&kv, "table"), "dbo.customers");
    let blob_meta = bench
        .ctx
        .blobs
        .properties(&parts[0])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        blob_meta.content_type.as_deref(),
        Some("application/vnd.apache.parquet")
    );
    for (key, value) in &blob_meta.metadata {
        assert_eq!(&meta(&kv, key), value, "footer repeats blob metadata {key}");
    }

    bench.model.insert(&bench.table, customer(100, 1)).unwrap();
    bench
        .model
        .update(
            &bench.table,
            &[cdc_copy::cdc::Value::Int(3)],
            customer(3, 2),
        )
        .unwrap();
    bench
        .model
        .delete(&bench.table, &[cdc_copy::cdc::Value::Int(5)])
        .unwrap();
    bench.model.advance(Duration::minutes(15));
    let report = bench.incremental(bench.model.now()).await;
    assert_eq!(report.status, Status::Done, "{:?}", report.logs());
    let windows = bench.incremental_blobs().await;
    assert_eq!(windows.len(), 1);
    assert!(windows[0].ends_with(".parquet"), "{windows:?}");
    let (batches, kv) = read_parquet(bench.read(&windows[0]).await);
    let mut changes: Vec<(i64, i32)> = ids(&batches, "customer_id")
        .into_iter()
        .zip(batches.iter().flat_map(|b| {
            b.column_by_name("__$operation")
                .unwrap()
                .as_primitive::<Int32Type>()
                .values()
                .to_vec()
        }))
        .collect();
    changes.sort();
    assert_eq!(changes, [(3, 4), (5, 1), (100, 2)]);
    assert_eq!(meta(&kv, "row_count"), "3");
    assert_eq!(
        meta(&kv, "from_lsn"),
        bench
            .ctx
            .blobs
            .properties(&windows[0])
            .await
            .unwrap()
            .unwrap()
            .metadata["from_lsn"]
    );
}

/// A window recorded as pending under a `.parquet` name is finished under that name in
/// Parquet, even when the next run's `CDC_FORMAT` is `csv`: the name a retry finds is the one
/// it recorded, and its content is what the name says.
#[tokio::test]
async fn a_pending_window_is_finished_under_its_recorded_name_and_format() {
    let mut bench = Bench::new(3, CdcModel::new(start_time()), PARQUET).await;
    assert_eq!(bench.full_load().await.status, Status::Done);
    bench.model.insert(&bench.table, customer(50, 1)).unwrap();
    bench.model.advance(Duration::minutes(15));
    let trigger = bench.model.now();
    // The window is recorded and its blob committed, then the advance fails.
    bench
        .faults
        .arm_after(Method::UpdateWatermark, 1, Fault::Before);
    assert_eq!(bench.incremental(trigger).await.status, Status::Failed);
    let pending = bench
        .watermark()
        .pending()
        .cloned()
        .expect("a pending window");
    assert!(pending.blob.ends_with(".parquet"), "{}", pending.blob);

    let mut settings = (*bench.ctx.settings).clone();
    settings.format = Format::Csv;
    settings.path_template = settings.path_template.with_extension("csv");
    bench.ctx.settings = Arc::new(settings);
    let later = trigger + Duration::minutes(15);
    let report = bench.incremental(later).await;
    assert_eq!(report.status, Status::Done, "{:?}", report.logs());
    let blobs = bench.incremental_blobs().await;
    assert_eq!(blobs[0], pending.blob, "the recorded name: {blobs:?}");
    let (batches, _) = read_parquet(bench.read(&pending.blob).await);
    assert_eq!(ids(&batches, "customer_id"), [50]);
    // The next window is in the new format.
    assert!(blobs[1..].iter().all(|b| b.ends_with(".csv")), "{blobs:?}");
    assert!(bench.watermark().pending().is_none());
}

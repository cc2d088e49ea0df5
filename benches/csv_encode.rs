//! Throughput of the CSV and Parquet encoders on customers-shaped rows, the copy's hot path.
//!
//! The rows are `cdc_copy_testkit::rows::customer`, the generator of the pipeline bench, so the
//! bytes per row printed here and the `csv-only` figures in docs/benchmarks.md describe the
//! same data.
//!
//! Run with `cargo bench --bench csv_encode`. Rows are built first (not timed); then 1M rows are
//! encoded into a buffer that is drained every 4 MiB, the way blob blocks are staged. Prints
//! MB/s and rows/s for the plain table shape and for the CDC shape (LSN, operation, update
//! mask in front). The Parquet lines (issue 11) encode the same rows with the declared types of
//! `sql/setup.sql`'s table through `ParquetEncoder` (Arrow builders, row groups, Snappy, the
//! footer), draining the encoded bytes as the blob sink does; one thread, so one core.

use std::hint::black_box;
use std::time::Instant;

use std::sync::Arc;

use cdc_copy::cdc::{ColumnDesc, Value};
use cdc_copy::sink::csv::{write_header, write_row};
use cdc_copy::sink::parquet::ParquetEncoder;
use cdc_copy_testkit::rows::{column_descs, customer, COLUMNS};

const ROWS: usize = 1_000_000;
const BLOCK: usize = 4 << 20;

fn cdc_prefix(i: usize) -> Vec<Value> {
    let mut lsn = vec![0u8; 10];
    lsn[2..10].copy_from_slice(&(i as u64 * 7 + 0x2a_0000).to_be_bytes());
    vec![
        Value::Binary(lsn),
        Value::Int(if i.is_multiple_of(3) { 4 } else { 2 }),
        Value::Null,
    ]
}

fn run(label: &str, header: &[&str], rows: &[Vec<Value>]) {
    let names: Vec<String> = header.iter().map(|s| s.to_string()).collect();
    let mut best = f64::MAX;
    let mut bytes = 0usize;
    for _ in 0..5 {
        let mut out = Vec::with_capacity(BLOCK + 4096);
        bytes = 0;
        let start = Instant::now();
        write_header(&mut out, &names);
        for row in rows {
            write_row(&mut out, row, &[]);
            if out.len() >= BLOCK {
                bytes += out.len();
                black_box(&out);
                out.clear();
            }
        }
        bytes += out.len();
        black_box(&out);
        best = best.min(start.elapsed().as_secs_f64());
    }
    println!(
        "{label}: {} rows, {:.1} MB in {:.3} s (best of 5): {:.0} MB/s, {:.2} M rows/s, {:.0} B/row",
        rows.len(),
        bytes as f64 / 1e6,
        best,
        bytes as f64 / 1e6 / best,
        rows.len() as f64 / 1e6 / best,
        bytes as f64 / rows.len() as f64,
    );
}

fn run_parquet(label: &str, columns: Arc<[ColumnDesc]>, rows: &[Vec<Value>]) {
    let mut best = f64::MAX;
    let mut bytes = 0usize;
    for _ in 0..3 {
        bytes = 0;
        let start = Instant::now();
        let mut encoder = ParquetEncoder::new(columns.clone());
        for row in rows {
            encoder.push(row).expect("row fits its columns");
            let out = encoder.encoded();
            if !out.is_empty() {
                bytes += out.len();
                black_box(std::mem::take(out));
            }
        }
        encoder.finish(&[]).expect("footer");
        bytes += encoder.encoded().len();
        black_box(encoder.encoded());
        best = best.min(start.elapsed().as_secs_f64());
    }
    println!(
        "{label}: {} rows, {:.1} MB in {:.3} s (best of 3): {:.0} MB/s, {:.2} M rows/s, {:.0} B/row",
        rows.len(),
        bytes as f64 / 1e6,
        best,
        bytes as f64 / 1e6 / best,
        rows.len() as f64 / 1e6 / best,
        bytes as f64 / rows.len() as f64,
    );
}

fn main() {
    let table: Vec<Vec<Value>> = (0..ROWS as u64).map(customer).collect();
    run("customers", COLUMNS, &table);
    run_parquet("customers parquet", column_descs(), &table);

    let cdc: Vec<Vec<Value>> = table
        .into_iter()
        .enumerate()
        .map(|(i, row)| {
            let mut full = cdc_prefix(i);
            full.extend(row);
            full
        })
        .collect();
    let mut header = vec!["__$start_lsn", "__$operation", "__$update_mask"];
    header.extend_from_slice(COLUMNS);
    run("customers net changes", &header, &cdc);
    let mut change_columns = vec![
        ColumnDesc::lsn("__$start_lsn"),
        ColumnDesc::operation(),
        ColumnDesc::update_mask(),
    ];
    change_columns.extend(column_descs().iter().cloned());
    run_parquet("customers net changes parquet", change_columns.into(), &cdc);
}

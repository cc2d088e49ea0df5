//! Throughput of the CSV encoder on customers-shaped rows, the copy's hot path.
//!
//! Run with `cargo bench --bench csv_encode`. Rows are built first (not timed); then 1M rows are
//! encoded into a buffer that is drained every 4 MiB, the way blob blocks are staged. Prints
//! MB/s and rows/s for the plain table shape and for the CDC shape (LSN, operation, update
//! mask in front).

use std::hint::black_box;
use std::time::Instant;

use cdc_copy::cdc::Value;
use cdc_copy::sink::csv::{write_header, write_row};

const ROWS: usize = 1_000_000;
const BLOCK: usize = 4 << 20;

const FIRST: &[&str] = &[
    "Ada", "Grace", "Alan", "Edsger", "Barbara", "Ken", "Frances",
];
const LAST: &[&str] = &[
    "Lovelace",
    "Hopper",
    "Turing",
    "Dijkstra",
    "Liskov",
    "O'Neil, Jr.",
];
const CITY: &[&str] = &[
    "Seattle",
    "Zürich",
    "東京",
    "São Paulo",
    "New York",
    "Kraków",
];

/// id int, first_name varchar, last_name varchar, email varchar, city nvarchar, phone (nullable).
fn customer(i: usize) -> Vec<Value> {
    let first = FIRST[i % FIRST.len()];
    let last = LAST[i % LAST.len()];
    vec![
        Value::Int(i as i64 + 1),
        Value::Text(first.to_string()),
        Value::Text(last.to_string()),
        Value::Text(format!(
            "{}.{}{}@example.com",
            first.to_lowercase(),
            i,
            i % 97
        )),
        Value::Text(CITY[i % CITY.len()].to_string()),
        if i.is_multiple_of(3) {
            Value::Null
        } else {
            Value::Text(format!("+1-206-555-{:04}", i % 10_000))
        },
    ]
}

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
            write_row(&mut out, row);
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

fn main() {
    let table: Vec<Vec<Value>> = (0..ROWS).map(customer).collect();
    run(
        "customers",
        &["id", "first_name", "last_name", "email", "city", "phone"],
        &table,
    );

    let cdc: Vec<Vec<Value>> = table
        .into_iter()
        .enumerate()
        .map(|(i, row)| {
            let mut full = cdc_prefix(i);
            full.extend(row);
            full
        })
        .collect();
    run(
        "customers net changes",
        &[
            "__$start_lsn",
            "__$operation",
            "__$update_mask",
            "id",
            "first_name",
            "last_name",
            "email",
            "city",
            "phone",
        ],
        &cdc,
    );
}

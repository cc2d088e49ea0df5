//! Parallel full load (issue 12): a 20M-row table loaded as 1 range and as 4 ranges, through
//! the real read path (TDS → tiberius → `Value`s → CSV → Azurite).
//!
//! Run with `cargo bench --bench parallel_load` (release profile); `-- ranges-4` runs only the
//! named scenarios; `CDC_BENCH_ROWS` overrides the 20M rows. docs/benchmarks.md ("Parallel
//! full load (issue 12)") records the figures.
//!
//! Why it is built like this:
//! - The rows come from the test TDS server's generated mode, as in `benches/tds.rs`
//!   (pre-encoded rows, keys patched in place), and it evaluates the range predicates
//!   (`on_generated_range_scan`), so every range pages exactly as it would on SQL Server.
//! - Each range is one worker on its own tokio task with its own session (connection), its
//!   own keyset pages and its own part blobs of `PART` rows, as `jobs::full_load` runs a split
//!   load; the boundaries come from `ranges::split` over an even key sample, what a page
//!   sample of a dense key gives. Not the job itself: the catalog and checkpoint statements
//!   are not scripted (each is one small round trip per part).
//! - Each scenario runs in a child process, so `VmHWM` is that scenario's peak RSS, and its
//!   CPU time (`getrusage`) over wall time says how many cores it used. `raw-azurite` uploads
//!   the same bytes with no source or encoder (the ceiling), in the same run.

use std::process::{Command, Stdio};
use std::time::Instant;

use cdc_copy::cdc::{CaptureInstance, CdcSource, KeyColumn, KeyType, Lsn, TableRef, Value};
use cdc_copy::config::Settings;
use cdc_copy::jobs::full_load::ranges::{self, KeyRange};
use cdc_copy::sink::blob::BlobTarget;
use cdc_copy::sink::rows::CsvBlobSink;
use cdc_copy::sqlserver::connection::PACKET_SIZE;
use cdc_copy::sqlserver::{sql, SqlServerSource};
use cdc_copy_testkit::azurite;
use cdc_copy_testkit::tds::{self, FakeServer};
use serde_json::json;

const BLOCK: usize = 4 << 20;
/// Rows per keyset page and per part blob: the product's `CDC_FULL_LOAD_PART_ROWS` default.
const PART: u64 = 1_000_000;
const STORAGE_ENV: &str = "CDC_BENCH_STORAGE_CONNECTION_STRING";
const SCENARIOS: &[&str] = &["raw-azurite", "ranges-1", "ranges-4"];

fn rows() -> u64 {
    std::env::var("CDC_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000_000)
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// User + system CPU seconds of this process so far.
fn cpu_secs() -> f64 {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes the struct it is given; RUSAGE_SELF is always valid.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .next()
        .unwrap_or("?")
        .to_string()
}

fn capture_instance() -> CaptureInstance {
    CaptureInstance {
        table: TableRef::parse("dbo.customers").expect("valid name"),
        name: "dbo_customers".into(),
        supports_net_changes: true,
        min_lsn: Lsn::from_u128(1),
        start_lsn: Some(Lsn::from_u128(1)),
        key_columns: vec![KeyColumn::new("customer_id", KeyType::Int)],
        columns: tds::customers(false, false, 0)
            .columns()
            .iter()
            .map(|c| c.desc())
            .collect(),
        ddl: Vec::new(),
    }
}

async fn target(container: &str) -> BlobTarget {
    let storage = std::env::var(STORAGE_ENV).expect("storage connection string");
    let vars: std::collections::HashMap<String, String> = [
        (
            "CDC_SQL_CONNECTION_STRING",
            "Server=tcp:localhost,1433;Database=shop;User ID=bench;Password=unused;Encrypt=true",
        ),
        ("CDC_TABLES", "dbo.customers"),
        ("CDC_STORAGE_CONNECTION_STRING", storage.as_str()),
        ("CDC_CONTAINER", container),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let s = Settings::from_map(&vars).expect("bench settings");
    let target = BlobTarget::new(&s.storage, &s.container).expect("Azurite target");
    target.ensure_container().await.expect("create container");
    target
}

/// One range's worker: its own connection, keyset pages of `PART` rows from `after` up to
/// `upto`, one blob per page; (rows, CSV bytes).
async fn load_range(
    mut server_config: tiberius::Config,
    target: BlobTarget,
    ci: CaptureInstance,
    index: usize,
    range: KeyRange,
) -> (u64, u64) {
    server_config.packet_size(PACKET_SIZE);
    let source = SqlServerSource::from_config(
        server_config,
        TableRef::parse("cdc_copy.watermark").unwrap(),
    );
    let mut session = source.session().await.expect("session");
    let (mut rows, mut bytes) = (0, 0);
    let mut after = range.after.clone();
    for part in 0.. {
        let name = format!("customers/range-{index:03}-part-{part:05}.csv");
        let mut sink = CsvBlobSink::new(
            target.writer(&name, vec![], BLOCK),
            BLOCK,
            ci.load_columns(),
        );
        let (n, last) = session
            .scan(
                &ci,
                after.as_deref(),
                range.upto.as_deref(),
                PART,
                &mut sink,
            )
            .await
            .expect("scan");
        let summary = sink.finish().await.expect("commit");
        rows += n;
        bytes += summary.bytes;
        if n < PART {
            break;
        }
        after = last;
    }
    (rows, bytes)
}

async fn parallel(name: &str, count: u32) -> serde_json::Value {
    let total = rows();
    let server = FakeServer::start().await;
    let ci = capture_instance();
    let generated = tds::customers(false, false, total);
    let statement = |after, upto| {
        sql::scan(&ci.table, &ci.key_columns, &ci.columns, after, upto).expect("scan text")
    };
    server.on_generated_scan(
        &statement(false, false),
        &statement(true, false),
        generated.clone(),
    );
    server.on_generated_range_scan(&statement(false, true), &statement(true, true), generated);
    // What a page sample of a dense key gives: evenly spread keys, in key order.
    let step = (total / (ranges::SAMPLE_ROWS_PER_RANGE * u64::from(count))).max(1);
    let sample: Vec<Vec<Value>> = (1..=total)
        .step_by(step as usize)
        .map(|k| vec![Value::Int(k as i64)])
        .collect();
    let plan = ranges::split(&sample, count);
    let target = target(&name.to_ascii_lowercase()).await;
    let (cpu0, started) = (cpu_secs(), Instant::now());
    let workers: Vec<_> = plan
        .into_iter()
        .enumerate()
        .map(|(i, range)| {
            tokio::spawn(load_range(
                server.config(),
                target.clone(),
                ci.clone(),
                i,
                range,
            ))
        })
        .collect();
    let mut per_range = Vec::new();
    for w in workers {
        per_range.push(w.await.expect("worker"));
    }
    let secs = started.elapsed().as_secs_f64();
    let cpu = cpu_secs() - cpu0;
    let loaded: u64 = per_range.iter().map(|(r, _)| r).sum();
    assert_eq!(loaded, total, "every row once");
    json!({
        "scenario": name, "rows": total, "bytes": per_range.iter().map(|(_, b)| b).sum::<u64>(),
        "secs": secs, "cpu_secs": cpu, "peak_rss_kib": peak_rss_kib(), "load": load(),
        "note": format!("{} ranges of {:?} rows", per_range.len(), per_range.iter().map(|(r, _)| *r).collect::<Vec<_>>()),
    })
}

async fn raw_azurite(bytes: u64) -> serde_json::Value {
    let target = target("raw-azurite").await;
    let chunk: Vec<u8> = (0..BLOCK).map(|i| b"0123456789,abcdef\n"[i % 18]).collect();
    let (cpu0, started) = (cpu_secs(), Instant::now());
    let mut w = target.writer("raw.csv", vec![], BLOCK);
    let mut left = bytes;
    while left > 0 {
        let n = (chunk.len() as u64).min(left) as usize;
        w.write(&chunk[..n]).await.expect("write");
        left -= n as u64;
    }
    let summary = w.finish().await.expect("commit");
    json!({
        "scenario": "raw-azurite", "rows": 0, "bytes": summary.bytes,
        "secs": started.elapsed().as_secs_f64(), "cpu_secs": cpu_secs() - cpu0,
        "peak_rss_kib": peak_rss_kib(), "load": load(), "note": "one blob, one writer",
    })
}

fn child(name: &str) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = runtime.block_on(async {
        match name {
            // The CSV of the narrow rows is ~64 B/row.
            "raw-azurite" => raw_azurite(rows() * 64).await,
            "ranges-1" => parallel(name, 1).await,
            "ranges-4" => parallel(name, 4).await,
            other => panic!("unknown scenario {other:?}; known: {SCENARIOS:?}"),
        }
    });
    println!("RESULT {result}");
}

fn run_child(name: &str) -> serde_json::Value {
    let azurite = azurite::Azurite::start();
    let out = Command::new(std::env::current_exe().expect("current exe"))
        .args(["--scenario", name])
        .env(STORAGE_ENV, &azurite.connection_string)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .expect("re-execute the bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "scenario {name} failed: {stdout}");
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .unwrap_or_else(|| panic!("scenario {name} printed no RESULT line: {stdout}"));
    serde_json::from_str(line).expect("RESULT is JSON")
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(i) = args.iter().position(|a| a == "--scenario") {
        child(args.get(i + 1).expect("--scenario NAME"));
        return;
    }
    let filters: Vec<String> = args.into_iter().filter(|a| !a.starts_with('-')).collect();
    let results: Vec<serde_json::Value> = SCENARIOS
        .iter()
        .filter(|name| filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str())))
        .map(|name| run_child(name))
        .collect();
    let num = |v: &serde_json::Value, key: &str| v[key].as_f64().unwrap_or(0.0);
    println!(
        "\n{:<12} {:>10} {:>13} {:>8} {:>11} {:>7} {:>8} {:>6} {:>9} {:>5}  note",
        "scenario", "rows", "bytes", "secs", "rows/s", "MB/s", "cpu s", "cores", "peak MiB", "load"
    );
    for r in &results {
        let secs = num(r, "secs");
        println!(
            "{:<12} {:>10} {:>13} {:>8.2} {:>11.0} {:>7.1} {:>8.2} {:>6.2} {:>9.1} {:>5}  {}",
            r["scenario"].as_str().unwrap_or("?"),
            num(r, "rows"),
            num(r, "bytes"),
            secs,
            num(r, "rows") / secs,
            num(r, "bytes") / secs / 1e6,
            num(r, "cpu_secs"),
            num(r, "cpu_secs") / secs,
            num(r, "peak_rss_kib") / 1024.0,
            r["load"].as_str().unwrap_or("?"),
            r["note"].as_str().unwrap_or(""),
        );
    }
}

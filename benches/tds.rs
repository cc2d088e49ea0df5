//! The TDS read path (issue 13): rows from a TDS server through tiberius into the product.
//!
//! Run with `cargo bench --bench tds` (release profile); `cargo bench --bench tds -- decode-narrow`
//! runs only the named scenarios. docs/benchmarks.md ("The TDS read path") records the figures.
//!
//! Why it is built like this:
//! - The rows come from the test TDS server (`cdc_copy_testkit::tds`) in its generated mode:
//!   pre-encoded ROW/NBCROW tokens with the key patched in place, so the server does no
//!   per-row work. `server-*` reads that stream with a bare TCP client that discards it: the
//!   ceiling of the source, so the table shows it is not what bounds the rest.
//! - `tiberius-*` reads the same rows with the bare tiberius client and drops them: the
//!   driver's own ceiling.
//! - `decode-*` runs `SqlServerSession::scan` into a counting sink: tiberius plus our
//!   `Value` conversion, nothing else. `tds-full-load-*` and `tds-incremental-*` put the
//!   product's `CsvBlobSink` (CSV → Azurite) behind the same session, paging the scan by key
//!   as the FullLoad job does; `raw-azurite` uploads the same number of bytes with no source
//!   or encoder, the ceiling, in the same run.
//! - Each scenario runs in a child process (as `benches/pipeline.rs` does), so `VmHWM` is that
//!   scenario's peak RSS. The server runs inside the child on its own runtime thread: on a
//!   2-core machine the client still gets one core to itself.
//! - `CDC_BENCH_PACKET` (default: the product's `PACKET_SIZE`) sets the packet size the
//!   client asks for, so the packet-size effect is measured in one build.

use std::hint::black_box;
use std::process::{Command, Stdio};
use std::time::Instant;

use cdc_copy::cdc::{
    CaptureInstance, CdcSession, ChangeMode, KeyColumn, KeyType, Lsn, LsnRange, RowFilter, RowSink,
    RowSinkError, TableRef, Value,
};
use cdc_copy::config::{CommandTimeout, Settings};
use cdc_copy::sink::blob::BlobTarget;
use cdc_copy::sink::rows::CsvBlobSink;
use cdc_copy::sqlserver::connection::PACKET_SIZE;
use cdc_copy::sqlserver::{sql, SqlServerSession};
use cdc_copy_testkit::azurite;
use cdc_copy_testkit::tds::{self, FakeServer, Reply};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::compat::TokioAsyncWriteCompatExt;

const BLOCK: usize = 4 << 20;
/// Rows per keyset page: `CDC_FULL_LOAD_PAGE_ROWS`-sized pages, as the job reads them.
const PAGE: u64 = 100_000;
const STORAGE_ENV: &str = "CDC_BENCH_STORAGE_CONNECTION_STRING";

const SCENARIOS: &[&str] = &[
    "server-narrow",
    "server-wide",
    "tiberius-narrow",
    "tiberius-wide",
    "decode-narrow",
    "decode-wide",
    "raw-azurite",
    "tds-full-load-1M",
    "tds-full-load-5M",
    "tds-full-load-wide-1M",
    "tds-incremental-1M",
    "tds-incremental-5M",
];

fn rss_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .next()
        .unwrap_or("?")
        .to_string()
}

#[derive(Default)]
struct Figures {
    rows: u64,
    /// TDS row-token bytes (server, decode) or CSV bytes (uploads).
    bytes: u64,
    secs: f64,
    note: String,
}

fn report(name: &str, f: Figures) {
    let (_, hwm) = rss_kib();
    let line = json!({
        "scenario": name, "rows": f.rows, "bytes": f.bytes, "secs": f.secs,
        "peak_rss_kib": hwm, "note": f.note, "load": load(),
    });
    println!("RESULT {line}");
}

fn packet_size() -> u32 {
    std::env::var("CDC_BENCH_PACKET")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(PACKET_SIZE)
}

fn table() -> TableRef {
    TableRef::parse("dbo.customers").expect("valid name")
}

fn capture_instance(wide: bool) -> CaptureInstance {
    let columns = tds::customers(wide, false, 0)
        .columns()
        .iter()
        .map(tds::Column::desc)
        .collect();
    CaptureInstance {
        table: table(),
        name: "dbo_customers".into(),
        supports_net_changes: true,
        min_lsn: Lsn::from_u128(1),
        start_lsn: Some(Lsn::from_u128(1)),
        key_columns: vec![KeyColumn::new("customer_id", KeyType::Int)],
        columns,
        ddl: Vec::new(),
    }
}

/// A server answering the scan of `rows` generated rows and their net changes.
async fn server(wide: bool, rows: u64) -> (FakeServer, CaptureInstance) {
    let server = FakeServer::start().await;
    let ci = capture_instance(wide);
    let first = sql::scan(&ci.table, &ci.key_columns, &ci.columns, false, false).unwrap();
    let after = sql::scan(&ci.table, &ci.key_columns, &ci.columns, true, false).unwrap();
    server.on_generated_scan(&first, &after, tds::customers(wide, false, rows));
    let changes = sql::net_changes(&ci.name, &ci.key_columns, &ci.columns).unwrap();
    server.on(&changes, Reply::Generated(tds::customers(wide, true, rows)));
    (server, ci)
}

/// The product's session over a tiberius client that asks for `packet_size()`.
async fn session(server: &FakeServer) -> SqlServerSession {
    let mut config = server.config();
    config.packet_size(packet_size());
    let tcp = tokio::net::TcpStream::connect(config.get_addr())
        .await
        .expect("connect");
    tcp.set_nodelay(true).expect("nodelay");
    let client = tiberius::Client::connect(config, tcp.compat_write())
        .await
        .expect("login");
    SqlServerSession::new(
        client,
        TableRef::parse("cdc_copy.watermark").unwrap(),
        CommandTimeout::DEFAULT,
    )
}

// ----- server alone -------------------------------------------------------------------------

/// One TDS packet of `ty` with `payload`.
fn packet(ty: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![ty, 0x01];
    out.extend_from_slice(&((payload.len() + 8) as u16).to_be_bytes());
    out.extend_from_slice(&[0, 0, 1, 0]);
    out.extend_from_slice(payload);
    out
}

/// Reads one reply message, discarding it; its payload bytes.
async fn drain(socket: &mut tokio::net::TcpStream, buf: &mut [u8]) -> u64 {
    let mut payload = 0u64;
    loop {
        let mut header = [0u8; 8];
        socket.read_exact(&mut header).await.expect("header");
        let mut left = u16::from_be_bytes([header[2], header[3]]) as usize - 8;
        payload += left as u64;
        while left > 0 {
            let n = left.min(buf.len());
            socket.read_exact(&mut buf[..n]).await.expect("body");
            left -= n;
        }
        if header[1] & 0x01 != 0 {
            return payload;
        }
    }
}

/// The generated stream read by a bare client that logs in and discards every byte.
async fn server_only(wide: bool, rows: u64) -> Figures {
    let (server, ci) = server(wide, rows).await;
    let mut socket = tokio::net::TcpStream::connect(("127.0.0.1", server.port()))
        .await
        .expect("connect");
    let mut buf = vec![0u8; 64 * 1024];
    socket.write_all(&packet(0x12, &[])).await.unwrap();
    drain(&mut socket, &mut buf).await;
    let mut login = vec![0u8; 12];
    login[8..12].copy_from_slice(&packet_size().to_le_bytes());
    socket.write_all(&packet(0x10, &login)).await.unwrap();
    drain(&mut socket, &mut buf).await;
    // A SQL batch: ALL_HEADERS of total length 4 (none), then the UTF-16 text.
    let _ = ci;
    server.on(
        "bench: all rows",
        Reply::Generated(tds::customers(wide, false, rows)),
    );
    let mut batch = 4u32.to_le_bytes().to_vec();
    batch.extend("bench: all rows".encode_utf16().flat_map(u16::to_le_bytes));
    let started = Instant::now();
    socket.write_all(&packet(0x01, &batch)).await.unwrap();
    let bytes = drain(&mut socket, &mut buf).await;
    Figures {
        rows,
        bytes,
        secs: started.elapsed().as_secs_f64(),
        note: format!("packet {} B", packet_size()),
    }
}

// ----- decode -------------------------------------------------------------------------------

#[derive(Default)]
struct CountingSink(u64);

#[async_trait::async_trait]
impl RowSink for CountingSink {
    async fn columns(&mut self, _names: &[String]) -> Result<(), RowSinkError> {
        Ok(())
    }

    async fn row(&mut self, row: &[Value]) -> Result<(), RowSinkError> {
        black_box(row);
        self.0 += 1;
        Ok(())
    }
}

/// Pages through the table by key into `sink`, as the FullLoad job does; rows read.
async fn scan_all(
    session: &mut SqlServerSession,
    ci: &CaptureInstance,
    sink: &mut dyn RowSink,
) -> u64 {
    let mut after: Option<Vec<Value>> = None;
    let mut total = 0;
    loop {
        let (rows, last) = session
            .scan(ci, after.as_deref(), None, PAGE, sink)
            .await
            .expect("scan");
        total += rows;
        if rows < PAGE {
            return total;
        }
        after = last;
    }
}

async fn decode(wide: bool, rows: u64) -> Figures {
    let (server, ci) = server(wide, rows).await;
    let mut session = session(&server).await;
    let mut sink = CountingSink::default();
    let started = Instant::now();
    let read = scan_all(&mut session, &ci, &mut sink).await;
    let secs = started.elapsed().as_secs_f64();
    assert_eq!((read, sink.0), (rows, rows));
    Figures {
        rows,
        bytes: tds::customers(wide, false, rows).row_bytes(),
        secs,
        note: format!("packet {} B, pages of {PAGE}", packet_size()),
    }
}

/// tiberius alone: the same rows read with `Client::query` and dropped, no `Value`s, no
/// sink — the driver's own ceiling, what `decode-*` can at best reach.
async fn tiberius_only(wide: bool, rows: u64) -> Figures {
    use futures::TryStreamExt;
    let (server, _) = server(wide, rows).await;
    server.on(
        "bench: all rows",
        Reply::Generated(tds::customers(wide, false, rows)),
    );
    let mut config = server.config();
    config.packet_size(packet_size());
    let tcp = tokio::net::TcpStream::connect(config.get_addr())
        .await
        .expect("connect");
    tcp.set_nodelay(true).expect("nodelay");
    let mut client = tiberius::Client::connect(config, tcp.compat_write())
        .await
        .expect("login");
    let started = Instant::now();
    let mut stream = client.simple_query("bench: all rows").await.expect("query");
    let mut read = 0u64;
    while let Some(item) = stream.try_next().await.expect("row") {
        if let tiberius::QueryItem::Row(row) = item {
            black_box(row);
            read += 1;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(read, rows);
    Figures {
        rows,
        bytes: tds::customers(wide, false, rows).row_bytes(),
        secs,
        note: format!("packet {} B, rows dropped", packet_size()),
    }
}

// ----- end to end ---------------------------------------------------------------------------

fn storage() -> String {
    std::env::var(STORAGE_ENV).unwrap_or_else(|_| panic!("{STORAGE_ENV} is not set"))
}

async fn target(container: &str) -> BlobTarget {
    let vars: std::collections::HashMap<String, String> = [
        (
            "CDC_SQL_CONNECTION_STRING",
            "Server=tcp:localhost,1433;Database=shop;User ID=bench;Password=unused;Encrypt=true"
                .to_string(),
        ),
        ("CDC_TABLES", "dbo.customers".to_string()),
        ("CDC_STORAGE_CONNECTION_STRING", storage()),
        ("CDC_CONTAINER", container.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let s = Settings::from_map(&vars).expect("bench settings");
    let target = BlobTarget::new(&s.storage, &s.container).expect("Azurite target");
    target.ensure_container().await.expect("create container");
    target
}

async fn full_load(name: &str, wide: bool, rows: u64) -> Figures {
    let (server, ci) = server(wide, rows).await;
    let target = target(&name.to_ascii_lowercase()).await;
    let mut session = session(&server).await;
    let started = Instant::now();
    let mut sink = CsvBlobSink::new(
        target.writer("customers.csv", vec![], BLOCK),
        BLOCK,
        ci.load_columns(),
    );
    let read = scan_all(&mut session, &ci, &mut sink).await;
    let summary = sink.finish().await.expect("commit");
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(read, rows);
    Figures {
        rows,
        bytes: summary.bytes,
        secs,
        note: format!("{} blocks", summary.blocks),
    }
}

async fn incremental(name: &str, rows: u64) -> Figures {
    let (server, ci) = server(false, rows).await;
    let target = target(&name.to_ascii_lowercase()).await;
    let mut session = session(&server).await;
    let range = LsnRange::new(Lsn::from_u128(1), Lsn::from_u128(2)).unwrap();
    let started = Instant::now();
    let mut sink = CsvBlobSink::new(
        target.writer("changes.csv", vec![], BLOCK),
        BLOCK,
        ci.change_columns(ChangeMode::Net),
    );
    let read = session
        .net_changes(&ci, range, RowFilter::All, &mut sink)
        .await
        .expect("net changes");
    let summary = sink.finish().await.expect("commit");
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(read, rows);
    Figures {
        rows,
        bytes: summary.bytes,
        secs,
        note: format!("{} blocks, one net-changes read", summary.blocks),
    }
}

async fn raw_azurite(bytes: u64) -> Figures {
    let target = target("raw-azurite").await;
    let chunk: Vec<u8> = (0..BLOCK).map(|i| b"0123456789,abcdef\n"[i % 18]).collect();
    let started = Instant::now();
    let mut w = target.writer("raw.csv", vec![], BLOCK);
    let mut left = bytes;
    while left > 0 {
        let n = (chunk.len() as u64).min(left) as usize;
        w.write(&chunk[..n]).await.expect("write");
        left -= n as u64;
    }
    let summary = w.finish().await.expect("commit");
    Figures {
        rows: 0,
        bytes: summary.bytes,
        secs: started.elapsed().as_secs_f64(),
        note: format!("{} blocks", summary.blocks),
    }
}

fn child(name: &str, args: &[String]) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let figures = runtime.block_on(async {
        match name {
            "server-narrow" => server_only(false, 5_000_000).await,
            "server-wide" => server_only(true, 500_000).await,
            "tiberius-narrow" => tiberius_only(false, 5_000_000).await,
            "tiberius-wide" => tiberius_only(true, 500_000).await,
            "decode-narrow" => decode(false, 5_000_000).await,
            "decode-wide" => decode(true, 500_000).await,
            "raw-azurite" => {
                let bytes = args
                    .iter()
                    .position(|a| a == "--bytes")
                    .and_then(|i| args.get(i + 1))
                    .and_then(|v| v.parse().ok())
                    .expect("raw-azurite needs --bytes N");
                raw_azurite(bytes).await
            }
            "tds-full-load-1M" => full_load(name, false, 1_000_000).await,
            "tds-full-load-5M" => full_load(name, false, 5_000_000).await,
            "tds-full-load-wide-1M" => full_load(name, true, 1_000_000).await,
            "tds-incremental-1M" => incremental(name, 1_000_000).await,
            "tds-incremental-5M" => incremental(name, 5_000_000).await,
            other => panic!("unknown scenario {other:?}; known: {SCENARIOS:?}"),
        }
    });
    report(name, figures);
}

fn run_child(name: &str, extra: &[String]) -> serde_json::Value {
    let needs_storage = ["server-", "tiberius-", "decode-"]
        .iter()
        .all(|prefix| !name.starts_with(prefix));
    let azurite = needs_storage.then(azurite::Azurite::start);
    let conn = azurite
        .as_ref()
        .map(|a| a.connection_string.clone())
        .unwrap_or_default();
    let out = Command::new(std::env::current_exe().expect("current exe"))
        .args(["--scenario", name])
        .args(extra)
        .env(STORAGE_ENV, conn)
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

fn num(v: &serde_json::Value, key: &str) -> f64 {
    v[key].as_f64().unwrap_or(0.0)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(i) = args.iter().position(|a| a == "--scenario") {
        let name = args.get(i + 1).expect("--scenario NAME").clone();
        child(&name, &args);
        return;
    }
    let filters: Vec<String> = args.into_iter().filter(|a| !a.starts_with('-')).collect();
    let mut results: Vec<serde_json::Value> = Vec::new();
    for name in SCENARIOS {
        if !filters.is_empty() && !filters.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        let extra = if *name == "raw-azurite" {
            // The largest CSV of the end-to-end scenarios: sized by a 5M narrow load's ~64 B/row.
            vec!["--bytes".to_string(), (5_000_000u64 * 64).to_string()]
        } else {
            Vec::new()
        };
        let r = run_child(name, &extra);
        results.push(r);
    }
    println!(
        "\n{:<24} {:>10} {:>14} {:>9} {:>11} {:>9} {:>9} {:>6}  note",
        "scenario", "rows", "bytes", "secs", "rows/s", "MB/s", "peak MiB", "load"
    );
    let raw = results
        .iter()
        .find(|r| r["scenario"] == "raw-azurite")
        .map(|r| num(r, "bytes") / num(r, "secs"));
    for r in &results {
        let secs = num(r, "secs");
        let mbps = num(r, "bytes") / secs / 1e6;
        let mut note = r["note"].as_str().unwrap_or("").to_string();
        if let (Some(raw), true) = (
            raw,
            r["scenario"].as_str().unwrap_or("").starts_with("tds-"),
        ) {
            note = format!("{note}; {:.0}% of raw-azurite", 100.0 * mbps * 1e6 / raw);
        }
        println!(
            "{:<24} {:>10} {:>14} {:>9.2} {:>11.0} {:>9.1} {:>9.1} {:>6}  {}",
            r["scenario"].as_str().unwrap_or("?"),
            num(r, "rows"),
            num(r, "bytes"),
            secs,
            num(r, "rows") / secs,
            mbps,
            num(r, "peak_rss_kib") / 1024.0,
            r["load"].as_str().unwrap_or("?"),
            note
        );
    }
}

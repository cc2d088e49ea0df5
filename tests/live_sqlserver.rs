//! Live suite: the whole product against a real SQL Server 2022 with CDC and a real Azurite.
//!
//! Why it exists: every other test reads CDC through the in-memory model or the TDS test
//! double, which encode what we *believe* SQL Server does. Only a real server can say whether
//! `sql/setup.sql` runs, whether the capture job's LSN/time mapping behaves as the window
//! arithmetic assumes, and whether net changes (key updates, insert+delete of one key) come out
//! as the consumers' upsert logic expects.
//!
//! Runs only when `CDC_COPY_TEST_MSSQL` holds an ADO.NET connection string to a server whose
//! SQL Server Agent runs (CDC capture is an Agent job; Docker: `MSSQL_AGENT_ENABLED=true`, as in
//! `compose.yaml`) and whose login may create databases, e.g.
//! `Server=tcp:localhost,1433;User Id=sa;Password=...;Encrypt=true;TrustServerCertificate=true`.
//! Any `Database=` in it is ignored. Otherwise each test prints
//! `skipped: CDC_COPY_TEST_MSSQL not set` and passes: CI has no SQL Server. See
//! `docs/live-tests.md`.
//!
//! Each test creates its own uniquely named database and drops it at the end, also when the
//! test fails (a drop guard; `CDC_COPY_TEST_KEEP_DB=1` keeps it for a post-mortem). Blob
//! Storage is a fresh Azurite from `tests/common/azurite.rs`, or the one named by
//! `CDC_COPY_TEST_STORAGE` (e.g. `UseDevelopmentStorage=true` for the compose Azurite); each
//! test writes to its own container.

mod common;
#[path = "live_sqlserver/fanout.rs"]
mod fanout;
#[path = "live_sqlserver/first_run.rs"]
mod first_run;
#[path = "live_sqlserver/idle.rs"]
mod idle;
#[path = "live_sqlserver/keyless.rs"]
mod keyless;
#[path = "live_sqlserver/keys.rs"]
mod keys;
#[path = "live_sqlserver/lake_files.rs"]
mod lake_files;
#[path = "live_sqlserver/least_privilege.rs"]
mod least_privilege;
#[path = "live_sqlserver/parallel_load.rs"]
mod parallel_load;
#[path = "live_sqlserver/schema_changes.rs"]
mod schema_changes;
#[path = "live_sqlserver/switch_jobs.rs"]
mod switch_jobs;
#[path = "live_sqlserver/typed_columns.rs"]
mod typed_columns;
use cdc_copy_testkit::live::LiveSql;
use cdc_copy_testkit::tds;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cdc_copy::cdc::VecSink;
use cdc_copy::cdc::{
    CdcSession, CdcSource, Lsn, LsnRange, RowFilter, TableRef, TableState, Value, Watermark,
};
use cdc_copy::config::Settings;
use cdc_copy::host::{FullLoadRequest, Jobs, TimerTrigger};
use cdc_copy::jobs::Runner;
use cdc_copy::report::{Report, Status};
use cdc_copy::sink::blob::BlobTarget;
use cdc_copy::sqlserver::SqlServerSource;
use chrono::{DateTime, NaiveDateTime, Utc};
use common::azurite::{unique_container, Azurite};
use tiberius::{Client, ColumnData, Config, Row};
use tokio::net::TcpStream;
use tokio_util::compat::{Compat, TokioAsyncWriteCompatExt};

const ENV: &str = "CDC_COPY_TEST_MSSQL";
const STORAGE_ENV: &str = "CDC_COPY_TEST_STORAGE";
const KEEP_ENV: &str = "CDC_COPY_TEST_KEEP_DB";
/// How long the capture job may take to write its first LSN mapping or to pick up a change.
/// The Agent job polls every 5 s; its first start after `sp_cdc_enable_table` takes longer.
const CAPTURE_TIMEOUT: Duration = Duration::from_secs(120);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
const WATERMARK_TABLE: &str = "cdc_copy.watermark";
const SETUP_SQL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/sql/setup.sql");

type Sql = Client<Compat<TcpStream>>;

/// The connection string under test, or `None` (the test then prints the skip line).
fn live_connection_string() -> Option<String> {
    std::env::var(ENV).ok().filter(|s| !s.trim().is_empty())
}

// ---------------------------------------------------------------------------------------------
// Connection strings and plain SQL (the harness's own access, independent of the product).
// ---------------------------------------------------------------------------------------------

/// Splits an ADO.NET connection string at the `;` that separate pairs, leaving `;` inside
/// quoted (`'…'`, `"…"`, a doubled quote inside) or braced (`{…}`, up to the first `}`)
/// values alone, as tiberius's parser does.
fn ado_pairs(conn: &str) -> Vec<&str> {
    let mut pairs = Vec::new();
    let mut start = 0;
    let mut closing: Option<char> = None;
    let mut at_value_start = false;
    let mut chars = conn.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match closing {
            Some(end) if c == end => {
                if end != '}' && chars.peek().map(|&(_, n)| n) == Some(end) {
                    chars.next(); // doubled: an escaped quote inside the value
                } else {
                    closing = None;
                }
            }
            Some(_) => {}
            None if at_value_start && c.is_whitespace() => continue,
            None if at_value_start && matches!(c, '\'' | '"' | '{') => {
                closing = Some(if c == '{' { '}' } else { c });
            }
            None if c == '=' => {
                at_value_start = true;
                continue;
            }
            None if c == ';' => {
                pairs.push(&conn[start..i]);
                start = i + 1;
            }
            None => {}
        }
        at_value_start = false;
    }
    pairs.push(&conn[start..]);
    pairs.retain(|p| !p.trim().is_empty());
    pairs
}

/// `conn` with its `Database=` / `Initial Catalog=` replaced by `database`.
fn with_database(conn: &str, database: &str) -> String {
    replace_pairs(
        conn,
        &["database", "initial catalog"],
        &[format!("Database={database}")],
    )
}

/// `conn` without the pairs whose key (case-insensitive) is in `keys`, then `added` appended.
fn replace_pairs(conn: &str, keys: &[&str], added: &[String]) -> String {
    let mut kept: Vec<&str> = ado_pairs(conn)
        .into_iter()
        .filter(|pair| {
            let key = pair
                .split('=')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            !keys.contains(&key.as_str())
        })
        .collect();
    kept.extend(added.iter().map(String::as_str));
    kept.join(";")
}

async fn connect(config: &Config) -> Sql {
    let addr = config.get_addr();
    let login = async {
        let tcp = TcpStream::connect(&addr)
            .await
            .unwrap_or_else(|e| panic!("TCP connect to {addr} ({ENV}): {e}"));
        tcp.set_nodelay(true).unwrap();
        Client::connect(config.clone(), tcp.compat_write())
            .await
            .unwrap_or_else(|e| panic!("SQL Server login at {addr} ({ENV}): {e}"))
    };
    tokio::time::timeout(CONNECT_TIMEOUT, login)
        .await
        .unwrap_or_else(|_| panic!("no SQL Server answered at {addr} within {CONNECT_TIMEOUT:?}"))
}

/// Runs a batch and drains every result set.
async fn batch(client: &mut Sql, sql: &str) {
    client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{e}: {sql}"))
        .into_results()
        .await
        .unwrap_or_else(|e| panic!("{e}: {sql}"));
}

/// The first result set of a batch.
async fn rows(client: &mut Sql, sql: &str) -> Vec<Row> {
    client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{e}: {sql}"))
        .into_first_result()
        .await
        .unwrap_or_else(|e| panic!("{e}: {sql}"))
}

async fn server_utc_now(client: &mut Sql) -> DateTime<Utc> {
    let row = rows(client, "SELECT SYSUTCDATETIME() AS now;").await;
    row[0]
        .get::<NaiveDateTime, _>("now")
        .expect("SYSUTCDATETIME() is not NULL")
        .and_utc()
}

/// The server's UTC time once it is after `after` (this machine's clock): a container's clock
/// can trail the host's a little.
async fn server_time_after(client: &mut Sql, after: DateTime<Utc>) -> DateTime<Utc> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let now = server_utc_now(client).await;
        if now > after {
            return now;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "SQL Server's clock ({now}) stays behind this machine's ({after}): sync the clocks"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn max_lsn(client: &mut Sql) -> Option<Lsn> {
    let row = rows(client, "SELECT sys.fn_cdc_get_max_lsn() AS max_lsn;").await;
    row[0]
        .get::<&[u8], _>("max_lsn")
        .map(|b| Lsn::from_bytes(b).expect("binary(10) LSN"))
}

/// Why capture might not run, for failure messages: Agent sessions and the capture job.
async fn agent_diagnostics(client: &mut Sql, database: &str) -> String {
    let sql = format!(
        "SELECT (SELECT COUNT(*) FROM sys.dm_exec_sessions WHERE program_name LIKE N'SQLAgent%') AS agent_sessions, \
                (SELECT COUNT(*) FROM msdb.dbo.sysjobs WHERE name = N'cdc.{database}_capture') AS capture_jobs;"
    );
    match client.simple_query(sql.as_str()).await {
        Ok(stream) => match stream.into_first_result().await {
            Ok(rows) => format!(
                "SQL Server Agent sessions: {}, capture job cdc.{database}_capture defined: {}",
                rows[0].get::<i32, _>("agent_sessions").unwrap_or(-1),
                rows[0].get::<i32, _>("capture_jobs").unwrap_or(-1) > 0
            ),
            Err(e) => format!("(diagnostics failed: {e})"),
        },
        Err(e) => format!("(diagnostics failed: {e})"),
    }
}

/// Waits until the capture job has written its first LSN mapping and recognised every capture
/// instance: before that `sys.fn_cdc_get_max_lsn()` or `cdc.change_tables.start_lsn` is NULL
/// and the product refuses to copy (transient "capture has not started").
async fn wait_for_first_capture(client: &mut Sql, database: &str) -> Lsn {
    let deadline = tokio::time::Instant::now() + CAPTURE_TIMEOUT;
    loop {
        let unrecognised = rows(
            client,
            "SELECT COUNT(*) AS n FROM cdc.change_tables WHERE start_lsn IS NULL;",
        )
        .await[0]
            .get::<i32, _>("n")
            .unwrap_or(0);
        if let Some(lsn) = max_lsn(client).await.filter(|_| unrecognised == 0) {
            return lsn;
        }
        if tokio::time::Instant::now() >= deadline {
            let why = agent_diagnostics(client, database).await;
            panic!(
                "sys.fn_cdc_get_max_lsn() or a start_lsn in {database} stayed NULL for \
                 {CAPTURE_TIMEOUT:?}: the CDC capture job never ran. Is SQL Server Agent running? (Docker: \
                 MSSQL_AGENT_ENABLED=true, as in compose.yaml.) {why}"
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Waits until `probe` (a `SELECT COUNT(*) AS n ...` over the change table) finds a row: the
/// capture job reads the log in order, so a captured last statement means all before it are.
async fn wait_until_captured(client: &mut Sql, database: &str, probe: &str) {
    let deadline = tokio::time::Instant::now() + CAPTURE_TIMEOUT;
    loop {
        let n = rows(client, probe).await[0].get::<i32, _>("n").unwrap_or(0);
        if n > 0 {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            let why = agent_diagnostics(client, database).await;
            panic!(
                "the capture job did not pick up the last change within {CAPTURE_TIMEOUT:?} \
                 ({probe}). Is SQL Server Agent running? {why}"
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// `sql/setup.sql` as shipped, run in the current database (it names no database itself).
async fn run_setup_sql(client: &mut Sql) {
    let setup = std::fs::read_to_string(SETUP_SQL).expect("read sql/setup.sql");
    assert!(
        !setup.lines().any(|l| l.trim().eq_ignore_ascii_case("GO")),
        "sql/setup.sql now has GO separators: split it into batches here"
    );
    batch(client, &setup).await;
}

// ---------------------------------------------------------------------------------------------
// The database guard.
// ---------------------------------------------------------------------------------------------

/// `<pid>_<ms>_<n>`: unique per test process and call, for the names of server objects.
fn unique_stamp() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{}_{}_{}",
        std::process::id(),
        Utc::now().timestamp_millis(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// The server of connection string `conn`, logged in to `master`.
fn master_of(conn: &str) -> Config {
    let mut server = Config::from_ado_string(conn)
        .unwrap_or_else(|_| panic!("{ENV} is not a valid ADO.NET connection string"));
    server.database("master");
    server
}

/// A uniquely named database, dropped (CDC jobs first) when the guard goes out of scope,
/// whether the test passed or panicked.
struct TestDatabase {
    name: String,
    /// The server, logged in to `master`.
    server: Config,
    /// The connection string under test, pointing at this database.
    connection_string: String,
}

impl TestDatabase {
    async fn create(conn: &str) -> TestDatabase {
        let name = format!("cdc_copy_live_{}", unique_stamp());
        let server = master_of(conn);
        let mut master = connect(&server).await;
        batch(&mut master, &format!("CREATE DATABASE [{name}];")).await;
        let guard = TestDatabase {
            connection_string: with_database(conn, &name),
            name,
            server,
        };
        // As compose.yaml's mssql-setup does (the copier itself reads without a snapshot).
        batch(
            &mut master,
            &format!(
                "ALTER DATABASE [{}] SET ALLOW_SNAPSHOT_ISOLATION ON;",
                guard.name
            ),
        )
        .await;
        guard
    }

    fn config(&self) -> Config {
        let mut config = self.server.clone();
        config.database(&self.name);
        config
    }

    async fn connect(&self) -> Sql {
        connect(&self.config()).await
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let keep = std::env::var(KEEP_ENV).is_ok_and(|v| v == "1" || v == "true");
        if keep {
            eprintln!("{KEEP_ENV}: keeping database {}", self.name);
            return;
        }
        let name = &self.name;
        clean_up(
            &format!("clean-up of test database {name}"),
            self.server.clone(),
            vec![
                // Removes the capture and cleanup Agent jobs, which DROP DATABASE leaves behind.
                format!(
                    "IF EXISTS (SELECT 1 FROM sys.databases WHERE name = N'{name}' AND is_cdc_enabled = 1) \
                     EXEC [{name}].sys.sp_cdc_disable_db;"
                ),
                format!(
                    "ALTER DATABASE [{name}] SET SINGLE_USER WITH ROLLBACK IMMEDIATE; \
                     DROP DATABASE [{name}];"
                ),
            ],
        );
    }
}

/// Runs a drop guard's clean-up `batches` on `server`, in order. Drop runs inside the test's
/// runtime (maybe while unwinding), so the async work happens on a thread with a runtime of its
/// own, and nothing here panics: a failed batch is reported under `what` and the next one still
/// runs.
fn clean_up(what: &str, server: Config, batches: Vec<String>) {
    let cleanup = std::thread::spawn(move || -> Result<Vec<Result<(), String>>, String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("runtime: {e}"))?;
        runtime.block_on(async move {
            let tcp = TcpStream::connect(server.get_addr())
                .await
                .map_err(|e| e.to_string())?;
            tcp.set_nodelay(true).ok();
            let mut client = Client::connect(server, tcp.compat_write())
                .await
                .map_err(|e| e.to_string())?;
            let mut results = Vec::new();
            for sql in &batches {
                results.push(run(&mut client, sql).await);
            }
            Ok(results)
        })
    });
    match cleanup.join() {
        Ok(Ok(results)) => {
            for error in results.into_iter().filter_map(Result::err) {
                eprintln!("{what}: {error}");
            }
        }
        Ok(Err(e)) => eprintln!("{what}: {e}"),
        Err(_) => eprintln!("{what}: panicked"),
    }

    async fn run(client: &mut Sql, sql: &str) -> Result<(), String> {
        let done = client
            .simple_query(sql)
            .await
            .map_err(|e| e.to_string())?
            .into_results()
            .await;
        done.map(|_| ()).map_err(|e| e.to_string())
    }
}

/// Blob Storage for a live test: `CDC_COPY_TEST_STORAGE`, or a fresh Azurite (the guard
/// returned with it keeps that one running).
fn live_storage() -> (Option<Azurite>, String) {
    match std::env::var(STORAGE_ENV) {
        Ok(storage) if !storage.trim().is_empty() => (None, storage),
        _ => {
            let azurite = Azurite::start();
            let storage = azurite.connection_string.clone();
            (Some(azurite), storage)
        }
    }
}

/// The production runner over `settings` (its `SqlServerSource` and `BlobTarget`), and the
/// blob target to read what it wrote.
fn production_runner(settings: Settings) -> (Runner, BlobTarget) {
    let blobs = BlobTarget::new(&settings.storage, &settings.container).expect("blob target");
    let source = SqlServerSource::new(&settings.sql, settings.watermark_table.clone())
        .expect("SqlServerSource::new")
        .with_command_timeout(settings.sql_command_timeout);
    let runner = Runner::new(Arc::new(settings), Arc::new(source), blobs.clone());
    (runner, blobs)
}

// ---------------------------------------------------------------------------------------------
// Table contents and CSV, both as rows of optional text (NULL = None).
// ---------------------------------------------------------------------------------------------

type Rows = BTreeMap<i64, Vec<Option<String>>>;

/// One SQL value as the CSV would show it, for the types of the sample table.
fn text(data: ColumnData<'static>) -> Option<String> {
    match data {
        ColumnData::I32(v) => v.map(|v| v.to_string()),
        ColumnData::String(v) => v.map(|v| v.into_owned()),
        other => panic!("the sample table has no column of type {other:?}"),
    }
}

/// `SELECT * FROM dbo.customers`: column names and rows keyed by customer_id.
async fn table_contents(client: &mut Sql) -> (Vec<String>, Rows) {
    let result = rows(client, "SELECT * FROM dbo.customers;").await;
    let mut names = Vec::new();
    let mut out = Rows::new();
    for row in result {
        if names.is_empty() {
            names = row.columns().iter().map(|c| c.name().to_string()).collect();
        }
        let values: Vec<Option<String>> = row.into_iter().map(text).collect();
        out.insert(key_of(&values), values);
    }
    (names, out)
}

fn key_of(values: &[Option<String>]) -> i64 {
    values[0]
        .as_deref()
        .expect("customer_id is not NULL")
        .parse()
        .expect("customer_id is an integer")
}

/// A parsed CSV blob: header and records.
#[derive(Debug)]
struct Csv {
    header: Vec<String>,
    rows: Vec<Vec<Option<String>>>,
}

/// Parses a blob with the `csv` crate (a standard RFC 4180 reader); the raw bytes of each
/// record then tell NULL (an empty, unquoted field) from the empty string (`""`).
fn parse_csv(bytes: &[u8]) -> Csv {
    assert!(
        bytes.is_empty() || bytes.ends_with(b"\r\n"),
        "records end with CRLF"
    );
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(bytes);
    let mut records = Vec::new();
    let mut record = csv::ByteRecord::new();
    while reader.read_byte_record(&mut record).expect("valid CSV") {
        let start = record.position().expect("position").byte() as usize;
        records.push((start, record.clone()));
    }
    let mut parsed = Vec::new();
    for (i, (start, record)) in records.iter().enumerate() {
        let end = records.get(i + 1).map_or(bytes.len(), |(s, _)| *s);
        let quoted = quoted_fields(&bytes[*start..end]);
        assert_eq!(quoted.len(), record.len(), "record {i}");
        let fields: Vec<Option<String>> = record
            .iter()
            .zip(quoted)
            .map(|(field, quoted)| {
                (quoted || !field.is_empty())
                    .then(|| String::from_utf8(field.to_vec()).expect("UTF-8"))
            })
            .collect();
        parsed.push(fields);
    }
    let mut rows = parsed.into_iter();
    let header = rows
        .next()
        .expect("a header record")
        .into_iter()
        .map(|h| h.expect("header names are not empty"))
        .collect();
    Csv {
        header,
        rows: rows.collect(),
    }
}

/// For each field of one raw record: does it start with a quote?
fn quoted_fields(raw: &[u8]) -> Vec<bool> {
    let mut flags = Vec::new();
    // The reader may place a record's start on the previous record's line end.
    let mut i = raw
        .iter()
        .position(|b| !matches!(b, b'\r' | b'\n'))
        .unwrap_or(raw.len());
    loop {
        let quoted = raw.get(i) == Some(&b'"');
        flags.push(quoted);
        if quoted {
            i += 1;
            loop {
                match raw.get(i) {
                    Some(b'"') if raw.get(i + 1) == Some(&b'"') => i += 2,
                    Some(b'"') => {
                        i += 1;
                        break;
                    }
                    Some(_) => i += 1,
                    None => panic!("unterminated quoted field"),
                }
            }
        }
        while let Some(&b) = raw.get(i) {
            if matches!(b, b',' | b'\r' | b'\n') {
                break;
            }
            i += 1;
        }
        if raw.get(i) == Some(&b',') {
            i += 1;
            continue;
        }
        return flags;
    }
}

// ---------------------------------------------------------------------------------------------
// The watermark row as SQL Server holds it (read with plain SQL, not the product's session).
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
struct WatermarkRow {
    capture_instance: String,
    last_lsn: Lsn,
    last_window_end: DateTime<Utc>,
    pending_blob: Option<String>,
    full_load_id: Option<String>,
    rows_copied: i64,
    version: i64,
    updated_at: NaiveDateTime,
}

async fn watermark_row(client: &mut Sql) -> Option<WatermarkRow> {
    let result = rows(
        client,
        "SELECT capture_instance, last_lsn, last_window_end, pending_blob, full_load_id, \
                rows_copied, version, updated_at \
         FROM cdc_copy.watermark WHERE schema_name = N'dbo' AND table_name = N'customers';",
    )
    .await;
    let row = result.first()?;
    Some(WatermarkRow {
        capture_instance: row.get::<&str, _>(0).unwrap().to_string(),
        last_lsn: Lsn::from_bytes(row.get::<&[u8], _>(1).unwrap()).unwrap(),
        last_window_end: row.get::<NaiveDateTime, _>(2).unwrap().and_utc(),
        pending_blob: row.get::<&str, _>(3).map(str::to_string),
        full_load_id: row.get::<&str, _>(4).map(str::to_string),
        rows_copied: row.get::<i64, _>(5).unwrap(),
        version: row.get::<i64, _>(6).unwrap(),
        updated_at: row.get::<NaiveDateTime, _>(7).unwrap(),
    })
}

// ---------------------------------------------------------------------------------------------
// The whole product.
// ---------------------------------------------------------------------------------------------

/// The seed's sample table, created before CDC so that its first rows reach consumers through
/// the full load only. Covers NULL, the empty string, a comma (quoting) and non-ASCII text.
const CREATE_CUSTOMERS: &str = "
CREATE TABLE dbo.customers
(
    customer_id int          NOT NULL PRIMARY KEY,
    first_name  varchar(50)  NULL,
    last_name   varchar(50)  NULL,
    email       varchar(100) NULL,
    city        nvarchar(50) NULL
);
INSERT INTO dbo.customers (customer_id, first_name, last_name, email, city) VALUES
    (1, 'Chevy',    'Leward',    'cleward0@mapy.cz',       N'Reading'),
    (2, 'Sayre',    'Ateggart',  'sateggart1@nih.gov',     N'Portsmouth'),
    (3, 'Nathalia', 'Seckom',    'nseckom2@blogger.com',   N'Portsmouth'),
    (4, 'Jeanette', 'Penddreth', '',                       NULL),
    (5, 'Giavani',  'Frediani',  'gfrediani1@senate.gov',  N'Zürich'),
    (6, 'Noell',    'Bea',       'nbea2@imageshack.us',    N'東京'),
    (7, 'Willard',  'Valek',     'wvalek3@vk.com',         N'Vancouver, BC');";

/// One window's worth of changes, each statement its own transaction. The last statement
/// is the marker the test waits for in the change table.
const CHANGES: &str = "
INSERT INTO dbo.customers VALUES (8, 'Emlynne', 'Dinnage', 'edinnage4@x.org', N'Reading');
INSERT INTO dbo.customers VALUES (9, 'Lorry', 'Smith', 'lsmith5@x.org', NULL);
UPDATE dbo.customers SET city = N'Leeds' WHERE customer_id = 9;
UPDATE dbo.customers SET city = N'Zürich' WHERE customer_id = 2;
UPDATE dbo.customers SET email = '' WHERE customer_id = 3;
UPDATE dbo.customers SET last_name = 'O''Neil, \"Jr\"', email = NULL, city = N'Cork' WHERE customer_id = 4;
UPDATE dbo.customers SET customer_id = 70 WHERE customer_id = 7;
DELETE FROM dbo.customers WHERE customer_id = 1;
INSERT INTO dbo.customers VALUES (10, 'Gone', 'Again', 'gone@x.org', N'Nowhere');
DELETE FROM dbo.customers WHERE customer_id = 10;
UPDATE dbo.customers SET city = N'Osaka' WHERE customer_id = 6;
DELETE FROM dbo.customers WHERE customer_id = 6;
UPDATE dbo.customers SET city = N'Final marker' WHERE customer_id = 5;";

/// The net operation per key that `CHANGES` must produce with row filter `all`: 1 delete,
/// 2 insert, 4 update; a key update is a delete plus an insert, insert+delete is nothing.
const EXPECTED_OPS: &[(i64, &str)] = &[
    (1, "1"),
    (2, "4"),
    (3, "4"),
    (4, "4"),
    (5, "4"),
    (6, "1"),
    (7, "1"),
    (8, "2"),
    (9, "2"),
    (70, "2"),
];

const CAPTURED_MARKER: &str = "SELECT COUNT(*) AS n FROM cdc.dbo_customers_CT \
     WHERE customer_id = 5 AND __$operation = 4 AND city = N'Final marker';";

const CDC_COLUMNS: [&str; 3] = ["__$start_lsn", "__$operation", "__$update_mask"];

fn settings(sql_connection_string: &str, storage: &str, container: &str) -> Settings {
    let vars: HashMap<String, String> = [
        ("CDC_SQL_CONNECTION_STRING", sql_connection_string),
        ("CDC_STORAGE_CONNECTION_STRING", storage),
        ("CDC_TABLES", "dbo.customers"),
        ("CDC_CONTAINER", container),
        ("CDC_CAPTURE_WAIT_SECONDS", "60"),
        ("CDC_CAPTURE_POLL_SECONDS", "1"),
        // 7 rows in parts of 3: three part blobs, the last one short.
        ("CDC_FULL_LOAD_PART_ROWS", "3"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    Settings::from_map(&vars).unwrap_or_else(|e| panic!("settings: {e}"))
}

/// The blob name the default template gives a trigger time, spelled out independently of
/// `sink::naming`: `{schema}/{table}/incremental/{yyyy}/{MM}/{dd}/{yyyyMMddHHmmssfff}.csv`.
fn incremental_blob_name(trigger_time: DateTime<Utc>) -> String {
    format!(
        "dbo/customers/incremental/{}.csv",
        trigger_time.format("%Y/%m/%d/%Y%m%d%H%M%S%3f")
    )
}

fn trigger(at: DateTime<Utc>) -> TimerTrigger {
    TimerTrigger {
        trigger_time: at,
        last: None,
        is_past_due: false,
    }
}

/// The one table entry of a job report's summary.
fn table_summary(report: &Report) -> serde_json::Value {
    let tables = report.return_value()["tables"]
        .as_array()
        .cloned()
        .expect("summary.tables");
    assert_eq!(tables.len(), 1, "{report:#?}");
    tables[0].clone()
}

async fn read_blob(blobs: &BlobTarget, name: &str) -> Vec<u8> {
    blobs
        .read(name)
        .await
        .unwrap_or_else(|e| panic!("read {name}: {e}"))
        .unwrap_or_else(|| panic!("blob {name} does not exist"))
        .to_vec()
}

fn assert_all_ok(what: &str, checks: &[(String, Result<(), String>)]) {
    assert!(!checks.is_empty(), "{what}: checked nothing");
    let failed: Vec<_> = checks.iter().filter(|(_, r)| r.is_err()).collect();
    assert!(failed.is_empty(), "{what}: {failed:#?}");
}

#[tokio::test]
async fn live_full_load_and_incremental_copy() {
    let Some(conn) = live_connection_string() else {
        println!("skipped: {ENV} not set");
        return;
    };
    let db = TestDatabase::create(&conn).await;
    let mut sql = db.connect().await;

    // --- Source: the sample table with rows, CDC, the watermark table (sql/setup.sql).
    batch(&mut sql, CREATE_CUSTOMERS).await;
    run_setup_sql(&mut sql).await;
    run_setup_sql(&mut sql).await; // "safe to run again"
    let first_max_lsn = wait_for_first_capture(&mut sql, &db.name).await;

    // --- Storage: a real Azurite, our own container (the product must create it).
    let (_azurite, storage) = live_storage();
    let container = unique_container("live");
    let (runner, blobs) = production_runner(settings(&db.connection_string, &storage, &container));

    // `handler check` before any load: everything reachable, the watermark missing.
    let checks = runner.check().await;
    let missing: Vec<&String> = checks
        .iter()
        .filter(|(_, r)| r.is_err())
        .map(|(what, _)| what)
        .collect();
    assert_eq!(missing, vec!["watermark of dbo.customers"], "{checks:#?}");

    // --- Full load.
    let report = runner
        .full_load(FullLoadRequest {
            tables: vec![],
            reset: false,
        })
        .await;
    assert_eq!(report.status, Status::Done, "{report:#?}");
    let (columns, loaded) = table_contents(&mut sql).await;
    assert_eq!(
        columns,
        ["customer_id", "first_name", "last_name", "email", "city"]
    );
    let parts = blobs.list("dbo/customers/full/").await.expect("list");
    assert_eq!(parts.len(), 3, "7 rows in parts of 3: {parts:?}");
    let load_folder = parts[0].rsplit_once('/').unwrap().0.to_string();
    let mut full = Rows::new();
    for (i, part) in parts.iter().enumerate() {
        assert_eq!(part, &format!("{load_folder}/part-{i:05}.csv"));
        let csv = parse_csv(&read_blob(&blobs, part).await);
        assert_eq!(csv.header, columns, "{part}");
        assert_eq!(csv.rows.len(), if i < 2 { 3 } else { 1 }, "{part}");
        for row in csv.rows {
            assert!(full.insert(key_of(&row), row).is_none(), "key twice");
        }
    }
    assert_eq!(full, loaded, "the full load's CSV equals the table");
    let after_load = watermark_row(&mut sql).await.expect("watermark row");
    assert_eq!(after_load.capture_instance, "dbo_customers");
    assert_eq!(after_load.full_load_id, None, "load finished");
    assert_eq!(after_load.pending_blob, None);
    assert_eq!(after_load.rows_copied, 7);
    assert!(
        after_load.last_lsn >= first_max_lsn,
        "baseline {} is the max LSN read before the scan (>= {first_max_lsn})",
        after_load.last_lsn
    );
    let baseline = after_load.last_lsn;

    // A second load without reset is refused and changes nothing.
    let again = runner
        .full_load(FullLoadRequest {
            tables: vec![],
            reset: false,
        })
        .await;
    assert_eq!(again.status, Status::Conflict, "{again:#?}");
    assert_eq!(watermark_row(&mut sql).await.as_ref(), Some(&after_load));

    // `handler check` now reports everything OK, both directly and as the CLI reaches it
    // (through `dyn Jobs`, which is what `handler check` calls).
    assert_all_ok("Runner::check", &runner.check().await);
    let runner: Arc<dyn Jobs> = Arc::new(runner);
    assert_all_ok("Jobs::check (handler check)", &runner.check().await);

    // --- One window of changes.
    batch(&mut sql, CHANGES).await;
    wait_until_captured(&mut sql, &db.name, CAPTURED_MARKER).await;
    let (_, expected_table) = table_contents(&mut sql).await;
    // The window starts at the full load's time on this machine's clock and ends at the
    // trigger time on the server's: tolerate a server clock a little behind ours.
    let t1 = server_time_after(&mut sql, after_load.last_window_end).await;

    let report = runner.incremental_copy(trigger(t1)).await;
    assert_eq!(report.status, Status::Done, "{report:#?}");
    let name = incremental_blob_name(t1);
    let summary = table_summary(&report);
    assert_eq!(summary["note"], "copied", "{report:#?}");
    assert_eq!(summary["blobs"], serde_json::json!([name]), "{report:#?}");
    assert_eq!(summary["rows"], EXPECTED_OPS.len(), "{report:#?}");
    assert_eq!(
        blobs.list("dbo/customers/incremental/").await.unwrap(),
        vec![name.clone()]
    );

    let first_blob = read_blob(&blobs, &name).await;
    let csv = parse_csv(&first_blob);
    let mut header: Vec<String> = CDC_COLUMNS.iter().map(|c| c.to_string()).collect();
    header.extend(columns.iter().cloned());
    assert_eq!(csv.header, header);
    let info = blobs.properties(&name).await.unwrap().expect("properties");
    let meta = |key: &str| {
        info.metadata
            .get(key)
            .unwrap_or_else(|| panic!("metadata {key}: {:?}", info.metadata))
            .clone()
    };
    let from: Lsn = meta("from_lsn").parse().unwrap();
    let to: Lsn = meta("to_lsn").parse().unwrap();
    assert_eq!(
        Some(from),
        baseline.increment(),
        "the window starts after the baseline"
    );
    assert_eq!(meta("row_count"), EXPECTED_OPS.len().to_string());
    assert_eq!(meta("table"), "dbo.customers");
    assert_eq!(meta("capture_instance"), "dbo_customers");

    // Apply the net changes to the full load; the result must be the table now.
    let mut ops = BTreeMap::new();
    let mut start_lsns = BTreeSet::new();
    let mut state = full.clone();
    for row in &csv.rows {
        let lsn: Lsn = row[0].as_deref().expect("__$start_lsn").parse().unwrap();
        assert!(from <= lsn && lsn <= to, "{lsn} outside [{from}, {to}]");
        start_lsns.insert(lsn);
        let op = row[1].clone().expect("__$operation");
        assert_eq!(row[2], None, "__$update_mask is NULL with row filter 'all'");
        let values = row[3..].to_vec();
        let key = key_of(&values);
        assert!(ops.insert(key, op.clone()).is_none(), "key {key} twice");
        match op.as_str() {
            "1" => assert!(state.remove(&key).is_some(), "delete of absent {key}"),
            "2" => assert!(
                state.insert(key, values).is_none(),
                "insert of present {key}"
            ),
            "4" => assert!(
                state.insert(key, values).is_some(),
                "update of absent {key}"
            ),
            other => panic!("operation {other} with row filter 'all'"),
        }
    }
    let expected_ops: BTreeMap<i64, String> = EXPECTED_OPS
        .iter()
        .map(|(k, op)| (*k, op.to_string()))
        .collect();
    assert_eq!(ops, expected_ops, "net operation per key");
    assert_eq!(state, expected_table, "full load + net changes = the table");
    // NULL and '' survive the trip separately.
    assert_eq!(state[&3][3].as_deref(), Some(""));
    assert_eq!(state[&4][3], None);

    let after_t1 = watermark_row(&mut sql).await.unwrap();
    assert_eq!(after_t1.last_lsn, to);
    assert_eq!(
        after_t1.last_window_end, t1,
        "datetime2(7) keeps the trigger time"
    );
    assert_eq!(after_t1.pending_blob, None);
    assert_eq!(
        after_t1.rows_copied,
        7 + EXPECTED_OPS.len() as i64,
        "full load rows + window rows"
    );
    assert!(after_t1.version > after_load.version);

    // Our LSN arithmetic agrees with the server's on real LSNs.
    let mut server = LiveSql::connect(&db.connection_string)
        .await
        .expect("live helper connection");
    let server_max = max_lsn(&mut sql).await.expect("max LSN");
    for lsn in [first_max_lsn, baseline, from, to, server_max]
        .into_iter()
        .chain(start_lsns)
    {
        assert_eq!(
            server.increment_lsn(lsn).await.unwrap(),
            lsn.increment().unwrap(),
            "sys.fn_cdc_increment_lsn({lsn})"
        );
    }

    // --- A window without changes: no blob, the watermark still moves on.
    tokio::time::sleep(Duration::from_millis(1100)).await; // a distinct blob name
    let t2 = server_utc_now(&mut sql).await;
    let report = runner.incremental_copy(trigger(t2)).await;
    assert_eq!(report.status, Status::Done, "{report:#?}");
    assert_eq!(table_summary(&report)["note"], "no changes", "{report:#?}");
    assert_eq!(
        blobs.list("dbo/customers/incremental/").await.unwrap(),
        vec![name.clone()],
        "an empty window writes no blob"
    );
    let after_t2 = watermark_row(&mut sql).await.unwrap();
    assert_eq!(after_t2.last_window_end, t2);
    assert!(after_t2.last_lsn >= after_t1.last_lsn);
    assert_eq!(after_t2.rows_copied, after_t1.rows_copied);
    assert!(after_t2.version > after_t1.version);
    assert_eq!(after_t2.pending_blob, None);

    // --- Re-running a trigger (a host retry) is a no-op: no blob, no watermark write.
    for at in [t2, t1] {
        let report = runner.incremental_copy(trigger(at)).await;
        assert_eq!(report.status, Status::Done, "{report:#?}");
        assert_eq!(table_summary(&report)["note"], "up to date", "{report:#?}");
        assert_eq!(watermark_row(&mut sql).await.as_ref(), Some(&after_t2));
        assert_eq!(
            blobs.list("dbo/customers/incremental/").await.unwrap(),
            vec![name.clone()]
        );
        assert_eq!(read_blob(&blobs, &name).await, first_blob);
    }
    assert_eq!(
        blobs.list("dbo/customers/full/").await.unwrap(),
        parts,
        "incremental runs leave the full load alone"
    );
}

// ---------------------------------------------------------------------------------------------
// The SQL Server session method by method.
// ---------------------------------------------------------------------------------------------

fn column<'a>(sink: &'a VecSink, row: usize, name: &str) -> &'a Value {
    let i = sink
        .columns
        .iter()
        .position(|c| c == name)
        .unwrap_or_else(|| panic!("no column {name} in {:?}", sink.columns));
    &sink.rows[row][i]
}

/// Polls capture until it has passed `since` (UTC); the max LSN then.
async fn wait_for_capture(session: &mut dyn CdcSession, since: DateTime<Utc>) -> Lsn {
    let deadline = tokio::time::Instant::now() + CAPTURE_TIMEOUT;
    loop {
        let progress = session.capture_progress(Utc::now()).await.unwrap();
        if progress.max_lsn_time.is_some_and(|t| t >= since) {
            return progress.max_lsn;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the capture job did not pass {since} within {CAPTURE_TIMEOUT:?} (is SQL Server Agent running?)"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[tokio::test]
async fn live_session_against_sql_server() {
    let Some(conn) = live_connection_string() else {
        println!("skipped: {ENV} not set");
        return;
    };
    let db = TestDatabase::create(&conn).await;
    let mut sql = db.connect().await;
    // From an empty database: setup.sql creates the sample table too.
    run_setup_sql(&mut sql).await;
    run_setup_sql(&mut sql).await;
    wait_for_first_capture(&mut sql, &db.name).await;

    let watermark = TableRef::parse(WATERMARK_TABLE).unwrap();
    let source = SqlServerSource::from_config(db.config(), watermark);
    let mut session = source.session().await.expect("session");
    // The server's own answers, on a connection of the harness's own.
    let mut server = LiveSql::connect_config(db.config())
        .await
        .expect("live helper connection");
    let customers = TableRef::parse("dbo.customers").unwrap();

    assert!(server.table_exists("[cdc_copy].[watermark]").await.unwrap());
    assert!(
        server.snapshot_isolation_allowed().await.unwrap(),
        "the test database allows snapshot isolation"
    );

    let ci = session.capture_instance(&customers, None).await.unwrap();
    assert_eq!(ci.name, "dbo_customers");
    assert_eq!(ci.key_names(), vec!["customer_id".to_string()]);
    assert!(ci.supports_net_changes);
    assert_eq!(server.min_lsn(&ci.name).await.unwrap(), ci.min_lsn);
    let missing = session
        .capture_instance(&customers, Some("dbo_customers_nope"))
        .await
        .unwrap_err();
    assert!(
        matches!(missing, cdc_copy::cdc::CdcError::NoCaptureInstance { .. }),
        "{missing:?}"
    );

    let baseline = session
        .max_lsn()
        .await
        .unwrap()
        .expect("the capture job has run (wait_for_capture above)");

    // Changes: 1 and 2 inserted (2 also updated), 3 inserted and deleted again.
    batch(
        &mut sql,
        "INSERT INTO dbo.customers (customer_id, first_name, last_name, email, city) VALUES \
         (1, 'Chevy', 'Leward', 'cleward0@mapy.cz', N'Reading'), \
         (2, 'Sayre', 'Ateggart', 'sateggart1@nih.gov', N'Portsmouth'), \
         (3, 'Nathalia', 'Seckom', 'nseckom2@blogger.com', N'Portsmouth'); \
         UPDATE dbo.customers SET city = N'Zürich' WHERE customer_id = 2; \
         DELETE FROM dbo.customers WHERE customer_id = 3;",
    )
    .await;
    let committed = server_utc_now(&mut sql).await;
    let to = wait_for_capture(&mut *session, committed).await;
    let from = baseline.increment().unwrap();
    assert!(from <= to);

    // Server arithmetic agrees with ours.
    for lsn in [baseline, to, from] {
        assert_eq!(
            server.increment_lsn(lsn).await.unwrap(),
            lsn.increment().unwrap()
        );
    }
    let offset = server.server_utc_offset_minutes().await.unwrap();
    let progress = session.capture_progress(Utc::now()).await.unwrap();
    assert_eq!(progress.server_utc_offset_minutes, offset);
    assert!(progress.lsn_at.is_some_and(|l| l <= progress.max_lsn));
    let local_time = server.map_lsn_to_time(to).await.unwrap().expect("mapped");
    assert!(server
        .map_time_to_lsn(local_time)
        .await
        .unwrap()
        .is_some_and(|l| l <= to));

    // Net changes: rows 1 and 2 (insert with final values), nothing for 3.
    let range = LsnRange::new(from, to).expect("changes were made");
    for (filter, op) in [(RowFilter::All, 2), (RowFilter::AllWithMerge, 5)] {
        let mut sink = VecSink::default();
        let sent = session
            .net_changes(&ci, range, filter, &mut sink)
            .await
            .unwrap();
        assert_eq!(sent, 2);
        assert_eq!(sink.columns[0], "__$start_lsn");
        let ids: Vec<&Value> = (0..2).map(|r| column(&sink, r, "customer_id")).collect();
        assert_eq!(ids, vec![&Value::Int(1), &Value::Int(2)]);
        assert_eq!(column(&sink, 0, "__$operation"), &Value::Int(op));
        assert_eq!(column(&sink, 1, "city"), &Value::Text("Zürich".into()));
    }
    // An empty range (Msg 313 on the server) cannot even be built.
    assert!(LsnRange::after(to, to).is_none());

    // Full-load scan in key order, one row per page.
    let mut sink = VecSink::default();
    let (n, key) = session.scan(&ci, None, None, 1, &mut sink).await.unwrap();
    assert_eq!((n, key.clone()), (1, Some(vec![Value::Int(1)])));
    let (n, key) = session
        .scan(&ci, key.as_deref(), None, 1, &mut sink)
        .await
        .unwrap();
    assert_eq!((n, key.clone()), (1, Some(vec![Value::Int(2)])));
    let (n, key) = session
        .scan(&ci, key.as_deref(), None, 1, &mut sink)
        .await
        .unwrap();
    assert_eq!((n, key), (0, None));
    assert_eq!(sink.rows.len(), 2);

    // Watermark: insert once, conditional updates.
    let now = Utc::now();
    let row = Watermark {
        table: customers.clone(),
        capture_instance: ci.name.clone(),
        last_lsn: to,
        last_window_end: now,
        state: TableState::Ready,
        rows_copied: 2,
        bytes_copied: 100,
        version: 1,
        updated_at: now,
    };
    assert_eq!(session.read_watermark(&customers).await.unwrap(), None);
    assert!(session.insert_watermark(&row).await.unwrap());
    assert!(!session.insert_watermark(&row).await.unwrap());
    let read = session.read_watermark(&customers).await.unwrap().unwrap();
    assert_eq!(read.last_lsn, to);
    assert_eq!(read.version, 1);
    assert_eq!(
        read.last_window_end.timestamp_nanos_opt().unwrap() / 100,
        now.timestamp_nanos_opt().unwrap() / 100,
        "datetime2(7) keeps 100 ns"
    );
    let next = Watermark {
        version: 2,
        ..read.clone()
    };
    assert!(session.update_watermark(1, &next).await.unwrap());
    assert!(
        !session.update_watermark(1, &next).await.unwrap(),
        "stale version"
    );
    assert_eq!(
        session
            .read_watermark(&customers)
            .await
            .unwrap()
            .unwrap()
            .version,
        2
    );
}

// ---------------------------------------------------------------------------------------------
// The harness's own pure helpers (these run everywhere, with or without SQL Server).
// ---------------------------------------------------------------------------------------------

#[test]
fn connection_string_gets_the_test_database() {
    let cases = [
        (
            "Server=tcp:localhost,1433;User Id=sa;Password=p;Encrypt=true;TrustServerCertificate=true",
            "Server=tcp:localhost,1433;User Id=sa;Password=p;Encrypt=true;TrustServerCertificate=true;Database=db1",
        ),
        (
            "Server=h;Database=cdc_demo;Password='a;b=c';",
            "Server=h;Password='a;b=c';Database=db1",
        ),
        (
            "server=h; Initial Catalog = x ;password={x;y=z};DATABASE=y",
            "server=h;password={x;y=z};Database=db1",
        ),
        (
            "Server=h;Password=\"it\"\"s;fine\"",
            "Server=h;Password=\"it\"\"s;fine\";Database=db1",
        ),
    ];
    for (input, want) in cases {
        let got = with_database(input, "db1");
        assert_eq!(got, want, "{input}");
        Config::from_ado_string(&got).expect("tiberius parses the result");
    }
}

#[test]
fn csv_reader_tells_null_from_empty() {
    let csv = parse_csv(b"a,b,c\r\n1,,\"\"\r\n\"x,\"\"y\"\"\",z, \r\n");
    assert_eq!(csv.header, ["a", "b", "c"]);
    assert_eq!(
        csv.rows,
        vec![
            vec![Some("1".to_string()), None, Some(String::new())],
            vec![
                Some("x,\"y\"".to_string()),
                Some("z".to_string()),
                Some(" ".to_string())
            ],
        ]
    );
}

/// The drop guard against the TDS fake: the database is dropped (CDC jobs first) also when
/// the test body panics, from `master`, with the name it was created under.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guard_drops_the_database_also_after_a_panic() {
    use futures::FutureExt;
    let fake = tds::FakeServer::start().await;
    for prefix in [
        "CREATE DATABASE",
        "ALTER DATABASE",
        "IF EXISTS (SELECT 1 FROM sys.databases",
    ] {
        fake.on_prefix(prefix, tds::Reply::RowCount(0));
    }
    let created = std::sync::Mutex::new(None);
    let body = async {
        let db = TestDatabase::create(&fake.connection_string()).await;
        *created.lock().unwrap() = Some((db.name.clone(), db.connection_string.clone()));
        panic!("the test body fails");
    };
    let outcome = std::panic::AssertUnwindSafe(body).catch_unwind().await;
    assert!(outcome.is_err(), "the body panicked");

    let (name, conn) = created.into_inner().unwrap().expect("created");
    assert!(name.starts_with("cdc_copy_live_"), "{name}");
    assert!(conn.ends_with(&format!(";Database={name}")), "{conn}");
    assert!(!conn.contains("Database=cdcdb"), "{conn}");
    let sql: Vec<String> = fake.requests().into_iter().map(|r| r.sql).collect();
    assert_eq!(
        sql,
        vec![
            format!("CREATE DATABASE [{name}];"),
            format!("ALTER DATABASE [{name}] SET ALLOW_SNAPSHOT_ISOLATION ON;"),
            format!(
                "IF EXISTS (SELECT 1 FROM sys.databases WHERE name = N'{name}' AND is_cdc_enabled = 1) \
                 EXEC [{name}].sys.sp_cdc_disable_db;"
            ),
            format!(
                "ALTER DATABASE [{name}] SET SINGLE_USER WITH ROLLBACK IMMEDIATE; \
                 DROP DATABASE [{name}];"
            ),
        ]
    );
    let databases: Vec<String> = fake.logins().into_iter().map(|l| l.database).collect();
    assert!(databases.iter().all(|d| d == "master"), "{databases:?}");
}

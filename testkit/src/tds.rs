//! A small TDS server for tests: enough of [MS-TDS] for tiberius to log in, send SQL batches
//! and `sp_executesql` RPCs, and read result sets, row counts and errors.
//!
//! Why: the product's SQL Server path (connection, parameter binding, result decoding, error
//! mapping) must run in CI where no SQL Server can. The fake is scripted by statement — a
//! test registers `statement (exact text or prefix) → reply` — and records every request
//! (statement text, declared parameter list, each parameter's name, TDS type and value) so
//! the test asserts what the product sent, not only what it made of the answer.
//!
//! Include it with `#[path = "support/tds/mod.rs"] mod tds;`.
//! Encodings follow MS-TDS and tiberius 0.13's decoders (`src/tds/codec/**`); LOGINACK carries
//! the TDS version big-endian, which is how tiberius reads it.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Datelike, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime, Timelike};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

// ---------------------------------------------------------------------------------------------
// What tests script and read back.

/// A column type the fake can send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqlType {
    TinyInt,
    SmallInt,
    Int,
    BigInt,
    Bit,
    Float,
    Money,
    /// `nvarchar(n)`, n in characters.
    NVarChar(u16),
    /// `nvarchar(max)`: values go as PLP chunks.
    NVarCharMax,
    /// `varchar(n)` in the Latin1_General (code page 1252) collation.
    VarChar(u16),
    Binary(u16),
    VarBinary(u16),
    DateTime,
    Date,
    Time7,
    DateTime2,
    DateTimeOffset,
    /// `decimal(precision, scale)`.
    Decimal(u8, u8),
    Guid,
}

/// A cell of an answered row.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Null,
    Int(i64),
    Bit(bool),
    Float(f64),
    /// Money as its scaled integer (value × 10⁴).
    Money(i64),
    Text(String),
    Bytes(Vec<u8>),
    DateTime(NaiveDateTime),
    Date(NaiveDate),
    Time(NaiveTime),
    DateTimeOffset(DateTime<FixedOffset>),
    /// Decimal as its unscaled integer; the scale is the column's.
    Decimal(i128),
    Guid(uuid::Uuid),
}

#[derive(Debug, Clone)]
pub struct Column {
    pub name: String,
    pub ty: SqlType,
}

impl Column {
    /// The column as a capture instance declares it (nullable: the fake sends NULLs in any
    /// column), for tests that script rows and need the file's columns.
    pub fn desc(&self) -> cdc_copy::cdc::ColumnDesc {
        use cdc_copy::cdc::{ColumnDesc, ColumnType, Length};
        let ty = match self.ty {
            SqlType::TinyInt => ColumnType::TinyInt,
            SqlType::SmallInt => ColumnType::SmallInt,
            SqlType::Int => ColumnType::Int,
            SqlType::BigInt => ColumnType::BigInt,
            SqlType::Bit => ColumnType::Bit,
            SqlType::Float => ColumnType::Float,
            SqlType::Money => ColumnType::Money,
            SqlType::NVarChar(n) => ColumnType::NVarChar(Length::Of(n)),
            SqlType::NVarCharMax => ColumnType::NVarChar(Length::Max),
            SqlType::VarChar(n) => ColumnType::VarChar(Length::Of(n)),
            SqlType::Binary(n) => ColumnType::Binary(Length::Of(n)),
            SqlType::VarBinary(n) => ColumnType::VarBinary(Length::Of(n)),
            SqlType::DateTime => ColumnType::DateTime,
            SqlType::Date => ColumnType::Date,
            SqlType::Time7 => ColumnType::Time { scale: 7 },
            SqlType::DateTime2 => ColumnType::DateTime2 { scale: 7 },
            SqlType::DateTimeOffset => ColumnType::DateTimeOffset { scale: 7 },
            SqlType::Decimal(precision, scale) => ColumnType::Decimal { precision, scale },
            SqlType::Guid => ColumnType::UniqueIdentifier,
        };
        ColumnDesc::new(&self.name, ty, true)
    }
}

pub fn col(name: &str, ty: SqlType) -> Column {
    Column {
        name: name.to_string(),
        ty,
    }
}

#[derive(Debug, Clone)]
pub struct ResultSet {
    pub columns: Vec<Column>,
    pub rows: Vec<Vec<Cell>>,
}

/// What the fake answers to a statement.
#[derive(Debug, Clone)]
pub enum Reply {
    /// Result sets, in order.
    Results(Vec<ResultSet>),
    /// A DML statement's row count.
    RowCount(u64),
    /// An ERROR token (severity 16) followed by DONE with the error bit.
    Error { number: u32, message: String },
    /// No answer at all: the server is stuck on the statement (blocked, or slow to produce
    /// its first row). The connection stays open; the client's command timeout must end it.
    Stall,
    /// One result set of generated rows, streamed as a server sends a large result.
    Generated(Generated),
}

/// Rows a benchmark needs by the million: a few rows encoded once as ROW or NBCROW tokens
/// (templates), repeated `count` times with the int key patched in place — the fake then does
/// no per-row formatting or allocation, so the client, not the server, is what is measured.
#[derive(Debug, Clone)]
pub struct Generated {
    shape: Arc<Shape>,
    /// The key of the first row; row `i` has key `first_key + i`.
    pub first_key: i32,
    pub count: u64,
}

#[derive(Debug)]
struct Shape {
    columns: Vec<Column>,
    /// Encoded tokens (ROW, or NBCROW when the row has a NULL), used in turn.
    templates: Vec<Vec<u8>>,
    /// Where the key's four bytes sit in each template.
    key_at: Vec<usize>,
}

impl Generated {
    /// Rows shaped like `templates` (cells in `columns` order); column `key` must be an `int`
    /// that is never NULL. Build once, then [`Generated::range`] per request.
    pub fn new(columns: Vec<Column>, key: usize, templates: &[Vec<Cell>]) -> Generated {
        assert_eq!(columns[key].ty, SqlType::Int, "the generated key is an int");
        let mut encoded = Vec::new();
        let mut key_at = Vec::new();
        for row in templates {
            assert!(!matches!(row[key], Cell::Null), "the key is never NULL");
            let mut out = Vec::new();
            let nulls: Vec<bool> = row.iter().map(|c| matches!(c, Cell::Null)).collect();
            if nulls.contains(&true) {
                // NBCROW (MS-TDS 2.2.7.15): a bitmap of NULL columns, then the others.
                out.push(0xD2);
                let mut bitmap = vec![0u8; columns.len().div_ceil(8)];
                for (i, _) in nulls.iter().enumerate().filter(|(_, n)| **n) {
                    bitmap[i / 8] |= 1 << (i % 8);
                }
                out.extend_from_slice(&bitmap);
            } else {
                out.push(0xD1);
            }
            for (i, (cell, column)) in row.iter().zip(&columns).enumerate() {
                if i == key {
                    key_at.push(out.len() + 1); // after the length byte
                }
                if !nulls[i] {
                    encode_cell(&mut out, column.ty, cell);
                }
            }
            encoded.push(out);
        }
        Generated {
            shape: Arc::new(Shape {
                columns,
                templates: encoded,
                key_at,
            }),
            first_key: 1,
            count: 0,
        }
    }

    /// The same rows, keys `first_key ..= first_key + count - 1`.
    pub fn range(&self, first_key: i32, count: u64) -> Generated {
        Generated {
            shape: self.shape.clone(),
            first_key,
            count,
        }
    }

    pub fn columns(&self) -> &[Column] {
        &self.shape.columns
    }

    /// The template of key `first_key`: row `key` is always template `(key - 1) % n`, so a
    /// page holds the same rows whatever range it starts at.
    fn offset(&self) -> u64 {
        (i64::from(self.first_key) - 1).rem_euclid(self.shape.templates.len() as i64) as u64
    }

    /// Bytes of ROW/NBCROW tokens the rows take (the TDS payload, headers excluded).
    pub fn row_bytes(&self) -> u64 {
        let templates = &self.shape.templates;
        let cycle = templates.len() as u64;
        let (offset, full, rest) = (self.offset(), self.count / cycle, self.count % cycle);
        templates
            .iter()
            .enumerate()
            .map(|(t, bytes)| {
                let extra = u64::from((t as u64 + cycle - offset) % cycle < rest);
                (full + extra) * bytes.len() as u64
            })
            .sum()
    }
}

impl Reply {
    pub fn rows(columns: Vec<Column>, rows: Vec<Vec<Cell>>) -> Reply {
        Reply::Results(vec![ResultSet { columns, rows }])
    }

    pub fn error(number: u32, message: &str) -> Reply {
        Reply::Error {
            number,
            message: message.to_string(),
        }
    }
}

/// The customers rows of [`crate::rows`] as [`Generated`] rows: `customer_id` int,
/// `first_name`, `last_name`, `email` varchar, `city` nvarchar (NULL in every 7th row, sent as
/// NBCROW). `wide` adds `amount` decimal(18,2), `updated_at` datetime2(7), `row_guid`
/// uniqueidentifier and `notes` nvarchar(max) of 1–4 KB (PLP). `cdc` puts the net-changes
/// columns first (`__$start_lsn`, `__$operation`, `__$update_mask`). `count` rows, keys 1…
pub fn customers(wide: bool, cdc: bool, count: u64) -> Generated {
    let mut columns = Vec::new();
    if cdc {
        columns.push(col("__$start_lsn", SqlType::Binary(10)));
        columns.push(col("__$operation", SqlType::Int));
        columns.push(col("__$update_mask", SqlType::VarBinary(128)));
    }
    let key = columns.len();
    columns.extend([
        col("customer_id", SqlType::Int),
        col("first_name", SqlType::VarChar(50)),
        col("last_name", SqlType::VarChar(50)),
        col("email", SqlType::VarChar(100)),
        col("city", SqlType::NVarChar(60)),
    ]);
    if wide {
        columns.extend([
            col("amount", SqlType::Decimal(18, 2)),
            col("updated_at", SqlType::DateTime2),
            col("row_guid", SqlType::Guid),
            col("notes", SqlType::NVarCharMax),
        ]);
    }
    // 56 templates: every city, NULL city and name combination turns up.
    let templates: Vec<Vec<Cell>> = (0..56u64)
        .map(|i| {
            let mut row = Vec::new();
            if cdc {
                row.push(Cell::Bytes(vec![0, 0, 0, 0x2A, 0, 0, 0x10, 0, 0, 3]));
                row.push(Cell::Int(2));
                row.push(Cell::Bytes(vec![0x1F]));
            }
            row.extend(crate::rows::customer(i).into_iter().map(|v| match v {
                cdc_copy::cdc::Value::Int(n) => Cell::Int(n),
                cdc_copy::cdc::Value::Text(t) => Cell::Text(t),
                _ => Cell::Null,
            }));
            if wide {
                let at = NaiveDate::from_ymd_opt(2026, 1, 5)
                    .unwrap()
                    .and_hms_nano_opt(9, (i % 60) as u32, 7, 1234567 * 100)
                    .unwrap();
                row.extend([
                    Cell::Decimal(i as i128 * 1_234_567 - 99),
                    Cell::DateTime(at),
                    Cell::Guid(uuid::Uuid::from_u128(
                        0x6f96_19ff_8b86_d011_b42d_00c0_4fc9_6400 + i as u128,
                    )),
                    // 512–2048 characters: 1–4 KB of UTF-16.
                    Cell::Text("Notes ✓ ".repeat(64 + (i as usize % 4) * 64)),
                ]);
            }
            row
        })
        .collect();
    Generated::new(columns, key, &templates).range(1, count)
}

/// How a script entry recognises a statement.
#[derive(Debug, Clone)]
pub enum Match {
    Exact(String),
    Prefix(String),
}

impl Match {
    fn matches(&self, sql: &str) -> bool {
        match self {
            Match::Exact(text) => sql == text,
            Match::Prefix(text) => sql.starts_with(text.as_str()),
        }
    }
}

/// A parameter value as decoded from the RPC request.
#[derive(Debug, Clone, PartialEq)]
pub enum ParamValue {
    Null,
    Int(i64),
    Bit(bool),
    Float(f64),
    Text(String),
    Bytes(Vec<u8>),
    Decimal { unscaled: i128, scale: u8 },
    DateTime(NaiveDateTime),
    Date(NaiveDate),
    Time(NaiveTime),
    DateTimeOffset(DateTime<FixedOffset>),
    Guid(uuid::Uuid),
}

/// One RPC parameter as sent.
#[derive(Debug, Clone, PartialEq)]
pub struct Param {
    /// `@P1`, …
    pub name: String,
    /// The TDS type it was sent as: `intn(8)`, `bitn`, `floatn(8)`, `nvarchar`,
    /// `nvarchar(max)`, `bigvarbinary`, `bigvarbinary(max)`, `numericn`, `datetime2`,
    /// `datetimeoffset`, `datetimen`, `daten`, `timen`, `guid`, `null`.
    pub tds_type: String,
    pub value: ParamValue,
}

/// One request the client sent.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// The statement text (`@stmt` of `sp_executesql`, or the batch text).
    pub sql: String,
    /// `sp_executesql`'s `@params` declaration (e.g. `@P1 varbinary(8000),@P2 …`); empty for
    /// a batch or a statement without parameters.
    pub declared: String,
    pub params: Vec<Param>,
    /// `true` for an RPC (`sp_executesql`), `false` for a SQL batch.
    pub rpc: bool,
    /// The transaction descriptor of the request's ALL_HEADERS (MS-TDS 2.2.5.3.2): zeros in
    /// autocommit mode, else the one the fake handed out in its BEGIN TRANSACTION ENVCHANGE.
    pub transaction: [u8; 8],
}

/// A LOGIN7 the client sent.
#[derive(Debug, Clone, PartialEq)]
pub struct Login {
    pub user: String,
    pub database: String,
    pub app_name: String,
    /// The packet size the client asked for (LOGIN7 `PacketSize`).
    pub packet_size: u32,
}

/// How the fake answers LOGIN7.
#[derive(Debug, Clone)]
pub enum LoginReply {
    Accept,
    Error {
        number: u32,
        message: String,
    },
    /// ENVCHANGE routing to another host and port (what the Azure SQL gateway does).
    Route {
        host: String,
        port: u16,
    },
}

/// A reply computed from the request (its text and parameters), as a server evaluates a query.
pub type ReplyFn = Arc<dyn Fn(&Request) -> Reply + Send + Sync>;

/// A script entry's answer: fixed, or computed per request.
#[derive(Clone)]
enum Answer {
    Fixed(Reply),
    Computed(ReplyFn),
}

#[derive(Default)]
struct State {
    script: Vec<(Match, Answer)>,
    requests: Vec<Request>,
    logins: Vec<Login>,
    login_reply: Option<LoginReply>,
    /// The server's `user options` include NOCOUNT (512): DONE tokens carry no row count
    /// unless the batch itself runs `SET NOCOUNT OFF`.
    nocount: bool,
}

/// A running fake server; stops when dropped.
pub struct FakeServer {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeServer {
    pub async fn start() -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let state = shared.clone();
                tokio::spawn(async move {
                    if let Err(e) = serve(socket, state).await {
                        eprintln!("tds fake: connection ended: {e}");
                    }
                });
            }
        });
        FakeServer { addr, state, task }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// A tiberius config for this server: SQL login, no TLS at all (test only).
    pub fn config(&self) -> tiberius::Config {
        let mut config = tiberius::Config::new();
        config.host("127.0.0.1");
        config.port(self.port());
        config.database("cdcdb");
        config.authentication(tiberius::AuthMethod::sql_server("copier", "s3cret-pw"));
        config.encryption(tiberius::EncryptionLevel::NotSupported);
        config
    }

    /// An ADO.NET connection string for this server (plaintext: allow it, as `CDC_ALLOW_PLAINTEXT_SQL=true` does).
    pub fn connection_string(&self) -> String {
        format!(
            "Server=tcp:127.0.0.1,{};Database=cdcdb;User Id=copier;Password=s3cret-pw;\
             Encrypt=DANGER_PLAINTEXT",
            self.port()
        )
    }

    /// Answers `sql` (exact text) with `reply`. Later registrations win.
    pub fn on(&self, sql: &str, reply: Reply) {
        self.state
            .lock()
            .unwrap()
            .script
            .push((Match::Exact(sql.to_string()), Answer::Fixed(reply)));
    }

    /// Answers any statement starting with `prefix` with `reply`.
    pub fn on_prefix(&self, prefix: &str, reply: Reply) {
        self.state
            .lock()
            .unwrap()
            .script
            .push((Match::Prefix(prefix.to_string()), Answer::Fixed(reply)));
    }

    /// Answers any statement starting with `prefix` with what `f` computes from the request:
    /// a test can evaluate a predicate on the parameters the way SQL Server would.
    pub fn on_fn(&self, prefix: &str, f: impl Fn(&Request) -> Reply + Send + Sync + 'static) {
        self.state.lock().unwrap().script.push((
            Match::Prefix(prefix.to_string()),
            Answer::Computed(Arc::new(f)),
        ));
    }

    /// Answers the keyset scan of `rows` (keys 1 to `rows.count`): `first` (`SCAN_FIRST`:
    /// `@P1` is the page size) and `after` (`SCAN_AFTER`: `@P2` the last key read) get the
    /// next page of generated rows, as `SELECT TOP (@P1) … WHERE key > @P2 ORDER BY key`.
    pub fn on_generated_scan(&self, first: &str, after: &str, rows: Generated) {
        let int = |request: &Request, i: usize| match request.params.get(i).map(|p| &p.value) {
            Some(ParamValue::Int(n)) => *n,
            other => panic!(
                "tds fake: generated scan wants an int @P{}, got {other:?}",
                i + 1
            ),
        };
        let page = move |rows: &Generated, request: &Request, last: i64| {
            let left = (rows.count as i64 - last).max(0) as u64;
            Reply::Generated(rows.range(last as i32 + 1, left.min(int(request, 0) as u64)))
        };
        let all = rows.clone();
        self.on_fn(first, move |request| page(&all, request, 0));
        self.on_fn(after, move |request| page(&rows, request, int(request, 1)));
    }

    /// The range scans of a split load over `rows` (keys 1 to `rows.count`), as SQL Server
    /// evaluates `after < key <= upto`: `first_upto` (`@P2` the range's last key) and
    /// `after_upto` (`@P2` the last key read, `@P3` the range's last key) get the next page
    /// of generated rows up to and including the range's end, at most `@P1` of them.
    pub fn on_generated_range_scan(&self, first_upto: &str, after_upto: &str, rows: Generated) {
        let int = |request: &Request, i: usize| match request.params.get(i).map(|p| &p.value) {
            Some(ParamValue::Int(n)) => *n,
            other => panic!(
                "tds fake: generated range scan wants an int @P{}, got {other:?}",
                i + 1
            ),
        };
        let page = move |rows: &Generated, request: &Request, last: i64, upto: i64| {
            let end = upto.min(rows.count as i64);
            let left = (end - last).max(0) as u64;
            Reply::Generated(rows.range(last as i32 + 1, left.min(int(request, 0) as u64)))
        };
        let all = rows.clone();
        self.on_fn(first_upto, move |request| {
            page(&all, request, 0, int(request, 1))
        });
        self.on_fn(after_upto, move |request| {
            page(&rows, request, int(request, 1), int(request, 2))
        });
    }

    /// `EXEC sp_configure 'user options', 512`: NOCOUNT is on for every session, so DONE
    /// tokens carry no row count (DONE_COUNT bit off) unless the statement's batch sets
    /// `SET NOCOUNT OFF` ("When SET NOCOUNT is ON, the count is not returned").
    pub fn set_nocount_default(&self, on: bool) {
        self.state.lock().unwrap().nocount = on;
    }

    pub fn set_login_reply(&self, reply: LoginReply) {
        self.state.lock().unwrap().login_reply = Some(reply);
    }

    /// Every request so far, oldest first.
    pub fn requests(&self) -> Vec<Request> {
        self.state.lock().unwrap().requests.clone()
    }

    pub fn clear_requests(&self) {
        self.state.lock().unwrap().requests.clear();
    }

    pub fn logins(&self) -> Vec<Login> {
        self.state.lock().unwrap().logins.clone()
    }
}

// ---------------------------------------------------------------------------------------------
// Packets.

const PKT_SQL_BATCH: u8 = 0x01;
const PKT_RPC: u8 = 0x03;
const PKT_REPLY: u8 = 0x04;
const PKT_ATTENTION: u8 = 0x06;
const PKT_LOGIN7: u8 = 0x10;
const PKT_PRELOGIN: u8 = 0x12;
/// The packet size before login, and the largest the fake agrees to (SQL Server's maximum,
/// 32767 bytes; "network packet size" server configuration option).
const PACKET_SIZE: usize = 4096;
const MAX_PACKET_SIZE: u32 = 32767;

/// Reads one message (packets up to the one with END OF MESSAGE), returns its type and payload.
async fn read_message(socket: &mut TcpStream) -> std::io::Result<Option<(u8, Vec<u8>)>> {
    let mut payload = Vec::new();
    loop {
        let mut header = [0u8; 8];
        match socket.read_exact(&mut header).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && payload.is_empty() => {
                return Ok(None)
            }
            Err(e) => return Err(e),
        }
        let length = u16::from_be_bytes([header[2], header[3]]) as usize;
        let mut body = vec![0u8; length.saturating_sub(8)];
        socket.read_exact(&mut body).await?;
        payload.extend_from_slice(&body);
        if header[1] & 0x01 != 0 {
            return Ok(Some((header[0], payload)));
        }
    }
}

/// Writes `payload` as reply packets of at most `packet_size` bytes.
async fn write_message(
    socket: &mut TcpStream,
    payload: &[u8],
    packet_size: usize,
) -> std::io::Result<()> {
    let chunk_size = packet_size - 8;
    let chunks: Vec<&[u8]> = if payload.is_empty() {
        vec![&[][..]]
    } else {
        payload.chunks(chunk_size).collect()
    };
    let mut out = Vec::with_capacity(payload.len() + chunks.len() * 8);
    for (i, chunk) in chunks.iter().enumerate() {
        let last = i + 1 == chunks.len();
        out.push(PKT_REPLY);
        out.push(if last { 0x01 } else { 0x00 });
        out.extend_from_slice(&((chunk.len() + 8) as u16).to_be_bytes());
        out.extend_from_slice(&[0, 0]); // spid
        out.push((i + 1) as u8); // packet id
        out.push(0); // window
        out.extend_from_slice(chunk);
    }
    socket.write_all(&out).await?;
    socket.flush().await
}

/// Reply packets built in place: bytes are appended to the open packet, which is closed (its
/// header filled in) when full; whole packets are written out in batches of about 256 KiB.
struct Packets {
    out: Vec<u8>,
    size: usize,
    /// Where the open packet's header starts.
    open: usize,
    id: u8,
}

impl Packets {
    const BATCH: usize = 256 * 1024;

    fn new(size: usize) -> Packets {
        let mut packets = Packets {
            out: Vec::with_capacity(Self::BATCH + 2 * size),
            size,
            open: 0,
            id: 0,
        };
        packets.start();
        packets
    }

    fn start(&mut self) {
        self.open = self.out.len();
        self.out.extend_from_slice(&[0; 8]);
    }

    fn close(&mut self, last: bool) {
        self.id = self.id.wrapping_add(1);
        let len = (self.out.len() - self.open) as u16;
        let header = &mut self.out[self.open..self.open + 8];
        header[0] = PKT_REPLY;
        header[1] = u8::from(last);
        header[2..4].copy_from_slice(&len.to_be_bytes());
        header[6] = self.id;
    }

    fn put(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let room = self.open + self.size - self.out.len();
            if room == 0 {
                self.close(false);
                self.start();
                continue;
            }
            let n = room.min(bytes.len());
            self.out.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
        }
    }

    /// Writes the closed packets once a batch is ready; the open one moves to the front.
    async fn drain(&mut self, socket: &mut TcpStream) -> std::io::Result<()> {
        if self.open < Self::BATCH {
            return Ok(());
        }
        socket.write_all(&self.out[..self.open]).await?;
        self.out.drain(..self.open);
        self.open = 0;
        Ok(())
    }

    async fn finish(mut self, socket: &mut TcpStream) -> std::io::Result<()> {
        self.close(true);
        socket.write_all(&self.out).await?;
        socket.flush().await
    }
}

/// Streams `head`, the generated rows and `tail` as one reply message.
async fn write_generated(
    socket: &mut TcpStream,
    head: &[u8],
    rows: &Generated,
    tail: &[u8],
    packet_size: usize,
) -> std::io::Result<()> {
    let mut packets = Packets::new(packet_size);
    packets.put(head);
    let mut templates = rows.shape.templates.clone();
    let cycle = templates.len() as u64;
    let offset = rows.offset();
    for i in 0..rows.count {
        let t = ((offset + i) % cycle) as usize;
        let at = rows.shape.key_at[t];
        let key = rows.first_key.wrapping_add(i as i32);
        templates[t][at..at + 4].copy_from_slice(&key.to_le_bytes());
        packets.put(&templates[t]);
        packets.drain(socket).await?;
    }
    packets.put(tail);
    packets.finish(socket).await
}

/// What goes back for one request.
enum Outgoing {
    Bytes(Vec<u8>),
    Generated {
        head: Vec<u8>,
        rows: Generated,
        tail: Vec<u8>,
    },
}

/// One connection's transaction, as SQL Server keeps it per session.
///
/// The rules the fake follows (text-based: a statement containing `BEGIN TRANSACTION` opens
/// one, `COMMIT TRANSACTION` ends it; a failed statement changes nothing, as `XACT_ABORT`
/// rolls back):
/// - the server answers BEGIN with an ENVCHANGE of type 8 carrying a new 8-byte transaction
///   descriptor and COMMIT with type 9 (MS-TDS 2.2.7.9), and refuses a request whose
///   ALL_HEADERS does not carry the open transaction's descriptor with Msg 3989, "New request
///   is not allowed to start because it should come with valid transaction descriptor";
/// - `sp_executesql` is a procedure: when `@@TRANCOUNT` differs at its end from its start, the
///   statement's results are followed by Msg 266, "Transaction count after EXECUTE indicates
///   a mismatching number of BEGIN and COMMIT statements" (severity 16) and the transaction
///   stays open. A SQL batch has no such check: a transaction it begins outlives it.
#[derive(Default)]
struct Session {
    transaction: Option<[u8; 8]>,
    issued: u64,
}

impl Session {
    /// The ENVCHANGE tokens `sql` causes, after it succeeded.
    fn apply(&mut self, sql: &str, out: &mut Vec<u8>) {
        let upper = sql.to_ascii_uppercase();
        if upper.contains("BEGIN TRANSACTION") && self.transaction.is_none() {
            self.issued += 1;
            let descriptor = (0x5EED_0000_0000_0000u64 + self.issued).to_le_bytes();
            self.transaction = Some(descriptor);
            env_change_bytes(out, 8, &descriptor, &[]);
        }
        if upper.contains("COMMIT TRANSACTION") {
            if let Some(descriptor) = self.transaction.take() {
                env_change_bytes(out, 9, &[], &descriptor);
            }
        }
    }

    fn count(&self) -> u32 {
        u32::from(self.transaction.is_some())
    }
}

async fn serve(mut socket: TcpStream, state: Arc<Mutex<State>>) -> std::io::Result<()> {
    socket.set_nodelay(true)?;
    let mut session = Session::default();
    let mut packet_size = PACKET_SIZE;
    while let Some((ty, payload)) = read_message(&mut socket).await? {
        let reply = match ty {
            PKT_PRELOGIN => prelogin_reply(),
            PKT_LOGIN7 => {
                let login = parse_login7(&payload);
                // The server agrees to the client's size up to its maximum (0: its default).
                let agreed = match login.packet_size {
                    0 => PACKET_SIZE as u32,
                    asked => asked.clamp(512, MAX_PACKET_SIZE),
                };
                let reply = {
                    let mut st = state.lock().unwrap();
                    st.logins.push(login);
                    st.login_reply.clone().unwrap_or(LoginReply::Accept)
                };
                let accepted = matches!(reply, LoginReply::Accept);
                let out = login_reply(reply, agreed);
                if accepted {
                    // The ENVCHANGE is in this reply; the packets after it use the new size.
                    write_message(&mut socket, &out, packet_size).await?;
                    packet_size = agreed as usize;
                    continue;
                }
                out
            }
            PKT_SQL_BATCH => {
                let sql = utf16(&payload[all_headers_len(&payload)..]);
                let request = Request {
                    sql,
                    declared: String::new(),
                    params: Vec::new(),
                    rpc: false,
                    transaction: transaction_descriptor(&payload),
                };
                match answer(&state, request, false, &mut session) {
                    Some(Outgoing::Bytes(reply)) => reply,
                    Some(generated) => {
                        send(&mut socket, generated, packet_size).await?;
                        continue;
                    }
                    None => continue,
                }
            }
            PKT_RPC => match parse_rpc(&payload) {
                Ok(request) => match answer(&state, request, true, &mut session) {
                    Some(Outgoing::Bytes(reply)) => reply,
                    Some(generated) => {
                        send(&mut socket, generated, packet_size).await?;
                        continue;
                    }
                    None => continue,
                },
                Err(e) => {
                    let mut out = Vec::new();
                    error_token(&mut out, 50001, &format!("tds fake: bad RPC: {e}"));
                    done(&mut out, 0xFD, DONE_ERROR, 0);
                    out
                }
            },
            PKT_ATTENTION => {
                let mut out = Vec::new();
                done(&mut out, 0xFD, DONE_ATTN, 0);
                out
            }
            other => {
                return Err(std::io::Error::other(format!(
                    "unexpected packet type {other:#x}"
                )))
            }
        };
        write_message(&mut socket, &reply, packet_size).await?;
    }
    Ok(())
}

async fn send(socket: &mut TcpStream, out: Outgoing, packet_size: usize) -> std::io::Result<()> {
    match out {
        Outgoing::Bytes(bytes) => write_message(socket, &bytes, packet_size).await,
        Outgoing::Generated { head, rows, tail } => {
            write_generated(socket, &head, &rows, &tail, packet_size).await
        }
    }
}

/// The encoded answer to `request`, or `None` when the script says to stall.
fn answer(
    state: &Arc<Mutex<State>>,
    request: Request,
    rpc: bool,
    session: &mut Session,
) -> Option<Outgoing> {
    let (reply, nocount) = {
        let mut st = state.lock().unwrap();
        let reply = st
            .script
            .iter()
            .rev()
            .find(|(m, _)| m.matches(&request.sql))
            .map(|(_, r)| r.clone());
        st.requests.push(request.clone());
        (reply, st.nocount)
    };
    let counted = !nocount || request.sql.to_ascii_uppercase().contains("SET NOCOUNT OFF");
    // Computed outside the lock: the function may take its time.
    let reply = reply.map(|answer| match answer {
        Answer::Fixed(reply) => reply,
        Answer::Computed(f) => f(&request),
    });
    let reply = reply.unwrap_or_else(|| {
        Reply::error(
            50000,
            &format!("tds fake: no script for statement: {}", request.sql),
        )
    });
    if let Some(open) = session.transaction {
        if request.transaction != open {
            let refused = Reply::error(
                3989,
                "New request is not allowed to start because it should come with valid \
                 transaction descriptor.",
            );
            return Some(Outgoing::Bytes(encode_reply(&refused, rpc, counted, None)));
        }
    }
    if let Reply::Stall = reply {
        return None;
    }
    let mut out = Vec::new();
    let before = session.count();
    if !matches!(reply, Reply::Error { .. }) {
        session.apply(&request.sql, &mut out);
    }
    let mismatch = (rpc && session.count() != before).then(|| {
        format!(
            "Transaction count after EXECUTE indicates a mismatching number of BEGIN and \
             COMMIT statements. Previous count = {before}, current count = {}.",
            session.count()
        )
    });
    if let Reply::Generated(rows) = reply {
        col_metadata(&mut out, rows.columns());
        let mut tail = Vec::new();
        let count = if counted { DONE_COUNT } else { 0 };
        let inner = if rpc { 0xFF } else { 0xFD };
        done(&mut tail, inner, count | DONE_MORE, rows.count);
        finish(&mut tail, rpc, if rpc { 0xFE } else { 0xFD }, 0);
        return Some(Outgoing::Generated {
            head: out,
            rows,
            tail,
        });
    }
    out.extend(encode_reply(&reply, rpc, counted, mismatch.as_deref()));
    Some(Outgoing::Bytes(out))
}

/// The transaction descriptor in a request's ALL_HEADERS (zeros when there is none).
fn transaction_descriptor(payload: &[u8]) -> [u8; 8] {
    let total = all_headers_len(payload).min(payload.len());
    let mut at = 4;
    while at + 6 <= total {
        let length = u32::from_le_bytes([
            payload[at],
            payload[at + 1],
            payload[at + 2],
            payload[at + 3],
        ]) as usize;
        let ty = u16::from_le_bytes([payload[at + 4], payload[at + 5]]);
        if ty == 2 && at + 14 <= total {
            let mut descriptor = [0u8; 8];
            descriptor.copy_from_slice(&payload[at + 6..at + 14]);
            return descriptor;
        }
        if length == 0 {
            break;
        }
        at += length;
    }
    [0; 8]
}

// ---------------------------------------------------------------------------------------------
// Requests.

fn all_headers_len(payload: &[u8]) -> usize {
    if payload.len() < 4 {
        return 0;
    }
    u32::from_le_bytes([payload[0], payload[1], payload[2], payload[3]]) as usize
}

fn utf16(bytes: &[u8]) -> String {
    let units: Vec<u16> = bytes
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    String::from_utf16_lossy(&units)
}

fn prelogin_reply() -> Vec<u8> {
    // VERSION (6 bytes) and ENCRYPTION (1 byte: ENCRYPT_NOT_SUP), then the terminator.
    let mut out = Vec::new();
    let data_start: u16 = 2 * 5 + 1;
    out.push(0x00);
    out.extend_from_slice(&data_start.to_be_bytes());
    out.extend_from_slice(&6u16.to_be_bytes());
    out.push(0x01);
    out.extend_from_slice(&(data_start + 6).to_be_bytes());
    out.extend_from_slice(&1u16.to_be_bytes());
    out.push(0xFF);
    out.extend_from_slice(&0x1000_0000u32.to_be_bytes()); // 16.0
    out.extend_from_slice(&0u16.to_be_bytes());
    out.push(0x02); // ENCRYPT_NOT_SUP
    out
}

fn parse_login7(payload: &[u8]) -> Login {
    let field = |offset_at: usize| -> String {
        if payload.len() < offset_at + 4 {
            return String::new();
        }
        let offset = u16::from_le_bytes([payload[offset_at], payload[offset_at + 1]]) as usize;
        let chars = u16::from_le_bytes([payload[offset_at + 2], payload[offset_at + 3]]) as usize;
        payload
            .get(offset..offset + 2 * chars)
            .map(utf16)
            .unwrap_or_default()
    };
    let packet_size = payload
        .get(8..12)
        .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    Login {
        user: field(40),
        app_name: field(48),
        database: field(68),
        packet_size,
    }
}

fn login_reply(reply: LoginReply, packet_size: u32) -> Vec<u8> {
    let mut out = Vec::new();
    match reply {
        LoginReply::Accept => {
            // LOGINACK: interface, TDS version (big-endian, as tiberius reads it), program
            // name (B_VARCHAR), program version.
            let mut body = vec![0x01];
            body.extend_from_slice(&0x7400_0004u32.to_be_bytes());
            b_varchar(&mut body, "Microsoft SQL Server");
            body.extend_from_slice(&[16, 0, 0x10, 0x00]);
            out.push(0xAD);
            out.extend_from_slice(&(body.len() as u16).to_le_bytes());
            out.extend_from_slice(&body);
            env_change(&mut out, 1, "cdcdb", "master");
            env_change(
                &mut out,
                4,
                &packet_size.to_string(),
                &PACKET_SIZE.to_string(),
            );
            done(&mut out, 0xFD, 0, 0);
        }
        LoginReply::Error { number, message } => {
            error_token_class(&mut out, number, &message, 14);
            done(&mut out, 0xFD, DONE_ERROR, 0);
        }
        LoginReply::Route { host, port } => {
            let mut body = vec![0x01];
            body.extend_from_slice(&0x7400_0004u32.to_be_bytes());
            b_varchar(&mut body, "Microsoft SQL Server");
            body.extend_from_slice(&[16, 0, 0x10, 0x00]);
            out.push(0xAD);
            out.extend_from_slice(&(body.len() as u16).to_le_bytes());
            out.extend_from_slice(&body);
            let host16: Vec<u16> = host.encode_utf16().collect();
            let mut value = vec![0u8]; // protocol: TCP
            value.extend_from_slice(&port.to_le_bytes());
            value.extend_from_slice(&(host16.len() as u16).to_le_bytes());
            for unit in host16 {
                value.extend_from_slice(&unit.to_le_bytes());
            }
            let mut env = vec![20u8];
            env.extend_from_slice(&(value.len() as u16).to_le_bytes());
            env.extend_from_slice(&value);
            env.extend_from_slice(&0u16.to_le_bytes()); // old value: empty
            out.push(0xE3);
            out.extend_from_slice(&(env.len() as u16).to_le_bytes());
            out.extend_from_slice(&env);
            done(&mut out, 0xFD, 0, 0);
        }
    }
    out
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.pos + n;
        let slice = self
            .data
            .get(self.pos..end)
            .ok_or_else(|| format!("truncated at {} (+{n})", self.pos))?;
        self.pos = end;
        Ok(slice)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, String> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, String> {
        let b = self.take(8)?;
        Ok(u64::from_le_bytes(b.try_into().unwrap()))
    }
    fn done(&self) -> bool {
        self.pos >= self.data.len()
    }
    /// A PLP value: total length, then chunks until a zero-length one. `None` for NULL.
    fn plp(&mut self) -> Result<Option<Vec<u8>>, String> {
        let total = self.u64()?;
        if total == u64::MAX {
            return Ok(None);
        }
        let mut out = Vec::new();
        loop {
            let chunk = self.u32()? as usize;
            if chunk == 0 {
                break;
            }
            out.extend_from_slice(self.take(chunk)?);
        }
        Ok(Some(out))
    }
}

fn parse_rpc(payload: &[u8]) -> Result<Request, String> {
    let mut r = Reader {
        data: payload,
        pos: all_headers_len(payload),
    };
    let name_len = r.u16()?;
    if name_len != 0xFFFF {
        let name = utf16(r.take(2 * name_len as usize)?);
        return Err(format!("only sp_executesql by id is supported, got {name}"));
    }
    let proc_id = r.u16()?;
    if proc_id != 10 {
        return Err(format!(
            "only sp_executesql (10) is supported, got {proc_id}"
        ));
    }
    let _options = r.u16()?;
    let mut params = Vec::new();
    while !r.done() {
        let len = r.u8()? as usize;
        let name = utf16(r.take(2 * len)?);
        let _status = r.u8()?;
        let (tds_type, value) = param_value(&mut r)?;
        params.push(Param {
            name,
            tds_type,
            value,
        });
    }
    if params.len() < 2 {
        return Err("sp_executesql needs @stmt and @params".into());
    }
    let rest = params.split_off(2);
    let sql = match &params[0].value {
        ParamValue::Text(text) => text.clone(),
        other => return Err(format!("@stmt is {other:?}")),
    };
    let declared = match &params[1].value {
        ParamValue::Text(text) => text.clone(),
        _ => String::new(), // tiberius sends int 0 when there are no parameters
    };
    Ok(Request {
        sql,
        declared,
        params: rest,
        rpc: true,
        transaction: transaction_descriptor(payload),
    })
}

fn days_from_0001(days: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(1, 1, 1).unwrap() + chrono::Duration::days(days as i64)
}

fn time_from_increments(bytes: &[u8], scale: u8) -> NaiveTime {
    let mut raw = [0u8; 8];
    raw[..bytes.len()].copy_from_slice(bytes);
    let increments = u64::from_le_bytes(raw);
    let nanos = increments * 10u64.pow(9 - scale as u32);
    NaiveTime::from_hms_opt(0, 0, 0).unwrap() + chrono::Duration::nanoseconds(nanos as i64)
}

fn param_value(r: &mut Reader<'_>) -> Result<(String, ParamValue), String> {
    let ty = r.u8()?;
    Ok(match ty {
        0x1F => ("null".into(), ParamValue::Null),
        0x26 => {
            let size = r.u8()?;
            let len = r.u8()? as usize;
            let value = match len {
                0 => ParamValue::Null,
                1 => ParamValue::Int(r.u8()? as i64),
                2 => ParamValue::Int(r.u16()? as i16 as i64),
                4 => ParamValue::Int(r.u32()? as i32 as i64),
                8 => ParamValue::Int(r.u64()? as i64),
                n => return Err(format!("intn length {n}")),
            };
            (format!("intn({size})"), value)
        }
        0x68 => {
            let _size = r.u8()?;
            let value = match r.u8()? {
                0 => ParamValue::Null,
                _ => ParamValue::Bit(r.u8()? != 0),
            };
            ("bitn".into(), value)
        }
        0x6D => {
            let size = r.u8()?;
            let value = match r.u8()? {
                0 => ParamValue::Null,
                4 => ParamValue::Float(f32::from_bits(r.u32()?) as f64),
                8 => ParamValue::Float(f64::from_bits(r.u64()?)),
                n => return Err(format!("floatn length {n}")),
            };
            (format!("floatn({size})"), value)
        }
        0x24 => {
            let _size = r.u8()?;
            let value = match r.u8()? {
                0 => ParamValue::Null,
                16 => {
                    let mut b: [u8; 16] = r.take(16)?.try_into().unwrap();
                    b[0..4].reverse();
                    b[4..6].reverse();
                    b[6..8].reverse();
                    ParamValue::Guid(uuid::Uuid::from_bytes(b))
                }
                n => return Err(format!("guid length {n}")),
            };
            ("guid".into(), value)
        }
        0xE7 => {
            let max = r.u16()?;
            let _collation = r.take(5)?;
            if max == 0xFFFF {
                let value = r
                    .plp()?
                    .map_or(ParamValue::Null, |b| ParamValue::Text(utf16(&b)));
                ("nvarchar(max)".into(), value)
            } else {
                let len = r.u16()?;
                let value = if len == 0xFFFF {
                    ParamValue::Null
                } else {
                    ParamValue::Text(utf16(r.take(len as usize)?))
                };
                ("nvarchar".into(), value)
            }
        }
        0xA5 => {
            let max = r.u16()?;
            if max == 0xFFFF {
                let value = r.plp()?.map_or(ParamValue::Null, ParamValue::Bytes);
                ("bigvarbinary(max)".into(), value)
            } else {
                let len = r.u16()?;
                let value = if len == 0xFFFF {
                    ParamValue::Null
                } else {
                    ParamValue::Bytes(r.take(len as usize)?.to_vec())
                };
                ("bigvarbinary".into(), value)
            }
        }
        0x6C | 0x6A => {
            let _size = r.u8()?;
            let _precision = r.u8()?;
            let scale = r.u8()?;
            let len = r.u8()? as usize;
            let value = if len == 0 {
                ParamValue::Null
            } else {
                let sign = r.u8()?;
                let mut raw = [0u8; 16];
                raw[..len - 1].copy_from_slice(r.take(len - 1)?);
                let magnitude = i128::from_le_bytes(raw);
                ParamValue::Decimal {
                    unscaled: if sign == 1 { magnitude } else { -magnitude },
                    scale,
                }
            };
            ("numericn".into(), value)
        }
        0x6F => {
            let _size = r.u8()?;
            let value = match r.u8()? {
                0 => ParamValue::Null,
                8 => {
                    let days = r.u32()? as i32;
                    let ticks = r.u32()?;
                    let date = NaiveDate::from_ymd_opt(1900, 1, 1).unwrap()
                        + chrono::Duration::days(days as i64);
                    let time = NaiveTime::from_hms_opt(0, 0, 0).unwrap()
                        + chrono::Duration::nanoseconds(ticks as i64 * 10_000_000 / 3);
                    ParamValue::DateTime(date.and_time(time))
                }
                n => return Err(format!("datetimen length {n}")),
            };
            ("datetimen".into(), value)
        }
        0x28 => {
            let value = match r.u8()? {
                0 => ParamValue::Null,
                3 => ParamValue::Date(days_from_0001(u24(r.take(3)?))),
                n => return Err(format!("daten length {n}")),
            };
            ("daten".into(), value)
        }
        0x29 => {
            let scale = r.u8()?;
            let value = match r.u8()? as usize {
                0 => ParamValue::Null,
                n => ParamValue::Time(time_from_increments(r.take(n)?, scale)),
            };
            ("timen".into(), value)
        }
        0x2A => {
            let scale = r.u8()?;
            let value = match r.u8()? as usize {
                0 => ParamValue::Null,
                n => {
                    let t = time_from_increments(r.take(n - 3)?, scale);
                    let d = days_from_0001(u24(r.take(3)?));
                    ParamValue::DateTime(d.and_time(t))
                }
            };
            ("datetime2".into(), value)
        }
        0x2B => {
            let scale = r.u8()?;
            let value = match r.u8()? as usize {
                0 => ParamValue::Null,
                n => {
                    let t = time_from_increments(r.take(n - 5)?, scale);
                    let d = days_from_0001(u24(r.take(3)?));
                    let offset = r.u16()? as i16;
                    let zone = FixedOffset::east_opt(offset as i32 * 60).unwrap();
                    ParamValue::DateTimeOffset(d.and_time(t).and_utc().with_timezone(&zone))
                }
            };
            ("datetimeoffset".into(), value)
        }
        other => {
            return Err(format!(
                "parameter type {other:#x} not supported by the fake"
            ))
        }
    })
}

fn u24(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], 0])
}

// ---------------------------------------------------------------------------------------------
// Replies.

const DONE_MORE: u16 = 0x0001;
const DONE_ERROR: u16 = 0x0002;
const DONE_COUNT: u16 = 0x0010;
const DONE_ATTN: u16 = 0x0020;
/// SQL_Latin1_General_CP1_CI_AS: LCID 0x0409, flags, sort id 52.
const COLLATION: [u8; 5] = [0x09, 0x04, 0xD0, 0x00, 0x34];

fn b_varchar(out: &mut Vec<u8>, text: &str) {
    let units: Vec<u16> = text.encode_utf16().collect();
    out.push(units.len() as u8);
    for unit in units {
        out.extend_from_slice(&unit.to_le_bytes());
    }
}

fn us_varchar(out: &mut Vec<u8>, text: &str) {
    let units: Vec<u16> = text.encode_utf16().collect();
    out.extend_from_slice(&(units.len() as u16).to_le_bytes());
    for unit in units {
        out.extend_from_slice(&unit.to_le_bytes());
    }
}

fn env_change(out: &mut Vec<u8>, ty: u8, new: &str, old: &str) {
    let mut body = vec![ty];
    b_varchar(&mut body, new);
    b_varchar(&mut body, old);
    out.push(0xE3);
    out.extend_from_slice(&(body.len() as u16).to_le_bytes());
    out.extend_from_slice(&body);
}

/// An ENVCHANGE whose values are B_VARBYTE (the transaction types 8-10).
fn env_change_bytes(out: &mut Vec<u8>, ty: u8, new: &[u8], old: &[u8]) {
    let mut body = vec![ty, new.len() as u8];
    body.extend_from_slice(new);
    body.push(old.len() as u8);
    body.extend_from_slice(old);
    out.push(0xE3);
    out.extend_from_slice(&(body.len() as u16).to_le_bytes());
    out.extend_from_slice(&body);
}

fn done(out: &mut Vec<u8>, token: u8, status: u16, rows: u64) {
    out.push(token);
    out.extend_from_slice(&status.to_le_bytes());
    out.extend_from_slice(&0xC1u16.to_le_bytes()); // current command: SELECT
    out.extend_from_slice(&rows.to_le_bytes());
}

fn error_token(out: &mut Vec<u8>, number: u32, message: &str) {
    error_token_class(out, number, message, 16);
}

fn error_token_class(out: &mut Vec<u8>, number: u32, message: &str, class: u8) {
    let mut body = Vec::new();
    body.extend_from_slice(&number.to_le_bytes());
    body.push(1); // state
    body.push(class);
    us_varchar(&mut body, message);
    b_varchar(&mut body, "fake");
    b_varchar(&mut body, "");
    body.extend_from_slice(&1u32.to_le_bytes()); // line
    out.push(0xAA);
    out.extend_from_slice(&(body.len() as u16).to_le_bytes());
    out.extend_from_slice(&body);
}

/// How a statement ends inside `sp_executesql` (DONEINPROC) or a batch (DONE); `counted`
/// false (NOCOUNT on) leaves the DONE_COUNT bit off, as SQL Server does. `after` is an error
/// raised once the statement's own results are out (Msg 266 at the end of `sp_executesql`).
fn encode_reply(reply: &Reply, rpc: bool, counted: bool, after: Option<&str>) -> Vec<u8> {
    let mut out = Vec::new();
    let (inner, outer) = if rpc { (0xFF, 0xFE) } else { (0xFD, 0xFD) };
    let count = if counted { DONE_COUNT } else { 0 };
    let status = |out: &mut Vec<u8>| match after {
        Some(message) => {
            error_token(out, 266, message);
            DONE_ERROR
        }
        None => 0,
    };
    match reply {
        Reply::Results(sets) => {
            for set in sets {
                col_metadata(&mut out, &set.columns);
                for row in &set.rows {
                    out.push(0xD1);
                    for (cell, column) in row.iter().zip(&set.columns) {
                        encode_cell(&mut out, column.ty, cell);
                    }
                }
                done(&mut out, inner, count | DONE_MORE, set.rows.len() as u64);
            }
            let status = status(&mut out);
            finish(&mut out, rpc, outer, status);
        }
        Reply::RowCount(n) => {
            done(&mut out, inner, count | DONE_MORE, *n);
            let status = status(&mut out);
            finish(&mut out, rpc, outer, status);
        }
        Reply::Error { number, message } => {
            error_token(&mut out, *number, message);
            done(&mut out, inner, DONE_ERROR | DONE_MORE, 0);
            finish(&mut out, rpc, outer, DONE_ERROR);
        }
        Reply::Stall => unreachable!("a stalled statement is not answered"),
        Reply::Generated(_) => unreachable!("generated rows are streamed by write_generated"),
    }
    out
}

fn finish(out: &mut Vec<u8>, rpc: bool, outer: u8, status: u16) {
    if rpc {
        out.push(0x79); // RETURNSTATUS
        out.extend_from_slice(&0u32.to_le_bytes());
        done(out, outer, status, 0);
    } else {
        done(out, outer, status, 0);
    }
}

fn decimal_size(precision: u8) -> u8 {
    match precision {
        1..=9 => 5,
        10..=19 => 9,
        20..=28 => 13,
        _ => 17,
    }
}

fn col_metadata(out: &mut Vec<u8>, columns: &[Column]) {
    out.push(0x81);
    out.extend_from_slice(&(columns.len() as u16).to_le_bytes());
    for column in columns {
        out.extend_from_slice(&0u32.to_le_bytes()); // user type
        out.extend_from_slice(&0x0001u16.to_le_bytes()); // flags: nullable
        match column.ty {
            SqlType::TinyInt => out.extend_from_slice(&[0x26, 1]),
            SqlType::SmallInt => out.extend_from_slice(&[0x26, 2]),
            SqlType::Int => out.extend_from_slice(&[0x26, 4]),
            SqlType::BigInt => out.extend_from_slice(&[0x26, 8]),
            SqlType::Bit => out.extend_from_slice(&[0x68, 1]),
            SqlType::Float => out.extend_from_slice(&[0x6D, 8]),
            SqlType::Money => out.extend_from_slice(&[0x6E, 8]),
            SqlType::NVarChar(n) => {
                out.push(0xE7);
                out.extend_from_slice(&(n * 2).to_le_bytes());
                out.extend_from_slice(&COLLATION);
            }
            SqlType::NVarCharMax => {
                out.push(0xE7);
                out.extend_from_slice(&0xFFFFu16.to_le_bytes());
                out.extend_from_slice(&COLLATION);
            }
            SqlType::VarChar(n) => {
                out.push(0xA7);
                out.extend_from_slice(&n.to_le_bytes());
                out.extend_from_slice(&COLLATION);
            }
            SqlType::Binary(n) => {
                out.push(0xAD);
                out.extend_from_slice(&n.to_le_bytes());
            }
            SqlType::VarBinary(n) => {
                out.push(0xA5);
                out.extend_from_slice(&n.to_le_bytes());
            }
            SqlType::DateTime => out.extend_from_slice(&[0x6F, 8]),
            SqlType::Date => out.push(0x28),
            SqlType::Time7 => out.extend_from_slice(&[0x29, 7]),
            SqlType::DateTime2 => out.extend_from_slice(&[0x2A, 7]),
            SqlType::DateTimeOffset => out.extend_from_slice(&[0x2B, 7]),
            SqlType::Decimal(p, s) => out.extend_from_slice(&[0x6A, decimal_size(p), p, s]),
            SqlType::Guid => out.extend_from_slice(&[0x24, 16]),
        }
        b_varchar(out, &column.name);
    }
}

fn increments(time: NaiveTime) -> u64 {
    (time.num_seconds_from_midnight() as u64) * 10_000_000 + (time.nanosecond() as u64) / 100
}

fn days_since_0001(date: NaiveDate) -> u32 {
    date.num_days_from_ce() as u32 - 1
}

fn put_datetime2(out: &mut Vec<u8>, value: NaiveDateTime) {
    out.extend_from_slice(&increments(value.time()).to_le_bytes()[..5]);
    out.extend_from_slice(&days_since_0001(value.date()).to_le_bytes()[..3]);
}

fn encode_cell(out: &mut Vec<u8>, ty: SqlType, cell: &Cell) {
    let plp = matches!(ty, SqlType::NVarCharMax);
    let short = matches!(
        ty,
        SqlType::NVarChar(_) | SqlType::VarChar(_) | SqlType::Binary(_) | SqlType::VarBinary(_)
    );
    if let Cell::Null = cell {
        if plp {
            out.extend_from_slice(&u64::MAX.to_le_bytes());
        } else if short {
            out.extend_from_slice(&0xFFFFu16.to_le_bytes());
        } else {
            out.push(0);
        }
        return;
    }
    match (ty, cell) {
        (SqlType::TinyInt, Cell::Int(v)) => out.extend_from_slice(&[1, *v as u8]),
        (SqlType::SmallInt, Cell::Int(v)) => {
            out.push(2);
            out.extend_from_slice(&(*v as i16).to_le_bytes());
        }
        (SqlType::Int, Cell::Int(v)) => {
            out.push(4);
            out.extend_from_slice(&(*v as i32).to_le_bytes());
        }
        (SqlType::BigInt, Cell::Int(v)) => {
            out.push(8);
            out.extend_from_slice(&v.to_le_bytes());
        }
        (SqlType::Bit, Cell::Bit(v)) => out.extend_from_slice(&[1, *v as u8]),
        (SqlType::Float, Cell::Float(v)) => {
            out.push(8);
            out.extend_from_slice(&v.to_le_bytes());
        }
        (SqlType::Money, Cell::Money(v)) => {
            out.push(8);
            out.extend_from_slice(&((*v >> 32) as i32).to_le_bytes());
            out.extend_from_slice(&(*v as u32).to_le_bytes());
        }
        (SqlType::NVarChar(_), Cell::Text(s)) => {
            let bytes: Vec<u8> = s.encode_utf16().flat_map(|u| u.to_le_bytes()).collect();
            out.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
            out.extend_from_slice(&bytes);
        }
        (SqlType::NVarCharMax, Cell::Text(s)) => {
            let bytes: Vec<u8> = s.encode_utf16().flat_map(|u| u.to_le_bytes()).collect();
            out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
            // Deliberately small chunks, so chunk reassembly is exercised.
            for chunk in bytes.chunks(1000) {
                out.extend_from_slice(&(chunk.len() as u32).to_le_bytes());
                out.extend_from_slice(chunk);
            }
            out.extend_from_slice(&0u32.to_le_bytes());
        }
        (SqlType::VarChar(_), Cell::Text(s)) => {
            // Code page 1252 agrees with Latin-1 for the characters tests use.
            let bytes: Vec<u8> = s
                .chars()
                .map(|c| u8::try_from(c as u32).expect("varchar test text must be Latin-1"))
                .collect();
            out.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
            out.extend_from_slice(&bytes);
        }
        (SqlType::Binary(_) | SqlType::VarBinary(_), Cell::Bytes(b)) => {
            out.extend_from_slice(&(b.len() as u16).to_le_bytes());
            out.extend_from_slice(b);
        }
        (SqlType::DateTime, Cell::DateTime(v)) => {
            let days = (v.date() - NaiveDate::from_ymd_opt(1900, 1, 1).unwrap()).num_days() as i32;
            let nanos = v.time().num_seconds_from_midnight() as u64 * 1_000_000_000
                + v.time().nanosecond() as u64;
            // datetime holds 1/300 s ticks; SQL Server rounds to the nearest (.000, .003, .007).
            let ticks = ((nanos * 300 + 500_000_000) / 1_000_000_000) as u32;
            out.push(8);
            out.extend_from_slice(&days.to_le_bytes());
            out.extend_from_slice(&ticks.to_le_bytes());
        }
        (SqlType::Date, Cell::Date(d)) => {
            out.push(3);
            out.extend_from_slice(&days_since_0001(*d).to_le_bytes()[..3]);
        }
        (SqlType::Time7, Cell::Time(t)) => {
            out.push(5);
            out.extend_from_slice(&increments(*t).to_le_bytes()[..5]);
        }
        (SqlType::DateTime2, Cell::DateTime(v)) => {
            out.push(8);
            put_datetime2(out, *v);
        }
        (SqlType::DateTimeOffset, Cell::DateTimeOffset(v)) => {
            out.push(10);
            put_datetime2(out, v.naive_utc());
            let minutes = (v.offset().local_minus_utc() / 60) as i16;
            out.extend_from_slice(&minutes.to_le_bytes());
        }
        (SqlType::Decimal(p, _), Cell::Decimal(v)) => {
            let size = decimal_size(p) as usize;
            out.push(size as u8);
            out.push(if *v < 0 { 0 } else { 1 });
            out.extend_from_slice(&v.unsigned_abs().to_le_bytes()[..size - 1]);
        }
        (SqlType::Guid, Cell::Guid(g)) => {
            let mut b = *g.as_bytes();
            b[0..4].reverse();
            b[4..6].reverse();
            b[6..8].reverse();
            out.push(16);
            out.extend_from_slice(&b);
        }
        (ty, cell) => panic!("tds fake: cannot send {cell:?} as {ty:?}"),
    }
}

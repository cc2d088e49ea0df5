//! An in-memory model of SQL Server Change Data Capture, behind the same
//! [`CdcSource`](cdc_copy::cdc::CdcSource) seam as the real thing.
//!
//! No SQL Server can run where this crate is built and tested, yet the jobs' guarantees (no
//! change lost, none duplicated, watermark never ahead of a blob) rest on CDC details: closed
//! LSN intervals, net-change folding, the validity interval, asynchronous capture, and
//! `lsn_time_mapping` in the server's local time. This model implements those documented
//! rules (docs/model.md lists each rule and its source) so job tests, fault-injection tests
//! and benchmarks exercise the orchestration against them, with a clock the test controls.
//!
//! Shape: [`CdcModel`] is a cheap handle (`Arc<Mutex<State>>`); tests drive it directly
//! (tables, transactions, clock, capture, cleanup) and the jobs see it through
//! [`ModelSession`]s. Reads stream in batches of [`BATCH`] rows, taking the lock per batch
//! and never across an `.await`, so a slow sink never blocks writers for long and nothing
//! clones a whole table or window up front.

mod all_changes;
#[cfg(test)]
mod all_changes_tests;
pub mod collation;
#[cfg(test)]
mod ddl_tests;
mod key;
mod session;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod typed_tests;

pub use key::{cmp_keys, cmp_values, Key};
pub use session::ModelSession;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, Duration, NaiveDateTime, TimeZone, Timelike, Utc};
use tracing::debug;

use cdc_copy::cdc::{
    AllRowFilter, CaptureInstance, CdcError, DdlEvent, KeyType, LastError, Lsn, RowFilter,
    TableRef, Value, Watermark,
};

use collation::Rules;

/// Rows per lock acquisition when streaming scans and net changes.
pub const BATCH: usize = 1024;

/// Commit LSNs are this far apart, so the capture process can slot dummy `lsn_time_mapping`
/// rows between the last captured commit and the next one (LSN = VLF:block:slot; commits
/// step the block, dummies the slot).
const LSN_STRIDE: u128 = 1 << 16;
/// The first LSN handed out: VLF 0x2A, so LSNs look like SQL Server's.
const FIRST_LSN: u128 = 0x2A << 48;

/// How often an idle capture job writes a dummy `lsn_time_mapping` row at most.
pub const IDLE_DUMMY_INTERVAL: Duration = Duration::seconds(300);
/// `sys.dm_cdc_log_scan_sessions` keeps at most this many sessions (plus the aggregate row).
pub const MAX_SCAN_SESSIONS: usize = 32;

/// One row of `sys.dm_cdc_log_scan_sessions` (session_id > 0), times in server local time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanSession {
    /// 1, 2, …: a new row takes the next id.
    pub session_id: i32,
    pub start_time: NaiveDateTime,
    pub end_time: NaiveDateTime,
    /// Transactions captured by the session (0 for a row of empty scans).
    pub tran_count: usize,
    /// Consecutive scans that found nothing, folded into this row.
    pub empty_scan_count: u32,
}

/// Which times a row of folded empty scans shows. Microsoft says only that consecutive empty
/// scans do not add rows: "the empty_scan_count in the last existing row is incremented"
/// (docs/model.md); whether `start_time`/`end_time` move with each scan is not documented.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FoldedScanTimes {
    /// The row carries the latest empty scan's times (the model's default).
    #[default]
    Latest,
    /// The row keeps its first empty scan's times: the pessimistic reading, under which
    /// `drained_since` stays as old as the idle period.
    First,
}

/// The capture job of [`CdcModel::like_idle_sql_server`].
struct ScanJob {
    polling: Duration,
    last_scan: DateTime<Utc>,
    sessions: VecDeque<ScanSession>,
}

/// Produces row `i` of a generated table. Keys must strictly increase with `i`.
pub type RowFn = Arc<dyn Fn(u64) -> Vec<Value> + Send + Sync>;

/// Mistakes in how a test drives the model (not CDC errors: those are [`CdcError`]).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ModelError {
    #[error("table {0} does not exist in the model")]
    NoTable(TableRef),
    #[error("table {0} exists already")]
    TableExists(TableRef),
    #[error("{column:?} is not a column of {table}")]
    NoColumn { table: TableRef, column: String },
    #[error("{table} needs at least one key column")]
    NoKey { table: TableRef },
    #[error("a row of {table} has {expected} values, got {got}")]
    Arity {
        table: TableRef,
        expected: usize,
        got: usize,
    },
    #[error("a key of {table} has {expected} values, got {got}")]
    KeyArity {
        table: TableRef,
        expected: usize,
        got: usize,
    },
    #[error("violation of PRIMARY KEY constraint: duplicate key {key:?} in {table}")]
    DuplicateKey { table: TableRef, key: Vec<Value> },
    #[error("no row with key {key:?} in {table}")]
    NoRow { table: TableRef, key: Vec<Value> },
    #[error("capture instance {0} exists already")]
    InstanceExists(String),
    #[error("{0} has two capture instances already (SQL Server allows at most two)")]
    TooManyInstances(TableRef),
    #[error("capture instance {0} does not exist")]
    NoInstance(String),
    #[error("{0} is not a generated table")]
    NotGenerated(TableRef),
    #[error("generated rows appended to {0} must have keys above every key it ever held")]
    GeneratedKeyNotFresh(TableRef),
    #[error("{table}: cannot define a PRIMARY KEY on nullable column {column:?}")]
    NullablePrimaryKey { table: TableRef, column: String },
    #[error("{table}: the captured column list of an instance must include key column {column:?}")]
    KeyNotCaptured { table: TableRef, column: String },
    #[error("no row of {table} equals {row:?}")]
    NoMatchingRow { table: TableRef, row: Vec<Value> },
    #[error("{table} has a column {column:?} already")]
    ColumnExists { table: TableRef, column: String },
    /// `sys.sp_cdc_enable_table`: "If supports_net_changes is set to 1, index_name must be
    /// specified, or the source table must have a defined primary key."
    #[error(
        "{table} has no primary key or unique index: sys.sp_cdc_enable_table refuses \
         @supports_net_changes = 1 for it (enable it with @supports_net_changes = 0)"
    )]
    NetChangesNeedKey { table: TableRef },
    /// A session's [`CdcSession::scan_locked`](cdc_copy::cdc::CdcSession::scan_locked) holds
    /// a shared table lock: a real writer would wait for it.
    #[error(
        "{table} is locked by a session's scan_locked (WITH (TABLOCK, HOLDLOCK)): a real \
         writer waits; apply the write after release_lock or after the session is dropped"
    )]
    Blocked { table: TableRef },
    #[error("{0}")]
    Invalid(String),
}

/// One column of a model table, with what the model needs to know about it.
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnDef {
    pub name: String,
    /// The declared type where it matters (key columns: order and comparison, the type a
    /// capture instance reports; `datetime` columns: values stored in 1/300 s ticks). `None`
    /// for untyped columns, which compare as [`cmp_values`] does.
    pub ty: Option<KeyType>,
    pub nullable: bool,
    /// A computed column: in the table, but NULL in every change row.
    pub computed: bool,
}

impl ColumnDef {
    pub fn new(name: &str, ty: KeyType) -> ColumnDef {
        ColumnDef {
            ty: Some(ty),
            ..ColumnDef::untyped(name)
        }
    }

    pub fn untyped(name: &str) -> ColumnDef {
        ColumnDef {
            name: name.to_string(),
            ty: None,
            nullable: false,
            computed: false,
        }
    }

    pub fn nullable(self) -> ColumnDef {
        ColumnDef {
            nullable: true,
            ..self
        }
    }

    pub fn computed(self) -> ColumnDef {
        ColumnDef {
            computed: true,
            ..self
        }
    }
}

/// The unique index a capture instance is keyed by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyIndex {
    /// `None`: the primary key (`@index_name` NULL).
    pub name: Option<String>,
    pub columns: Vec<String>,
}

impl KeyIndex {
    pub fn primary_key(columns: &[&str]) -> KeyIndex {
        KeyIndex {
            name: None,
            columns: columns.iter().map(|c| c.to_string()).collect(),
        }
    }

    /// No primary key and no unique index: a heap. The model keys its rows by a hidden row
    /// id (like a heap RID: never exposed), so duplicate rows are allowed.
    pub fn none() -> KeyIndex {
        KeyIndex {
            name: None,
            columns: Vec::new(),
        }
    }

    /// A unique index (`sp_cdc_enable_table @index_name`); its columns may be nullable.
    pub fn unique(name: &str, columns: &[&str]) -> KeyIndex {
        KeyIndex {
            name: Some(name.to_string()),
            ..KeyIndex::primary_key(columns)
        }
    }
}

/// One `cdc.lsn_time_mapping` row (captured).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappingRow {
    pub start_lsn: Lsn,
    /// `tran_end_time`: server local time, `datetime` precision.
    pub tran_end_time: NaiveDateTime,
    /// The same instant in UTC (what the model's clock said).
    pub utc: DateTime<Utc>,
    /// Written by the capture process during inactivity, not by a transaction.
    pub dummy: bool,
}

/// A transaction: operations are applied at [`Txn::commit`], all or nothing.
pub struct Txn {
    model: CdcModel,
    ops: Vec<TxnOp>,
}

enum TxnOp {
    Insert(TableRef, Vec<Value>),
    Update(TableRef, Vec<Value>, Vec<Value>),
    Delete(TableRef, Vec<Value>),
    /// Update of one row equal to the first row (`UPDATE TOP (1) … WHERE <every column equal>`).
    UpdateRow(TableRef, Vec<Value>, Vec<Value>),
    DeleteRow(TableRef, Vec<Value>),
}

impl TxnOp {
    fn table(&self) -> &TableRef {
        match self {
            TxnOp::Insert(t, ..)
            | TxnOp::Update(t, ..)
            | TxnOp::Delete(t, ..)
            | TxnOp::UpdateRow(t, ..)
            | TxnOp::DeleteRow(t, ..) => t,
        }
    }
}

impl Txn {
    pub fn insert(&mut self, table: &TableRef, row: Vec<Value>) -> &mut Txn {
        self.ops.push(TxnOp::Insert(table.clone(), row));
        self
    }

    /// Replaces the row with key `key` by `row`; if `row` has another key, CDC sees a delete
    /// of the old key and an insert of the new one.
    pub fn update(&mut self, table: &TableRef, key: &[Value], row: Vec<Value>) -> &mut Txn {
        self.ops
            .push(TxnOp::Update(table.clone(), key.to_vec(), row));
        self
    }

    pub fn delete(&mut self, table: &TableRef, key: &[Value]) -> &mut Txn {
        self.ops.push(TxnOp::Delete(table.clone(), key.to_vec()));
        self
    }

    /// Replaces ONE row equal to `old_row` by `new_row` (`UPDATE TOP (1) … WHERE` every column
    /// equals `old_row`): how a table without a key is updated. Fails if no row is equal.
    pub fn update_row(
        &mut self,
        table: &TableRef,
        old_row: &[Value],
        new_row: Vec<Value>,
    ) -> &mut Txn {
        self.ops
            .push(TxnOp::UpdateRow(table.clone(), old_row.to_vec(), new_row));
        self
    }

    /// Deletes ONE row equal to `row` (`DELETE TOP (1) … WHERE` every column equals `row`).
    pub fn delete_row(&mut self, table: &TableRef, row: &[Value]) -> &mut Txn {
        self.ops.push(TxnOp::DeleteRow(table.clone(), row.to_vec()));
        self
    }

    /// Applies every operation at the model's current time and returns the commit LSN.
    /// On error nothing is applied and no LSN is used.
    pub fn commit(self) -> Result<Lsn, ModelError> {
        let mut state = self.model.lock();
        state.commit(self.ops)
    }
}

/// The in-memory SQL Server. Clones share one state.
#[derive(Clone)]
pub struct CdcModel {
    inner: Arc<Mutex<State>>,
}

impl CdcModel {
    /// A database with CDC enabled, no tables, the clock at `start`, UTC, no capture lag.
    pub fn new(start: DateTime<Utc>) -> CdcModel {
        CdcModel {
            inner: Arc::new(Mutex::new(State::new(start))),
        }
    }

    /// Server zone: local = UTC + `minutes` (e.g. -300 for UTC-05:00, 330 for +05:30).
    pub fn with_utc_offset(self, minutes: i32) -> CdcModel {
        self.set_utc_offset(minutes);
        self
    }

    /// Changes committed at T reach the change tables when the clock reaches T + `lag`.
    pub fn with_capture_lag(self, lag: Duration) -> CdcModel {
        self.lock().capture_lag = lag;
        self
    }

    /// Whether the automatic capture runs write dummy `lsn_time_mapping` rows when they find
    /// nothing to capture (default on). Off, only [`CdcModel::idle_tick`] writes them.
    pub fn with_idle_dummies(self, on: bool) -> CdcModel {
        self.lock().idle_dummies = on;
        self
    }

    /// Runs the capture process like an idle SQL Server's capture job: a log scan every
    /// `polling` (`@pollinginterval`, 5 s by default on SQL Server; Azure SQL Database's
    /// scheduler runs every 20 s) instead of at every change of the clock. Each scan
    /// captures what is due and is recorded as a log scan session (see
    /// [`CdcModel::with_log_scan_sessions`]); a scan that finds nothing writes a dummy
    /// `lsn_time_mapping` row only when the last mapping row is at least
    /// [`IDLE_DUMMY_INTERVAL`] old (`cdc.sp_ins_dummy_lsn_time_mapping`,
    /// `@dummy_entry_interval = 300`). Scans start `polling` after now.
    pub fn like_idle_sql_server(self, polling: Duration) -> CdcModel {
        {
            let mut state = self.lock();
            let last_scan = state.now;
            state.scans = Some(ScanJob {
                polling,
                last_scan,
                sessions: VecDeque::new(),
            });
        }
        self
    }

    /// Whether `sys.dm_cdc_log_scan_sessions` answers (default yes). No: the login lacks
    /// VIEW DATABASE STATE, the instance restarted or failed over since the last scan, or
    /// this is an availability-group secondary — the view is empty and the signal unknown.
    pub fn with_log_scan_sessions(self, visible: bool) -> CdcModel {
        self.lock().scan_sessions_visible = visible;
        self
    }

    /// Which times a row of folded empty scans shows (default [`FoldedScanTimes::Latest`]).
    pub fn with_folded_scan_times(self, times: FoldedScanTimes) -> CdcModel {
        self.lock().folded_scan_times = times;
        self
    }

    /// The log scan sessions recorded so far, oldest first (at most [`MAX_SCAN_SESSIONS`]).
    pub fn log_scan_sessions(&self) -> Vec<ScanSession> {
        let state = self.lock();
        state
            .scans
            .as_ref()
            .map(|job| job.sessions.iter().cloned().collect())
            .unwrap_or_default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking test thread must not turn every later call into a poison error.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    // ----- clock, zone, capture process -------------------------------------------------

    pub fn now(&self) -> DateTime<Utc> {
        self.lock().now
    }

    /// Moves the clock forward (negative durations are refused: the clock is monotonic) and
    /// lets the capture process run, unless paused.
    pub fn advance(&self, by: Duration) {
        self.lock().advance(by);
    }

    /// Moves the clock to `t` if it is later than now.
    pub fn advance_to(&self, t: DateTime<Utc>) {
        let mut state = self.lock();
        let by = t - state.now;
        state.advance(by);
    }

    /// Changes the server's UTC offset from now on (a DST switch): earlier `tran_end_time`s
    /// keep the offset they were written with, as in SQL Server.
    pub fn set_utc_offset(&self, minutes: i32) {
        self.lock().offset_minutes = minutes;
    }

    pub fn utc_offset_minutes(&self) -> i32 {
        self.lock().offset_minutes
    }

    pub fn set_capture_lag(&self, lag: Duration) {
        let mut state = self.lock();
        state.capture_lag = lag;
        state.auto_capture();
    }

    /// Stops the automatic capture (SQL Server Agent stopped, serverless database paused).
    pub fn pause_capture(&self) {
        self.lock().capture_paused = true;
    }

    /// Restarts it, and runs it once (an idle capture job's first scan is due now).
    pub fn resume_capture(&self) {
        let mut state = self.lock();
        state.capture_paused = false;
        let now = state.now;
        if let Some(job) = state.scans.as_mut() {
            job.last_scan = now - job.polling;
        }
        state.auto_capture();
    }

    /// Runs the capture process once now (also when paused): captures every transaction
    /// committed at or before now − lag. Returns the number of transactions captured.
    pub fn capture(&self) -> usize {
        let mut state = self.lock();
        let cutoff = state.now - state.capture_lag;
        state.capture_until(cutoff, false)
    }

    /// Captures every transaction committed at or before `t` (capped at now), ignoring lag.
    pub fn capture_until(&self, t: DateTime<Utc>) -> usize {
        let mut state = self.lock();
        let cutoff = t.min(state.now);
        state.capture_until(cutoff, false)
    }

    /// The capture process runs during inactivity: captures what is due, then writes a dummy
    /// `lsn_time_mapping` row at now − lag. Returns its LSN (`None` when no capture instance
    /// exists, or the LSN space between two commits is exhausted).
    pub fn idle_tick(&self) -> Option<Lsn> {
        let mut state = self.lock();
        let cutoff = state.now - state.capture_lag;
        state.capture_until(cutoff, false);
        state.write_dummy(cutoff)
    }

    /// Each session call advances the clock by `per_call` first (time passing per round
    /// trip), so jobs that poll the capture progress see it move.
    pub fn set_time_per_call(&self, per_call: Option<Duration>) {
        self.lock().time_per_call = per_call;
    }

    // ----- schema -------------------------------------------------------------------------

    pub fn create_table(
        &self,
        table: TableRef,
        columns: Vec<String>,
        key_columns: Vec<String>,
    ) -> Result<(), ModelError> {
        if key_columns.is_empty() {
            return Err(ModelError::NoKey { table });
        }
        let new = Table::new(&table, untyped(columns), &primary_key(key_columns), None)?;
        self.lock().add_table(table, new)
    }

    /// A table without a primary key or unique index (a heap): rows are kept in insertion
    /// order under a hidden row id, duplicates allowed. Only `@supports_net_changes = 0` can
    /// capture it. The same as `create_typed_table(table, columns, KeyIndex::none())`.
    pub fn create_heap(&self, table: TableRef, columns: Vec<ColumnDef>) -> Result<(), ModelError> {
        self.create_typed_table(table, columns, KeyIndex::none())
    }

    /// A table with declared column types, keyed by `index` (the primary key, or a unique
    /// index whose columns may be nullable, as `sp_cdc_enable_table @index_name` allows, or
    /// [`KeyIndex::none`] for a heap).
    pub fn create_typed_table(
        &self,
        table: TableRef,
        columns: Vec<ColumnDef>,
        index: KeyIndex,
    ) -> Result<(), ModelError> {
        let new = Table::new(&table, columns, &index, None)?;
        self.lock().add_table(table, new)
    }

    /// A table whose first `rows` rows are `f(0)..f(rows - 1)`, computed on demand: a
    /// multi-million-row full load without the rows resident. Keys must strictly increase
    /// with the index. DML works on it (changes are kept in an overlay).
    pub fn create_generated_table(
        &self,
        table: TableRef,
        columns: Vec<String>,
        key_columns: Vec<String>,
        rows: u64,
        f: impl Fn(u64) -> Vec<Value> + Send + Sync + 'static,
    ) -> Result<(), ModelError> {
        if key_columns.is_empty() {
            return Err(ModelError::NoKey { table });
        }
        let f: RowFn = Arc::new(f);
        let new = Table::new(
            &table,
            untyped(columns),
            &primary_key(key_columns),
            Some(Generated { n: rows, f }),
        )?;
        self.lock().add_table(table, new)
    }

    /// `sys.sp_cdc_enable_table`. The instance's start LSN is a new LSN, mapped (and so
    /// within `get_max_lsn`) once the capture process has run.
    pub fn enable_cdc(
        &self,
        table: &TableRef,
        capture_instance: &str,
        supports_net_changes: bool,
    ) -> Result<Lsn, ModelError> {
        self.lock()
            .enable_cdc(table, capture_instance, supports_net_changes, None)
    }

    /// `sys.sp_cdc_enable_table` with `@captured_column_list`: only `columns` are in the
    /// change rows (they must include the key columns).
    pub fn enable_cdc_columns(
        &self,
        table: &TableRef,
        capture_instance: &str,
        supports_net_changes: bool,
        columns: &[&str],
    ) -> Result<Lsn, ModelError> {
        self.lock()
            .enable_cdc(table, capture_instance, supports_net_changes, Some(columns))
    }

    /// `sys.sp_cdc_disable_table` for one instance: its change rows are gone.
    pub fn disable_cdc(&self, capture_instance: &str) -> Result<(), ModelError> {
        let mut state = self.lock();
        let pos = state
            .instances
            .iter()
            .position(|i| i.name == capture_instance)
            .ok_or_else(|| ModelError::NoInstance(capture_instance.to_string()))?;
        let removed = state.instances.remove(pos);
        let table = removed.table.clone();
        // Its change table goes with it: nothing reads it any more (its functions are gone,
        // `NoCaptureInstance`). The shared log keeps the rows while another instance of the
        // table exists (it reads only from its own start; `changes_since` stays a full
        // history for oracles) and is emptied with the last one.
        if !state.instances.iter().any(|i| i.table == table) {
            if let Some(t) = state.tables.get_mut(&table) {
                t.log_front_seq += t.log.len() as u64;
                t.log.clear();
            }
        }
        Ok(())
    }

    /// `ALTER TABLE … ADD <column> NULL`: existing rows read NULL there, rows written from now
    /// on have the new arity. A logged transaction with its own LSN, recorded in
    /// `cdc.ddl_history` for every capture instance of the table; those instances keep their
    /// captured columns (the new column is not in their change rows), an instance enabled
    /// afterwards captures it. Returns the DDL's LSN.
    pub fn add_column(&self, table: &TableRef, column: ColumnDef) -> Result<Lsn, ModelError> {
        let mut state = self.lock();
        state.check_unlocked(table)?;
        let t = state.table_mut(table)?;
        if t.columns.contains(&column.name) {
            return Err(ModelError::ColumnExists {
                table: table.clone(),
                column: column.name,
            });
        }
        if !column.nullable {
            return Err(ModelError::Invalid(format!(
                "{table}: the model adds nullable columns only (ALTER TABLE ADD {:?} NULL); a \
                 NOT NULL column needs a default, which is not modelled",
                column.name
            )));
        }
        let command = format!(
            "ALTER TABLE {} ADD {} {} NULL",
            table.quoted(),
            cdc_copy::cdc::quote_identifier(&column.name),
            column
                .ty
                .as_ref()
                .map_or("sql_variant".to_string(), ToString::to_string)
        );
        t.columns.push(column.name.clone());
        t.defs.push(column);
        for slot in t.rows.values_mut() {
            if let Slot::Row(row) = slot {
                row.push(Value::Null);
            }
        }
        Ok(state.log_ddl(table, command))
    }

    /// Any other DDL on `table` (`command` is what `cdc.ddl_history.ddl_command` shows): no
    /// schema change in the model, but a logged transaction recorded for every capture
    /// instance of the table, like [`CdcModel::add_column`]. Returns its LSN.
    pub fn ddl(&self, table: &TableRef, command: &str) -> Result<Lsn, ModelError> {
        let mut state = self.lock();
        state.check_unlocked(table)?;
        state.table_mut(table)?;
        Ok(state.log_ddl(table, command.to_string()))
    }

    // ----- DML ------------------------------------------------------------------------------

    pub fn begin(&self) -> Txn {
        Txn {
            model: self.clone(),
            ops: Vec::new(),
        }
    }

    /// One-statement autocommit insert.
    pub fn insert(&self, table: &TableRef, row: Vec<Value>) -> Result<Lsn, ModelError> {
        let mut txn = self.begin();
        txn.insert(table, row);
        txn.commit()
    }

    pub fn update(
        &self,
        table: &TableRef,
        key: &[Value],
        row: Vec<Value>,
    ) -> Result<Lsn, ModelError> {
        let mut txn = self.begin();
        txn.update(table, key, row);
        txn.commit()
    }

    pub fn delete(&self, table: &TableRef, key: &[Value]) -> Result<Lsn, ModelError> {
        let mut txn = self.begin();
        txn.delete(table, key);
        txn.commit()
    }

    /// One-statement update of ONE row equal to `old_row` (see [`Txn::update_row`]).
    pub fn update_row(
        &self,
        table: &TableRef,
        old_row: &[Value],
        new_row: Vec<Value>,
    ) -> Result<Lsn, ModelError> {
        let mut txn = self.begin();
        txn.update_row(table, old_row, new_row);
        txn.commit()
    }

    /// One-statement delete of ONE row equal to `row` (see [`Txn::delete_row`]).
    pub fn delete_row(&self, table: &TableRef, row: &[Value]) -> Result<Lsn, ModelError> {
        let mut txn = self.begin();
        txn.delete_row(table, row);
        txn.commit()
    }

    /// Appends `count` generated rows (`f(n)..f(n + count - 1)`) to a generated table, in
    /// transactions of `rows_per_txn` inserts, all committed now. The change rows are kept as
    /// ranges, not rows: a multi-million-row window costs a few bytes per transaction.
    /// Returns the last commit LSN.
    pub fn generated_inserts(
        &self,
        table: &TableRef,
        count: u64,
        rows_per_txn: u64,
    ) -> Result<Option<Lsn>, ModelError> {
        self.lock()
            .generated_inserts(table, count, rows_per_txn.max(1))
    }

    // ----- CDC metadata ---------------------------------------------------------------------

    /// `sys.fn_cdc_get_max_lsn()`: the largest captured `lsn_time_mapping` LSN (zero if none).
    pub fn max_lsn(&self) -> Lsn {
        self.lock().max_lsn()
    }

    /// `sys.fn_cdc_get_min_lsn(ci)`: zero for an unknown instance, or one the capture
    /// process has not recognised yet, as SQL Server returns.
    pub fn min_lsn(&self, capture_instance: &str) -> Lsn {
        self.lock()
            .instance(capture_instance)
            .map(Instance::reported_min_lsn)
            .unwrap_or(Lsn::ZERO)
    }

    /// `cdc.change_tables.start_lsn` of `ci`: `None` until the capture process has run
    /// after `sys.sp_cdc_enable_table` (or for an unknown instance).
    pub fn start_lsn(&self, capture_instance: &str) -> Option<Lsn> {
        self.lock()
            .instance(capture_instance)
            .and_then(|i| i.start_lsn)
    }

    /// `sys.fn_cdc_get_max_lsn()` as SQL Server returns it: NULL (`None`) until the capture
    /// process has written its first `cdc.lsn_time_mapping` row.
    pub fn max_lsn_or_null(&self) -> Option<Lsn> {
        self.lock().mapping.last().map(|m| m.start_lsn)
    }

    /// `sys.fn_cdc_map_time_to_lsn('largest less than or equal', local)`.
    pub fn map_time_to_lsn(&self, local: NaiveDateTime) -> Option<Lsn> {
        self.lock().map_time_to_lsn(to_sql_datetime(local))
    }

    /// `sys.fn_cdc_map_lsn_to_time(lsn)`, server local time.
    pub fn map_lsn_to_time(&self, lsn: Lsn) -> Option<NaiveDateTime> {
        self.lock().map_lsn_to_time(lsn)
    }

    /// The captured `cdc.lsn_time_mapping`, in LSN order.
    pub fn lsn_time_mapping(&self) -> Vec<MappingRow> {
        self.lock().mapping.clone()
    }

    /// The cleanup job with an explicit low-water mark: every instance's validity interval
    /// starts at the first mapped LSN at or above `before` (capped at the max LSN), and change
    /// rows below it are deleted. Returns the new low-water mark.
    pub fn cleanup(&self, before: Lsn) -> Lsn {
        self.lock().cleanup(before)
    }

    /// The cleanup job by retention: the low-water mark is
    /// `map_time_to_lsn('largest less than or equal', threshold)` in server local time (current
    /// offset). Returns it, or `None` when no mapping is that old (nothing to clean).
    pub fn cleanup_before_time(&self, threshold: DateTime<Utc>) -> Option<Lsn> {
        let mut state = self.lock();
        let local = to_sql_datetime(state.to_local(threshold));
        let lwm = state.map_time_to_lsn(local)?;
        Some(state.cleanup(lwm))
    }

    // ----- watermark table --------------------------------------------------------------

    pub fn watermark(&self, table: &TableRef) -> Option<Watermark> {
        self.lock()
            .watermarks
            .as_ref()
            .and_then(|w| w.get(table).cloned())
    }

    /// Writes a watermark row unconditionally (test set-up; creates the table if dropped).
    pub fn set_watermark(&self, row: Watermark) {
        self.lock()
            .watermarks
            .get_or_insert_with(BTreeMap::new)
            .insert(row.table.clone(), row);
    }

    /// The table's `last_error` (what a failed run recorded and no later write cleared).
    pub fn last_error(&self, table: &TableRef) -> Option<LastError> {
        self.lock().last_errors.get(table).cloned()
    }

    /// Makes every watermark call fail with [`CdcError::NoWatermarkTable`].
    pub fn drop_watermark_table(&self) {
        self.lock().watermarks = None;
    }

    // ----- oracles ------------------------------------------------------------------------

    /// Every change row of `table` logged with an LSN above `after` (while it had a capture
    /// instance; cleanup removes rows below every instance's minimum), in (LSN, sequence) order: op 1 delete (the row as deleted), 2 insert, 4
    /// update (new row). Key updates appear as 1 then 2.
    pub fn changes_since(&self, table: &TableRef, after: Lsn) -> Vec<(Lsn, u8, Vec<Value>)> {
        let state = self.lock();
        let Some(t) = state.tables.get(table) else {
            return Vec::new();
        };
        let start = t.log.partition_point(|e| e.lsn() <= after);
        let mut out = Vec::new();
        for entry in t.log.range(start..) {
            match entry {
                Entry::Change { lsn, op, row, .. } => out.push((*lsn, *op, row.clone())),
                Entry::Generated { lsn, start, count } => {
                    out.extend((*start..start + count).map(|i| (*lsn, 2, t.gen_row(i))));
                }
            }
        }
        out
    }

    /// The table's current rows in key order (a table without a key: insertion order).
    pub fn table_rows(&self, table: &TableRef) -> Vec<Vec<Value>> {
        let state = self.lock();
        state
            .tables
            .get(table)
            .map(|t| t.scan_batch(None, usize::MAX))
            .unwrap_or_default()
    }

    pub fn row_count(&self, table: &TableRef) -> u64 {
        self.lock().tables.get(table).map_or(0, |t| t.row_count)
    }

    /// The net changes a session would stream, collected (for oracles; same code path).
    pub fn net_rows(
        &self,
        capture_instance: &str,
        from: Lsn,
        to: Lsn,
        filter: RowFilter,
    ) -> Result<Vec<Vec<Value>>, CdcError> {
        let plan = self
            .lock()
            .net_plan_by_name(capture_instance, from, to, filter)?;
        let mut cursor = NetCursor::default();
        collect_batches(|| self.lock().net_batch(&plan, &mut cursor, BATCH))
    }

    /// The rows `cdc.fn_cdc_get_all_changes_<ci>` would stream, collected (for oracles; same
    /// code path as [`ModelSession`]'s `all_changes`).
    pub fn all_rows(
        &self,
        capture_instance: &str,
        from: Lsn,
        to: Lsn,
        filter: AllRowFilter,
    ) -> Result<Vec<Vec<Value>>, CdcError> {
        let plan = self
            .lock()
            .all_plan_by_name(capture_instance, from, to, filter)?;
        let mut cursor = plan.cursor();
        collect_batches(|| self.lock().all_batch(&plan, &mut cursor, BATCH))
    }
}

/// Every row of batches from `next` until an empty one.
fn collect_batches(
    mut next: impl FnMut() -> Result<Vec<Vec<Value>>, CdcError>,
) -> Result<Vec<Vec<Value>>, CdcError> {
    let mut out = Vec::new();
    loop {
        let batch = next()?;
        if batch.is_empty() {
            return Ok(out);
        }
        out.extend(batch);
    }
}

// ----- state ---------------------------------------------------------------------------------

struct Generated {
    /// Rows `0..n` exist in the generated sequence (overlay may override or delete them).
    n: u64,
    f: RowFn,
}

/// An overlay slot: a row, or (generated tables only) the deletion of a generated row.
#[derive(Clone)]
enum Slot {
    Row(Vec<Value>),
    Tombstone,
}

/// One change-table entry. Rows of one transaction share its LSN; their order in the log is
/// `__$seqval`.
enum Entry {
    Change {
        lsn: Lsn,
        /// The change's position in its transaction (`__$seqval`, see [`all_changes`]).
        seq: u64,
        op: u8,
        key: Key,
        row: Vec<Value>,
        /// An update's row before it (the `all update old` before-image, op 3).
        before: Option<Vec<Value>>,
    },
    /// Inserts of generated rows `start..start + count`, one transaction.
    Generated { lsn: Lsn, start: u64, count: u64 },
}

impl Entry {
    fn lsn(&self) -> Lsn {
        match self {
            Entry::Change { lsn, .. } | Entry::Generated { lsn, .. } => *lsn,
        }
    }
}

fn untyped(columns: Vec<String>) -> Vec<ColumnDef> {
    columns.iter().map(|c| ColumnDef::untyped(c)).collect()
}

fn primary_key(columns: Vec<String>) -> KeyIndex {
    KeyIndex {
        name: None,
        columns,
    }
}

struct Table {
    name: TableRef,
    columns: Vec<String>,
    defs: Vec<ColumnDef>,
    /// Empty for a heap, whose rows are keyed by a hidden row id instead.
    key_idx: Vec<usize>,
    /// The next hidden row id of a heap (never reused, never exposed).
    next_rid: i64,
    index: KeyIndex,
    rows: BTreeMap<Key, Slot>,
    generated: Option<Generated>,
    row_count: u64,
    /// The largest key the table ever held (generated appends must be above it).
    max_key: Option<Key>,
    /// Change rows of every capture instance of the table, in LSN order.
    log: VecDeque<Entry>,
    /// Absolute position of `log[0]`, so cursors survive cleanup popping the front.
    log_front_seq: u64,
}

impl Table {
    fn new(
        name: &TableRef,
        defs: Vec<ColumnDef>,
        index: &KeyIndex,
        generated: Option<Generated>,
    ) -> Result<Table, ModelError> {
        let key_columns = &index.columns;
        let columns: Vec<String> = defs.iter().map(|d| d.name.clone()).collect();
        if key_columns.is_empty() && (generated.is_some() || index.name.is_some()) {
            return Err(ModelError::NoKey {
                table: name.clone(),
            });
        }
        let key_idx = key_columns
            .iter()
            .map(|k| {
                columns
                    .iter()
                    .position(|c| c == k)
                    .ok_or_else(|| ModelError::NoColumn {
                        table: name.clone(),
                        column: k.clone(),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if index.name.is_none() {
            if let Some(&i) = key_idx.iter().find(|&&i| defs[i].nullable) {
                return Err(ModelError::NullablePrimaryKey {
                    table: name.clone(),
                    column: columns[i].clone(),
                });
            }
        }
        let mut table = Table {
            name: name.clone(),
            columns,
            defs,
            key_idx,
            next_rid: 1,
            index: index.clone(),
            rows: BTreeMap::new(),
            generated: None,
            row_count: 0,
            max_key: None,
            log: VecDeque::new(),
            log_front_seq: 0,
        };
        if let Some(g) = generated {
            table.row_count = g.n;
            if g.n > 0 {
                let last = (g.f)(g.n - 1);
                table.check_arity(&last)?;
                table.max_key = Some(table.key_of(&last));
            }
            table.generated = Some(g);
        }
        Ok(table)
    }

    fn is_heap(&self) -> bool {
        self.key_idx.is_empty()
    }

    /// Row `i` of the generated sequence, NULL in columns added after it was defined.
    fn gen_row(&self, i: u64) -> Vec<Value> {
        let mut row = (self.generated.as_ref().expect("a generated table").f)(i);
        row.resize(self.columns.len(), Value::Null);
        row
    }

    /// The key a new row is stored under: its key columns, or for a heap a fresh row id.
    fn new_key(&mut self, row: &[Value]) -> Key {
        if self.is_heap() {
            let rid = self.next_rid;
            self.next_rid += 1;
            Key(vec![Value::Int(rid)])
        } else {
            self.key_of(row)
        }
    }

    /// The key of one current row equal to `row` (a heap: the first in row id order).
    fn find_row(&self, row: &[Value]) -> Result<Key, ModelError> {
        let found = if self.is_heap() {
            self.rows.iter().find_map(|(k, slot)| match slot {
                Slot::Row(r) if r.as_slice() == row => Some(k.clone()),
                _ => None,
            })
        } else {
            let key = self.key_of(row);
            self.get(&key)
                .is_some_and(|r| r.as_slice() == row)
                .then_some(key)
        };
        found.ok_or_else(|| ModelError::NoMatchingRow {
            table: self.name.clone(),
            row: row.to_vec(),
        })
    }

    /// The key of `row` in the form the table orders by (character keys as their collation's
    /// sort key, see [`collation`]).
    fn key_of(&self, row: &[Value]) -> Key {
        Key(self
            .key_idx
            .iter()
            .map(|&i| self.sort_value(i, &row[i]))
            .collect())
    }

    fn sort_value(&self, column: usize, value: &Value) -> Value {
        match (&self.defs[column].ty, value) {
            (Some(ty), Value::Text(s)) => Value::Text(Rules::of(ty).sort_key(s)),
            _ => value.clone(),
        }
    }

    /// A key tuple given in key order (as the product sends it) in the table's order.
    fn sort_key(&self, key: &[Value]) -> Key {
        Key(self
            .key_idx
            .iter()
            .zip(key)
            .map(|(&i, v)| self.sort_value(i, v))
            .collect())
    }

    /// What storing `row` keeps: `datetime` columns hold 1/300 s ticks.
    fn stored(&self, mut row: Vec<Value>) -> Vec<Value> {
        for (value, def) in row.iter_mut().zip(&self.defs) {
            if let (Some(KeyType::DateTime), Value::DateTime(t)) = (&def.ty, &*value) {
                *value = Value::DateTime(to_sql_datetime(*t));
            }
        }
        row
    }

    /// The key columns as a capture instance reports them: declared types, or for untyped
    /// columns a type guessed from the first row (`bigint` for an empty table).
    fn key_columns(&self) -> Vec<cdc_copy::cdc::KeyColumn> {
        let first = self.scan_batch(None, 1).pop();
        self.key_idx
            .iter()
            .map(|&i| {
                let def = &self.defs[i];
                let ty = def.ty.clone().unwrap_or_else(|| {
                    first
                        .as_ref()
                        .map_or(KeyType::BigInt, |row| guess_type(&row[i]))
                });
                cdc_copy::cdc::KeyColumn::new(&def.name, ty)
            })
            .collect()
    }

    /// Captured columns `captured` (indices, computed ones left out) as a capture instance
    /// reports them from its change table: declared types, or for untyped columns a type
    /// guessed from the first row's value (`nvarchar(max)` when it is NULL or the table empty).
    /// The change table declares each captured column as the source did when the instance was
    /// created (nullability included), except `timestamp`, which it stores as `binary(8)`.
    pub(crate) fn captured_columns(&self, captured: &[usize]) -> Vec<cdc_copy::cdc::ColumnDesc> {
        use cdc_copy::cdc::{ColumnDesc, ColumnType, Length};
        let first = self.scan_batch(None, 1).pop();
        captured
            .iter()
            .filter(|&&c| !self.defs[c].computed)
            .map(|&c| {
                let def = &self.defs[c];
                // An untyped column says nothing about NULLs, so it allows them.
                let nullable = def.nullable || def.ty.is_none();
                let declared = def
                    .ty
                    .clone()
                    .or_else(|| match first.as_ref().map(|r| &r[c]) {
                        Some(Value::Null) | None => None,
                        Some(value) => Some(guess_type(value)),
                    });
                match declared {
                    Some(ty) => {
                        // "Timestamp: the data type in the change table is converted to
                        // binary." <https://learn.microsoft.com/sql/relational-databases/track-changes/change-data-capture-data-type-considerations>
                        let in_change_table = match ty.column_type() {
                            ColumnType::RowVersion => ColumnType::Binary(Length::Of(8)),
                            other => other,
                        };
                        let desc = ColumnDesc::new(&def.name, in_change_table, nullable);
                        match ty.collation() {
                            Some(collation) => desc.with_collation(collation.to_string()),
                            None => desc,
                        }
                    }
                    None => ColumnDesc::new(&def.name, ColumnType::NVarChar(Length::Max), true),
                }
            })
            .collect()
    }

    fn check_arity(&self, row: &[Value]) -> Result<(), ModelError> {
        if row.len() != self.columns.len() {
            return Err(ModelError::Arity {
                table: self.name.clone(),
                expected: self.columns.len(),
                got: row.len(),
            });
        }
        Ok(())
    }

    fn check_key(&self, key: &[Value]) -> Result<Key, ModelError> {
        if key.len() != self.key_idx.len() {
            return Err(ModelError::KeyArity {
                table: self.name.clone(),
                expected: self.key_idx.len(),
                got: key.len(),
            });
        }
        Ok(self.sort_key(key))
    }

    /// Binary search of the generated sequence: `Ok(i)` if row `i` has `key`, else where it
    /// would go. `O(log n)` calls of the row function.
    fn gen_find(&self, key: &Key) -> Result<u64, u64> {
        let Some(g) = &self.generated else {
            return Err(0);
        };
        let (mut lo, mut hi) = (0u64, g.n);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let row = (g.f)(mid);
            match cmp_keys(self.key_of(&row).values(), key.values()) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Ok(mid),
            }
        }
        Err(lo)
    }

    fn get(&self, key: &Key) -> Option<Vec<Value>> {
        match self.rows.get(key) {
            Some(Slot::Row(row)) => Some(row.clone()),
            Some(Slot::Tombstone) => None,
            None => {
                let i = self.gen_find(key).ok()?;
                self.generated.as_ref()?;
                Some(self.gen_row(i))
            }
        }
    }

    /// Sets the overlay slot of `key`, returning the previous one (for undo).
    fn set_slot(&mut self, key: Key, slot: Option<Slot>) -> Option<Slot> {
        match slot {
            Some(slot) => self.rows.insert(key, slot),
            None => self.rows.remove(&key),
        }
    }

    fn remove(&mut self, key: &Key) -> Option<Slot> {
        let slot = if self.gen_find(key).is_ok() {
            Some(Slot::Tombstone)
        } else {
            None
        };
        self.set_slot(key.clone(), slot)
    }

    /// Up to `limit` current rows after `after`, in key order (see [`Table::scan_keyed`]).
    fn scan_batch(&self, after: Option<&Key>, limit: usize) -> Vec<Vec<Value>> {
        self.scan_keyed(after, limit)
            .into_iter()
            .map(|(_, row)| row)
            .collect()
    }

    /// Up to `limit` current rows after `after` with their keys, in key order (a heap: row id
    /// order): the generated sequence merged with the overlay (overlay wins on equal keys;
    /// tombstones hide generated rows).
    fn scan_keyed(&self, after: Option<&Key>, limit: usize) -> Vec<(Key, Vec<Value>)> {
        let mut out = Vec::new();
        let lower = match after {
            Some(k) => Bound::Excluded(k.clone()),
            None => Bound::Unbounded,
        };
        let mut overlay = self.rows.range((lower, Bound::Unbounded)).peekable();
        let (mut gi, n) = match (&self.generated, after) {
            (Some(g), Some(k)) => (self.gen_find(k).map_or_else(|i| i, |i| i + 1), g.n),
            (Some(g), None) => (0, g.n),
            (None, _) => (0, 0),
        };
        let mut gen_cur: Option<(Key, Vec<Value>)> = None;
        let mut prev_gen: Option<Key> = None;
        while out.len() < limit {
            if gen_cur.is_none() && gi < n {
                let row = self.gen_row(gi);
                let key = self.key_of(&row);
                if let Some(prev) = &prev_gen {
                    assert!(
                        *prev < key,
                        "generated table {}: key of row {gi} is not above the previous one",
                        self.name
                    );
                }
                prev_gen = Some(key.clone());
                gen_cur = Some((key, row));
            }
            let order = match (overlay.peek(), &gen_cur) {
                (None, None) => break,
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (Some((ok, _)), Some((gk, _))) => (*ok).cmp(gk),
            };
            if order == std::cmp::Ordering::Equal {
                // The overlay replaces (or deletes) this generated row.
                gen_cur = None;
                gi += 1;
            }
            let take_overlay = order != std::cmp::Ordering::Greater;
            if take_overlay {
                let (key, slot) = overlay.next().expect("peeked");
                if let Slot::Row(row) = slot {
                    out.push((key.clone(), row.clone()));
                }
            } else {
                let (key, row) = gen_cur.take().expect("checked");
                gi += 1;
                out.push((key, row));
            }
        }
        out
    }

    fn entry(&self, seq: u64) -> Option<&Entry> {
        let idx = seq.checked_sub(self.log_front_seq)?;
        self.log.get(usize::try_from(idx).ok()?)
    }
}

struct Instance {
    name: String,
    table: TableRef,
    supports_net_changes: bool,
    /// The low end of the validity interval once established (raised by cleanup).
    min_lsn: Lsn,
    /// Table column positions of `@captured_column_list`, in column order.
    captured: Vec<usize>,
    /// `cdc.change_tables.start_lsn`: `None` until the capture process has run past the
    /// `sp_cdc_enable_table` that created the instance (docs/model.md).
    start_lsn: Option<Lsn>,
    /// Its `cdc.ddl_history` rows, oldest first (shown once captured).
    ddl: Vec<DdlEvent>,
}

impl Instance {
    /// `sys.fn_cdc_get_min_lsn(name)`: 0x00… while the low endpoint is not established.
    fn reported_min_lsn(&self) -> Lsn {
        self.start_lsn.map_or(Lsn::ZERO, |_| self.min_lsn)
    }
}

/// A committed transaction the capture process has not reached yet.
struct Pending {
    lsn: Lsn,
    utc: DateTime<Utc>,
    local: NaiveDateTime,
}

struct State {
    now: DateTime<Utc>,
    offset_minutes: i32,
    capture_lag: Duration,
    capture_paused: bool,
    idle_dummies: bool,
    time_per_call: Option<Duration>,
    /// `None`: capture runs at every change of the clock; `Some`: every `polling`.
    scans: Option<ScanJob>,
    scan_sessions_visible: bool,
    folded_scan_times: FoldedScanTimes,
    /// The last LSN handed out (commit or dummy).
    last_lsn: u128,
    tables: BTreeMap<TableRef, Table>,
    /// In creation order: the last of a table's is its newest.
    instances: Vec<Instance>,
    mapping: Vec<MappingRow>,
    /// `tran_end_time` never went backwards (no DST fall-back): binary search is valid.
    mapping_monotonic: bool,
    pending: VecDeque<Pending>,
    watermarks: Option<BTreeMap<TableRef, Watermark>>,
    /// The range table of parallel full loads (`sql::RANGE_COLUMNS`), by table, load, range.
    ranges: BTreeMap<(TableRef, String, u32), cdc_copy::cdc::RangeProgress>,
    /// `last_error`, `last_error_at` of the watermark rows that have one (kept apart from
    /// [`Watermark`], as the product keeps them: not part of the row a run acts on).
    last_errors: BTreeMap<TableRef, LastError>,
    /// Tables a session's `scan_locked` holds a shared lock on, with the sessions holding it.
    locks: BTreeMap<TableRef, BTreeSet<u64>>,
    /// The id of the next session opened.
    next_session: u64,
}

/// A change row a transaction produced, logged at its commit.
struct Logged {
    table: TableRef,
    op: u8,
    key: Key,
    row: Vec<Value>,
    before: Option<Vec<Value>>,
}

/// Undo record for a failed transaction.
enum Undo {
    Slot {
        table: TableRef,
        key: Key,
        prev: Option<Slot>,
    },
    Meta {
        table: TableRef,
        row_count: u64,
        max_key: Option<Key>,
    },
}

impl State {
    fn new(start: DateTime<Utc>) -> State {
        State {
            now: start,
            offset_minutes: 0,
            capture_lag: Duration::zero(),
            capture_paused: false,
            idle_dummies: true,
            time_per_call: None,
            scans: None,
            scan_sessions_visible: true,
            folded_scan_times: FoldedScanTimes::Latest,
            last_lsn: FIRST_LSN,
            tables: BTreeMap::new(),
            instances: Vec::new(),
            mapping: Vec::new(),
            mapping_monotonic: true,
            pending: VecDeque::new(),
            watermarks: Some(BTreeMap::new()),
            ranges: BTreeMap::new(),
            last_errors: BTreeMap::new(),
            locks: BTreeMap::new(),
            next_session: 1,
        }
    }

    fn to_local(&self, utc: DateTime<Utc>) -> NaiveDateTime {
        utc.naive_utc() + Duration::minutes(self.offset_minutes.into())
    }

    fn advance(&mut self, by: Duration) {
        if by > Duration::zero() {
            self.now += by;
        }
        self.auto_capture();
    }

    fn auto_capture(&mut self) {
        if self.capture_paused {
            return;
        }
        if self.scans.is_some() {
            self.run_due_scans();
        } else {
            let cutoff = self.now - self.capture_lag;
            self.capture_until(cutoff, self.idle_dummies);
        }
    }

    /// The idle capture job's scans due by now, each at its own time.
    fn run_due_scans(&mut self) {
        loop {
            let Some(job) = self.scans.as_ref() else {
                return;
            };
            let at = job.last_scan + job.polling;
            if at > self.now || job.polling <= Duration::zero() {
                return;
            }
            let cutoff = at - self.capture_lag;
            let captured = self.capture_until(cutoff, false);
            let dummy_due = self
                .mapping
                .last()
                .is_some_and(|m| m.utc <= cutoff - IDLE_DUMMY_INTERVAL);
            if captured == 0 && dummy_due {
                self.write_dummy(cutoff);
            }
            let local = to_sql_datetime(self.to_local(at));
            let folded = self.folded_scan_times;
            let job = self.scans.as_mut().expect("checked");
            job.last_scan = at;
            record_scan(&mut job.sessions, local, captured, folded);
        }
    }

    /// Moves pending commits at or before `cutoff` into `lsn_time_mapping`; if none was due
    /// and `dummies`, marks progress with a dummy row at `cutoff` when that is later than the
    /// last mapping row.
    fn capture_until(&mut self, cutoff: DateTime<Utc>, dummies: bool) -> usize {
        let mut captured = 0;
        while self.pending.front().is_some_and(|p| p.utc <= cutoff) {
            let p = self.pending.pop_front().expect("checked");
            self.push_mapping(MappingRow {
                start_lsn: p.lsn,
                tran_end_time: p.local,
                utc: p.utc,
                dummy: false,
            });
            captured += 1;
        }
        // The capture process recognises an instance once it has read past its creation.
        let max = self.max_lsn();
        for inst in &mut self.instances {
            if inst.start_lsn.is_none() && inst.min_lsn <= max {
                inst.start_lsn = Some(inst.min_lsn);
            }
        }
        if captured > 0 {
            debug!(captured, max_lsn = %self.max_lsn(), "model: capture process ran");
        } else if dummies && self.mapping.last().is_some_and(|m| m.utc < cutoff) {
            self.write_dummy(cutoff);
        }
        captured
    }

    fn push_mapping(&mut self, row: MappingRow) {
        if let Some(last) = self.mapping.last() {
            if row.tran_end_time < last.tran_end_time {
                self.mapping_monotonic = false;
            }
        }
        self.mapping.push(row);
    }

    /// A dummy mapping row at `at` (not before the last row), with an LSN between the last
    /// captured row and the first pending commit.
    fn write_dummy(&mut self, at: DateTime<Utc>) -> Option<Lsn> {
        if self.instances.is_empty() {
            return None;
        }
        let last = self.mapping.last()?;
        let utc = at.max(last.utc);
        let lsn = last.start_lsn.to_u128() + 1;
        let below_next = self.pending.front().is_none_or(|p| lsn < p.lsn.to_u128());
        if lsn % LSN_STRIDE == 0 || !below_next {
            debug!("model: no LSN left for a dummy mapping row before the next commit");
            return None;
        }
        self.last_lsn = self.last_lsn.max(lsn);
        let start_lsn = Lsn::from_u128(lsn);
        let local = to_sql_datetime(self.to_local(utc));
        self.push_mapping(MappingRow {
            start_lsn,
            tran_end_time: local,
            utc,
            dummy: true,
        });
        Some(start_lsn)
    }

    fn next_commit_lsn(&mut self) -> Lsn {
        self.last_lsn = (self.last_lsn / LSN_STRIDE + 1) * LSN_STRIDE;
        Lsn::from_u128(self.last_lsn)
    }

    fn push_pending(&mut self, lsn: Lsn) {
        let local = to_sql_datetime(self.to_local(self.now));
        self.pending.push_back(Pending {
            lsn,
            utc: self.now,
            local,
        });
    }

    fn max_lsn(&self) -> Lsn {
        self.mapping.last().map_or(Lsn::ZERO, |m| m.start_lsn)
    }

    fn map_time_to_lsn(&self, local: NaiveDateTime) -> Option<Lsn> {
        if self.mapping_monotonic {
            let n = self.mapping.partition_point(|m| m.tran_end_time <= local);
            n.checked_sub(1).map(|i| self.mapping[i].start_lsn)
        } else {
            // After a DST fall-back local times repeat: max(start_lsn) WHERE tran_end_time <= t.
            self.mapping
                .iter()
                .filter(|m| m.tran_end_time <= local)
                .map(|m| m.start_lsn)
                .max()
        }
    }

    fn map_lsn_to_time(&self, lsn: Lsn) -> Option<NaiveDateTime> {
        let n = self.mapping.partition_point(|m| m.start_lsn <= lsn);
        n.checked_sub(1).map(|i| self.mapping[i].tran_end_time)
    }

    fn instance(&self, name: &str) -> Option<&Instance> {
        self.instances.iter().find(|i| i.name == name)
    }

    fn add_table(&mut self, name: TableRef, table: Table) -> Result<(), ModelError> {
        if self.tables.contains_key(&name) {
            return Err(ModelError::TableExists(name));
        }
        self.tables.insert(name, table);
        Ok(())
    }

    fn enable_cdc(
        &mut self,
        table: &TableRef,
        name: &str,
        supports_net_changes: bool,
        columns: Option<&[&str]>,
    ) -> Result<Lsn, ModelError> {
        let t = self
            .tables
            .get(table)
            .ok_or_else(|| ModelError::NoTable(table.clone()))?;
        let captured: Vec<usize> = match columns {
            None => (0..t.columns.len()).collect(),
            Some(list) => {
                for c in list {
                    if !t.columns.iter().any(|n| n == c) {
                        return Err(ModelError::NoColumn {
                            table: table.clone(),
                            column: c.to_string(),
                        });
                    }
                }
                (0..t.columns.len())
                    .filter(|&i| list.contains(&t.columns[i].as_str()))
                    .collect()
            }
        };
        if supports_net_changes && t.is_heap() {
            return Err(ModelError::NetChangesNeedKey {
                table: table.clone(),
            });
        }
        if let Some(&k) = t.key_idx.iter().find(|k| !captured.contains(k)) {
            return Err(ModelError::KeyNotCaptured {
                table: table.clone(),
                column: t.columns[k].clone(),
            });
        }
        if self.instance(name).is_some() {
            return Err(ModelError::InstanceExists(name.to_string()));
        }
        if self.instances.iter().filter(|i| &i.table == table).count() >= 2 {
            return Err(ModelError::TooManyInstances(table.clone()));
        }
        let start = self.next_commit_lsn();
        self.instances.push(Instance {
            name: name.to_string(),
            table: table.clone(),
            supports_net_changes,
            min_lsn: start,
            captured,
            start_lsn: None,
            ddl: Vec::new(),
        });
        self.push_pending(start);
        self.auto_capture();
        debug!(table = %table, capture_instance = name, start_lsn = %start, "model: CDC enabled");
        Ok(start)
    }

    fn captured(&self, table: &TableRef) -> bool {
        self.instances.iter().any(|i| &i.table == table)
    }

    /// Writers wait for a `scan_locked` session's shared table lock; the model refuses.
    fn check_unlocked(&self, table: &TableRef) -> Result<(), ModelError> {
        match self.locks.get(table) {
            Some(holders) if !holders.is_empty() => Err(ModelError::Blocked {
                table: table.clone(),
            }),
            _ => Ok(()),
        }
    }

    /// Logs one DDL transaction on `table` and records it in `cdc.ddl_history` for every
    /// capture instance of the table. Returns its LSN.
    fn log_ddl(&mut self, table: &TableRef, command: String) -> Lsn {
        let lsn = self.next_commit_lsn();
        let time = to_sql_datetime(self.to_local(self.now));
        let mut any = false;
        for inst in self.instances.iter_mut().filter(|i| &i.table == table) {
            any = true;
            inst.ddl.push(DdlEvent {
                command: command.clone(),
                lsn,
                time,
            });
        }
        if any {
            self.push_pending(lsn);
        }
        debug!(table = %table, %lsn, command, "model: DDL");
        self.auto_capture();
        lsn
    }

    fn table_mut(&mut self, name: &TableRef) -> Result<&mut Table, ModelError> {
        self.tables
            .get_mut(name)
            .ok_or_else(|| ModelError::NoTable(name.clone()))
    }

    /// Applies one operation, recording undo and the change rows it produces.
    fn apply(
        &mut self,
        op: TxnOp,
        undo: &mut Vec<Undo>,
        logged: &mut Vec<Logged>,
    ) -> Result<(), ModelError> {
        let name = op.table().clone();
        let t = self.table_mut(&name)?;
        undo.push(Undo::Meta {
            table: name.clone(),
            row_count: t.row_count,
            max_key: t.max_key.clone(),
        });
        let set = |t: &mut Table, key: Key, slot: Option<Slot>, undo: &mut Vec<Undo>| {
            let prev = t.set_slot(key.clone(), slot);
            undo.push(Undo::Slot {
                table: name.clone(),
                key,
                prev,
            });
        };
        let log = |op: u8, key: Key, row: Vec<Value>, before: Option<Vec<Value>>| Logged {
            table: name.clone(),
            op,
            key,
            row,
            before,
        };
        let no_row = |key: Key| ModelError::NoRow {
            table: name.clone(),
            key: key.0,
        };
        // Which row an update or delete changes, and the new row of an update.
        let (key, new_row) = match op {
            TxnOp::Insert(_, row) => {
                t.check_arity(&row)?;
                let row = t.stored(row);
                let key = if t.is_heap() {
                    t.new_key(&row)
                } else {
                    let key = t.key_of(&row);
                    if t.get(&key).is_some() {
                        return Err(ModelError::DuplicateKey {
                            table: name,
                            key: key.0,
                        });
                    }
                    key
                };
                set(t, key.clone(), Some(Slot::Row(row.clone())), undo);
                t.row_count += 1;
                if t.max_key.as_ref().is_none_or(|m| *m < key) {
                    t.max_key = Some(key.clone());
                }
                logged.push(log(2, key, row, None));
                return Ok(());
            }
            TxnOp::Update(_, key, row) => (t.check_key(&key)?, Some(row)),
            TxnOp::Delete(_, key) => (t.check_key(&key)?, None),
            TxnOp::UpdateRow(_, old, row) => (t.find_row(&t.stored(old))?, Some(row)),
            TxnOp::DeleteRow(_, old) => (t.find_row(&t.stored(old))?, None),
        };
        let Some(old) = t.get(&key) else {
            return Err(no_row(key));
        };
        let Some(row) = new_row else {
            let prev = t.remove(&key);
            undo.push(Undo::Slot {
                table: name.clone(),
                key: key.clone(),
                prev,
            });
            t.row_count -= 1;
            logged.push(log(1, key, old, None));
            return Ok(());
        };
        t.check_arity(&row)?;
        let row = t.stored(row);
        // A heap row keeps its row id, whatever its values.
        let new_key = if t.is_heap() {
            key.clone()
        } else {
            t.key_of(&row)
        };
        if new_key == key {
            set(t, key.clone(), Some(Slot::Row(row.clone())), undo);
            logged.push(log(4, key, row, Some(old)));
            return Ok(());
        }
        // An update of the key itself is captured as delete + insert.
        if t.get(&new_key).is_some() {
            return Err(ModelError::DuplicateKey {
                table: name,
                key: new_key.0,
            });
        }
        let prev = t.remove(&key);
        undo.push(Undo::Slot {
            table: name.clone(),
            key: key.clone(),
            prev,
        });
        set(t, new_key.clone(), Some(Slot::Row(row.clone())), undo);
        if t.max_key.as_ref().is_none_or(|m| *m < new_key) {
            t.max_key = Some(new_key.clone());
        }
        logged.push(log(1, key, old, None));
        logged.push(log(2, new_key, row, None));
        Ok(())
    }

    fn rollback(&mut self, undo: Vec<Undo>) {
        for record in undo.into_iter().rev() {
            match record {
                Undo::Slot { table, key, prev } => {
                    if let Some(t) = self.tables.get_mut(&table) {
                        t.set_slot(key, prev);
                    }
                }
                Undo::Meta {
                    table,
                    row_count,
                    max_key,
                } => {
                    if let Some(t) = self.tables.get_mut(&table) {
                        t.row_count = row_count;
                        t.max_key = max_key;
                    }
                }
            }
        }
    }

    fn commit(&mut self, ops: Vec<TxnOp>) -> Result<Lsn, ModelError> {
        for op in &ops {
            self.check_unlocked(op.table())?;
        }
        let mut undo = Vec::new();
        let mut logged = Vec::new();
        for op in ops {
            if let Err(e) = self.apply(op, &mut undo, &mut logged) {
                self.rollback(undo);
                return Err(e);
            }
        }
        let lsn = self.next_commit_lsn();
        let mut any = false;
        let changes = logged.len();
        for (seq, change) in (0u64..).zip(logged) {
            if self.captured(&change.table) {
                any = true;
                let t = self.tables.get_mut(&change.table).expect("applied");
                t.log.push_back(Entry::Change {
                    lsn,
                    seq,
                    op: change.op,
                    key: change.key,
                    row: change.row,
                    before: change.before,
                });
            }
        }
        if any {
            self.push_pending(lsn);
        }
        debug!(%lsn, changes, captured = any, at = %self.now, "model: commit");
        self.auto_capture();
        Ok(lsn)
    }

    fn generated_inserts(
        &mut self,
        name: &TableRef,
        count: u64,
        rows_per_txn: u64,
    ) -> Result<Option<Lsn>, ModelError> {
        self.check_unlocked(name)?;
        let captured = self.captured(name);
        let t = self.table_mut(name)?;
        let Some(g) = &t.generated else {
            return Err(ModelError::NotGenerated(name.clone()));
        };
        if count == 0 {
            return Ok(None);
        }
        let start = g.n;
        let first = t.gen_row(start);
        t.check_arity(&first)?;
        let first_key = t.key_of(&first);
        if t.max_key.as_ref().is_some_and(|m| *m >= first_key) {
            return Err(ModelError::GeneratedKeyNotFresh(name.clone()));
        }
        let last_key = t.key_of(&t.gen_row(start + count - 1));
        t.max_key = Some(last_key);
        t.row_count += count;
        t.generated.as_mut().expect("checked").n += count;
        let mut last = None;
        let mut i = start;
        while i < start + count {
            let n = rows_per_txn.min(start + count - i);
            let lsn = self.next_commit_lsn();
            if captured {
                let t = self.tables.get_mut(name).expect("checked");
                t.log.push_back(Entry::Generated {
                    lsn,
                    start: i,
                    count: n,
                });
                self.push_pending(lsn);
            }
            last = Some(lsn);
            i += n;
        }
        self.auto_capture();
        Ok(last)
    }

    fn cleanup(&mut self, before: Lsn) -> Lsn {
        let max = self.max_lsn();
        let n = self.mapping.partition_point(|m| m.start_lsn < before);
        let lwm = self.mapping.get(n).map_or(max, |m| m.start_lsn).min(max);
        for inst in &mut self.instances {
            inst.min_lsn = inst.min_lsn.max(lwm);
        }
        let mut lowest = Lsn::MAX;
        for (name, t) in &mut self.tables {
            let Some(min) = self
                .instances
                .iter()
                .filter(|i| &i.table == name)
                .map(|i| i.min_lsn)
                .min()
            else {
                continue;
            };
            lowest = lowest.min(min);
            while t.log.front().is_some_and(|e| e.lsn() < min) {
                t.log.pop_front();
                t.log_front_seq += 1;
            }
        }
        // lsn_time_mapping rows below every instance's low end go too; the last row stays.
        let keep_from = self
            .mapping
            .partition_point(|m| m.start_lsn < lowest)
            .min(self.mapping.len().saturating_sub(1));
        self.mapping.drain(..keep_from);
        debug!(low_water_mark = %lwm, "model: cleanup ran");
        lwm
    }

    /// The instance named `name` (of `table`, when given), or the error a read of a missing
    /// one gives.
    fn instance_for(&self, table: Option<&TableRef>, name: &str) -> Result<&Instance, CdcError> {
        self.instance(name)
            .filter(|i| table.is_none_or(|t| &i.table == t))
            .ok_or_else(|| CdcError::NoCaptureInstance {
                table: table.cloned().unwrap_or(TableRef {
                    schema: String::new(),
                    table: String::new(),
                }),
                wanted: Some(name.to_string()),
            })
    }

    fn net_plan_by_name(
        &self,
        name: &str,
        from: Lsn,
        to: Lsn,
        filter: RowFilter,
    ) -> Result<NetPlan, CdcError> {
        self.net_plan(self.instance_for(None, name)?, None, from, to, filter)
    }

    fn net_plan_for(
        &self,
        ci: &CaptureInstance,
        from: Lsn,
        to: Lsn,
        filter: RowFilter,
    ) -> Result<NetPlan, CdcError> {
        let inst = self.instance_for(Some(&ci.table), &ci.name)?;
        self.net_plan(inst, Some(&ci.column_names()), from, to, filter)
    }

    /// What a CDC function says of `[from, to]` for `inst`: an instance the capture process
    /// has not recognised, a range below its validity interval or above the max LSN, or an
    /// inverted one is Msg 313.
    fn check_range(
        &self,
        inst: &Instance,
        from: Lsn,
        to: Lsn,
        function: &str,
    ) -> Result<(), CdcError> {
        if inst.start_lsn.is_none() || from < inst.min_lsn || to > self.max_lsn() || from > to {
            return Err(msg_313(function));
        }
        Ok(())
    }

    /// Per selected column after the CDC ones: its table position, or `None` for NULL (a
    /// change row holds the captured columns only, computed ones as NULL). `columns`: the
    /// captured columns selected (`None`: all of the instance's, as `SELECT *` would).
    fn change_projection(
        &self,
        inst: &Instance,
        columns: Option<&[String]>,
    ) -> Result<Vec<Option<usize>>, CdcError> {
        let t = &self.tables[&inst.table];
        let change_column = |i: usize| (!t.defs[i].computed).then_some(i);
        match columns {
            None => Ok(inst.captured.iter().map(|&i| change_column(i)).collect()),
            Some(names) => names
                .iter()
                .map(|name| {
                    inst.captured
                        .iter()
                        .find(|&&i| t.columns[i] == *name)
                        .map(|&i| change_column(i))
                        .ok_or_else(|| invalid_column(name))
                })
                .collect(),
        }
    }

    /// The result set's columns: the CDC ones, then the selected captured columns.
    fn change_columns(
        &self,
        inst: &Instance,
        cdc: &[&str],
        columns: Option<&[String]>,
    ) -> Vec<String> {
        let t = &self.tables[&inst.table];
        let selected: Vec<String> = match columns {
            Some(names) => names.to_vec(),
            None => inst
                .captured
                .iter()
                .map(|&i| t.columns[i].clone())
                .collect(),
        };
        cdc.iter().map(|c| c.to_string()).chain(selected).collect()
    }

    /// Folds the change rows in `[from, to]` per key (the net-changes rules, see
    /// docs/model.md) into a list of positions to emit. Costs one map entry per changed key
    /// and no row clones; rows are cloned later, batch by batch, by [`State::net_batch`].
    /// `columns` are the captured columns selected after the CDC columns (`None`: all of the
    /// instance's, as `SELECT *` would).
    fn net_plan(
        &self,
        inst: &Instance,
        columns: Option<&[String]>,
        from: Lsn,
        to: Lsn,
        filter: RowFilter,
    ) -> Result<NetPlan, CdcError> {
        // "If 1, the functions that are needed to query for net changes are also generated"
        // (sys.sp_cdc_enable_table): without, the function does not exist.
        if !inst.supports_net_changes {
            return Err(invalid_object(&format!(
                "cdc.fn_cdc_get_net_changes_{}",
                inst.name
            )));
        }
        self.check_range(inst, from, to, NET_CHANGES)?;
        let t = &self.tables[&inst.table];
        let projection = self.change_projection(inst, columns)?;
        let lo = t.log.partition_point(|e| e.lsn() < from);
        let hi = t.log.partition_point(|e| e.lsn() <= to);
        // Per key: (first operation in the window, position of the last change).
        let mut net: HashMap<&Key, (u8, u64)> = HashMap::new();
        let mut gens = Vec::new();
        for (idx, entry) in t.log.range(lo..hi).enumerate() {
            let seq = t.log_front_seq + (lo + idx) as u64;
            match entry {
                // The generated function joins the key back with `key = key`: a key with a
                // NULL in it never matches itself, so its changes never come out.
                Entry::Change { key, .. } if key.values().contains(&Value::Null) => {}
                Entry::Change { op, key, .. } => {
                    net.entry(key)
                        .and_modify(|state| state.1 = seq)
                        .or_insert((*op, seq));
                }
                Entry::Generated { lsn, start, count } => gens.push(GenItem {
                    lsn: *lsn,
                    start: *start,
                    count: *count,
                }),
            }
        }
        let mut superseded = HashSet::new();
        let mut ones = Vec::with_capacity(net.len());
        for (key, (mut first, last_seq)) in net {
            if !gens.is_empty() {
                // A generated insert in this window, changed again later in it: the
                // generated insert is the key's first operation.
                if let Ok(i) = t.gen_find(key) {
                    let g = gens.partition_point(|g| g.start + g.count <= i);
                    if gens.get(g).is_some_and(|g| g.start <= i) {
                        first = 2;
                        superseded.insert(i);
                    }
                }
            }
            let Some(Entry::Change { op: last, .. }) = t.entry(last_seq) else {
                unreachable!("a change position inside the window");
            };
            let net_op = match (first, *last) {
                // Inserted and deleted inside the window: nothing.
                (2, 1) => continue,
                // Did not exist before the window: an insert with the final values.
                (2, _) => 2,
                // Existed before, gone after: a delete.
                (_, 1) => 1,
                // Existed before and after (updated, or deleted and re-inserted): an update.
                _ => 4,
            };
            ones.push((last_seq, output_op(net_op, filter)));
        }
        ones.sort_by(|a, b| {
            let (ea, eb) = (t.entry(a.0), t.entry(b.0));
            match (ea, eb) {
                (
                    Some(Entry::Change {
                        lsn: la, key: ka, ..
                    }),
                    Some(Entry::Change {
                        lsn: lb, key: kb, ..
                    }),
                ) => la.cmp(lb).then_with(|| ka.cmp(kb)),
                _ => unreachable!("change positions"),
            }
        });
        let columns = self.change_columns(
            inst,
            &["__$start_lsn", "__$operation", "__$update_mask"],
            columns,
        );
        Ok(NetPlan {
            table: inst.table.clone(),
            columns,
            projection,
            ones,
            gens,
            superseded,
            gen_op: output_op(2, filter),
        })
    }

    /// The next up-to-`max` net-change rows of `plan`, merged by LSN.
    fn net_batch(
        &self,
        plan: &NetPlan,
        cur: &mut NetCursor,
        max: usize,
    ) -> Result<Vec<Vec<Value>>, CdcError> {
        let t = self
            .tables
            .get(&plan.table)
            .ok_or_else(|| msg_313(NET_CHANGES))?;
        let mut out = Vec::new();
        while out.len() < max {
            let one = match plan.ones.get(cur.one) {
                Some(&(seq, op)) => match t.entry(seq) {
                    Some(Entry::Change { lsn, row, .. }) => Some((*lsn, op, row)),
                    // Cleanup deleted rows this read still had to return.
                    _ => return Err(msg_313(NET_CHANGES)),
                },
                None => None,
            };
            let gen = plan.gens.get(cur.gen);
            match (one, gen) {
                (None, None) => break,
                (Some((lsn, op, row)), g) if g.is_none_or(|g| lsn < g.lsn) => {
                    out.push(net_row(lsn, op, row, &plan.projection));
                    cur.one += 1;
                }
                (_, Some(g)) => {
                    let i = g.start + cur.gen_off;
                    if !plan.superseded.contains(&i) {
                        out.push(net_row(g.lsn, plan.gen_op, &t.gen_row(i), &plan.projection));
                    }
                    cur.gen_off += 1;
                    if cur.gen_off == g.count {
                        cur.gen += 1;
                        cur.gen_off = 0;
                    }
                }
                (Some(_), None) => unreachable!("covered by the guard"),
            }
        }
        Ok(out)
    }
}

/// What a net-changes read will emit, computed once under the lock.
struct NetPlan {
    table: TableRef,
    columns: Vec<String>,
    /// Per selected column after the CDC ones: its table position, or `None` for NULL.
    projection: Vec<Option<usize>>,
    /// (log position of the key's last change, output operation), in output order.
    ones: Vec<(u64, u8)>,
    gens: Vec<GenItem>,
    /// Generated rows whose key changed again later in the window (emitted via `ones`).
    superseded: HashSet<u64>,
    gen_op: u8,
}

struct GenItem {
    lsn: Lsn,
    start: u64,
    count: u64,
}

#[derive(Default)]
struct NetCursor {
    one: usize,
    gen: usize,
    gen_off: u64,
}

fn output_op(op: u8, filter: RowFilter) -> u8 {
    match (filter, op) {
        (RowFilter::AllWithMerge, 2 | 4) => 5,
        _ => op,
    }
}

fn net_row(lsn: Lsn, op: u8, row: &[Value], projection: &[Option<usize>]) -> Vec<Value> {
    let mut out = Vec::with_capacity(projection.len() + 3);
    out.push(Value::Binary(lsn.0.to_vec()));
    out.push(Value::Int(op.into()));
    out.push(Value::Null);
    out.extend(project(row, projection));
    out
}

/// The selected columns of a change row (NULL where `projection` says so).
fn project<'a>(
    row: &'a [Value],
    projection: &'a [Option<usize>],
) -> impl Iterator<Item = Value> + 'a {
    projection
        .iter()
        .map(|p| p.and_then(|i| row.get(i).cloned()).unwrap_or(Value::Null))
}

/// Msg 208, what SQL Server says when a statement names an object that does not exist (the
/// net changes function of an instance enabled without `@supports_net_changes = 1`).
pub(crate) fn invalid_object(name: &str) -> CdcError {
    CdcError::Sql {
        number: 208,
        message: format!("Invalid object name '{name}'."),
        transient: false,
    }
}

/// Msg 207, what SQL Server says when a statement names a column the source does not have.
pub(crate) fn invalid_column(name: &str) -> CdcError {
    CdcError::Sql {
        number: 207,
        message: format!("Invalid column name '{name}'."),
        transient: false,
    }
}

/// The key type an untyped model column reports, from a value it holds.
fn guess_type(value: &Value) -> KeyType {
    let bin2 = || cdc_copy::cdc::Collation::parse("Latin1_General_100_BIN2").expect("valid");
    match value {
        Value::Bit(_) => KeyType::Bit,
        Value::Real(_) => KeyType::Real,
        Value::Float(_) => KeyType::Float,
        Value::Decimal { scale, .. } => KeyType::Decimal {
            precision: 38,
            scale: *scale,
        },
        Value::Text(_) => KeyType::NVarChar {
            length: 450,
            collation: bin2(),
        },
        Value::Binary(_) => KeyType::VarBinary { length: 900 },
        Value::Date(_) => KeyType::Date,
        Value::Time(_) => KeyType::Time { scale: 7 },
        Value::DateTime(_) => KeyType::DateTime2 { scale: 7 },
        Value::DateTimeOffset(_) => KeyType::DateTimeOffset { scale: 7 },
        Value::Guid(_) => KeyType::UniqueIdentifier,
        Value::Null | Value::Int(_) => KeyType::BigInt,
    }
}

const NET_CHANGES: &str = "cdc.fn_cdc_get_net_changes_";
const ALL_CHANGES: &str = "cdc.fn_cdc_get_all_changes_";

/// The error SQL Server raises for an out-of-range, NULL or inverted interval; `function`
/// is the function's name up to the capture instance.
fn msg_313(function: &str) -> CdcError {
    CdcError::Sql {
        number: 313,
        message: format!(
            "An insufficient number of arguments were supplied for the procedure or function \
             {function} ..."
        ),
        transient: false,
    }
}

/// One scan in `sys.dm_cdc_log_scan_sessions`: a scan that captured something is a new row;
/// consecutive empty scans are one row whose `empty_scan_count` grows ("Administer and
/// monitor change data capture"). Which times the folded row shows is `folded`: by default
/// the latest empty scan's ("the last row returned represents the current session"), or its
/// first's; the live suite looks at SQL Server (docs/model.md).
fn record_scan(
    sessions: &mut VecDeque<ScanSession>,
    at: NaiveDateTime,
    captured: usize,
    folded: FoldedScanTimes,
) {
    match sessions.back_mut() {
        Some(last) if captured == 0 && last.empty_scan_count > 0 => {
            if folded == FoldedScanTimes::Latest {
                last.start_time = at;
                last.end_time = at;
            }
            last.empty_scan_count += 1;
        }
        _ => {
            let session_id = sessions.back().map_or(1, |last| last.session_id + 1);
            sessions.push_back(ScanSession {
                session_id,
                start_time: at,
                end_time: at,
                tran_count: captured,
                empty_scan_count: u32::from(captured == 0),
            });
            if sessions.len() > MAX_SCAN_SESSIONS {
                sessions.pop_front();
            }
        }
    }
}

/// Rounds to SQL Server `datetime` precision (1/300 s: .000, .003, .007), the type of
/// `tran_end_time` and of `map_time_to_lsn`'s argument.
pub fn to_sql_datetime(t: NaiveDateTime) -> NaiveDateTime {
    let ns = u64::from(t.nanosecond().min(999_999_999));
    let ticks = (ns * 300 + 500_000_000) / 1_000_000_000;
    let base = t.with_nanosecond(0).expect("0 is valid");
    base + Duration::nanoseconds(((ticks * 1_000_000_000 + 150) / 300) as i64)
}

/// A UTC instant from server local time and an offset in minutes.
pub fn local_to_utc(local: NaiveDateTime, offset_minutes: i32) -> DateTime<Utc> {
    Utc.from_utc_datetime(&(local - Duration::minutes(offset_minutes.into())))
}

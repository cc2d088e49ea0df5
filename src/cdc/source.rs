//! The source seam: what a job needs from SQL Server, as a trait.
//!
//! Rows are pushed into a [`RowSink`] instead of returned as a stream: a tiberius result
//! stream borrows its connection, and pushing keeps backpressure (the sink awaits its block
//! uploads) without tying lifetimes through a trait object.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{ColumnDesc, KeyColumn, Lsn, LsnRange, Value};

/// A source table, `schema.table`. Names are validated (see [`TableRef::parse`]) but are
/// still always passed to SQL Server quoted or as parameters, never spliced raw.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TableRef {
    pub schema: String,
    pub table: String,
}

/// Why a name is refused before any SQL is sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("table name {0:?} must be schema.table, e.g. dbo.customers")]
    NotQualified(String),
    #[error("name {0:?} is empty or longer than 128 characters (sysname)")]
    Length(String),
    #[error("name {name:?} contains {ch:?}; only letters, digits, _, $, @, # and - are accepted")]
    Character { name: String, ch: char },
}

/// Checks one SQL Server identifier (a `sysname`) against a conservative character set.
/// Anything outside it (quotes, brackets, semicolons, spaces, dots…) is refused, so config
/// can never carry SQL; the check is deliberately stricter than SQL Server itself.
pub fn validate_identifier(name: &str) -> Result<(), NameError> {
    if name.is_empty() || name.chars().count() > 128 {
        return Err(NameError::Length(name.to_string()));
    }
    if let Some(ch) = name
        .chars()
        .find(|c| !(c.is_alphanumeric() || matches!(c, '_' | '$' | '@' | '#' | '-')))
    {
        return Err(NameError::Character {
            name: name.to_string(),
            ch,
        });
    }
    Ok(())
}

/// Checks a column name SQL Server returned from its catalog (`sys.columns`,
/// `cdc.captured_columns`). Such a name never comes from configuration and is only ever
/// spliced quoted ([`quote_identifier`] doubles `]`, as `QUOTENAME` does), so any `sysname`
/// is accepted — spaces, quotes and brackets included, as legacy tables have them — except an
/// empty one, one over 128 characters, or one with control characters.
pub fn validate_catalog_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() || name.chars().count() > 128 {
        return Err(NameError::Length(name.to_string()));
    }
    if let Some(ch) = name.chars().find(|c| c.is_control()) {
        return Err(NameError::Character {
            name: name.to_string(),
            ch,
        });
    }
    Ok(())
}

/// `[name]` with `]` doubled, as `QUOTENAME` does.
pub fn quote_identifier(name: &str) -> String {
    format!("[{}]", name.replace(']', "]]"))
}

impl TableRef {
    /// Parses `schema.table` (both parts validated by [`validate_identifier`]).
    pub fn parse(text: &str) -> Result<TableRef, NameError> {
        let (schema, table) = text
            .trim()
            .split_once('.')
            .ok_or_else(|| NameError::NotQualified(text.to_string()))?;
        validate_identifier(schema)?;
        validate_identifier(table)?;
        Ok(TableRef {
            schema: schema.to_string(),
            table: table.to_string(),
        })
    }

    /// `[schema].[table]`.
    pub fn quoted(&self) -> String {
        format!(
            "{}.{}",
            quote_identifier(&self.schema),
            quote_identifier(&self.table)
        )
    }
}

impl fmt::Display for TableRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.schema, self.table)
    }
}

/// A capture instance as `cdc.change_tables` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureInstance {
    pub table: TableRef,
    /// Validated against `cdc.change_tables`; safe to splice into
    /// `cdc.fn_cdc_get_net_changes_<name>` once quoted.
    pub name: String,
    pub supports_net_changes: bool,
    /// `sys.fn_cdc_get_min_lsn(name)`, read in the same round trip (0x00… while `start_lsn`
    /// is `None`, or when the login may not read the instance).
    pub min_lsn: Lsn,
    /// `cdc.change_tables.start_lsn`: `None` ("the low endpoint has not been established")
    /// until the capture process has recognised the instance after `sys.sp_cdc_enable_table`.
    /// Nothing can be copied from an instance without one (see
    /// [`CdcError::CaptureNotStarted`]).
    pub start_lsn: Option<Lsn>,
    /// The source table's key columns in key order (the primary key or `index_name`), with
    /// their declared types.
    pub key_columns: Vec<KeyColumn>,
    /// The captured columns the copier writes (`cdc.captured_columns` in `column_ordinal`
    /// order, computed columns left out) with their declared types in the change table: the
    /// full load selects exactly these, and the net changes select them after the CDC columns,
    /// so both files have the same columns.
    pub columns: Vec<ColumnDesc>,
    /// The DDL `cdc.ddl_history` recorded against this instance (so after it was created),
    /// oldest first.
    pub ddl: Vec<DdlEvent>,
}

/// One row of `cdc.ddl_history`: a schema change of the source table that an existing
/// capture instance saw but does not follow (new columns are not captured; dropped ones come
/// back NULL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DdlEvent {
    /// `ddl_command`, as the server recorded it.
    pub command: String,
    pub lsn: Lsn,
    /// `ddl_time`, the server's local time.
    pub time: chrono::NaiveDateTime,
}

/// How a table's changes are read: the net changes (one row per changed key, needs
/// `supports_net_changes = 1`) or every change (`cdc.fn_cdc_get_all_changes_<ci>`, for tables
/// without a primary key or unique index).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeMode {
    Net,
    All,
}

impl ChangeMode {
    /// `net` or `all`, as `CDC_TABLES` spells it.
    pub fn as_str(&self) -> &'static str {
        match self {
            ChangeMode::Net => "net",
            ChangeMode::All => "all",
        }
    }
}

/// The row filter passed to `cdc.fn_cdc_get_all_changes_<ci>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum AllRowFilter {
    /// `N'all update old'`: an update is two rows, 3 (the values before) then 4 (after).
    /// The default: without a key, the before-image is the only way to tell which row an
    /// update changed.
    #[default]
    AllUpdateOld,
    /// `N'all'`: operations 1, 2 and 4 (an update's new values only).
    All,
}

impl AllRowFilter {
    pub fn as_sql(&self) -> &'static str {
        match self {
            AllRowFilter::All => "all",
            AllRowFilter::AllUpdateOld => "all update old",
        }
    }
}

impl CaptureInstance {
    /// The key columns' names in key order.
    pub fn key_names(&self) -> Vec<String> {
        self.key_columns.iter().map(|k| k.name.clone()).collect()
    }

    /// The captured columns' names, in file order.
    pub fn column_names(&self) -> Vec<String> {
        self.columns.iter().map(|c| c.name.clone()).collect()
    }

    /// The columns of a change file read in `mode`: the CDC columns the change function
    /// returns first (`__$seqval` only for all changes), then the captured columns.
    pub fn change_columns(&self, mode: ChangeMode) -> Arc<[ColumnDesc]> {
        cdc_columns(mode)
            .into_iter()
            .chain(self.columns.iter().cloned())
            .collect()
    }

    /// The columns of a full-load part: the captured columns alone.
    pub fn load_columns(&self) -> Arc<[ColumnDesc]> {
        self.columns.iter().cloned().collect()
    }
}

/// The CDC columns that come before the captured ones in a change file, as the change function
/// of `mode` returns them: `__$start_lsn`, `__$seqval` (all changes only), `__$operation`,
/// `__$update_mask`.
/// <https://learn.microsoft.com/sql/relational-databases/system-functions/cdc-fn-cdc-get-all-changes-capture-instance-transact-sql>
pub fn cdc_columns(mode: ChangeMode) -> Vec<ColumnDesc> {
    let mut columns = vec![ColumnDesc::lsn("__$start_lsn")];
    if mode == ChangeMode::All {
        columns.push(ColumnDesc::lsn("__$seqval"));
    }
    columns.extend([ColumnDesc::operation(), ColumnDesc::update_mask()]);
    columns
}

/// How far the capture process has got, and what a window end maps to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureProgress {
    /// `sys.fn_cdc_get_max_lsn()`.
    pub max_lsn: Lsn,
    /// `sys.fn_cdc_map_lsn_to_time(max_lsn)`, converted to UTC; `None` when CDC has no mapping yet.
    pub max_lsn_time: Option<DateTime<Utc>>,
    /// `sys.fn_cdc_map_time_to_lsn('largest less than or equal', at)` for the time asked,
    /// converted to the server's zone first; `None` when no mapping is at or before it.
    pub lsn_at: Option<Lsn>,
    /// The server's UTC offset in minutes (`DATEPART(TZOFFSET, SYSDATETIMEOFFSET())`).
    pub server_utc_offset_minutes: i32,
    /// When the newest completed log scan session that found nothing to capture began
    /// (`sys.dm_cdc_log_scan_sessions`, converted to UTC): the capture process had drained
    /// the log at that moment. `None` when unknown: no permission on the view, no such
    /// session since the last restart or failover, or an availability-group secondary.
    pub drained_since: Option<DateTime<Utc>>,
    /// The newest log scan session row (largest `session_id > 0`) and its
    /// `empty_scan_count`, taken after [`CaptureProgress::server_now`]; `None` when unknown
    /// (as `drained_since`) or when that row has errors. Two marks of the same row show how
    /// many empty scans ended between two polls (`window::ScanWatch`).
    pub newest_scan: Option<ScanMark>,
    /// The server's clock when the batch began (`SYSDATETIMEOFFSET()`, in UTC), read before
    /// the log scan sessions.
    pub server_now: DateTime<Utc>,
}

/// One row of `sys.dm_cdc_log_scan_sessions` as seen at one poll: consecutive empty scans
/// fold into one row whose `empty_scan_count` grows, so the same `session_id` with a larger
/// count means more empty scans have ended since.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanMark {
    pub session_id: i32,
    pub empty_scans: i32,
}

/// The row filter passed to `cdc.fn_cdc_get_net_changes_<ci>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum RowFilter {
    /// `N'all'`: operations 1 (delete), 2 (insert), 4 (update).
    #[default]
    All,
    /// `N'all with merge'`: 1 (delete) and 5 (insert or update).
    AllWithMerge,
}

impl RowFilter {
    pub fn as_sql(&self) -> &'static str {
        match self {
            RowFilter::All => "all",
            RowFilter::AllWithMerge => "all with merge",
        }
    }
}

/// One incremental window: the net changes in `range`, i.e. the commits of the times
/// `(start, end]`, written to the blob `blob`. A run records the window in the watermark row
/// before it writes the blob, so a run that finds it there writes exactly this window again
/// (same LSN range, same name, same bytes) before anything else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    pub range: LsnRange,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub blob: String,
}

/// A full load in progress: where the next part starts.
#[derive(Debug, Clone, PartialEq)]
pub struct FullLoadProgress {
    /// The load's name in blob paths (`yyyyMMddHHmmssfff` of its start).
    pub load_id: String,
    pub baseline_lsn: Lsn,
    /// Part blobs committed so far.
    pub parts_done: u32,
    /// Key of the last row of the last committed part; `None` before the first part.
    pub last_key: Option<Vec<Value>>,
    pub rows_done: u64,
}

/// One key range of a full load and where its copy stands: a row of the range table
/// (`sql::RANGE_COLUMNS`). The range is `after < key <= upto` (each `None` unbounded); a
/// load's ranges never overlap and leave no gap (`jobs::full_load::ranges`). A load that is not
/// split has one range with both bounds `None`.
#[derive(Debug, Clone, PartialEq)]
pub struct RangeProgress {
    pub table: TableRef,
    pub load_id: String,
    /// 0-based position in key order.
    pub range: u32,
    pub after: Option<Vec<Value>>,
    pub upto: Option<Vec<Value>>,
    /// Part blobs of this range committed so far.
    pub parts_done: u32,
    /// Key of the last row of the last committed part; `None` before the first part.
    pub last_key: Option<Vec<Value>>,
    pub rows_done: u64,
    pub bytes_done: u64,
    pub done: bool,
    /// Optimistic concurrency, as [`Watermark::version`].
    pub version: i64,
    pub updated_at: DateTime<Utc>,
}

/// Where a table stands; exactly one of these at a time, so a row cannot be both loading
/// and halfway through a window.
#[derive(Debug, Clone, PartialEq)]
pub enum TableState {
    /// A full load is running; the next part starts at this checkpoint.
    Loading(FullLoadProgress),
    /// Copied up to the watermark; the next run plans a new window.
    Ready,
    /// A run recorded this window and may have stopped before advancing the watermark: the
    /// next run finishes it first. Its range starts right after `last_lsn` and its start is
    /// `last_window_end`.
    Pending(Window),
}

/// One row of the watermark table.
#[derive(Debug, Clone, PartialEq)]
pub struct Watermark {
    pub table: TableRef,
    pub capture_instance: String,
    /// Every change with an LSN at or below this is in a committed blob (or the full load).
    pub last_lsn: Lsn,
    /// The end of the last window copied (UTC); the next window starts here.
    pub last_window_end: DateTime<Utc>,
    pub state: TableState,
    pub rows_copied: u64,
    pub bytes_copied: u64,
    /// Optimistic concurrency: every update is conditional on the version read and bumps it.
    pub version: i64,
    pub updated_at: DateTime<Utc>,
}

impl Watermark {
    /// The row that replaces this one: `state` and `version + 1`, stamped `now`. Written with
    /// [`CdcSession::update_watermark`] conditional on this row's version.
    pub fn next(&self, state: TableState, now: DateTime<Utc>) -> Watermark {
        Watermark {
            state,
            version: self.version + 1,
            updated_at: now,
            ..self.clone()
        }
    }

    /// The row after `window` is committed with `rows` rows of `bytes` bytes.
    pub fn advanced(
        &self,
        window: &Window,
        rows: u64,
        bytes: u64,
        now: DateTime<Utc>,
    ) -> Watermark {
        Watermark {
            last_lsn: window.range.to(),
            last_window_end: window.end,
            rows_copied: self.rows_copied + rows,
            bytes_copied: self.bytes_copied + bytes,
            ..self.next(TableState::Ready, now)
        }
    }
}

/// Where rows go: the CSV-to-blob writer in production, a vector in tests.
#[async_trait]
pub trait RowSink: Send {
    /// The result set's column names, once, before any row.
    async fn columns(&mut self, names: &[String]) -> Result<(), RowSinkError>;
    async fn row(&mut self, row: &[Value]) -> Result<(), RowSinkError>;
}

/// A [`RowSink`] refused a row. The source only needs to know whether a retry may help, so the
/// sink's own error travels boxed (as the source of this one) with that one bit beside it;
/// `cdc` stays independent of any particular sink.
#[derive(Debug, thiserror::Error)]
#[error("{source}")]
pub struct RowSinkError {
    #[source]
    source: Box<dyn std::error::Error + Send + Sync>,
    transient: bool,
}

impl RowSinkError {
    pub fn new(
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
        transient: bool,
    ) -> Self {
        RowSinkError {
            source: source.into(),
            transient,
        }
    }

    pub fn is_transient(&self) -> bool {
        self.transient
    }

    /// The sink's own error, when it is a `T`.
    pub fn downcast_ref<T: std::error::Error + 'static>(&self) -> Option<&T> {
        self.source.downcast_ref::<T>()
    }
}

/// Errors from the source. `is_transient` tells retryable failures (network, deadlock,
/// timeouts) from definite ones (permissions, missing objects, bad config, lost changes).
#[derive(Debug, thiserror::Error)]
pub enum CdcError {
    #[error(
        "changes for {table} were cleaned up before they were copied: the next LSN to copy is \
         {requested} but capture instance {capture_instance} now starts at {minimum}. Changes in \
         between are lost to CDC; run FullLoad for {table} with \"reset\": true to re-baseline, \
         and raise the CDC retention (sys.sp_cdc_change_job @retention) so it exceeds the \
         longest outage"
    )]
    LsnNotAvailable {
        table: TableRef,
        capture_instance: String,
        requested: Lsn,
        minimum: Lsn,
    },
    #[error("table {table} has no CDC capture instance{} that this login can see: enable it with sys.sp_cdc_enable_table, or grant the login SELECT on the table (OBJECT_ID and cdc.change_tables show only what the login may see)", .wanted.as_ref().map(|w| format!(" named {w}")).unwrap_or_default())]
    NoCaptureInstance {
        table: TableRef,
        wanted: Option<String>,
    },
    #[error("capture instance {capture_instance} of {table} was enabled without @supports_net_changes = 1 (it needs a primary key or unique index); re-enable it with net changes")]
    NoNetChanges {
        table: TableRef,
        capture_instance: String,
    },
    /// CDC is enabled but its capture process has not run far enough to give an LSN to start
    /// from (right after `sys.sp_cdc_enable_table`). Transient: the capture job fixes it by
    /// itself within seconds to minutes, if it runs at all.
    #[error(
        "CDC capture has not started for {table} yet ({evidence}), so there is no LSN to copy \
         from. The capture process sets it: on SQL Server and Managed Instance the SQL Server \
         Agent job cdc.{database}_capture (check that SQL Server Agent is running), on Azure SQL \
         Database the CDC scheduler, which runs every 20 seconds. Retry in a minute or so"
    )]
    CaptureNotStarted {
        table: TableRef,
        /// What was read: the capture instance's NULL start LSN, or a NULL max LSN.
        evidence: String,
        /// The database, for the capture job's name.
        database: String,
    },
    /// `sys.fn_cdc_get_min_lsn` answered 0x00… for an instance that has (or had) a start LSN:
    /// the function's way of saying the instance is gone or the caller may not read it.
    #[error("sys.fn_cdc_get_min_lsn('{capture_instance}') returned 0x00…: capture instance {capture_instance} of {table} no longer exists, or the login lacks permission to read its change data (it needs SELECT on every captured column of {table}, and membership in the instance's gating role if one was set; see docs/sql.md)")]
    ChangeDataNotReadable {
        table: TableRef,
        capture_instance: String,
    },
    /// One round trip of a statement got no answer within `CDC_SQL_COMMAND_TIMEOUT_SECONDS`
    /// (tiberius drops the connection). Transient: the usual causes — blocking by another
    /// transaction, throttling, a database resuming or failing over — pass, and nothing moved.
    #[error("SQL Server did not answer the {statement} within {timeout:?} (CDC_SQL_COMMAND_TIMEOUT_SECONDS); the connection was dropped and the run will be retried. If the statement was blocked, look for a long transaction holding locks; if it is simply slower than that (a very busy window, a very large table), raise CDC_SQL_COMMAND_TIMEOUT_SECONDS")]
    CommandTimeout {
        /// The statement's short name, e.g. "net changes of dbo_customers".
        statement: String,
        timeout: std::time::Duration,
    },
    #[error(
        "capture instance {capture_instance} of {table} is keyed by unique index {index}, whose \
         column(s) {} allow NULL: net changes never return rows whose key is NULL, so their \
         changes would be lost. Re-enable CDC with @index_name naming a unique index on NOT NULL \
         columns, or on the primary key",
        .columns.join(", ")
    )]
    NullableKey {
        table: TableRef,
        capture_instance: String,
        index: String,
        columns: Vec<String>,
    },
    #[error(
        "key column {column} of {table} has type {type_name}, which the copier cannot page by \
         (supported: the numeric, character, binary, date/time and uniqueidentifier types); \
         enable CDC with @index_name naming a unique index on columns of those types"
    )]
    UnsupportedKey {
        table: TableRef,
        column: String,
        type_name: String,
    },
    /// The transaction holding a keyless table's lock had ended when the load released it:
    /// the server rolled it back at some point, so writers may have committed during the load
    /// and its baseline is not exact. Transient: the load starts again.
    #[error("the transaction holding the table lock of a full load had already ended when the load released it (the server rolled it back), so changes may have committed during the scan; nothing was committed and the load will be retried")]
    LockLost,
    /// The change table's columns are not visible to the login, so their declared types are
    /// unknown. Definite: a grant fixes it.
    #[error(
        "the declared types of column(s) {} of capture instance {capture_instance} of {table} \
         are not visible to this login: it needs VIEW DEFINITION on the change table \
         (GRANT VIEW DEFINITION ON OBJECT::cdc.[{capture_instance}_CT]; \
         sql/grant-managed-identity.sql grants it)",
        .columns.join(", ")
    )]
    ColumnTypesNotVisible {
        table: TableRef,
        capture_instance: String,
        columns: Vec<String>,
    },
    #[error("the watermark table {0} does not exist: run sql/setup.sql (see README, \"The watermark table\")")]
    NoWatermarkTable(String),
    /// The watermark table was created by an older `sql/setup.sql`: a column this version
    /// writes (`last_error`, …) is missing. Definite: the script adds it in place.
    #[error("the watermark table {table} lacks a column this version of cdc-copy uses ({message}): run sql/setup.sql again, it adds the missing columns in place and keeps every watermark (docs/deploy.md)")]
    OutdatedWatermarkTable { table: String, message: String },
    #[error("SQL Server error {number}: {message}")]
    Sql {
        number: u32,
        message: String,
        transient: bool,
    },
    /// The connection failed or dropped (transient): what was being done, and the driver's
    /// or the operating system's error when there is one.
    #[error("connection to SQL Server failed: {message}{}", .source.as_ref().map(|e| format!(": {e}")).unwrap_or_default())]
    Connection {
        message: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// The SQL Server settings cannot work (refused plaintext, bad connection string, TLS
    /// configuration, no credential): definite, fix the settings.
    #[error("SQL Server settings: {0}")]
    Config(String),
    #[error("SQL Server returned something unexpected: {0}")]
    Protocol(String),
    /// Anything else the driver refused (a definite failure).
    #[error("SQL Server driver error: {0}")]
    Driver(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("{0}")]
    Sink(#[source] RowSinkError),
}

impl From<RowSinkError> for CdcError {
    fn from(e: RowSinkError) -> CdcError {
        CdcError::Sink(e)
    }
}

impl CdcError {
    /// A connection failure described by `message` alone.
    pub fn connection(message: impl Into<String>) -> CdcError {
        CdcError::Connection {
            message: message.into(),
            source: None,
        }
    }

    /// A connection failure while doing `message`, caused by `source`.
    pub fn connection_from(
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> CdcError {
        CdcError::Connection {
            message: message.into(),
            source: Some(Box::new(source)),
        }
    }

    pub fn is_transient(&self) -> bool {
        match self {
            CdcError::Sql { transient, .. } => *transient,
            CdcError::Connection { .. }
            | CdcError::CaptureNotStarted { .. }
            | CdcError::CommandTimeout { .. }
            | CdcError::LockLost => true,
            CdcError::Sink(e) => e.is_transient(),
            _ => false,
        }
    }
}

/// Opens sessions; one per concurrently processed table.
#[async_trait]
pub trait CdcSource: Send + Sync {
    async fn session(&self) -> Result<Box<dyn CdcSession>, CdcError>;
}

/// One connection's worth of CDC reads and watermark updates. Each method is one round trip
/// (one statement from `sqlserver::sql`), which is what the zero-change budget counts.
#[async_trait]
pub trait CdcSession: Send {
    /// Every capture instance of `table` in `cdc.change_tables` (at most two), oldest first,
    /// each with its min LSN, key and captured columns and the DDL recorded against it;
    /// [`CdcError::NoCaptureInstance`] when there is none.
    async fn capture_instances(
        &mut self,
        table: &TableRef,
    ) -> Result<Vec<CaptureInstance>, CdcError>;

    /// The capture instance of `table` named `wanted`, or the most recently created one.
    async fn capture_instance(
        &mut self,
        table: &TableRef,
        wanted: Option<&str>,
    ) -> Result<CaptureInstance, CdcError> {
        let instances = self.capture_instances(table).await?;
        let found = match wanted {
            Some(name) => instances.into_iter().find(|i| i.name == name),
            None => instances.into_iter().last(),
        };
        found.ok_or_else(|| CdcError::NoCaptureInstance {
            table: table.clone(),
            wanted: wanted.map(str::to_string),
        })
    }

    /// Max LSN, its time, the server offset, the LSN at `at` (UTC, converted to the
    /// server's zone by the implementation) and the last drained log scan, in one round trip.
    async fn capture_progress(&mut self, at: DateTime<Utc>) -> Result<CaptureProgress, CdcError>;

    /// `sys.fn_cdc_get_max_lsn()` alone: the full load's baseline. `None` (SQL NULL) until
    /// the capture process has written its first `cdc.lsn_time_mapping` row.
    async fn max_lsn(&mut self) -> Result<Option<Lsn>, CdcError>;

    /// Streams the net changes in `range` into `sink`, ordered by `__$start_lsn` then key;
    /// returns the rows sent.
    async fn net_changes(
        &mut self,
        ci: &CaptureInstance,
        range: LsnRange,
        filter: RowFilter,
        sink: &mut dyn RowSink,
    ) -> Result<u64, CdcError>;

    /// Streams every change in `range` into `sink` (`cdc.fn_cdc_get_all_changes_<ci>`),
    /// ordered by `__$start_lsn`, `__$seqval`, `__$operation`, with `__$seqval` after
    /// `__$start_lsn`; returns the rows sent.
    async fn all_changes(
        &mut self,
        ci: &CaptureInstance,
        range: LsnRange,
        filter: AllRowFilter,
        sink: &mut dyn RowSink,
    ) -> Result<u64, CdcError>;

    /// Begins a transaction that holds a shared lock on the whole table until
    /// [`CdcSession::release_lock`] (writers wait), and streams every row of it into `sink`
    /// in one statement: the full load of a table without a key, which cannot page.
    async fn scan_locked(
        &mut self,
        ci: &CaptureInstance,
        sink: &mut dyn RowSink,
    ) -> Result<u64, CdcError>;

    /// Ends the transaction [`CdcSession::scan_locked`] began, releasing the table lock.
    async fn release_lock(&mut self) -> Result<(), CdcError>;

    /// Streams up to `limit` rows of the table in key order, starting after `after` and
    /// ending at `upto` included (key tuples in `ci.key_columns` order), into `sink`; returns
    /// the rows sent and the key of the last one.
    async fn scan(
        &mut self,
        ci: &CaptureInstance,
        after: Option<&[Value]>,
        upto: Option<&[Value]>,
        limit: u64,
        sink: &mut dyn RowSink,
    ) -> Result<(u64, Option<Vec<Value>>), CdcError>;

    /// The table's approximate row count (`sql::TABLE_ROWS`); 0 when the server cannot say.
    async fn table_rows(&mut self, table: &TableRef) -> Result<u64, CdcError>;

    /// A page-level sample of about `percent` % of the table's keys, in the server's key
    /// order (`sql::SAMPLE_KEYS`): where a parallel load cuts its ranges.
    async fn sample_keys(
        &mut self,
        ci: &CaptureInstance,
        percent: f64,
    ) -> Result<Vec<Vec<Value>>, CdcError>;

    /// The ranges of load `load_id` of `table`, in range order.
    async fn read_ranges(
        &mut self,
        table: &TableRef,
        load_id: &str,
    ) -> Result<Vec<RangeProgress>, CdcError>;

    /// Inserts a load's range plan (all rows of one `table` and `load_id`) unless that load
    /// has ranges already, in one statement; `false` if it had (another run planned it).
    async fn insert_ranges(&mut self, rows: &[RangeProgress]) -> Result<bool, CdcError>;

    /// Replaces a range's checkpoint if its version is still `expected_version`; `false` if
    /// another worker moved it.
    async fn update_range(
        &mut self,
        expected_version: i64,
        row: &RangeProgress,
    ) -> Result<bool, CdcError>;

    /// Deletes the range rows of `table`'s loads other than `keep`.
    async fn delete_other_ranges(&mut self, table: &TableRef, keep: &str) -> Result<(), CdcError>;

    async fn read_watermark(&mut self, table: &TableRef) -> Result<Option<Watermark>, CdcError>;

    /// Inserts a new row; `false` if one exists already (another run won).
    async fn insert_watermark(&mut self, row: &Watermark) -> Result<bool, CdcError>;

    /// Replaces the row if its version is still `expected_version` (and sets
    /// `row.version`, which the caller sets to expected + 1); `false` if it moved.
    async fn update_watermark(
        &mut self,
        expected_version: i64,
        row: &Watermark,
    ) -> Result<bool, CdcError>;

    /// Records on the table's watermark row why its copy failed, and when; `None` clears it.
    /// Leaves the version alone (the error is for people, not for runs), and a successful
    /// [`CdcSession::update_watermark`] clears it too. No row: nothing to record it on.
    async fn set_last_error(
        &mut self,
        table: &TableRef,
        error: Option<&LastError>,
    ) -> Result<(), CdcError>;

    /// The error [`CdcSession::set_last_error`] recorded and no run has cleared since.
    async fn last_error(&mut self, table: &TableRef) -> Result<Option<LastError>, CdcError>;
}

/// Why a table's last copy failed (`cdc_copy.watermark.last_error`, `last_error_at`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastError {
    /// The failure as reported (at most 4000 characters, the column's size).
    pub message: String,
    pub at: DateTime<Utc>,
}

impl LastError {
    /// `message` cut to the column's 4000 characters.
    pub fn new(message: &str, at: DateTime<Utc>) -> LastError {
        const COLUMN_CHARS: usize = 4000;
        LastError {
            message: message.chars().take(COLUMN_CHARS).collect(),
            at,
        }
    }
}

/// A [`RowSink`] that keeps everything in memory: for tests and small result sets only (the
/// jobs stream into blobs instead).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct VecSink {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Value>>,
}

#[async_trait]
impl RowSink for VecSink {
    async fn columns(&mut self, names: &[String]) -> Result<(), RowSinkError> {
        self.columns = names.to_vec();
        Ok(())
    }

    async fn row(&mut self, row: &[Value]) -> Result<(), RowSinkError> {
        self.rows.push(row.to_vec());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn customers() -> TableRef {
        TableRef::parse("dbo.customers").unwrap()
    }

    /// The errors of issue 9: which side of the retry line each is on, and the words an
    /// operator needs in it.
    #[test]
    fn first_run_timeout_and_permission_errors_say_what_happened() {
        let cases: Vec<(CdcError, bool, Vec<&str>)> = vec![
            (
                CdcError::CaptureNotStarted {
                    table: customers(),
                    evidence: "capture instance dbo_customers has no start_lsn".into(),
                    database: "shop".into(),
                },
                true,
                vec![
                    "dbo.customers",
                    "no start_lsn",
                    "SQL Server Agent job cdc.shop_capture",
                    "Azure SQL Database",
                    "every 20 seconds",
                    "Retry in a minute",
                ],
            ),
            (
                CdcError::CommandTimeout {
                    statement: "keyset page of dbo.customers".into(),
                    timeout: std::time::Duration::from_secs(300),
                },
                true,
                vec![
                    "keyset page of dbo.customers",
                    "300s",
                    "CDC_SQL_COMMAND_TIMEOUT_SECONDS",
                ],
            ),
            (
                CdcError::ChangeDataNotReadable {
                    table: customers(),
                    capture_instance: "dbo_customers".into(),
                },
                false,
                vec!["0x00", "no longer exists", "or the login lacks permission"],
            ),
            (
                CdcError::NoCaptureInstance {
                    table: customers(),
                    wanted: None,
                },
                false,
                vec!["sys.sp_cdc_enable_table", "this login can see", "SELECT"],
            ),
        ];
        for (error, transient, words) in cases {
            assert_eq!(error.is_transient(), transient, "{error}");
            let text = error.to_string();
            for word in words {
                assert!(text.contains(word), "{word:?} missing from {text}");
            }
            assert!(!text.contains("cleaned up"), "{text}");
        }
    }
}

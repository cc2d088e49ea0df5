//! [`CdcSession`] over one tiberius connection: one statement, one round trip per method.
//!
//! The zero-change incremental run costs five round trips (capture instance, watermark,
//! capture progress, net changes, watermark update); each method here sends exactly one request
//! from [`super::sql`] (or none, when the answer is known without asking, such as an empty
//! LSN range), and a second only to explain a failure: a range the CDC functions refuse is
//! checked against a fresh `sys.fn_cdc_get_min_lsn`, so a cleanup that raced the run gets the
//! cleanup message. Every statement has a short name ("net changes of dbo_customers") that a
//! command timeout's error carries together with the setting that bounds it. Row results are
//! pushed into the [`RowSink`] as they are decoded, one row at a time, so memory does not grow
//! with the window or the table.

use chrono::{DateTime, FixedOffset, NaiveDateTime, Utc};
use futures::TryStreamExt;
use tiberius::{ColumnData, ColumnType, QueryItem, Row, ToSql};

use async_trait::async_trait;

use crate::cdc::columns::{self, CapturedColumnRow, ColumnsError, KeyColumnRow};
use crate::cdc::{
    AllRowFilter, CaptureInstance, CaptureProgress, CdcError, CdcSession, DdlEvent,
    FullLoadProgress, LastError, Lsn, LsnRange, NameError, RangeProgress, RowFilter, RowSink,
    ScanMark, TableRef, TableState, Value, VecSink, Watermark, Window,
};

use super::connection::{map_error, SqlClient};
use super::decode::{lsn_param, opt_lsn_param, to_param, to_value};
use super::sql;
use crate::config::CommandTimeout;

/// Primary-key / unique-index violations: another run inserted the watermark row first.
const DUPLICATE_KEY_ERRORS: [u32; 2] = [2627, 2601];
/// "Invalid object name": the watermark table is missing. The per-function pages of the CDC
/// table-valued functions also give 208 for a range they refuse.
const INVALID_OBJECT_NAME: u32 = 208;
/// "Invalid column name '%.*ls'."
/// <https://learn.microsoft.com/sql/relational-databases/errors-events/database-engine-events-and-errors-0-to-999>
const INVALID_COLUMN_NAME: u32 = 207;
/// What the CDC table-valued functions raise for an LSN range outside the validity interval
/// according to "Work with change data" (the message, "An insufficient number of arguments
/// were supplied…", is misleading). The per-function pages say 208 instead: both are handled.
const CDC_BAD_RANGE: u32 = 313;

/// One connection's CDC reads and watermark updates.
pub struct SqlServerSession {
    client: SqlClient,
    watermark_table: TableRef,
    /// The connection's bound per round trip, named in a timeout's error.
    command_timeout: CommandTimeout,
}

/// What a failing statement was doing, to turn a bare server number (or a timeout) into a
/// useful error. Each carries the statement's short name for messages.
enum Context<'a> {
    Plain(String),
    Watermark(&'static str),
    /// A statement on the range table (`sql::range_table`) of a parallel full load.
    Ranges(&'static str),
    NetChanges {
        ci: &'a CaptureInstance,
        from: Lsn,
        to: Lsn,
    },
    AllChanges {
        ci: &'a CaptureInstance,
        from: Lsn,
        to: Lsn,
    },
}

impl Context<'_> {
    /// The statement's short name, e.g. "keyset page of dbo.customers".
    fn statement(&self) -> String {
        match self {
            Context::Plain(name) => name.clone(),
            Context::Watermark(name) | Context::Ranges(name) => name.to_string(),
            Context::NetChanges { ci, .. } => format!("net changes of {}", ci.name),
            Context::AllChanges { ci, .. } => format!("all changes of {}", ci.name),
        }
    }
}

fn name_error(what: &str, error: NameError) -> CdcError {
    CdcError::Config(format!("{what}: {error}"))
}

fn params_ref<'a>(params: &'a [ColumnData<'static>]) -> Vec<&'a dyn ToSql> {
    params.iter().map(|p| p as &dyn ToSql).collect()
}

fn column<'a, T: tiberius::FromSql<'a>>(row: &'a Row, name: &str) -> Result<Option<T>, CdcError> {
    row.try_get::<T, _>(name)
        .map_err(|e| CdcError::Protocol(format!("column {name}: {e}")))
}

fn required<'a, T: tiberius::FromSql<'a>>(row: &'a Row, name: &str) -> Result<T, CdcError> {
    column(row, name)?.ok_or_else(|| CdcError::Protocol(format!("column {name} is NULL")))
}

fn lsn_column(row: &Row, name: &str) -> Result<Option<Lsn>, CdcError> {
    column::<&[u8]>(row, name)?
        .map(|bytes| {
            Lsn::from_bytes(bytes).map_err(|e| CdcError::Protocol(format!("column {name}: {e}")))
        })
        .transpose()
}

/// One row of `CAPTURE_INSTANCES` result set 2, as the catalog gave it.
fn key_column_row(row: &Row) -> Result<KeyColumnRow, CdcError> {
    Ok(KeyColumnRow {
        column_name: required::<&str>(row, "column_name")?.to_string(),
        system_type: column::<&str>(row, "system_type_name")?.map(str::to_string),
        type_name: required::<&str>(row, "type_name")?.to_string(),
        max_length: required(row, "max_length")?,
        precision: required(row, "precision")?,
        scale: required(row, "scale")?,
        collation_name: column::<&str>(row, "collation_name")?.map(str::to_string),
        is_nullable: required(row, "is_nullable")?,
    })
}

/// One row of `CAPTURE_INSTANCES` result set 3: the type columns are NULL when the change
/// table's metadata is not visible to the login.
fn captured_column_row(row: &Row) -> Result<CapturedColumnRow, CdcError> {
    let name = required::<&str>(row, "column_name")?;
    Ok(CapturedColumnRow {
        column_name: name.to_string(),
        is_computed: required::<bool>(row, "is_computed")?,
        system_type: column::<&str>(row, "system_type_name")?.map(str::to_string),
        type_name: column::<&str>(row, "type_name")?
            .unwrap_or_default()
            .to_string(),
        max_length: column(row, "max_length")?,
        precision: column(row, "precision")?.unwrap_or(0),
        scale: column(row, "scale")?.unwrap_or(0),
        collation_name: column::<&str>(row, "collation_name")?.map(str::to_string),
        is_nullable: column(row, "is_nullable")?.unwrap_or(true),
    })
}

/// A refused column description, with the table, instance and index it belongs to.
fn columns_error(
    error: ColumnsError,
    table: &TableRef,
    capture_instance: &str,
    index: Option<&str>,
) -> CdcError {
    match error {
        ColumnsError::NullableKey(columns) => CdcError::NullableKey {
            table: table.clone(),
            capture_instance: capture_instance.to_string(),
            index: index.unwrap_or("(primary key)").to_string(),
            columns,
        },
        ColumnsError::UnsupportedKey { column, type_name } => CdcError::UnsupportedKey {
            table: table.clone(),
            column,
            type_name,
        },
        ColumnsError::TypesNotVisible(columns) => CdcError::ColumnTypesNotVisible {
            table: table.clone(),
            capture_instance: capture_instance.to_string(),
            columns,
        },
        ColumnsError::KeyCollation { column, collation } => CdcError::Protocol(format!(
            "key column {column} of {table} reports collation {collation:?}, which is not a \
             collation name"
        )),
    }
}

fn utc(naive: NaiveDateTime) -> DateTime<Utc> {
    naive.and_utc()
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl SqlServerSession {
    pub fn new(
        client: SqlClient,
        watermark_table: TableRef,
        command_timeout: CommandTimeout,
    ) -> SqlServerSession {
        SqlServerSession {
            client,
            watermark_table,
            command_timeout,
        }
    }

    /// `template` for the range table next to the watermark table.
    fn range_statement(&self, template: &str) -> Result<String, CdcError> {
        sql::ranges_statement(template, &self.watermark_table)
            .map_err(|e| name_error("watermark table", e))
    }

    fn error(&self, error: tiberius::error::Error, context: Context<'_>) -> CdcError {
        classify(&self.watermark_table, self.command_timeout, error, context)
    }
}

fn classify(
    watermark_table: &TableRef,
    command_timeout: CommandTimeout,
    error: tiberius::error::Error,
    context: Context<'_>,
) -> CdcError {
    // tiberius's command timeout: a round trip got no answer in time.
    if let tiberius::error::Error::Io {
        kind: std::io::ErrorKind::TimedOut,
        ..
    } = &error
    {
        return CdcError::CommandTimeout {
            statement: context.statement(),
            timeout: command_timeout.duration(),
        };
    }
    let mapped = map_error(error);
    let (number, message) = match &mapped {
        CdcError::Sql {
            number, message, ..
        } => (*number, message.clone()),
        _ => return mapped,
    };
    match (context, number) {
        (Context::Watermark(_), INVALID_OBJECT_NAME) => {
            CdcError::NoWatermarkTable(watermark_table.to_string())
        }
        (Context::Ranges(_), INVALID_OBJECT_NAME) => {
            CdcError::NoWatermarkTable(sql::range_table(watermark_table).to_string())
        }
        (Context::Watermark(_), INVALID_COLUMN_NAME) => CdcError::OutdatedWatermarkTable {
            table: watermark_table.to_string(),
            message,
        },
        (
            Context::NetChanges { ci, from, .. } | Context::AllChanges { ci, from, .. },
            CDC_BAD_RANGE | INVALID_OBJECT_NAME,
        ) if from < ci.min_lsn => CdcError::LsnNotAvailable {
            table: ci.table.clone(),
            capture_instance: ci.name.clone(),
            requested: from,
            minimum: ci.min_lsn,
        },
        (
            Context::NetChanges { ci, from, to } | Context::AllChanges { ci, from, to },
            CDC_BAD_RANGE | INVALID_OBJECT_NAME,
        ) => CdcError::Sql {
            number,
            message: format!(
                "the LSN range [{from}, {to}] is outside the validity interval of capture \
                     instance {} (SQL Server reports this as Msg 313, \"insufficient number \
                     of arguments\", or Msg 208): the changes were cleaned up, the range is \
                     beyond sys.fn_cdc_get_max_lsn(), or the instance was disabled",
                ci.name
            ),
            transient: false,
        },
        _ => mapped,
    }
}

impl SqlServerSession {
    /// Runs a statement and collects its (small) result sets.
    async fn results(
        &mut self,
        statement: &str,
        params: &[ColumnData<'static>],
        context: Context<'_>,
    ) -> Result<Vec<Vec<Row>>, CdcError> {
        let outcome = async {
            self.client
                .query(statement, &params_ref(params))
                .await?
                .into_results()
                .await
        }
        .await;
        outcome.map_err(|e| self.error(e, context))
    }

    async fn first_row(
        &mut self,
        statement: &str,
        params: &[ColumnData<'static>],
        context: Context<'_>,
    ) -> Result<Option<Row>, CdcError> {
        Ok(self
            .results(statement, params, context)
            .await?
            .into_iter()
            .next()
            .and_then(|rows| rows.into_iter().next()))
    }

    async fn single_row(
        &mut self,
        name: &str,
        statement: &str,
        params: &[ColumnData<'static>],
    ) -> Result<Row, CdcError> {
        self.first_row(statement, params, Context::Plain(name.to_string()))
            .await?
            .ok_or_else(|| CdcError::Protocol(format!("no row returned by: {statement}")))
    }

    /// Runs a DML statement; its total row count.
    async fn execute(
        &mut self,
        statement: &str,
        params: &[ColumnData<'static>],
    ) -> Result<u64, tiberius::error::Error> {
        Ok(self
            .client
            .execute(statement, &params_ref(params))
            .await?
            .total())
    }

    /// Streams every row of `statement` into `sink`; returns the rows sent and, when
    /// `key_columns` is given, the values of those columns in the last row.
    async fn stream_rows(
        &mut self,
        statement: &str,
        params: &[ColumnData<'static>],
        key_columns: Option<&[String]>,
        sink: &mut dyn RowSink,
        context: Context<'_>,
    ) -> Result<(u64, Option<Vec<Value>>), CdcError> {
        let (watermark_table, timeout) = (&self.watermark_table, self.command_timeout);
        // Without parameters the statement goes as a SQL batch: a transaction it opens then
        // stays open after it (`SCAN_LOCKED`), which it would not inside `sp_executesql`.
        let started = if params.is_empty() {
            self.client.simple_query(statement).await
        } else {
            self.client.query(statement, &params_ref(params)).await
        };
        let mut stream = match started {
            Ok(stream) => stream,
            Err(e) => return Err(classify(watermark_table, timeout, e, context)),
        };
        let mut types: Vec<ColumnType> = Vec::new();
        let mut key_index: Vec<usize> = Vec::new();
        // One row buffer for the whole result: each row's values replace the last one's, so
        // a row costs no allocation of ours, and the last row is still there at the end.
        let mut values: Vec<Value> = Vec::new();
        let mut sent = 0u64;
        loop {
            let item = match stream.try_next().await {
                Ok(Some(item)) => item,
                Ok(None) => break,
                Err(e) => {
                    return Err(classify(watermark_table, timeout, e, context));
                }
            };
            match item {
                QueryItem::Metadata(meta) => {
                    let names: Vec<String> = meta
                        .columns()
                        .iter()
                        .map(|c| c.name().to_string())
                        .collect();
                    types = meta.columns().iter().map(|c| c.column_type()).collect();
                    if let Some(keys) = key_columns {
                        key_index = keys
                            .iter()
                            .map(|key| {
                                names
                                    .iter()
                                    .position(|n| n.eq_ignore_ascii_case(key))
                                    .ok_or_else(|| {
                                        CdcError::Protocol(format!(
                                            "key column {key} is not in the result"
                                        ))
                                    })
                            })
                            .collect::<Result<_, _>>()?;
                    }
                    sink.columns(&names).await?;
                }
                QueryItem::Row(row) => {
                    values.clear();
                    let types = types
                        .iter()
                        .copied()
                        .chain(std::iter::repeat(ColumnType::Null));
                    for (data, ty) in row.into_iter().zip(types) {
                        values.push(to_value(data, ty).map_err(CdcError::Protocol)?);
                    }
                    sink.row(&values).await?;
                    sent += 1;
                }
            }
        }
        // The resume key comes from the last row only: no per-row key copies.
        let last_key = match key_columns {
            Some(_) if sent > 0 => Some(key_index.iter().map(|i| values[*i].clone()).collect()),
            _ => None,
        };
        Ok((sent, last_key))
    }
}

impl SqlServerSession {
    /// Streams the rows of `statement`, a CDC function of `ci` over `range` with row filter
    /// `filter`; a refused range (Msg 313 or 208) is explained against a fresh min LSN.
    async fn stream_changes(
        &mut self,
        statement: &str,
        ci: &CaptureInstance,
        range: LsnRange,
        filter: &str,
        sink: &mut dyn RowSink,
        context: Context<'_>,
    ) -> Result<u64, CdcError> {
        let (from, to) = (range.from(), range.to());
        let params = [lsn_param(&from), lsn_param(&to), text(filter)];
        let statement_name = context.statement();
        let streamed = self
            .stream_rows(statement, &params, None, sink, context)
            .await;
        let (sent, _) = match streamed {
            Err(
                refused @ CdcError::Sql {
                    number: CDC_BAD_RANGE | INVALID_OBJECT_NAME,
                    ..
                },
            ) => return Err(self.explain_refused_range(ci, from, refused).await),
            other => other?,
        };
        tracing::debug!(statement = %statement_name, %from, %to, rows = sent, "streamed changes");
        Ok(sent)
    }

    /// A CDC function refused `[from, …]` (Msg 313 or 208). The min LSN read with the
    /// capture instance may be stale — a cleanup may have run since — so it is read again:
    /// below the fresh minimum the changes are gone and the run says so in full; 0x00… means
    /// the instance is gone or the login may not read it; otherwise `refused` stands.
    async fn explain_refused_range(
        &mut self,
        ci: &CaptureInstance,
        from: Lsn,
        refused: CdcError,
    ) -> CdcError {
        let name = format!("min LSN of {}", ci.name);
        let fresh = match self
            .single_row(&name, sql::GET_MIN_LSN, &[text(&ci.name)])
            .await
            .and_then(|row| lsn_column(&row, "min_lsn"))
        {
            Ok(fresh) => fresh.unwrap_or(Lsn::ZERO),
            Err(e) => {
                tracing::warn!(capture_instance = %ci.name, error = %e, "could not re-read the min LSN");
                return refused;
            }
        };
        if fresh == Lsn::ZERO {
            return CdcError::ChangeDataNotReadable {
                table: ci.table.clone(),
                capture_instance: ci.name.clone(),
            };
        }
        if from < fresh {
            return CdcError::LsnNotAvailable {
                table: ci.table.clone(),
                capture_instance: ci.name.clone(),
                requested: from,
                minimum: fresh,
            };
        }
        refused
    }
}

fn owned_param<T: ToSql>(value: &T) -> ColumnData<'static> {
    match value.to_sql() {
        ColumnData::DateTime2(v) => ColumnData::DateTime2(v),
        ColumnData::DateTimeOffset(v) => ColumnData::DateTimeOffset(v),
        ColumnData::DateTime(v) => ColumnData::DateTime(v),
        other => unreachable!("not a date/time parameter: {other:?}"),
    }
}

fn text(value: &str) -> ColumnData<'static> {
    ColumnData::String(Some(value.to_string().into()))
}

fn opt_text(value: Option<&str>) -> ColumnData<'static> {
    ColumnData::String(value.map(|v| v.to_string().into()))
}

fn datetime2(value: &DateTime<Utc>) -> ColumnData<'static> {
    owned_param(&value.naive_utc())
}

/// `@P1…@P17` of the insert and update statements, in [`sql::WATERMARK_COLUMNS`] order.
fn watermark_params(row: &Watermark) -> Result<Vec<ColumnData<'static>>, CdcError> {
    let (pending, full) = match &row.state {
        TableState::Ready => (None, None),
        TableState::Pending(window) => (Some(window), None),
        TableState::Loading(progress) => (None, Some(progress)),
    };
    let last_key = full
        .and_then(|f| f.last_key.as_ref())
        .map(serde_json::to_string)
        .transpose()
        .map_err(|e| CdcError::Protocol(format!("full-load key as JSON: {e}")))?;
    Ok(vec![
        text(&row.table.schema),
        text(&row.table.table),
        text(&row.capture_instance),
        lsn_param(&row.last_lsn),
        datetime2(&row.last_window_end),
        opt_lsn_param(pending.map(|p| p.range.to()).as_ref()),
        match pending {
            Some(p) => datetime2(&p.end),
            None => ColumnData::DateTime2(None),
        },
        opt_text(pending.map(|p| p.blob.as_str())),
        opt_text(full.map(|f| f.load_id.as_str())),
        opt_lsn_param(full.map(|f| &f.baseline_lsn)),
        ColumnData::I32(full.map(|f| i32::try_from(f.parts_done).unwrap_or(i32::MAX))),
        ColumnData::String(last_key.map(Into::into)),
        ColumnData::I64(full.map(|f| to_i64(f.rows_done))),
        ColumnData::I64(Some(to_i64(row.rows_copied))),
        ColumnData::I64(Some(to_i64(row.bytes_copied))),
        ColumnData::I64(Some(row.version)),
        datetime2(&row.updated_at),
    ])
}

/// A key tuple as parameters, each cast to its key column's type; none for `None`.
fn key_params(
    ci: &CaptureInstance,
    what: &str,
    key: Option<&[Value]>,
) -> Result<Vec<ColumnData<'static>>, CdcError> {
    key.unwrap_or_default()
        .iter()
        .zip(&ci.key_columns)
        .map(|(value, key)| {
            to_param(value, &key.ty).map_err(|e| {
                CdcError::Protocol(format!("{what} of {}: column {}: {e}", ci.table, key.name))
            })
        })
        .collect()
}

fn key_json(key: Option<&Vec<Value>>, what: &str) -> Result<ColumnData<'static>, CdcError> {
    let json = key
        .map(serde_json::to_string)
        .transpose()
        .map_err(|e| CdcError::Protocol(format!("{what} as JSON: {e}")))?;
    Ok(ColumnData::String(json.map(Into::into)))
}

fn key_column(row: &Row, name: &str) -> Result<Option<Vec<Value>>, CdcError> {
    column::<&str>(row, name)?
        .map(serde_json::from_str::<Vec<Value>>)
        .transpose()
        .map_err(|e| CdcError::Protocol(format!("{name}: {e}")))
}

/// `@P1…@P13` of the range insert and update, in [`sql::RANGE_COLUMNS`] order.
fn range_params(row: &RangeProgress) -> Result<Vec<ColumnData<'static>>, CdcError> {
    Ok(vec![
        text(&row.table.schema),
        text(&row.table.table),
        text(&row.load_id),
        ColumnData::I32(Some(i32::try_from(row.range).unwrap_or(i32::MAX))),
        key_json(row.after.as_ref(), "range start")?,
        key_json(row.upto.as_ref(), "range end")?,
        ColumnData::I32(Some(i32::try_from(row.parts_done).unwrap_or(i32::MAX))),
        key_json(row.last_key.as_ref(), "range checkpoint")?,
        ColumnData::I64(Some(to_i64(row.rows_done))),
        ColumnData::I64(Some(to_i64(row.bytes_done))),
        ColumnData::Bit(Some(row.done)),
        ColumnData::I64(Some(row.version)),
        datetime2(&row.updated_at),
    ])
}

fn range_from_row(row: &Row) -> Result<RangeProgress, CdcError> {
    Ok(RangeProgress {
        table: TableRef {
            schema: required::<&str>(row, "schema_name")?.to_string(),
            table: required::<&str>(row, "table_name")?.to_string(),
        },
        load_id: required::<&str>(row, "load_id")?.to_string(),
        range: required::<i32>(row, "range_no")?.max(0) as u32,
        after: key_column(row, "after_key")?,
        upto: key_column(row, "upto_key")?,
        parts_done: required::<i32>(row, "parts_done")?.max(0) as u32,
        last_key: key_column(row, "last_key")?,
        rows_done: required::<i64>(row, "rows_done")?.max(0) as u64,
        bytes_done: required::<i64>(row, "bytes_done")?.max(0) as u64,
        done: required::<bool>(row, "done")?,
        version: required::<i64>(row, "version")?,
        updated_at: utc(required(row, "updated_at")?),
    })
}

fn watermark_from_row(row: &Row) -> Result<Watermark, CdcError> {
    let last_lsn = lsn_column(row, "last_lsn")?
        .ok_or_else(|| CdcError::Protocol("last_lsn is NULL".into()))?;
    let last_window_end = utc(required(row, "last_window_end")?);
    let pending = match lsn_column(row, "pending_to_lsn")? {
        Some(to_lsn) => Some(Window {
            range: LsnRange::after(last_lsn, to_lsn).ok_or_else(|| {
                CdcError::Protocol(format!(
                    "pending_to_lsn {to_lsn} is not after last_lsn {last_lsn}: the pending window is empty"
                ))
            })?,
            start: last_window_end,
            end: utc(required(row, "pending_window_end")?),
            blob: required::<&str>(row, "pending_blob")?.to_string(),
        }),
        None => None,
    };
    let full_load = match column::<&str>(row, "full_load_id")? {
        Some(load_id) => Some(FullLoadProgress {
            load_id: load_id.to_string(),
            baseline_lsn: lsn_column(row, "full_load_baseline_lsn")?.ok_or_else(|| {
                CdcError::Protocol("full_load_baseline_lsn is NULL during a full load".into())
            })?,
            parts_done: column::<i32>(row, "full_load_parts")?.unwrap_or(0).max(0) as u32,
            last_key: column::<&str>(row, "full_load_last_key")?
                .map(serde_json::from_str::<Vec<Value>>)
                .transpose()
                .map_err(|e| CdcError::Protocol(format!("full_load_last_key: {e}")))?,
            rows_done: column::<i64>(row, "full_load_rows")?.unwrap_or(0).max(0) as u64,
        }),
        None => None,
    };
    let state = match (pending, full_load) {
        (None, None) => TableState::Ready,
        (Some(window), None) => TableState::Pending(window),
        (None, Some(progress)) => TableState::Loading(progress),
        (Some(_), Some(_)) => {
            return Err(CdcError::Protocol(
                "the watermark row has both a pending window and a full load in progress".into(),
            ))
        }
    };
    Ok(Watermark {
        table: TableRef {
            schema: required::<&str>(row, "schema_name")?.to_string(),
            table: required::<&str>(row, "table_name")?.to_string(),
        },
        capture_instance: required::<&str>(row, "capture_instance")?.to_string(),
        last_lsn,
        last_window_end,
        state,
        rows_copied: required::<i64>(row, "rows_copied")?.max(0) as u64,
        bytes_copied: required::<i64>(row, "bytes_copied")?.max(0) as u64,
        version: required(row, "version")?,
        updated_at: utc(required(row, "updated_at")?),
    })
}

/// One capture instance from its `CAPTURE_INSTANCES` rows (set 1's `row`, and the rows of
/// sets 2–4 that name it).
fn describe_instance(
    row: &Row,
    keys: &[Row],
    captured: &[Row],
    ddl: &[Row],
) -> Result<CaptureInstance, CdcError> {
    // From here on the name is one SQL Server returned, not configuration; it is still
    // checked against the identifier rules before it is ever spliced into a statement.
    let name = required::<&str>(row, "capture_instance")?.to_string();
    crate::cdc::validate_identifier(&name).map_err(|e| name_error("capture instance", e))?;
    let source = TableRef {
        schema: required::<&str>(row, "schema_name")?.to_string(),
        table: required::<&str>(row, "table_name")?.to_string(),
    };
    let of_instance =
        |r: &&Row| column::<&str>(r, "capture_instance").ok().flatten() == Some(name.as_str());
    let key_rows = keys
        .iter()
        .filter(of_instance)
        .map(key_column_row)
        .collect::<Result<Vec<_>, _>>()?;
    let captured_rows = captured
        .iter()
        .filter(of_instance)
        .map(captured_column_row)
        .collect::<Result<Vec<_>, CdcError>>()?;
    let ddl = ddl
        .iter()
        .filter(of_instance)
        .map(|r| {
            Ok(DdlEvent {
                command: column::<&str>(r, "ddl_command")?
                    .unwrap_or_default()
                    .to_string(),
                lsn: lsn_column(r, "ddl_lsn")?.unwrap_or(Lsn::ZERO),
                time: required(r, "ddl_time")?,
            })
        })
        .collect::<Result<Vec<_>, CdcError>>()?;
    let index = column::<&str>(row, "index_name")?.map(str::to_string);
    let described = columns::describe(&key_rows, &captured_rows)
        .map_err(|e| columns_error(e, &source, &name, index.as_deref()))?;
    let min_lsn = lsn_column(row, "min_lsn")?.unwrap_or(Lsn::ZERO);
    let start_lsn = lsn_column(row, "start_lsn")?;
    if start_lsn.is_some() && min_lsn == Lsn::ZERO {
        // The instance has a validity interval, but the function will not show it to us.
        return Err(CdcError::ChangeDataNotReadable {
            table: source,
            capture_instance: name,
        });
    }
    Ok(CaptureInstance {
        table: source,
        min_lsn,
        start_lsn,
        name,
        supports_net_changes: required::<bool>(row, "supports_net_changes")?,
        key_columns: described.key,
        columns: described.captured,
        ddl,
    })
}

#[async_trait]
impl CdcSession for SqlServerSession {
    async fn capture_instances(
        &mut self,
        table: &TableRef,
    ) -> Result<Vec<CaptureInstance>, CdcError> {
        crate::cdc::validate_identifier(&table.schema)
            .and_then(|_| crate::cdc::validate_identifier(&table.table))
            .map_err(|e| name_error("source table", e))?;
        let mut sets = self
            .results(
                sql::CAPTURE_INSTANCES,
                &[text(&table.quoted())],
                Context::Plain(format!("capture instances of {table}")),
            )
            .await?
            .into_iter();
        let instances = sets.next().unwrap_or_default();
        let keys = sets.next().unwrap_or_default();
        let captured = sets.next().unwrap_or_default();
        let ddl = sets.next().unwrap_or_default();
        if instances.is_empty() {
            return Err(CdcError::NoCaptureInstance {
                table: table.clone(),
                wanted: None,
            });
        }
        // The statement lists the newest first; callers get them oldest first.
        let mut described = instances
            .iter()
            .rev()
            .map(|row| describe_instance(row, &keys, &captured, &ddl))
            .collect::<Result<Vec<_>, _>>()?;
        described.shrink_to_fit();
        Ok(described)
    }

    async fn capture_progress(&mut self, at: DateTime<Utc>) -> Result<CaptureProgress, CdcError> {
        let at: DateTime<FixedOffset> = at.fixed_offset();
        let row = self
            .single_row(
                "capture progress",
                sql::CAPTURE_PROGRESS,
                &[owned_param(&at)],
            )
            .await?;
        Ok(CaptureProgress {
            max_lsn: lsn_column(&row, "max_lsn")?.unwrap_or(Lsn::ZERO),
            max_lsn_time: column::<DateTime<FixedOffset>>(&row, "max_lsn_time")?
                .map(|t| t.with_timezone(&Utc)),
            lsn_at: lsn_column(&row, "lsn_at")?,
            server_utc_offset_minutes: required(&row, "server_utc_offset_minutes")?,
            drained_since: column::<DateTime<FixedOffset>>(&row, "drained_since")?
                .map(|t| t.with_timezone(&Utc)),
            newest_scan: match (
                column::<i32>(&row, "newest_scan_session_id")?,
                column::<i32>(&row, "newest_scan_empty_scans")?,
            ) {
                (Some(session_id), Some(empty_scans)) => Some(ScanMark {
                    session_id,
                    empty_scans,
                }),
                _ => None,
            },
            server_now: required::<DateTime<FixedOffset>>(&row, "server_now")?.with_timezone(&Utc),
        })
    }

    async fn max_lsn(&mut self) -> Result<Option<Lsn>, CdcError> {
        let row = self.single_row("max LSN", sql::GET_MAX_LSN, &[]).await?;
        lsn_column(&row, "max_lsn")
    }

    async fn net_changes(
        &mut self,
        ci: &CaptureInstance,
        range: LsnRange,
        filter: RowFilter,
        sink: &mut dyn RowSink,
    ) -> Result<u64, CdcError> {
        let statement = sql::net_changes(&ci.name, &ci.key_columns, &ci.columns)
            .map_err(|e| name_error("capture instance or its columns", e))?;
        let context = Context::NetChanges {
            ci,
            from: range.from(),
            to: range.to(),
        };
        self.stream_changes(&statement, ci, range, filter.as_sql(), sink, context)
            .await
    }

    async fn all_changes(
        &mut self,
        ci: &CaptureInstance,
        range: LsnRange,
        filter: AllRowFilter,
        sink: &mut dyn RowSink,
    ) -> Result<u64, CdcError> {
        let statement = sql::all_changes(&ci.name, &ci.columns)
            .map_err(|e| name_error("capture instance or its columns", e))?;
        let context = Context::AllChanges {
            ci,
            from: range.from(),
            to: range.to(),
        };
        self.stream_changes(&statement, ci, range, filter.as_sql(), sink, context)
            .await
    }

    async fn scan_locked(
        &mut self,
        ci: &CaptureInstance,
        sink: &mut dyn RowSink,
    ) -> Result<u64, CdcError> {
        let statement = sql::scan_locked(&ci.table, &ci.columns)
            .map_err(|e| name_error("source table or its columns", e))?;
        let (sent, _) = self
            .stream_rows(
                &statement,
                &[],
                None,
                sink,
                Context::Plain(format!("locked scan of {}", ci.table)),
            )
            .await?;
        Ok(sent)
    }

    async fn release_lock(&mut self) -> Result<(), CdcError> {
        // A batch, like the scan: a COMMIT inside `sp_executesql` would end it with Msg 266.
        let outcome = async {
            self.client
                .simple_query(sql::RELEASE_LOCK)
                .await?
                .into_row()
                .await
        }
        .await;
        let context = Context::Plain("end of the locked scan".to_string());
        let row = outcome
            .map_err(|e| self.error(e, context))?
            .ok_or_else(|| {
                CdcError::Protocol(format!("no row returned by: {}", sql::RELEASE_LOCK))
            })?;
        if required::<i32>(&row, "open_transactions")? == 0 {
            return Err(CdcError::LockLost);
        }
        Ok(())
    }

    async fn scan(
        &mut self,
        ci: &CaptureInstance,
        after: Option<&[Value]>,
        upto: Option<&[Value]>,
        limit: u64,
        sink: &mut dyn RowSink,
    ) -> Result<(u64, Option<Vec<Value>>), CdcError> {
        for (what, key) in [("resume key", after), ("range end", upto)] {
            if let Some(key) = key {
                if key.len() != ci.key_columns.len() {
                    return Err(CdcError::Protocol(format!(
                        "{what} has {} values but {} has {} key columns",
                        key.len(),
                        ci.table,
                        ci.key_columns.len()
                    )));
                }
            }
        }
        let statement = sql::scan(
            &ci.table,
            &ci.key_columns,
            &ci.columns,
            after.is_some(),
            upto.is_some(),
        )
        .map_err(|e| name_error("source table or its columns", e))?;
        let mut params = vec![ColumnData::I64(Some(to_i64(limit)))];
        params.extend(key_params(ci, "resume key", after)?);
        params.extend(key_params(ci, "range end", upto)?);
        let key_columns = ci.key_names();
        self.stream_rows(
            &statement,
            &params,
            Some(&key_columns),
            sink,
            Context::Plain(format!("keyset page of {}", ci.table)),
        )
        .await
    }

    async fn table_rows(&mut self, table: &TableRef) -> Result<u64, CdcError> {
        let row = self
            .single_row("row count", sql::TABLE_ROWS, &[text(&table.quoted())])
            .await?;
        Ok(column::<i64>(&row, "row_count")?.unwrap_or(0).max(0) as u64)
    }

    async fn sample_keys(
        &mut self,
        ci: &CaptureInstance,
        percent: f64,
    ) -> Result<Vec<Vec<Value>>, CdcError> {
        let statement = sql::sample_keys(&ci.table, &ci.key_columns, percent)
            .map_err(|e| name_error("source table or its key", e))?;
        let mut sink = VecSink::default();
        // No parameters (the percentage is in the text): it goes as a batch.
        self.stream_rows(
            &statement,
            &[],
            None,
            &mut sink,
            Context::Plain(format!("key sample of {}", ci.table)),
        )
        .await?;
        Ok(sink.rows)
    }

    async fn read_ranges(
        &mut self,
        table: &TableRef,
        load_id: &str,
    ) -> Result<Vec<RangeProgress>, CdcError> {
        let statement = self.range_statement(sql::READ_RANGES)?;
        let params = [text(&table.schema), text(&table.table), text(load_id)];
        let rows = self
            .results(&statement, &params, Context::Ranges("range read"))
            .await?;
        rows.into_iter()
            .flatten()
            .map(|row| range_from_row(&row))
            .collect()
    }

    async fn insert_ranges(&mut self, rows: &[RangeProgress]) -> Result<bool, CdcError> {
        let statement = sql::insert_ranges(&self.watermark_table, rows.len())
            .map_err(|e| name_error("watermark table", e))?;
        let mut params = Vec::new();
        for row in rows {
            params.extend(range_params(row)?);
        }
        match self.execute(&statement, &params).await {
            Ok(count) => Ok(count > 0),
            Err(e) if e.code().is_some_and(|c| DUPLICATE_KEY_ERRORS.contains(&c)) => Ok(false),
            Err(e) => Err(self.error(e, Context::Ranges("range insert"))),
        }
    }

    async fn update_range(
        &mut self,
        expected_version: i64,
        row: &RangeProgress,
    ) -> Result<bool, CdcError> {
        let statement = self.range_statement(sql::UPDATE_RANGE)?;
        let mut params = range_params(row)?;
        params.push(ColumnData::I64(Some(expected_version)));
        match self.execute(&statement, &params).await {
            Ok(count) => Ok(count == 1),
            Err(e) => Err(self.error(e, Context::Ranges("range update"))),
        }
    }

    async fn delete_other_ranges(&mut self, table: &TableRef, keep: &str) -> Result<(), CdcError> {
        let statement = self.range_statement(sql::DELETE_OTHER_RANGES)?;
        let params = [text(&table.schema), text(&table.table), text(keep)];
        match self.execute(&statement, &params).await {
            Ok(_) => Ok(()),
            Err(e) => Err(self.error(e, Context::Ranges("range delete"))),
        }
    }

    async fn read_watermark(&mut self, table: &TableRef) -> Result<Option<Watermark>, CdcError> {
        let statement = sql::read_watermark(&self.watermark_table)
            .map_err(|e| name_error("watermark table", e))?;
        let row = self
            .first_row(
                &statement,
                &[text(&table.schema), text(&table.table)],
                Context::Watermark("watermark read"),
            )
            .await?;
        row.as_ref().map(watermark_from_row).transpose()
    }

    async fn insert_watermark(&mut self, row: &Watermark) -> Result<bool, CdcError> {
        let statement = sql::insert_watermark(&self.watermark_table)
            .map_err(|e| name_error("watermark table", e))?;
        let params = watermark_params(row)?;
        match self.execute(&statement, &params).await {
            Ok(count) => Ok(count == 1),
            Err(e) if e.code().is_some_and(|c| DUPLICATE_KEY_ERRORS.contains(&c)) => Ok(false),
            Err(e) => Err(self.error(e, Context::Watermark("watermark insert"))),
        }
    }

    async fn update_watermark(
        &mut self,
        expected_version: i64,
        row: &Watermark,
    ) -> Result<bool, CdcError> {
        let statement = sql::update_watermark(&self.watermark_table)
            .map_err(|e| name_error("watermark table", e))?;
        let mut params = watermark_params(row)?;
        params.push(ColumnData::I64(Some(expected_version)));
        match self.execute(&statement, &params).await {
            Ok(count) => Ok(count == 1),
            Err(e) => Err(self.error(e, Context::Watermark("watermark update"))),
        }
    }

    async fn set_last_error(
        &mut self,
        table: &TableRef,
        error: Option<&LastError>,
    ) -> Result<(), CdcError> {
        let statement = sql::set_last_error(&self.watermark_table)
            .map_err(|e| name_error("watermark table", e))?;
        let params = [
            text(&table.schema),
            text(&table.table),
            opt_text(error.map(|e| e.message.as_str())),
            match error {
                Some(e) => datetime2(&e.at),
                None => ColumnData::DateTime2(None),
            },
        ];
        match self.execute(&statement, &params).await {
            Ok(_) => Ok(()),
            Err(e) => Err(self.error(e, Context::Watermark("last error update"))),
        }
    }

    async fn last_error(&mut self, table: &TableRef) -> Result<Option<LastError>, CdcError> {
        let statement = sql::read_last_error(&self.watermark_table)
            .map_err(|e| name_error("watermark table", e))?;
        let row = self
            .first_row(
                &statement,
                &[text(&table.schema), text(&table.table)],
                Context::Watermark("last error read"),
            )
            .await?;
        row.map(|row| {
            Ok(LastError {
                message: required::<&str>(&row, "last_error")?.to_string(),
                at: utc(required(&row, "last_error_at")?),
            })
        })
        .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn watermark_params_follow_the_column_order() {
        let at = Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 0).unwrap();
        let row = Watermark {
            table: TableRef {
                schema: "dbo".into(),
                table: "customers".into(),
            },
            capture_instance: "dbo_customers".into(),
            last_lsn: Lsn::from_u128(42),
            last_window_end: at,
            state: TableState::Pending(Window {
                range: LsnRange::after(Lsn::from_u128(42), Lsn::from_u128(43)).unwrap(),
                start: at,
                end: at,
                blob: "dbo/customers/x.csv".into(),
            }),
            rows_copied: 5,
            bytes_copied: 6,
            version: 9,
            updated_at: at,
        };
        let params = watermark_params(&row).unwrap();
        assert_eq!(params.len(), sql::WATERMARK_COLUMNS.len());
        assert_eq!(params[0], text("dbo"));
        assert_eq!(params[3], lsn_param(&Lsn::from_u128(42)));
        assert_eq!(params[5], lsn_param(&Lsn::from_u128(43)));
        assert_eq!(params[7], text("dbo/customers/x.csv"));
        assert_eq!(params[8], ColumnData::String(None), "no load while pending");
        let loading = Watermark {
            state: TableState::Loading(FullLoadProgress {
                load_id: "20240501120000000".into(),
                baseline_lsn: Lsn::from_u128(40),
                parts_done: 3,
                last_key: Some(vec![Value::Int(7), Value::Text("a".into())]),
                rows_done: 300,
            }),
            ..row.clone()
        };
        let params = watermark_params(&loading).unwrap();
        assert_eq!(
            params[5],
            ColumnData::Binary(None),
            "no window while loading"
        );
        assert_eq!(params[10], ColumnData::I32(Some(3)));
        assert_eq!(
            params[11],
            text(r#"[{"t":"Int","v":7},{"t":"Text","v":"a"}]"#)
        );
        assert_eq!(params[15], ColumnData::I64(Some(9)));
        let empty = Watermark {
            state: TableState::Ready,
            ..row
        };
        let params = watermark_params(&empty).unwrap();
        for i in [5, 6, 7, 8, 9, 10, 11, 12] {
            assert!(
                matches!(
                    &params[i],
                    ColumnData::Binary(None)
                        | ColumnData::DateTime2(None)
                        | ColumnData::String(None)
                        | ColumnData::I32(None)
                        | ColumnData::I64(None)
                ),
                "{} should be NULL: {:?}",
                sql::WATERMARK_COLUMNS[i],
                params[i]
            );
        }
    }
}

//! Parquet files (`CDC_FORMAT=parquet`): rows → Arrow builders → row groups → the pending
//! block of a [`BlobWriter`].
//!
//! Why this shape:
//! - **Typed from the catalog, not from the values.** A Parquet schema is fixed before the
//!   first row, and a `Value` does not say what the column was declared as (`datetime` and
//!   `datetime2(3)` decode alike; `money` is a decimal). So the schema comes from the file's
//!   [`ColumnDesc`]s, the type table in `docs/parquet-format.md`, and a value that does not fit
//!   its column is an error naming the column rather than a silently different file.
//! - **Memory bounded and flat.** Rows collect in Arrow builders for at most [`BATCH_ROWS`]
//!   rows or [`BATCH_BYTES`] of text and binary, then go to the parquet writer, which encodes
//!   and compresses them into the row group in progress. When that row group reaches
//!   [`ROW_GROUP_BYTES`] (the writer's own estimate of its encoded size) it is flushed: its
//!   bytes move into the blob writer's pending block, full blocks go to Put Block while the
//!   next row group fills, and the footer (schema, row groups, key/value metadata) is written
//!   last, at [`ParquetBlobSink::finish`]. So at most one batch, one row group and the blob
//!   writer's `blocks_in_flight + 1` blocks are held, whatever the file's size.
//! - **All or nothing, as for CSV.** The bytes are staged blocks until the block list is
//!   committed; a failure before that leaves no blob.
//! - **The blob's metadata is in the file too.** A Parquet file outlives its blob (copied into a
//!   lake table, downloaded), so the footer's key/value metadata repeats every blob metadata
//!   entry, the row count included (known only at the end, which is when the footer is
//!   written).
//! - **Snappy.** Pure Rust (no C toolchain in the build), the fastest of the codecs every
//!   Parquet reader supports, and the format's customary default; zstd compresses text
//!   better but costs several times the CPU of this single-core encoder.

use std::sync::Arc;

use arrow_array::builder::{
    BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder, FixedSizeBinaryBuilder,
    Float32Builder, Float64Builder, Int16Builder, Int32Builder, Int64Builder, StringBuilder,
    Time64NanosecondBuilder, TimestampMicrosecondBuilder, UInt8Builder,
};
use arrow_array::{ArrayRef, RecordBatch, StructArray};
use arrow_buffer::NullBuffer;
use arrow_schema::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use async_trait::async_trait;
use chrono::{Datelike, NaiveDateTime, Timelike};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;

use super::blob::{BlobSummary, BlobWriter};
use super::{csv, SinkError};
use crate::cdc::{ColumnDesc, ColumnType, Length, RowSink, RowSinkError, Value};

/// The `Content-Type` of a committed Parquet blob (IANA: `application/vnd.apache.parquet`).
pub const CONTENT_TYPE: &str = "application/vnd.apache.parquet";

/// Rows per Arrow batch handed to the parquet writer.
pub const BATCH_ROWS: usize = 8192;
/// Text and binary bytes per batch: a batch of wide rows goes to the writer sooner.
pub const BATCH_BYTES: usize = 4 * 1024 * 1024;
/// The row-group budget, in the writer's estimate of the encoded row group in memory. A row
/// group is flushed into the blob once it reaches this (so row groups hold about this many
/// encoded bytes, a few MiB per column chunk for narrow tables).
pub const ROW_GROUP_BYTES: usize = 8 * 1024 * 1024;
/// The row-count cap of a row group, whatever its size.
pub const ROW_GROUP_ROWS: usize = 1024 * 1024;

/// The name of a `datetimeoffset` column's struct fields.
pub const UTC_FIELD: &str = "utc";
pub const OFFSET_FIELD: &str = "offset_minutes";

/// The Arrow type a column is written as (the table in `docs/parquet-format.md`).
pub fn arrow_type(ty: &ColumnType) -> DataType {
    match ty {
        ColumnType::Bit => DataType::Boolean,
        ColumnType::TinyInt => DataType::UInt8,
        ColumnType::SmallInt => DataType::Int16,
        ColumnType::Int => DataType::Int32,
        ColumnType::BigInt => DataType::Int64,
        ColumnType::Real => DataType::Float32,
        ColumnType::Float => DataType::Float64,
        ColumnType::Decimal { precision, scale } => {
            DataType::Decimal128((*precision).clamp(1, 38), (*scale).min(*precision) as i8)
        }
        ColumnType::Money => DataType::Decimal128(19, 4),
        ColumnType::SmallMoney => DataType::Decimal128(10, 4),
        ColumnType::Char(_)
        | ColumnType::VarChar(_)
        | ColumnType::NChar(_)
        | ColumnType::NVarChar(_)
        | ColumnType::Text
        | ColumnType::NText
        | ColumnType::Xml
        | ColumnType::Other(_) => DataType::Utf8,
        ColumnType::Binary(Length::Of(n)) if *n > 0 => DataType::FixedSizeBinary(i32::from(*n)),
        ColumnType::RowVersion => DataType::FixedSizeBinary(8),
        ColumnType::Binary(_) | ColumnType::VarBinary(_) | ColumnType::Image => DataType::Binary,
        ColumnType::Date => DataType::Date32,
        ColumnType::Time { .. } => DataType::Time64(TimeUnit::Nanosecond),
        ColumnType::DateTime | ColumnType::SmallDateTime | ColumnType::DateTime2 { .. } => {
            DataType::Timestamp(TimeUnit::Microsecond, None)
        }
        ColumnType::DateTimeOffset { .. } => DataType::Struct(offset_fields()),
        ColumnType::UniqueIdentifier => DataType::FixedSizeBinary(16),
    }
}

fn offset_fields() -> Fields {
    Fields::from(vec![
        Field::new(
            UTC_FIELD,
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new(OFFSET_FIELD, DataType::Int16, false),
    ])
}

/// The Arrow schema of a file of `columns`; field nullability is the column's.
pub fn schema(columns: &[ColumnDesc]) -> SchemaRef {
    Arc::new(Schema::new(
        columns
            .iter()
            .map(|c| Field::new(&c.name, arrow_type(&c.ty), c.nullable))
            .collect::<Vec<_>>(),
    ))
}

/// A value that does not fit its declared column: a definite error (the same rows give the
/// same error on every retry).
#[derive(Debug, thiserror::Error)]
pub enum ParquetError {
    #[error("column {column} is declared {declared} but the row holds {value}; the Parquet file's column type comes from the declaration (docs/parquet-format.md)")]
    Mismatch {
        column: String,
        declared: String,
        value: String,
    },
    #[error("column {column} is declared NOT NULL but the row holds NULL")]
    Null { column: String },
    #[error("the result set's columns {got:?} are not the file's declared columns {declared:?}")]
    Columns {
        got: Vec<String>,
        declared: Vec<String>,
    },
    #[error("parquet encoder: {0}")]
    Encode(String),
}

impl From<ParquetError> for RowSinkError {
    fn from(e: ParquetError) -> Self {
        RowSinkError::new(e, false)
    }
}

fn encode_err(e: impl std::fmt::Display) -> ParquetError {
    ParquetError::Encode(e.to_string())
}

/// One column's builder.
enum Builder {
    Bool(BooleanBuilder),
    U8(UInt8Builder),
    I16(Int16Builder),
    I32(Int32Builder),
    I64(Int64Builder),
    F32(Float32Builder),
    F64(Float64Builder),
    Decimal(Decimal128Builder, u8),
    Utf8(StringBuilder),
    /// `ColumnType::Other`: the value as the driver gave it, in its CSV text.
    Rendered(StringBuilder),
    Binary(BinaryBuilder),
    Fixed(FixedSizeBinaryBuilder),
    Date(Date32Builder),
    Time(Time64NanosecondBuilder),
    /// With the rounding of the declared type: `datetime` and `smalldatetime` as SQL Server
    /// shows them (and as the CSV writes them), `datetime2` as decoded.
    Timestamp(
        TimestampMicrosecondBuilder,
        fn(&NaiveDateTime) -> NaiveDateTime,
    ),
    Offset {
        utc: TimestampMicrosecondBuilder,
        minutes: Int16Builder,
        valid: Vec<bool>,
    },
}

/// Days from 0001-01-01 (chrono's day 1 of the common era) to 1970-01-01.
const UNIX_EPOCH_DAYS_FROM_CE: i32 = 719_163;

impl Builder {
    fn new(ty: &ColumnType) -> Builder {
        let n = BATCH_ROWS;
        match arrow_type(ty) {
            DataType::Boolean => Builder::Bool(BooleanBuilder::with_capacity(n)),
            DataType::UInt8 => Builder::U8(UInt8Builder::with_capacity(n)),
            DataType::Int16 => Builder::I16(Int16Builder::with_capacity(n)),
            DataType::Int32 => Builder::I32(Int32Builder::with_capacity(n)),
            DataType::Int64 => Builder::I64(Int64Builder::with_capacity(n)),
            DataType::Float32 => Builder::F32(Float32Builder::with_capacity(n)),
            DataType::Float64 => Builder::F64(Float64Builder::with_capacity(n)),
            dt @ DataType::Decimal128(_, scale) => Builder::Decimal(
                Decimal128Builder::with_capacity(n).with_data_type(dt),
                scale as u8,
            ),
            DataType::Utf8 if matches!(ty, ColumnType::Other(_)) => {
                Builder::Rendered(StringBuilder::with_capacity(n, n * 16))
            }
            DataType::Utf8 => Builder::Utf8(StringBuilder::with_capacity(n, n * 16)),
            DataType::FixedSizeBinary(width) => {
                Builder::Fixed(FixedSizeBinaryBuilder::with_capacity(n, width))
            }
            DataType::Binary => Builder::Binary(BinaryBuilder::with_capacity(n, n * 16)),
            DataType::Date32 => Builder::Date(Date32Builder::with_capacity(n)),
            DataType::Time64(_) => Builder::Time(Time64NanosecondBuilder::with_capacity(n)),
            DataType::Struct(_) => Builder::Offset {
                utc: TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC"),
                minutes: Int16Builder::with_capacity(n),
                valid: Vec::with_capacity(n),
            },
            _ => Builder::Timestamp(
                TimestampMicrosecondBuilder::with_capacity(n),
                match ty {
                    ColumnType::DateTime => csv::datetime_as_shown,
                    ColumnType::SmallDateTime => csv::smalldatetime_as_shown,
                    _ => |dt: &NaiveDateTime| *dt,
                },
            ),
        }
    }

    fn append_null(&mut self) {
        match self {
            Builder::Bool(b) => b.append_null(),
            Builder::U8(b) => b.append_null(),
            Builder::I16(b) => b.append_null(),
            Builder::I32(b) => b.append_null(),
            Builder::I64(b) => b.append_null(),
            Builder::F32(b) => b.append_null(),
            Builder::F64(b) => b.append_null(),
            Builder::Decimal(b, _) => b.append_null(),
            Builder::Utf8(b) | Builder::Rendered(b) => b.append_null(),
            Builder::Binary(b) => b.append_null(),
            Builder::Fixed(b) => b.append_null(),
            Builder::Date(b) => b.append_null(),
            Builder::Time(b) => b.append_null(),
            Builder::Timestamp(b, _) => b.append_null(),
            Builder::Offset {
                utc,
                minutes,
                valid,
            } => {
                // A struct's children hold a value under a NULL parent too.
                utc.append_value(0);
                minutes.append_value(0);
                valid.push(false);
            }
        }
    }

    /// Appends `value`; `None` when it does not fit. Returns the text/binary bytes added.
    fn append(&mut self, value: &Value, scratch: &mut Vec<u8>) -> Option<usize> {
        match (self, value) {
            (Builder::Bool(b), Value::Bit(v)) => b.append_value(*v),
            (Builder::U8(b), Value::Int(v)) => b.append_value(u8::try_from(*v).ok()?),
            (Builder::I16(b), Value::Int(v)) => b.append_value(i16::try_from(*v).ok()?),
            (Builder::I32(b), Value::Int(v)) => b.append_value(i32::try_from(*v).ok()?),
            (Builder::I64(b), Value::Int(v)) => b.append_value(*v),
            (Builder::F32(b), Value::Real(v)) => b.append_value(*v),
            (Builder::F64(b), Value::Float(v)) => b.append_value(*v),
            (Builder::F64(b), Value::Real(v)) => b.append_value(f64::from(*v)),
            (Builder::Decimal(b, scale), Value::Decimal { unscaled, scale: s }) => {
                b.append_value(rescale(*unscaled, *s, *scale)?)
            }
            (Builder::Utf8(b), Value::Text(t)) => {
                b.append_value(t);
                return Some(t.len());
            }
            (Builder::Rendered(b), value) => {
                let text: &str = match value {
                    Value::Text(t) => t,
                    other => {
                        scratch.clear();
                        csv::write_value(scratch, other);
                        std::str::from_utf8(scratch).ok()?
                    }
                };
                b.append_value(text);
                return Some(text.len());
            }
            (Builder::Binary(b), Value::Binary(v)) => {
                b.append_value(v);
                return Some(v.len());
            }
            (Builder::Fixed(b), Value::Binary(v)) => {
                b.append_value(v).ok()?;
                return Some(v.len());
            }
            (Builder::Fixed(b), Value::Guid(g)) => b.append_value(g.as_bytes()).ok()?,
            (Builder::Date(b), Value::Date(d)) => {
                b.append_value(d.num_days_from_ce() - UNIX_EPOCH_DAYS_FROM_CE)
            }
            (Builder::Time(b), Value::Time(t)) => b.append_value(
                i64::from(t.num_seconds_from_midnight()) * 1_000_000_000
                    + i64::from(t.nanosecond().min(999_999_999)),
            ),
            // Microseconds since 1970-01-01, rounded down: `timestamp_micros` is whole seconds
            // times 10⁶ plus the (non-negative) sub-second microseconds, so the 7th digit of a
            // datetime2(7) is cut, towards the earlier instant, before 1970 as after.
            (Builder::Timestamp(b, shown), Value::DateTime(dt)) => {
                b.append_value(shown(dt).and_utc().timestamp_micros())
            }
            (
                Builder::Offset {
                    utc,
                    minutes,
                    valid,
                },
                Value::DateTimeOffset(dt),
            ) => {
                utc.append_value(dt.timestamp_micros());
                minutes.append_value((dt.offset().local_minus_utc() / 60) as i16);
                valid.push(true);
            }
            _ => return None,
        }
        Some(0)
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Builder::Bool(b) => Arc::new(b.finish()),
            Builder::U8(b) => Arc::new(b.finish()),
            Builder::I16(b) => Arc::new(b.finish()),
            Builder::I32(b) => Arc::new(b.finish()),
            Builder::I64(b) => Arc::new(b.finish()),
            Builder::F32(b) => Arc::new(b.finish()),
            Builder::F64(b) => Arc::new(b.finish()),
            Builder::Decimal(b, _) => Arc::new(b.finish()),
            Builder::Utf8(b) | Builder::Rendered(b) => Arc::new(b.finish()),
            Builder::Binary(b) => Arc::new(b.finish()),
            Builder::Fixed(b) => Arc::new(b.finish()),
            Builder::Date(b) => Arc::new(b.finish()),
            Builder::Time(b) => Arc::new(b.finish()),
            Builder::Timestamp(b, _) => Arc::new(b.finish()),
            Builder::Offset {
                utc,
                minutes,
                valid,
            } => {
                let nulls = NullBuffer::from(std::mem::take(valid));
                let children: Vec<ArrayRef> =
                    vec![Arc::new(utc.finish()), Arc::new(minutes.finish())];
                Arc::new(
                    StructArray::try_new(offset_fields(), children, Some(nulls))
                        .expect("children of equal length and the declared types"),
                )
            }
        }
    }
}

/// `unscaled / 10^from` as an unscaled value of scale `to`: exact, or `None` (a value with
/// more fractional digits than the column, or one that overflows).
fn rescale(unscaled: i128, from: u8, to: u8) -> Option<i128> {
    match from.cmp(&to) {
        std::cmp::Ordering::Equal => Some(unscaled),
        std::cmp::Ordering::Less => unscaled.checked_mul(10i128.checked_pow(u32::from(to - from))?),
        std::cmp::Ordering::Greater => {
            let div = 10i128.checked_pow(u32::from(from - to))?;
            (unscaled % div == 0).then(|| unscaled / div)
        }
    }
}

/// A value's kind, for an error message (never its content: rows are the customer's data).
fn describe(value: &Value) -> String {
    let kind = match value {
        Value::Null => "NULL",
        Value::Bit(_) => "a bit",
        Value::Int(i) => return format!("the integer {i}"),
        Value::Real(_) => "a real",
        Value::Float(_) => "a float",
        Value::Decimal { scale, .. } => return format!("a decimal of scale {scale}"),
        Value::Text(_) => "text",
        Value::Binary(b) => return format!("{} bytes of binary", b.len()),
        Value::Date(_) => "a date",
        Value::Time(_) => "a time",
        Value::DateTime(_) => "a datetime",
        Value::DateTimeOffset(_) => "a datetimeoffset",
        Value::Guid(_) => "a uniqueidentifier",
    };
    kind.to_string()
}

/// Rows to Parquet bytes in memory, a row group at a time: the encoding half of
/// [`ParquetBlobSink`], without I/O (the encode-only benchmark drives it directly).
pub struct ParquetEncoder {
    columns: Arc<[ColumnDesc]>,
    schema: SchemaRef,
    builders: Vec<Builder>,
    parquet: ArrowWriter<Vec<u8>>,
    batch_rows: usize,
    batch_bytes: usize,
    row_group_bytes: usize,
    rows: u64,
    scratch: Vec<u8>,
}

impl ParquetEncoder {
    pub fn new(columns: Arc<[ColumnDesc]>) -> ParquetEncoder {
        let schema = schema(&columns);
        let props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
            .set_created_by(format!("cdc-copy {}", env!("CARGO_PKG_VERSION")))
            .build();
        let parquet = ArrowWriter::try_new(Vec::new(), schema.clone(), Some(props))
            .expect("every ColumnType maps to an Arrow type the parquet writer supports");
        ParquetEncoder {
            builders: columns.iter().map(|c| Builder::new(&c.ty)).collect(),
            columns,
            schema,
            parquet,
            batch_rows: 0,
            batch_bytes: 0,
            row_group_bytes: ROW_GROUP_BYTES,
            rows: 0,
            scratch: Vec::new(),
        }
    }

    /// A row-group budget other than [`ROW_GROUP_BYTES`] (tests: many row groups from few
    /// rows).
    pub fn with_row_group_bytes(mut self, bytes: usize) -> ParquetEncoder {
        self.row_group_bytes = bytes.max(1);
        self
    }

    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Row groups completed so far (written out of memory).
    pub fn row_groups(&self) -> usize {
        self.parquet.flushed_row_groups().len()
    }

    /// Checks the result set's column names against the declared columns.
    pub fn check_names(&self, names: &[String]) -> Result<(), ParquetError> {
        let declared: Vec<String> = self.columns.iter().map(|c| c.name.clone()).collect();
        if names != declared.as_slice() {
            return Err(ParquetError::Columns {
                got: names.to_vec(),
                declared,
            });
        }
        Ok(())
    }

    /// Adds one row; a full batch goes to the parquet writer and a full row group is closed,
    /// its bytes then waiting in [`encoded`](Self::encoded).
    pub fn push(&mut self, row: &[Value]) -> Result<(), ParquetError> {
        if row.len() != self.columns.len() {
            return Err(ParquetError::Columns {
                got: vec![format!("{} values", row.len())],
                declared: self.columns.iter().map(|c| c.name.clone()).collect(),
            });
        }
        for ((value, builder), column) in
            row.iter().zip(&mut self.builders).zip(self.columns.iter())
        {
            if let Value::Null = value {
                if !column.nullable {
                    return Err(ParquetError::Null {
                        column: column.name.clone(),
                    });
                }
                builder.append_null();
                continue;
            }
            match builder.append(value, &mut self.scratch) {
                Some(bytes) => self.batch_bytes += bytes,
                None => {
                    return Err(ParquetError::Mismatch {
                        column: column.name.clone(),
                        declared: column.ty.sql(),
                        value: describe(value),
                    })
                }
            }
        }
        self.rows += 1;
        self.batch_rows += 1;
        if self.batch_rows >= BATCH_ROWS || self.batch_bytes >= BATCH_BYTES {
            self.write_batch()?;
        }
        Ok(())
    }

    /// Hands the batch to the parquet writer, and closes the row group when it is full.
    fn write_batch(&mut self) -> Result<(), ParquetError> {
        if self.batch_rows == 0 {
            return Ok(());
        }
        let arrays: Vec<ArrayRef> = self.builders.iter_mut().map(Builder::finish).collect();
        let batch = RecordBatch::try_new(self.schema.clone(), arrays).map_err(encode_err)?;
        self.parquet.write(&batch).map_err(encode_err)?;
        self.batch_rows = 0;
        self.batch_bytes = 0;
        if self.parquet.in_progress_size() >= self.row_group_bytes {
            self.parquet.flush().map_err(encode_err)?;
        }
        Ok(())
    }

    /// The file's bytes written so far and not yet taken: the magic, then each closed row
    /// group, then (after [`finish`](Self::finish)) the footer. Take them with
    /// `std::mem::take`; the writer keeps counting offsets itself.
    pub fn encoded(&mut self) -> &mut Vec<u8> {
        self.parquet.inner_mut()
    }

    /// Closes the last row group and writes the footer, with `metadata` as its key/value
    /// metadata.
    pub fn finish(&mut self, metadata: &[(String, String)]) -> Result<(), ParquetError> {
        self.write_batch()?;
        for (key, value) in metadata {
            self.parquet
                .append_key_value_metadata(KeyValue::new(key.clone(), value.clone()));
        }
        self.parquet.finish().map_err(encode_err)?;
        Ok(())
    }
}

/// Rows into one Parquet block blob. Nothing is visible until [`ParquetBlobSink::finish`].
pub struct ParquetBlobSink {
    writer: BlobWriter,
    encoder: ParquetEncoder,
}

impl ParquetBlobSink {
    pub fn new(mut writer: BlobWriter, columns: Arc<[ColumnDesc]>) -> ParquetBlobSink {
        writer.set_content_type(CONTENT_TYPE);
        ParquetBlobSink {
            writer,
            encoder: ParquetEncoder::new(columns),
        }
    }

    /// See [`ParquetEncoder::with_row_group_bytes`].
    pub fn with_row_group_bytes(self, bytes: usize) -> ParquetBlobSink {
        ParquetBlobSink {
            encoder: self.encoder.with_row_group_bytes(bytes),
            ..self
        }
    }

    pub fn rows(&self) -> u64 {
        self.encoder.rows()
    }

    /// Bytes moved into the blob so far (staged or buffered; not the row group in progress).
    pub fn bytes(&self) -> u64 {
        self.writer.bytes_written()
    }

    /// Row groups completed so far.
    pub fn row_groups(&self) -> usize {
        self.encoder.row_groups()
    }

    /// Adds metadata known only at the end (the row count): to the blob, and so to the footer.
    pub fn set_metadata(&mut self, key: &str, value: String) {
        self.writer.set_metadata(key, value);
    }

    /// Moves what the encoder has written into the blob's pending block (staging the full
    /// blocks).
    async fn drain(&mut self) -> Result<(), SinkError> {
        let encoded = self.encoder.encoded();
        if encoded.is_empty() {
            return Ok(());
        }
        let bytes = std::mem::take(encoded);
        self.writer.write(&bytes).await
    }

    /// Writes the last row group and the footer (with every blob metadata entry as key/value
    /// metadata), then commits the block list: the blob appears whole, or not at all.
    pub async fn finish(mut self) -> Result<BlobSummary, SinkError> {
        let metadata = self.writer.metadata().to_vec();
        self.encoder
            .finish(&metadata)
            .map_err(|e| SinkError::Other(e.to_string()))?;
        self.drain().await?;
        self.writer.finish().await
    }
}

#[async_trait]
impl RowSink for ParquetBlobSink {
    async fn columns(&mut self, names: &[String]) -> Result<(), RowSinkError> {
        Ok(self.encoder.check_names(names)?)
    }

    async fn row(&mut self, row: &[Value]) -> Result<(), RowSinkError> {
        self.encoder.push(row)?;
        Ok(self.drain().await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_rescale_exactly_or_not_at_all() {
        let cases: &[(i128, u8, u8, Option<i128>)] = &[
            (150, 2, 2, Some(150)),
            (15, 1, 4, Some(15_000)),
            (15_000, 4, 1, Some(15)),
            (15_001, 4, 1, None),
            (i128::MAX, 0, 1, None),
            (-5, 0, 38, None),
            (-5, 0, 37, Some(-5 * 10i128.pow(37))),
        ];
        for &(unscaled, from, to, want) in cases {
            assert_eq!(rescale(unscaled, from, to), want, "{unscaled} {from}→{to}");
        }
    }

    #[test]
    fn every_declared_type_has_its_documented_arrow_type() {
        let ts = DataType::Timestamp(TimeUnit::Microsecond, None);
        let cases = [
            (ColumnType::Bit, DataType::Boolean),
            (ColumnType::TinyInt, DataType::UInt8),
            (ColumnType::SmallInt, DataType::Int16),
            (ColumnType::Int, DataType::Int32),
            (ColumnType::BigInt, DataType::Int64),
            (ColumnType::Real, DataType::Float32),
            (ColumnType::Float, DataType::Float64),
            (
                ColumnType::Decimal {
                    precision: 38,
                    scale: 10,
                },
                DataType::Decimal128(38, 10),
            ),
            (ColumnType::Money, DataType::Decimal128(19, 4)),
            (ColumnType::SmallMoney, DataType::Decimal128(10, 4)),
            (ColumnType::NVarChar(Length::Max), DataType::Utf8),
            (ColumnType::Xml, DataType::Utf8),
            (ColumnType::Other("geography".into()), DataType::Utf8),
            (
                ColumnType::Binary(Length::Of(10)),
                DataType::FixedSizeBinary(10),
            ),
            (ColumnType::VarBinary(Length::Of(10)), DataType::Binary),
            (ColumnType::RowVersion, DataType::FixedSizeBinary(8)),
            (ColumnType::Image, DataType::Binary),
            (ColumnType::Date, DataType::Date32),
            (
                ColumnType::Time { scale: 7 },
                DataType::Time64(TimeUnit::Nanosecond),
            ),
            (ColumnType::DateTime, ts.clone()),
            (ColumnType::SmallDateTime, ts.clone()),
            (ColumnType::DateTime2 { scale: 7 }, ts),
            (
                ColumnType::DateTimeOffset { scale: 7 },
                DataType::Struct(offset_fields()),
            ),
            (ColumnType::UniqueIdentifier, DataType::FixedSizeBinary(16)),
        ];
        let columns: Vec<ColumnDesc> = cases
            .iter()
            .enumerate()
            .map(|(i, (ty, _))| ColumnDesc::new(format!("c{i}"), ty.clone(), true))
            .collect();
        for (ty, want) in &cases {
            assert_eq!(&arrow_type(ty), want, "{ty}");
        }
        // The writer accepts the whole schema (the `expect` in `ParquetBlobSink::new`).
        ArrowWriter::try_new(Vec::new(), schema(&columns), None).unwrap();
    }

    /// `datetime` as SQL Server shows it (and the CSV writes it): tiberius decodes tick 1 as
    /// 3.333333 ms, which the file held as `.003333` until the reader test compared the two.
    #[test]
    fn datetime_and_smalldatetime_are_written_as_sql_server_shows_them() {
        use arrow_array::{Array, TimestampMicrosecondArray};
        let at = |s: &str| NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f").unwrap();
        let micros = |dt: NaiveDateTime| dt.and_utc().timestamp_micros();
        let cases = [
            (
                ColumnType::DateTime,
                "2024-05-06 07:08:09.003333333",
                "2024-05-06 07:08:09.003",
            ),
            (
                ColumnType::DateTime,
                "2024-05-06 07:08:09.006666666",
                "2024-05-06 07:08:09.007",
            ),
            (
                ColumnType::DateTime,
                "9999-12-31 23:59:59.996666666",
                "9999-12-31 23:59:59.997",
            ),
            (
                ColumnType::DateTime,
                "1753-01-01 00:00:00",
                "1753-01-01 00:00:00",
            ),
            (
                ColumnType::SmallDateTime,
                "2079-06-06 23:59:00",
                "2079-06-06 23:59:00",
            ),
            (
                ColumnType::DateTime2 { scale: 7 },
                "2024-05-06 07:08:09.1234567",
                "2024-05-06 07:08:09.123456",
            ),
        ];
        for (ty, value, want) in cases {
            let mut builder = Builder::new(&ty);
            let mut scratch = Vec::new();
            builder
                .append(&Value::DateTime(at(value)), &mut scratch)
                .unwrap();
            let array = builder.finish();
            let array = array
                .as_any()
                .downcast_ref::<TimestampMicrosecondArray>()
                .unwrap();
            assert_eq!(array.value(0), micros(at(want)), "{ty} {value}");
        }
    }
}

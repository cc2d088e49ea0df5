//! Which file format a blob is written in (`CDC_FORMAT`), and the one sink type the jobs hold
//! whatever the format.
//!
//! Why the format of a blob can differ from the setting: a pending incremental window is
//! finished under the name it recorded, and that name's extension says which format its
//! first attempt wrote. So a change of `CDC_FORMAT` while a window is pending finishes that
//! window in the format its name promises, and the setting applies from the next window on.

use std::sync::Arc;

use async_trait::async_trait;

use super::blob::{BlobSummary, BlobWriter};
use super::parquet::ParquetBlobSink;
use super::rows::CsvBlobSink;
use super::SinkError;
use crate::cdc::{ColumnDesc, RowSink, RowSinkError, Value};

/// `CDC_FORMAT`: the file format of every blob the copier writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// RFC 4180 CSV (`docs/csv-format.md`).
    #[default]
    Csv,
    /// Apache Parquet (`docs/parquet-format.md`).
    Parquet,
}

impl Format {
    /// `csv` or `parquet`: the setting's value, and the blob names' extension.
    pub fn extension(&self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Parquet => "parquet",
        }
    }

    /// `CDC_FORMAT`'s value, case-insensitive.
    pub fn parse(value: &str) -> Result<Format, String> {
        match value.trim().to_ascii_lowercase().as_str() {
            "csv" => Ok(Format::Csv),
            "parquet" => Ok(Format::Parquet),
            _ => Err(format!("{value:?} is not `csv` or `parquet`")),
        }
    }

    /// The format a blob named `name` is in: its extension's, or else `default` (a path
    /// template without an extension).
    pub fn of_blob(name: &str, default: Format) -> Format {
        let file = name.rsplit('/').next().unwrap_or(name);
        match file.rsplit_once('.').map(|(_, ext)| ext) {
            Some("csv") => Format::Csv,
            Some("parquet") => Format::Parquet,
            _ => default,
        }
    }
}

/// A file sink of either format: what the jobs stream rows into and commit. Boxed: both
/// hold a blob writer, and the jobs move the sink between functions.
pub enum FileSink {
    Csv(Box<CsvBlobSink>),
    Parquet(Box<ParquetBlobSink>),
}

impl FileSink {
    pub fn new(
        format: Format,
        writer: BlobWriter,
        block_size: usize,
        columns: Arc<[ColumnDesc]>,
    ) -> FileSink {
        match format {
            Format::Csv => FileSink::Csv(Box::new(CsvBlobSink::new(writer, block_size, columns))),
            Format::Parquet => FileSink::Parquet(Box::new(ParquetBlobSink::new(writer, columns))),
        }
    }

    pub fn rows(&self) -> u64 {
        match self {
            FileSink::Csv(s) => s.rows(),
            FileSink::Parquet(s) => s.rows(),
        }
    }

    /// Bytes encoded so far, staged or still buffered.
    pub fn bytes(&self) -> u64 {
        match self {
            FileSink::Csv(s) => s.bytes(),
            FileSink::Parquet(s) => s.bytes(),
        }
    }

    /// Adds blob metadata known only at the end (the row count).
    pub fn set_metadata(&mut self, key: &str, value: String) {
        match self {
            FileSink::Csv(s) => s.set_metadata(key, value),
            FileSink::Parquet(s) => s.set_metadata(key, value),
        }
    }

    /// Commits the blob: it appears whole, or not at all.
    pub async fn finish(self) -> Result<BlobSummary, SinkError> {
        match self {
            FileSink::Csv(s) => s.finish().await,
            FileSink::Parquet(s) => s.finish().await,
        }
    }
}

#[async_trait]
impl RowSink for FileSink {
    async fn columns(&mut self, names: &[String]) -> Result<(), RowSinkError> {
        match self {
            FileSink::Csv(s) => s.columns(names).await,
            FileSink::Parquet(s) => s.columns(names).await,
        }
    }

    async fn row(&mut self, row: &[Value]) -> Result<(), RowSinkError> {
        match self {
            FileSink::Csv(s) => s.row(row).await,
            FileSink::Parquet(s) => s.row(row).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_setting_parses_case_insensitively_and_refuses_the_rest() {
        assert_eq!(Format::parse("csv"), Ok(Format::Csv));
        assert_eq!(Format::parse(" Parquet "), Ok(Format::Parquet));
        let err = Format::parse("json").unwrap_err();
        assert!(err.contains("`csv` or `parquet`"), "{err}");
    }

    #[test]
    fn a_blob_is_in_the_format_its_name_says() {
        let cases = [
            (
                "dbo/t/incremental/2024/01/01/20240101000000000.csv",
                Format::Parquet,
                Format::Csv,
            ),
            (
                "dbo/t/full/1/part-00000.parquet",
                Format::Csv,
                Format::Parquet,
            ),
            (
                "dbo/t/20240101000000000-dbo_t.parquet",
                Format::Csv,
                Format::Parquet,
            ),
            // No extension: the setting decides.
            (
                "dbo/t.v1/20240101000000000",
                Format::Parquet,
                Format::Parquet,
            ),
            ("dbo/t.v1/20240101000000000", Format::Csv, Format::Csv),
        ];
        for (name, default, want) in cases {
            assert_eq!(Format::of_blob(name, default), want, "{name}");
        }
    }
}

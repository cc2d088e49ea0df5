//! The bridge from a row stream to a blob: a [`RowSink`] that CSV-encodes straight into the
//! pending block of a [`BlobWriter`], so a row is encoded once and never copied again.

use std::sync::Arc;

use async_trait::async_trait;

use super::blob::{BlobSummary, BlobWriter};
use super::{csv, SinkError};
use crate::cdc::{ColumnDesc, RowSink, RowSinkError, Value};

/// CSV rows into one block blob. Nothing is visible until [`CsvBlobSink::finish`].
pub struct CsvBlobSink {
    writer: BlobWriter,
    block_size: usize,
    /// The file's declared columns, in order (what `csv::write_row` renders by).
    columns: Arc<[ColumnDesc]>,
    rows: u64,
    header_written: bool,
}

impl CsvBlobSink {
    pub fn new(writer: BlobWriter, block_size: usize, columns: Arc<[ColumnDesc]>) -> CsvBlobSink {
        CsvBlobSink {
            writer,
            block_size,
            columns,
            rows: 0,
            header_written: false,
        }
    }

    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Bytes encoded so far, staged or still buffered.
    pub fn bytes(&self) -> u64 {
        self.writer.bytes_written()
    }

    /// Adds blob metadata known only at the end (the row count).
    pub fn set_metadata(&mut self, key: &str, value: String) {
        self.writer.set_metadata(key, value);
    }

    /// Commits the block list: the blob appears whole, or not at all. A result set without
    /// column metadata (impossible from SQL Server) still gets no header rather than a
    /// made-up one.
    pub async fn finish(self) -> Result<BlobSummary, SinkError> {
        self.writer.finish().await
    }
}

#[async_trait]
impl RowSink for CsvBlobSink {
    async fn columns(&mut self, names: &[String]) -> Result<(), RowSinkError> {
        if !self.header_written {
            csv::write_header(self.writer.buffer(), names);
            self.header_written = true;
        }
        Ok(())
    }

    async fn row(&mut self, row: &[Value]) -> Result<(), RowSinkError> {
        csv::write_row(self.writer.buffer(), row, &self.columns);
        self.rows += 1;
        if self.writer.buffer().len() >= self.block_size {
            self.writer.flush_full_blocks().await?;
        }
        Ok(())
    }
}

//! Where rows end up: CSV bytes in block blobs.
//!
//! Kept in three parts so that only one of them does I/O: [`naming`] (pure: blob names from
//! templates and trigger times), [`csv`] (pure: values to RFC 4180 bytes) and [`blob`] (the
//! Azure Blob Storage client, block staging and commit, retries).

pub mod blob;
pub mod csv;
pub mod naming;
pub mod rows;
pub mod sharedkey;

/// Errors on the way to a blob. `is_transient` separates what a retry may fix.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("blob storage request {operation} on {target} failed with HTTP {status}: {message}")]
    Http {
        operation: &'static str,
        target: String,
        status: u16,
        message: String,
    },
    #[error("blob storage request {operation} on {target} failed: {message}")]
    Transport {
        operation: &'static str,
        target: String,
        message: String,
    },
    #[error("blob storage configuration: {0}")]
    Config(String),
    #[error("wrote {written} rows to {blob} but SQL Server counted {expected}; the blob was not committed")]
    RowCountMismatch {
        blob: String,
        written: u64,
        expected: u64,
    },
    #[error("{0}")]
    Other(String),
}

impl SinkError {
    /// A create-only commit found the blob already there (409 `BlobAlreadyExists`, or 412
    /// from a retried commit whose first try succeeded).
    pub fn is_already_exists(&self) -> bool {
        matches!(
            self,
            SinkError::Http {
                operation: "put block list",
                status: 409 | 412,
                ..
            }
        )
    }

    /// 408, 429, 500, 502, 503, 504 and transport failures are worth a retry; the rest are not.
    pub fn is_transient(&self) -> bool {
        match self {
            SinkError::Http { status, .. } => matches!(status, 408 | 429 | 500 | 502 | 503 | 504),
            SinkError::Transport { .. } => true,
            _ => false,
        }
    }
}

//! Where rows end up: CSV or Parquet bytes in block blobs.
//!
//! Kept in parts so that the pure ones can be tested without a service: [`naming`] (blob
//! names, re-exported from the crate root where `config` reads it too), [`csv`] (values to
//! RFC 4180 bytes), [`format`] (which format a blob is in); then the I/O: [`rows`] and
//! [`parquet`] (the two file sinks), [`blob`] (the container and reads), [`writer`] (block
//! staging and commit), with [`retry`] and [`errors`] deciding what a failure means.

pub mod blob;
pub mod csv;
pub mod errors;
pub mod format;
pub mod parquet;
pub mod retry;
pub mod rows;
pub mod schema_doc;
pub mod sharedkey;
pub mod writer;

pub use crate::naming;
pub use errors::SinkError;

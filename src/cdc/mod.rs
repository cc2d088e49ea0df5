//! Reading SQL Server Change Data Capture.
//!
//! The jobs never talk to tiberius directly: they talk to a [`CdcSession`], which the SQL
//! Server implementation ([`sqlserver`]) and the in-memory model of the tests both implement.
//! That seam is what lets the orchestration be tested against documented CDC semantics in CI,
//! where no SQL Server can run.

pub mod columns;
pub mod instances;
pub mod lsn;
pub mod schema;
pub mod source;
pub mod value;

pub use columns::{Collation, KeyColumn, KeyType};
pub use lsn::{Lsn, LsnParseError, LsnRange};
pub use schema::{ColumnDesc, ColumnType, Length};
pub use source::*;
pub use value::Value;

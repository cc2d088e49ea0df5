//! SQL Server implementation of the CDC seam.
//!
//! - [`sql`]: every T-SQL statement, one const each with its documentation link, and the
//!   pure builders that splice validated, quoted names into the few templates that need them.
//! - [`connection`]: [`SqlServerSource`] (SQL login or Entra ID token, gateway redirects,
//!   error classification).
//! - [`session`]: [`SqlServerSession`], the [`crate::cdc::CdcSession`] over one connection.
//! - [`decode`]: tiberius cells to [`crate::cdc::Value`] and back (parameters).

pub mod connection;
pub mod decode;
pub mod session;
pub mod sql;

pub use connection::SqlServerSource;
pub use session::SqlServerSession;

//! cdc-copy: an Azure Functions custom handler that lands SQL Server Change Data Capture in
//! Blob Storage as CSV, one full load per table and then one blob per timer window.
//!
//! Layout, from the edges in:
//! - [`host`]: the Functions host contract (payloads, routes, responses) over warp.
//! - [`config`]: settings from the environment, validated, secrets redacted.
//! - [`cdc`]: LSNs, values, and the [`cdc::CdcSession`] seam the jobs read through;
//!   [`sqlserver`] implements it with tiberius and holds every T-SQL statement.
//! - [`window`]: pure window arithmetic from trigger times and watermarks.
//! - [`sink`]: blob naming and CSV encoding (pure) and block upload (I/O).
//! - [`jobs`]: full load and incremental copy: source → CSV → blob → watermark.
//! - [`report`]: what a job did, per table, typed; `host` renders it.

pub mod cdc;
pub mod cli;
pub mod config;
pub mod host;
pub mod jobs;
pub mod report;
pub mod sink;
pub mod sqlserver;
pub mod window;

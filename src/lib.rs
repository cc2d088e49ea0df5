//! cdc-copy: an Azure Functions custom handler that lands SQL Server Change Data Capture in
//! Blob Storage as CSV, one full load per table and then one blob per timer window.
//!
//! Layout, from the edges in:
//! - [`host`]: the Functions host contract (payloads, routes, responses) over warp.
//! - [`config`]: settings from the environment, validated, secrets redacted.
//! - [`cdc`]: LSNs, values, and the [`cdc::CdcSession`] seam the jobs read through;
//!   [`sqlserver`] implements it with tiberius and holds every T-SQL statement.
//! - [`window`]: pure window arithmetic from trigger times and watermarks.
//! - [`naming`]: blob names from path templates and trigger times (pure; read by `config`
//!   to check the template and the container name, and by `sink` and `jobs` to name blobs).
//! - [`sink`]: CSV encoding (pure) and block upload (I/O).
//! - [`identity`]: the Entra ID credential SQL and Storage share.
//! - [`jobs`]: full load and incremental copy: source → CSV → blob → watermark.
//! - [`report`]: what a job did, per table, typed; `host` renders it.
//! - [`status`]: where each table stands (`handler status`), read-only.

pub mod cdc;
pub mod cli;
pub mod config;
pub mod host;
pub mod identity;
pub mod jobs;
pub mod naming;
pub mod report;
pub mod sink;
pub mod sqlserver;
pub mod status;
pub mod window;

//! The Azure Functions host ↔ custom handler contract.
//! TODO(helper): payload types, routes, responses, server `run(listener, shutdown)`.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::cdc::TableRef;

/// The trigger of an `IncrementalCopy` run, as the host payload gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimerTrigger {
    /// This run's trigger time: `ScheduleStatus.Next` when present and not in the future
    /// (past-due runs included), else `Metadata.sys.UtcNow`.
    pub trigger_time: DateTime<Utc>,
    /// `ScheduleStatus.Last` (None for the first-run value `0001-01-01T00:00:00` or a null status).
    pub last: Option<DateTime<Utc>>,
    pub is_past_due: bool,
}

/// A `FullLoad` request body: `{"tables":["dbo.customers"],"reset":false}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct FullLoadRequest {
    /// Tables to load; empty means every configured table.
    #[serde(default)]
    pub tables: Vec<TableRef>,
    /// Re-baseline tables that already have a watermark.
    #[serde(default)]
    pub reset: bool,
}

/// What a job reports back: one log line per table for `Logs`, a JSON summary for
/// `ReturnValue`, and how the invocation ended.
#[derive(Debug, Clone, PartialEq)]
pub struct JobReport {
    pub logs: Vec<String>,
    pub summary: serde_json::Value,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Everything done (HTTP 200).
    Done,
    /// Accepted, work continues in a later invocation (HTTP 202; FullLoad only).
    InProgress,
    /// The request itself was wrong (HTTP 400: bad table name, unknown table…).
    BadRequest,
    /// Refused because of the current state (HTTP 409: table already loaded, no reset).
    Conflict,
    /// At least one table failed (HTTP 500): the host counts the invocation failed and retries.
    Failed,
}

/// The work behind the two functions. The production implementation lives in `jobs`; host
/// tests plug in their own.
#[async_trait]
pub trait Jobs: Send + Sync + 'static {
    async fn incremental_copy(&self, trigger: TimerTrigger) -> JobReport;
    async fn full_load(&self, request: FullLoadRequest) -> JobReport;
}

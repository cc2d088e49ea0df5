//! The Azure Functions host ↔ custom handler contract.
//!
//! [`payload`] decodes what the host posts (pure, with errors naming the JSON field) and
//! [`server`] serves it over warp. The work itself sits behind the [`Jobs`] trait so that the
//! contract can be tested with a recording double and the binary can start (and answer the
//! readiness probe) before any setting is known to be good: see [`NotConfigured`].

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::cdc::TableRef;
use crate::config::Settings;

pub mod payload;
pub mod server;

pub use payload::{
    full_load_request, parse_host_time, timer_trigger, HttpInvocation, PayloadError, RequestError,
    TimerInvocation,
};
pub use server::{run, MAX_BODY_BYTES};

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

/// A `FullLoad` request body: `{"tables":["dbo.customers"],"reset":false}`. Unknown keys are
/// refused so that a typo (`"tabels"`) cannot silently load everything; null is absent.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FullLoadRequest {
    /// Tables to load, each listed once; empty means every configured table.
    #[serde(default, deserialize_with = "payload::tables")]
    pub tables: Vec<TableRef>,
    /// Re-baseline tables that already have a watermark.
    #[serde(default, deserialize_with = "payload::boolean")]
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
    /// Connectivity checks for `handler check`: one `(what, result)` per thing checked (SQL
    /// login, CDC enabled per table, watermark table, container…). The default checks nothing.
    async fn check(&self) -> Vec<(String, Result<(), String>)> {
        Vec::new()
    }
}

/// The jobs of a handler that cannot work: every invocation fails with a log line saying
/// why (typically the first invalid setting). It lets `serve` start and answer readiness
/// whatever the settings, so the reason surfaces in each invocation's logs (and in
/// Application Insights) instead of as a process that never starts.
#[derive(Debug, Clone)]
pub struct NotConfigured {
    reason: String,
}

impl NotConfigured {
    pub fn new(reason: impl Into<String>) -> NotConfigured {
        NotConfigured {
            reason: reason.into(),
        }
    }

    /// The first settings error from the environment, or, when the settings are valid, a
    /// note that this build has no production jobs wired in.
    pub fn from_env() -> NotConfigured {
        match Settings::from_env() {
            Err(e) => NotConfigured::new(format!("settings are invalid: {e}")),
            Ok(_) => NotConfigured::new(
                "this build has no production jobs wired in (main.rs uses host::NotConfigured)",
            ),
        }
    }

    pub fn reason(&self) -> &str {
        &self.reason
    }

    fn report(&self, function: &str) -> JobReport {
        JobReport {
            logs: vec![format!("{function} cannot run: {}", self.reason)],
            summary: serde_json::json!({"error": self.reason}),
            outcome: Outcome::Failed,
        }
    }
}

#[async_trait]
impl Jobs for NotConfigured {
    async fn incremental_copy(&self, _trigger: TimerTrigger) -> JobReport {
        self.report("IncrementalCopy")
    }

    async fn full_load(&self, _request: FullLoadRequest) -> JobReport {
        self.report("FullLoad")
    }

    async fn check(&self) -> Vec<(String, Result<(), String>)> {
        vec![("jobs".to_string(), Err(self.reason.clone()))]
    }
}

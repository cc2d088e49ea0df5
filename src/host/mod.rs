//! The Azure Functions host ↔ custom handler contract.
//!
//! [`payload`] decodes what the host posts (pure, with errors naming the JSON field) and
//! [`server`] serves it over warp. The work itself sits behind the [`Jobs`] trait so that the
//! contract can be tested with a recording double and the binary can start (and answer the
//! readiness probe) before any setting is known to be good: see [`NotConfigured`].

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::cdc::TableRef;
use crate::config::Settings;
use crate::report::Report;

pub mod payload;
pub mod render;
pub mod server;

pub use payload::{
    full_load_request, parse_host_time, range_message, table_message, timer_trigger,
    HttpInvocation, PayloadError, QueueInvocation, RequestError, TimerInvocation,
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

/// One `CopyTable` queue message (queue `cdc-copy-tables`): copy `table`'s window up to
/// `triggerTime`. It carries only what the per-table logic takes from the trigger; the window
/// itself (`from`, pending window, capture instance) always comes from the watermark row, so
/// a duplicate, a redelivery or a message older than the watermark cannot copy a change twice
/// or skip one: see `docs/scale-out.md`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TableMessage {
    #[serde(
        deserialize_with = "payload::table",
        serialize_with = "crate::report::as_text"
    )]
    pub table: TableRef,
    /// The trigger time of the `IncrementalCopy` run that sent it: the window's end.
    #[serde(deserialize_with = "payload::required_time")]
    pub trigger_time: DateTime<Utc>,
    /// The sending run was past due (for the log only).
    #[serde(default, deserialize_with = "payload::boolean")]
    pub is_past_due: bool,
}

/// One `LoadRange` queue message (queue `cdc-copy-ranges`): load range `range` of the split
/// full load `load_id` of `table`. Everything else (bounds, checkpoint, baseline) comes from
/// the range table and the watermark row, so a duplicate or a message of a replaced load
/// copies nothing twice (docs/scale-out.md, "Parallel full load").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RangeMessage {
    #[serde(
        deserialize_with = "payload::table",
        serialize_with = "crate::report::as_text"
    )]
    pub table: TableRef,
    pub load_id: String,
    pub range: u32,
}

/// How a queue message reached this invocation.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Delivery {
    /// `Metadata.DequeueCount`: 1 on the first delivery.
    pub dequeue_count: i64,
    /// `Metadata.Id`.
    pub id: Option<String>,
}

/// The work behind the functions. The production implementation lives in `jobs`; host
/// tests plug in their own.
#[async_trait]
pub trait Jobs: Send + Sync + 'static {
    /// One incremental window for every table, here and now (the CLI's
    /// `handler incremental-copy`, and the timer with `CDC_FANOUT=inline`).
    async fn incremental_copy(&self, trigger: TimerTrigger) -> Report;
    /// The `IncrementalCopy` timer function: [`Jobs::incremental_copy`], or with
    /// `CDC_FANOUT=queue` one [`TableMessage`] per table in the report's
    /// [`payload::TABLES_OUTPUT_BINDING`] output.
    async fn timer(&self, trigger: TimerTrigger) -> Report {
        self.incremental_copy(trigger).await
    }
    /// The `CopyTable` queue function: one table's window.
    async fn copy_table(&self, message: TableMessage, _delivery: Delivery) -> Report {
        Report::failed(format!(
            "CopyTable cannot run for {}: this handler serves no CopyTable",
            message.table
        ))
    }
    async fn full_load(&self, request: FullLoadRequest) -> Report;
    /// The `FullLoad` HTTP function: [`Jobs::full_load`], or with `CDC_FANOUT=queue` a split
    /// load's ranges sent as [`RangeMessage`]s in the report's
    /// [`payload::RANGES_OUTPUT_BINDING`] output (the CLI's `handler full-load` always loads
    /// inline).
    async fn full_load_invocation(&self, request: FullLoadRequest) -> Report {
        self.full_load(request).await
    }
    /// The `LoadRange` queue function: one key range of a split full load.
    async fn load_range(&self, message: RangeMessage, _delivery: Delivery) -> Report {
        Report::failed(format!(
            "LoadRange cannot run for {}: this handler serves no LoadRange",
            message.table
        ))
    }
    /// Connectivity checks for `handler check`: one `(what, result)` per thing checked (SQL
    /// login, CDC enabled per table, watermark table, container…). The default checks nothing.
    async fn check(&self) -> Vec<(String, Result<(), String>)> {
        Vec::new()
    }
    /// Where each configured table stands, for `handler status` and the progress of
    /// `handler full-load`. The default knows nothing.
    async fn status(&self) -> Result<Vec<crate::status::TableStatus>, String> {
        Err("this handler has no status to show".to_string())
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

    fn report(&self, function: &str) -> Report {
        Report::failed(format!("{function} cannot run: {}", self.reason))
    }
}

#[async_trait]
impl Jobs for NotConfigured {
    async fn incremental_copy(&self, _trigger: TimerTrigger) -> Report {
        self.report("IncrementalCopy")
    }

    async fn full_load(&self, _request: FullLoadRequest) -> Report {
        self.report("FullLoad")
    }

    async fn copy_table(&self, _message: TableMessage, _delivery: Delivery) -> Report {
        self.report("CopyTable")
    }

    async fn check(&self) -> Vec<(String, Result<(), String>)> {
        vec![("jobs".to_string(), Err(self.reason.clone()))]
    }

    async fn status(&self) -> Result<Vec<crate::status::TableStatus>, String> {
        Err(self.reason.clone())
    }
}

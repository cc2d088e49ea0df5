//! What a job tells the host: one typed result per table, rendered by `host` into the
//! invocation's `Logs` and `ReturnValue` (and, for FullLoad, the caller's answer).
//!
//! Jobs say what happened and nothing about how it is shown, so the JSON names follow one
//! rule (serde's camelCase) and a status means the same thing in every function.

use chrono::{DateTime, Utc};
use serde::{Serialize, Serializer};

use crate::cdc::{ChangeMode, Lsn, LsnRange, TableRef};

/// How one table's part of an invocation ended, in rising order of severity: a report's
/// status is the worst of its tables'.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Status {
    /// Everything asked for is done (also "already done": a retried trigger).
    Done,
    /// Another invocation moved the watermark first; this one stopped cleanly.
    Superseded,
    /// Work continues in a later invocation (a full load handed off).
    InProgress,
    /// Refused because of the table's state (already loaded, no reset).
    Conflict,
    /// The request itself was wrong (a table that is not configured).
    BadRequest,
    /// A definite failure a retry cannot fix (cleanup gap, missing capture instance, no
    /// watermark, permissions): reported on every run until a person acts, never retried.
    Blocked,
    /// A failure a retry may fix (network, deadlock, throttling).
    Failed,
}

/// One table's result.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TableResult {
    #[serde(serialize_with = "as_text")]
    pub table: TableRef,
    pub status: Status,
    /// What happened, in a few words: "copied", "no changes", "up to date", "loaded"…
    pub note: &'static str,
    pub rows: u64,
    pub bytes: u64,
    /// Blobs committed by this invocation, in order.
    pub blobs: Vec<String>,
    /// The LSN range copied (the last one, when a pending window was finished first).
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub range: Option<RangeFields>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window_end: Option<DateTime<Utc>>,
    /// How far the capture process trailed the trigger time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capture_lag_ms: Option<i64>,
    /// How long the run waited for the capture process to pass the trigger time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capture_wait_ms: Option<u64>,
    /// Something a person should look at although the table's run succeeded (a capture
    /// process that looks stopped).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
    /// How the table's changes were read (`net` or `all`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<ChangeMode>,
    /// The capture instance the watermark names after this run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capture_instance: Option<String>,
    /// This run switched the table to a newer capture instance.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub switched: Option<SwitchFields>,
    /// The full load's baseline LSN.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline_lsn: Option<Lsn>,
    /// Full-load part blobs committed so far.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parts: Option<u32>,
    /// Why the table did not complete (status `Conflict`, `BadRequest`, `Blocked`, `Failed`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transient: Option<bool>,
    pub duration_ms: u64,
}

/// `fromLsn` / `toLsn` of a [`TableResult`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RangeFields {
    pub from_lsn: Lsn,
    pub to_lsn: Lsn,
}

impl From<LsnRange> for RangeFields {
    fn from(range: LsnRange) -> RangeFields {
        RangeFields {
            from_lsn: range.from(),
            to_lsn: range.to(),
        }
    }
}

/// A capture-instance switch: every change up to `after_lsn` came from `from`, the rest
/// comes from `to`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SwitchFields {
    pub from: String,
    pub to: String,
    pub after_lsn: Lsn,
}

pub(crate) fn as_text<S: Serializer>(table: &TableRef, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(table)
}

impl TableResult {
    /// A result with nothing copied yet; callers fill in what they did.
    pub fn new(table: &TableRef, status: Status, note: &'static str) -> TableResult {
        TableResult {
            table: table.clone(),
            status,
            note,
            rows: 0,
            bytes: 0,
            blobs: Vec::new(),
            range: None,
            window_end: None,
            capture_lag_ms: None,
            capture_wait_ms: None,
            warning: None,
            mode: None,
            capture_instance: None,
            switched: None,
            baseline_lsn: None,
            parts: None,
            error: None,
            transient: None,
            duration_ms: 0,
        }
    }
}

impl TableResult {
    /// Adds `warning` to the table's warnings (a run can have several: DDL the capture
    /// instance does not follow, a capture job that looks stopped).
    pub fn warn(&mut self, warning: String) {
        self.warning = Some(match self.warning.take() {
            Some(earlier) => format!("{earlier}; {warning}"),
            None => warning,
        });
    }
}

/// A whole invocation's result: the tables', or why the job could not run at all.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub status: Status,
    pub tables: Vec<TableResult>,
    /// Set when the job could not run (invalid settings, a panic): the invocation failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Messages for the function's queue output bindings: binding name → messages, each
    /// written by the host as one queue message. Not part of `ReturnValue`.
    #[serde(skip)]
    pub outputs: std::collections::BTreeMap<String, Vec<serde_json::Value>>,
}

impl Report {
    /// The report of these tables: its status is the worst of theirs (`Done` for none).
    pub fn of(tables: Vec<TableResult>) -> Report {
        Report {
            status: tables
                .iter()
                .map(|t| t.status)
                .max()
                .unwrap_or(Status::Done),
            tables,
            error: None,
            outputs: Default::default(),
        }
    }

    /// A job that could not run: failed, with the reason.
    pub fn failed(error: impl Into<String>) -> Report {
        Report {
            status: Status::Failed,
            tables: Vec::new(),
            error: Some(error.into()),
            outputs: Default::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn table() -> TableRef {
        TableRef::parse("dbo.customers").unwrap()
    }

    #[test]
    fn the_worst_table_decides() {
        let of = |statuses: &[Status]| {
            Report::of(
                statuses
                    .iter()
                    .map(|s| TableResult::new(&table(), *s, "x"))
                    .collect(),
            )
            .status
        };
        let cases = [
            (vec![], Status::Done),
            (vec![Status::Done, Status::Superseded], Status::Superseded),
            (vec![Status::InProgress, Status::Done], Status::InProgress),
            (
                vec![Status::Conflict, Status::BadRequest],
                Status::BadRequest,
            ),
            (vec![Status::Blocked, Status::Done], Status::Blocked),
            (vec![Status::Blocked, Status::Failed], Status::Failed),
        ];
        for (statuses, want) in cases {
            assert_eq!(of(&statuses), want, "{statuses:?}");
        }
    }

    #[test]
    fn one_naming_rule() {
        let mut result = TableResult::new(&table(), Status::InProgress, "full load in progress");
        result.range = Some(RangeFields {
            from_lsn: Lsn::from_u128(1),
            to_lsn: Lsn::from_u128(2),
        });
        result.parts = Some(3);
        let value = serde_json::to_value(Report::of(vec![result])).unwrap();
        assert_eq!(
            value,
            json!({
                "status": "inProgress",
                "tables": [{
                    "table": "dbo.customers",
                    "status": "inProgress",
                    "note": "full load in progress",
                    "rows": 0,
                    "bytes": 0,
                    "blobs": [],
                    "fromLsn": "0x00000000000000000001",
                    "toLsn": "0x00000000000000000002",
                    "parts": 3,
                    "durationMs": 0,
                }]
            })
        );
    }
}

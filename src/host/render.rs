//! How a job's [`Report`] reaches people: one `Logs` line per table (the host writes them to
//! Application Insights), the report itself as `ReturnValue`, and the HTTP status each
//! function answers.
//!
//! The statuses are where "transient or definite" decides something. Any non-2xx answer
//! makes the host count the invocation failed and apply the function's retry policy, so
//! only failures a retry may fix answer 500; a table that is `Blocked` (cleanup gap, missing
//! capture instance, no watermark, permissions) answers 200 and says so on every run, at
//! error level, until a person acts — five retries would only repeat the same error.

use warp::http::StatusCode;

use crate::report::{Report, Status, TableResult};

impl Report {
    /// The `Logs` lines: one per table, or the reason the job could not run.
    pub fn logs(&self) -> Vec<String> {
        let mut lines: Vec<String> = self.tables.iter().map(line).collect();
        lines.extend(self.error.iter().cloned());
        lines
    }

    /// `ReturnValue`: the report as JSON.
    pub fn return_value(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }
}

/// One table's line: `dbo.customers: copied: 12 rows, 1830 bytes, LSN a..=b, blob, …`.
fn line(r: &TableResult) -> String {
    let label = match r.status {
        Status::Failed => "FAILED",
        Status::Blocked => "BLOCKED (needs a person; not retried)",
        Status::Conflict | Status::BadRequest => "REFUSED",
        Status::Done | Status::Superseded | Status::InProgress => {
            return done_line(r);
        }
    };
    let committed = if r.blobs.is_empty() {
        String::new()
    } else {
        format!(" (committed before it stopped: {})", r.blobs.join(", "))
    };
    format!(
        "{}: {label}: {}{committed}",
        r.table,
        r.error.as_deref().unwrap_or(r.note)
    )
}

fn done_line(r: &TableResult) -> String {
    let mut parts = vec![format!("{} rows", r.rows), format!("{} bytes", r.bytes)];
    if let Some(range) = r.range {
        parts.push(format!("LSN {}..={}", range.from_lsn, range.to_lsn));
    }
    if let Some(baseline) = r.baseline_lsn {
        parts.push(format!("baseline LSN {baseline}"));
    }
    if let Some(n) = r.parts {
        parts.push(format!("{n} parts"));
    }
    parts.push(if r.blobs.is_empty() {
        "no blob".to_string()
    } else {
        r.blobs.join(", ")
    });
    if let Some(end) = r.window_end {
        parts.push(format!(
            "window end {}",
            end.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        ));
    }
    if let Some(lag) = r.capture_lag_ms {
        parts.push(format!("capture lag {:.1}s", lag as f64 / 1000.0));
    }
    parts.push(format!("{:.3}s", r.duration_ms as f64 / 1000.0));
    let warning = r
        .warning
        .as_deref()
        .map(|w| format!("; WARNING: {w}"))
        .unwrap_or_default();
    format!("{}: {}: {}{warning}", r.table, r.note, parts.join(", "))
}

/// The handler's answer to an `IncrementalCopy` invocation: 500 (the host retries) only
/// when a retry may help.
pub fn timer_status(status: Status) -> StatusCode {
    match status {
        Status::Failed => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::OK,
    }
}

/// The handler's answer to a `CopyTable` invocation: 500 (the host makes the message
/// visible again, and poisons it after `maxDequeueCount` deliveries) only when a retry may
/// help; a table that needs a person is answered 200 and poisoned at once
/// ([`needs_a_person`]).
pub fn queue_status(status: Status) -> StatusCode {
    timer_status(status)
}

/// A queue message whose table a retry cannot fix: blocked (cleanup gap, missing capture
/// instance, no watermark, permissions), or a table that is not configured here.
pub fn needs_a_person(status: Status) -> bool {
    matches!(
        status,
        Status::Blocked | Status::BadRequest | Status::Conflict
    )
}

/// `(caller's status through res, handler's status)` of a `FullLoad` invocation. Caller
/// mistakes and refusals are answers (the invocation succeeded); failures fail it too.
pub fn full_load_status(status: Status) -> (StatusCode, StatusCode) {
    match status {
        Status::Done | Status::Superseded => (StatusCode::OK, StatusCode::OK),
        Status::InProgress => (StatusCode::ACCEPTED, StatusCode::OK),
        Status::BadRequest => (StatusCode::BAD_REQUEST, StatusCode::OK),
        Status::Conflict => (StatusCode::CONFLICT, StatusCode::OK),
        Status::Blocked | Status::Failed => (
            StatusCode::INTERNAL_SERVER_ERROR,
            StatusCode::INTERNAL_SERVER_ERROR,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cdc::{Lsn, TableRef};
    use crate::report::RangeFields;

    fn result(status: Status) -> TableResult {
        TableResult::new(&TableRef::parse("dbo.t").unwrap(), status, "copied")
    }

    #[test]
    fn lines() {
        let mut copied = result(Status::Done);
        copied.rows = 2;
        copied.bytes = 90;
        copied.range = Some(RangeFields {
            from_lsn: Lsn::from_u128(1),
            to_lsn: Lsn::from_u128(9),
        });
        copied.blobs = vec!["a.csv".into()];
        copied.duration_ms = 1500;
        let mut blocked = result(Status::Blocked);
        blocked.error = Some("cleaned up".into());
        let mut failed = result(Status::Failed);
        failed.error = Some("timeout".into());
        failed.blobs = vec!["pending.csv".into()];
        let mut refused = result(Status::Conflict);
        refused.error = Some("already loaded".into());
        let mut stalled = result(Status::Done);
        stalled.note = "no changes";
        stalled.capture_lag_ms = Some(3_600_000);
        stalled.warning = Some("capture looks stopped".into());
        let cases = [
            (copied, "dbo.t: copied: 2 rows, 90 bytes, LSN 0x00000000000000000001..=0x00000000000000000009, a.csv, 1.500s"),
            (blocked, "dbo.t: BLOCKED (needs a person; not retried): cleaned up"),
            (
                failed,
                "dbo.t: FAILED: timeout (committed before it stopped: pending.csv)",
            ),
            (refused, "dbo.t: REFUSED: already loaded"),
            (
                stalled,
                "dbo.t: no changes: 0 rows, 0 bytes, no blob, capture lag 3600.0s, 0.000s; WARNING: capture looks stopped",
            ),
        ];
        for (r, want) in cases {
            assert_eq!(line(&r), want);
        }
        let report = Report::failed("IncrementalCopy cannot run: bad settings");
        assert_eq!(report.logs(), ["IncrementalCopy cannot run: bad settings"]);
    }

    #[test]
    fn only_what_a_retry_may_fix_is_retried() {
        let cases = [
            (Status::Done, 200, (200, 200)),
            (Status::Superseded, 200, (200, 200)),
            (Status::InProgress, 200, (202, 200)),
            (Status::Conflict, 200, (409, 200)),
            (Status::BadRequest, 200, (400, 200)),
            (Status::Blocked, 200, (500, 500)),
            (Status::Failed, 500, (500, 500)),
        ];
        for (status, timer, (caller, handler)) in cases {
            assert_eq!(timer_status(status).as_u16(), timer, "{status:?}");
            assert_eq!(queue_status(status).as_u16(), timer, "{status:?}");
            // A message is either retried (non-2xx) or poisoned at once, never both.
            assert!(
                !(needs_a_person(status) && queue_status(status).as_u16() >= 300),
                "{status:?}"
            );
            assert_eq!(
                needs_a_person(status),
                matches!(
                    status,
                    Status::Blocked | Status::BadRequest | Status::Conflict
                ),
                "{status:?}"
            );
            let (c, h) = full_load_status(status);
            assert_eq!((c.as_u16(), h.as_u16()), (caller, handler), "{status:?}");
        }
    }
}

//! IncrementalCopy: one window of net changes per table, per DESIGN.md "The incremental
//! window".
//!
//! The order of side effects is the whole point:
//! 1. a pending window left by an earlier run is finished first, byte for byte;
//! 2. the new window is planned from the watermark (not from the timer's `Last`);
//! 3. with changes, the window (to-LSN, blob name) is recorded in the watermark row before
//!    the blob is written, so a crash anywhere after leaves enough to redo exactly it;
//! 4. the blob is committed (visible whole), and only then the watermark advances.
//!
//! Every watermark write is conditional on the version read, so of two overlapping runs one
//! advances and the other stops, saying so.

use std::time::Instant;

use chrono::{DateTime, Utc};
use serde_json::json;

use super::{for_each_table, Context, JobError, Step, TableOutcome, TableStatus, FORMAT_VERSION};
use crate::cdc::{
    CaptureInstance, CaptureProgress, CdcError, CdcSession, Lsn, PendingWindow, TableRef, Watermark,
};
use crate::host::{JobReport, TimerTrigger};
use crate::sink::SinkError;
use crate::window::{self, Plan};

/// Runs one incremental window for every configured table.
pub async fn run(ctx: &Context, trigger: &TimerTrigger) -> JobReport {
    let tables: Vec<TableRef> = ctx
        .settings
        .tables
        .iter()
        .map(|s| s.table.clone())
        .collect();
    for_each_table(tables, ctx.settings.table_concurrency, |table| async move {
        let started = Instant::now();
        match copy_table(ctx, &table, trigger.trigger_time).await {
            Ok(done) => done.outcome(&table, started.elapsed()),
            Err(error) => TableOutcome::failed(&table, &error),
        }
    })
    .await
}

/// What one table's run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copied {
    pub status: TableStatus,
    /// Blobs committed by this run (a finished pending window, then this window's).
    pub blobs: Vec<String>,
    pub rows: u64,
    pub bytes: u64,
    pub from: Option<Lsn>,
    pub to: Option<Lsn>,
    pub window_end: DateTime<Utc>,
    pub lag: Option<chrono::Duration>,
    pub note: &'static str,
}

impl Copied {
    /// A run that copied nothing (yet), at the watermark's window end.
    fn nothing(status: TableStatus, wm: &Watermark, note: &'static str) -> Copied {
        Copied {
            status,
            blobs: vec![],
            rows: 0,
            bytes: 0,
            from: None,
            to: None,
            window_end: wm.last_window_end,
            lag: None,
            note,
        }
    }

    fn outcome(&self, table: &TableRef, elapsed: std::time::Duration) -> TableOutcome {
        let range = match (self.from, self.to) {
            (Some(from), Some(to)) if to >= from => format!("LSN {from}..={to}"),
            _ => "no LSN range".to_string(),
        };
        let lag = self
            .lag
            .map(|lag| format!("{:.1}s", lag.num_milliseconds() as f64 / 1000.0))
            .unwrap_or_else(|| "unknown".to_string());
        let blobs = if self.blobs.is_empty() {
            "no blob".to_string()
        } else {
            self.blobs.join(", ")
        };
        let line = format!(
            "{table}: {}: {} rows, {} bytes, {range}, {blobs}, window end {}, capture lag {lag}, {:.3}s",
            self.note,
            self.rows,
            self.bytes,
            self.window_end.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            elapsed.as_secs_f64()
        );
        tracing::info!(
            table = %table, rows = self.rows, bytes = self.bytes, from = ?self.from, to = ?self.to,
            blobs = ?self.blobs, lag_ms = self.lag.map(|l| l.num_milliseconds()),
            elapsed_ms = elapsed.as_millis() as u64, note = self.note, "incremental copy"
        );
        TableOutcome {
            table: table.clone(),
            line,
            json: json!({
                "table": table.to_string(),
                "status": self.status.as_str(),
                "note": self.note,
                "rows": self.rows,
                "bytes": self.bytes,
                "fromLsn": self.from.map(|l| l.to_string()),
                "toLsn": self.to.map(|l| l.to_string()),
                "blobs": self.blobs,
                "windowEnd": self.window_end,
                "captureLagMs": self.lag.map(|l| l.num_milliseconds()),
                "durationMs": elapsed.as_millis() as u64,
            }),
            status: self.status,
        }
    }
}

/// One table: finish a pending window, then copy `(last window end, trigger_time]`.
pub async fn copy_table(
    ctx: &Context,
    table: &TableRef,
    trigger_time: DateTime<Utc>,
) -> Result<Copied, JobError> {
    let spec = ctx.spec(table).ok_or_else(|| JobError::NotConfigured {
        table: table.clone(),
    })?;
    let mut session = ctx.source.session().await?;
    let ci = session
        .capture_instance(table, spec.capture_instance.as_deref())
        .await?;
    let mut wm = session
        .read_watermark(table)
        .await?
        .ok_or_else(|| JobError::NotLoaded {
            table: table.clone(),
        })?;
    if wm.full_load.is_some() {
        // A full load handed off by FullLoad: finish it within this invocation's budget.
        let budget = super::full_load::TIMER_BUDGET;
        let progress =
            super::full_load::continue_load(ctx, session.as_mut(), &ci, wm.clone(), budget).await?;
        match progress {
            super::full_load::LoadProgress::Finished(next) => wm = next,
            super::full_load::LoadProgress::Paused(next) => {
                return Ok(Copied::nothing(
                    TableStatus::InProgress,
                    &next,
                    "full load in progress",
                ))
            }
            super::full_load::LoadProgress::Superseded => return Ok(superseded(&wm)),
        }
    }
    if wm.capture_instance != ci.name {
        return Err(JobError::CaptureInstanceChanged {
            table: table.clone(),
            recorded: wm.capture_instance.clone(),
            current: ci.name.clone(),
        });
    }

    let mut copied = Copied::nothing(TableStatus::Done, &wm, "up to date");

    // 1. A pending window first: same LSN range, same name, same bytes.
    if let Some(pending) = wm.pending.clone() {
        let from = next_lsn(&wm);
        check_available(&ci, from)?;
        let expected = if pending.to_lsn >= from {
            session
                .count_net_changes(&ci, from, pending.to_lsn, ctx.settings.row_filter)
                .await?
        } else {
            0
        };
        let (rows, bytes) = write_window(
            ctx,
            session.as_mut(),
            &ci,
            from,
            pending.to_lsn,
            &pending.blob_name,
            wm.last_window_end,
            pending.window_end,
            expected,
        )
        .await?;
        ctx.step(table, Step::BlobCommitted)?;
        let next = advanced(
            &wm,
            pending.to_lsn,
            pending.window_end,
            rows,
            bytes,
            ctx.now(),
        );
        if !session.update_watermark(wm.version, &next).await? {
            return Ok(superseded(&wm));
        }
        wm = next;
        copied.blobs.push(pending.blob_name);
        copied.rows += rows;
        copied.bytes += bytes;
        copied.from = Some(from);
        copied.to = Some(pending.to_lsn);
        copied.window_end = pending.window_end;
        copied.note = "finished pending window";
    }

    if trigger_time <= wm.last_window_end {
        return Ok(copied);
    }

    // 2. Wait (bounded) for the capture process to pass the trigger time, then plan.
    let progress = wait_for_capture(ctx, session.as_mut(), table, trigger_time).await?;
    copied.lag = window::capture_lag(&progress, trigger_time);
    let plan = window::plan(wm.last_lsn, wm.last_window_end, trigger_time, &progress);
    let Plan::Copy {
        window_start,
        window_end,
        from,
        to,
    } = plan
    else {
        return Ok(copied);
    };
    check_available(&ci, from)?;
    ctx.step(table, Step::Planned)?;
    let count = if to >= from {
        session
            .count_net_changes(&ci, from, to, ctx.settings.row_filter)
            .await?
    } else {
        0
    };
    copied.window_end = window_end;
    if copied.from.is_none() {
        copied.from = Some(from);
    }
    copied.to = Some(to.max(wm.last_lsn));

    if count == 0 {
        // Nothing to write: advance the window end (and the LSN over an empty range).
        let next = advanced(&wm, to.max(wm.last_lsn), window_end, 0, 0, ctx.now());
        if !session.update_watermark(wm.version, &next).await? {
            return Ok(superseded(&wm));
        }
        if copied.blobs.is_empty() {
            copied.note = "no changes";
        }
        return Ok(copied);
    }

    // 3. Record the window, 4. write it, 5. advance.
    let blob_name = ctx.settings.path_template.render(table, trigger_time);
    let mut pending = wm.clone();
    pending.pending = Some(PendingWindow {
        to_lsn: to,
        window_end,
        blob_name: blob_name.clone(),
    });
    pending.version = wm.version + 1;
    pending.updated_at = ctx.now();
    if !session.update_watermark(wm.version, &pending).await? {
        return Ok(superseded(&wm));
    }
    ctx.step(table, Step::PendingRecorded)?;
    let (rows, bytes) = write_window(
        ctx,
        session.as_mut(),
        &ci,
        from,
        to,
        &blob_name,
        window_start,
        window_end,
        count,
    )
    .await?;
    ctx.step(table, Step::BlobCommitted)?;
    let next = advanced(&pending, to, window_end, rows, bytes, ctx.now());
    if !session.update_watermark(pending.version, &next).await? {
        return Ok(superseded(&pending));
    }
    copied.blobs.push(blob_name);
    copied.rows += rows;
    copied.bytes += bytes;
    copied.note = "copied";
    Ok(copied)
}

fn superseded(wm: &Watermark) -> Copied {
    tracing::warn!(table = %wm.table, version = wm.version, "another invocation advanced the watermark first; stopping");
    Copied::nothing(
        TableStatus::Superseded,
        wm,
        "superseded: another invocation advanced the watermark first",
    )
}

/// `increment(last_lsn)`: CDC intervals are closed, the last upper bound was copied.
fn next_lsn(wm: &Watermark) -> Lsn {
    wm.last_lsn.increment().unwrap_or(Lsn::MAX)
}

/// Guarantee 5: changes cleaned up before we copied them fail loudly.
fn check_available(ci: &CaptureInstance, from: Lsn) -> Result<(), JobError> {
    if from < ci.min_lsn {
        return Err(CdcError::LsnNotAvailable {
            table: ci.table.clone(),
            capture_instance: ci.name.clone(),
            requested: from,
            minimum: ci.min_lsn,
        }
        .into());
    }
    Ok(())
}

/// The watermark after a committed window.
fn advanced(
    wm: &Watermark,
    to: Lsn,
    window_end: DateTime<Utc>,
    rows: u64,
    bytes: u64,
    now: DateTime<Utc>,
) -> Watermark {
    Watermark {
        last_lsn: to,
        last_window_end: window_end,
        pending: None,
        rows_copied: wm.rows_copied + rows,
        bytes_copied: wm.bytes_copied + bytes,
        version: wm.version + 1,
        updated_at: now,
        ..wm.clone()
    }
}

/// Polls until the capture process has passed `trigger_time` or the wait runs out; either
/// way returns the last progress read. A lagging capture loses nothing: the LSN bound means
/// late changes land in the next window.
async fn wait_for_capture(
    ctx: &Context,
    session: &mut dyn CdcSession,
    table: &TableRef,
    trigger_time: DateTime<Utc>,
) -> Result<CaptureProgress, JobError> {
    let deadline = Instant::now() + ctx.settings.capture_wait;
    loop {
        let progress = session.capture_progress(trigger_time).await?;
        if window::capture_has_passed(&progress, trigger_time) {
            return Ok(progress);
        }
        if Instant::now() >= deadline {
            tracing::warn!(
                table = %table,
                trigger_time = %trigger_time,
                max_lsn = %progress.max_lsn,
                max_lsn_time = ?progress.max_lsn_time,
                waited_s = ctx.settings.capture_wait.as_secs(),
                "capture has not passed the trigger time; copying what is captured, the rest lands in the next window"
            );
            return Ok(progress);
        }
        super::sleep(ctx.settings.capture_poll.min(deadline - Instant::now())).await;
    }
}

/// Streams `[from, to]` into `blob_name` and commits it, after checking the rows written
/// equal `expected` (the count read before). Returns (rows, bytes).
#[allow(clippy::too_many_arguments)]
async fn write_window(
    ctx: &Context,
    session: &mut dyn CdcSession,
    ci: &CaptureInstance,
    from: Lsn,
    to: Lsn,
    blob_name: &str,
    window_start: DateTime<Utc>,
    window_end: DateTime<Utc>,
    expected: u64,
) -> Result<(u64, u64), JobError> {
    let metadata = vec![
        ("table".to_string(), ci.table.to_string()),
        ("capture_instance".to_string(), ci.name.clone()),
        ("from_lsn".to_string(), from.to_string()),
        ("to_lsn".to_string(), to.to_string()),
        (
            "window_start".to_string(),
            window_start.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
        ),
        (
            "window_end".to_string(),
            window_end.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
        ),
        (
            "row_filter".to_string(),
            ctx.settings.row_filter.as_sql().to_string(),
        ),
        ("format_version".to_string(), FORMAT_VERSION.to_string()),
    ];
    ctx.ensure_container().await?;
    let block_size = ctx.settings.block_size;
    let mut sink = ctx.csv_sink(&ci.table, ctx.blobs.writer(blob_name, metadata, block_size));
    let rows = if to >= from {
        session
            .net_changes(ci, from, to, ctx.settings.row_filter, &mut sink)
            .await?
    } else {
        0
    };
    if rows != expected || sink.rows() != expected {
        return Err(SinkError::RowCountMismatch {
            blob: blob_name.to_string(),
            written: sink.rows(),
            expected,
        }
        .into());
    }
    ctx.step(&ci.table, Step::BlocksStaged)?;
    sink.set_metadata("row_count", rows.to_string());
    let summary = sink.finish().await?;
    Ok((rows, summary.bytes))
}

//! IncrementalCopy: one window of net changes per table (README, "How the incremental copy
//! works").
//!
//! The order of side effects is the whole point:
//! 1. a window an earlier run recorded is finished first, byte for byte;
//! 2. the new window is planned from the watermark (not from the timer's `Last`);
//! 3. with changes, the window is recorded in the watermark row before the blob is written,
//!    so a crash anywhere after leaves enough to redo exactly it;
//! 4. the blob is committed (visible whole), and only then the watermark advances.
//!
//! Steps 1 and 4 are the same function, [`commit_window`]: resuming a window and writing a
//! new one cannot drift apart. Every watermark write is conditional on the version read, so
//! of two overlapping runs one advances and the other stops, saying so.

use chrono::{DateTime, Utc};
use tokio::time::Instant;

use super::{for_each_table, save, superseded, timer_table, Context, JobError, FORMAT_VERSION};
use crate::cdc::{
    CaptureInstance, CaptureProgress, CdcError, CdcSession, Lsn, TableState, Watermark, Window,
};
use crate::host::TimerTrigger;
use crate::report::{Report, TableResult};
use crate::sink::SinkError;
use crate::window::{self, Plan};

const SUPERSEDED: &str = "superseded: another invocation advanced the watermark first";

/// Runs one incremental window for every configured table.
pub async fn run(ctx: &Context, trigger: &TimerTrigger) -> Report {
    let tables = ctx
        .settings
        .tables
        .iter()
        .map(|s| s.table.clone())
        .collect();
    for_each_table(tables, ctx.settings.table_concurrency, |table| async move {
        timer_table(ctx, &table, trigger.trigger_time).await
    })
    .await
}

/// One table from a loaded watermark: finish a recorded window, then copy
/// `(last window end, trigger_time]`. What it commits is added to `result` as it goes.
pub async fn copy_table(
    ctx: &Context,
    session: &mut dyn CdcSession,
    ci: &CaptureInstance,
    mut wm: Watermark,
    trigger_time: DateTime<Utc>,
    result: &mut TableResult,
) -> Result<(), JobError> {
    if wm.capture_instance != ci.name {
        return Err(JobError::CaptureInstanceChanged {
            table: ci.table.clone(),
            recorded: wm.capture_instance.clone(),
            current: ci.name.clone(),
        });
    }
    if let TableState::Pending(window) = wm.state.clone() {
        let rows = count(ctx, session, ci, &window).await?;
        let Some(next) = commit_window(ctx, session, ci, &wm, &window, rows, result).await? else {
            superseded(result, SUPERSEDED);
            return Ok(());
        };
        wm = next;
        result.note = "finished pending window";
    }

    let window = match plan(ctx, session, ci, &wm, trigger_time, result).await? {
        Plan::UpToDate => return Ok(()),
        Plan::Advance { window_end, to } => {
            return advance(ctx, session, &wm, window_end, to, result).await
        }
        Plan::Copy(window) => window,
    };
    let rows = count(ctx, session, ci, &window).await?;
    if rows == 0 {
        return advance(ctx, session, &wm, window.end, window.range.to(), result).await;
    }
    let recorded = wm.next(TableState::Pending(window.clone()), ctx.now());
    let Some(recorded) = save(session, &wm, recorded).await? else {
        superseded(result, SUPERSEDED);
        return Ok(());
    };
    match commit_window(ctx, session, ci, &recorded, &window, rows, result).await? {
        Some(_) => result.note = "copied",
        None => superseded(result, SUPERSEDED),
    }
    Ok(())
}

/// Waits (bounded) for the capture process to pass the trigger time, then plans the window.
async fn plan(
    ctx: &Context,
    session: &mut dyn CdcSession,
    ci: &CaptureInstance,
    wm: &Watermark,
    trigger_time: DateTime<Utc>,
    result: &mut TableResult,
) -> Result<Plan, JobError> {
    if trigger_time <= wm.last_window_end {
        return Ok(Plan::UpToDate);
    }
    let progress = wait_for_capture(ctx, session, ci, trigger_time).await?;
    result.capture_lag_ms =
        window::capture_lag(&progress, trigger_time).map(|l| l.num_milliseconds());
    Ok(window::plan(
        wm.last_lsn,
        wm.last_window_end,
        trigger_time,
        &progress,
        || ctx.settings.path_template.render(&ci.table, trigger_time),
    ))
}

/// Moves the window end (and the LSN over a range without net changes) without a blob.
async fn advance(
    ctx: &Context,
    session: &mut dyn CdcSession,
    wm: &Watermark,
    window_end: DateTime<Utc>,
    to: Lsn,
    result: &mut TableResult,
) -> Result<(), JobError> {
    let next = Watermark {
        last_lsn: to,
        last_window_end: window_end,
        ..wm.next(TableState::Ready, ctx.now())
    };
    if save(session, wm, next).await?.is_none() {
        superseded(result, SUPERSEDED);
        return Ok(());
    }
    result.window_end = Some(window_end);
    if result.blobs.is_empty() {
        result.note = "no changes";
    }
    Ok(())
}

/// The net changes in the window, after checking they have not been cleaned up (guarantee 5:
/// a gap fails loudly, never silently).
async fn count(
    ctx: &Context,
    session: &mut dyn CdcSession,
    ci: &CaptureInstance,
    window: &Window,
) -> Result<u64, JobError> {
    check_available(ci, window.range.from())?;
    Ok(session
        .count_net_changes(ci, window.range, ctx.settings.row_filter)
        .await?)
}

/// Writes `window` (recorded in `wm`) to its blob, commits it, and advances the watermark
/// past it; adds what it wrote to `result`. `None` when another invocation moved the
/// watermark first. The one path every window's changes take to the lake.
async fn commit_window(
    ctx: &Context,
    session: &mut dyn CdcSession,
    ci: &CaptureInstance,
    wm: &Watermark,
    window: &Window,
    expected_rows: u64,
    result: &mut TableResult,
) -> Result<Option<Watermark>, JobError> {
    let bytes = write_window(ctx, session, ci, window, expected_rows).await?;
    let advanced = wm.advanced(window, expected_rows, bytes, ctx.now());
    let Some(next) = save(session, wm, advanced).await? else {
        return Ok(None);
    };
    result.blobs.push(window.blob.clone());
    result.rows += expected_rows;
    result.bytes += bytes;
    result.range = Some(match result.range {
        // A finished pending window and this run's window are adjacent: report both as one.
        Some(earlier) => crate::report::RangeFields {
            from_lsn: earlier.from_lsn,
            to_lsn: window.range.to(),
        },
        None => window.range.into(),
    });
    result.window_end = Some(window.end);
    Ok(Some(next))
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

/// Polls until the capture process has passed `trigger_time` or the wait runs out; either
/// way returns the last progress read. A lagging capture loses nothing: the LSN bound means
/// late changes land in the next window.
async fn wait_for_capture(
    ctx: &Context,
    session: &mut dyn CdcSession,
    ci: &CaptureInstance,
    trigger_time: DateTime<Utc>,
) -> Result<CaptureProgress, JobError> {
    let deadline = Instant::now() + ctx.settings.capture_wait;
    loop {
        let progress = session.capture_progress(trigger_time).await?;
        if window::capture_has_passed(&progress, trigger_time) {
            return Ok(progress);
        }
        let now = Instant::now();
        if now >= deadline {
            tracing::warn!(
                table = %ci.table,
                trigger_time = %trigger_time,
                max_lsn = %progress.max_lsn,
                max_lsn_time = ?progress.max_lsn_time,
                waited_s = ctx.settings.capture_wait.as_secs(),
                "capture has not passed the trigger time; copying what is captured, the rest lands in the next window"
            );
            return Ok(progress);
        }
        tokio::time::sleep(ctx.settings.capture_poll.min(deadline - now)).await;
    }
}

/// Streams the window's changes into its blob and commits it, after checking the rows
/// written equal `expected` (the count read before). Returns the blob's bytes.
async fn write_window(
    ctx: &Context,
    session: &mut dyn CdcSession,
    ci: &CaptureInstance,
    window: &Window,
    expected: u64,
) -> Result<u64, JobError> {
    let time = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
    let metadata = vec![
        ("table".to_string(), ci.table.to_string()),
        ("capture_instance".to_string(), ci.name.clone()),
        ("from_lsn".to_string(), window.range.from().to_string()),
        ("to_lsn".to_string(), window.range.to().to_string()),
        ("window_start".to_string(), time(window.start)),
        ("window_end".to_string(), time(window.end)),
        (
            "row_filter".to_string(),
            ctx.settings.row_filter.as_sql().to_string(),
        ),
        ("format_version".to_string(), FORMAT_VERSION.to_string()),
    ];
    ctx.ensure_container().await?;
    let block_size = ctx.settings.block_size;
    let mut sink = ctx.csv_sink(ctx.blobs.writer(&window.blob, metadata, block_size));
    let rows = session
        .net_changes(ci, window.range, ctx.settings.row_filter, &mut sink)
        .await?;
    if rows != expected || sink.rows() != expected {
        return Err(SinkError::RowCountMismatch {
            blob: window.blob.clone(),
            written: sink.rows(),
            expected,
        }
        .into());
    }
    sink.set_metadata("row_count", rows.to_string());
    Ok(sink.finish().await?.bytes)
}

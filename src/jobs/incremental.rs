//! IncrementalCopy: one window of net changes per table (README, "How the incremental copy
//! works").
//!
//! The order of side effects is the whole point:
//! 1. a window an earlier run recorded is finished first, byte for byte;
//! 2. the new window is planned from the watermark (not from the timer's `Last`);
//! 3. its net changes are streamed into the blob's staged blocks (invisible until committed);
//!    without a row, nothing is committed and the window end advances without a blob;
//! 4. with rows, the window is recorded in the watermark row before the blob is committed, so
//!    a crash anywhere after leaves enough to redo exactly it (same range, name and bytes);
//! 5. the blob is committed (visible whole), and only then the watermark advances.
//!
//! The net-changes function is evaluated once per window: streaming is also how a run learns
//! whether the window has changes, so an idle window costs one query that returns no row.
//! Resuming a pending window and writing a new one share [`stream_window`] and
//! [`commit_window`], so they cannot drift apart. Every watermark write is conditional on the
//! version read, so of two overlapping runs one advances and the other stops, saying so.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::time::Instant;

use super::{for_each_table, save, superseded, timer_table, Context, JobError, FORMAT_VERSION};
use crate::cdc::{
    CaptureInstance, CaptureProgress, CdcError, CdcSession, Lsn, RowSink, RowSinkError, TableState,
    Value, Watermark, Window,
};
use crate::host::TimerTrigger;
use crate::report::{Report, TableResult};
use crate::sink::blob::BlockPrefix;
use crate::sink::rows::CsvBlobSink;
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
        let staged = stream_window(ctx, session, ci, &window).await?;
        let Some(next) = commit_window(ctx, session, &wm, &window, staged, result).await? else {
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
    let staged = stream_window(ctx, session, ci, &window).await?;
    if staged.rows() == 0 {
        // Dropping the sink drops its writer: no block list is ever committed for it.
        drop(staged);
        return advance(ctx, session, &wm, window.end, window.range.to(), result).await;
    }
    let recorded = wm.next(TableState::Pending(window.clone()), ctx.now());
    let Some(recorded) = save(session, &wm, recorded).await? else {
        superseded(result, SUPERSEDED);
        return Ok(());
    };
    match commit_window(ctx, session, &recorded, &window, staged, result).await? {
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
    let started = Instant::now();
    let (progress, passed) = wait_for_capture(ctx, session, ci, trigger_time).await?;
    result.capture_wait_ms = Some(started.elapsed().as_millis().try_into().unwrap_or(u64::MAX));
    result.capture_lag_ms =
        window::capture_lag(&progress, trigger_time).map(|l| l.num_milliseconds());
    if !passed {
        warn_if_stalled(ctx, ci, &progress, trigger_time, result);
    }
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

/// Commits `window`'s staged blob (the window is recorded in `wm`) and advances the
/// watermark past it; adds what it wrote to `result`. `None` when another invocation moved
/// the watermark first. The one path every window's changes take to the lake.
async fn commit_window(
    ctx: &Context,
    session: &mut dyn CdcSession,
    wm: &Watermark,
    window: &Window,
    mut staged: CsvBlobSink,
    result: &mut TableResult,
) -> Result<Option<Watermark>, JobError> {
    let rows = staged.rows();
    staged.set_metadata("row_count", rows.to_string());
    // A window without rows staged nothing, so the container may not have been needed yet.
    ctx.ensure_container().await?;
    let bytes = staged.finish().await?.bytes;
    let advanced = wm.advanced(window, rows, bytes, ctx.now());
    let Some(next) = save(session, wm, advanced).await? else {
        return Ok(None);
    };
    result.blobs.push(window.blob.clone());
    result.rows += rows;
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
/// way returns the last progress read, and whether capture was seen to pass. One
/// [`window::ScanWatch`] lives across the polls: it remembers the first scan mark taken
/// after the trigger time. A lagging capture loses nothing: the LSN bound means late
/// changes land in the next window.
async fn wait_for_capture(
    ctx: &Context,
    session: &mut dyn CdcSession,
    ci: &CaptureInstance,
    trigger_time: DateTime<Utc>,
) -> Result<(CaptureProgress, bool), JobError> {
    let deadline = Instant::now() + ctx.settings.capture_wait;
    let mut watch = window::ScanWatch::default();
    loop {
        let progress = session.capture_progress(trigger_time).await?;
        if watch.passed(&progress, trigger_time) {
            return Ok((progress, true));
        }
        let now = Instant::now();
        if now >= deadline {
            tracing::warn!(
                table = %ci.table,
                trigger_time = %trigger_time,
                max_lsn = %progress.max_lsn,
                max_lsn_time = ?progress.max_lsn_time,
                newest_scan = ?progress.newest_scan,
                waited_s = ctx.settings.capture_wait.as_secs(),
                "capture has not passed the trigger time; copying what is captured, the rest lands in the next window"
            );
            return Ok((progress, false));
        }
        let pause = watch.next_poll(&progress, trigger_time, ctx.settings.capture_poll);
        tokio::time::sleep(pause.min(deadline - now)).await;
    }
}

/// What the run says when capture looks stopped.
const STALLED_REMEDY: &str = "on SQL Server and Azure SQL Managed Instance check that SQL Server \
Agent is running and start the capture job (cdc.<database>_capture, sys.sp_cdc_start_job); on \
Azure SQL Database the CDC scheduler captures, and a paused serverless database captures \
nothing. Until capture runs, windows copy nothing and the transaction log keeps growing";

/// Says so when the capture job looks stopped: otherwise it would look like "no changes"
/// on every run while the transaction log grows.
fn warn_if_stalled(
    ctx: &Context,
    ci: &CaptureInstance,
    progress: &CaptureProgress,
    trigger_time: DateTime<Utc>,
    result: &mut TableResult,
) {
    let wait = ctx.settings.capture_wait;
    let Some(lag) = window::stalled_capture_lag(progress, trigger_time, wait) else {
        return;
    };
    let allowed_s = window::IDLE_MAPPING_INTERVAL.num_seconds() + wait.as_secs() as i64;
    tracing::warn!(
        table = %ci.table,
        capture_instance = %ci.name,
        trigger_time = %trigger_time,
        max_lsn_time = ?progress.max_lsn_time,
        capture_lag_s = lag.num_seconds(),
        allowed_lag_s = allowed_s,
        "the CDC capture process looks stopped: {STALLED_REMEDY}"
    );
    result.warning = Some(format!(
        "capture looks stopped: capture instance {} is {} s behind the trigger time, more than \
         an idle capture job explains ({allowed_s} s: a mapping row every {} s plus the wait); \
         {STALLED_REMEDY}",
        ci.name,
        lag.num_seconds(),
        window::IDLE_MAPPING_INTERVAL.num_seconds(),
    ));
}

/// Streams the window's net changes into its blob's staged blocks, after checking they have
/// not been cleaned up (guarantee 5: a gap fails loudly, never silently). Nothing is visible
/// until [`commit_window`]; the returned sink knows how many rows came.
async fn stream_window(
    ctx: &Context,
    session: &mut dyn CdcSession,
    ci: &CaptureInstance,
    window: &Window,
) -> Result<CsvBlobSink, JobError> {
    check_available(ci, window.range.from())?;
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
    let block_size = ctx.settings.block_size;
    let mut writer = ctx.blobs.writer(&window.blob, metadata, block_size);
    // Two runs can stream different ranges under one name (the same trigger time, read
    // from different watermarks) before one of them loses at the record: block IDs of their
    // own keep the loser's staged blocks out of the winner's block list.
    let (from, to) = (window.range.from(), window.range.to());
    writer.block_prefix(BlockPrefix::of(&[&from.0, &to.0]));
    let mut sink = ctx.csv_sink(writer);
    let mut first_row = ContainerFirst {
        ctx,
        sink: &mut sink,
        ready: false,
    };
    session
        .net_changes(ci, window.range, ctx.settings.row_filter, &mut first_row)
        .await?;
    Ok(sink)
}

/// Makes sure the container exists before the first row reaches the blob sink (a block may
/// be staged from then on), so a window without rows does no Blob Storage request at all.
struct ContainerFirst<'a> {
    ctx: &'a Context,
    sink: &'a mut CsvBlobSink,
    ready: bool,
}

#[async_trait]
impl RowSink for ContainerFirst<'_> {
    async fn columns(&mut self, names: &[String]) -> Result<(), RowSinkError> {
        self.sink.columns(names).await
    }

    async fn row(&mut self, row: &[Value]) -> Result<(), RowSinkError> {
        if !self.ready {
            self.ctx.ensure_container().await?;
            self.ready = true;
        }
        self.sink.row(row).await
    }
}

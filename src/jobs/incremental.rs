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
//! With `CDC_FANOUT=queue` the timer run only sends one message per table ([`fan_out`]) and
//! each `CopyTable` invocation runs one ([`run_message`]); both paths end in the same
//! per-table function, `jobs::timer_table`, so the queue adds no second copy of the logic.
//!
//! The net-changes function is evaluated once per window: streaming is also how a run learns
//! whether the window has changes, so an idle window costs one query that returns no row.
//! Resuming a pending window and writing a new one share [`stream_window`] and
//! [`commit_window`], so they cannot drift apart. Every watermark write is conditional on the
//! version read, so of two overlapping runs one advances and the other stops, saying so.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::time::Instant;

use super::{
    for_each_table, save, superseded, timer_table, Capture, Context, JobError, FORMAT_VERSION,
};
use crate::cdc::instances::{self, Route};
use crate::cdc::{
    CaptureInstance, CaptureProgress, CdcError, CdcSession, ChangeMode, Lsn, LsnRange, RowSink,
    RowSinkError, TableRef, TableState, Value, Watermark, Window,
};
use crate::host::payload::TABLES_OUTPUT_BINDING;
use crate::host::{TableMessage, TimerTrigger};
use crate::naming;
use crate::report::{Report, Status, SwitchFields, TableResult};
use crate::sink::blob::BlockPrefix;
use crate::sink::format::FileSink;
use crate::window::{self, Plan};

const SUPERSEDED: &str = "superseded: another invocation advanced the watermark first";

/// Runs one incremental window for every configured table, here (`CDC_FANOUT=inline`).
pub async fn run(ctx: &Context, trigger: &TimerTrigger) -> Report {
    for_each_table(
        configured(ctx),
        ctx.settings.table_concurrency,
        |table| async move { timer_table(ctx, &table, trigger.trigger_time).await },
    )
    .await
}

/// `CDC_FANOUT=queue`: copies nothing, and returns one [`TableMessage`] per configured table
/// for the `tables` queue output; each is copied by [`run_message`] on whichever instance
/// takes it. The message carries the trigger time only: the window comes from the watermark
/// when the message is run, which is what makes duplicates and late messages harmless.
pub fn fan_out(ctx: &Context, trigger: &TimerTrigger) -> Report {
    let tables = configured(ctx);
    let messages = tables
        .iter()
        .map(|table| TableMessage {
            table: table.clone(),
            trigger_time: trigger.trigger_time,
            is_past_due: trigger.is_past_due,
        })
        .map(|m| serde_json::to_value(m).expect("a table message serialises"))
        .collect();
    let results = tables
        .iter()
        .map(|table| TableResult::new(table, Status::Done, "queued"))
        .collect();
    tracing::info!(
        tables = tables.len(),
        trigger_time = %trigger.trigger_time,
        "fanned out: one cdc-copy-tables message per table"
    );
    let mut report = Report::of(results);
    report
        .outputs
        .insert(TABLES_OUTPUT_BINDING.to_string(), messages);
    report
}

/// One `CopyTable` message: the table's window up to the message's trigger time, by the
/// same [`timer_table`] the inline run calls for each table. A message older than the
/// watermark ("stale": a later trigger's message ran first, or this one is a duplicate of
/// one that finished) finds `trigger_time <= last_window_end` and copies nothing ("up to
/// date"), after finishing a pending window if one is recorded, as any run would.
pub async fn run_message(ctx: &Context, message: &TableMessage) -> Report {
    for_each_table(vec![message.table.clone()], 1, |table| async move {
        timer_table(ctx, &table, message.trigger_time).await
    })
    .await
}

fn configured(ctx: &Context) -> Vec<TableRef> {
    ctx.settings
        .tables
        .iter()
        .map(|s| s.table.clone())
        .collect()
}

/// One table from a loaded watermark: finish a recorded window, then copy
/// `(last window end, trigger_time]`. What it commits is added to `result` as it goes.
///
/// A window is read from the instance [`instances::route`] names: the watermark's until the
/// target instance's start LSN, the target from there on. A window that spans the start LSN
/// is copied as two: the rest of the old instance (`[from, start - 1]`, into the blob named
/// [`naming::tail_name`], its window end left at its start so that time does not advance),
/// then the new instance's `[start, to]` into the window's usual blob. Both follow the
/// usual record → commit → advance order, so a crash between them resumes like any other.
pub async fn copy_table(
    ctx: &Context,
    session: &mut dyn CdcSession,
    capture: &Capture,
    mut wm: Watermark,
    trigger_time: DateTime<Utc>,
    result: &mut TableResult,
) -> Result<(), JobError> {
    let target = capture.target();
    let reading = capture.find(&wm.capture_instance).unwrap_or(target);
    result.capture_instance = Some(reading.name.clone());
    result.mode = capture.mode(reading).ok();
    if let TableState::Pending(window) = wm.state.clone() {
        // A pending window is read again, byte for byte, from the instance that recorded it;
        // only if that one is gone does the route decide (the newer one holds its changes
        // when it starts at or before them, otherwise they are lost and the route says so).
        let ci = match capture.find(&wm.capture_instance) {
            Some(ci) => ci,
            None => match instances::route(
                &capture.instances,
                &wm.capture_instance,
                target,
                window.range,
            )? {
                Route::One(ci) | Route::Switch { old: ci, .. } => ci,
            },
        };
        let Some(next) = copy_window(ctx, session, capture, ci, &wm, &window, true, result).await?
        else {
            superseded(result, SUPERSEDED);
            return Ok(());
        };
        wm = next;
        result.note = "finished pending window";
    }

    let window = match plan(ctx, session, target, &wm, trigger_time, result).await? {
        Plan::UpToDate => return Ok(()),
        Plan::Advance { window_end, to } => {
            let reader = instances::reader_after(&wm.capture_instance, target, to).to_string();
            return match advance(ctx, session, &wm, window_end, to, reader, result).await? {
                Some(next) => {
                    note_instance(&wm, &next, result);
                    Ok(())
                }
                None => {
                    superseded(result, SUPERSEDED);
                    Ok(())
                }
            };
        }
        Plan::Copy(window) => window,
    };
    let segments = match instances::route(
        &capture.instances,
        &wm.capture_instance,
        target,
        window.range,
    )? {
        Route::One(ci) => vec![(ci, window)],
        Route::Switch { old, new, at } => {
            let before = at
                .decrement()
                .expect("a start LSN above `from` is not zero");
            let tail = Window {
                range: LsnRange::new(window.range.from(), before).expect("from < at"),
                start: window.start,
                end: window.start,
                blob: naming::tail_name(&window.blob, &old.name),
            };
            let rest = Window {
                range: LsnRange::new(at, window.range.to()).expect("at <= to"),
                ..window
            };
            vec![(old, tail), (new, rest)]
        }
    };
    for (ci, window) in segments {
        match copy_window(ctx, session, capture, ci, &wm, &window, false, result).await? {
            Some(next) => wm = next,
            None => {
                superseded(result, SUPERSEDED);
                return Ok(());
            }
        }
    }
    Ok(())
}

/// Copies `window` from `ci`: streams its changes into the blob's staged blocks, then —
/// without a row and not yet recorded — advances without a blob; otherwise records the
/// window (unless `recorded`, a pending window being finished), commits the blob and
/// advances. `None` when another invocation moved the watermark first.
#[allow(clippy::too_many_arguments)]
async fn copy_window(
    ctx: &Context,
    session: &mut dyn CdcSession,
    capture: &Capture,
    ci: &CaptureInstance,
    wm: &Watermark,
    window: &Window,
    recorded: bool,
    result: &mut TableResult,
) -> Result<Option<Watermark>, JobError> {
    let mode = capture.mode(ci)?;
    result.mode = Some(mode);
    let mut staged = stream_window(ctx, session, ci, mode, window).await?;
    let reader = instances::reader_after(&ci.name, capture.target(), window.range.to()).to_string();
    if !recorded && staged.rows() == 0 {
        // Dropping the sink drops its writer: no block list is ever committed for it.
        drop(staged);
        let to = window.range.to();
        let next = advance(ctx, session, wm, window.end, to, reader, result).await?;
        if let Some(next) = &next {
            note_instance(wm, next, result);
        }
        return Ok(next);
    }
    // A blob will be committed: its schema document first (an idle window touches no blob).
    ctx.publish_schema(ci, &mut staged).await?;
    let recorded = if recorded {
        wm.clone()
    } else {
        let pending = Watermark {
            capture_instance: ci.name.clone(),
            ..wm.next(TableState::Pending(window.clone()), ctx.now())
        };
        match save(session, wm, pending).await? {
            Some(row) => row,
            None => return Ok(None),
        }
    };
    let next = commit_window(ctx, session, &recorded, window, reader, staged, result).await?;
    if let Some(next) = &next {
        note_instance(wm, next, result);
    }
    Ok(next)
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

/// Moves the window end (and the LSN over a range without changes) without a blob; the
/// watermark then names `reader`, the instance that reads the next LSN. `None` when another
/// invocation moved the watermark first.
async fn advance(
    ctx: &Context,
    session: &mut dyn CdcSession,
    wm: &Watermark,
    window_end: DateTime<Utc>,
    to: Lsn,
    reader: String,
    result: &mut TableResult,
) -> Result<Option<Watermark>, JobError> {
    let next = Watermark {
        last_lsn: to,
        last_window_end: window_end,
        capture_instance: reader,
        ..wm.next(TableState::Ready, ctx.now())
    };
    let Some(next) = save(session, wm, next).await? else {
        return Ok(None);
    };
    result.window_end = Some(window_end);
    if result.blobs.is_empty() {
        result.note = "no changes";
    }
    Ok(Some(next))
}

/// Reports the row `after` a window or advance that began from `before`: the instance it
/// names, and the switch if that is a new one (logged once, by the run that saved it).
fn note_instance(before: &Watermark, after: &Watermark, result: &mut TableResult) {
    result.capture_instance = Some(after.capture_instance.clone());
    if before.capture_instance == after.capture_instance {
        return;
    }
    tracing::info!(
        table = %after.table,
        from_instance = %before.capture_instance,
        to_instance = %after.capture_instance,
        last_lsn = %after.last_lsn,
        "switched capture instance: every change up to last_lsn came from the old instance, \
         the rest comes from the new one; the old instance can be disabled"
    );
    result.switched = Some(SwitchFields {
        from: before.capture_instance.clone(),
        to: after.capture_instance.clone(),
        after_lsn: after.last_lsn,
    });
}

/// Commits `window`'s staged blob (the window is recorded in `wm`) and advances the
/// watermark past it; adds what it wrote to `result`. `None` when another invocation moved
/// the watermark first. The one path every window's changes take to the lake.
async fn commit_window(
    ctx: &Context,
    session: &mut dyn CdcSession,
    wm: &Watermark,
    window: &Window,
    reader: String,
    mut staged: FileSink,
    result: &mut TableResult,
) -> Result<Option<Watermark>, JobError> {
    let rows = staged.rows();
    staged.set_metadata("row_count", rows.to_string());
    // A window without rows staged nothing, so the container may not have been needed yet.
    ctx.ensure_container().await?;
    let bytes = staged.finish().await?.bytes;
    let advanced = Watermark {
        capture_instance: reader,
        ..wm.advanced(window, rows, bytes, ctx.now())
    };
    let Some(next) = save(session, wm, advanced).await? else {
        return Ok(None);
    };
    result.note = "copied";
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
pub(crate) async fn wait_for_capture(
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
    result.warn(format!(
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
    mode: ChangeMode,
    window: &Window,
) -> Result<FileSink, JobError> {
    check_available(ci, window.range.from())?;
    let row_filter = match mode {
        ChangeMode::Net => ctx.settings.row_filter.as_sql(),
        ChangeMode::All => ctx.settings.all_row_filter.as_sql(),
    };
    let time = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
    let metadata = vec![
        ("table".to_string(), ci.table.to_string()),
        ("capture_instance".to_string(), ci.name.clone()),
        ("from_lsn".to_string(), window.range.from().to_string()),
        ("to_lsn".to_string(), window.range.to().to_string()),
        ("window_start".to_string(), time(window.start)),
        ("window_end".to_string(), time(window.end)),
        ("mode".to_string(), mode.as_str().to_string()),
        ("row_filter".to_string(), row_filter.to_string()),
        ("columns".to_string(), super::columns_metadata(&ci.columns)),
        ("format_version".to_string(), FORMAT_VERSION.to_string()),
    ];
    let block_size = ctx.settings.block_size;
    let mut writer = ctx.blobs.writer(&window.blob, metadata, block_size);
    // Two runs can stream different ranges under one name (the same trigger time, read
    // from different watermarks) before one of them loses at the record: block IDs of their
    // own keep the loser's staged blocks out of the winner's block list.
    let (from, to) = (window.range.from(), window.range.to());
    writer.block_prefix(BlockPrefix::of(&[&from.0, &to.0]));
    let mut sink = ctx.file_sink(writer, ci.change_columns(mode));
    let mut first_row = ContainerFirst {
        ctx,
        sink: &mut sink,
        ready: false,
    };
    match mode {
        ChangeMode::Net => {
            session
                .net_changes(ci, window.range, ctx.settings.row_filter, &mut first_row)
                .await?
        }
        ChangeMode::All => {
            session
                .all_changes(
                    ci,
                    window.range,
                    ctx.settings.all_row_filter,
                    &mut first_row,
                )
                .await?
        }
    };
    Ok(sink)
}

/// Makes sure the container exists before the first row reaches the blob sink (a block may
/// be staged from then on), so a window without rows does no Blob Storage request at all.
struct ContainerFirst<'a> {
    ctx: &'a Context,
    sink: &'a mut FileSink,
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

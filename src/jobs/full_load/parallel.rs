//! A split full load: its key ranges planned once, when the load starts, and loaded
//! concurrently, one worker and one SQL Server session per range.
//!
//! The plan is written to the range table before the watermark names the load (so a load
//! the watermark names always has its ranges) and in one statement (so two runs can never
//! mix their boundaries). Each range then keeps its own checkpoint; several processes may
//! work on the same load (a `LoadRange` message per range, the CLI, the timer): a part blob
//! is create-only and a range's checkpoint is a conditional update, so a range two workers
//! race on is written once and the loser stops. The watermark moves to the baseline only
//! when the last range is done, whoever finishes it.

use tokio::time::{Duration, Instant};

use super::ranges::{self, KeyRange};
use super::{load_range, split_count, split_load_id, Checkpoint};
use crate::cdc::{CaptureInstance, CdcSession, Lsn, RangeProgress, TableState, Watermark};
use crate::host::RangeMessage;
use crate::jobs::{finish, save, superseded, Context, JobError};
use crate::report::{Report, Status, TableResult};

/// The id of a new load of `ci`'s table starting at `timestamp_id`: split when
/// `CDC_FULL_LOAD_RANGES` allows it and the table is large enough, its plan then recorded
/// in the range table. Keyless tables and small ones are never split.
pub(super) async fn plan(
    ctx: &Context,
    session: &mut dyn CdcSession,
    ci: &CaptureInstance,
    timestamp_id: String,
) -> Result<String, JobError> {
    let max = ctx.settings.full_load_ranges;
    if ci.key_columns.is_empty() || max <= 1 {
        return Ok(timestamp_id);
    }
    let rows = session.table_rows(&ci.table).await?;
    let wanted = ranges::count(rows, max, ctx.settings.full_load_range_min_rows);
    if wanted <= 1 {
        return Ok(timestamp_id);
    }
    let sample = session
        .sample_keys(ci, ranges::sample_percent(rows, wanted))
        .await?;
    let bounds = ranges::split(&sample, wanted);
    if bounds.len() <= 1 {
        return Ok(timestamp_id);
    }
    let load_id = split_load_id(&timestamp_id, bounds.len());
    let now = ctx.now();
    let plan: Vec<RangeProgress> = bounds
        .into_iter()
        .enumerate()
        .map(|(i, KeyRange { after, upto })| RangeProgress {
            table: ci.table.clone(),
            load_id: load_id.clone(),
            range: i as u32,
            after,
            upto,
            parts_done: 0,
            last_key: None,
            rows_done: 0,
            bytes_done: 0,
            done: false,
            version: 0,
            updated_at: now,
        })
        .collect();
    // `false`: a run that started in the same millisecond planned this load first; its
    // boundaries stand (every worker reads them back).
    let inserted = session.insert_ranges(&plan).await?;
    tracing::info!(table = %ci.table, load_id, ranges = plan.len(), estimated_rows = rows, sample = sample.len(), inserted, "full load split into key ranges");
    Ok(load_id)
}

/// Loads every range of the split load in `wm` not done yet, concurrently, until each is
/// done or `deadline` passes; completes the watermark when all are done.
pub(super) async fn load(
    ctx: &Context,
    session: &mut dyn CdcSession,
    ci: &CaptureInstance,
    wm: Watermark,
    deadline: Instant,
    result: &mut TableResult,
) -> Result<Watermark, JobError> {
    let TableState::Loading(progress) = wm.state.clone() else {
        return Ok(wm);
    };
    let load_id = progress.load_id.clone();
    let read = read_plan(session, ci, &load_id).await?;
    let workers: Vec<_> = read
        .into_iter()
        .filter(|r| !r.done)
        .map(|range| {
            let (ctx, ci, table) = (ctx.clone(), ci.clone(), result.table.clone());
            let baseline = progress.baseline_lsn;
            tokio::spawn(async move {
                let mut done = TableResult::new(&table, Status::InProgress, "");
                let outcome = work(&ctx, &ci, baseline, range, deadline, &mut done).await;
                (done, outcome)
            })
        })
        .collect();
    let mut failure = None;
    for joined in futures::future::join_all(workers).await {
        let (worker, outcome) =
            joined.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
        result.blobs.extend(worker.blobs);
        if let Err(e) = outcome {
            failure.get_or_insert(e);
        }
    }
    let ranges = read_plan(session, ci, &load_id).await?;
    result.rows = ranges.iter().map(|r| r.rows_done).sum();
    result.bytes = ranges.iter().map(|r| r.bytes_done).sum();
    result.parts = Some(ranges.iter().map(|r| r.parts_done).sum());
    if let Some(e) = failure {
        return Err(e);
    }
    if !ranges.iter().all(|r| r.done) {
        return Ok(wm);
    }
    complete(ctx, session, ci, wm, &ranges, progress.baseline_lsn, result).await
}

/// One message per range of the split load `load_id` not done yet.
pub(super) async fn messages(
    session: &mut dyn CdcSession,
    ci: &CaptureInstance,
    load_id: &str,
) -> Result<Vec<RangeMessage>, JobError> {
    Ok(read_plan(session, ci, load_id)
        .await?
        .into_iter()
        .filter(|r| !r.done)
        .map(|r| RangeMessage {
            table: r.table,
            load_id: r.load_id,
            range: r.range,
        })
        .collect())
}

/// `LoadRange`: loads the one range `message` names until it is done or `budget` is spent
/// (then its message goes back on the queue through the report's `ranges` output), and
/// completes the watermark if it was the last. A message of a load that is finished or was
/// replaced (a reset) does nothing.
pub async fn run_range(ctx: &Context, message: &RangeMessage, budget: Duration) -> Report {
    let deadline = Instant::now() + budget;
    let mut result = TableResult::new(&message.table, Status::InProgress, RANGE_IN_PROGRESS);
    let outcome = one_range(ctx, message, deadline, &mut result).await;
    let requeue = outcome.is_ok() && result.status == Status::InProgress;
    let mut report = Report::of(vec![finish(result, outcome)]);
    if requeue {
        report.outputs.insert(
            crate::host::payload::RANGES_OUTPUT_BINDING.to_string(),
            vec![serde_json::to_value(message).expect("a range message serializes")],
        );
    }
    report
}

const RANGE_IN_PROGRESS: &str =
    "in progress: the range continues from its checkpoint in the LoadRange message sent again";

/// A range message of a load the watermark no longer names.
pub const RANGE_OF_ANOTHER_LOAD: &str =
    "superseded: the message's load is finished or was replaced; nothing to do";

async fn one_range(
    ctx: &Context,
    message: &RangeMessage,
    deadline: Instant,
    result: &mut TableResult,
) -> Result<(), JobError> {
    let (mut session, capture) = ctx.open(&message.table).await?;
    let wm = session.read_watermark(&message.table).await?;
    let Some(wm) =
        wm.filter(|w| matches!(&w.state, TableState::Loading(p) if p.load_id == message.load_id))
    else {
        result.status = Status::Superseded;
        result.note = RANGE_OF_ANOTHER_LOAD;
        return Ok(());
    };
    let TableState::Loading(progress) = wm.state.clone() else {
        unreachable!("filtered above")
    };
    let ci = capture
        .find(&wm.capture_instance)
        .unwrap_or_else(|| capture.target());
    result.capture_instance = Some(ci.name.clone());
    result.baseline_lsn = Some(progress.baseline_lsn);
    ctx.ensure_container().await?;
    let plan = read_plan(session.as_mut(), ci, &message.load_id).await?;
    let Some(range) = plan.into_iter().find(|r| r.range == message.range) else {
        return Err(JobError::RangesMissing {
            table: message.table.clone(),
            load_id: message.load_id.clone(),
            expected: split_count(&message.load_id),
            found: 0,
        });
    };
    if !range.done {
        let checkpoint = Checkpoint::Range(range);
        let left = load_range(
            ctx,
            session.as_mut(),
            ci,
            progress.baseline_lsn,
            checkpoint,
            deadline,
            result,
        )
        .await?;
        match left {
            None => return Ok(()),
            Some(c) if !c.done() => return Ok(()),
            Some(_) => {}
        }
    }
    let ranges = read_plan(session.as_mut(), ci, &message.load_id).await?;
    if ranges.iter().all(|r| r.done) {
        result.rows = ranges.iter().map(|r| r.rows_done).sum();
        result.bytes = ranges.iter().map(|r| r.bytes_done).sum();
        result.parts = Some(ranges.iter().map(|r| r.parts_done).sum());
        complete(
            ctx,
            session.as_mut(),
            ci,
            wm,
            &ranges,
            progress.baseline_lsn,
            result,
        )
        .await?;
    } else {
        result.status = Status::Done;
        result.note = "range loaded; other ranges of the load are still in progress";
    }
    Ok(())
}

/// One worker: its own session, one range.
async fn work(
    ctx: &Context,
    ci: &CaptureInstance,
    baseline: Lsn,
    range: RangeProgress,
    deadline: Instant,
    result: &mut TableResult,
) -> Result<(), JobError> {
    let mut session = ctx.source.session().await?;
    let checkpoint = Checkpoint::Range(range);
    load_range(
        ctx,
        session.as_mut(),
        ci,
        baseline,
        checkpoint,
        deadline,
        result,
    )
    .await?;
    Ok(())
}

/// The load's ranges, all of them or [`JobError::RangesMissing`].
pub(crate) async fn read_plan(
    session: &mut dyn CdcSession,
    ci: &CaptureInstance,
    load_id: &str,
) -> Result<Vec<RangeProgress>, JobError> {
    let ranges = session.read_ranges(&ci.table, load_id).await?;
    let expected = split_count(load_id);
    let complete = ranges.len() == expected as usize
        && ranges.iter().enumerate().all(|(i, r)| r.range == i as u32);
    if !complete {
        return Err(JobError::RangesMissing {
            table: ci.table.clone(),
            load_id: load_id.to_string(),
            expected,
            found: ranges.len(),
        });
    }
    Ok(ranges)
}

/// Every range is done: the watermark moves to the baseline with the load's totals (unless
/// another worker did it first, or a reset replaced the load), and the range rows of older
/// loads go.
async fn complete(
    ctx: &Context,
    session: &mut dyn CdcSession,
    ci: &CaptureInstance,
    wm: Watermark,
    ranges: &[RangeProgress],
    baseline: Lsn,
    result: &mut TableResult,
) -> Result<Watermark, JobError> {
    let next = Watermark {
        rows_copied: wm.rows_copied + result.rows,
        bytes_copied: wm.bytes_copied + result.bytes,
        ..wm.next(TableState::Ready, ctx.now())
    };
    let saved = match save(session, &wm, next).await? {
        Some(saved) => saved,
        None => match session.read_watermark(&ci.table).await? {
            // Another worker finished the same load first.
            Some(now) if now.state == TableState::Ready && now.last_lsn == baseline => now,
            _ => {
                superseded(result, super::SUPERSEDED);
                return Ok(wm);
            }
        },
    };
    if let Some(first) = ranges.first() {
        session
            .delete_other_ranges(&ci.table, &first.load_id)
            .await?;
    }
    tracing::info!(table = %ci.table, ranges = ranges.len(), rows = result.rows, "full load finished");
    result.status = Status::Done;
    result.note = "loaded";
    Ok(saved)
}

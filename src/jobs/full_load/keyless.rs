//! The full load of a table without a primary key or unique index.
//!
//! Such a table cannot be read in resumable keyset parts (there is no key to seek past), and
//! its consumers cannot upsert by key either, so a row that is both in the load and in the
//! first changes would be a duplicate for good. So the load is one statement that reads the
//! whole table under a shared table lock ([`CdcSession::scan_locked`]); while the lock is
//! held no change to the table can commit, so after the scan the job waits for the capture
//! process to pass the server's current time and takes the baseline LSN then: every change in
//! the load is at or below it, every later change above it. The lock is released before the
//! blob is committed.
//!
//! The price, stated in the README: writers to the table wait for the whole scan and the
//! capture wait, and the load must finish within one invocation (the whole table is one blob,
//! committed create-only like a keyed part, so of two invocations loading at once one blob
//! wins and the other adopts it with its baseline).

use async_trait::async_trait;
use tokio::time::Instant;

use super::{save, superseded, Context, JobError, FORMAT_VERSION, SUPERSEDED};
use crate::cdc::{
    CaptureInstance, CdcError, CdcSession, Lsn, RowSink, RowSinkError, TableState, Value, Watermark,
};
use crate::report::{Status, TableResult};
use crate::sink::naming;

/// How often (in rows) the scan checks the clock.
const CLOCK_EVERY: u64 = 1024;

/// Loads the whole table into part 0 of the load in `wm`, then marks it ready at the
/// baseline. Returns the watermark it left.
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
    let name = naming::full_load_part_name(
        &ci.table,
        &progress.load_id,
        0,
        ctx.settings.format.extension(),
    );
    let metadata = vec![
        ("table".to_string(), ci.table.to_string()),
        ("capture_instance".to_string(), ci.name.clone()),
        ("part".to_string(), "0".to_string()),
        ("parts".to_string(), "1".to_string()),
        (
            "columns".to_string(),
            super::super::columns_metadata(&ci.columns),
        ),
        ("format_version".to_string(), FORMAT_VERSION.to_string()),
    ];
    let mut writer = ctx.blobs.writer(&name, metadata, ctx.settings.block_size);
    writer.create_only();
    let mut sink = ctx.file_sink(writer, ci.load_columns());
    let budget = deadline.saturating_duration_since(Instant::now());
    let mut bounded = Bounded {
        sink: &mut sink,
        deadline,
        rows: 0,
    };
    // On any error the session is dropped with its connection, which rolls the transaction
    // back and releases the lock.
    let rows = match session.scan_locked(ci, &mut bounded).await {
        Ok(rows) => rows,
        Err(CdcError::Sink(e)) if e.downcast_ref::<OutOfTime>().is_some() => {
            return Err(JobError::KeylessLoadTooLong {
                table: ci.table.clone(),
                budget,
                rows: bounded.rows,
            })
        }
        Err(e) => return Err(e.into()),
    };
    let baseline = baseline_under_lock(ctx, session, ci).await?;
    session.release_lock().await?;
    tracing::info!(table = %ci.table, rows, %baseline, "keyless table scanned under a table lock; lock released");

    sink.set_metadata("row_count", rows.to_string());
    sink.set_metadata("baseline_lsn", baseline.to_string());
    // Published after the scan: a load that runs out of time writes nothing.
    ctx.publish_schema(ci, &mut sink).await?;
    let (rows, bytes, baseline) = match sink.finish().await {
        Ok(summary) => (rows, summary.bytes, baseline),
        Err(e) if e.is_already_exists() => {
            let adopted = adopt(ctx, &name).await?;
            tracing::info!(table = %ci.table, blob = %name, rows = adopted.0, "load already committed by another run; adopted");
            adopted
        }
        Err(e) => return Err(e.into()),
    };
    let next = Watermark {
        last_lsn: baseline,
        rows_copied: wm.rows_copied + rows,
        bytes_copied: wm.bytes_copied + bytes,
        ..wm.next(TableState::Ready, ctx.now())
    };
    let Some(next) = save(session, &wm, next).await? else {
        superseded(result, SUPERSEDED);
        return Ok(wm);
    };
    result.rows = next.rows_copied;
    result.bytes = next.bytes_copied;
    result.parts = Some(1);
    result.baseline_lsn = Some(baseline);
    result.blobs.push(name);
    result.status = Status::Done;
    result.note = "loaded";
    tracing::info!(table = %ci.table, "full load finished");
    Ok(next)
}

/// With the table lock held: waits for the capture process to pass the server's current
/// time, then gives the baseline (every change to the table committed before the lock is at
/// or below it, and none can commit until the lock is released).
async fn baseline_under_lock(
    ctx: &Context,
    session: &mut dyn CdcSession,
    ci: &CaptureInstance,
) -> Result<Lsn, JobError> {
    let server_now = session.capture_progress(ctx.now()).await?.server_now;
    let (progress, passed) =
        super::super::incremental::wait_for_capture(ctx, session, ci, server_now).await?;
    if !passed {
        return Err(JobError::CaptureBehind {
            table: ci.table.clone(),
            at: server_now,
            waited: ctx.settings.capture_wait,
        });
    }
    Ok(crate::window::baseline(progress.max_lsn, ci.min_lsn))
}

/// Rows, bytes and baseline of a load another run committed, from its metadata.
async fn adopt(ctx: &Context, name: &str) -> Result<(u64, u64, Lsn), JobError> {
    let committed = super::Committed::read(ctx, name).await?;
    let rows = committed.field("row_count")?;
    let baseline = committed.field("baseline_lsn")?;
    Ok((rows, committed.size(), baseline))
}

/// The scan ran past the invocation's budget.
#[derive(Debug, thiserror::Error)]
#[error("the invocation's time budget ran out during the scan")]
struct OutOfTime;

/// Passes rows on until `deadline`, then refuses (definite: a later invocation would have to
/// start the scan again, and take as long).
struct Bounded<'a> {
    sink: &'a mut dyn RowSink,
    deadline: Instant,
    rows: u64,
}

#[async_trait]
impl RowSink for Bounded<'_> {
    async fn columns(&mut self, names: &[String]) -> Result<(), RowSinkError> {
        self.sink.columns(names).await
    }

    async fn row(&mut self, row: &[Value]) -> Result<(), RowSinkError> {
        if self.rows.is_multiple_of(CLOCK_EVERY) && Instant::now() >= self.deadline {
            return Err(RowSinkError::new(OutOfTime, false));
        }
        self.rows += 1;
        self.sink.row(row).await
    }
}

//! FullLoad: the snapshot that incremental windows continue from.
//!
//! The baseline LSN is read before the scan, so every change after it goes to the incremental
//! side (rows changed during the scan may appear in both; consumers upsert by key). The table
//! is read in key order in parts of `CDC_FULL_LOAD_PART_ROWS` rows, each its own blob and its
//! own keyset query, with a checkpoint (part number, last key) in the watermark row after each
//! committed part. That makes a load resumable: an HTTP call works for at most
//! `CDC_FULL_LOAD_HTTP_BUDGET_SECONDS` and answers 202, and the next IncrementalCopy
//! invocation (or another FullLoad call, or `handler full-load`) carries on from the
//! checkpoint — nothing depends on the HTTP request staying open.

use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::json;

use super::{for_each_table, Context, JobError, Step, TableOutcome, TableStatus, FORMAT_VERSION};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;

use crate::cdc::{CaptureInstance, CdcSession, FullLoadProgress, TableRef, Value, Watermark};
use crate::host::{FullLoadRequest, JobReport};
use crate::sink::naming;
use crate::sink::SinkError;

/// How long an IncrementalCopy invocation spends on a handed-off full load (the default
/// functionTimeout is 30 minutes).
pub const TIMER_BUDGET: Duration = Duration::from_secs(20 * 60);

/// A part's last key for blob metadata (printable ASCII): base64 of its JSON; empty for none.
fn encode_key(key: Option<&[Value]>) -> String {
    key.map(|k| BASE64.encode(serde_json::to_vec(k).expect("values serialize")))
        .unwrap_or_default()
}

/// The (rows, last key, bytes) of a part another run committed, from its metadata.
async fn adopt_part(ctx: &Context, name: &str) -> Result<(u64, Option<Vec<Value>>, u64), JobError> {
    let corrupt = |what: &str| {
        SinkError::Other(format!("full-load part {name} exists but its {what} metadata is unreadable; delete the load folder and run FullLoad with \"reset\": true"))
    };
    let info = ctx
        .blobs
        .properties(name)
        .await?
        .ok_or_else(|| corrupt("blob"))?;
    let rows = info
        .metadata
        .get("row_count")
        .and_then(|r| r.parse().ok())
        .ok_or_else(|| corrupt("row_count"))?;
    let key = match info.metadata.get("last_key").map(String::as_str) {
        None => return Err(corrupt("last_key").into()),
        Some("") => None,
        Some(text) => Some(
            BASE64
                .decode(text)
                .ok()
                .and_then(|json| serde_json::from_slice(&json).ok())
                .ok_or_else(|| corrupt("last_key"))?,
        ),
    };
    Ok((rows, key, info.size))
}

/// Where a load stands after an invocation's share of work.
#[derive(Debug)]
pub enum LoadProgress {
    /// All parts committed; the watermark now starts incremental copy at the baseline.
    Finished(Watermark),
    /// The budget ran out; the checkpoint is recorded.
    Paused(Watermark),
    /// Another invocation moved the watermark first.
    Superseded,
}

/// Starts (or resumes) a full load of each requested table.
pub async fn run(ctx: &Context, request: &FullLoadRequest, budget: Duration) -> JobReport {
    let tables = if request.tables.is_empty() {
        ctx.settings
            .tables
            .iter()
            .map(|s| s.table.clone())
            .collect()
    } else {
        request.tables.clone()
    };
    let deadline = Instant::now() + budget;
    for_each_table(tables, ctx.settings.table_concurrency, |table| async move {
        let started = Instant::now();
        match load_table(ctx, &table, request.reset, deadline).await {
            Ok(progress) => outcome(&table, progress, started.elapsed()),
            Err(error) => TableOutcome::failed(&table, &error),
        }
    })
    .await
}

fn outcome(table: &TableRef, progress: LoadProgress, elapsed: Duration) -> TableOutcome {
    let (status, wm, note) = match progress {
        LoadProgress::Finished(wm) => (TableStatus::Done, Some(wm), "loaded"),
        LoadProgress::Paused(wm) => (
            TableStatus::InProgress,
            Some(wm),
            "in progress: the next IncrementalCopy run or FullLoad call continues from the checkpoint",
        ),
        LoadProgress::Superseded => (TableStatus::Superseded, None, "superseded: another invocation is loading this table"),
    };
    let (rows, parts, baseline) = match &wm {
        Some(Watermark {
            full_load: Some(p), ..
        }) => (p.rows_done, p.parts_done, p.baseline_lsn),
        Some(wm) => (wm.rows_copied, 0, wm.last_lsn),
        None => (0, 0, Default::default()),
    };
    tracing::info!(table = %table, rows, parts, baseline = %baseline, elapsed_ms = elapsed.as_millis() as u64, note, "full load");
    TableOutcome {
        table: table.clone(),
        line: format!(
            "{table}: full load {note}: {rows} rows, baseline LSN {baseline}, {:.3}s",
            elapsed.as_secs_f64()
        ),
        json: json!({
            "table": table.to_string(),
            "status": status.as_str(),
            "rows": rows,
            "baselineLsn": baseline.to_string(),
            "note": note,
            "durationMs": elapsed.as_millis() as u64,
        }),
        status,
    }
}

async fn load_table(
    ctx: &Context,
    table: &TableRef,
    reset: bool,
    deadline: Instant,
) -> Result<LoadProgress, JobError> {
    let spec = ctx.spec(table).ok_or_else(|| JobError::NotConfigured {
        table: table.clone(),
    })?;
    let mut session = ctx.source.session().await?;
    let ci = session
        .capture_instance(table, spec.capture_instance.as_deref())
        .await?;
    let existing = session.read_watermark(table).await?;
    let wm = match existing {
        Some(wm) if wm.full_load.is_some() && !reset => wm,
        Some(wm) if !reset => {
            return Err(JobError::AlreadyLoaded {
                table: table.clone(),
                last_lsn: wm.last_lsn,
            })
        }
        existing => {
            // Baseline before the scan: everything after it is the incremental side's.
            let max_lsn = session.max_lsn().await?;
            let baseline = crate::window::baseline(max_lsn, ci.min_lsn);
            let now = ctx.now();
            let mut fresh = Watermark {
                table: table.clone(),
                capture_instance: ci.name.clone(),
                last_lsn: baseline,
                last_window_end: now,
                pending: None,
                full_load: Some(FullLoadProgress {
                    load_id: naming::timestamp_id(now),
                    baseline_lsn: baseline,
                    parts_done: 0,
                    last_key: None,
                    rows_done: 0,
                }),
                rows_copied: 0,
                bytes_copied: 0,
                version: 0,
                updated_at: now,
            };
            let recorded = match existing {
                None => session.insert_watermark(&fresh).await?,
                Some(old) => {
                    fresh.version = old.version + 1;
                    session.update_watermark(old.version, &fresh).await?
                }
            };
            if !recorded {
                return Ok(LoadProgress::Superseded);
            }
            fresh
        }
    };
    let budget = deadline.saturating_duration_since(Instant::now());
    continue_load(ctx, session.as_mut(), &ci, wm, budget).await
}

/// Writes parts from the checkpoint in `wm` until the table is done or `budget` is spent
/// (checked between parts; at least one part is written per call).
pub async fn continue_load(
    ctx: &Context,
    session: &mut dyn CdcSession,
    ci: &CaptureInstance,
    mut wm: Watermark,
    budget: Duration,
) -> Result<LoadProgress, JobError> {
    let deadline = Instant::now() + budget;
    ctx.ensure_container().await?;
    let part_rows = ctx.settings.full_load_part_rows.max(1);
    loop {
        let progress = wm
            .full_load
            .clone()
            .expect("continue_load needs a load in progress");
        let name = naming::full_load_part_name(&ci.table, &progress.load_id, progress.parts_done);
        let metadata = vec![
            ("table".to_string(), ci.table.to_string()),
            ("capture_instance".to_string(), ci.name.clone()),
            (
                "baseline_lsn".to_string(),
                progress.baseline_lsn.to_string(),
            ),
            ("part".to_string(), progress.parts_done.to_string()),
            ("format_version".to_string(), FORMAT_VERSION.to_string()),
        ];
        let block_size = ctx.settings.block_size;
        let mut writer = ctx.blobs.writer(&name, metadata, block_size);
        // Create-only: of two invocations continuing the same load, one part version wins and
        // the other adopts it, so the checkpoint always matches the committed part.
        writer.create_only();
        let mut sink = ctx.csv_sink(&ci.table, writer);
        let (mut rows, mut last_key) = session
            .scan(ci, progress.last_key.as_deref(), part_rows, &mut sink)
            .await?;
        // A table whose row count is a multiple of the part size would end with an empty
        // part; skip it unless it is the only one (an empty table still gets its header).
        let write = rows > 0 || progress.parts_done == 0;
        let mut bytes = 0;
        if write {
            ctx.step(&ci.table, Step::BlocksStaged)?;
            sink.set_metadata("row_count", rows.to_string());
            sink.set_metadata("last_key", encode_key(last_key.as_deref()));
            match sink.finish().await {
                Ok(summary) => bytes = summary.bytes,
                Err(e) if e.is_already_exists() => {
                    (rows, last_key, bytes) = adopt_part(ctx, &name).await?;
                    tracing::info!(table = %ci.table, blob = %name, rows, "part already committed by another run; adopted");
                }
                Err(e) => return Err(e.into()),
            }
            ctx.step(&ci.table, Step::PartCommitted)?;
        }
        let done = rows < part_rows;
        let mut next = wm.clone();
        next.version = wm.version + 1;
        next.updated_at = ctx.now();
        next.rows_copied += rows;
        next.bytes_copied += bytes;
        if done {
            next.full_load = None;
        } else {
            next.full_load = Some(FullLoadProgress {
                parts_done: progress.parts_done + 1,
                last_key,
                rows_done: progress.rows_done + rows,
                ..progress
            });
        }
        if !session.update_watermark(wm.version, &next).await? {
            return Ok(LoadProgress::Superseded);
        }
        if done {
            tracing::info!(table = %ci.table, at = %Utc::now(), "full load finished");
            return Ok(LoadProgress::Finished(next));
        }
        wm = next;
        if Instant::now() >= deadline {
            return Ok(LoadProgress::Paused(wm));
        }
    }
}

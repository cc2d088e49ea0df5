//! FullLoad: the copy of every row that incremental windows continue from.
//!
//! The baseline LSN is read before the scan, so every change after it goes to the incremental
//! side (rows changed during the scan may appear in both; consumers upsert by key). The table
//! is read in key order in parts of `CDC_FULL_LOAD_PART_ROWS` rows, each its own blob and its
//! own keyset query, with a checkpoint (part number, last key) in the watermark row after each
//! committed part. That makes a load resumable: an HTTP call works for at most
//! `CDC_FULL_LOAD_HTTP_BUDGET_SECONDS` and answers 202, and the next IncrementalCopy
//! invocation (or another FullLoad call, or `handler full-load`) carries on from the
//! checkpoint — nothing depends on the HTTP request staying open.
//!
//! A table without a key has no keyset to resume from and no key for consumers to upsert
//! on, so it is loaded differently: in one statement under a table lock, with the baseline
//! taken after the scan (`keyless`).

use chrono::Utc;
use tokio::time::{Duration, Instant};

mod keyless;
mod parallel;
pub use parallel::{run_range, RANGE_OF_ANOTHER_LOAD};
pub mod ranges;

use super::{finish, for_each_table, save, superseded, Capture, Context, JobError, FORMAT_VERSION};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;

use crate::cdc::{
    CaptureInstance, CdcSession, FullLoadProgress, Lsn, RangeProgress, TableRef, TableState, Value,
    Watermark,
};
use crate::host::{FullLoadRequest, RangeMessage};
use crate::report::{Report, Status, TableResult};
use crate::sink::naming;
use crate::sink::SinkError;

pub(super) const SUPERSEDED: &str = "superseded: another invocation is loading this table";

/// A part's last key for blob metadata (printable ASCII): base64 of its JSON; empty for none.
fn encode_key(key: Option<&[Value]>) -> String {
    key.map(|k| BASE64.encode(serde_json::to_vec(k).expect("values serialize")))
        .unwrap_or_default()
}

/// A committed part: what the checkpoint after it records.
struct Part {
    rows: u64,
    /// The key of its last row; `None` for an empty part.
    last_key: Option<Vec<Value>>,
    bytes: u64,
}

/// A full-load blob another run committed: its size and metadata, read to adopt it.
pub(super) struct Committed {
    name: String,
    size: u64,
    metadata: std::collections::BTreeMap<String, String>,
}

impl Committed {
    pub(super) async fn read(ctx: &Context, name: &str) -> Result<Committed, JobError> {
        let info = ctx.blobs.properties(name).await?;
        let committed = Committed {
            name: name.to_string(),
            size: 0,
            metadata: Default::default(),
        };
        let info = info.ok_or_else(|| committed.corrupt("blob"))?;
        Ok(Committed {
            size: info.size,
            metadata: info.metadata,
            ..committed
        })
    }

    pub(super) fn size(&self) -> u64 {
        self.size
    }

    /// Metadata `key`, parsed; an error naming it when missing or unreadable.
    pub(super) fn field<T: std::str::FromStr>(&self, key: &str) -> Result<T, SinkError> {
        self.metadata
            .get(key)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| self.corrupt(key))
    }

    fn corrupt(&self, what: &str) -> SinkError {
        SinkError::Other(format!("full-load part {} exists but its {what} metadata is unreadable; delete the load folder and run FullLoad with \"reset\": true", self.name))
    }
}

/// A part another run committed, from its metadata.
async fn adopt_part(ctx: &Context, name: &str) -> Result<Part, JobError> {
    let committed = Committed::read(ctx, name).await?;
    let rows = committed.field("row_count")?;
    let key = match committed.metadata.get("last_key").map(String::as_str) {
        None => return Err(committed.corrupt("last_key").into()),
        Some("") => None,
        Some(text) => Some(
            BASE64
                .decode(text)
                .ok()
                .and_then(|json| serde_json::from_slice(&json).ok())
                .ok_or_else(|| committed.corrupt("last_key"))?,
        ),
    };
    Ok(Part {
        rows,
        last_key: key,
        bytes: committed.size(),
    })
}

/// Starts (or resumes) a full load of each requested table, working until `budget` is spent.
/// Every range of a split load is loaded here, concurrently (the CLI, and FullLoad with
/// `CDC_FANOUT=inline`).
pub async fn run(ctx: &Context, request: &FullLoadRequest, budget: Duration) -> Report {
    run_with(ctx, request, budget, false).await
}

/// [`run`] for the FullLoad function with `CDC_FANOUT=queue`: a split load's ranges not done
/// yet go to the `cdc-copy-ranges` queue, one message each (the report's `ranges` output),
/// for `LoadRange` on as many instances as the host scales out to; the answer is 202 with
/// the ranges. A load that is not split runs here as always.
pub async fn run_queued(ctx: &Context, request: &FullLoadRequest, budget: Duration) -> Report {
    run_with(ctx, request, budget, true).await
}

async fn run_with(
    ctx: &Context,
    request: &FullLoadRequest,
    budget: Duration,
    queue: bool,
) -> Report {
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
    let queued = std::sync::Mutex::new(Vec::new());
    let queued_ref = queue.then_some(&queued);
    let mut report = for_each_table(tables, ctx.settings.table_concurrency, |table| async move {
        let mut result = TableResult::new(&table, Status::InProgress, IN_PROGRESS);
        let outcome = load_table(
            ctx,
            &table,
            request.reset,
            deadline,
            queued_ref,
            &mut result,
        )
        .await;
        finish(result, outcome)
    })
    .await;
    let messages = queued.into_inner().unwrap_or_else(|e| e.into_inner());
    if !messages.is_empty() {
        report.outputs.insert(
            crate::host::payload::RANGES_OUTPUT_BINDING.to_string(),
            messages
                .iter()
                .map(|m| serde_json::to_value(m).expect("a range message serializes"))
                .collect(),
        );
    }
    report
}

/// The note of a table whose ranges went to the queue.
pub const RANGES_QUEUED: &str =
    "in progress: the key ranges still to load were sent to the cdc-copy-ranges queue (LoadRange)";

async fn load_table(
    ctx: &Context,
    table: &TableRef,
    reset: bool,
    deadline: Instant,
    queue: Option<&std::sync::Mutex<Vec<RangeMessage>>>,
    result: &mut TableResult,
) -> Result<(), JobError> {
    let (mut session, capture) = ctx.open(table).await?;
    capture.warn_about_ddl(result);
    let ci = capture.target();
    result.capture_instance = Some(ci.name.clone());
    result.mode = capture.mode(ci).ok();
    let wm = match session.read_watermark(table).await? {
        Some(wm) if !reset && matches!(wm.state, TableState::Loading(_)) => wm,
        Some(wm) if !reset => {
            return Err(JobError::AlreadyLoaded {
                table: table.clone(),
                last_lsn: wm.last_lsn,
            })
        }
        existing => match start(ctx, session.as_mut(), ci, existing).await? {
            Some(wm) => wm,
            None => {
                superseded(result, SUPERSEDED);
                return Ok(());
            }
        },
    };
    if let (Some(queue), TableState::Loading(progress)) = (queue, &wm.state) {
        if split_count(&progress.load_id) > 1 {
            let ci = capture.find(&wm.capture_instance).unwrap_or(ci);
            let messages = parallel::messages(session.as_mut(), ci, &progress.load_id).await?;
            result.baseline_lsn = Some(progress.baseline_lsn);
            result.note = RANGES_QUEUED;
            tracing::info!(table = %table, load_id = %progress.load_id, ranges = messages.len(), "{RANGES_QUEUED}");
            queue
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend(messages);
            return Ok(());
        }
    }
    match continue_load(ctx, session.as_mut(), &capture, wm, deadline, result).await {
        // Over HTTP (or from the CLI) the budget is short; the timer's is 20 minutes.
        Err(JobError::KeylessLoadTooLong { rows, .. }) => {
            tracing::info!(table = %table, rows_read = rows, "{KEYLESS_HANDED_OFF}");
            result.status = Status::InProgress;
            result.note = KEYLESS_HANDED_OFF;
            Ok(())
        }
        other => other.map(|_| ()),
    }
}

/// Records a new load (replacing `existing`, a reset): the baseline is read before the scan,
/// so everything after it is the incremental side's. `None` when another run won the row.
async fn start(
    ctx: &Context,
    session: &mut dyn CdcSession,
    ci: &CaptureInstance,
    existing: Option<Watermark>,
) -> Result<Option<Watermark>, JobError> {
    let max_lsn = session.max_lsn().await?.ok_or_else(|| {
        ctx.capture_not_started(&ci.table, "sys.fn_cdc_get_max_lsn() is NULL".to_string())
    })?;
    let baseline = crate::window::baseline(max_lsn, ci.min_lsn);
    let now = ctx.now();
    // The plan (a split load's ranges) is recorded before the watermark names the load.
    let load_id = parallel::plan(ctx, session, ci, naming::timestamp_id(now)).await?;
    let fresh = Watermark {
        table: ci.table.clone(),
        capture_instance: ci.name.clone(),
        last_lsn: baseline,
        last_window_end: now,
        state: TableState::Loading(FullLoadProgress {
            load_id,
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
    match existing {
        None => Ok(session.insert_watermark(&fresh).await?.then_some(fresh)),
        Some(old) => {
            let fresh = Watermark {
                version: old.version + 1,
                ..fresh
            };
            save(session, &old, fresh).await
        }
    }
}

/// Writes parts from the checkpoint in `wm` (a load in progress) until the table is done
/// (`result` becomes `Done`, the watermark `Ready` at the baseline) or `deadline` passes
/// (checked between parts; at least one part per call). Returns the watermark it left.
///
/// The load reads the columns of the instance it started with (the watermark's), so all its
/// parts have the same columns; a newer instance takes over in the incremental copy.
pub async fn continue_load(
    ctx: &Context,
    session: &mut dyn CdcSession,
    capture: &Capture,
    wm: Watermark,
    deadline: Instant,
    result: &mut TableResult,
) -> Result<Watermark, JobError> {
    let ci = capture
        .find(&wm.capture_instance)
        .unwrap_or_else(|| capture.target());
    ctx.ensure_container().await?;
    if ci.key_columns.is_empty() {
        return keyless::load(ctx, session, ci, wm, deadline, result).await;
    }
    keyed_parts(ctx, session, ci, wm, deadline, result).await
}

/// [`continue_load`] of a table with a key: resumable parts in key order, one stream per
/// key range. A load that is not split has one range whose checkpoint is the watermark row
/// itself; a split load's ranges are rows of the range table, loaded concurrently, each by
/// its own worker and session, and the watermark completes when the last range is done.
async fn keyed_parts(
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
    result.baseline_lsn = Some(progress.baseline_lsn);
    if split_count(&progress.load_id) <= 1 {
        let checkpoint = Checkpoint::Watermark(wm.clone());
        let baseline = progress.baseline_lsn;
        return match load_range(ctx, session, ci, baseline, checkpoint, deadline, result).await? {
            Some(Checkpoint::Watermark(next)) => Ok(next),
            _ => Ok(wm),
        };
    }
    parallel::load(ctx, session, ci, wm, deadline, result).await
}

/// How many ranges load `load_id` was split into: a split load's id ends in `-r<N>`
/// ([`split_load_id`]); a load that is not split has a plain timestamp id (1).
pub fn split_count(load_id: &str) -> u32 {
    load_id
        .rsplit_once("-r")
        .and_then(|(_, n)| n.parse().ok())
        .filter(|&n| n > 1)
        .unwrap_or(1)
}

/// The id of a load split into `ranges` ranges (see [`split_count`]).
pub fn split_load_id(timestamp_id: &str, ranges: usize) -> String {
    if ranges > 1 {
        format!("{timestamp_id}-r{ranges}")
    } else {
        timestamp_id.to_string()
    }
}

/// The next part of a range: its load, range number (`None`: the load is not split), parts
/// committed before it, and the keys it starts after and may not pass.
#[derive(Default)]
struct Position<'a> {
    load_id: &'a str,
    range: Option<u32>,
    parts_done: u32,
    after: Option<&'a [Value]>,
    upto: Option<&'a [Value]>,
}

/// Where a range's copy stands, and where its checkpoint is written after each part.
#[derive(Clone)]
enum Checkpoint {
    /// The only range of a load that is not split: the watermark row's own checkpoint.
    Watermark(Watermark),
    /// One range of a split load: its row in the range table.
    Range(RangeProgress),
}

impl Checkpoint {
    /// Where the next part of this range starts.
    fn position(&self) -> Position<'_> {
        match self {
            Checkpoint::Watermark(wm) => match &wm.state {
                TableState::Loading(p) => Position {
                    load_id: &p.load_id,
                    range: None,
                    parts_done: p.parts_done,
                    after: p.last_key.as_deref(),
                    upto: None,
                },
                _ => Position::default(),
            },
            Checkpoint::Range(r) => Position {
                load_id: &r.load_id,
                range: Some(r.range),
                parts_done: r.parts_done,
                after: r.last_key.as_deref().or(r.after.as_deref()),
                upto: r.upto.as_deref(),
            },
        }
    }

    fn done(&self) -> bool {
        match self {
            Checkpoint::Watermark(wm) => !matches!(wm.state, TableState::Loading(_)),
            Checkpoint::Range(r) => r.done,
        }
    }

    /// Records `part` (the last one when `done`); `None` when another run moved the
    /// checkpoint first.
    async fn advance(
        &self,
        ctx: &Context,
        session: &mut dyn CdcSession,
        part: &Part,
        done: bool,
    ) -> Result<Option<Checkpoint>, JobError> {
        match self {
            Checkpoint::Watermark(wm) => {
                let TableState::Loading(progress) = &wm.state else {
                    return Ok(None);
                };
                let state = if done {
                    TableState::Ready
                } else {
                    TableState::Loading(FullLoadProgress {
                        parts_done: progress.parts_done + 1,
                        last_key: part.last_key.clone(),
                        rows_done: progress.rows_done + part.rows,
                        ..progress.clone()
                    })
                };
                let next = Watermark {
                    rows_copied: wm.rows_copied + part.rows,
                    bytes_copied: wm.bytes_copied + part.bytes,
                    ..wm.next(state, ctx.now())
                };
                Ok(save(session, wm, next).await?.map(Checkpoint::Watermark))
            }
            Checkpoint::Range(r) => {
                let next = RangeProgress {
                    parts_done: r.parts_done + 1,
                    last_key: part.last_key.clone().or_else(|| r.last_key.clone()),
                    rows_done: r.rows_done + part.rows,
                    bytes_done: r.bytes_done + part.bytes,
                    done,
                    version: r.version + 1,
                    updated_at: ctx.now(),
                    ..r.clone()
                };
                let saved = session.update_range(r.version, &next).await?;
                Ok(saved.then_some(Checkpoint::Range(next)))
            }
        }
    }
}

/// Writes parts of one range from `checkpoint` until the range is done or `deadline` passes
/// (checked between parts; at least one part per call), recording each part in `result`.
/// Returns the checkpoint it left; `None` when another run moved it first (superseded).
async fn load_range(
    ctx: &Context,
    session: &mut dyn CdcSession,
    ci: &CaptureInstance,
    baseline: Lsn,
    mut checkpoint: Checkpoint,
    deadline: Instant,
    result: &mut TableResult,
) -> Result<Option<Checkpoint>, JobError> {
    let part_rows = ctx.settings.full_load_part_rows.max(1);
    while !checkpoint.done() {
        let at = checkpoint.position();
        let parts_done = at.parts_done;
        let ext = ctx.settings.format.extension();
        let name = match at.range {
            None => naming::full_load_part_name(&ci.table, at.load_id, parts_done, ext),
            Some(r) => naming::full_load_range_part_name(&ci.table, at.load_id, r, parts_done, ext),
        };
        let spec = PartSpec {
            name: &name,
            baseline,
            range: at.range,
            part: parts_done,
            after: at.after,
            upto: at.upto,
            rows: part_rows,
        };
        let part = write_part(ctx, session, ci, &spec).await?;
        let done = part.rows < part_rows;
        let Some(next) = checkpoint.advance(ctx, session, &part, done).await? else {
            superseded(result, SUPERSEDED);
            return Ok(None);
        };
        checkpoint = next;
        // An empty last part (rows a multiple of the part size) writes no blob.
        let written = part.rows > 0 || parts_done == 0;
        result.rows += part.rows;
        result.bytes += part.bytes;
        if written {
            result.blobs.push(name);
        }
        if let Checkpoint::Watermark(wm) = &checkpoint {
            // The load's totals so far (a load starts its row at zero).
            result.rows = wm.rows_copied;
            result.bytes = wm.bytes_copied;
            result.parts = Some(parts_done + u32::from(written));
            if done {
                tracing::info!(table = %ci.table, at = %Utc::now(), "full load finished");
                result.status = Status::Done;
                result.note = "loaded";
            }
        }
        if !done && Instant::now() >= deadline {
            break;
        }
    }
    Ok(Some(checkpoint))
}

/// A keyless table's load did not fit a FullLoad call: it is left to the timer run, whose
/// budget is [`super::TIMER_LOAD_BUDGET`].
pub const KEYLESS_HANDED_OFF: &str = "in progress: a table without a key is loaded in one \
statement, which did not fit this call's budget (its lock was released, nothing written); the \
next IncrementalCopy run loads it, with up to 20 minutes";

const IN_PROGRESS: &str =
    "in progress: the next IncrementalCopy run or FullLoad call continues from the checkpoint";

/// One part to write: its blob, the load's baseline, its range and position, the keys it
/// starts after and may not pass, and the most rows it holds.
struct PartSpec<'a> {
    name: &'a str,
    baseline: Lsn,
    range: Option<u32>,
    part: u32,
    after: Option<&'a [Value]>,
    upto: Option<&'a [Value]>,
    rows: u64,
}

/// Scans the next part into its blob, committed create-only: of two invocations continuing
/// the same load, one part version wins and the other adopts it, so the checkpoint always
/// matches the committed part.
async fn write_part(
    ctx: &Context,
    session: &mut dyn CdcSession,
    ci: &CaptureInstance,
    spec: &PartSpec<'_>,
) -> Result<Part, JobError> {
    let mut metadata = vec![
        ("table".to_string(), ci.table.to_string()),
        ("capture_instance".to_string(), ci.name.clone()),
        ("baseline_lsn".to_string(), spec.baseline.to_string()),
        ("part".to_string(), spec.part.to_string()),
        ("columns".to_string(), super::columns_metadata(&ci.columns)),
        ("format_version".to_string(), FORMAT_VERSION.to_string()),
    ];
    if let Some(range) = spec.range {
        metadata.push(("range".to_string(), range.to_string()));
    }
    let mut writer = ctx
        .blobs
        .writer(spec.name, metadata, ctx.settings.block_size);
    writer.create_only();
    let mut sink = ctx.file_sink(writer, ci.load_columns());
    let (rows, last_key) = session
        .scan(ci, spec.after, spec.upto, spec.rows, &mut sink)
        .await?;
    // A table whose row count is a multiple of the part size would end with an empty part;
    // skip it unless it is the only one (an empty table still gets its header).
    if rows == 0 && spec.part > 0 {
        return Ok(Part {
            rows: 0,
            last_key: None,
            bytes: 0,
        });
    }
    ctx.publish_schema(ci, &mut sink).await?;
    sink.set_metadata("row_count", rows.to_string());
    sink.set_metadata("last_key", encode_key(last_key.as_deref()));
    match sink.finish().await {
        Ok(summary) => Ok(Part {
            rows,
            last_key,
            bytes: summary.bytes,
        }),
        Err(e) if e.is_already_exists() => {
            let part = adopt_part(ctx, spec.name).await?;
            tracing::info!(table = %ci.table, blob = %spec.name, rows = part.rows, "part already committed by another run; adopted");
            Ok(part)
        }
        Err(e) => Err(e.into()),
    }
}

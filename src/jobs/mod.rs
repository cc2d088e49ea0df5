//! The two jobs, source → CSV → blob → watermark, and the [`Runner`] that serves them to the
//! host.
//!
//! Each table is processed on its own CDC session, concurrently up to
//! `CDC_TABLE_CONCURRENCY`, and ends in a [`TableResult`] whatever happened: one table's
//! failure is reported without stopping the others, and says whether a retry may fix it
//! ([`JobError::status`]); `host` decides from that what the invocation answers. Ordering
//! inside a table is what carries the guarantees: record the pending window, commit the
//! blob, then advance the watermark — each step conditional on the watermark version read,
//! so overlapping invocations cannot both advance it.

pub mod full_load;
pub mod incremental;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use tokio::time::Instant;

use crate::cdc::{
    instances, CaptureInstance, CdcError, CdcSession, CdcSource, ChangeMode, LastError, TableRef,
    TableState, Watermark,
};
use crate::config::Fanout;
use crate::config::{Settings, TableSpec};
use crate::host::{Delivery, FullLoadRequest, Jobs, TableMessage, TimerTrigger};
use crate::report::{Report, Status, TableResult};
use crate::sink::blob::BlobTarget;
use crate::sink::SinkError;

/// Blob metadata `format_version`: bumped when the file layout changes. 2: CSV rendered by
/// declared type, and a schema document per table (docs/csv-format.md, "Changes in format
/// version 2").
pub const FORMAT_VERSION: &str = "2";

/// How long an IncrementalCopy invocation spends on a handed-off full load (the default
/// functionTimeout is 30 minutes).
pub const TIMER_LOAD_BUDGET: Duration = Duration::from_secs(20 * 60);

/// Why one table's job did not complete.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error(transparent)]
    Cdc(#[from] CdcError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error("{table} has no watermark yet: run FullLoad for it first (POST /api/FullLoad {{\"tables\":[\"{table}\"]}})")]
    NotLoaded { table: TableRef },
    #[error(transparent)]
    Route(Box<instances::RouteError>),
    /// The full load of a table without a key is one statement under a table lock and cannot
    /// be continued by a later invocation. A FullLoad call hands it to the timer run
    /// ([`full_load::KEYLESS_HANDED_OFF`]); the timer run's 20 minutes are the limit.
    #[error(
        "the full load of {table} did not finish within {budget:?} ({rows} rows read): a table \
         without a primary key or unique index cannot be loaded in resumable parts, so its load \
         is one scan that must finish within one invocation (an IncrementalCopy run gives it 20 \
         minutes). Give the table a primary key or unique index and enable CDC on it with net \
         changes, or load it in a quieter moment"
    )]
    KeylessLoadTooLong {
        table: TableRef,
        budget: Duration,
        rows: u64,
    },
    /// A keyless table's load holds its table lock until the capture process has passed the
    /// end of the scan; it did not within the wait, so no exact baseline could be taken.
    #[error(
        "the full load of {table} read the table but the CDC capture process did not pass the \
         server time {at} within {waited:?} (CDC_CAPTURE_WAIT_SECONDS), so no baseline LSN \
         could be taken that separates the load from the changes after it; the table lock was \
         released and nothing was written. The run will be retried; if it keeps failing, check \
         the capture job"
    )]
    CaptureBehind {
        table: TableRef,
        at: DateTime<Utc>,
        waited: Duration,
    },
    #[error("{table} is not in CDC_TABLES")]
    NotConfigured { table: TableRef },
    #[error("{table} already has a watermark (loaded up to {last_lsn}); pass \"reset\": true to load it again")]
    AlreadyLoaded {
        table: TableRef,
        last_lsn: crate::cdc::Lsn,
    },
    /// A split full load whose range rows are not all there (deleted by hand, or the range
    /// table recreated): its parts cannot be told apart from a gap.
    #[error("the full load {load_id} of {table} was split into {expected} key ranges but the range table holds {found} of them; run FullLoad with \"reset\": true to load the table again")]
    RangesMissing {
        table: TableRef,
        load_id: String,
        expected: u32,
        found: usize,
    },
}

impl From<instances::RouteError> for JobError {
    fn from(e: instances::RouteError) -> JobError {
        JobError::Route(Box::new(e))
    }
}

impl JobError {
    /// Worth retrying (the host's retry policy will) as opposed to needing a person.
    pub fn is_transient(&self) -> bool {
        match self {
            JobError::Cdc(e) => e.is_transient(),
            JobError::Sink(e) => e.is_transient(),
            JobError::Route(e) => matches!(&**e, instances::RouteError::Cdc(e) if e.is_transient()),
            JobError::CaptureBehind { .. } => true,
            _ => false,
        }
    }

    /// What the failure means for the invocation: the caller's mistake, a state that
    /// refuses the request, something a retry may fix, or something only a person can.
    pub fn status(&self) -> Status {
        match self {
            JobError::AlreadyLoaded { .. } => Status::Conflict,
            JobError::NotConfigured { .. } => Status::BadRequest,
            e if e.is_transient() => Status::Failed,
            _ => Status::Blocked,
        }
    }
}

/// Blob metadata `columns`: the captured columns the blob carries, comma-separated, each
/// percent-encoded where it is not a letter, digit or `_` (metadata values are ASCII, and a
/// column name may hold commas, spaces or any Unicode character).
pub(crate) fn columns_metadata(columns: &[crate::cdc::ColumnDesc]) -> String {
    let encode = |column: &crate::cdc::ColumnDesc| {
        let name = &column.name;
        let mut out = String::with_capacity(name.len());
        for byte in name.bytes() {
            if byte.is_ascii_alphanumeric() || byte == b'_' {
                out.push(byte as char);
            } else {
                out.push_str(&format!("%{byte:02X}"));
            }
        }
        out
    };
    columns.iter().map(encode).collect::<Vec<_>>().join(",")
}

/// What a job needs besides its table: settings, the CDC source, the blob target, a clock.
#[derive(Clone)]
pub struct Context {
    pub settings: Arc<Settings>,
    pub source: Arc<dyn CdcSource>,
    pub blobs: BlobTarget,
    pub clock: Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>,
    /// Set once the container is known to exist (created if missing), so each process
    /// checks it once, before its first blob.
    pub container_ready: Arc<tokio::sync::OnceCell<()>>,
}

impl Context {
    pub fn new(settings: Arc<Settings>, source: Arc<dyn CdcSource>, blobs: BlobTarget) -> Context {
        Context {
            settings,
            source,
            blobs,
            clock: Arc::new(Utc::now),
            container_ready: Arc::default(),
        }
    }

    /// Creates the container if it is missing, once per process.
    pub async fn ensure_container(&self) -> Result<(), SinkError> {
        self.container_ready
            .get_or_try_init(|| self.blobs.ensure_container())
            .await
            .map(|_| ())
    }

    pub fn now(&self) -> DateTime<Utc> {
        (self.clock)()
    }

    /// The file sink of a new block blob `writer` for a file of `columns`, in the format its
    /// name says (`CDC_FORMAT` for new names; a pending window's recorded name keeps its own).
    pub(crate) fn file_sink(
        &self,
        writer: crate::sink::blob::BlobWriter,
        columns: Arc<[crate::cdc::ColumnDesc]>,
    ) -> crate::sink::format::FileSink {
        let format = crate::sink::format::Format::of_blob(writer.name(), self.settings.format);
        crate::sink::format::FileSink::new(format, writer, self.settings.block_size, columns)
    }

    /// Publishes the schema document of `sink`'s file, read from `ci` (create-only, before
    /// the blob that names it is committed; nothing when its shape is published already),
    /// and names it in the blob's metadata (a Parquet file's key/value metadata too).
    pub(crate) async fn publish_schema(
        &self,
        ci: &CaptureInstance,
        sink: &mut crate::sink::format::FileSink,
    ) -> Result<(), JobError> {
        use crate::sink::format::FileSink;
        use crate::sink::schema_doc::{publish, SchemaDoc};
        self.ensure_container().await?;
        let mode = instances::mode(ci, self.spec(&ci.table)?.mode)?;
        let file_format = match sink {
            FileSink::Csv(_) => "csv",
            FileSink::Parquet(_) => "parquet",
        };
        let keys = ci.key_columns.iter().map(|k| k.name.clone()).collect();
        let format = (file_format, FORMAT_VERSION);
        let doc = SchemaDoc::new(&ci.table, &ci.name, format, mode, keys, &ci.columns);
        for (key, value) in publish(&self.blobs, doc).await?.blob_metadata() {
            sink.set_metadata(&key, value);
        }
        Ok(())
    }

    /// A session for `table`, and the table's capture instances. The target (the pinned one,
    /// or else the newest the capture process has recognised) must have a start LSN: an
    /// instance the capture process has not recognised yet (right after
    /// `sys.sp_cdc_enable_table`) is refused with a transient error, since its `min_lsn` reads
    /// 0x00… and the max LSN may be below where its changes will start, so any baseline taken
    /// now would later look like cleaned-up changes. The configured mode is checked too.
    pub(crate) async fn open(
        &self,
        table: &TableRef,
    ) -> Result<(Box<dyn CdcSession>, Capture), JobError> {
        let spec = self.spec(table)?.clone();
        let mut session = self.source.session().await?;
        let instances = session.capture_instances(table).await?;
        let target = instances::target(table, &instances, spec.capture_instance.as_deref())?;
        if target.start_lsn.is_none() {
            return Err(self.not_recognised(target).into());
        }
        instances::mode(target, spec.mode)?;
        let target = target.name.clone();
        Ok((
            session,
            Capture {
                instances,
                target,
                spec,
            },
        ))
    }

    /// The error for an instance the capture process has not recognised yet.
    fn not_recognised(&self, ci: &CaptureInstance) -> CdcError {
        self.capture_not_started(
            &ci.table,
            format!(
                "capture instance {} has no start_lsn in cdc.change_tables",
                ci.name
            ),
        )
    }

    /// The error for a capture process that has not given `table` an LSN to start from.
    pub(crate) fn capture_not_started(&self, table: &TableRef, evidence: String) -> CdcError {
        CdcError::CaptureNotStarted {
            table: table.clone(),
            evidence,
            database: self.settings.sql.database().to_string(),
        }
    }

    /// The configured spec of `table` (its capture instance, if pinned).
    pub fn spec(&self, table: &TableRef) -> Result<&TableSpec, JobError> {
        self.settings
            .tables
            .iter()
            .find(|spec| &spec.table == table)
            .ok_or_else(|| JobError::NotConfigured {
                table: table.clone(),
            })
    }
}

/// A table's capture instances as one run found them, and its configuration.
#[derive(Debug, Clone)]
pub struct Capture {
    /// Oldest first (at most two).
    pub instances: Vec<CaptureInstance>,
    /// The name of the instance reads go to once its start LSN is reached
    /// ([`instances::target`]); it has a start LSN.
    target: String,
    pub spec: TableSpec,
}

impl Capture {
    /// The instance to read from now on.
    pub fn target(&self) -> &CaptureInstance {
        self.find(&self.target)
            .expect("the target is one of the instances")
    }

    pub fn find(&self, name: &str) -> Option<&CaptureInstance> {
        self.instances.iter().find(|i| i.name == name)
    }

    /// How `ci` is read (net or all changes).
    pub fn mode(&self, ci: &CaptureInstance) -> Result<ChangeMode, CdcError> {
        instances::mode(ci, self.spec.mode)
    }

    /// Warns (log and `result`) about DDL the target saw but does not follow, when there is
    /// no newer instance to switch to.
    pub fn warn_about_ddl(&self, result: &mut TableResult) {
        let target = self.target();
        if let Some(warning) = instances::ddl_warning(&self.instances, target) {
            tracing::warn!(
                table = %target.table,
                capture_instance = %target.name,
                ddl = target.ddl.len(),
                "{warning}"
            );
            result.warn(warning);
        }
    }
}

/// One table of a timer run: whatever its state needs. A full load handed off by FullLoad
/// continues within this invocation's budget and, once finished, the table's first window
/// follows in the same run; otherwise the incremental copy (which finishes a pending window
/// first).
pub async fn timer_table(
    ctx: &Context,
    table: &TableRef,
    trigger_time: DateTime<Utc>,
) -> TableResult {
    let mut result = TableResult::new(table, Status::Done, "up to date");
    let outcome = timer_steps(ctx, table, trigger_time, &mut result).await;
    if let Err(error) = &outcome {
        record_last_error(ctx, table, error).await;
    }
    finish(result, outcome)
}

/// Records why `table`'s copy failed on its watermark row (`last_error`), for `handler
/// status` and the poison queue; the next successful watermark write clears it. On a
/// session of its own, since the failure may have broken the run's connection. Best effort:
/// if even that fails, the failure is still in the run's report and log.
async fn record_last_error(ctx: &Context, table: &TableRef, error: &JobError) {
    let last = LastError::new(&error.to_string(), ctx.now());
    let recorded = match ctx.source.session().await {
        Ok(mut session) => session.set_last_error(table, Some(&last)).await,
        Err(e) => Err(e),
    };
    if let Err(e) = recorded {
        tracing::warn!(table = %table, error = %e, "could not record the table's last error");
    }
}

async fn timer_steps(
    ctx: &Context,
    table: &TableRef,
    trigger_time: DateTime<Utc>,
    result: &mut TableResult,
) -> Result<(), JobError> {
    let (mut session, capture) = ctx.open(table).await?;
    capture.warn_about_ddl(result);
    let mut wm = session
        .read_watermark(table)
        .await?
        .ok_or_else(|| JobError::NotLoaded {
            table: table.clone(),
        })?;
    if let TableState::Loading(_) = wm.state {
        result.status = Status::InProgress;
        result.note = "full load in progress";
        let deadline = Instant::now() + TIMER_LOAD_BUDGET;
        wm =
            full_load::continue_load(ctx, session.as_mut(), &capture, wm, deadline, result).await?;
        if result.status != Status::Done {
            return Ok(());
        }
        // Loaded: the table's first window follows, and is what this run reports.
        let warning = result.warning.take();
        *result = TableResult::new(table, Status::Done, "up to date");
        result.warning = warning;
    }
    incremental::copy_table(ctx, session.as_mut(), &capture, wm, trigger_time, result).await
}

/// A table's result once its job ended: what it did, and why it stopped if it failed (a job
/// that committed a window and then failed still reports the window).
pub(crate) fn finish(mut result: TableResult, outcome: Result<(), JobError>) -> TableResult {
    if let Err(error) = outcome {
        result.status = error.status();
        result.note = "not completed";
        result.transient = Some(error.is_transient());
        result.error = Some(error.to_string());
    }
    result
}

/// Replaces the watermark row `current` by `next` if no other invocation moved it since it
/// was read; `None` when one did (this invocation is superseded and must stop).
pub(crate) async fn save(
    session: &mut dyn CdcSession,
    current: &Watermark,
    next: Watermark,
) -> Result<Option<Watermark>, JobError> {
    Ok(session
        .update_watermark(current.version, &next)
        .await?
        .then_some(next))
}

/// Marks `result` (what this invocation did so far) superseded: another invocation moved the
/// watermark first, and this one stops there.
pub(crate) fn superseded(result: &mut TableResult, note: &'static str) {
    tracing::warn!(table = %result.table, note, "another invocation moved the watermark first; stopping");
    result.status = Status::Superseded;
    result.note = note;
}

fn log(r: &TableResult) {
    let error = r.error.as_deref().unwrap_or_default();
    match r.status {
        Status::Failed | Status::Blocked => {
            tracing::error!(table = %r.table, status = ?r.status, transient = r.transient, error, "table failed")
        }
        Status::Conflict | Status::BadRequest => {
            tracing::warn!(table = %r.table, status = ?r.status, error, "request refused")
        }
        _ => tracing::info!(
            table = %r.table, status = ?r.status, note = r.note, rows = r.rows, bytes = r.bytes,
            blobs = ?r.blobs, from = ?r.range.map(|r| r.from_lsn), to = ?r.range.map(|r| r.to_lsn),
            mode = r.mode.map(|m| m.as_str()), capture_instance = r.capture_instance.as_deref(),
            lag_ms = r.capture_lag_ms, parts = r.parts, elapsed_ms = r.duration_ms, "table done"
        ),
    }
}

/// Runs `job` for every table, at most `concurrency` at once, timing and logging each; the
/// report's status is the worst table's.
pub(crate) async fn for_each_table<F, Fut>(
    tables: Vec<TableRef>,
    concurrency: usize,
    job: F,
) -> Report
where
    F: Fn(TableRef) -> Fut,
    Fut: Future<Output = TableResult>,
{
    let job = &job;
    let results = futures::stream::iter(tables)
        .map(|table| async move {
            let started = Instant::now();
            let mut result = job(table).await;
            result.duration_ms = started.elapsed().as_millis() as u64;
            log(&result);
            result
        })
        .buffered(concurrency.max(1))
        .collect()
        .await;
    Report::of(results)
}

/// The production [`Jobs`]: SQL Server and Blob Storage from the settings. Building it does no
/// network I/O, so the handler is ready at once; connections open per invocation.
pub struct Runner {
    context: Context,
}

impl Runner {
    /// From ready parts (`main` builds them from the settings).
    pub fn new(settings: Arc<Settings>, source: Arc<dyn CdcSource>, blobs: BlobTarget) -> Runner {
        Runner {
            context: Context::new(settings, source, blobs),
        }
    }

    /// Reachability and setup checks for `handler check`: each line names what was checked.
    pub async fn check(&self) -> Vec<(String, Result<(), String>)> {
        let mut results = Vec::new();
        let blob = self.context.blobs.probe().await.map_err(|e| e.to_string());
        results.push((
            format!("blob container {}", self.context.settings.container),
            blob,
        ));
        match self.context.source.session().await {
            Err(e) => results.push(("SQL Server connection".to_string(), Err(e.to_string()))),
            Ok(mut session) => {
                results.push(("SQL Server connection".to_string(), Ok(())));
                for spec in &self.context.settings.tables {
                    results.extend(self.check_table(session.as_mut(), spec).await);
                }
            }
        }
        results
    }
}

impl Runner {
    /// `handler check`'s lines for one table: its capture instances (the one read, the mode,
    /// DDL it does not follow), and its watermark.
    async fn check_table(
        &self,
        session: &mut dyn CdcSession,
        spec: &TableSpec,
    ) -> Vec<(String, Result<(), String>)> {
        let table = &spec.table;
        let mut lines = Vec::new();
        let wm = session.read_watermark(table).await;
        let capture = match session.capture_instances(table).await {
            Err(e) => Err(e.to_string()),
            Ok(list) => {
                let pinned = spec.capture_instance.as_deref();
                match instances::target(table, &list, pinned) {
                    Err(e) => Err(e.to_string()),
                    Ok(ci) if ci.start_lsn.is_none() => {
                        Err(self.context.not_recognised(ci).to_string())
                    }
                    Ok(ci) => match instances::mode(ci, spec.mode) {
                        Err(e) => Err(e.to_string()),
                        Ok(mode) => Ok((list.clone(), ci.clone(), mode)),
                    },
                }
            }
        };
        match capture {
            Err(e) => lines.push((format!("CDC capture instance of {table}"), Err(e))),
            Ok((list, ci, mode)) => {
                let names: Vec<&str> = list.iter().map(|i| i.name.as_str()).collect();
                lines.push((
                    format!(
                        "CDC capture instance of {table}: {} ({} changes; instances: {})",
                        ci.name,
                        mode.as_str(),
                        names.join(", ")
                    ),
                    Ok(()),
                ));
                let ddl = instances::ddl_warning(&list, &ci);
                lines.push((
                    format!("schema changes of {table} followed by its capture instances"),
                    ddl.map_or(Ok(()), Err),
                ));
                if let Ok(Some(wm)) = &wm {
                    if wm.capture_instance != ci.name {
                        lines.push((
                            format!(
                                "{table} is read from {} until {} takes over at {}",
                                wm.capture_instance,
                                ci.name,
                                ci.start_lsn.unwrap_or(crate::cdc::Lsn::ZERO)
                            ),
                            Ok(()),
                        ));
                    }
                }
            }
        }
        let wm = match wm {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err(format!("no watermark for {table}: run FullLoad")),
            Err(e) => Err(e.to_string()),
        };
        lines.push((format!("watermark of {table}"), wm));
        lines
    }
}

#[async_trait::async_trait]
impl Jobs for Runner {
    async fn incremental_copy(&self, trigger: TimerTrigger) -> Report {
        incremental::run(&self.context, &trigger).await
    }

    async fn timer(&self, trigger: TimerTrigger) -> Report {
        match self.context.settings.fanout {
            Fanout::Inline => incremental::run(&self.context, &trigger).await,
            Fanout::Queue => incremental::fan_out(&self.context, &trigger),
        }
    }

    async fn copy_table(&self, message: TableMessage, delivery: Delivery) -> Report {
        let report = incremental::run_message(&self.context, &message).await;
        let last_try = delivery.dequeue_count >= self.context.settings.queue_max_dequeue_count;
        if report.status == Status::Failed && last_try {
            // The host moves the message to the poison queue after this answer.
            tracing::error!(
                table = %message.table,
                trigger_time = %message.trigger_time,
                dequeue_count = delivery.dequeue_count,
                message_id = delivery.id.as_deref().unwrap_or(""),
                error = report.logs().join("; "),
                "table failed for good: this was the message's last try (CDC_QUEUE_MAX_DEQUEUE_COUNT); \
                 the host moves it to cdc-copy-tables-poison, and the next trigger's message \
                 copies the window again from the watermark"
            );
        }
        report
    }

    async fn check(&self) -> Vec<(String, Result<(), String>)> {
        Runner::check(self).await
    }

    async fn status(&self) -> Result<Vec<crate::status::TableStatus>, String> {
        Ok(crate::status::collect(&self.context).await)
    }

    async fn full_load_invocation(&self, request: FullLoadRequest) -> Report {
        let budget = self.context.settings.full_load_http_budget;
        match self.context.settings.fanout {
            Fanout::Queue => full_load::run_queued(&self.context, &request, budget).await,
            Fanout::Inline => full_load::run(&self.context, &request, budget).await,
        }
    }

    async fn load_range(&self, message: crate::host::RangeMessage, _delivery: Delivery) -> Report {
        full_load::run_range(&self.context, &message, TIMER_LOAD_BUDGET).await
    }

    async fn full_load(&self, request: FullLoadRequest) -> Report {
        full_load::run(
            &self.context,
            &request,
            self.context.settings.full_load_http_budget,
        )
        .await
    }
}

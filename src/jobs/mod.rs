//! The two jobs, source → CSV → blob → watermark, and the [`Runner`] that serves them to the
//! host.
//!
//! Each table is processed on its own CDC session, concurrently up to
//! `CDC_TABLE_CONCURRENCY`; one table's failure is reported and fails the invocation without
//! stopping the others. Ordering inside a table is what carries the guarantees: record the
//! pending window, commit the blob, then advance the watermark — each step conditional on the
//! watermark version read, so overlapping invocations cannot both advance it.

pub mod full_load;
pub mod incremental;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;

use crate::cdc::{CdcError, CdcSource, TableRef};
use crate::config::{Settings, TableSpec};
use crate::host::{FullLoadRequest, JobReport, Jobs, Outcome, TimerTrigger};
use crate::sink::blob::BlobTarget;
use crate::sink::SinkError;

/// Blob metadata `format_version`: bumped when the CSV layout changes.
pub const FORMAT_VERSION: &str = "1";

/// Why one table's job did not complete.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error(transparent)]
    Cdc(#[from] CdcError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error("{table} has no watermark yet: run FullLoad for it first (POST /api/FullLoad {{\"tables\":[\"{table}\"]}})")]
    NotLoaded { table: TableRef },
    #[error("{table} was loaded from capture instance {recorded} but CDC now reads {current}: the change stream changed (a new capture instance after DDL?); run FullLoad with \"reset\": true to re-baseline")]
    CaptureInstanceChanged {
        table: TableRef,
        recorded: String,
        current: String,
    },
    #[error("{table} is not in CDC_TABLES")]
    NotConfigured { table: TableRef },
    #[error("{table} already has a watermark (loaded up to {last_lsn}); pass \"reset\": true to load it again")]
    AlreadyLoaded {
        table: TableRef,
        last_lsn: crate::cdc::Lsn,
    },
    #[error("injected fault at {0:?}")]
    Injected(Step),
}

impl JobError {
    /// Worth retrying (the host's retry policy will) as opposed to needing a person.
    pub fn is_transient(&self) -> bool {
        match self {
            JobError::Cdc(e) => e.is_transient(),
            JobError::Sink(e) => e.is_transient(),
            JobError::Injected(_) => true,
            _ => false,
        }
    }
}

/// The points between the side effects of a job, where a crash is interesting. Tests stop a
/// job at each of them through [`Context::faults`]; production leaves it empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Step {
    /// The window is planned, nothing recorded.
    Planned,
    /// The pending window is recorded in the watermark row, no blob written.
    PendingRecorded,
    /// Rows streamed into staged blocks, block list not committed.
    BlocksStaged,
    /// The blob is committed, the watermark not advanced.
    BlobCommitted,
    /// A full-load part is committed, its checkpoint not recorded.
    PartCommitted,
    /// One more block of the blob was handed to Put Block (the writer holds the next one);
    /// called after every block staged while rows stream, so a crash can land between blocks.
    BlockStaged,
}

/// A hook called at every [`Step`]; returning `Err` aborts the job there, as a crash would.
pub type FaultHook = Arc<dyn Fn(&TableRef, Step) -> Result<(), JobError> + Send + Sync>;

/// What a job needs besides its table: settings, the CDC source, the blob target, a clock.
#[derive(Clone)]
pub struct Context {
    pub settings: Arc<Settings>,
    pub source: Arc<dyn CdcSource>,
    pub blobs: BlobTarget,
    pub clock: Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>,
    pub faults: Option<FaultHook>,
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
            faults: None,
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

    pub(crate) fn step(&self, table: &TableRef, step: Step) -> Result<(), JobError> {
        match &self.faults {
            Some(hook) => hook(table, step),
            None => Ok(()),
        }
    }

    /// A CSV sink for `writer` that calls the fault hook at [`Step::BlockStaged`] after each
    /// block it stages (no hook, no callback).
    pub(crate) fn csv_sink(
        &self,
        table: &TableRef,
        writer: crate::sink::blob::BlobWriter,
    ) -> crate::sink::rows::CsvBlobSink {
        let mut sink = crate::sink::rows::CsvBlobSink::new(writer, self.settings.block_size);
        if let Some(hook) = self.faults.clone() {
            let table = table.clone();
            sink.on_block_staged(Box::new(move || {
                hook(&table, Step::BlockStaged).map_err(|e| SinkError::Other(e.to_string()))
            }));
        }
        sink
    }

    /// The configured spec of `table` (its capture instance, if pinned).
    pub fn spec(&self, table: &TableRef) -> Option<&TableSpec> {
        self.settings
            .tables
            .iter()
            .find(|spec| &spec.table == table)
    }
}

/// One table's result, for `Logs` (one line) and `ReturnValue` (one JSON object).
#[derive(Debug, Clone)]
pub struct TableOutcome {
    pub table: TableRef,
    pub line: String,
    pub json: serde_json::Value,
    pub status: TableStatus,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableStatus {
    Done,
    InProgress,
    /// Another invocation moved the watermark first; this one stopped cleanly.
    Superseded,
    Conflict,
    BadRequest,
    Failed,
}

impl TableStatus {
    /// The status as `ReturnValue` spells it.
    pub fn as_str(&self) -> &'static str {
        match self {
            TableStatus::Done => "done",
            TableStatus::InProgress => "inProgress",
            TableStatus::Superseded => "superseded",
            TableStatus::Conflict => "conflict",
            TableStatus::BadRequest => "badRequest",
            TableStatus::Failed => "failed",
        }
    }
}

impl TableOutcome {
    /// A table that did not complete: refused (conflict, bad request) or failed.
    pub fn failed(table: &TableRef, error: &JobError) -> TableOutcome {
        let status = match error {
            JobError::AlreadyLoaded { .. } => TableStatus::Conflict,
            JobError::NotConfigured { .. } => TableStatus::BadRequest,
            _ => TableStatus::Failed,
        };
        if status == TableStatus::Failed {
            tracing::error!(table = %table, transient = error.is_transient(), error = %error, "table failed");
        } else {
            tracing::warn!(table = %table, error = %error, "request refused");
        }
        let label = if status == TableStatus::Failed {
            "FAILED"
        } else {
            "REFUSED"
        };
        TableOutcome {
            table: table.clone(),
            line: format!("{table}: {label}: {error}"),
            json: serde_json::json!({
                "table": table.to_string(),
                "status": status.as_str(),
                "transient": error.is_transient(),
                "error": error.to_string(),
            }),
            status,
        }
    }
}

/// Runs `job` for every table, at most `concurrency` at once, and folds the outcomes into one
/// report: failed if any table failed.
pub(crate) async fn for_each_table<F, Fut>(
    tables: Vec<TableRef>,
    concurrency: usize,
    job: F,
) -> JobReport
where
    F: Fn(TableRef) -> Fut,
    Fut: std::future::Future<Output = TableOutcome>,
{
    let outcomes: Vec<TableOutcome> = futures::stream::iter(tables.into_iter().map(job))
        .buffered(concurrency.max(1))
        .collect()
        .await;
    let outcome = if outcomes.iter().any(|o| o.status == TableStatus::Failed) {
        Outcome::Failed
    } else if outcomes.iter().any(|o| o.status == TableStatus::BadRequest) {
        Outcome::BadRequest
    } else if outcomes.iter().any(|o| o.status == TableStatus::Conflict) {
        Outcome::Conflict
    } else if outcomes.iter().any(|o| o.status == TableStatus::InProgress) {
        Outcome::InProgress
    } else {
        Outcome::Done
    };
    JobReport {
        logs: outcomes.iter().map(|o| o.line.clone()).collect(),
        summary: serde_json::json!({ "tables": outcomes.iter().map(|o| o.json.clone()).collect::<Vec<_>>() }),
        outcome,
    }
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
                    let ci = session
                        .capture_instance(&spec.table, spec.capture_instance.as_deref())
                        .await
                        .map(|_| ())
                        .map_err(|e| e.to_string());
                    results.push((format!("CDC capture instance of {}", spec.table), ci));
                    let wm = match session.read_watermark(&spec.table).await {
                        Ok(Some(_)) => Ok(()),
                        Ok(None) => Err(format!("no watermark for {}: run FullLoad", spec.table)),
                        Err(e) => Err(e.to_string()),
                    };
                    results.push((format!("watermark of {}", spec.table), wm));
                }
            }
        }
        results
    }
}

#[async_trait::async_trait]
impl Jobs for Runner {
    async fn incremental_copy(&self, trigger: TimerTrigger) -> JobReport {
        incremental::run(&self.context, &trigger).await
    }

    async fn check(&self) -> Vec<(String, Result<(), String>)> {
        Runner::check(self).await
    }

    async fn full_load(&self, request: FullLoadRequest) -> JobReport {
        full_load::run(
            &self.context,
            &request,
            self.context.settings.full_load_http_budget,
        )
        .await
    }
}

/// Sleeps that tests can shorten: capture polling uses real time.
pub(crate) async fn sleep(duration: Duration) {
    tokio::time::sleep(duration).await
}

//! Faults at the source seam: a [`CdcSource`] decorator that makes chosen round trips fail
//! the way a real connection does, whatever the source behind it (the CDC model, or the
//! product's tiberius source against the TDS fake).
//!
//! Why a decorator and not hooks in the product: the points between a job's side effects
//! are exactly its calls through this seam (and its requests to Blob Storage, which the
//! fault proxy in [`crate::proxy`] covers), so failing a call before it runs, after it took
//! effect, or in the middle of a streamed result reaches every one of them — a crash before
//! the pending window is recorded, after it is recorded, between staged blocks, after the
//! blob is committed — with no test-only code in the handler.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use cdc_copy::cdc::{
    AllRowFilter, CaptureInstance, CaptureProgress, CdcError, CdcSession, CdcSource, LastError,
    Lsn, LsnRange, RangeProgress, RowFilter, RowSink, RowSinkError, TableRef, Value, Watermark,
};

/// A round trip of the seam (opening a session counts as one: the login).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Method {
    Session,
    CaptureInstance,
    CaptureProgress,
    MaxLsn,
    NetChanges,
    AllChanges,
    ScanLocked,
    ReleaseLock,
    Scan,
    ReadWatermark,
    InsertWatermark,
    UpdateWatermark,
    TableRows,
    SampleKeys,
    ReadRanges,
    InsertRanges,
    UpdateRange,
    DeleteOtherRanges,
    SetLastError,
    LastError,
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// How a call fails. Every failure is a transient [`CdcError::Connection`], as a dropped
/// connection is; its message says which fault it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Before the call reaches the source: nothing happened.
    Before,
    /// After the call took effect (a watermark update committed, rows were streamed): the
    /// reply was lost.
    AfterEffect,
    /// A streamed result (`NetChanges`, `AllChanges`, `Scan`, `ScanLocked`) breaks after this
    /// many rows reached the sink. A drop during or after `ScanLocked`, or at `ReleaseLock`,
    /// also ends the scan's transaction: its table lock is released.
    MidStream(u64),
}

#[derive(Debug, Clone, Copy)]
struct Armed {
    method: Method,
    /// Calls of `method` to let through before this one strikes.
    skip: u32,
    fault: Fault,
}

/// Something a test does at the moment a call reaches the seam (a writer arriving while a
/// job holds a lock, say), run once, before the call.
struct Hook {
    method: Method,
    run: Box<dyn FnOnce() + Send>,
}

impl fmt::Debug for Hook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hook({})", self.method)
    }
}

#[derive(Debug, Default)]
struct State {
    armed: Vec<Armed>,
    hooks: Vec<Hook>,
    calls: BTreeMap<Method, u64>,
    injected: u64,
}

/// The fault plan shared by every source [`Faults::wrap`] made: arm faults, count calls.
#[derive(Debug, Clone, Default)]
pub struct Faults(Arc<Mutex<State>>);

impl Faults {
    pub fn new() -> Faults {
        Faults::default()
    }

    /// `source`, with every session it opens going through this plan.
    pub fn wrap(&self, source: Arc<dyn CdcSource>) -> Arc<dyn CdcSource> {
        Arc::new(FaultySource {
            inner: source,
            faults: self.clone(),
        })
    }

    /// Fails the next call of `method` with `fault`.
    pub fn arm(&self, method: Method, fault: Fault) {
        self.arm_after(method, 0, fault);
    }

    /// Lets `skip` calls of `method` through, then fails the next one with `fault`.
    pub fn arm_after(&self, method: Method, skip: u32, fault: Fault) {
        self.lock().armed.push(Armed {
            method,
            skip,
            fault,
        });
    }

    /// Runs `run` once, when the next call of `method` reaches the seam (before it runs and
    /// before any fault armed for it): how a test does something at an exact point of a job.
    pub fn before_next(&self, method: Method, run: impl FnOnce() + Send + 'static) {
        self.lock().hooks.push(Hook {
            method,
            run: Box::new(run),
        });
    }

    /// Disarms every fault not yet struck, and drops hooks not yet run.
    pub fn clear(&self) {
        let mut state = self.lock();
        state.armed.clear();
        state.hooks.clear();
    }

    /// Calls per method so far, failed ones included (each is a round trip).
    pub fn calls(&self) -> BTreeMap<Method, u64> {
        self.lock().calls.clone()
    }

    pub fn reset_calls(&self) {
        self.lock().calls.clear();
    }

    /// Faults that struck so far (a mid-stream fault on a stream shorter than its row count
    /// does not strike).
    pub fn injected(&self) -> u64 {
        self.lock().injected
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts the call and applies a fault that strikes before it; returns the fault that
    /// strikes later, if any.
    fn enter(&self, method: Method) -> Result<Option<Fault>, CdcError> {
        let hook = {
            let mut state = self.lock();
            let at = state.hooks.iter().position(|h| h.method == method);
            at.map(|i| state.hooks.remove(i))
        };
        if let Some(hook) = hook {
            (hook.run)();
        }
        let mut state = self.lock();
        *state.calls.entry(method).or_default() += 1;
        let mut struck = None;
        state.armed.retain_mut(|armed| {
            if armed.method != method || struck.is_some() {
                return true;
            }
            if armed.skip > 0 {
                armed.skip -= 1;
                return true;
            }
            struck = Some(armed.fault);
            false
        });
        // A mid-stream fault strikes only if the stream gets that far (see `StreamSink`).
        if matches!(struck, Some(Fault::Before | Fault::AfterEffect)) {
            state.injected += 1;
        }
        match struck {
            Some(Fault::Before) => Err(dropped(format!("before {method}"))),
            later => Ok(later),
        }
    }

    /// Runs one call of `method` through the plan.
    async fn call<T>(
        &self,
        method: Method,
        run: impl std::future::Future<Output = Result<T, CdcError>>,
    ) -> Result<T, CdcError> {
        let fault = self.enter(method)?;
        let result = run.await?;
        match fault {
            Some(Fault::AfterEffect) => Err(lost_reply(method)),
            _ => Ok(result),
        }
    }
}

fn dropped(when: String) -> CdcError {
    tracing::info!(%when, "injected connection failure");
    CdcError::connection(format!("injected failure: connection dropped {when}"))
}

fn lost_reply(method: Method) -> CdcError {
    dropped(format!("after {method} ran, before its reply"))
}

/// The sink a streaming call writes into: the caller's, or one that breaks after a number
/// of rows (a [`Fault::MidStream`]).
struct StreamSink<'a> {
    inner: &'a mut dyn RowSink,
    faults: &'a Faults,
    /// Rows still let through before the stream breaks; `None`: never.
    left: Option<u64>,
    broke: bool,
}

impl<'a> StreamSink<'a> {
    fn new(inner: &'a mut dyn RowSink, faults: &'a Faults, fault: Option<Fault>) -> StreamSink<'a> {
        let left = match fault {
            Some(Fault::MidStream(rows)) => Some(rows),
            _ => None,
        };
        StreamSink {
            inner,
            faults,
            left,
            broke: false,
        }
    }

    /// The streaming call's result as the caller sees it.
    fn result<T>(
        &self,
        method: Method,
        fault: Option<Fault>,
        result: Result<T, CdcError>,
    ) -> Result<T, CdcError> {
        if self.broke {
            let rows = match fault {
                Some(Fault::MidStream(rows)) => rows,
                _ => 0,
            };
            return Err(dropped(format!("during {method} after {rows} rows")));
        }
        let result = result?;
        match fault {
            Some(Fault::AfterEffect) => Err(lost_reply(method)),
            _ => Ok(result),
        }
    }
}

#[async_trait]
impl RowSink for StreamSink<'_> {
    async fn columns(&mut self, names: &[String]) -> Result<(), RowSinkError> {
        self.inner.columns(names).await
    }

    async fn row(&mut self, row: &[Value]) -> Result<(), RowSinkError> {
        if let Some(left) = self.left.as_mut() {
            if *left == 0 {
                self.broke = true;
                self.faults.lock().injected += 1;
                return Err(RowSinkError::new("the connection broke", true));
            }
            *left -= 1;
        }
        self.inner.row(row).await
    }
}

/// A dropped connection ends its transaction, so the table lock a `scan_locked` took is gone
/// whatever the caller does next: the inner session is told so (outside the fault plan, and
/// not counted). Against the tiberius source this sends `sql::RELEASE_LOCK` on the still open
/// connection, which a scripted TDS fake must expect.
async fn end_transaction(inner: &mut dyn CdcSession) {
    if let Err(e) = inner.release_lock().await {
        tracing::debug!(error = %e, "releasing the lock after an injected drop failed");
    }
}

struct FaultySource {
    inner: Arc<dyn CdcSource>,
    faults: Faults,
}

#[async_trait]
impl CdcSource for FaultySource {
    async fn session(&self) -> Result<Box<dyn CdcSession>, CdcError> {
        let inner = self
            .faults
            .call(Method::Session, self.inner.session())
            .await?;
        Ok(Box::new(FaultySession {
            inner,
            faults: self.faults.clone(),
        }))
    }
}

struct FaultySession {
    inner: Box<dyn CdcSession>,
    faults: Faults,
}

#[async_trait]
impl CdcSession for FaultySession {
    async fn capture_instances(
        &mut self,
        table: &TableRef,
    ) -> Result<Vec<CaptureInstance>, CdcError> {
        let call = self.inner.capture_instances(table);
        self.faults.call(Method::CaptureInstance, call).await
    }

    async fn capture_progress(&mut self, at: DateTime<Utc>) -> Result<CaptureProgress, CdcError> {
        let call = self.inner.capture_progress(at);
        self.faults.call(Method::CaptureProgress, call).await
    }

    async fn max_lsn(&mut self) -> Result<Option<Lsn>, CdcError> {
        let call = self.inner.max_lsn();
        self.faults.call(Method::MaxLsn, call).await
    }

    async fn net_changes(
        &mut self,
        ci: &CaptureInstance,
        range: LsnRange,
        filter: RowFilter,
        sink: &mut dyn RowSink,
    ) -> Result<u64, CdcError> {
        let fault = self.faults.enter(Method::NetChanges)?;
        let mut sink = StreamSink::new(sink, &self.faults, fault);
        let result = self.inner.net_changes(ci, range, filter, &mut sink).await;
        sink.result(Method::NetChanges, fault, result)
    }

    async fn all_changes(
        &mut self,
        ci: &CaptureInstance,
        range: LsnRange,
        filter: AllRowFilter,
        sink: &mut dyn RowSink,
    ) -> Result<u64, CdcError> {
        let fault = self.faults.enter(Method::AllChanges)?;
        let mut sink = StreamSink::new(sink, &self.faults, fault);
        let result = self.inner.all_changes(ci, range, filter, &mut sink).await;
        sink.result(Method::AllChanges, fault, result)
    }

    async fn scan_locked(
        &mut self,
        ci: &CaptureInstance,
        sink: &mut dyn RowSink,
    ) -> Result<u64, CdcError> {
        let fault = self.faults.enter(Method::ScanLocked)?;
        let mut sink = StreamSink::new(sink, &self.faults, fault);
        let result = self.inner.scan_locked(ci, &mut sink).await;
        let dropped = sink.broke || (fault == Some(Fault::AfterEffect) && result.is_ok());
        let result = sink.result(Method::ScanLocked, fault, result);
        if dropped {
            end_transaction(self.inner.as_mut()).await;
        }
        result
    }

    async fn release_lock(&mut self) -> Result<(), CdcError> {
        let call = self.inner.release_lock();
        let result = self.faults.call(Method::ReleaseLock, call).await;
        if result.is_err() {
            end_transaction(self.inner.as_mut()).await;
        }
        result
    }

    async fn scan(
        &mut self,
        ci: &CaptureInstance,
        after: Option<&[Value]>,
        upto: Option<&[Value]>,
        limit: u64,
        sink: &mut dyn RowSink,
    ) -> Result<(u64, Option<Vec<Value>>), CdcError> {
        let fault = self.faults.enter(Method::Scan)?;
        let mut sink = StreamSink::new(sink, &self.faults, fault);
        let result = self.inner.scan(ci, after, upto, limit, &mut sink).await;
        sink.result(Method::Scan, fault, result)
    }

    async fn table_rows(&mut self, table: &TableRef) -> Result<u64, CdcError> {
        let call = self.inner.table_rows(table);
        self.faults.call(Method::TableRows, call).await
    }

    async fn sample_keys(
        &mut self,
        ci: &CaptureInstance,
        percent: f64,
    ) -> Result<Vec<Vec<Value>>, CdcError> {
        let call = self.inner.sample_keys(ci, percent);
        self.faults.call(Method::SampleKeys, call).await
    }

    async fn read_ranges(
        &mut self,
        table: &TableRef,
        load_id: &str,
    ) -> Result<Vec<RangeProgress>, CdcError> {
        let call = self.inner.read_ranges(table, load_id);
        self.faults.call(Method::ReadRanges, call).await
    }

    async fn insert_ranges(&mut self, rows: &[RangeProgress]) -> Result<bool, CdcError> {
        let call = self.inner.insert_ranges(rows);
        self.faults.call(Method::InsertRanges, call).await
    }

    async fn update_range(
        &mut self,
        expected_version: i64,
        row: &RangeProgress,
    ) -> Result<bool, CdcError> {
        let call = self.inner.update_range(expected_version, row);
        self.faults.call(Method::UpdateRange, call).await
    }

    async fn delete_other_ranges(&mut self, table: &TableRef, keep: &str) -> Result<(), CdcError> {
        let call = self.inner.delete_other_ranges(table, keep);
        self.faults.call(Method::DeleteOtherRanges, call).await
    }

    async fn read_watermark(&mut self, table: &TableRef) -> Result<Option<Watermark>, CdcError> {
        let call = self.inner.read_watermark(table);
        self.faults.call(Method::ReadWatermark, call).await
    }

    async fn insert_watermark(&mut self, row: &Watermark) -> Result<bool, CdcError> {
        let call = self.inner.insert_watermark(row);
        self.faults.call(Method::InsertWatermark, call).await
    }

    async fn update_watermark(
        &mut self,
        expected_version: i64,
        row: &Watermark,
    ) -> Result<bool, CdcError> {
        let call = self.inner.update_watermark(expected_version, row);
        self.faults.call(Method::UpdateWatermark, call).await
    }

    async fn set_last_error(
        &mut self,
        table: &TableRef,
        error: Option<&LastError>,
    ) -> Result<(), CdcError> {
        let call = self.inner.set_last_error(table, error);
        self.faults.call(Method::SetLastError, call).await
    }

    async fn last_error(&mut self, table: &TableRef) -> Result<Option<LastError>, CdcError> {
        let call = self.inner.last_error(table);
        self.faults.call(Method::LastError, call).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::CdcModel;
    use cdc_copy::cdc::{TableState, VecSink};
    use chrono::TimeZone;

    fn customers() -> TableRef {
        TableRef::parse("dbo.customers").unwrap()
    }

    fn watermark(version: i64, last_lsn: Lsn) -> Watermark {
        let t0 = Utc.with_ymd_and_hms(2024, 3, 1, 12, 0, 0).unwrap();
        Watermark {
            table: customers(),
            capture_instance: "dbo_customers".into(),
            last_lsn,
            last_window_end: t0,
            state: TableState::Ready,
            rows_copied: 0,
            bytes_copied: 0,
            version,
            updated_at: t0,
        }
    }

    /// Each fault strikes the call it was armed for, once, and fails it the way a dropped
    /// connection would; calls are counted, failed ones included.
    #[tokio::test]
    async fn faults_strike_the_call_they_were_armed_for() {
        let m = CdcModel::new(Utc.with_ymd_and_hms(2024, 3, 1, 12, 0, 0).unwrap());
        let cols = |names: &[&str]| names.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        m.create_table(customers(), cols(&["id", "name"]), cols(&["id"]))
            .unwrap();
        m.enable_cdc(&customers(), "dbo_customers", true).unwrap();
        for i in 0..20 {
            m.insert(&customers(), vec![Value::Int(i), Value::Text("x".into())])
                .unwrap();
        }
        let faults = Faults::new();
        let source = faults.wrap(Arc::new(m.clone()));
        let mut s = source.session().await.unwrap();
        let ci = s.capture_instance(&customers(), None).await.unwrap();

        faults.arm(Method::MaxLsn, Fault::Before);
        faults.arm(Method::MaxLsn, Fault::Before);
        for _ in 0..2 {
            let e = s.max_lsn().await.unwrap_err();
            assert!(e.is_transient(), "{e}");
            assert!(
                e.to_string().contains("connection dropped before MaxLsn"),
                "{e}"
            );
        }
        assert_eq!(s.max_lsn().await.unwrap(), Some(m.max_lsn()));

        let range = LsnRange::new(ci.min_lsn, m.max_lsn()).unwrap();
        faults.arm(Method::NetChanges, Fault::MidStream(5));
        let mut sink = VecSink::default();
        let e = s
            .net_changes(&ci, range, RowFilter::All, &mut sink)
            .await
            .unwrap_err();
        assert!(matches!(e, CdcError::Connection { .. }), "{e}");
        assert!(
            e.to_string().contains("during NetChanges after 5 rows"),
            "{e}"
        );
        assert_eq!(sink.rows.len(), 5, "the sink saw the rows before the drop");
        let mut sink = VecSink::default();
        assert_eq!(
            s.net_changes(&ci, range, RowFilter::All, &mut sink)
                .await
                .unwrap(),
            20,
            "one-shot: the retry streams everything"
        );

        faults.arm(Method::Scan, Fault::MidStream(3));
        let mut sink = VecSink::default();
        assert!(s.scan(&ci, None, None, 100, &mut sink).await.is_err());
        assert_eq!(sink.rows.len(), 3);

        // The second update commits but its reply is lost: the caller must re-read.
        s.insert_watermark(&watermark(1, Lsn::ZERO)).await.unwrap();
        faults.arm_after(Method::UpdateWatermark, 1, Fault::AfterEffect);
        assert!(s
            .update_watermark(1, &watermark(2, Lsn::ZERO))
            .await
            .unwrap());
        let e = s
            .update_watermark(2, &watermark(3, range.to()))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("after UpdateWatermark ran"), "{e}");
        assert_eq!(m.watermark(&customers()).unwrap().version, 3);

        faults.arm(Method::Session, Fault::Before);
        assert!(source.session().await.is_err());
        assert_eq!(faults.injected(), 6);

        let calls = faults.calls();
        assert_eq!(calls[&Method::Session], 2);
        assert_eq!(calls[&Method::MaxLsn], 3);
        assert_eq!(calls[&Method::NetChanges], 2);
        assert_eq!(calls[&Method::Scan], 1);
        assert_eq!(calls[&Method::InsertWatermark], 1);
        assert_eq!(calls[&Method::UpdateWatermark], 2);
    }
}

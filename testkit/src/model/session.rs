//! The model seen through the job seam: one [`ModelSession`] per "connection", each method
//! one round trip, with fault injection and per-method call counts.
//!
//! Faults are injected here, at the seam, because that is where the real source fails: a
//! dropped connection before a statement runs, after it ran but before the reply arrived
//! (the watermark update that did commit), and in the middle of a streamed result.

use std::collections::BTreeMap;
use std::fmt;

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use tracing::info;

use super::{local_to_utc, to_sql_datetime, CdcModel, Key, NetCursor, BATCH};
use cdc_copy::cdc::{
    CaptureInstance, CaptureProgress, CdcError, CdcSession, CdcSource, Lsn, RowFilter, RowSink,
    TableRef, Value, Watermark,
};

/// A round trip of the seam (opening a session counts as one: the login).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Method {
    Session,
    CaptureInstance,
    CaptureProgress,
    MaxLsn,
    CountNetChanges,
    NetChanges,
    Scan,
    ReadWatermark,
    InsertWatermark,
    UpdateWatermark,
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// One "connection" to the model.
pub struct ModelSession {
    model: CdcModel,
}

impl CdcModel {
    /// The next `times` calls of `method` fail with a transient [`CdcError::Connection`]
    /// before doing anything.
    pub fn fail_next(&self, method: Method, times: u32) {
        *self.lock().faults.fail_before.entry(method).or_default() += times;
    }

    /// The next `times` calls of `method` take effect (a watermark update commits, rows are
    /// streamed) and then fail with a transient [`CdcError::Connection`]: the reply was lost.
    pub fn fail_after_effect(&self, method: Method, times: u32) {
        *self.lock().faults.fail_after.entry(method).or_default() += times;
    }

    /// The next `net_changes` call fails with a transient [`CdcError::Connection`] after
    /// streaming `after_rows` rows into the sink (one-shot; consumed by that call even if it
    /// has fewer rows).
    pub fn fail_mid_stream(&self, after_rows: u64) {
        self.lock().faults.mid_stream = Some(after_rows);
    }

    /// The same for the next `scan` call.
    pub fn fail_mid_scan(&self, after_rows: u64) {
        self.lock().faults.mid_scan = Some(after_rows);
    }

    /// Calls per method so far, failed ones included (each is a round trip).
    pub fn calls(&self) -> BTreeMap<Method, u64> {
        self.lock().calls.clone()
    }

    pub fn reset_calls(&self) {
        self.lock().calls.clear();
    }

    /// Counts the call, lets time pass if configured, applies a "before" fault. Returns
    /// whether an "after effect" fault is armed for this call.
    fn enter(&self, method: Method) -> Result<bool, CdcError> {
        let mut state = self.lock();
        *state.calls.entry(method).or_default() += 1;
        if let Some(per_call) = state.time_per_call {
            state.advance(per_call);
        }
        if let Some(n) = state
            .faults
            .fail_before
            .get_mut(&method)
            .filter(|n| **n > 0)
        {
            *n -= 1;
            info!(%method, "model: injected connection failure before the call");
            return Err(CdcError::Connection(format!(
                "injected failure: connection dropped before {method}"
            )));
        }
        let after = state
            .faults
            .fail_after
            .get_mut(&method)
            .filter(|n| **n > 0)
            .map(|n| *n -= 1)
            .is_some();
        Ok(after)
    }
}

fn lost_reply(method: Method) -> CdcError {
    info!(%method, "model: injected connection failure after the call took effect");
    CdcError::Connection(format!(
        "injected failure: connection dropped after {method} ran, before its reply"
    ))
}

fn mid_stream(method: Method, rows: u64) -> CdcError {
    info!(%method, rows, "model: injected connection failure mid-stream");
    CdcError::Connection(format!(
        "injected failure: connection dropped during {method} after {rows} rows"
    ))
}

/// Runs `f`, then turns success into a lost reply when an after-effect fault is armed.
fn finish<T>(method: Method, fail_after: bool, result: Result<T, CdcError>) -> Result<T, CdcError> {
    match result {
        Ok(_) if fail_after => Err(lost_reply(method)),
        other => other,
    }
}

#[async_trait]
impl CdcSource for CdcModel {
    async fn session(&self) -> Result<Box<dyn CdcSession>, CdcError> {
        let fail_after = self.enter(Method::Session)?;
        finish(Method::Session, fail_after, Ok(()))?;
        Ok(Box::new(ModelSession {
            model: self.clone(),
        }))
    }
}

#[async_trait]
impl CdcSession for ModelSession {
    async fn capture_instance(
        &mut self,
        table: &TableRef,
        wanted: Option<&str>,
    ) -> Result<CaptureInstance, CdcError> {
        let fail_after = self.model.enter(Method::CaptureInstance)?;
        let result = {
            let state = self.model.lock();
            let missing = || CdcError::NoCaptureInstance {
                table: table.clone(),
                wanted: wanted.map(str::to_string),
            };
            let instance = state
                .instances
                .iter()
                .rev()
                .filter(|i| &i.table == table)
                .find(|i| wanted.is_none_or(|w| w == i.name));
            match (instance, state.tables.get(table)) {
                (Some(i), Some(t)) => Ok(CaptureInstance {
                    table: table.clone(),
                    name: i.name.clone(),
                    supports_net_changes: i.supports_net_changes,
                    min_lsn: i.min_lsn,
                    key_columns: t.key_columns.clone(),
                }),
                _ => Err(missing()),
            }
        };
        finish(Method::CaptureInstance, fail_after, result)
    }

    async fn capture_progress(&mut self, at: DateTime<Utc>) -> Result<CaptureProgress, CdcError> {
        let fail_after = self.model.enter(Method::CaptureProgress)?;
        let result = {
            let state = self.model.lock();
            let offset = state.offset_minutes;
            let max_lsn = state.max_lsn();
            // SYSDATETIMEOFFSET() gives the offset in force NOW; converting `at` (and the
            // max LSN's time back) with it is what the real statement does, DST caveat
            // included (docs/model.md).
            let max_lsn_time = state
                .map_lsn_to_time(max_lsn)
                .map(|local| local_to_utc(local, offset));
            let at_local = to_sql_datetime(at.naive_utc() + Duration::minutes(offset.into()));
            Ok(CaptureProgress {
                max_lsn,
                max_lsn_time,
                lsn_at: state.map_time_to_lsn(at_local),
                server_utc_offset_minutes: offset,
            })
        };
        finish(Method::CaptureProgress, fail_after, result)
    }

    async fn max_lsn(&mut self) -> Result<Lsn, CdcError> {
        let fail_after = self.model.enter(Method::MaxLsn)?;
        let result = Ok(self.model.lock().max_lsn());
        finish(Method::MaxLsn, fail_after, result)
    }

    async fn count_net_changes(
        &mut self,
        ci: &CaptureInstance,
        from: Lsn,
        to: Lsn,
        filter: RowFilter,
    ) -> Result<u64, CdcError> {
        let fail_after = self.model.enter(Method::CountNetChanges)?;
        let result = self
            .model
            .lock()
            .net_plan_for(ci, from, to, filter, false)
            .map(|plan| plan.count);
        finish(Method::CountNetChanges, fail_after, result)
    }

    async fn net_changes(
        &mut self,
        ci: &CaptureInstance,
        from: Lsn,
        to: Lsn,
        filter: RowFilter,
        sink: &mut dyn RowSink,
    ) -> Result<u64, CdcError> {
        let fail_after = self.model.enter(Method::NetChanges)?;
        let (plan, fail_at) = {
            let mut state = self.model.lock();
            let fail_at = state.faults.mid_stream.take();
            (state.net_plan_for(ci, from, to, filter, true)?, fail_at)
        };
        sink.columns(&plan.columns).await?;
        let mut cursor = NetCursor::default();
        let mut sent = 0u64;
        loop {
            let batch = self.model.lock().net_batch(&plan, &mut cursor, BATCH)?;
            if batch.is_empty() {
                break;
            }
            for row in &batch {
                if fail_at == Some(sent) {
                    return Err(mid_stream(Method::NetChanges, sent));
                }
                sink.row(row).await?;
                sent += 1;
            }
        }
        finish(Method::NetChanges, fail_after, Ok(sent))
    }

    async fn scan(
        &mut self,
        ci: &CaptureInstance,
        after: Option<&[Value]>,
        limit: u64,
        sink: &mut dyn RowSink,
    ) -> Result<(u64, Option<Vec<Value>>), CdcError> {
        let fail_after = self.model.enter(Method::Scan)?;
        let missing = || CdcError::NoCaptureInstance {
            table: ci.table.clone(),
            wanted: Some(ci.name.clone()),
        };
        let (columns, key_idx, fail_at) = {
            let mut state = self.model.lock();
            if state.instance(&ci.name).is_none_or(|i| i.table != ci.table) {
                return Err(missing());
            }
            let t = state.tables.get(&ci.table).ok_or_else(missing)?;
            let (columns, key_idx) = (t.columns.clone(), t.key_idx.clone());
            (columns, key_idx, state.faults.mid_scan.take())
        };
        sink.columns(&columns).await?;
        let mut cursor: Option<Key> = after.map(Key::from);
        let mut sent = 0u64;
        let mut last_row: Option<Vec<Value>> = None;
        while sent < limit {
            let want = usize::try_from(limit - sent)
                .unwrap_or(usize::MAX)
                .min(BATCH);
            let batch = {
                let state = self.model.lock();
                let t = state.tables.get(&ci.table).ok_or_else(missing)?;
                t.scan_batch(cursor.as_ref(), want)
            };
            let short = batch.len() < want;
            for row in batch {
                if fail_at == Some(sent) {
                    return Err(mid_stream(Method::Scan, sent));
                }
                sink.row(&row).await?;
                sent += 1;
                last_row = Some(row);
            }
            if let Some(row) = &last_row {
                cursor = Some(Key(key_idx.iter().map(|&i| row[i].clone()).collect()));
            }
            if short {
                break;
            }
        }
        let last_key = cursor.filter(|_| last_row.is_some()).map(|k| k.0);
        finish(Method::Scan, fail_after, Ok((sent, last_key)))
    }

    async fn read_watermark(&mut self, table: &TableRef) -> Result<Option<Watermark>, CdcError> {
        let fail_after = self.model.enter(Method::ReadWatermark)?;
        let result = self.with_watermarks(|w| Ok(w.get(table).cloned()));
        finish(Method::ReadWatermark, fail_after, result)
    }

    async fn insert_watermark(&mut self, row: &Watermark) -> Result<bool, CdcError> {
        let fail_after = self.model.enter(Method::InsertWatermark)?;
        let result = self.with_watermarks(|w| {
            if w.contains_key(&row.table) {
                return Ok(false);
            }
            w.insert(row.table.clone(), row.clone());
            Ok(true)
        });
        finish(Method::InsertWatermark, fail_after, result)
    }

    async fn update_watermark(
        &mut self,
        expected_version: i64,
        row: &Watermark,
    ) -> Result<bool, CdcError> {
        let fail_after = self.model.enter(Method::UpdateWatermark)?;
        let result = self.with_watermarks(|w| match w.get_mut(&row.table) {
            Some(current) if current.version == expected_version => {
                *current = row.clone();
                Ok(true)
            }
            _ => Ok(false),
        });
        finish(Method::UpdateWatermark, fail_after, result)
    }
}

impl ModelSession {
    /// Runs `f` on the watermark table under the lock: check-and-set is atomic, as the
    /// real `UPDATE … WHERE version = @expected` is.
    fn with_watermarks<T>(
        &self,
        f: impl FnOnce(&mut BTreeMap<TableRef, Watermark>) -> Result<T, CdcError>,
    ) -> Result<T, CdcError> {
        let mut state = self.model.lock();
        match state.watermarks.as_mut() {
            Some(w) => f(w),
            None => Err(CdcError::NoWatermarkTable(WATERMARK_TABLE.to_string())),
        }
    }
}

/// The name the model reports for its (only) watermark table.
pub const WATERMARK_TABLE: &str = "dbo.cdc_copy_watermark";

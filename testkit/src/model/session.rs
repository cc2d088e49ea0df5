//! The model seen through the job seam: one [`ModelSession`] per "connection", each method
//! one round trip. Faults and call counts are not here: [`crate::faults`] wraps any source,
//! this one included.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};

use super::{
    invalid_column, local_to_utc, to_sql_datetime, CdcModel, Key, NetCursor, State, BATCH,
};
use cdc_copy::cdc::{
    AllRowFilter, CaptureInstance, CaptureProgress, CdcError, CdcSession, CdcSource, LastError,
    Lsn, LsnRange, RangeProgress, RowFilter, RowSink, ScanMark, TableRef, Value, Watermark,
};

/// One "connection" to the model. Dropping it ends its transaction, as closing a
/// connection does: a lock its [`CdcSession::scan_locked`] took is released.
pub struct ModelSession {
    model: CdcModel,
    /// Names the session in the table locks it holds.
    id: u64,
}

impl Drop for ModelSession {
    fn drop(&mut self) {
        self.model.lock().release_locks(self.id);
    }
}

impl State {
    /// Releases every table lock `session` holds; whether it held any.
    fn release_locks(&mut self, session: u64) -> bool {
        let mut held = false;
        self.locks.retain(|_, holders| {
            held |= holders.remove(&session);
            !holders.is_empty()
        });
        held
    }

    /// Table positions of `ci.columns` (the statement selects them; the model answers with
    /// those, as the server would), or the error a missing instance or column gives.
    fn table_projection(&self, ci: &CaptureInstance) -> Result<Vec<usize>, CdcError> {
        let missing = || CdcError::NoCaptureInstance {
            table: ci.table.clone(),
            wanted: Some(ci.name.clone()),
        };
        if self.instance(&ci.name).is_none_or(|i| i.table != ci.table) {
            return Err(missing());
        }
        let t = self.tables.get(&ci.table).ok_or_else(missing)?;
        ci.columns
            .iter()
            .map(|column| {
                t.columns
                    .iter()
                    .position(|c| *c == column.name)
                    .ok_or_else(|| invalid_column(&column.name))
            })
            .collect()
    }
}

/// Streams batches from `next` into `sink` after its `columns`, until an empty batch; the
/// model's lock is taken inside `next`, never across an `.await`.
async fn stream(
    sink: &mut dyn RowSink,
    columns: &[String],
    mut next: impl FnMut() -> Result<Vec<Vec<Value>>, CdcError> + Send,
) -> Result<u64, CdcError> {
    sink.columns(columns).await?;
    let mut sent = 0u64;
    loop {
        let batch = next()?;
        if batch.is_empty() {
            return Ok(sent);
        }
        for row in &batch {
            sink.row(row).await?;
            sent += 1;
        }
    }
}

impl CdcModel {
    /// One round trip: lets model time pass if configured (`set_time_per_call`).
    fn round_trip(&self) {
        let mut state = self.lock();
        if let Some(per_call) = state.time_per_call {
            state.advance(per_call);
        }
    }
}

#[async_trait]
impl CdcSource for CdcModel {
    async fn session(&self) -> Result<Box<dyn CdcSession>, CdcError> {
        self.round_trip();
        let id = {
            let mut state = self.lock();
            state.next_session += 1;
            state.next_session - 1
        };
        Ok(Box::new(ModelSession {
            model: self.clone(),
            id,
        }))
    }
}

#[async_trait]
impl CdcSession for ModelSession {
    async fn capture_instances(
        &mut self,
        table: &TableRef,
    ) -> Result<Vec<CaptureInstance>, CdcError> {
        self.model.round_trip();
        {
            let state = self.model.lock();
            let missing = || CdcError::NoCaptureInstance {
                table: table.clone(),
                wanted: None,
            };
            let t = state.tables.get(table).ok_or_else(missing)?;
            let max_lsn = state.max_lsn();
            let mut out = Vec::new();
            for i in state.instances.iter().filter(|i| &i.table == table) {
                // A unique index may have nullable columns (sp_cdc_enable_table accepts it); the
                // copier refuses such an instance, as the real session does.
                let nullable: Vec<String> = t
                    .key_idx
                    .iter()
                    .filter(|&&k| t.defs[k].nullable)
                    .map(|&k| t.columns[k].clone())
                    .collect();
                if !nullable.is_empty() {
                    return Err(CdcError::NullableKey {
                        table: table.clone(),
                        capture_instance: i.name.clone(),
                        index: t.index.name.clone().unwrap_or_default(),
                        columns: nullable,
                    });
                }
                out.push(CaptureInstance {
                    table: table.clone(),
                    name: i.name.clone(),
                    supports_net_changes: i.supports_net_changes,
                    min_lsn: i.reported_min_lsn(),
                    start_lsn: i.start_lsn,
                    key_columns: t.key_columns(),
                    columns: t.captured_columns(&i.captured),
                    // The capture process writes `cdc.ddl_history` as it reads the DDL.
                    ddl: i.ddl.iter().filter(|d| d.lsn <= max_lsn).cloned().collect(),
                });
            }
            if out.is_empty() {
                return Err(missing());
            }
            Ok(out)
        }
    }

    async fn capture_progress(&mut self, at: DateTime<Utc>) -> Result<CaptureProgress, CdcError> {
        self.model.round_trip();
        {
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
            // The newest completed, error-free session of empty scans, read like the
            // statement reads `sys.dm_cdc_log_scan_sessions` (local time, current offset).
            let drained_since = state
                .scans
                .as_ref()
                .filter(|_| state.scan_sessions_visible)
                .and_then(|job| {
                    job.sessions
                        .iter()
                        .filter(|s| s.empty_scan_count > 0)
                        .map(|s| s.start_time)
                        .max()
                })
                .map(|local| local_to_utc(local, offset));
            // The newest row (largest session_id) and its empty scans: the scan mark.
            let newest_scan = state
                .scans
                .as_ref()
                .filter(|_| state.scan_sessions_visible)
                .and_then(|job| job.sessions.back())
                .map(|s| ScanMark {
                    session_id: s.session_id,
                    empty_scans: i32::try_from(s.empty_scan_count).unwrap_or(i32::MAX),
                });
            Ok(CaptureProgress {
                max_lsn,
                max_lsn_time,
                lsn_at: state.map_time_to_lsn(at_local),
                server_utc_offset_minutes: offset,
                drained_since,
                newest_scan,
                server_now: state.now,
            })
        }
    }

    async fn max_lsn(&mut self) -> Result<Option<Lsn>, CdcError> {
        self.model.round_trip();
        Ok(self.model.max_lsn_or_null())
    }

    async fn net_changes(
        &mut self,
        ci: &CaptureInstance,
        range: LsnRange,
        filter: RowFilter,
        sink: &mut dyn RowSink,
    ) -> Result<u64, CdcError> {
        let (from, to) = (range.from(), range.to());
        self.model.round_trip();
        let plan = self.model.lock().net_plan_for(ci, from, to, filter)?;
        let mut cursor = NetCursor::default();
        let model = &self.model;
        stream(sink, &plan.columns, || {
            model.lock().net_batch(&plan, &mut cursor, BATCH)
        })
        .await
    }

    async fn all_changes(
        &mut self,
        ci: &CaptureInstance,
        range: LsnRange,
        filter: AllRowFilter,
        sink: &mut dyn RowSink,
    ) -> Result<u64, CdcError> {
        self.model.round_trip();
        let plan = self
            .model
            .lock()
            .all_plan_for(ci, range.from(), range.to(), filter)?;
        let mut cursor = plan.cursor();
        let model = &self.model;
        stream(sink, &plan.columns, || {
            model.lock().all_batch(&plan, &mut cursor, BATCH)
        })
        .await
    }

    /// `SELECT … WITH (TABLOCK, HOLDLOCK)` in a transaction: the shared table lock is taken
    /// before the first row and held until [`CdcSession::release_lock`] (or the session is
    /// dropped); writers are refused meanwhile ([`super::ModelError::Blocked`]), readers are
    /// not. Rows come in key order, a heap's in row id order.
    async fn scan_locked(
        &mut self,
        ci: &CaptureInstance,
        sink: &mut dyn RowSink,
    ) -> Result<u64, CdcError> {
        self.model.round_trip();
        let projection = {
            let mut state = self.model.lock();
            let projection = state.table_projection(ci)?;
            state
                .locks
                .entry(ci.table.clone())
                .or_default()
                .insert(self.id);
            projection
        };
        let model = &self.model;
        let mut cursor: Option<Key> = None;
        stream(sink, &ci.column_names(), || {
            let state = model.lock();
            let Some(t) = state.tables.get(&ci.table) else {
                return Ok(Vec::new());
            };
            let batch = t.scan_keyed(cursor.as_ref(), BATCH);
            if let Some((last, _)) = batch.last() {
                cursor = Some(last.clone());
            }
            Ok(batch
                .into_iter()
                .map(|(_, row)| projection.iter().map(|&i| row[i].clone()).collect())
                .collect())
        })
        .await
    }

    /// `sql::RELEASE_LOCK` commits the scan's transaction if it is still open and says whether
    /// it was: a session holding no lock (none taken, or its transaction already ended by a
    /// dropped connection) answers `open_transactions = 0`, which the session reports as
    /// [`CdcError::LockLost`].
    async fn release_lock(&mut self) -> Result<(), CdcError> {
        self.model.round_trip();
        if self.model.lock().release_locks(self.id) {
            Ok(())
        } else {
            Err(CdcError::LockLost)
        }
    }

    async fn scan(
        &mut self,
        ci: &CaptureInstance,
        after: Option<&[Value]>,
        upto: Option<&[Value]>,
        limit: u64,
        sink: &mut dyn RowSink,
    ) -> Result<(u64, Option<Vec<Value>>), CdcError> {
        self.model.round_trip();
        let missing = || CdcError::NoCaptureInstance {
            table: ci.table.clone(),
            wanted: Some(ci.name.clone()),
        };
        let (projection, key_idx, mut cursor, upto) = {
            let state = self.model.lock();
            let projection = state.table_projection(ci)?;
            let t = &state.tables[&ci.table];
            let cursor: Option<Key> = after.map(|k| t.sort_key(k));
            // The range's end compares as the server's `<=` on the key: in key order.
            let upto: Option<Key> = upto.map(|k| t.sort_key(k));
            (projection, t.key_idx.clone(), cursor, upto)
        };
        sink.columns(&ci.column_names()).await?;
        let mut sent = 0u64;
        let mut last_row: Option<Vec<Value>> = None;
        while sent < limit {
            let want = usize::try_from(limit - sent)
                .unwrap_or(usize::MAX)
                .min(BATCH);
            let mut batch = {
                let state = self.model.lock();
                let t = state.tables.get(&ci.table).ok_or_else(missing)?;
                t.scan_keyed(cursor.as_ref(), want)
            };
            let mut short = batch.len() < want;
            if let Some(end) = &upto {
                if let Some(past) = batch.iter().position(|(key, _)| key > end) {
                    batch.truncate(past);
                    short = true;
                }
            }
            let Some((last_key, last)) = batch.last().cloned() else {
                break;
            };
            for (_, row) in batch {
                let selected: Vec<Value> = projection.iter().map(|&i| row[i].clone()).collect();
                sink.row(&selected).await?;
                sent += 1;
            }
            cursor = Some(last_key);
            last_row = Some(last);
            if short {
                break;
            }
        }
        let last_key = last_row.map(|row| key_idx.iter().map(|&i| row[i].clone()).collect());
        Ok((sent, last_key))
    }

    /// `sys.partitions.rows`, which the page calls approximate: the model's is exact.
    async fn table_rows(&mut self, table: &TableRef) -> Result<u64, CdcError> {
        self.model.round_trip();
        Ok(self.model.row_count(table))
    }

    /// `TABLESAMPLE SYSTEM`: "a random value for each physical 8-KB page ... each page
    /// included in the sample returns all rows on that page", so the sample is whole runs of
    /// consecutive keys and its size varies. The model's pages are [`SAMPLE_PAGE_ROWS`] rows
    /// in key order, each kept by a deterministic hash of its first key; `ORDER BY` the key.
    async fn sample_keys(
        &mut self,
        ci: &CaptureInstance,
        percent: f64,
    ) -> Result<Vec<Vec<Value>>, CdcError> {
        self.model.round_trip();
        let state = self.model.lock();
        state.table_projection(ci)?;
        let Some(t) = state.tables.get(&ci.table) else {
            return Ok(Vec::new());
        };
        let keys: Vec<Key> = t
            .scan_keyed(None, usize::MAX)
            .into_iter()
            .map(|(key, _)| key)
            .collect();
        let threshold = (percent.clamp(0.0, 100.0) / 100.0 * u32::MAX as f64) as u64;
        Ok(keys
            .chunks(SAMPLE_PAGE_ROWS)
            .filter(|page| {
                let mut h = std::collections::hash_map::DefaultHasher::new();
                std::hash::Hash::hash(&format!("{:?}", page[0]), &mut h);
                u64::from(std::hash::Hasher::finish(&h) as u32) <= threshold
            })
            .flatten()
            .map(|key| key.values().to_vec())
            .collect())
    }

    async fn read_ranges(
        &mut self,
        table: &TableRef,
        load_id: &str,
    ) -> Result<Vec<RangeProgress>, CdcError> {
        self.model.round_trip();
        self.with_ranges(|r| {
            Ok(r.values()
                .filter(|p| &p.table == table && p.load_id == load_id)
                .cloned()
                .collect())
        })
    }

    /// All or nothing, as `sql::INSERT_RANGES`: nothing when the load has a range already.
    async fn insert_ranges(&mut self, rows: &[RangeProgress]) -> Result<bool, CdcError> {
        self.model.round_trip();
        self.with_ranges(|r| {
            let planned = rows.iter().any(|row| {
                r.keys()
                    .any(|(t, load, _)| t == &row.table && load == &row.load_id)
            });
            if planned {
                return Ok(false);
            }
            for row in rows {
                r.insert(
                    (row.table.clone(), row.load_id.clone(), row.range),
                    row.clone(),
                );
            }
            Ok(true)
        })
    }

    /// The bounds are never updated (`sql::UPDATE_RANGE` leaves them), whatever `row` says.
    async fn update_range(
        &mut self,
        expected_version: i64,
        row: &RangeProgress,
    ) -> Result<bool, CdcError> {
        self.model.round_trip();
        self.with_ranges(|r| {
            match r.get_mut(&(row.table.clone(), row.load_id.clone(), row.range)) {
                Some(current) if current.version == expected_version => {
                    *current = RangeProgress {
                        after: current.after.clone(),
                        upto: current.upto.clone(),
                        ..row.clone()
                    };
                    Ok(true)
                }
                _ => Ok(false),
            }
        })
    }

    async fn delete_other_ranges(&mut self, table: &TableRef, keep: &str) -> Result<(), CdcError> {
        self.model.round_trip();
        self.with_ranges(|r| {
            r.retain(|(t, load, _), _| t != table || load == keep);
            Ok(())
        })
    }

    async fn read_watermark(&mut self, table: &TableRef) -> Result<Option<Watermark>, CdcError> {
        self.model.round_trip();
        self.with_watermarks(|w| Ok(w.get(table).cloned()))
    }

    async fn insert_watermark(&mut self, row: &Watermark) -> Result<bool, CdcError> {
        self.model.round_trip();
        self.with_watermarks(|w| {
            if w.contains_key(&row.table) {
                return Ok(false);
            }
            w.insert(row.table.clone(), row.clone());
            Ok(true)
        })
    }

    async fn update_watermark(
        &mut self,
        expected_version: i64,
        row: &Watermark,
    ) -> Result<bool, CdcError> {
        self.model.round_trip();
        let updated = self.with_watermarks(|w| match w.get_mut(&row.table) {
            Some(current) if current.version == expected_version => {
                *current = row.clone();
                Ok(true)
            }
            _ => Ok(false),
        })?;
        // UPDATE_WATERMARK also sets last_error = NULL, last_error_at = NULL.
        if updated {
            self.model.lock().last_errors.remove(&row.table);
        }
        Ok(updated)
    }

    async fn set_last_error(
        &mut self,
        table: &TableRef,
        error: Option<&LastError>,
    ) -> Result<(), CdcError> {
        self.model.round_trip();
        let exists = self.with_watermarks(|w| Ok(w.contains_key(table)))?;
        let mut state = self.model.lock();
        match error {
            // An UPDATE of no row: nothing to record the error on.
            Some(_) if !exists => {}
            Some(e) => {
                state.last_errors.insert(table.clone(), e.clone());
            }
            None => {
                state.last_errors.remove(table);
            }
        }
        Ok(())
    }

    async fn last_error(&mut self, table: &TableRef) -> Result<Option<LastError>, CdcError> {
        self.model.round_trip();
        self.with_watermarks(|_| Ok(()))?;
        Ok(self.model.lock().last_errors.get(table).cloned())
    }
}

/// Rows per page of the model's `TABLESAMPLE`.
pub const SAMPLE_PAGE_ROWS: usize = 16;

impl ModelSession {
    /// Runs `f` on the range table under the lock; it is missing when the watermark table is
    /// (both come from `sql/setup.sql`).
    fn with_ranges<T>(
        &self,
        f: impl FnOnce(&mut BTreeMap<(TableRef, String, u32), RangeProgress>) -> Result<T, CdcError>,
    ) -> Result<T, CdcError> {
        let mut state = self.model.lock();
        if state.watermarks.is_none() {
            return Err(CdcError::NoWatermarkTable(format!(
                "{WATERMARK_TABLE}_range"
            )));
        }
        f(&mut state.ranges)
    }

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

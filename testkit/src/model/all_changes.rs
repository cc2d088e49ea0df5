//! `cdc.fn_cdc_get_all_changes_<ci>`: every change row in a window, in commit order, the
//! only way to read a table that has no key (its instance cannot support net changes).
//!
//! The log already holds what the function returns — one entry per change, in
//! (`__$start_lsn`, position in the transaction) order, updates with their before-image — so
//! a read is a walk over a range of log positions, batch by batch under the lock, like the
//! net changes: nothing is folded, nothing is cloned up front. Sources: docs/model.md.

use cdc_copy::cdc::{AllRowFilter, CaptureInstance, CdcError, Lsn, TableRef, Value};

use super::{msg_313, project, Entry, Instance, State, ALL_CHANGES, LSN_STRIDE};

/// What an all-changes read will emit, fixed under the lock when it starts.
pub(super) struct AllPlan {
    table: TableRef,
    pub(super) columns: Vec<String>,
    /// Per selected column after the CDC ones: its table position, or `None` for NULL.
    projection: Vec<Option<usize>>,
    /// The instance's captured columns (table positions, in ordinal order): the mask's bits.
    captured: Vec<usize>,
    filter: AllRowFilter,
    /// Absolute log positions `[lo, hi)` of the window's entries.
    lo: u64,
    hi: u64,
}

/// Where an all-changes read stands: a log position, and the row inside a generated entry.
pub(super) struct AllCursor {
    seq: u64,
    gen_off: u64,
}

impl AllPlan {
    pub(super) fn cursor(&self) -> AllCursor {
        AllCursor {
            seq: self.lo,
            gen_off: 0,
        }
    }
}

impl State {
    pub(super) fn all_plan_for(
        &self,
        ci: &CaptureInstance,
        from: Lsn,
        to: Lsn,
        filter: AllRowFilter,
    ) -> Result<AllPlan, CdcError> {
        let inst = self.instance_for(Some(&ci.table), &ci.name)?;
        self.all_plan(inst, Some(&ci.column_names()), from, to, filter)
    }

    pub(super) fn all_plan_by_name(
        &self,
        name: &str,
        from: Lsn,
        to: Lsn,
        filter: AllRowFilter,
    ) -> Result<AllPlan, CdcError> {
        self.all_plan(self.instance_for(None, name)?, None, from, to, filter)
    }

    /// Same validity rules as the net changes ("Null endpoints or endpoints that lie outside
    /// the validity interval for a capture instance will force an error", WWCD); every
    /// instance has this function ("This function is always generated").
    fn all_plan(
        &self,
        inst: &Instance,
        columns: Option<&[String]>,
        from: Lsn,
        to: Lsn,
        filter: AllRowFilter,
    ) -> Result<AllPlan, CdcError> {
        self.check_range(inst, from, to, ALL_CHANGES)?;
        let t = &self.tables[&inst.table];
        let lo = t.log.partition_point(|e| e.lsn() < from) as u64;
        let hi = t.log.partition_point(|e| e.lsn() <= to) as u64;
        Ok(AllPlan {
            table: inst.table.clone(),
            columns: self.change_columns(
                inst,
                &[
                    "__$start_lsn",
                    "__$seqval",
                    "__$operation",
                    "__$update_mask",
                ],
                columns,
            ),
            projection: self.change_projection(inst, columns)?,
            captured: inst.captured.clone(),
            filter,
            lo: t.log_front_seq + lo,
            hi: t.log_front_seq + hi,
        })
    }

    /// The next rows of `plan` (at least `max` unless the window ends; an update's two rows
    /// come together).
    pub(super) fn all_batch(
        &self,
        plan: &AllPlan,
        cur: &mut AllCursor,
        max: usize,
    ) -> Result<Vec<Vec<Value>>, CdcError> {
        let gone = || msg_313(ALL_CHANGES);
        let t = self.tables.get(&plan.table).ok_or_else(gone)?;
        let mut out = Vec::new();
        let emit = |out: &mut Vec<Vec<Value>>,
                    lsn: Lsn,
                    seq: u64,
                    op: u8,
                    mask: Vec<u8>,
                    row: &[Value]| {
            let mut r = Vec::with_capacity(plan.projection.len() + 4);
            r.push(Value::Binary(lsn.0.to_vec()));
            r.push(Value::Binary(seqval(lsn, seq).0.to_vec()));
            r.push(Value::Int(op.into()));
            r.push(Value::Binary(mask));
            r.extend(project(row, &plan.projection));
            out.push(r);
        };
        let all_bits = update_mask(plan.captured.len(), |_| true);
        while out.len() < max && cur.seq < plan.hi {
            // Cleanup deleted rows this read still had to return.
            let entry = t.entry(cur.seq).ok_or_else(gone)?;
            match entry {
                Entry::Change {
                    lsn,
                    seq,
                    op: 4,
                    row,
                    before: Some(before),
                    ..
                } => {
                    let changed = update_mask(plan.captured.len(), |k| {
                        let i = plan.captured[k];
                        before.get(i) != row.get(i)
                    });
                    if plan.filter == AllRowFilter::AllUpdateOld {
                        emit(&mut out, *lsn, *seq, 3, changed.clone(), before);
                    }
                    emit(&mut out, *lsn, *seq, 4, changed, row);
                    cur.seq += 1;
                }
                Entry::Change {
                    lsn, seq, op, row, ..
                } => {
                    emit(&mut out, *lsn, *seq, *op, all_bits.clone(), row);
                    cur.seq += 1;
                }
                Entry::Generated { lsn, start, count } => {
                    let row = t.gen_row(start + cur.gen_off);
                    emit(&mut out, *lsn, cur.gen_off, 2, all_bits.clone(), &row);
                    cur.gen_off += 1;
                    if cur.gen_off == *count {
                        cur.seq += 1;
                        cur.gen_off = 0;
                    }
                }
            }
        }
        Ok(out)
    }
}

/// `__$seqval` of the change at position `seq` of the transaction committed at `lsn`:
/// "Sequence value used to order changes to a row within a transaction". In SQL Server it is
/// the LSN of the change's own log record, before the commit; the model numbers the changes
/// up from just above the previous commit slot, so it increases with the position and sorts
/// below the commit LSN for transactions of fewer than 65 535 changes.
pub(super) fn seqval(lsn: Lsn, seq: u64) -> Lsn {
    Lsn::from_u128(
        lsn.to_u128()
            .saturating_sub(LSN_STRIDE)
            .saturating_add(1 + u128::from(seq)),
    )
}

/// `__$update_mask` over `n` captured columns: bit `k` (0-based ordinal) set when `set(k)`.
/// The bytes read the way `sys.fn_cdc_is_bit_set` reads them: the LAST byte holds ordinals
/// 1–8 (lowest bit first), the one before it 9–16, and so on.
pub(super) fn update_mask(n: usize, set: impl Fn(usize) -> bool) -> Vec<u8> {
    let mut mask = vec![0u8; n.div_ceil(8).max(1)];
    let last = mask.len() - 1;
    for k in (0..n).filter(|&k| set(k)) {
        mask[last - k / 8] |= 1 << (k % 8);
    }
    mask
}

//! The all-changes function, tables without a key, and the locked scan. Sources
//! (docs/model.md):
//! - ALL: Microsoft, "cdc.fn_cdc_get_all_changes_<capture_instance> (Transact-SQL)"
//!   <https://learn.microsoft.com/sql/relational-databases/system-functions/cdc-fn-cdc-get-all-changes-capture-instance-transact-sql>
//! - WWCD: "Work with Change Data"; ENABLE: "sys.sp_cdc_enable_table (Transact-SQL)"
//! - HINTS: "Table Hints (Transact-SQL)" (TABLOCK, HOLDLOCK)

use std::sync::Arc;

use cdc_copy::cdc::{AllRowFilter, CdcError, Lsn, RowFilter, TableRef, Value, VecSink};
use rand::{Rng, SeedableRng};

use super::all_changes::{seqval, update_mask};
use super::tests::{cols, customers, key, model, range, row, session, t0};
use super::{CdcModel, ColumnDef, ModelError};
use crate::faults::{Fault, Faults, Method};

/// An all-changes row decoded: (start LSN, seqval, operation, mask, captured values).
type AllRow = (Lsn, Lsn, i64, Vec<u8>, Vec<Value>);

fn decode(rows: Vec<Vec<Value>>) -> Vec<AllRow> {
    rows.into_iter()
        .map(|r| {
            let lsn = |v: &Value| match v {
                Value::Binary(b) => Lsn::from_bytes(b).unwrap(),
                other => panic!("binary(10) expected, got {other:?}"),
            };
            let Value::Int(op) = r[2] else {
                panic!("operation is int")
            };
            let Value::Binary(mask) = &r[3] else {
                panic!("the mask is varbinary")
            };
            (lsn(&r[0]), lsn(&r[1]), op, mask.clone(), r[4..].to_vec())
        })
        .collect()
}

/// The session's rows over `[from, to]`, checked equal to the oracle's (same code path).
async fn all(m: &CdcModel, ci: &str, from: Lsn, to: Lsn, filter: AllRowFilter) -> Vec<AllRow> {
    let mut s = session(m).await;
    let table = s
        .capture_instances(&customers())
        .await
        .ok()
        .and_then(|list| list.into_iter().find(|c| c.name == ci));
    let oracle = m.all_rows(ci, from, to, filter).unwrap();
    if let Some(ci) = table {
        let mut sink = VecSink::default();
        let sent = s
            .all_changes(&ci, range(from, to), filter, &mut sink)
            .await
            .unwrap();
        assert_eq!(sent, sink.rows.len() as u64);
        assert_eq!(
            sink.columns,
            cols(&[
                "__$start_lsn",
                "__$seqval",
                "__$operation",
                "__$update_mask",
                "id",
                "name"
            ])
        );
        assert_eq!(sink.rows, oracle, "session and oracle agree");
    }
    decode(oracle)
}

/// `dbo_customers`' whole validity interval, `all update old`.
async fn whole(m: &CdcModel) -> Vec<AllRow> {
    let ci = "dbo_customers";
    all(
        m,
        ci,
        m.min_lsn(ci),
        m.max_lsn(),
        AllRowFilter::AllUpdateOld,
    )
    .await
}

fn ops(rows: &[AllRow]) -> Vec<(Lsn, i64)> {
    rows.iter().map(|r| (r.0, r.2)).collect()
}

#[tokio::test]
async fn all_changes_returns_every_change_in_commit_then_seqval_order() {
    let m = model();
    let t = customers();
    let mut txn = m.begin();
    txn.insert(&t, row(1, "a"))
        .insert(&t, row(2, "b"))
        .update(&t, &key(1), row(1, "a2"))
        .delete(&t, &key(2));
    let first = txn.commit().unwrap();
    // A key update: delete of the old key, insert of the new one.
    let second = m.update(&t, &key(1), row(3, "a2")).unwrap();
    let (from, to) = (m.min_lsn("dbo_customers"), m.max_lsn());
    // ALL: "When the 'all update old' option is specified, update operations are represented
    // as two rows: one containing the values of the captured columns before the update and
    // another containing the values of the captured columns after the update." With 'all',
    // "this option only returns the row containing the new values after the update".
    let cases = [
        (
            AllRowFilter::AllUpdateOld,
            vec![
                (first, 2),
                (first, 2),
                (first, 3),
                (first, 4),
                (first, 1),
                (second, 1),
                (second, 2),
            ],
        ),
        (
            AllRowFilter::All,
            vec![
                (first, 2),
                (first, 2),
                (first, 4),
                (first, 1),
                (second, 1),
                (second, 2),
            ],
        ),
    ];
    for (filter, expected) in cases {
        let rows = all(&m, "dbo_customers", from, to, filter).await;
        assert_eq!(ops(&rows), expected, "{filter:?}");
        // WWCD: "Entries are always returned sorted, first by the transaction commit LSN of
        // the change, and then by a value that sequences the change within its transaction."
        for pair in rows.windows(2) {
            let (a, b) = (&pair[0], &pair[1]);
            assert!((a.0, a.1, a.2) < (b.0, b.1, b.2), "{a:?} then {b:?}");
            if a.0 == b.0 && a.2 == 3 {
                assert_eq!(a.1, b.1, "the before-image shares its update's seqval");
            }
        }
        // ALL: __$start_lsn is the "Commit LSN associated with the change […] Changes
        // committed in the same transaction share the same commit LSN value."
        assert!(
            rows.iter().all(|r| r.1 < r.0),
            "seqvals sort below their commit"
        );
        let values: Vec<_> = rows.iter().map(|r| (r.2, r.4.clone())).collect();
        assert!(values.contains(&(4, row(1, "a2"))));
        assert!(
            values.contains(&(1, row(2, "b"))),
            "a delete carries the deleted row"
        );
        assert_eq!(
            values.contains(&(3, row(1, "a"))),
            filter == AllRowFilter::AllUpdateOld
        );
    }
}

#[tokio::test]
async fn both_bounds_are_inclusive_and_windows_split_cleanly() {
    let m = model();
    let t = customers();
    let a = m.insert(&t, row(1, "a")).unwrap();
    let b = m.insert(&t, row(2, "b")).unwrap();
    let c = m.update(&t, &key(1), row(1, "c")).unwrap();
    // ALL: "Only rows […] with a value in __$start_lsn greater than or equal to from_lsn and
    // less than or equal to to_lsn are included in the result set."
    let cases = [
        ((a, a), vec![a]),
        ((a, b), vec![a, b]),
        ((b, c), vec![b, c, c]),
        ((c, c), vec![c, c]),
    ];
    for ((from, to), expected) in cases {
        let rows = all(&m, "dbo_customers", from, to, AllRowFilter::AllUpdateOld).await;
        let lsns: Vec<Lsn> = rows.iter().map(|r| r.0).collect();
        assert_eq!(lsns, expected, "[{from}, {to}]");
    }
}

#[tokio::test]
async fn the_update_mask_marks_every_column_on_insert_and_delete_and_the_changed_ones_on_update() {
    let m = model();
    let t = customers();
    m.insert(&t, row(1, "a")).unwrap();
    m.update(&t, &key(1), row(1, "b")).unwrap();
    m.update(&t, &key(1), row(1, "b")).unwrap();
    m.delete(&t, &key(1)).unwrap();
    let rows = whole(&m).await;
    // ALL: "This value has all defined bits set to 1 when __$operation = 1 or 2. When
    // __$operation = 3 or 4, only those bits corresponding to columns that changed are set
    // to 1." Ordinal 1 (id) is the lowest bit, 2 (name) the next.
    let masks: Vec<(i64, Vec<u8>)> = rows.iter().map(|r| (r.2, r.3.clone())).collect();
    assert_eq!(
        masks,
        [
            (2, vec![0b11]),
            (3, vec![0b10]),
            (4, vec![0b10]),
            (3, vec![0b00]),
            (4, vec![0b00]),
            (1, vec![0b11])
        ]
    );
}

#[test]
fn update_mask_and_seqval_layout_table() {
    // (captured columns, ordinals set (0-based), bytes): the last byte holds ordinals 1–8.
    let cases: [(usize, &[usize], &[u8]); 5] = [
        (1, &[0], &[0x01]),
        (3, &[0, 1, 2], &[0x07]),
        (8, &[7], &[0x80]),
        (10, &[0, 9], &[0x02, 0x01]),
        (17, &[16], &[0x01, 0x00, 0x00]),
    ];
    for (n, set, bytes) in cases {
        assert_eq!(
            update_mask(n, |k| set.contains(&k)),
            bytes,
            "{n} columns, {set:?}"
        );
    }
    let commit = Lsn::from_u128(0x2A_0003_0000);
    assert!(seqval(commit, 0) < seqval(commit, 1));
    assert!(seqval(commit, 1) < commit);
}

#[tokio::test]
async fn all_changes_refuses_what_net_changes_refuses() {
    let m = model();
    let t = customers();
    let first = m.insert(&t, row(1, "a")).unwrap();
    let second = m.insert(&t, row(2, "b")).unwrap();
    m.insert(&t, row(3, "c")).unwrap();
    m.cleanup(second);
    let min = m.min_lsn("dbo_customers");
    let max = m.max_lsn();
    let above = Lsn::from_u128(max.to_u128() + 1);
    // WWCD: "Null endpoints or endpoints that lie outside the validity interval for a
    // capture instance will force an error to be returned by a change data capture TVF."
    for (case, from, to) in [
        ("below min", first, max),
        ("above max", min, above),
        ("inverted", max, min),
    ] {
        for filter in [AllRowFilter::All, AllRowFilter::AllUpdateOld] {
            match m.all_rows("dbo_customers", from, to, filter) {
                Err(CdcError::Sql {
                    number: 313,
                    message,
                    transient: false,
                }) => {
                    assert!(
                        message.contains("cdc.fn_cdc_get_all_changes_"),
                        "{case}: {message}"
                    )
                }
                other => panic!("{case}: expected Msg 313, got {other:?}"),
            }
        }
    }
    assert!(matches!(
        m.all_rows("nope", min, max, AllRowFilter::All),
        Err(CdcError::NoCaptureInstance { .. })
    ));
    // Through a session too, with the instance read before the cleanup moved its minimum.
    let mut s = session(&m).await;
    let mut ci = s.capture_instance(&t, None).await.unwrap();
    ci.name = "dbo_gone".into();
    let mut sink = VecSink::default();
    assert!(matches!(
        s.all_changes(&ci, range(min, max), AllRowFilter::All, &mut sink)
            .await,
        Err(CdcError::NoCaptureInstance { .. })
    ));
}

#[tokio::test]
async fn generated_inserts_are_op_2_rows_with_increasing_seqval() {
    let m = CdcModel::new(t0());
    let t = customers();
    m.create_generated_table(t.clone(), cols(&["id", "name"]), cols(&["id"]), 2, |i| {
        row(i as i64, "g")
    })
    .unwrap();
    m.enable_cdc(&t, "dbo_customers", true).unwrap();
    m.generated_inserts(&t, 5, 3).unwrap();
    m.update(&t, &key(3), row(3, "changed")).unwrap();
    let rows = whole(&m).await;
    let got: Vec<(i64, Vec<Value>)> = rows.iter().map(|r| (r.2, r.4.clone())).collect();
    let mut expected: Vec<(i64, Vec<Value>)> = (2..7).map(|i| (2, row(i, "g"))).collect();
    expected.push((3, row(3, "g")));
    expected.push((4, row(3, "changed")));
    assert_eq!(got, expected);
    // Two transactions of 3 and 2 inserts: seqval increases inside each.
    assert_eq!(rows[0].0, rows[2].0);
    assert!(rows[0].1 < rows[1].1 && rows[1].1 < rows[2].1);
    assert!(rows[2].0 < rows[3].0);
    assert!(rows[3].1 < rows[4].1);
}

// ----- tables without a key ---------------------------------------------------------------

fn audit() -> TableRef {
    TableRef::parse("dbo.audit_log").unwrap()
}

fn arow(who: &str, n: i64) -> Vec<Value> {
    vec![Value::Text(who.into()), Value::Int(n)]
}

fn heap_model() -> CdcModel {
    let m = CdcModel::new(t0());
    m.create_heap(
        audit(),
        vec![ColumnDef::untyped("who"), ColumnDef::untyped("n")],
    )
    .unwrap();
    m
}

#[tokio::test]
async fn a_table_without_a_key_takes_duplicates_and_only_an_instance_without_net_changes() {
    let m = heap_model();
    let t = audit();
    // ENABLE: "If supports_net_changes is set to 1, index_name must be specified, or the
    // source table must have a defined primary key."
    assert!(matches!(
        m.enable_cdc(&t, "dbo_audit_log", true),
        Err(ModelError::NetChangesNeedKey { .. })
    ));
    m.enable_cdc(&t, "dbo_audit_log", false).unwrap();
    for r in [arow("b", 1), arow("a", 1), arow("b", 1)] {
        m.insert(&t, r).unwrap();
    }
    // Rows in insertion order, duplicates kept.
    assert_eq!(m.table_rows(&t), [arow("b", 1), arow("a", 1), arow("b", 1)]);
    // One row of two equal ones changes (UPDATE TOP (1) … WHERE every column equal).
    m.update_row(&t, &arow("b", 1), arow("b", 2)).unwrap();
    m.delete_row(&t, &arow("b", 1)).unwrap();
    assert_eq!(m.table_rows(&t), [arow("b", 2), arow("a", 1)]);
    assert!(matches!(
        m.delete_row(&t, &arow("zzz", 0)),
        Err(ModelError::NoMatchingRow { .. })
    ));
    assert!(matches!(
        m.delete(&t, &[]),
        Err(ModelError::NoRow { .. } | ModelError::KeyArity { .. })
    ));

    let mut s = session(&m).await;
    let ci = s.capture_instance(&t, None).await.unwrap();
    assert!(!ci.supports_net_changes);
    assert!(ci.key_columns.is_empty(), "no key to report");
    assert_eq!(ci.column_names(), cols(&["who", "n"]));
    // ENABLE: "If 0, only the support functions to query for all changes are generated."
    let mut sink = VecSink::default();
    match s
        .net_changes(
            &ci,
            range(ci.min_lsn, m.max_lsn()),
            RowFilter::All,
            &mut sink,
        )
        .await
    {
        Err(CdcError::Sql {
            number: 208,
            message,
            ..
        }) => {
            assert_eq!(
                message,
                "Invalid object name 'cdc.fn_cdc_get_net_changes_dbo_audit_log'."
            )
        }
        other => panic!("expected Msg 208, got {other:?}"),
    }
    let mut sink = VecSink::default();
    s.all_changes(
        &ci,
        range(ci.min_lsn, m.max_lsn()),
        AllRowFilter::AllUpdateOld,
        &mut sink,
    )
    .await
    .unwrap();
    let got: Vec<(i64, Vec<Value>)> = decode(sink.rows).into_iter().map(|r| (r.2, r.4)).collect();
    assert_eq!(
        got,
        [
            (2, arow("b", 1)),
            (2, arow("a", 1)),
            (2, arow("b", 1)),
            (3, arow("b", 1)),
            (4, arow("b", 2)),
            (1, arow("b", 1))
        ]
    );
}

/// Applies all-changes rows (`all update old`) to a multiset of rows: 1 and 3 take one equal
/// row away, 2 and 4 add one — what a consumer without a key does.
fn replay(mut rows: Vec<Vec<Value>>, changes: &[AllRow]) -> Vec<Vec<Value>> {
    for (_, _, op, _, values) in changes {
        match op {
            1 | 3 => {
                let i = rows
                    .iter()
                    .position(|r| r == values)
                    .expect("a row to take away");
                rows.remove(i);
            }
            2 | 4 => rows.push(values.clone()),
            other => panic!("operation {other}"),
        }
    }
    rows
}

fn sorted(mut rows: Vec<Vec<Value>>) -> Vec<Vec<Value>> {
    rows.sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")));
    rows
}

#[test]
fn replaying_all_changes_of_random_keyless_dml_gives_the_table_as_a_multiset() {
    for seed in 0..40u64 {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let m = heap_model();
        let t = audit();
        m.insert(&t, arow("pre", 0)).unwrap();
        m.enable_cdc(&t, "dbo_audit_log", false).unwrap();
        let mut windows = vec![m.table_rows(&t)];
        let mut cuts = vec![m.max_lsn()];
        for step in 0..60 {
            let current = m.table_rows(&t);
            let mut txn = m.begin();
            for _ in 0..rng.random_range(1..4) {
                // Few distinct values, so duplicates are common.
                let fresh = arow(["a", "b"][rng.random_range(0..2)], rng.random_range(0..2));
                match (rng.random_range(0..3), current.is_empty()) {
                    (0, _) | (_, true) => txn.insert(&t, fresh),
                    (1, false) => {
                        txn.update_row(&t, &current[rng.random_range(0..current.len())], fresh)
                    }
                    _ => txn.delete_row(&t, &current[rng.random_range(0..current.len())]),
                };
            }
            // A row changed twice in one transaction may be gone by its second change.
            let _ = txn.commit();
            if step % 20 == 19 {
                windows.push(m.table_rows(&t));
                cuts.push(m.max_lsn());
            }
        }
        // Window by window, from the table as it was at each cut.
        for w in 1..cuts.len() {
            let Some(from) = cuts[w - 1].increment() else {
                continue;
            };
            if from > cuts[w] {
                assert_eq!(windows[w - 1], windows[w]);
                continue;
            }
            let changes = decode(
                m.all_rows("dbo_audit_log", from, cuts[w], AllRowFilter::AllUpdateOld)
                    .unwrap(),
            );
            assert_eq!(
                sorted(replay(windows[w - 1].clone(), &changes)),
                sorted(windows[w].clone()),
                "seed {seed}, window {w}"
            );
        }
    }
}

// ----- the locked scan --------------------------------------------------------------------

#[tokio::test]
async fn a_locked_scan_streams_every_row_and_holds_writers_until_released() {
    let m = heap_model();
    let t = audit();
    m.enable_cdc(&t, "dbo_audit_log", false).unwrap();
    for r in [arow("z", 1), arow("a", 2), arow("z", 1)] {
        m.insert(&t, r).unwrap();
    }
    let mut s = session(&m).await;
    let ci = s.capture_instance(&t, None).await.unwrap();
    // No transaction open: RELEASE_LOCK's `open_transactions` is 0, a lost lock.
    assert!(matches!(s.release_lock().await, Err(CdcError::LockLost)));
    m.insert(&t, arow("b", 3)).unwrap();
    let mut sink = VecSink::default();
    assert_eq!(s.scan_locked(&ci, &mut sink).await.unwrap(), 4);
    assert_eq!(sink.columns, cols(&["who", "n"]));
    assert_eq!(
        sink.rows,
        [arow("z", 1), arow("a", 2), arow("z", 1), arow("b", 3)],
        "row id order"
    );

    // HINTS: TABLOCK takes the lock at table level; HOLDLOCK (SERIALIZABLE) holds the shared
    // lock until the transaction completes, so every writer waits for it.
    let before = (
        m.row_count(&t),
        m.changes_since(&t, Lsn::ZERO).len(),
        m.max_lsn(),
    );
    let writes: Vec<(&str, Result<Lsn, ModelError>)> = vec![
        ("insert", m.insert(&t, arow("c", 4))),
        ("update_row", m.update_row(&t, &arow("a", 2), arow("a", 3))),
        ("delete_row", m.delete_row(&t, &arow("z", 1))),
        ("txn", {
            let mut txn = m.begin();
            txn.insert(&t, arow("d", 5));
            txn.commit()
        }),
        (
            "add_column",
            m.add_column(&t, ColumnDef::untyped("x").nullable()),
        ),
        (
            "ddl",
            m.ddl(&t, "ALTER TABLE dbo.audit_log ALTER COLUMN n bigint"),
        ),
    ];
    for (case, result) in writes {
        assert!(
            matches!(result, Err(ModelError::Blocked { .. })),
            "{case}: {result:?}"
        );
    }
    assert_eq!(
        before,
        (
            m.row_count(&t),
            m.changes_since(&t, Lsn::ZERO).len(),
            m.max_lsn()
        )
    );
    // Readers are not blocked: another session scans and reads changes meanwhile.
    let mut other = session(&m).await;
    let mut sink = VecSink::default();
    assert_eq!(
        other.scan_locked(&ci, &mut sink).await.unwrap(),
        4,
        "shared locks are compatible"
    );
    other.release_lock().await.unwrap();
    assert!(
        matches!(m.insert(&t, arow("c", 4)), Err(ModelError::Blocked { .. })),
        "still held by s"
    );
    let mut sink = VecSink::default();
    other
        .all_changes(
            &ci,
            range(ci.min_lsn, m.max_lsn()),
            AllRowFilter::All,
            &mut sink,
        )
        .await
        .unwrap();
    assert_eq!(sink.rows.len(), 4);
    other.capture_progress(m.now()).await.unwrap();
    // Another table is not locked.
    let c = customers();
    m.create_table(c.clone(), cols(&["id", "name"]), cols(&["id"]))
        .unwrap();
    m.insert(&c, row(1, "free")).unwrap();

    s.release_lock().await.unwrap();
    m.insert(&t, arow("c", 4)).unwrap();
    // Dropping a session ends its transaction: the lock goes with it.
    let mut sink = VecSink::default();
    s.scan_locked(&ci, &mut sink).await.unwrap();
    assert!(m.insert(&t, arow("e", 6)).is_err());
    drop(s);
    m.insert(&t, arow("e", 6)).unwrap();
}

#[tokio::test]
async fn a_locked_scan_of_a_keyed_table_comes_in_key_order_projected_to_the_instance() {
    let m = model();
    let t = customers();
    for id in [3, 1, 2] {
        m.insert(&t, row(id, "x")).unwrap();
    }
    m.add_column(&t, ColumnDef::untyped("email").nullable())
        .unwrap();
    let mut s = session(&m).await;
    let ci = s.capture_instance(&t, None).await.unwrap();
    let mut sink = VecSink::default();
    s.scan_locked(&ci, &mut sink).await.unwrap();
    assert_eq!(
        sink.columns,
        cols(&["id", "name"]),
        "the instance's columns"
    );
    assert_eq!(sink.rows, [row(1, "x"), row(2, "x"), row(3, "x")]);
    let mut missing = ci.clone();
    missing.name = "nope".into();
    assert!(matches!(
        s.scan_locked(&missing, &mut sink).await,
        Err(CdcError::NoCaptureInstance { .. })
    ));
}

#[tokio::test]
async fn faults_break_all_changes_and_the_locked_scan_mid_stream_and_end_the_lock() {
    let m = heap_model();
    let t = audit();
    m.enable_cdc(&t, "dbo_audit_log", false).unwrap();
    for n in 0..10 {
        m.insert(&t, arow("r", n)).unwrap();
    }
    let faults = Faults::new();
    let source = faults.wrap(Arc::new(m.clone()));
    let mut s = source.session().await.unwrap();
    let ci = s.capture_instance(&t, None).await.unwrap();
    let whole = range(ci.min_lsn, m.max_lsn());

    faults.arm(Method::AllChanges, Fault::MidStream(4));
    let mut sink = VecSink::default();
    let e = s
        .all_changes(&ci, whole, AllRowFilter::All, &mut sink)
        .await
        .unwrap_err();
    assert!(
        e.is_transient() && e.to_string().contains("during AllChanges after 4 rows"),
        "{e}"
    );
    assert_eq!(sink.rows.len(), 4);
    let mut sink = VecSink::default();
    assert_eq!(
        s.all_changes(&ci, whole, AllRowFilter::All, &mut sink)
            .await
            .unwrap(),
        10
    );

    // A drop in the middle of the locked scan ends its transaction: writers go on.
    faults.arm(Method::ScanLocked, Fault::MidStream(3));
    let mut sink = VecSink::default();
    let e = s.scan_locked(&ci, &mut sink).await.unwrap_err();
    assert!(
        e.to_string().contains("during ScanLocked after 3 rows"),
        "{e}"
    );
    assert_eq!(sink.rows.len(), 3);
    m.insert(&t, arow("after drop", 0)).unwrap();
    // The caller's release then finds the transaction gone.
    let e = s.release_lock().await.unwrap_err();
    assert!(matches!(e, CdcError::LockLost) && e.is_transient(), "{e}");

    // A drop before the COMMIT reaches the server: it rolls back, and the lock is gone too.
    let mut sink = VecSink::default();
    assert_eq!(s.scan_locked(&ci, &mut sink).await.unwrap(), 11);
    assert!(matches!(
        m.insert(&t, arow("x", 0)),
        Err(ModelError::Blocked { .. })
    ));
    faults.arm(Method::ReleaseLock, Fault::Before);
    assert!(s.release_lock().await.is_err());
    m.insert(&t, arow("x", 0)).unwrap();
    let calls = faults.calls();
    assert_eq!(calls[&Method::AllChanges], 2);
    assert_eq!(calls[&Method::ScanLocked], 2);
    assert_eq!(calls[&Method::ReleaseLock], 2);
    assert_eq!(faults.injected(), 3);
}

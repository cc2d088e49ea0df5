//! Schema changes and a second capture instance. Sources (docs/model.md):
//! - ACDC: Microsoft, "About Change Data Capture (SQL Server)", "Handling Changes to Source
//!   Tables" <https://learn.microsoft.com/sql/relational-databases/track-changes/about-change-data-capture-sql-server>
//! - CT: "cdc.change_tables"; DDLH: "cdc.ddl_history"; ENABLE: "sys.sp_cdc_enable_table"
//!   (learn.microsoft.com, Transact-SQL reference)

use cdc_copy::cdc::{AllRowFilter, CdcError, CdcSource, Lsn, RowFilter, TableRef, Value};
use chrono::Duration;

use super::tests::{cols, customers, key, model, row, session};
use super::{CdcModel, ColumnDef, ModelError};

fn email() -> ColumnDef {
    ColumnDef::untyped("email").nullable()
}

/// `r` as it reads after the ADD COLUMN: NULL in the new column.
fn with_null(mut r: Vec<Value>) -> Vec<Value> {
    r.push(Value::Null);
    r
}

/// A refusal case: what was tried, what it gave, and the error expected.
type Refusal = (
    &'static str,
    Result<Lsn, ModelError>,
    fn(&ModelError) -> bool,
);

fn row3(id: i64, name: &str, email: &str) -> Vec<Value> {
    let mut r = row(id, name);
    r.push(Value::Text(email.to_string()));
    r
}

/// The captured values of every all-changes row of `ci` over its whole validity interval.
fn all_values(m: &CdcModel, ci: &str) -> Vec<(i64, Vec<Value>)> {
    m.all_rows(ci, m.min_lsn(ci), m.max_lsn(), AllRowFilter::All)
        .unwrap()
        .into_iter()
        .map(|r| {
            let Value::Int(op) = r[2] else {
                panic!("operation is int")
            };
            (op, r[4..].to_vec())
        })
        .collect()
}

#[tokio::test]
async fn a_second_instance_after_add_column_has_its_own_start_and_columns() {
    let m = model();
    let t = customers();
    m.insert(&t, row(1, "before")).unwrap();
    let ddl = m.add_column(&t, email()).unwrap();
    // Rows written after the DDL have the new arity.
    assert!(matches!(
        m.insert(&t, row(9, "old arity")),
        Err(ModelError::Arity {
            expected: 3,
            got: 2,
            ..
        })
    ));
    m.insert(&t, row3(2, "between", "b@x")).unwrap();
    let v2_start = m.enable_cdc(&t, "dbo_customers_v2", true).unwrap();
    m.insert(&t, row3(3, "after", "c@x")).unwrap();
    assert!(v2_start > ddl);
    // Existing rows read NULL in the new column.
    assert_eq!(m.table_rows(&t)[0], with_null(row(1, "before")));

    let mut s = session(&m).await;
    let both = s.capture_instances(&t).await.unwrap();
    let names: Vec<_> = both.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["dbo_customers", "dbo_customers_v2"], "oldest first");
    let (old, new) = (&both[0], &both[1]);
    // ACDC: "the capture process responsible for populating the change table will ignore any
    // new columns that are not identified for capture when the source table was enabled".
    assert_eq!(old.column_names(), cols(&["id", "name"]));
    // ACDC: "it is possible to create a second capture instance for the table that reflects
    // the new column structure."
    assert_eq!(new.column_names(), cols(&["id", "name", "email"]));
    // CT: start_lsn is the "low endpoint when querying for change data in the change table".
    assert_eq!(new.start_lsn, Some(v2_start));
    assert_eq!(new.min_lsn, v2_start);
    assert!(old.start_lsn < new.start_lsn);

    // "This allows the capture process to make changes to the same source table into two
    // distinct change tables having two different column structures."
    assert_eq!(
        all_values(&m, "dbo_customers"),
        vec![
            (2, row(1, "before")),
            (2, row(2, "between")),
            (2, row(3, "after"))
        ]
    );
    assert_eq!(
        all_values(&m, "dbo_customers_v2"),
        vec![(2, row3(3, "after", "c@x"))],
        "only changes at or after its own start"
    );
    let net_old = m
        .net_rows("dbo_customers", old.min_lsn, m.max_lsn(), RowFilter::All)
        .unwrap();
    assert!(net_old.iter().all(|r| r.len() == 3 + 2), "{net_old:?}");
    // A window starting below the new instance's start is refused, as for any instance.
    let below = Lsn::from_u128(v2_start.to_u128() - 1);
    for result in [
        m.all_rows("dbo_customers_v2", below, m.max_lsn(), AllRowFilter::All),
        m.net_rows("dbo_customers_v2", below, m.max_lsn(), RowFilter::All),
    ] {
        assert!(
            matches!(result, Err(CdcError::Sql { number: 313, .. })),
            "{result:?}"
        );
    }
}

#[tokio::test]
async fn ddl_history_is_recorded_for_every_instance_once_captured_in_local_time() {
    // Server at UTC-05:00, capture 30 s behind.
    let m = model().with_utc_offset(-300);
    let t = customers();
    m.enable_cdc(&t, "dbo_customers_v2", true).unwrap();
    m.set_capture_lag(Duration::seconds(30));
    let at = m.now();
    let lsn = m.add_column(&t, email()).unwrap();
    let other = m
        .ddl(
            &t,
            "ALTER TABLE dbo.customers ALTER COLUMN name nvarchar(200)",
        )
        .unwrap();
    let mut s = session(&m).await;
    // ACDC: DDL log entries "are processed by the capture process, which then posts the
    // associated DDL events to the cdc.ddl_history table": nothing before the capture.
    for ci in s.capture_instances(&t).await.unwrap() {
        assert!(ci.ddl.is_empty(), "{:?}", ci.ddl);
    }
    m.advance(Duration::seconds(30));
    let both = s.capture_instances(&t).await.unwrap();
    for ci in &both {
        // DDLH: one row per DDL change and change table; ddl_lsn "associated with the
        // commitment of the DDL modification"; ddl_time the server's (local) time.
        let lsns: Vec<Lsn> = ci.ddl.iter().map(|d| d.lsn).collect();
        assert_eq!(lsns, [lsn, other], "{}: oldest first", ci.name);
        assert_eq!(
            ci.ddl[0].command,
            "ALTER TABLE [dbo].[customers] ADD [email] sql_variant NULL"
        );
        assert_eq!(ci.ddl[0].time, at.naive_utc() - Duration::minutes(300));
        // Both instances keep their shape.
        assert_eq!(ci.column_names(), cols(&["id", "name"]));
    }
    // Each DDL is a transaction of its own: its LSN is mapped like a commit.
    assert!(m.lsn_time_mapping().iter().any(|r| r.start_lsn == lsn));
    // A table without DDL has no rows; an instance enabled after the DDL has none either.
    m.disable_cdc("dbo_customers_v2").unwrap();
    m.enable_cdc(&t, "dbo_customers_v3", true).unwrap();
    m.capture_until(m.now());
    let both = s.capture_instances(&t).await.unwrap();
    assert_eq!(both[0].ddl.len(), 2);
    assert!(both[1].ddl.is_empty());
    assert_eq!(both[1].column_names(), cols(&["id", "name", "email"]));
}

#[tokio::test]
async fn disabling_the_old_instance_after_a_switch_leaves_the_new_one_untouched() {
    let m = model();
    let t = customers();
    m.insert(&t, row(1, "a")).unwrap();
    m.add_column(&t, email()).unwrap();
    m.enable_cdc(&t, "dbo_customers_v2", true).unwrap();
    m.update(&t, &key(1), row3(1, "b", "e")).unwrap();
    m.capture();
    let before = all_values(&m, "dbo_customers_v2");
    assert_eq!(before, vec![(4, row3(1, "b", "e"))]);
    // ACDC: "When the transition is effected, the obsolete capture instance can be removed."
    m.disable_cdc("dbo_customers").unwrap();
    assert_eq!(all_values(&m, "dbo_customers_v2"), before);
    let mut s = m.session().await.unwrap();
    let left = s.capture_instances(&t).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].name, "dbo_customers_v2");
    assert!(matches!(
        m.all_rows("dbo_customers", Lsn::ZERO, m.max_lsn(), AllRowFilter::All),
        Err(CdcError::NoCaptureInstance { .. })
    ));
}

#[test]
fn add_column_refusals_table() {
    let m = model();
    let t = customers();
    let missing = TableRef::parse("dbo.nope").unwrap();
    let cases: Vec<Refusal> = vec![
        (
            "existing column",
            m.add_column(&t, ColumnDef::untyped("name").nullable()),
            |e| matches!(e, ModelError::ColumnExists { .. }),
        ),
        (
            "NOT NULL without default",
            m.add_column(&t, ColumnDef::untyped("x")),
            |e| matches!(e, ModelError::Invalid(_)),
        ),
        ("missing table", m.add_column(&missing, email()), |e| {
            matches!(e, ModelError::NoTable(_))
        }),
        (
            "ddl on a missing table",
            m.ddl(&missing, "ALTER TABLE x"),
            |e| matches!(e, ModelError::NoTable(_)),
        ),
    ];
    for (case, result, expected) in cases {
        let e = result.expect_err(case);
        assert!(expected(&e), "{case}: {e:?}");
    }
    assert_eq!(m.table_rows(&t), Vec::<Vec<Value>>::new());
}

#[tokio::test]
async fn generated_rows_read_null_in_an_added_column() {
    let m = CdcModel::new(super::tests::t0());
    let t = customers();
    m.create_generated_table(t.clone(), cols(&["id", "name"]), cols(&["id"]), 3, |i| {
        row(i as i64, "g")
    })
    .unwrap();
    m.enable_cdc(&t, "dbo_customers", true).unwrap();
    m.add_column(&t, email()).unwrap();
    m.generated_inserts(&t, 2, 1).unwrap();
    m.enable_cdc(&t, "dbo_customers_v2", true).unwrap();
    m.update(&t, &key(4), row3(4, "g", "e")).unwrap();
    m.capture();
    let rows = m.table_rows(&t);
    assert_eq!(rows.len(), 5);
    assert_eq!(rows[0], with_null(row(0, "g")));
    assert_eq!(rows[4], row3(4, "g", "e"));
    // The old instance sees the generated inserts with its own two columns.
    let old = all_values(&m, "dbo_customers");
    assert_eq!(old[..2], [(2, row(3, "g")), (2, row(4, "g"))]);
    let mut s = session(&m).await;
    let ci = s.capture_instance(&t, None).await.unwrap();
    let mut sink = cdc_copy::cdc::VecSink::default();
    s.scan(&ci, None, None, 10, &mut sink).await.unwrap();
    assert_eq!(sink.rows[3], with_null(row(3, "g")));
}

//! The model's rules for declared key types, nullable unique indexes and captured column
//! lists (docs/model.md, "Keys and columns"). Sources:
//! - COLL: "Collation and Unicode support": SQL collations compare non-Unicode and Unicode
//!   data with different rules
//!   <https://learn.microsoft.com/sql/relational-databases/collations/collation-and-unicode-support>
//! - DT: `datetime` is "rounded to increments of .000, .003, or .007 seconds"
//!   <https://learn.microsoft.com/sql/t-sql/data-types/datetime-transact-sql>
//! - ENABLE: `sys.sp_cdc_enable_table`: `@index_name` "must be a valid unique index";
//!   `@captured_column_list` <https://learn.microsoft.com/sql/relational-databases/system-stored-procedures/sys-sp-cdc-enable-table-transact-sql>
//! - NET: the generated net-changes function joins back on `key = key` (NULL never matches)
//! - SQL2008: computed columns appear in the change table with a value of NULL
//!   <https://learn.microsoft.com/previous-versions/sql/sql-server-2008/cc645593(v=sql.100)>

use cdc_copy::cdc::{CdcSession, CdcSource, Collation, ColumnDesc, LsnRange, VecSink};
use chrono::{NaiveDate, TimeZone, Utc};

use super::*;

fn t() -> TableRef {
    TableRef::parse("dbo.codes").unwrap()
}

fn model() -> CdcModel {
    CdcModel::new(Utc.with_ymd_and_hms(2024, 3, 1, 12, 0, 0).unwrap())
}

fn sql_ci_as() -> Collation {
    Collation::parse(collation::SQL_LATIN1_CI_AS).unwrap()
}

fn text(s: &str) -> Value {
    Value::Text(s.to_string())
}

async fn session(m: &CdcModel) -> Box<dyn CdcSession> {
    m.session().await.unwrap()
}

/// Scans the whole table in pages of `page` rows, resuming from each page's last key as the
/// full load does; the first column of every row.
async fn scan_all(m: &CdcModel, page: u64) -> Vec<Value> {
    let mut s = session(m).await;
    let ci = s.capture_instance(&t(), None).await.unwrap();
    let mut after: Option<Vec<Value>> = None;
    let mut out = Vec::new();
    loop {
        let mut sink = VecSink::default();
        let (n, last) = s
            .scan(&ci, after.as_deref(), None, page, &mut sink)
            .await
            .unwrap();
        out.extend(sink.rows.into_iter().map(|r| r[0].clone()));
        if n < page {
            return out;
        }
        after = last;
    }
}

/// COLL: a varchar key under SQL_Latin1_General_CP1_CI_AS sorts hyphen and apostrophe as
/// characters, an nvarchar key under the same collation ignores them; both ignore case.
#[tokio::test]
async fn keys_order_by_declared_type_and_collation() {
    let words = ["coat", "co-op", "oats", "o'neil", "cob"];
    let cases = [
        (
            KeyType::VarChar {
                length: 20,
                collation: sql_ci_as(),
            },
            ["co-op", "coat", "cob", "o'neil", "oats"],
        ),
        (
            KeyType::NVarChar {
                length: 20,
                collation: sql_ci_as(),
            },
            ["coat", "cob", "co-op", "oats", "o'neil"],
        ),
    ];
    for (ty, expected) in cases {
        let m = model();
        m.create_typed_table(
            t(),
            vec![ColumnDef::new("code", ty.clone()), ColumnDef::untyped("n")],
            KeyIndex::primary_key(&["code"]),
        )
        .unwrap();
        m.enable_cdc(&t(), "dbo_codes", true).unwrap();
        for (i, w) in words.iter().enumerate() {
            m.insert(&t(), vec![text(w), Value::Int(i as i64)]).unwrap();
        }
        let expected: Vec<Value> = expected.iter().map(|w| text(w)).collect();
        assert_eq!(scan_all(&m, 2).await, expected, "{ty}");
        assert_eq!(scan_all(&m, 100).await, expected, "{ty}");
        // Case-insensitive: 'COAT' is the key 'coat' already holds.
        assert!(matches!(
            m.insert(&t(), vec![text("COAT"), Value::Int(9)]),
            Err(ModelError::DuplicateKey { .. })
        ));
        let ci = session(&m)
            .await
            .capture_instance(&t(), None)
            .await
            .unwrap();
        assert_eq!(
            ci.key_columns,
            vec![cdc_copy::cdc::KeyColumn::new("code", ty)]
        );
    }
}

/// DT: a datetime column keeps 1/300 s ticks, so a key read back is the stored tick.
#[tokio::test]
async fn datetime_keys_hold_ticks() {
    let m = model();
    m.create_typed_table(
        t(),
        vec![
            ColumnDef::new("at", KeyType::DateTime),
            ColumnDef::untyped("n"),
        ],
        KeyIndex::primary_key(&["at"]),
    )
    .unwrap();
    m.enable_cdc(&t(), "dbo_codes", true).unwrap();
    let at = |ms: u32| {
        NaiveDate::from_ymd_opt(2024, 1, 1)
            .unwrap()
            .and_hms_milli_opt(0, 0, 0, ms)
            .unwrap()
    };
    m.insert(&t(), vec![Value::DateTime(at(4)), Value::Int(1)])
        .unwrap();
    m.insert(&t(), vec![Value::DateTime(at(8)), Value::Int(2)])
        .unwrap();
    let rows = scan_all(&m, 1).await;
    assert_eq!(
        rows,
        vec![
            Value::DateTime(to_sql_datetime(at(3))),
            Value::DateTime(to_sql_datetime(at(7)))
        ]
    );
}

/// ENABLE + NET: a unique index may have nullable columns; changes to a row whose key is NULL
/// never come out of net changes; the copier's capture_instance refuses such an instance.
#[tokio::test]
async fn null_keys_never_appear_in_net_changes_and_the_instance_is_refused() {
    let m = model();
    let int = || ColumnDef::new("email", KeyType::Int);
    assert!(matches!(
        m.create_typed_table(
            t(),
            vec![int().nullable(), ColumnDef::untyped("n")],
            KeyIndex::primary_key(&["email"]),
        ),
        Err(ModelError::NullablePrimaryKey { .. })
    ));
    m.create_typed_table(
        t(),
        vec![int().nullable(), ColumnDef::untyped("n")],
        KeyIndex::unique("ux_codes_email", &["email"]),
    )
    .unwrap();
    let start = m.enable_cdc(&t(), "dbo_codes", true).unwrap();
    m.insert(&t(), vec![Value::Null, Value::Int(1)]).unwrap();
    m.insert(&t(), vec![Value::Int(7), Value::Int(2)]).unwrap();
    assert!(
        matches!(
            m.insert(&t(), vec![Value::Null, Value::Int(3)]),
            Err(ModelError::DuplicateKey { .. })
        ),
        "a unique index holds one NULL"
    );
    m.update(&t(), &[Value::Null], vec![Value::Null, Value::Int(4)])
        .unwrap();
    m.capture();
    let rows = m
        .net_rows("dbo_codes", start, m.max_lsn(), RowFilter::All)
        .unwrap();
    assert_eq!(rows.len(), 1, "only the non-NULL key: {rows:?}");
    assert_eq!(rows[0][3], Value::Int(7));
    let err = session(&m)
        .await
        .capture_instance(&t(), None)
        .await
        .unwrap_err();
    match err {
        CdcError::NullableKey { index, columns, .. } => {
            assert_eq!(index, "ux_codes_email");
            assert_eq!(columns, vec!["email".to_string()]);
        }
        other => panic!("expected NullableKey, got {other:?}"),
    }
}

/// ENABLE + SQL2008: only the captured columns are in change rows, computed ones as NULL; the
/// copier's column list leaves computed columns out, and the scan and the net changes give
/// those columns in the same order.
#[tokio::test]
async fn captured_column_lists_shape_change_rows() {
    let m = model();
    m.create_typed_table(
        t(),
        vec![
            ColumnDef::new("id", KeyType::Int),
            ColumnDef::untyped("name"),
            ColumnDef::untyped("secret"),
            ColumnDef::untyped("total").computed(),
        ],
        KeyIndex::primary_key(&["id"]),
    )
    .unwrap();
    assert!(matches!(
        m.enable_cdc_columns(&t(), "dbo_codes", true, &["name"]),
        Err(ModelError::KeyNotCaptured { .. })
    ));
    let start = m
        .enable_cdc_columns(&t(), "dbo_codes", true, &["id", "name", "total"])
        .unwrap();
    m.insert(
        &t(),
        vec![Value::Int(1), text("a"), text("s"), Value::Int(10)],
    )
    .unwrap();
    m.capture();
    let all = m
        .net_rows("dbo_codes", start, m.max_lsn(), RowFilter::All)
        .unwrap();
    assert_eq!(all[0][3..], [Value::Int(1), text("a"), Value::Null]);

    let mut s = session(&m).await;
    let ci = s.capture_instance(&t(), None).await.unwrap();
    assert_eq!(ci.column_names(), vec!["id", "name"]);
    let mut load = VecSink::default();
    s.scan(&ci, None, None, 10, &mut load).await.unwrap();
    let mut changes = VecSink::default();
    s.net_changes(
        &ci,
        LsnRange::new(start, m.max_lsn()).unwrap(),
        RowFilter::All,
        &mut changes,
    )
    .await
    .unwrap();
    assert_eq!(load.columns, ci.column_names());
    assert_eq!(changes.columns[3..], ci.column_names()[..]);
    assert_eq!(load.rows, vec![vec![Value::Int(1), text("a")]]);
    assert_eq!(changes.rows[0][3..], load.rows[0][..]);
    // A column the instance does not capture is an invalid column to the net-changes function.
    let mut columns = ci.columns.clone();
    columns.push(ColumnDesc {
        name: "secret".into(),
        ..columns[0].clone()
    });
    let secret = CaptureInstance { columns, ..ci };
    let err = s
        .net_changes(
            &secret,
            LsnRange::new(start, m.max_lsn()).unwrap(),
            RowFilter::All,
            &mut VecSink::default(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, CdcError::Sql { number: 207, .. }), "{err:?}");
}

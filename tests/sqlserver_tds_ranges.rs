//! The statements of a split full load (issue 12) through the product's real session and the
//! TDS fake: what text and parameter types go out, how replies are read, and the errors a
//! missing range table gives.

use chrono::{TimeZone, Utc};

use cdc_copy::cdc::{
    CaptureInstance, CdcError, CdcSession, CdcSource, ColumnDesc, ColumnType, KeyColumn, KeyType,
    Lsn, RangeProgress, TableRef, Value,
};
use cdc_copy::sqlserver::{sql, SqlServerSource};
use cdc_copy_testkit::tds::{col, Cell, FakeServer, ParamValue, Reply, SqlType};

fn watermark_table() -> TableRef {
    TableRef::parse("cdc_copy.watermark").unwrap()
}

async fn session(server: &FakeServer) -> Box<dyn CdcSession> {
    SqlServerSource::from_config(server.config(), watermark_table())
        .session()
        .await
        .expect("session")
}

fn orders_ci() -> CaptureInstance {
    CaptureInstance {
        table: TableRef::parse("dbo.orders").unwrap(),
        name: "dbo_orders".into(),
        supports_net_changes: true,
        min_lsn: Lsn::from_u128(1),
        start_lsn: Some(Lsn::from_u128(1)),
        key_columns: vec![
            KeyColumn::new("region", KeyType::Int),
            KeyColumn::new("id", KeyType::BigInt),
        ],
        columns: vec![
            ColumnDesc::new("region", ColumnType::Int, false),
            ColumnDesc::new("id", ColumnType::BigInt, false),
            ColumnDesc::new(
                "amount",
                ColumnType::Decimal {
                    precision: 18,
                    scale: 2,
                },
                true,
            ),
        ],
        ddl: Vec::new(),
    }
}

fn range(i: u32) -> RangeProgress {
    RangeProgress {
        table: TableRef::parse("dbo.orders").unwrap(),
        load_id: "20261201120000000-r2".into(),
        range: i,
        after: (i > 0).then(|| vec![Value::Int(3), Value::Int(77)]),
        upto: (i == 0).then(|| vec![Value::Int(3), Value::Int(77)]),
        parts_done: 2,
        last_key: Some(vec![Value::Int(1), Value::Int(5)]),
        rows_done: 200,
        bytes_done: 9000,
        done: i == 0,
        version: 4,
        updated_at: Utc.with_ymd_and_hms(2026, 12, 1, 12, 0, 0).unwrap(),
    }
}

fn range_columns() -> Vec<cdc_copy_testkit::tds::Column> {
    use SqlType::*;
    let types = [
        NVarChar(128),
        NVarChar(128),
        VarChar(32),
        Int,
        NVarCharMax,
        NVarCharMax,
        Int,
        NVarCharMax,
        BigInt,
        BigInt,
        Bit,
        BigInt,
        DateTime2,
    ];
    sql::RANGE_COLUMNS
        .iter()
        .zip(types)
        .map(|(name, ty)| col(name, ty))
        .collect()
}

fn key_cell(key: &Option<Vec<Value>>) -> Cell {
    key.as_ref().map_or(Cell::Null, |k| {
        Cell::Text(serde_json::to_string(k).unwrap())
    })
}

fn range_cells(r: &RangeProgress) -> Vec<Cell> {
    vec![
        Cell::Text(r.table.schema.clone()),
        Cell::Text(r.table.table.clone()),
        Cell::Text(r.load_id.clone()),
        Cell::Int(r.range.into()),
        key_cell(&r.after),
        key_cell(&r.upto),
        Cell::Int(r.parts_done.into()),
        key_cell(&r.last_key),
        Cell::Int(r.rows_done as i64),
        Cell::Int(r.bytes_done as i64),
        Cell::Bit(r.done),
        Cell::Int(r.version),
        Cell::DateTime(r.updated_at.naive_utc()),
    ]
}

/// The row count and the key sample: `sys.partitions` by the quoted name, the sample as a
/// batch (its percentage is in the text), keys decoded in the order the server sent them.
#[tokio::test]
async fn planning_reads_the_row_count_and_a_server_ordered_sample() {
    let server = FakeServer::start().await;
    let ci = orders_ci();
    server.on(
        sql::TABLE_ROWS,
        Reply::rows(
            vec![col("row_count", SqlType::BigInt)],
            vec![vec![Cell::Int(20_000_000)]],
        ),
    );
    let sample = sql::sample_keys(&ci.table, &ci.key_columns, 0.004).unwrap();
    server.on(
        &sample,
        Reply::rows(
            vec![col("region", SqlType::Int), col("id", SqlType::BigInt)],
            vec![
                vec![Cell::Int(1), Cell::Int(9)],
                vec![Cell::Int(1), Cell::Int(10)],
                vec![Cell::Int(4), Cell::Int(2)],
            ],
        ),
    );
    let mut session = session(&server).await;
    assert_eq!(session.table_rows(&ci.table).await.unwrap(), 20_000_000);
    let keys = session.sample_keys(&ci, 0.004).await.unwrap();
    assert_eq!(
        keys,
        vec![
            vec![Value::Int(1), Value::Int(9)],
            vec![Value::Int(1), Value::Int(10)],
            vec![Value::Int(4), Value::Int(2)],
        ]
    );
    let sent = server.requests();
    assert_eq!(sent[0].params.len(), 1);
    assert_eq!(
        sent[0].params[0].value,
        ParamValue::Text("[dbo].[orders]".into())
    );
    assert_eq!(sent[1].sql, sample);
    assert!(sent[1].params.is_empty(), "a batch");
    // Not visible to the login (OBJECT_ID is NULL): zero rows, so one range.
    server.on(
        sql::TABLE_ROWS,
        Reply::rows(
            vec![col("row_count", SqlType::BigInt)],
            vec![vec![Cell::Null]],
        ),
    );
    assert_eq!(session.table_rows(&ci.table).await.unwrap(), 0);
}

/// The plan goes in one statement of 13 typed parameters per range; the checkpoint update
/// adds the expected version as `@P14`; rows read back are the rows written.
#[tokio::test]
async fn range_rows_round_trip_with_typed_parameters() {
    let server = FakeServer::start().await;
    let wm = watermark_table();
    let insert = sql::insert_ranges(&wm, 2).unwrap();
    let update = sql::ranges_statement(sql::UPDATE_RANGE, &wm).unwrap();
    let read = sql::ranges_statement(sql::READ_RANGES, &wm).unwrap();
    let rows = [range(0), range(1)];
    let mut session = session(&server).await;
    for (reply, expected) in [
        (Reply::RowCount(2), true),
        (Reply::RowCount(0), false),
        (
            Reply::error(
                2627,
                "Violation of PRIMARY KEY constraint 'PK_watermark_range'.",
            ),
            false,
        ),
    ] {
        server.on(&insert, reply);
        assert_eq!(session.insert_ranges(&rows).await.unwrap(), expected);
    }
    let sent = &server.requests()[0];
    assert_eq!(sent.sql, insert);
    assert_eq!(sent.params.len(), 26);
    let types: Vec<&str> = sent.params[..13]
        .iter()
        .map(|p| p.tds_type.as_str())
        .collect();
    assert_eq!(
        types,
        [
            "nvarchar",
            "nvarchar",
            "nvarchar",
            "intn(4)",
            "null",
            "nvarchar",
            "intn(4)",
            "nvarchar",
            "intn(8)",
            "intn(8)",
            "bitn",
            "intn(8)",
            "datetime2"
        ]
    );
    assert_eq!(
        sent.params[13 + 3].value,
        ParamValue::Int(1),
        "range 1's number"
    );
    assert_eq!(
        sent.params[5].value,
        ParamValue::Text(r#"[{"t":"Int","v":3},{"t":"Int","v":77}]"#.into())
    );

    server.clear_requests();
    server.on(&update, Reply::RowCount(1));
    assert!(session.update_range(3, &rows[1]).await.unwrap());
    let sent = &server.requests()[0];
    assert_eq!(sent.params.len(), 14);
    assert_eq!(sent.params[11].value, ParamValue::Int(4), "new version");
    assert_eq!(
        sent.params[13].value,
        ParamValue::Int(3),
        "expected version"
    );

    server.on(
        &read,
        Reply::rows(range_columns(), rows.iter().map(range_cells).collect()),
    );
    let back = session
        .read_ranges(&rows[0].table, &rows[0].load_id)
        .await
        .unwrap();
    assert_eq!(back, rows);
}

/// A range table that was never created (setup.sql not rerun after the upgrade) is named,
/// with the remedy, whichever statement finds it missing.
#[tokio::test]
async fn a_missing_range_table_is_named_with_the_remedy() {
    let server = FakeServer::start().await;
    let wm = watermark_table();
    for statement in [
        sql::ranges_statement(sql::READ_RANGES, &wm).unwrap(),
        sql::insert_ranges(&wm, 1).unwrap(),
    ] {
        server.on(
            &statement,
            Reply::error(208, "Invalid object name 'cdc_copy.watermark_range'."),
        );
    }
    let mut session = session(&server).await;
    let read = session
        .read_ranges(&orders_ci().table, "x-r2")
        .await
        .unwrap_err();
    let insert = session.insert_ranges(&[range(0)]).await.unwrap_err();
    for err in [read, insert] {
        assert!(
            matches!(err, CdcError::NoWatermarkTable(ref name) if name == "cdc_copy.watermark_range"),
            "{err:?}"
        );
        assert!(err.to_string().contains("sql/setup.sql"), "{err}");
    }
}

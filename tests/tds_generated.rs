//! The generated mode of the TDS fake (what `benches/tds.rs` reads) through the product's
//! real session: the packet size the client negotiates, keyset paging over generated rows,
//! and that every cell of the narrow and wide shapes — NBCROW NULLs and PLP text included —
//! decodes to the values the templates were built from. The decode path's optimisations are
//! held to these.

use cdc_copy::cdc::{
    CaptureInstance, CdcSession, CdcSource, KeyColumn, KeyType, Lsn, LsnRange, RowFilter, TableRef,
    Value, VecSink,
};
use cdc_copy::sqlserver::connection::PACKET_SIZE;
use cdc_copy::sqlserver::{sql, SqlServerSource};
use cdc_copy_testkit::rows::customer;
use cdc_copy_testkit::tds::{self, FakeServer, Reply};

fn capture_instance(wide: bool) -> CaptureInstance {
    CaptureInstance {
        table: TableRef::parse("dbo.customers").unwrap(),
        name: "dbo_customers".into(),
        supports_net_changes: true,
        min_lsn: Lsn::from_u128(1),
        start_lsn: Some(Lsn::from_u128(1)),
        key_columns: vec![KeyColumn::new("customer_id", KeyType::Int)],
        columns: tds::customers(wide, false, 0)
            .columns()
            .iter()
            .map(tds::Column::desc)
            .collect(),
        ddl: Vec::new(),
    }
}

async fn session(server: &FakeServer) -> Box<dyn CdcSession> {
    SqlServerSource::from_config(
        server.config(),
        TableRef::parse("cdc_copy.watermark").unwrap(),
    )
    .session()
    .await
    .expect("session")
}

/// Customer `i` as the generated stream sends it: template `i % 56` with key `i + 1`.
fn expected_narrow(i: u64) -> Vec<Value> {
    let mut row = customer(i % 56);
    row[0] = Value::Int(i as i64 + 1);
    row
}

/// The product asks for the largest packet an encrypted connection allows; the fake agrees
/// (answers an ENVCHANGE with the size) and sends a result of many packets in it. On the old
/// code (no `Config::packet_size`) tiberius asks for 4096 and the first assertion fails.
#[tokio::test]
async fn the_client_asks_for_16383_byte_packets() {
    let server = FakeServer::start().await;
    let ci = capture_instance(false);
    let statement = sql::net_changes(&ci.name, &ci.key_columns, &ci.columns).unwrap();
    server.on(
        &statement,
        Reply::Generated(tds::customers(false, true, 3000)),
    );
    let mut session = session(&server).await;
    assert_eq!(server.logins()[0].packet_size, 16_383);
    assert_eq!(PACKET_SIZE, 16_383);
    let mut sink = VecSink::default();
    let range = LsnRange::new(Lsn::from_u128(1), Lsn::from_u128(2)).unwrap();
    let sent = session
        .net_changes(&ci, range, RowFilter::All, &mut sink)
        .await
        .unwrap();
    assert_eq!(sent, 3000);
    assert_eq!(
        sink.columns[..4],
        [
            "__$start_lsn",
            "__$operation",
            "__$update_mask",
            "customer_id"
        ]
    );
    for (i, row) in sink.rows.iter().enumerate() {
        assert_eq!(row[1], Value::Int(2));
        assert_eq!(row[3..], expected_narrow(i as u64)[..], "row {i}");
    }
}

/// Keyset pages over generated rows: each page starts after the last key of the one before
/// (the fake evaluates `@P2`), the last key is the page's last row, and every value — the
/// NULL city of every 7th row (NBCROW) included — is the template's.
#[tokio::test]
async fn generated_rows_page_by_key_and_decode_exactly() {
    let server = FakeServer::start().await;
    let ci = capture_instance(false);
    let first = sql::scan(&ci.table, &ci.key_columns, &ci.columns, false, false).unwrap();
    let after = sql::scan(&ci.table, &ci.key_columns, &ci.columns, true, false).unwrap();
    server.on_generated_scan(&first, &after, tds::customers(false, false, 2500));
    let mut session = session(&server).await;
    let mut sink = VecSink::default();
    let mut key: Option<Vec<Value>> = None;
    let mut pages = Vec::new();
    loop {
        let (rows, last) = session
            .scan(&ci, key.as_deref(), None, 1000, &mut sink)
            .await
            .unwrap();
        pages.push((rows, last.clone()));
        if rows < 1000 {
            break;
        }
        key = last;
    }
    assert_eq!(
        pages,
        vec![
            (1000, Some(vec![Value::Int(1000)])),
            (1000, Some(vec![Value::Int(2000)])),
            (500, Some(vec![Value::Int(2500)])),
        ]
    );
    assert_eq!(sink.rows.len(), 2500);
    for (i, row) in sink.rows.iter().enumerate() {
        assert_eq!(*row, expected_narrow(i as u64), "row {i}");
    }
    assert!(sink.rows.iter().any(|r| r[4] == Value::Null));
}

/// Range scans (issue 12): each range's pages stop at its inclusive end, the next range
/// starts after it, and the ranges together return every generated row once, in order.
#[tokio::test]
async fn range_scans_stop_at_the_range_end_and_cover_every_row_once() {
    let server = FakeServer::start().await;
    let ci = capture_instance(false);
    let first = sql::scan(&ci.table, &ci.key_columns, &ci.columns, false, true).unwrap();
    let after = sql::scan(&ci.table, &ci.key_columns, &ci.columns, true, true).unwrap();
    server.on_generated_range_scan(&first, &after, tds::customers(false, false, 2500));
    let mut session = session(&server).await;
    let mut sink = VecSink::default();
    let mut pages = Vec::new();
    for upto in [700i64, 1700, 2500] {
        let upto = [Value::Int(upto)];
        let mut key = sink.rows.last().map(|row| vec![row[0].clone()]);
        loop {
            let (rows, last) = session
                .scan(&ci, key.as_deref(), Some(&upto), 500, &mut sink)
                .await
                .unwrap();
            pages.push(rows);
            if rows < 500 {
                break;
            }
            key = last;
        }
    }
    assert_eq!(pages, [500, 200, 500, 500, 0, 500, 300]);
    assert_eq!(sink.rows.len(), 2500);
    for (i, row) in sink.rows.iter().enumerate() {
        assert_eq!(*row, expected_narrow(i as u64), "row {i}");
    }
    let sent: Vec<String> = server.requests().iter().map(|r| r.sql.clone()).collect();
    assert!(sent.iter().all(|s| s.contains("<= CAST(@P")), "{sent:?}");
}

/// The wide shape: decimal(18,2), datetime2(7), uniqueidentifier and a 1–4 KB nvarchar(max)
/// sent as PLP chunks all come back as the templates hold them.
#[tokio::test]
async fn wide_generated_rows_decode_every_type() {
    let server = FakeServer::start().await;
    let ci = capture_instance(true);
    let first = sql::scan(&ci.table, &ci.key_columns, &ci.columns, false, false).unwrap();
    let after = sql::scan(&ci.table, &ci.key_columns, &ci.columns, true, false).unwrap();
    server.on_generated_scan(&first, &after, tds::customers(true, false, 120));
    let mut session = session(&server).await;
    let mut sink = VecSink::default();
    let (rows, last) = session
        .scan(&ci, None, None, 1000, &mut sink)
        .await
        .unwrap();
    assert_eq!((rows, last), (120, Some(vec![Value::Int(120)])));
    for (i, row) in sink.rows.iter().enumerate() {
        let t = (i % 56) as u64;
        assert_eq!(row[..5], expected_narrow(i as u64)[..], "row {i}");
        assert_eq!(
            row[5],
            Value::Decimal {
                unscaled: t as i128 * 1_234_567 - 99,
                scale: 2
            }
        );
        let at = chrono::NaiveDate::from_ymd_opt(2026, 1, 5)
            .unwrap()
            .and_hms_nano_opt(9, t as u32, 7, 123_456_700)
            .unwrap();
        assert_eq!(row[6], Value::DateTime(at));
        assert_eq!(
            row[7],
            Value::Guid(uuid::Uuid::from_u128(
                0x6f96_19ff_8b86_d011_b42d_00c0_4fc9_6400 + t as u128
            ))
        );
        assert_eq!(
            row[8],
            Value::Text("Notes ✓ ".repeat(64 + (t as usize % 4) * 64))
        );
    }
}

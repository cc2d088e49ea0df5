//! Live case for the parallel full load (issue 12): a table with a composite key whose leading
//! column is skewed and case-insensitive, split into 4 ranges. Through the product: the row
//! count from `sys.partitions`, a `TABLESAMPLE` of the key in the server's order, the range
//! table created by `sql/setup.sql` (and a second run of it), then `FullLoad` with
//! `CDC_FULL_LOAD_RANGES=4` — every row lands in exactly one range part, and `handler status`
//! reads the finished load.

use super::*;

use cdc_copy::cdc::CdcSource;

/// 4,000 rows: 80 % under region 'north' (in two spellings the CI collation makes equal to
/// the key), the rest spread over four other regions.
const CREATE: &str = "
CREATE TABLE dbo.orders
(
    region varchar(10) COLLATE SQL_Latin1_General_CP1_CI_AS NOT NULL,
    id     int NOT NULL,
    amount int NULL,
    CONSTRAINT PK_orders PRIMARY KEY CLUSTERED (region, id)
);
WITH n AS (SELECT TOP (4000) ROW_NUMBER() OVER (ORDER BY (SELECT NULL)) AS i
           FROM sys.all_objects AS a CROSS JOIN sys.all_objects AS b)
INSERT INTO dbo.orders (region, id, amount)
SELECT CASE WHEN i % 10 < 8 THEN CASE WHEN i % 2 = 0 THEN 'north' ELSE 'NORTH' END
            ELSE CHOOSE(i % 4 + 1, 'east', 'South', 'west-1', 'west1') END,
       i, i * 7
FROM n;
EXEC sys.sp_cdc_enable_db;
EXEC sys.sp_cdc_enable_table @source_schema = N'dbo', @source_name = N'orders',
     @role_name = NULL, @supports_net_changes = 1;";

fn split_settings(sql: &str, storage: &str, container: &str) -> Settings {
    let vars: HashMap<String, String> = [
        ("CDC_SQL_CONNECTION_STRING", sql),
        ("CDC_STORAGE_CONNECTION_STRING", storage),
        ("CDC_TABLES", "dbo.orders"),
        ("CDC_CONTAINER", container),
        ("CDC_CAPTURE_WAIT_SECONDS", "60"),
        ("CDC_CAPTURE_POLL_SECONDS", "1"),
        ("CDC_FULL_LOAD_PART_ROWS", "300"),
        ("CDC_FULL_LOAD_RANGES", "4"),
        ("CDC_FULL_LOAD_RANGE_MIN_ROWS", "500"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    Settings::from_map(&vars).unwrap_or_else(|e| panic!("settings: {e}"))
}

#[tokio::test]
async fn live_a_composite_skewed_key_is_loaded_in_four_ranges_exactly_once() {
    let Some(conn) = live_connection_string() else {
        println!("skipped: {ENV} not set");
        return;
    };
    let db = TestDatabase::create(&conn).await;
    let mut sql = db.connect().await;
    batch(&mut sql, CREATE).await;
    run_setup_sql(&mut sql).await;
    run_setup_sql(&mut sql).await; // the range table step is idempotent too
    wait_for_first_capture(&mut sql, &db.name).await;
    let (_azurite, storage) = live_storage();
    let container = unique_container("live-ranges");
    let settings = split_settings(&db.connection_string, &storage, &container);

    // Session level: the planning reads.
    let source =
        SqlServerSource::new(&settings.sql, settings.watermark_table.clone()).expect("source");
    let mut session = source.session().await.expect("session");
    let table = TableRef::parse("dbo.orders").unwrap();
    let ci = session
        .capture_instance(&table, None)
        .await
        .expect("instance");
    assert_eq!(session.table_rows(&table).await.unwrap(), 4000);
    let sample = session.sample_keys(&ci, 100.0).await.unwrap();
    assert_eq!(sample.len(), 4000, "100 PERCENT samples every page");
    // The server's order: 'east' < 'north' = 'NORTH' (same key prefix) < 'South' < 'west-1'.
    let regions: Vec<String> = sample
        .iter()
        .map(|k| match &k[0] {
            Value::Text(t) => t.to_lowercase(),
            other => panic!("region is {other:?}"),
        })
        .collect();
    let mut sorted = regions.clone();
    sorted.dedup();
    assert_eq!(sorted[..3], ["east", "north", "south"], "{sorted:?}");

    // Jobs level: the split load.
    let (runner, blobs) = production_runner(settings);
    let report = runner
        .full_load(FullLoadRequest {
            tables: vec![],
            reset: false,
        })
        .await;
    assert_eq!(report.status, Status::Done, "{report:#?}");
    let parts = blobs.list("dbo/orders/full/").await.expect("list");
    assert!(
        !parts.is_empty()
            && parts
                .iter()
                .all(|p| p.contains("-r") && p.contains("/range-")),
        "{parts:?}"
    );
    let mut seen = BTreeSet::new();
    for part in &parts {
        let csv = parse_csv(&read_blob(&blobs, part).await);
        assert_eq!(csv.header, ["region", "id", "amount"], "{part}");
        for row in csv.rows {
            let id: i64 = row[1].as_deref().unwrap().parse().unwrap();
            assert!(seen.insert(id), "id {id} in two parts");
        }
    }
    assert_eq!(seen.len(), 4000, "every row once");
    let status = runner.status().await.expect("status");
    assert_eq!(status[0].state, "ready", "{status:?}");
    assert!(status[0].error.is_none(), "{status:?}");
}

//! Live cases of issue 11's "lakecsv" slice on a real SQL Server 2022 (compose.yaml): the CSV
//! shows each type as the server itself shows it (`CONVERT(…, 121)`), and the schema document
//! carries the catalog's types, then gets its next version when a second capture instance
//! adds a column.

use super::switch_jobs::live;
use super::*;

const CREATE_TYPED: &str = "
CREATE TABLE dbo.typed
(
    id    int              NOT NULL PRIMARY KEY,
    f     float            NULL,
    r     real             NULL,
    dt    datetime         NULL,
    sdt   smalldatetime    NULL,
    t0    time(0)          NULL,
    t7    time(7)          NULL,
    d2_3  datetime2(3)     NULL,
    dto_0 datetimeoffset(0) NULL,
    m     money            NULL,
    d38   decimal(38,10)   NULL,
    name  nvarchar(max)    COLLATE Latin1_General_100_CI_AS NULL
);
INSERT INTO dbo.typed VALUES
 (1, 3, 3, '2024-05-06T07:08:09.003', '2024-05-06T07:08:29.998', '23:59:59', '23:59:59.9999999',
  '2024-05-06T07:08:09.123', '2024-01-02T03:04:05+05:30', -123456789.1234,
  1234567890123456789012345678.9012345678, N''),
 (2, 1e300, 0.1, '9999-12-31T23:59:59.997', '2079-06-06T23:59:00', '00:00:00', '00:00:00.0000001',
  '0001-01-01T00:00:00', '9999-12-31T23:59:59-14:00', 0.0001, 0, NULL),
 (3, 0.1, 16777216, '2024-05-06T07:08:09.002', '1900-01-01T00:00:00', NULL, NULL, NULL, NULL, 0, NULL,
  N'東京');
EXEC sys.sp_cdc_enable_table @source_schema = N'dbo', @source_name = N'typed',
     @role_name = NULL, @supports_net_changes = 1;";

/// The server's own text of each time column (style 121, `T` for the space; the offset
/// without the space before it), the floats' binary values, by id.
const SERVER_TEXT: &str = "
SELECT id,
       REPLACE(CONVERT(varchar(40), dt, 121), ' ', 'T') AS dt,
       REPLACE(CONVERT(varchar(40), sdt, 121), ' ', 'T') AS sdt,
       CONVERT(varchar(40), t0, 121) AS t0,
       CONVERT(varchar(40), t7, 121) AS t7,
       REPLACE(CONVERT(varchar(40), d2_3, 121), ' ', 'T') AS d2_3,
       STUFF(REPLACE(CONVERT(varchar(40), dto_0, 121), ' ', 'T'), 20, 1, '') AS dto_0,
       CONVERT(varchar(40), m, 2) AS m,
       CONVERT(varchar(60), d38) AS d38,
       f, r
FROM dbo.typed ORDER BY id;";

fn field<'a>(csv: &'a Csv, row: usize, name: &str) -> Option<&'a str> {
    let i = csv
        .header
        .iter()
        .position(|h| h == name)
        .unwrap_or_else(|| panic!("no column {name} in {:?}", csv.header));
    csv.rows[row][i].as_deref()
}

/// "CONVERT … 121: yyyy-mm-dd hh:mi:ss.mmm" for datetime, the declared digits for the others
/// (<https://learn.microsoft.com/sql/t-sql/functions/cast-and-convert-transact-sql>): the
/// full-load part shows each value as the server does, smalldatetime without its `.000`.
#[tokio::test]
async fn live_csv_shows_each_type_as_sql_server_does() {
    let Some(conn) = live_connection_string() else {
        println!("skipped: {ENV} not set");
        return;
    };
    // money stays within ±9·10¹¹: tiberius decodes it through an f64 (src/sqlserver/decode.rs).
    let mut live = live(&conn, CREATE_TYPED, "dbo.typed").await;
    let load = live
        .runner
        .full_load(FullLoadRequest {
            tables: vec![],
            reset: false,
        })
        .await;
    assert_eq!(load.status, Status::Done, "{load:#?}");
    let parts = live.blobs_under("dbo/typed/full/").await;
    let (name, csv) = parts.first().expect("a full-load part");
    let server = rows(&mut live.sql, SERVER_TEXT).await;
    for (i, row) in server.iter().enumerate() {
        for column in ["dt", "t0", "t7", "d2_3", "dto_0", "m", "d38"] {
            let expected: Option<&str> = row.get(column);
            assert_eq!(field(csv, i, column), expected, "{name} row {i} {column}");
        }
        // smalldatetime: 121 shows `.000`; the file has none.
        let sdt: Option<&str> = row.get("sdt");
        assert_eq!(
            field(csv, i, "sdt").map(str::to_string),
            sdt.map(|s| s.trim_end_matches(".000").to_string()),
            "{name} row {i} sdt"
        );
        let f: Option<f64> = row.get("f");
        let r: Option<f32> = row.get("r");
        let text_f = field(csv, i, "f").unwrap();
        let text_r = field(csv, i, "r").unwrap();
        assert!(
            text_f.contains('.') && text_r.contains('.'),
            "{text_f} {text_r}"
        );
        assert_eq!(text_f.parse::<f64>().ok(), f, "row {i} f");
        assert_eq!(text_r.parse::<f32>().ok(), r, "row {i} r");
    }
    assert_eq!(field(csv, 0, "dt"), Some("2024-05-06T07:08:09.003"));
    assert_eq!(
        field(csv, 2, "dt"),
        Some("2024-05-06T07:08:09.003"),
        ".002 is stored as tick 1"
    );
    assert_eq!(field(csv, 0, "sdt"), Some("2024-05-06T07:08:00"));
    assert_eq!(field(csv, 0, "name"), Some(""));
    assert_eq!(field(csv, 1, "name"), None);
}

/// The document from the catalog, before the first data file; the same shape writes nothing;
/// a second instance with a new column is v2, and the blob after the switch names it.
#[tokio::test]
async fn live_the_schema_document_follows_the_catalog_and_the_switch() {
    let Some(conn) = live_connection_string() else {
        println!("skipped: {ENV} not set");
        return;
    };
    let mut live = live(&conn, CREATE_TYPED, "dbo.typed").await;
    let load = live
        .runner
        .full_load(FullLoadRequest {
            tables: vec![],
            reset: false,
        })
        .await;
    assert_eq!(load.status, Status::Done, "{load:#?}");
    let doc = |bytes: Vec<u8>| -> serde_json::Value { serde_json::from_slice(&bytes).unwrap() };
    let v1 = doc(read_blob(&live.blobs, "dbo/typed/_schema/v1.json").await);
    assert_eq!(v1["key_columns"], serde_json::json!(["id"]));
    assert_eq!(v1["capture_instance"], "dbo_typed");
    let column = |d: &serde_json::Value, name: &str| {
        d["columns"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no {name} in {d}"))
    };
    assert_eq!(column(&v1, "d38")["sql_type"], "decimal(38,10)");
    assert_eq!(column(&v1, "dt")["scale"], 3);
    assert_eq!(column(&v1, "dto_0")["sql_type"], "datetimeoffset(0)");
    assert_eq!(column(&v1, "name")["max_length"], -1);
    assert_eq!(column(&v1, "name")["collation"], "Latin1_General_100_CI_AS");
    assert_eq!(column(&v1, "id")["nullable"], false);
    let part = live.blobs.list("dbo/typed/full/").await.unwrap();
    let meta = live
        .blobs
        .properties(&part[0])
        .await
        .unwrap()
        .unwrap()
        .metadata;
    assert_eq!(meta["schema_version"], "1");

    let report = live
        .copy_after(
            "UPDATE dbo.typed SET f = 4 WHERE id = 1;",
            "SELECT COUNT(*) AS n FROM cdc.dbo_typed_CT WHERE id = 1 AND f = 4;",
        )
        .await;
    assert_eq!(report.status, Status::Done, "{report:#?}");
    let docs = live.blobs.list("dbo/typed/_schema/").await.unwrap();
    assert_eq!(
        docs,
        ["dbo/typed/_schema/v1.json"],
        "an unchanged shape writes nothing"
    );

    batch(
        &mut live.sql,
        "ALTER TABLE dbo.typed ADD loyalty varchar(20) NULL;
         EXEC sys.sp_cdc_enable_table @source_schema = N'dbo', @source_name = N'typed',
              @capture_instance = N'dbo_typed_v2', @role_name = NULL, @supports_net_changes = 1;",
    )
    .await;
    wait_for_first_capture(&mut live.sql, &live.db.name).await;
    let report = live
        .copy_after(
            "UPDATE dbo.typed SET loyalty = 'gold' WHERE id = 2;",
            "SELECT COUNT(*) AS n FROM cdc.dbo_typed_v2_CT WHERE id = 2 AND loyalty = 'gold';",
        )
        .await;
    assert_eq!(report.status, Status::Done, "{report:#?}");
    let v2 = doc(read_blob(&live.blobs, "dbo/typed/_schema/v2.json").await);
    assert_eq!(column(&v2, "loyalty")["sql_type"], "varchar(20)");
    assert_eq!(v2["capture_instance"], "dbo_typed_v2");
    let mut windows = live.blobs.list("dbo/typed/incremental/").await.unwrap();
    windows.sort();
    let last = windows.last().unwrap();
    let meta = live.blobs.properties(last).await.unwrap().unwrap().metadata;
    assert_eq!(meta["schema_version"], "2", "{last}");
    assert_eq!(meta["schema_document"], "dbo/typed/_schema/v2.json");
}

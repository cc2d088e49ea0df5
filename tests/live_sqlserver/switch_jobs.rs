//! Live cases of issue 10 through the jobs: a schema change followed by a second capture
//! instance, and a table without a key. On a real SQL Server 2022 (compose.yaml) they state
//! what the model was taught: DDL recorded in `cdc.ddl_history` against the existing
//! instance, the new instance's start LSN, all changes with `__$seqval` and update
//! before-images, and a shared table lock that writers wait for.

use super::*;

pub(super) struct Live {
    pub(super) db: TestDatabase,
    pub(super) sql: Sql,
    pub(super) blobs: BlobTarget,
    pub(super) runner: Runner,
    _azurite: Option<Azurite>,
}

/// A fresh database with the sample table and `sql/setup.sql`, then `prepare`, and a runner
/// copying `tables`.
pub(super) async fn live(conn: &str, prepare: &str, tables: &str) -> Live {
    let db = TestDatabase::create(conn).await;
    let mut sql = db.connect().await;
    batch(&mut sql, CREATE_CUSTOMERS).await;
    run_setup_sql(&mut sql).await;
    if !prepare.is_empty() {
        batch(&mut sql, prepare).await;
    }
    wait_for_first_capture(&mut sql, &db.name).await;
    let (azurite, storage) = live_storage();
    let container = unique_container("live-switch");
    let vars: HashMap<String, String> = [
        ("CDC_SQL_CONNECTION_STRING", db.connection_string.as_str()),
        ("CDC_STORAGE_CONNECTION_STRING", storage.as_str()),
        ("CDC_TABLES", tables),
        ("CDC_CONTAINER", container.as_str()),
        ("CDC_CAPTURE_WAIT_SECONDS", "60"),
        ("CDC_CAPTURE_POLL_SECONDS", "1"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let settings = Settings::from_map(&vars).unwrap_or_else(|e| panic!("settings: {e}"));
    let (runner, blobs) = production_runner(settings);
    Live {
        db,
        sql,
        blobs,
        runner,
        _azurite: azurite,
    }
}

impl Live {
    /// Runs `change`, waits until `probe` sees it captured, and copies up to then.
    pub(super) async fn copy_after(&mut self, change: &str, probe: &str) -> Report {
        batch(&mut self.sql, change).await;
        wait_until_captured(&mut self.sql, &self.db.name, probe).await;
        let committed = server_utc_now(&mut self.sql).await;
        let at = server_time_after(&mut self.sql, committed).await;
        self.runner.incremental_copy(trigger(at)).await
    }

    pub(super) async fn blobs_under(&self, prefix: &str) -> Vec<(String, Csv)> {
        let mut names = self.blobs.list(prefix).await.expect("list");
        names.sort();
        let mut out = Vec::new();
        for name in names {
            let csv = parse_csv(&read_blob(&self.blobs, &name).await);
            out.push((name, csv));
        }
        out
    }
}

/// DDL, a warning naming it, a second instance, and the switch at its start LSN: the blob
/// after the switch carries the new column, the watermark names the new instance, and the
/// old instance can be disabled without the copier noticing.
#[tokio::test]
async fn live_a_schema_change_switches_to_the_second_instance() {
    let Some(conn) = live_connection_string() else {
        println!("skipped: {ENV} not set");
        return;
    };
    let mut live = live(&conn, "", "dbo.customers").await;
    let load = live
        .runner
        .full_load(FullLoadRequest {
            tables: vec![],
            reset: false,
        })
        .await;
    assert_eq!(load.status, Status::Done, "{load:#?}");

    batch(
        &mut live.sql,
        "ALTER TABLE dbo.customers ADD loyalty nvarchar(20) NULL;",
    )
    .await;
    let report = live
        .copy_after(
            "UPDATE dbo.customers SET city = N'Bern' WHERE customer_id = 5;",
            "SELECT COUNT(*) AS n FROM cdc.dbo_customers_CT WHERE customer_id = 5 AND city = N'Bern';",
        )
        .await;
    assert_eq!(report.status, Status::Done, "{report:#?}");
    let warning = table_summary(&report)["warning"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        warning.contains("ADD loyalty") || warning.contains("add loyalty"),
        "{warning}"
    );
    assert!(warning.contains("sys.sp_cdc_enable_table"), "{warning}");
    let checks = live.runner.check().await;
    assert!(
        checks
            .iter()
            .any(|(what, r)| what.starts_with("schema changes of dbo.customers") && r.is_err()),
        "{checks:#?}"
    );

    batch(
        &mut live.sql,
        "EXEC sys.sp_cdc_enable_table @source_schema = N'dbo', @source_name = N'customers', \
         @capture_instance = N'dbo_customers_v2', @role_name = NULL, @supports_net_changes = 1;",
    )
    .await;
    wait_for_first_capture(&mut live.sql, &live.db.name).await;
    let report = live
        .copy_after(
            "UPDATE dbo.customers SET loyalty = N'gold' WHERE customer_id = 6;",
            "SELECT COUNT(*) AS n FROM cdc.dbo_customers_v2_CT WHERE customer_id = 6 AND loyalty = N'gold';",
        )
        .await;
    assert_eq!(report.status, Status::Done, "{report:#?}");
    let summary = table_summary(&report);
    assert_eq!(summary["switched"]["to"], "dbo_customers_v2", "{summary}");
    let blobs = live.blobs_under("dbo/customers/incremental/").await;
    let (name, last) = blobs.last().expect("a blob after the switch");
    assert!(
        last.header.iter().any(|h| h == "loyalty"),
        "{name}: {:?}",
        last.header
    );
    let loyalty = last.header.iter().position(|h| h == "loyalty").unwrap();
    assert!(
        last.rows
            .iter()
            .any(|r| r[loyalty].as_deref() == Some("gold")),
        "{name}"
    );
    let wm = watermark_row(&mut live.sql).await.expect("watermark");
    assert_eq!(wm.capture_instance, "dbo_customers_v2");

    // The old instance can go; the copier reads the new one.
    batch(
        &mut live.sql,
        "EXEC sys.sp_cdc_disable_table @source_schema = N'dbo', @source_name = N'customers', \
         @capture_instance = N'dbo_customers';",
    )
    .await;
    let report = live
        .copy_after(
            "UPDATE dbo.customers SET loyalty = N'silver' WHERE customer_id = 6;",
            "SELECT COUNT(*) AS n FROM cdc.dbo_customers_v2_CT WHERE customer_id = 6 AND loyalty = N'silver';",
        )
        .await;
    assert_eq!(report.status, Status::Done, "{report:#?}");
    assert_all_ok("check after the switch", &live.runner.check().await);
}

/// A table without a key: loaded under a table lock, then copied from all changes with
/// `__$seqval` and update before-images; the load plus the changes replay to the table as a
/// multiset.
#[tokio::test]
async fn live_a_keyless_table_is_loaded_and_copied_from_all_changes() {
    let Some(conn) = live_connection_string() else {
        println!("skipped: {ENV} not set");
        return;
    };
    let prepare = "
CREATE TABLE dbo.audit_log (at int NOT NULL, source varchar(10) NOT NULL, message nvarchar(50) NULL);
INSERT INTO dbo.audit_log VALUES (1, 'app', N'start'), (1, 'app', N'start'), (2, 'job', NULL);
EXEC sys.sp_cdc_enable_table @source_schema = N'dbo', @source_name = N'audit_log',
     @role_name = NULL, @supports_net_changes = 0;";
    let mut live = live(&conn, prepare, "dbo.audit_log").await;
    let load = live
        .runner
        .full_load(FullLoadRequest {
            tables: vec![],
            reset: false,
        })
        .await;
    assert_eq!(load.status, Status::Done, "{load:#?}");
    assert_eq!(table_summary(&load)["rows"], 3);
    assert_eq!(table_summary(&load)["mode"], "all");

    let report = live
        .copy_after(
            "INSERT INTO dbo.audit_log VALUES (1, 'app', N'start');
             UPDATE TOP (1) dbo.audit_log SET message = N'stop' WHERE at = 2;",
            "SELECT COUNT(*) AS n FROM cdc.dbo_audit_log_CT WHERE __$operation = 4 AND message = N'stop';",
        )
        .await;
    assert_eq!(report.status, Status::Done, "{report:#?}");
    let mut replay: BTreeMap<Vec<Option<String>>, u64> = BTreeMap::new();
    for (name, csv) in live.blobs_under("dbo/audit_log/").await {
        let pos = |h: &str| csv.header.iter().position(|c| c == h);
        let data: Vec<usize> = (0..csv.header.len())
            .filter(|&i| !csv.header[i].starts_with("__$"))
            .collect();
        for row in &csv.rows {
            let values: Vec<Option<String>> = data.iter().map(|&i| row[i].clone()).collect();
            match pos("__$operation").map(|i| row[i].as_deref()) {
                None => *replay.entry(values).or_default() += 1,
                Some(Some("2" | "4")) => *replay.entry(values).or_default() += 1,
                Some(Some("1" | "3")) => {
                    let n = replay
                        .get_mut(&values)
                        .unwrap_or_else(|| panic!("{name}: {values:?}"));
                    *n -= 1;
                    if *n == 0 {
                        replay.remove(&values);
                    }
                }
                other => panic!("{name}: operation {other:?}"),
            }
        }
        if name.contains("/incremental/") {
            assert_eq!(csv.header[1], "__$seqval", "{name}");
            let op = pos("__$operation").unwrap();
            let ops: Vec<_> = csv.rows.iter().map(|r| r[op].clone().unwrap()).collect();
            assert_eq!(ops, ["2", "3", "4"], "{name}");
        }
    }
    let mut table: BTreeMap<Vec<Option<String>>, u64> = BTreeMap::new();
    for row in rows(
        &mut live.sql,
        "SELECT CONVERT(nvarchar(20), at) AS at, source, message FROM dbo.audit_log;",
    )
    .await
    {
        let values = vec![
            row.get::<&str, _>("at").map(str::to_string),
            row.get::<&str, _>("source").map(str::to_string),
            row.get::<&str, _>("message").map(str::to_string),
        ];
        *table.entry(values).or_default() += 1;
    }
    assert_eq!(replay, table);
}

//! Live cases of issue 9, items 3, 5 and 6: the first run right after `sp_cdc_enable_table`,
//! NOCOUNT on at the server, and a statement held past a short command timeout.
//!
//! Each states on a real SQL Server 2022 (compose.yaml) what the model and the TDS fake were
//! taught: a NULL `start_lsn` until the capture job has run, DONE tokens without a row count
//! under `user options` 512, and tiberius's per-round-trip timeout.

use super::*;

/// The product over a fresh test database: the sample table, `sql/setup.sql` (CDC enabled
/// there), Azurite, and a runner with `extra` settings.
struct Product {
    db: TestDatabase,
    sql: Sql,
    blobs: BlobTarget,
    runner: Runner,
    _azurite: Option<Azurite>,
}

impl Product {
    async fn start(conn: &str, extra: &[(&str, &str)]) -> Product {
        let db = TestDatabase::create(conn).await;
        let mut sql = db.connect().await;
        batch(&mut sql, CREATE_CUSTOMERS).await;
        run_setup_sql(&mut sql).await;
        let (azurite, storage) = live_storage();
        let container = unique_container("live-first");
        let mut vars: HashMap<String, String> = [
            ("CDC_SQL_CONNECTION_STRING", db.connection_string.as_str()),
            ("CDC_STORAGE_CONNECTION_STRING", storage.as_str()),
            ("CDC_TABLES", "dbo.customers"),
            ("CDC_CONTAINER", container.as_str()),
            ("CDC_CAPTURE_WAIT_SECONDS", "60"),
            ("CDC_CAPTURE_POLL_SECONDS", "1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        for (k, v) in extra {
            vars.insert(k.to_string(), v.to_string());
        }
        let settings = Settings::from_map(&vars).unwrap_or_else(|e| panic!("settings: {e}"));
        let blobs = BlobTarget::new(&settings.storage, &container).expect("blob target");
        let source = SqlServerSource::new(&settings.sql, settings.watermark_table.clone())
            .expect("SqlServerSource::new")
            .with_command_timeout(settings.sql_command_timeout);
        let runner = Runner::new(Arc::new(settings), Arc::new(source), blobs.clone());
        Product {
            db,
            sql,
            blobs,
            runner,
            _azurite: azurite,
        }
    }

    async fn full_load(&self) -> Report {
        self.runner
            .full_load(FullLoadRequest {
                tables: vec![],
                reset: false,
            })
            .await
    }

    /// Commits one change after the load, waits until it is captured, and copies it.
    async fn copy_one_change(&mut self, city: &str) -> Report {
        batch(
            &mut self.sql,
            &format!("UPDATE dbo.customers SET city = N'{city}' WHERE customer_id = 5;"),
        )
        .await;
        let probe = format!(
            "SELECT COUNT(*) AS n FROM cdc.dbo_customers_CT WHERE customer_id = 5 \
             AND __$operation = 4 AND city = N'{city}';"
        );
        wait_until_captured(&mut self.sql, &self.db.name, &probe).await;
        let committed = server_utc_now(&mut self.sql).await;
        let at = server_time_after(&mut self.sql, committed).await;
        self.runner.incremental_copy(trigger(at)).await
    }
}

/// Item 3: a FullLoad at once after `sp_cdc_enable_table` either succeeds (the capture job
/// was quick) or answers the transient "capture has not started" error — never the cleanup
/// message; once the capture job has run, the load and the first incremental run succeed.
#[tokio::test]
async fn live_full_load_right_after_enable_is_retried_not_misbaselined() {
    let Some(conn) = live_connection_string() else {
        println!("skipped: {ENV} not set");
        return;
    };
    let mut product = Product::start(&conn, &[]).await;
    let first = product.full_load().await;
    let line = first.logs().join("\n");
    assert!(!line.contains("cleaned up"), "{line}");
    if first.status != Status::Done {
        assert_eq!(first.status, Status::Failed, "transient: {line}");
        assert!(line.contains("capture"), "{line}");
        assert!(line.contains("Retry"), "{line}");
        assert!(
            line.contains(&format!("cdc.{}_capture", product.db.name)),
            "{line}"
        );
        assert_eq!(
            watermark_row(&mut product.sql).await,
            None,
            "no watermark while capture has not started"
        );
        wait_for_first_capture(&mut product.sql, &product.db.name).await;
        let report = product.full_load().await;
        assert_eq!(report.status, Status::Done, "{report:#?}");
    }
    let report = product.copy_one_change("First window").await;
    assert_eq!(report.status, Status::Done, "{report:#?}");
    let summary = table_summary(&report);
    assert_eq!(summary["rows"], 1, "{summary}");
    assert!(!report.logs().join("\n").contains("cleaned up"));
}

/// Restores the server's `user options` when dropped (also after a panic).
struct UserOptions {
    server: Config,
    previous: i32,
}

impl Drop for UserOptions {
    fn drop(&mut self) {
        let (server, previous) = (self.server.clone(), self.previous);
        let restored = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?
                .block_on(async move {
                    let tcp = TcpStream::connect(server.get_addr())
                        .await
                        .map_err(|e| e.to_string())?;
                    let mut master = Client::connect(server, tcp.compat_write())
                        .await
                        .map_err(|e| e.to_string())?;
                    let restore =
                        format!("EXEC sp_configure 'user options', {previous}; RECONFIGURE;");
                    let result = master
                        .simple_query(restore)
                        .await
                        .map_err(|e| e.to_string())?
                        .into_results()
                        .await;
                    result.map(|_| ()).map_err(|e| e.to_string())
                })
        })
        .join();
        if !matches!(restored, Ok(Ok(()))) {
            eprintln!("could not restore 'user options' to {previous}: {restored:?}");
        }
    }
}

/// Item 6: with NOCOUNT on for every session (`user options` 512) the watermark still
/// advances — its writes set NOCOUNT OFF themselves — instead of every run reading "0 rows
/// updated" and calling itself superseded.
#[tokio::test]
async fn live_watermark_advances_with_nocount_on_at_the_server() {
    let Some(conn) = live_connection_string() else {
        println!("skipped: {ENV} not set");
        return;
    };
    let mut product = Product::start(&conn, &[]).await;
    wait_for_first_capture(&mut product.sql, &product.db.name).await;
    let mut master = connect(&product.db.server).await;
    let previous = rows(
        &mut master,
        "SELECT CAST(value_in_use AS int) AS v FROM sys.configurations WHERE name = N'user options';",
    )
    .await[0]
        .get::<i32, _>("v")
        .expect("user options");
    let _restore = UserOptions {
        server: product.db.server.clone(),
        previous,
    };
    batch(
        &mut master,
        &format!(
            "EXEC sp_configure 'user options', {}; RECONFIGURE;",
            previous | 512
        ),
    )
    .await;
    // New logins get it: the product opens its connections from here on.
    let mut probe = product.db.connect().await;
    let nocount = rows(&mut probe, "SELECT @@OPTIONS & 512 AS nocount;").await[0]
        .get::<i32, _>("nocount")
        .unwrap();
    assert_eq!(nocount, 512, "NOCOUNT is on for new sessions");

    let report = product.full_load().await;
    assert_eq!(report.status, Status::Done, "{report:#?}");
    let loaded = watermark_row(&mut product.sql)
        .await
        .expect("watermark row");
    assert_eq!(
        loaded.full_load_id, None,
        "the load's checkpoints were written"
    );
    let report = product.copy_one_change("Counted").await;
    assert_eq!(report.status, Status::Done, "{report:#?}");
    assert_eq!(table_summary(&report)["rows"], 1);
    let after = watermark_row(&mut product.sql)
        .await
        .expect("watermark row");
    assert!(after.last_lsn > loaded.last_lsn, "the watermark advanced");
    assert!(after.version > loaded.version);
}

/// Item 5: a keyset page blocked by another connection's table lock fails after the
/// command timeout (1 s) with an error naming the statement and the setting, transient.
#[tokio::test]
async fn live_a_blocked_statement_times_out_naming_itself() {
    let Some(conn) = live_connection_string() else {
        println!("skipped: {ENV} not set");
        return;
    };
    let mut product = Product::start(&conn, &[("CDC_SQL_COMMAND_TIMEOUT_SECONDS", "1")]).await;
    wait_for_first_capture(&mut product.sql, &product.db.name).await;
    // Another session holds an exclusive table lock in an open transaction.
    let mut blocker = product.db.connect().await;
    batch(
        &mut blocker,
        "BEGIN TRANSACTION; SELECT TOP (1) customer_id FROM dbo.customers WITH (TABLOCKX, HOLDLOCK);",
    )
    .await;
    let report = product.full_load().await;
    let line = report.logs().join("\n");
    assert_eq!(report.status, Status::Failed, "transient: {line}");
    assert!(line.contains("keyset page of dbo.customers"), "{line}");
    assert!(line.contains("CDC_SQL_COMMAND_TIMEOUT_SECONDS"), "{line}");
    batch(&mut blocker, "ROLLBACK;").await;
    // Unblocked, the load resumes from its checkpoint and finishes.
    let report = product.full_load().await;
    assert_eq!(report.status, Status::Done, "{report:#?}");
    let parts = product
        .blobs
        .list("dbo/customers/full/")
        .await
        .expect("list");
    assert!(!parts.is_empty(), "the load's parts: {parts:?}");
}

//! Live case for a table without a key (issue 10): a heap with duplicate rows, enabled with
//! `@supports_net_changes = 0`, in a database with READ_COMMITTED_SNAPSHOT on (Azure SQL
//! Database's default). Through the product's session: the capture instance has no key
//! columns, all changes under `all update old` give an update as its before-image (3) then its
//! after-image (4), and the locked scan returns every row while writers wait — an INSERT from
//! a second connection with `SET LOCK_TIMEOUT 500` fails with Msg 1222 until `release_lock`.

use super::*;

use cdc_copy::cdc::AllRowFilter;

const CREATE: &str = "
CREATE TABLE dbo.audit_log (event nvarchar(50) NOT NULL, [Order Date] date NULL);
INSERT INTO dbo.audit_log (event, [Order Date]) VALUES
    (N'login', '2024-05-01'), (N'login', '2024-05-01'), (N'logout', NULL);
EXEC sys.sp_cdc_enable_db;
EXEC sys.sp_cdc_enable_table @source_schema = N'dbo', @source_name = N'audit_log',
     @role_name = NULL, @supports_net_changes = 0;";

/// One of the two duplicate rows changes, then a new row: two transactions, in this order.
const CHANGES: &str = "
UPDATE TOP (1) dbo.audit_log SET event = N'logon' WHERE event = N'login';
INSERT INTO dbo.audit_log (event, [Order Date]) VALUES (N'logout', '2024-05-02');";

/// What a writer on another connection tries while the scan's lock is held.
const WRITER: &str = "SET LOCK_TIMEOUT 500;
INSERT INTO dbo.audit_log (event, [Order Date]) VALUES (N'late', NULL);";

/// "Lock request time out period exceeded."
const LOCK_TIMEOUT: u32 = 1222;

/// Runs a batch and drains it, returning the server's error instead of panicking.
async fn try_batch(client: &mut Sql, sql: &str) -> Result<(), tiberius::error::Error> {
    client.simple_query(sql).await?.into_results().await?;
    Ok(())
}

/// `XACT_STATE()` after an error caught in TRY inside a transaction, under `SET XACT_ABORT
/// {xact_abort}`: 1 committable, -1 uncommittable (rolled back when the batch ends).
async fn state_after_a_caught_error(client: &mut Sql, xact_abort: &str) -> i32 {
    let sql = format!(
        "SET XACT_ABORT {xact_abort};
         BEGIN TRANSACTION;
         DECLARE @x int;
         BEGIN TRY SET @x = 1 / 0; END TRY BEGIN CATCH END CATCH;
         SELECT CAST(XACT_STATE() AS int) AS state;
         ROLLBACK TRANSACTION;
         SET XACT_ABORT OFF;"
    );
    rows(client, &sql).await[0].get::<i32, _>("state").unwrap()
}

fn text_of(value: &Value) -> String {
    match value {
        Value::Text(t) => t.clone(),
        other => panic!("event is {other:?}"),
    }
}

#[tokio::test]
async fn live_a_keyless_table_is_read_from_all_changes_and_loaded_under_a_table_lock() {
    let Some(conn) = live_connection_string() else {
        println!("skipped: {ENV} not set");
        return;
    };
    let db = TestDatabase::create(&conn).await;
    // Row versioning for READ COMMITTED: the locked scan must still take its lock.
    batch(
        &mut connect(&db.server).await,
        &format!(
            "ALTER DATABASE [{}] SET READ_COMMITTED_SNAPSHOT ON WITH ROLLBACK IMMEDIATE;",
            db.name
        ),
    )
    .await;
    let mut sql = db.connect().await;
    batch(&mut sql, CREATE).await;
    run_setup_sql(&mut sql).await;
    wait_for_first_capture(&mut sql, &db.name).await;

    let source =
        SqlServerSource::from_config(db.config(), TableRef::parse(WATERMARK_TABLE).unwrap());
    let mut session = source.session().await.expect("session");
    let audit_log = TableRef::parse("dbo.audit_log").unwrap();
    let instances = session.capture_instances(&audit_log).await.unwrap();
    assert_eq!(instances.len(), 1);
    let ci = &instances[0];
    assert_eq!(ci.name, "dbo_audit_log");
    assert!(!ci.supports_net_changes);
    assert!(ci.key_columns.is_empty(), "{:?}", ci.key_columns);
    assert_eq!(ci.column_names(), ["event", "Order Date"]);
    let start = ci.start_lsn.expect("recognised (wait_for_first_capture)");

    // All changes, `all update old`: the update's before-image, its after-image, the insert.
    batch(&mut sql, CHANGES).await;
    let committed = server_utc_now(&mut sql).await;
    let to = wait_for_capture(&mut *session, committed).await;
    let mut sink = VecSink::default();
    let sent = session
        .all_changes(
            ci,
            LsnRange::new(start, to).expect("changes were made"),
            AllRowFilter::AllUpdateOld,
            &mut sink,
        )
        .await
        .unwrap();
    assert_eq!(sent, 3);
    assert_eq!(
        sink.columns,
        [
            "__$start_lsn",
            "__$seqval",
            "__$operation",
            "__$update_mask",
            "event",
            "Order Date"
        ]
    );
    let ops: Vec<(Value, String)> = (0..3)
        .map(|r| {
            (
                column(&sink, r, "__$operation").clone(),
                text_of(column(&sink, r, "event")),
            )
        })
        .collect();
    assert_eq!(
        ops,
        vec![
            (Value::Int(3), "login".to_string()),
            (Value::Int(4), "logon".to_string()),
            (Value::Int(2), "logout".to_string()),
        ]
    );
    assert_eq!(
        column(&sink, 0, "__$start_lsn"),
        column(&sink, 1, "__$start_lsn")
    );
    assert_eq!(column(&sink, 0, "__$seqval"), column(&sink, 1, "__$seqval"));

    // The locked scan: every row, duplicates included.
    let mut sink = VecSink::default();
    assert_eq!(session.scan_locked(ci, &mut sink).await.unwrap(), 4);
    assert_eq!(sink.columns, ["event", "Order Date"]);
    let mut events: Vec<String> = sink.rows.iter().map(|r| text_of(&r[0])).collect();
    events.sort();
    assert_eq!(events, ["login", "logon", "logout", "logout"]);

    // While the lock is held, a writer waits (and here gives up after 500 ms) ...
    let mut writer = db.connect().await;
    let refused = try_batch(&mut writer, WRITER)
        .await
        .expect_err("the INSERT waits for the scan's table lock");
    assert_eq!(refused.code(), Some(LOCK_TIMEOUT), "{refused}");
    // ... while the session goes on inside the scan's transaction: capture progress and the
    // baseline, as the job reads them before the release.
    session.capture_progress(Utc::now()).await.unwrap();
    assert!(session.max_lsn().await.unwrap().is_some_and(|l| l >= to));
    let refused = try_batch(&mut writer, WRITER)
        .await
        .expect_err("still locked after the session's other statements");
    assert_eq!(refused.code(), Some(LOCK_TIMEOUT), "{refused}");

    // Why SCAN_LOCKED ends with XACT_ABORT OFF: under ON, an error that a later statement
    // catches in TRY (capture progress without VIEW DATABASE STATE) dooms the transaction.
    assert_eq!(state_after_a_caught_error(&mut writer, "ON").await, -1);
    assert_eq!(state_after_a_caught_error(&mut writer, "OFF").await, 1);

    session.release_lock().await.unwrap();
    try_batch(&mut writer, WRITER)
        .await
        .expect("the lock is gone after release_lock");
    let count = rows(&mut sql, "SELECT COUNT(*) AS n FROM dbo.audit_log;").await[0]
        .get::<i32, _>("n")
        .unwrap();
    assert_eq!(count, 5);
    // Releasing again (an error path's second call) is harmless.
    session.release_lock().await.unwrap();
}

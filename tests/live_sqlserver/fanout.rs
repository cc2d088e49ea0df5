//! Live cases of issue 12 (fan-out), one per item, on a real SQL Server 2022 (compose.yaml):
//! - the `last_error` columns: `sql/setup.sql` adds them to a watermark table created without
//!   them, and `SET_LAST_ERROR` / `READ_LAST_ERROR` / `UPDATE_WATERMARK` write, read and
//!   clear them through the product's session;
//! - `CopyTable` messages: a message copies its table's window, its duplicate and a message
//!   older than the watermark copy nothing;
//! - a definite failure on a message (the capture instance disabled) answers `blocked` and
//!   leaves its error in `cdc_copy.watermark.last_error`.

use super::switch_jobs::live;
use super::*;

use cdc_copy::cdc::LastError;
use cdc_copy::host::{Delivery, TableMessage};

fn customers() -> TableRef {
    TableRef::parse("dbo.customers").unwrap()
}

fn message(at: DateTime<Utc>) -> TableMessage {
    TableMessage {
        table: customers(),
        trigger_time: at,
        is_past_due: false,
    }
}

fn first_delivery() -> Delivery {
    Delivery {
        dequeue_count: 1,
        id: Some("live".into()),
    }
}

#[tokio::test]
async fn live_last_error_columns_are_migrated_written_and_cleared() {
    let Some(conn) = live_connection_string() else {
        println!("skipped: {ENV} not set");
        return;
    };
    let mut live = live(&conn, "", "dbo.customers").await;
    // A watermark table from before issue 12: without the columns. The script adds them.
    batch(
        &mut live.sql,
        "ALTER TABLE cdc_copy.watermark DROP COLUMN last_error, last_error_at;",
    )
    .await;
    run_setup_sql(&mut live.sql).await;
    let columns = rows(
        &mut live.sql,
        "SELECT name FROM sys.columns WHERE object_id = OBJECT_ID(N'cdc_copy.watermark') \
         AND name IN (N'last_error', N'last_error_at') ORDER BY name;",
    )
    .await;
    let names: Vec<String> = columns
        .iter()
        .map(|r| r.get::<&str, _>(0).unwrap().to_string())
        .collect();
    assert_eq!(names, ["last_error", "last_error_at"]);

    let load = live.runner.full_load(FullLoadRequest::default_all()).await;
    assert_eq!(load.status, Status::Done, "{load:#?}");
    let source = SqlServerSource::new(
        &Settings::from_map(
            &[
                (
                    "CDC_SQL_CONNECTION_STRING",
                    live.db.connection_string.as_str(),
                ),
                (
                    "CDC_STORAGE_CONNECTION_STRING",
                    "UseDevelopmentStorage=true",
                ),
                ("CDC_TABLES", "dbo.customers"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        )
        .unwrap()
        .sql,
        TableRef::parse(WATERMARK_TABLE).unwrap(),
    )
    .unwrap();
    let mut session = source.session().await.expect("session");
    let at = server_utc_now(&mut live.sql).await;
    let long = "x".repeat(5000);
    let error = LastError::new(&format!("dbo.customers: Zürich {long}"), at);
    session
        .set_last_error(&customers(), Some(&error))
        .await
        .expect("SET_LAST_ERROR");
    let read = session
        .last_error(&customers())
        .await
        .expect("READ_LAST_ERROR");
    assert_eq!(
        read,
        Some(error.clone()),
        "nvarchar(4000) and datetime2(7) round trip"
    );
    assert_eq!(error.message.chars().count(), 4000);
    let wm = session.read_watermark(&customers()).await.unwrap().unwrap();
    let version = wm.version;
    assert!(
        session
            .update_watermark(version, &wm.next(wm.state.clone(), at))
            .await
            .unwrap(),
        "the error write left the version alone"
    );
    assert_eq!(
        session.last_error(&customers()).await.unwrap(),
        None,
        "cleared"
    );
}

#[tokio::test]
async fn live_copy_table_messages_are_idempotent() {
    let Some(conn) = live_connection_string() else {
        println!("skipped: {ENV} not set");
        return;
    };
    let mut live = live(&conn, "", "dbo.customers").await;
    let load = live.runner.full_load(FullLoadRequest::default_all()).await;
    assert_eq!(load.status, Status::Done, "{load:#?}");
    let before = server_utc_now(&mut live.sql).await;
    batch(
        &mut live.sql,
        "UPDATE dbo.customers SET city = N'Basel' WHERE customer_id = 3;",
    )
    .await;
    wait_until_captured(
        &mut live.sql,
        &live.db.name,
        "SELECT COUNT(*) AS n FROM cdc.dbo_customers_CT WHERE customer_id = 3 AND city = N'Basel';",
    )
    .await;
    let committed = server_utc_now(&mut live.sql).await;
    let at = server_time_after(&mut live.sql, committed).await;
    let first = live.runner.copy_table(message(at), first_delivery()).await;
    assert_eq!(first.status, Status::Done, "{first:#?}");
    assert_eq!(table_summary(&first)["note"], "copied", "{first:#?}");
    let blobs = live.blobs.list("dbo/customers/incremental/").await.unwrap();
    assert_eq!(blobs.len(), 1, "{blobs:?}");
    for (what, m) in [("duplicate", message(at)), ("stale", message(before))] {
        let again = live.runner.copy_table(m, first_delivery()).await;
        assert_eq!(again.status, Status::Done, "{what}: {again:#?}");
        assert_eq!(table_summary(&again)["note"], "up to date", "{what}");
        assert_eq!(
            live.blobs.list("dbo/customers/incremental/").await.unwrap(),
            blobs,
            "{what}: no second blob"
        );
    }
}

#[tokio::test]
async fn live_a_blocked_message_records_its_last_error() {
    let Some(conn) = live_connection_string() else {
        println!("skipped: {ENV} not set");
        return;
    };
    let mut live = live(&conn, "", "dbo.customers").await;
    let load = live.runner.full_load(FullLoadRequest::default_all()).await;
    assert_eq!(load.status, Status::Done, "{load:#?}");
    batch(
        &mut live.sql,
        "EXEC sys.sp_cdc_disable_table @source_schema = N'dbo', @source_name = N'customers', \
         @capture_instance = N'dbo_customers';",
    )
    .await;
    let at = server_utc_now(&mut live.sql).await;
    let report = live.runner.copy_table(message(at), first_delivery()).await;
    assert_eq!(report.status, Status::Blocked, "{report:#?}");
    let recorded = rows(
        &mut live.sql,
        "SELECT last_error FROM cdc_copy.watermark WHERE schema_name = N'dbo' AND table_name = N'customers';",
    )
    .await;
    let text = recorded[0].get::<&str, _>(0).expect("last_error set");
    assert!(text.contains("dbo.customers"), "{text}");
    assert!(
        text.contains("sp_cdc_enable_table"),
        "says what to do: {text}"
    );
}

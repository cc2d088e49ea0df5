//! Live case for schema changes (issue 10): a column added to a CDC table and a second capture
//! instance created after it, the way Microsoft documents the way through a schema change.
//! Through the product's session: both instances come back oldest first, the old one carries
//! the ALTER from `cdc.ddl_history` and lacks the new column, the new one captures it, and
//! its all changes and net changes from its own start LSN hold the changes made after the
//! switch, new column included.

use super::*;

use cdc_copy::cdc::{AllRowFilter, CaptureInstance};

const CREATE: &str = "
CREATE TABLE dbo.products (product_id int NOT NULL PRIMARY KEY, name nvarchar(50) NOT NULL);
INSERT INTO dbo.products (product_id, name) VALUES (1, N'anvil'), (2, N'bolt');
EXEC sys.sp_cdc_enable_db;
EXEC sys.sp_cdc_enable_table @source_schema = N'dbo', @source_name = N'products',
     @role_name = NULL, @supports_net_changes = 1;";

/// Changes the first instance sees, the DDL it does not follow, and changes to the new column
/// it does not capture (three batches: a batch naming `price` would not compile before the
/// ALTER has run).
const BEFORE_SWITCH: [&str; 3] = [
    "UPDATE dbo.products SET name = N'anvil 2' WHERE product_id = 1;",
    "ALTER TABLE dbo.products ADD price decimal(10,2) NULL;",
    "UPDATE dbo.products SET name = N'bolt 2', price = 9.50 WHERE product_id = 2;
     INSERT INTO dbo.products (product_id, name, price) VALUES (3, N'clamp', 1.25);",
];

/// The second capture instance, created after the DDL: it captures the new column.
const SWITCH: &str = "
EXEC sys.sp_cdc_enable_table @source_schema = N'dbo', @source_name = N'products',
     @role_name = NULL, @supports_net_changes = 1, @capture_instance = N'dbo_products_v2';";

/// Changes after the switch, in this commit order: insert 4, update 1.
const AFTER_SWITCH: &str = "
INSERT INTO dbo.products (product_id, name, price) VALUES (4, N'drill', 2.00);
UPDATE dbo.products SET price = 3.00 WHERE product_id = 1;";

fn price(cents: i128) -> Value {
    Value::Decimal {
        unscaled: cents,
        scale: 2,
    }
}

/// `(__$operation, product_id, price)` of every row in `sink`.
fn changes(sink: &VecSink) -> Vec<(Value, Value, Value)> {
    (0..sink.rows.len())
        .map(|r| {
            (
                column(sink, r, "__$operation").clone(),
                column(sink, r, "product_id").clone(),
                column(sink, r, "price").clone(),
            )
        })
        .collect()
}

#[tokio::test]
async fn live_a_second_capture_instance_after_add_column() {
    let Some(conn) = live_connection_string() else {
        println!("skipped: {ENV} not set");
        return;
    };
    let db = TestDatabase::create(&conn).await;
    let mut sql = db.connect().await;
    batch(&mut sql, CREATE).await;
    run_setup_sql(&mut sql).await;
    wait_for_first_capture(&mut sql, &db.name).await;

    for step in BEFORE_SWITCH {
        batch(&mut sql, step).await;
    }
    // "Entries in cdc.ddl_history are made at the time the capture process reads the DDL
    // transaction in the log" (sys.sp_cdc_get_ddl_history).
    wait_until_captured(
        &mut sql,
        &db.name,
        "SELECT COUNT(*) AS n FROM cdc.ddl_history WHERE source_object_id = OBJECT_ID(N'dbo.products');",
    )
    .await;
    batch(&mut sql, SWITCH).await;
    wait_for_first_capture(&mut sql, &db.name).await;
    batch(&mut sql, AFTER_SWITCH).await;
    let committed = server_utc_now(&mut sql).await;

    let source =
        SqlServerSource::from_config(db.config(), TableRef::parse(WATERMARK_TABLE).unwrap());
    let mut session = source.session().await.expect("session");
    let to = wait_for_capture(&mut *session, committed).await;
    let products = TableRef::parse("dbo.products").unwrap();
    let instances = session.capture_instances(&products).await.unwrap();
    let names: Vec<&str> = instances.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["dbo_products", "dbo_products_v2"], "oldest first");
    let (old, new): (&CaptureInstance, &CaptureInstance) = (&instances[0], &instances[1]);

    // The old instance: its own columns, and the ALTER it saw but does not follow.
    assert_eq!(old.column_names(), ["product_id", "name"]);
    assert_eq!(old.key_names(), ["product_id"]);
    let alter: Vec<_> = old
        .ddl
        .iter()
        .filter(|d| {
            let command = d.command.to_ascii_uppercase();
            command.contains("ALTER TABLE") && command.contains("ADD PRICE")
        })
        .collect();
    assert_eq!(
        alter.len(),
        1,
        "the ALTER in the old instance's DDL: {:?}",
        old.ddl
    );
    // The new one: the new column, its own start, and no DDL recorded against it.
    assert_eq!(new.column_names(), ["product_id", "name", "price"]);
    assert_eq!(new.key_names(), ["product_id"]);
    let start = new.start_lsn.expect("recognised (wait_for_first_capture)");
    assert!(alter[0].lsn < start, "the DDL came before the new instance");
    assert!(new.ddl.is_empty(), "{:?}", new.ddl);
    assert!(old.start_lsn.is_some_and(|s| s < start));

    // All changes of the new instance from its start: exactly the changes after the switch,
    // in commit order, an update as before-image then after-image, with the new column.
    let range = LsnRange::new(start, to).expect("changes after the switch");
    let mut sink = VecSink::default();
    session
        .all_changes(new, range, AllRowFilter::AllUpdateOld, &mut sink)
        .await
        .unwrap();
    assert_eq!(
        &sink.columns[..4],
        [
            "__$start_lsn",
            "__$seqval",
            "__$operation",
            "__$update_mask"
        ]
    );
    assert_eq!(
        changes(&sink),
        vec![
            (Value::Int(2), Value::Int(4), price(200)),
            (Value::Int(3), Value::Int(1), Value::Null),
            (Value::Int(4), Value::Int(1), price(300)),
        ]
    );
    assert_eq!(
        column(&sink, 1, "__$seqval"),
        column(&sink, 2, "__$seqval"),
        "an update's two images share their seqval"
    );

    // Net changes of the new instance over the same range: one row per key, final values.
    let mut sink = VecSink::default();
    session
        .net_changes(new, range, RowFilter::All, &mut sink)
        .await
        .unwrap();
    let mut net = changes(&sink);
    net.sort_by_key(|(_, id, _)| format!("{id:?}"));
    assert_eq!(
        net,
        vec![
            (Value::Int(4), Value::Int(1), price(300)),
            (Value::Int(2), Value::Int(4), price(200)),
        ]
    );

    // The old instance keeps capturing after the switch, without the new column.
    let mut sink = VecSink::default();
    session
        .all_changes(old, range, AllRowFilter::All, &mut sink)
        .await
        .unwrap();
    assert!(
        !sink.columns.iter().any(|c| c == "price"),
        "{:?}",
        sink.columns
    );
    let ids: Vec<&Value> = (0..sink.rows.len())
        .map(|r| column(&sink, r, "product_id"))
        .collect();
    assert_eq!(ids, [&Value::Int(4), &Value::Int(1)]);
}

//! Live suite: the SQL Server session against a real SQL Server 2022 with CDC.
//!
//! Runs only when `CDC_COPY_TEST_MSSQL` holds an ADO.NET connection string to a server whose
//! SQL Server Agent runs (Docker: `MSSQL_AGENT_ENABLED=true`) and whose login may create
//! databases, e.g.
//! `Server=tcp:localhost,1433;User Id=sa;Password=...;Encrypt=true;TrustServerCertificate=true`.
//! Otherwise it prints "skipped" and passes: CI has no SQL Server. It creates a uniquely named
//! database, runs `sql/setup.sql` there (sample customers table, CDC, watermark table),
//! exercises every session method against real capture, and drops the database.

use std::time::Duration;

use async_trait::async_trait;
use cdc_copy::cdc::{CdcSession, Lsn, RowFilter, RowSink, TableRef, Value, Watermark};
use cdc_copy::sink::SinkError;
use cdc_copy::sqlserver::{SqlServerSession, SqlServerSource};
use chrono::Utc;
use futures::FutureExt;
use tiberius::{Client, Config};
use tokio::net::TcpStream;
use tokio_util::compat::{Compat, TokioAsyncWriteCompatExt};

const ENV: &str = "CDC_COPY_TEST_MSSQL";
const CAPTURE_TIMEOUT: Duration = Duration::from_secs(120);

type Admin = Client<Compat<TcpStream>>;

async fn admin(config: &Config) -> Admin {
    let tcp = TcpStream::connect(config.get_addr()).await.expect("tcp");
    tcp.set_nodelay(true).unwrap();
    Client::connect(config.clone(), tcp.compat_write())
        .await
        .expect("admin login")
}

async fn batch(client: &mut Admin, sql: &str) {
    client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{e}: {sql}"))
        .into_results()
        .await
        .unwrap_or_else(|e| panic!("{e}: {sql}"));
}

#[derive(Default)]
struct VecSink {
    columns: Vec<String>,
    rows: Vec<Vec<Value>>,
}

#[async_trait]
impl RowSink for VecSink {
    async fn columns(&mut self, names: &[String]) -> Result<(), SinkError> {
        self.columns = names.to_vec();
        Ok(())
    }
    async fn row(&mut self, row: &[Value]) -> Result<(), SinkError> {
        self.rows.push(row.to_vec());
        Ok(())
    }
}

fn column<'a>(sink: &'a VecSink, row: usize, name: &str) -> &'a Value {
    let i = sink
        .columns
        .iter()
        .position(|c| c == name)
        .unwrap_or_else(|| panic!("no column {name} in {:?}", sink.columns));
    &sink.rows[row][i]
}

#[tokio::test]
async fn live_session_against_sql_server() {
    let Ok(connection_string) = std::env::var(ENV) else {
        println!("skipped: {ENV} not set");
        return;
    };
    let server = Config::from_ado_string(&connection_string).expect("connection string");
    let database = format!(
        "cdc_copy_test_{}_{}",
        std::process::id(),
        Utc::now().timestamp_millis()
    );
    let mut master = admin(&server).await;
    batch(&mut master, &format!("CREATE DATABASE [{database}];")).await;

    let mut config = server.clone();
    config.database(&database);
    let outcome = std::panic::AssertUnwindSafe(exercise(config.clone()))
        .catch_unwind()
        .await;

    // Always clean up: drop the CDC jobs with the database, then the database.
    {
        let mut db = admin(&config).await;
        let disabled = match db.simple_query("EXEC sys.sp_cdc_disable_db;").await {
            Ok(stream) => stream.into_results().await.map(|_| ()),
            Err(e) => Err(e),
        };
        if let Err(e) = disabled {
            eprintln!("disabling CDC before the drop: {e}");
        }
    }
    batch(
        &mut master,
        &format!(
            "ALTER DATABASE [{database}] SET SINGLE_USER WITH ROLLBACK IMMEDIATE; \
             DROP DATABASE [{database}];"
        ),
    )
    .await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// Polls capture until it has passed `since` (UTC); the max LSN then.
async fn wait_for_capture(session: &mut SqlServerSession, since: chrono::DateTime<Utc>) -> Lsn {
    let deadline = tokio::time::Instant::now() + CAPTURE_TIMEOUT;
    loop {
        let progress = session.capture_progress(Utc::now()).await.unwrap();
        if progress.max_lsn_time.is_some_and(|t| t >= since) {
            return progress.max_lsn;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the capture job did not pass {since} within {CAPTURE_TIMEOUT:?} (is SQL Server Agent running?)"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn exercise(config: Config) {
    let mut db = admin(&config).await;
    let setup = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/sql/setup.sql"))
        .expect("sql/setup.sql");
    batch(&mut db, &setup).await;
    batch(&mut db, &setup).await; // idempotent

    let watermark = TableRef::parse("cdc_copy.watermark").unwrap();
    let source = SqlServerSource::from_config(config.clone(), watermark);
    let mut session = source.connect().await.expect("session");
    let customers = TableRef::parse("dbo.customers").unwrap();

    assert!(session.watermark_table_exists().await.unwrap());
    source.check_watermark_table().await.unwrap();
    let _snapshot = session.snapshot_isolation_allowed().await.unwrap();

    let ci = session.capture_instance(&customers, None).await.unwrap();
    assert_eq!(ci.name, "dbo_customers");
    assert_eq!(ci.key_columns, vec!["customer_id".to_string()]);
    assert!(ci.supports_net_changes);
    assert_eq!(session.min_lsn(&ci.name).await.unwrap(), ci.min_lsn);
    let missing = session
        .capture_instance(&customers, Some("dbo_customers_nope"))
        .await
        .unwrap_err();
    assert!(
        matches!(missing, cdc_copy::cdc::CdcError::NoCaptureInstance { .. }),
        "{missing:?}"
    );

    let baseline = session.max_lsn().await.unwrap();

    // Changes: 1 and 2 inserted (2 also updated), 3 inserted and deleted again.
    batch(
        &mut db,
        "INSERT INTO dbo.customers (customer_id, first_name, last_name, email, city) VALUES \
         (1, 'Chevy', 'Leward', 'cleward0@mapy.cz', N'Reading'), \
         (2, 'Sayre', 'Ateggart', 'sateggart1@nih.gov', N'Portsmouth'), \
         (3, 'Nathalia', 'Seckom', 'nseckom2@blogger.com', N'Portsmouth'); \
         UPDATE dbo.customers SET city = N'Zürich' WHERE customer_id = 2; \
         DELETE FROM dbo.customers WHERE customer_id = 3;",
    )
    .await;
    let committed = Utc::now();
    let to = wait_for_capture(&mut session, committed).await;
    let from = baseline.increment().unwrap();
    assert!(from <= to);

    // Server arithmetic agrees with ours.
    for lsn in [baseline, to, from] {
        assert_eq!(
            session.increment_lsn(lsn).await.unwrap(),
            lsn.increment().unwrap()
        );
    }
    let offset = session.server_utc_offset_minutes().await.unwrap();
    let progress = session.capture_progress(Utc::now()).await.unwrap();
    assert_eq!(progress.server_utc_offset_minutes, offset);
    assert!(progress.lsn_at.is_some_and(|l| l <= progress.max_lsn));
    let local_time = session.map_lsn_to_time(to).await.unwrap().expect("mapped");
    assert!(session
        .map_time_to_lsn(local_time)
        .await
        .unwrap()
        .is_some_and(|l| l <= to));

    // Net changes: rows 1 and 2 (insert with final values), nothing for 3.
    for (filter, op) in [(RowFilter::All, 2), (RowFilter::AllWithMerge, 5)] {
        assert_eq!(
            session
                .count_net_changes(&ci, from, to, filter)
                .await
                .unwrap(),
            2
        );
        let mut sink = VecSink::default();
        let sent = session
            .net_changes(&ci, from, to, filter, &mut sink)
            .await
            .unwrap();
        assert_eq!(sent, 2);
        assert_eq!(sink.columns[0], "__$start_lsn");
        let ids: Vec<&Value> = (0..2).map(|r| column(&sink, r, "customer_id")).collect();
        assert_eq!(ids, vec![&Value::Int(1), &Value::Int(2)]);
        assert_eq!(column(&sink, 0, "__$operation"), &Value::Int(op));
        assert_eq!(column(&sink, 1, "city"), &Value::Text("Zürich".into()));
    }
    // An empty range costs nothing and finds nothing.
    assert_eq!(
        session
            .count_net_changes(&ci, to.increment().unwrap(), to, RowFilter::All)
            .await
            .unwrap(),
        0
    );

    // Full-load scan in key order, one row per page.
    let mut sink = VecSink::default();
    let (n, key) = session.scan(&ci, None, 1, &mut sink).await.unwrap();
    assert_eq!((n, key.clone()), (1, Some(vec![Value::Int(1)])));
    let (n, key) = session
        .scan(&ci, key.as_deref(), 1, &mut sink)
        .await
        .unwrap();
    assert_eq!((n, key.clone()), (1, Some(vec![Value::Int(2)])));
    let (n, key) = session
        .scan(&ci, key.as_deref(), 1, &mut sink)
        .await
        .unwrap();
    assert_eq!((n, key), (0, None));
    assert_eq!(sink.rows.len(), 2);

    // Watermark: insert once, conditional updates.
    let now = Utc::now();
    let row = Watermark {
        table: customers.clone(),
        capture_instance: ci.name.clone(),
        last_lsn: to,
        last_window_end: now,
        pending: None,
        full_load: None,
        rows_copied: 2,
        bytes_copied: 100,
        version: 1,
        updated_at: now,
    };
    assert_eq!(session.read_watermark(&customers).await.unwrap(), None);
    assert!(session.insert_watermark(&row).await.unwrap());
    assert!(!session.insert_watermark(&row).await.unwrap());
    let read = session.read_watermark(&customers).await.unwrap().unwrap();
    assert_eq!(read.last_lsn, to);
    assert_eq!(read.version, 1);
    assert_eq!(
        read.last_window_end.timestamp_nanos_opt().unwrap() / 100,
        now.timestamp_nanos_opt().unwrap() / 100,
        "datetime2(7) keeps 100 ns"
    );
    let next = Watermark {
        version: 2,
        ..read.clone()
    };
    assert!(session.update_watermark(1, &next).await.unwrap());
    assert!(
        !session.update_watermark(1, &next).await.unwrap(),
        "stale version"
    );
    assert_eq!(
        session
            .read_watermark(&customers)
            .await
            .unwrap()
            .unwrap()
            .version,
        2
    );
    session.close().await.unwrap();
}

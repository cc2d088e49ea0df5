//! The real SQL Server session (tiberius and all) against the TDS test double.
//!
//! Each test checks three things: the exact statement text sent (compared with the consts and
//! builders of `sqlserver::sql`), the parameters (names, TDS types, values), and how the
//! answered rows decode into the seam's structs and `Value`s — NULLs and every type included.

mod common;

use std::sync::Arc;

use cdc_copy::host::FullLoadRequest;
use cdc_copy::jobs::{self, Context};
use cdc_copy::report::Status;
use cdc_copy::sink::blob::BlobTarget;
use cdc_copy_testkit::model::collation::Rules;
use cdc_copy_testkit::tds;

use async_trait::async_trait;
use cdc_copy::cdc::columns::CapturedColumnRow;
use cdc_copy::cdc::RowSinkError;
use cdc_copy::cdc::{
    AllRowFilter, CaptureInstance, CdcError, CdcSession, CdcSource, DdlEvent, FullLoadProgress,
    Lsn, LsnRange, RowFilter, RowSink, TableRef, TableState, Value, Watermark, Window,
};
use cdc_copy::cdc::{Collation, ColumnDesc, ColumnType, KeyColumn, KeyType, Length};
use cdc_copy::cdc::{ScanMark, VecSink};
use cdc_copy::config::{Secret, SqlTarget};
use cdc_copy::sqlserver::{sql, SqlServerSource};
use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, TimeZone, Utc};
use tds::{col, Cell, FakeServer, LoginReply, ParamValue, Reply, SqlType};

fn range(from: Lsn, to: Lsn) -> LsnRange {
    LsnRange::new(from, to).expect("a non-empty range")
}

fn table(schema: &str, name: &str) -> TableRef {
    TableRef {
        schema: schema.into(),
        table: name.into(),
    }
}

fn watermark_table() -> TableRef {
    table("cdc_copy", "watermark")
}

fn source(server: &FakeServer) -> SqlServerSource {
    SqlServerSource::from_config(server.config(), watermark_table())
}

async fn session(server: &FakeServer) -> Box<dyn CdcSession> {
    source(server).session().await.expect("session")
}

fn lsn(n: u128) -> Lsn {
    Lsn::from_u128(n)
}

fn lsn_cell(n: u128) -> Cell {
    Cell::Bytes(lsn(n).0.to_vec())
}

/// The declaration the scripted catalog gives a captured column that is not a key column.
fn non_key(name: &str) -> ColumnDesc {
    ColumnDesc::new(name, ColumnType::NVarChar(Length::Of(50)), true)
        .with_collation("SQL_Latin1_General_CP1_CI_AS")
}

/// `int` NOT NULL key columns `keys`, then the other `columns` as [`non_key`] declares them.
fn columns_of(keys: &[&str], columns: &[&str]) -> Vec<ColumnDesc> {
    columns
        .iter()
        .map(|c| match keys.contains(c) {
            true => ColumnDesc::new(*c, ColumnType::Int, false),
            false => non_key(c),
        })
        .collect()
}

fn customers_ci() -> CaptureInstance {
    CaptureInstance {
        table: table("dbo", "customers"),
        name: "dbo_customers".into(),
        supports_net_changes: true,
        min_lsn: lsn(100),
        start_lsn: Some(lsn(100)),
        key_columns: vec![KeyColumn::new("customer_id", KeyType::Int)],
        columns: columns_of(&["customer_id"], &["customer_id", "name"]),
        ddl: Vec::new(),
    }
}

/// A table without a key: no net changes, empty `key_columns`; `Order Date` needs quoting.
fn audit_log_ci() -> CaptureInstance {
    CaptureInstance {
        table: table("dbo", "audit_log"),
        name: "dbo_audit_log".into(),
        supports_net_changes: false,
        min_lsn: lsn(100),
        start_lsn: Some(lsn(100)),
        key_columns: Vec::new(),
        columns: columns_of(&[], &["event", "Order Date"]),
        ddl: Vec::new(),
    }
}

fn net_changes_sql(ci: &CaptureInstance) -> String {
    sql::net_changes(&ci.name, &ci.key_columns, &ci.columns).unwrap()
}

fn param_types(request: &tds::Request) -> Vec<&str> {
    request.params.iter().map(|p| p.tds_type.as_str()).collect()
}

fn param_values(request: &tds::Request) -> Vec<ParamValue> {
    request.params.iter().map(|p| p.value.clone()).collect()
}

/// One row of `CAPTURE_INSTANCES` result set 2.
#[derive(Clone)]
struct KeyRow {
    ci: &'static str,
    column: &'static str,
    system_type: Option<&'static str>,
    type_name: &'static str,
    max_length: i64,
    precision: i64,
    scale: i64,
    collation: Option<&'static str>,
    nullable: bool,
}

/// A NOT NULL `int` key column.
fn int_key(ci: &'static str, column: &'static str) -> KeyRow {
    KeyRow {
        ci,
        column,
        system_type: Some("int"),
        type_name: "int",
        max_length: 4,
        precision: 10,
        scale: 0,
        collation: None,
        nullable: false,
    }
}

/// Each instance with `start_lsn` = its min LSN (recognised by the capture process).
fn started<'a>(instances: &[(&'a str, bool, u128)]) -> Vec<(&'a str, bool, u128, Option<u128>)> {
    instances
        .iter()
        .map(|(name, net, min)| (*name, *net, *min, Some(*min)))
        .collect()
}

/// `CAPTURE_INSTANCES` with `int` keys; each instance captures its key columns and `name`.
fn capture_instances_reply(
    instances: &[(&str, bool, u128)],
    keys: &[(&'static str, &'static str)],
) -> Reply {
    capture_instances_reply_started(&started(instances), keys)
}

/// As [`capture_instances_reply`], with each instance's `start_lsn` (`None`: NULL, not yet
/// recognised by the capture process).
fn capture_instances_reply_started(
    instances: &[(&str, bool, u128, Option<u128>)],
    keys: &[(&'static str, &'static str)],
) -> Reply {
    let keys: Vec<KeyRow> = keys.iter().map(|(ci, c)| int_key(ci, c)).collect();
    let mut captured: Vec<(String, String, bool)> = Vec::new();
    for (ci, ..) in instances {
        for key in keys.iter().filter(|k| k.ci == *ci) {
            captured.push((ci.to_string(), key.column.to_string(), false));
        }
        captured.push((ci.to_string(), "name".into(), false));
    }
    capture_reply_started(instances, None, &keys, &captured)
}

/// The result sets of `CAPTURE_INSTANCES`: instances (with `index_name`), key columns,
/// captured columns `(instance, column, is_computed)` in `column_ordinal` order, no DDL.
fn capture_reply(
    instances: &[(&str, bool, u128)],
    index_name: Option<&str>,
    keys: &[KeyRow],
    captured: &[(String, String, bool)],
) -> Reply {
    capture_reply_started(&started(instances), index_name, keys, captured)
}

/// As [`capture_reply`], with each instance's `start_lsn`.
fn capture_reply_started(
    instances: &[(&str, bool, u128, Option<u128>)],
    index_name: Option<&str>,
    keys: &[KeyRow],
    captured: &[(String, String, bool)],
) -> Reply {
    capture_reply_with_ddl("customers", instances, index_name, keys, captured, &[])
}

/// One row of `CAPTURE_INSTANCES` result set 4 (`cdc.ddl_history` joined to the instance).
struct DdlRow {
    ci: &'static str,
    command: &'static str,
    lsn: u128,
    time: NaiveDateTime,
}

/// The four result sets of `CAPTURE_INSTANCES` for table `dbo.<table>`; the fourth holds
/// `ddl` (empty: what the `BEGIN CATCH` branch answers to a login that may not read
/// `cdc.ddl_history`).
fn capture_reply_with_ddl(
    table: &str,
    instances: &[(&str, bool, u128, Option<u128>)],
    index_name: Option<&str>,
    keys: &[KeyRow],
    captured: &[(String, String, bool)],
    ddl: &[DdlRow],
) -> Reply {
    let created = NaiveDate::from_ymd_opt(2024, 1, 1)
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap();
    let opt_text = |v: Option<&str>| v.map_or(Cell::Null, |v| Cell::Text(v.into()));
    Reply::Results(vec![
        tds::ResultSet {
            columns: vec![
                col("capture_instance", SqlType::NVarChar(128)),
                col("schema_name", SqlType::NVarChar(128)),
                col("table_name", SqlType::NVarChar(128)),
                col("supports_net_changes", SqlType::Bit),
                col("index_name", SqlType::NVarChar(128)),
                col("min_lsn", SqlType::Binary(10)),
                col("start_lsn", SqlType::Binary(10)),
                col("create_date", SqlType::DateTime),
            ],
            rows: instances
                .iter()
                .map(|(name, net, min, start)| {
                    vec![
                        Cell::Text(name.to_string()),
                        Cell::Text("dbo".into()),
                        Cell::Text(table.into()),
                        Cell::Bit(*net),
                        opt_text(index_name),
                        lsn_cell(*min),
                        start.map_or(Cell::Null, lsn_cell),
                        Cell::DateTime(created),
                    ]
                })
                .collect(),
        },
        tds::ResultSet {
            columns: vec![
                col("capture_instance", SqlType::NVarChar(128)),
                col("column_name", SqlType::NVarChar(128)),
                col("system_type_name", SqlType::NVarChar(128)),
                col("type_name", SqlType::NVarChar(128)),
                col("max_length", SqlType::SmallInt),
                col("precision", SqlType::TinyInt),
                col("scale", SqlType::TinyInt),
                col("collation_name", SqlType::NVarChar(128)),
                col("is_nullable", SqlType::Bit),
            ],
            rows: keys
                .iter()
                .map(|k| {
                    vec![
                        Cell::Text(k.ci.into()),
                        Cell::Text(k.column.into()),
                        opt_text(k.system_type),
                        Cell::Text(k.type_name.into()),
                        Cell::Int(k.max_length),
                        Cell::Int(k.precision),
                        Cell::Int(k.scale),
                        opt_text(k.collation),
                        Cell::Bit(k.nullable),
                    ]
                })
                .collect(),
        },
        tds::ResultSet {
            columns: vec![
                col("capture_instance", SqlType::NVarChar(128)),
                col("column_name", SqlType::NVarChar(128)),
                col("column_ordinal", SqlType::Int),
                col("is_computed", SqlType::Bit),
                col("system_type_name", SqlType::NVarChar(128)),
                col("type_name", SqlType::NVarChar(128)),
                col("max_length", SqlType::SmallInt),
                col("precision", SqlType::TinyInt),
                col("scale", SqlType::TinyInt),
                col("collation_name", SqlType::NVarChar(128)),
                col("is_nullable", SqlType::Bit),
            ],
            rows: captured
                .iter()
                .zip(1..)
                .map(|((ci, column, computed), ordinal)| {
                    // A key column has its key type in the change table too; the others are
                    // what `non_key` declares.
                    let key = keys.iter().find(|k| k.ci == ci && k.column == column);
                    let ty = key.map_or_else(
                        || CapturedColumnRow::typed(column, &non_key(column)),
                        |k| CapturedColumnRow {
                            system_type: k.system_type.map(str::to_string),
                            type_name: k.type_name.to_string(),
                            max_length: Some(k.max_length as i16),
                            precision: k.precision as u8,
                            scale: k.scale as u8,
                            collation_name: k.collation.map(str::to_string),
                            is_nullable: k.nullable,
                            ..CapturedColumnRow::typed(column, &non_key(column))
                        },
                    );
                    vec![
                        Cell::Text(ci.clone()),
                        Cell::Text(column.clone()),
                        Cell::Int(ordinal),
                        Cell::Bit(*computed),
                        opt_text(ty.system_type.as_deref()),
                        Cell::Text(ty.type_name.clone()),
                        ty.max_length.map_or(Cell::Null, |n| Cell::Int(n.into())),
                        Cell::Int(ty.precision.into()),
                        Cell::Int(ty.scale.into()),
                        opt_text(ty.collation_name.as_deref()),
                        Cell::Bit(ty.is_nullable),
                    ]
                })
                .collect(),
        },
        tds::ResultSet {
            columns: vec![
                col("capture_instance", SqlType::NVarChar(128)),
                col("ddl_command", SqlType::NVarCharMax),
                col("ddl_lsn", SqlType::Binary(10)),
                col("ddl_time", SqlType::DateTime),
            ],
            rows: ddl
                .iter()
                .map(|d| {
                    vec![
                        Cell::Text(d.ci.into()),
                        Cell::Text(d.command.into()),
                        lsn_cell(d.lsn),
                        Cell::DateTime(d.time),
                    ]
                })
                .collect(),
        },
    ])
}

#[tokio::test]
async fn max_lsn_logs_in_and_sends_the_const_statement() {
    let server = FakeServer::start().await;
    server.on(
        sql::GET_MAX_LSN,
        Reply::rows(
            vec![col("max_lsn", SqlType::Binary(10))],
            vec![vec![lsn_cell(0x2A_0000_01F0_0003)]],
        ),
    );
    let mut session = session(&server).await;
    assert_eq!(
        session.max_lsn().await.unwrap().unwrap().to_string(),
        "0x0000002A000001F00003"
    );
    let logins = server.logins();
    assert_eq!(logins.len(), 1);
    assert_eq!(logins[0].user, "copier");
    assert_eq!(logins[0].database, "cdcdb");
    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    assert!(requests[0].rpc, "statements go through sp_executesql");
    assert_eq!(requests[0].sql, sql::GET_MAX_LSN);
    assert!(requests[0].params.is_empty());
}

#[tokio::test]
async fn capture_instance_picks_the_newest_or_the_wanted_one() {
    let server = FakeServer::start().await;
    server.on(
        sql::CAPTURE_INSTANCES,
        capture_instances_reply(
            &[
                ("dbo_customers_v2", true, 500),
                ("dbo_customers", true, 100),
            ],
            &[
                ("dbo_customers", "customer_id"),
                ("dbo_customers_v2", "region"),
                ("dbo_customers_v2", "customer_id"),
            ],
        ),
    );
    let mut session = session(&server).await;
    let newest = session
        .capture_instance(&table("dbo", "customers"), None)
        .await
        .unwrap();
    assert_eq!(
        newest,
        CaptureInstance {
            table: table("dbo", "customers"),
            name: "dbo_customers_v2".into(),
            supports_net_changes: true,
            min_lsn: lsn(500),
            start_lsn: Some(lsn(500)),
            key_columns: vec![
                KeyColumn::new("region", KeyType::Int),
                KeyColumn::new("customer_id", KeyType::Int)
            ],
            columns: columns_of(
                &["region", "customer_id"],
                &["region", "customer_id", "name"]
            ),
            ddl: Vec::new(),
        }
    );
    let wanted = session
        .capture_instance(&table("dbo", "customers"), Some("dbo_customers"))
        .await
        .unwrap();
    assert_eq!(wanted.name, "dbo_customers");
    assert_eq!(wanted.min_lsn, lsn(100));
    assert_eq!(wanted.key_names(), vec!["customer_id".to_string()]);
    assert_eq!(wanted.column_names(), vec!["customer_id", "name"]);

    let requests = server.requests();
    assert_eq!(requests.len(), 2, "one round trip each");
    for request in &requests {
        assert_eq!(request.sql, sql::CAPTURE_INSTANCES);
        assert_eq!(param_types(request), vec!["nvarchar"]);
        assert_eq!(
            param_values(request),
            vec![ParamValue::Text("[dbo].[customers]".into())]
        );
        assert_eq!(request.declared, "@P1 nvarchar(4000)");
    }
}

#[tokio::test]
async fn unknown_capture_instance_is_refused_and_no_net_changes_are_read() {
    let server = FakeServer::start().await;
    server.on(
        sql::CAPTURE_INSTANCES,
        capture_instances_reply(
            &[("dbo_customers", true, 100)],
            &[("dbo_customers", "customer_id")],
        ),
    );
    server.on_prefix(
        "SELECT COUNT_BIG",
        Reply::error(50000, "must not be called"),
    );
    server.on_prefix(
        "SELECT [__$start_lsn]",
        Reply::error(50000, "must not be called"),
    );
    let mut session = session(&server).await;
    let wanted = "x]; DROP TABLE t;--";
    let result = session
        .capture_instance(&table("dbo", "customers"), Some(wanted))
        .await;
    match result {
        Err(CdcError::NoCaptureInstance {
            table: t,
            wanted: w,
        }) => {
            assert_eq!(t, table("dbo", "customers"));
            assert_eq!(w.as_deref(), Some(wanted));
        }
        other => panic!("expected NoCaptureInstance, got {other:?}"),
    }
    // A table without any capture instance: the lookup returns no row.
    server.on(sql::CAPTURE_INSTANCES, capture_instances_reply(&[], &[]));
    let err = session
        .capture_instance(&table("dbo", "orders"), None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, CdcError::NoCaptureInstance { wanted: None, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("sys.sp_cdc_enable_table"));

    // Even a hand-made CaptureInstance with a hostile name never reaches the server.
    let hostile = CaptureInstance {
        name: wanted.into(),
        ..customers_ci()
    };
    let mut sink = VecSink::default();
    assert!(session
        .net_changes(&hostile, range(lsn(1), lsn(2)), RowFilter::All, &mut sink)
        .await
        .is_err());

    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    assert!(requests.iter().all(|r| r.sql == sql::CAPTURE_INSTANCES));
}

/// Issue 10: every instance of the table, oldest first, each with its own columns, key and the
/// DDL `cdc.ddl_history` recorded against it (result set 4, rows of other instances ignored).
#[tokio::test]
async fn capture_instances_lists_both_instances_oldest_first_with_their_ddl() {
    let server = FakeServer::start().await;
    let at = |h: u32, m: u32| {
        NaiveDate::from_ymd_opt(2024, 3, 1)
            .unwrap()
            .and_hms_opt(h, m, 0)
            .unwrap()
    };
    let alter = "ALTER TABLE dbo.customers ADD [Loyalty Tier] nvarchar(20) NULL";
    let widen = "ALTER TABLE dbo.customers ALTER COLUMN name nvarchar(200) NULL";
    let mut captured = captured(
        "dbo_customers_v2",
        &[
            ("customer_id", false),
            ("name", false),
            ("Loyalty Tier", false),
        ],
    );
    captured.extend(self::captured(
        "dbo_customers",
        &[("customer_id", false), ("name", false)],
    ));
    server.on(
        sql::CAPTURE_INSTANCES,
        capture_reply_with_ddl(
            "customers",
            // As the statement orders them: newest first.
            &[
                ("dbo_customers_v2", true, 500, Some(500)),
                ("dbo_customers", true, 100, Some(100)),
            ],
            None,
            &[
                int_key("dbo_customers", "customer_id"),
                int_key("dbo_customers_v2", "customer_id"),
            ],
            &captured,
            &[
                DdlRow {
                    ci: "dbo_customers",
                    command: alter,
                    lsn: 300,
                    time: at(9, 30),
                },
                DdlRow {
                    ci: "dbo_customers",
                    command: widen,
                    lsn: 700,
                    time: at(11, 0),
                },
                DdlRow {
                    ci: "dbo_customers_v2",
                    command: widen,
                    lsn: 700,
                    time: at(11, 0),
                },
            ],
        ),
    );
    let mut session = session(&server).await;
    let instances = session
        .capture_instances(&table("dbo", "customers"))
        .await
        .unwrap();
    let event = |command: &str, lsn_value: u128, time| DdlEvent {
        command: command.to_string(),
        lsn: lsn(lsn_value),
        time,
    };
    assert_eq!(
        instances,
        vec![
            CaptureInstance {
                ddl: vec![event(alter, 300, at(9, 30)), event(widen, 700, at(11, 0))],
                ..customers_ci()
            },
            CaptureInstance {
                name: "dbo_customers_v2".into(),
                min_lsn: lsn(500),
                start_lsn: Some(lsn(500)),
                columns: columns_of(&["customer_id"], &["customer_id", "name", "Loyalty Tier"]),
                ddl: vec![event(widen, 700, at(11, 0))],
                ..customers_ci()
            },
        ]
    );
    let requests = server.requests();
    assert_eq!(requests.len(), 1, "one round trip for every instance");
    assert!(requests[0].rpc);
    assert_eq!(requests[0].sql, sql::CAPTURE_INSTANCES);
    assert_eq!(
        param_values(&requests[0]),
        vec![ParamValue::Text("[dbo].[customers]".into())]
    );
}

/// A table without a primary key or unique index, enabled with `@supports_net_changes = 0`:
/// result set 2 has no row for it. The session returns it with empty `key_columns` (the jobs
/// read it with all changes; `NoNetChanges` is theirs to raise when `:net` is forced), and an
/// empty result set 4 — what the `BEGIN CATCH` branch answers without SELECT on
/// `cdc.ddl_history` — is no DDL.
#[tokio::test]
async fn an_instance_without_net_changes_or_key_is_returned_with_empty_key_columns() {
    let server = FakeServer::start().await;
    server.on(
        sql::CAPTURE_INSTANCES,
        capture_reply_with_ddl(
            "audit_log",
            &[("dbo_audit_log", false, 100, Some(100))],
            None,
            &[],
            &captured("dbo_audit_log", &[("event", false), ("Order Date", false)]),
            &[],
        ),
    );
    let mut session = session(&server).await;
    let instances = session
        .capture_instances(&table("dbo", "audit_log"))
        .await
        .unwrap();
    assert_eq!(instances, vec![audit_log_ci()]);
    assert!(sql::CAPTURE_INSTANCES.contains(
        "BEGIN CATCH\n    SELECT CAST(NULL AS sysname) AS capture_instance, CAST(NULL AS nvarchar(max)) AS ddl_command,\n           CAST(NULL AS binary(10)) AS ddl_lsn, CAST(NULL AS datetime) AS ddl_time\n    WHERE 1 = 0;\nEND CATCH;"
    ), "the CATCH branch answers the same columns and no row");
}

#[tokio::test]
async fn capture_progress_converts_times_and_reads_nulls() {
    let server = FakeServer::start().await;
    let plus2 = FixedOffset::east_opt(2 * 3600).unwrap();
    let local_max = plus2.with_ymd_and_hms(2024, 5, 1, 14, 0, 5).unwrap();
    let columns = || {
        vec![
            col("max_lsn", SqlType::Binary(10)),
            col("max_lsn_time", SqlType::DateTimeOffset),
            col("lsn_at", SqlType::Binary(10)),
            col("server_utc_offset_minutes", SqlType::Int),
            col("drained_since", SqlType::DateTimeOffset),
            col("newest_scan_session_id", SqlType::Int),
            col("newest_scan_empty_scans", SqlType::Int),
            col("server_now", SqlType::DateTimeOffset),
        ]
    };
    let local_scan = plus2.with_ymd_and_hms(2024, 5, 1, 14, 0, 3).unwrap();
    let local_now = plus2.with_ymd_and_hms(2024, 5, 1, 14, 0, 7).unwrap();
    server.on(
        sql::CAPTURE_PROGRESS,
        Reply::rows(
            columns(),
            vec![vec![
                lsn_cell(900),
                Cell::DateTimeOffset(local_max),
                lsn_cell(880),
                Cell::Int(120),
                Cell::DateTimeOffset(local_scan),
                Cell::Int(17),
                Cell::Int(42),
                Cell::DateTimeOffset(local_now),
            ]],
        ),
    );
    let mut session = session(&server).await;
    let at = Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 0).unwrap();
    let progress = session.capture_progress(at).await.unwrap();
    assert_eq!(progress.max_lsn, lsn(900));
    assert_eq!(
        progress.max_lsn_time,
        Some(Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 5).unwrap())
    );
    assert_eq!(progress.lsn_at, Some(lsn(880)));
    assert_eq!(progress.server_utc_offset_minutes, 120);
    assert_eq!(
        progress.drained_since,
        Some(Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 3).unwrap()),
        "the scan's local start time, labelled with the server offset, read back as UTC"
    );
    assert_eq!(
        progress.newest_scan,
        Some(ScanMark {
            session_id: 17,
            empty_scans: 42
        })
    );
    assert_eq!(
        progress.server_now,
        Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 7).unwrap(),
        "the server's clock, read back as UTC"
    );

    let request = &server.requests()[0];
    assert_eq!(request.sql, sql::CAPTURE_PROGRESS);
    assert_eq!(param_types(request), vec!["datetimeoffset"]);
    assert_eq!(
        param_values(request),
        vec![ParamValue::DateTimeOffset(at.fixed_offset())],
        "the window end goes as a UTC datetimeoffset; SQL converts it to server time"
    );

    // No mapping yet, and the log scan sessions unknown (no permission, empty view): NULL.
    server.on(
        sql::CAPTURE_PROGRESS,
        Reply::rows(
            columns(),
            vec![vec![
                lsn_cell(900),
                Cell::Null,
                Cell::Null,
                Cell::Int(0),
                Cell::Null,
                Cell::Null,
                Cell::Null,
                Cell::DateTimeOffset(local_now),
            ]],
        ),
    );
    let progress = session.capture_progress(at).await.unwrap();
    assert_eq!(progress.max_lsn_time, None);
    assert_eq!(progress.lsn_at, None);
    assert_eq!(progress.drained_since, None);
    assert_eq!(progress.newest_scan, None);

    // The newest row has errors: its count is NULL, so there is no mark.
    server.on(
        sql::CAPTURE_PROGRESS,
        Reply::rows(
            columns(),
            vec![vec![
                lsn_cell(900),
                Cell::Null,
                Cell::Null,
                Cell::Int(0),
                Cell::Null,
                Cell::Int(18),
                Cell::Null,
                Cell::DateTimeOffset(local_now),
            ]],
        ),
    );
    let progress = session.capture_progress(at).await.unwrap();
    assert_eq!(progress.newest_scan, None, "an errored row is no mark");
}

#[tokio::test]
async fn net_changes_send_lsns_as_binary_and_the_row_filter_as_text() {
    let server = FakeServer::start().await;
    let statement = net_changes_sql(&customers_ci());
    server.on(&statement, Reply::rows(net_change_columns(), vec![]));
    let mut session = session(&server).await;
    let ci = customers_ci();
    for (filter, text) in [
        (RowFilter::All, "all"),
        (RowFilter::AllWithMerge, "all with merge"),
    ] {
        server.clear_requests();
        let mut sink = VecSink::default();
        let rows = session
            .net_changes(&ci, range(lsn(101), lsn(200)), filter, &mut sink)
            .await
            .unwrap();
        assert_eq!(rows, 0);
        assert!(sink.rows.is_empty());
        let requests = server.requests();
        assert_eq!(
            requests.len(),
            1,
            "one evaluation of the function, no count"
        );
        let request = &requests[0];
        assert_eq!(
            request.sql,
            "SELECT [__$start_lsn], [__$operation], [__$update_mask], [customer_id], [name] FROM cdc.[fn_cdc_get_net_changes_dbo_customers](@P1, @P2, @P3) ORDER BY [__$start_lsn], [customer_id];"
        );
        assert_eq!(
            request.declared,
            "@P1 varbinary(8000),@P2 varbinary(8000),@P3 nvarchar(4000)"
        );
        assert_eq!(
            param_values(request),
            vec![
                ParamValue::Bytes(lsn(101).0.to_vec()),
                ParamValue::Bytes(lsn(200).0.to_vec()),
                ParamValue::Text(text.into()),
            ]
        );
    }
    // An empty range (from > to, Msg 313 on the server) cannot even be built.
    assert!(LsnRange::new(lsn(201), lsn(200)).is_none());
}

fn net_change_columns() -> Vec<tds::Column> {
    vec![
        col("__$start_lsn", SqlType::Binary(10)),
        col("__$operation", SqlType::Int),
        col("__$update_mask", SqlType::VarBinary(128)),
        col("customer_id", SqlType::Int),
    ]
}

fn all_types_columns() -> Vec<tds::Column> {
    vec![
        col("__$start_lsn", SqlType::Binary(10)),
        col("__$operation", SqlType::Int),
        col("__$update_mask", SqlType::VarBinary(128)),
        col("customer_id", SqlType::Int),
        col("first_name", SqlType::VarChar(50)),
        col("city", SqlType::NVarChar(50)),
        col("notes", SqlType::NVarCharMax),
        col("visits", SqlType::BigInt),
        col("active", SqlType::Bit),
        col("balance", SqlType::Decimal(18, 4)),
        col("price", SqlType::Money),
        col("score", SqlType::Float),
        col("created", SqlType::DateTime),
        col("modified", SqlType::DateTime2),
        col("seen", SqlType::DateTimeOffset),
        col("row_guid", SqlType::Guid),
        col("birthday", SqlType::Date),
        col("opens_at", SqlType::Time7),
    ]
}

#[tokio::test]
async fn net_changes_stream_every_type_and_null() {
    let server = FakeServer::start().await;
    let all_types = CaptureInstance {
        columns: all_types_columns()
            .iter()
            .skip(3)
            .map(tds::Column::desc)
            .collect(),
        ..customers_ci()
    };
    let statement = net_changes_sql(&all_types);
    let created = NaiveDate::from_ymd_opt(2024, 5, 1)
        .unwrap()
        .and_hms_milli_opt(10, 11, 12, 340)
        .unwrap();
    let modified =
        NaiveDateTime::parse_from_str("2024-05-01 10:11:12.1234567", "%Y-%m-%d %H:%M:%S%.f")
            .unwrap();
    let plus530 = FixedOffset::east_opt(5 * 3600 + 1800).unwrap();
    let seen: DateTime<FixedOffset> = modified.and_local_timezone(plus530).unwrap();
    let guid = uuid::Uuid::parse_str("6f9619ff-8b86-d011-b42d-00c04fc964ff").unwrap();
    let long_notes = "ab€".repeat(3000); // > one packet, several PLP chunks
    let birthday = NaiveDate::from_ymd_opt(1990, 12, 31).unwrap();
    let opens = chrono::NaiveTime::from_hms_nano_opt(8, 30, 0, 100).unwrap();
    let full = vec![
        lsn_cell(150),
        Cell::Int(2),
        Cell::Null,
        Cell::Int(1),
        Cell::Text("Chevy".into()),
        Cell::Text("Zoë's town".into()),
        Cell::Text(long_notes.clone()),
        Cell::Int(9_000_000_000),
        Cell::Bit(true),
        Cell::Decimal(-123_456_789),
        Cell::Money(12_345_678),
        Cell::Float(0.5),
        Cell::DateTime(created),
        Cell::DateTime(modified),
        Cell::DateTimeOffset(seen),
        Cell::Guid(guid),
        Cell::Date(birthday),
        Cell::Time(opens),
    ];
    let mut nulls = vec![
        lsn_cell(160),
        Cell::Int(1),
        Cell::Bytes(vec![0x0F]),
        Cell::Int(2),
    ];
    nulls.extend(std::iter::repeat_n(Cell::Null, 14));
    server.on(
        &statement,
        Reply::rows(all_types_columns(), vec![full, nulls]),
    );

    let mut session = session(&server).await;
    let mut sink = VecSink::default();
    let sent = session
        .net_changes(
            &all_types,
            range(lsn(101), lsn(200)),
            RowFilter::All,
            &mut sink,
        )
        .await
        .unwrap();
    assert_eq!(sent, 2);
    let names: Vec<String> = all_types_columns().into_iter().map(|c| c.name).collect();
    assert_eq!(sink.columns, names);
    assert_eq!(
        sink.rows[0],
        vec![
            Value::Binary(lsn(150).0.to_vec()),
            Value::Int(2),
            Value::Null,
            Value::Int(1),
            Value::Text("Chevy".into()),
            Value::Text("Zoë's town".into()),
            Value::Text(long_notes),
            Value::Int(9_000_000_000),
            Value::Bit(true),
            Value::Decimal {
                unscaled: -123_456_789,
                scale: 4
            },
            Value::Decimal {
                unscaled: 12_345_678,
                scale: 4
            },
            Value::Float(0.5),
            Value::DateTime(created),
            Value::DateTime(modified),
            Value::DateTimeOffset(seen),
            Value::Guid(guid),
            Value::Date(birthday),
            Value::Time(opens),
        ]
    );
    let mut expected_nulls = vec![
        Value::Binary(lsn(160).0.to_vec()),
        Value::Int(1),
        Value::Binary(vec![0x0F]),
        Value::Int(2),
    ];
    expected_nulls.extend(std::iter::repeat_n(Value::Null, 14));
    assert_eq!(sink.rows[1], expected_nulls);

    let request = &server.requests()[0];
    assert_eq!(
        request.sql,
        "SELECT [__$start_lsn], [__$operation], [__$update_mask], [customer_id], [first_name], \
         [city], [notes], [visits], [active], [balance], [price], [score], [created], [modified], \
         [seen], [row_guid], [birthday], [opens_at] \
         FROM cdc.[fn_cdc_get_net_changes_dbo_customers](@P1, @P2, @P3) \
         ORDER BY [__$start_lsn], [customer_id];"
    );
    assert_eq!(
        param_types(request),
        vec!["bigvarbinary", "bigvarbinary", "nvarchar"]
    );
}

/// Which change function a read goes through.
#[derive(Clone, Copy, Debug)]
enum Changes {
    Net,
    All,
}

impl Changes {
    /// The instance read (customers with a key, or the keyless audit log) and its statement.
    fn instance(self) -> (CaptureInstance, String) {
        match self {
            Changes::Net => (customers_ci(), net_changes_sql(&customers_ci())),
            Changes::All => {
                let ci = audit_log_ci();
                let statement = sql::all_changes(&ci.name, &ci.columns).unwrap();
                (ci, statement)
            }
        }
    }

    async fn read(
        self,
        session: &mut dyn CdcSession,
        ci: &CaptureInstance,
        range: LsnRange,
    ) -> Result<u64, CdcError> {
        let mut sink = VecSink::default();
        match self {
            Changes::Net => {
                session
                    .net_changes(ci, range, RowFilter::All, &mut sink)
                    .await
            }
            Changes::All => {
                session
                    .all_changes(ci, range, AllRowFilter::AllUpdateOld, &mut sink)
                    .await
            }
        }
    }
}

/// Msg 313 from a change function (net changes, or all changes of a keyless table) for a range
/// that starts below the instance's min LSN is the cleanup error; otherwise the range is said
/// to be invalid.
#[tokio::test]
async fn msg_313_becomes_a_clear_error() {
    for changes in [Changes::Net, Changes::All] {
        let server = FakeServer::start().await;
        let (ci, statement) = changes.instance();
        server.on(
            &statement,
            Reply::error(
                313,
                "An insufficient number of arguments were supplied for the procedure or function cdc.fn_cdc_get_..._changes_ ... .",
            ),
        );
        let mut session = session(&server).await;
        // Below the instance's min LSN: the changes were cleaned up.
        let err = changes
            .read(&mut *session, &ci, range(lsn(50), lsn(200)))
            .await
            .unwrap_err();
        match &err {
            CdcError::LsnNotAvailable {
                table,
                capture_instance,
                requested,
                minimum,
            } => {
                assert_eq!(
                    (table, capture_instance),
                    (&ci.table, &ci.name),
                    "{changes:?}"
                );
                assert_eq!((*requested, *minimum), (lsn(50), lsn(100)), "{changes:?}");
            }
            other => panic!("{changes:?}: expected LsnNotAvailable, got {other:?}"),
        }
        assert!(!err.is_transient());
        // Otherwise: the range is invalid, said plainly.
        let err = changes
            .read(&mut *session, &ci, range(lsn(150), lsn(200)))
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                CdcError::Sql {
                    number: 313,
                    transient: false,
                    ..
                }
            ),
            "{changes:?}: {err:?}"
        );
        assert!(err.to_string().contains("validity interval"), "{err}");
        assert!(server.requests().iter().all(|r| r.rpc), "{changes:?}");
        // The session is still usable afterwards.
        server.on(
            sql::GET_MAX_LSN,
            Reply::rows(
                vec![col("max_lsn", SqlType::Binary(10))],
                vec![vec![lsn_cell(7)]],
            ),
        );
        assert_eq!(session.max_lsn().await.unwrap(), Some(lsn(7)));
    }
}

fn all_change_columns() -> Vec<tds::Column> {
    vec![
        col("__$start_lsn", SqlType::Binary(10)),
        col("__$seqval", SqlType::Binary(10)),
        col("__$operation", SqlType::Int),
        col("__$update_mask", SqlType::VarBinary(128)),
        col("event", SqlType::NVarChar(50)),
        col("Order Date", SqlType::Date),
    ]
}

/// Issue 10: a keyless table's changes come from `cdc.fn_cdc_get_all_changes_<ci>`, sent as
/// `sp_executesql` with the LSNs as binary and the row filter as nvarchar, and streamed with
/// `__$seqval`: an update under `all update old` is its before-image (3) then its after-image
/// (4), sharing one seqval.
#[tokio::test]
async fn all_changes_send_the_range_and_row_filter_and_stream_seqval() {
    let server = FakeServer::start().await;
    let ci = audit_log_ci();
    let statement = sql::all_changes(&ci.name, &ci.columns).unwrap();
    let day = NaiveDate::from_ymd_opt(2024, 5, 1).unwrap();
    let seq = |n: u128| Cell::Bytes(lsn(n).0.to_vec());
    let row = |op: i64, seqval: u128, event: &str| {
        vec![
            lsn_cell(150),
            seq(seqval),
            Cell::Int(op),
            Cell::Bytes(vec![0x01]),
            Cell::Text(event.into()),
            Cell::Date(day),
        ]
    };
    server.on(
        &statement,
        Reply::rows(
            all_change_columns(),
            vec![row(2, 7, "login"), row(3, 8, "login"), row(4, 8, "logout")],
        ),
    );
    let mut session = session(&server).await;
    for (filter, text) in [
        (AllRowFilter::AllUpdateOld, "all update old"),
        (AllRowFilter::All, "all"),
    ] {
        server.clear_requests();
        let mut sink = VecSink::default();
        let sent = session
            .all_changes(&ci, range(lsn(101), lsn(200)), filter, &mut sink)
            .await
            .unwrap();
        assert_eq!(sent, 3);
        let names: Vec<String> = all_change_columns().into_iter().map(|c| c.name).collect();
        assert_eq!(sink.columns, names);
        let ops: Vec<(Value, Value)> = sink
            .rows
            .iter()
            .map(|r| (r[1].clone(), r[2].clone()))
            .collect();
        assert_eq!(
            ops,
            vec![
                (Value::Binary(lsn(7).0.to_vec()), Value::Int(2)),
                (Value::Binary(lsn(8).0.to_vec()), Value::Int(3)),
                (Value::Binary(lsn(8).0.to_vec()), Value::Int(4)),
            ]
        );
        assert_eq!(sink.rows[2][5], Value::Date(day));
        let requests = server.requests();
        assert_eq!(requests.len(), 1);
        let request = &requests[0];
        assert!(
            request.rpc,
            "a parameterised statement goes through sp_executesql"
        );
        assert_eq!(
            request.sql,
            "SELECT [__$start_lsn], [__$seqval], [__$operation], [__$update_mask], [event], \
             [Order Date] FROM cdc.[fn_cdc_get_all_changes_dbo_audit_log](@P1, @P2, @P3) \
             ORDER BY [__$start_lsn], [__$seqval], [__$operation];"
        );
        assert_eq!(request.sql, statement);
        assert_eq!(
            request.declared,
            "@P1 varbinary(8000),@P2 varbinary(8000),@P3 nvarchar(4000)"
        );
        assert_eq!(
            param_types(request),
            vec!["bigvarbinary", "bigvarbinary", "nvarchar"]
        );
        assert_eq!(
            param_values(request),
            vec![
                ParamValue::Bytes(lsn(101).0.to_vec()),
                ParamValue::Bytes(lsn(200).0.to_vec()),
                ParamValue::Text(text.into()),
            ]
        );
    }
}

/// Issue 10: the full load of a keyless table is one SQL batch (no parameters) that begins a
/// transaction and reads the table under a shared table lock. The fake answers BEGIN with a
/// transaction descriptor and refuses a later request without it (Msg 3989), so this also
/// shows tiberius keeping the transaction: the RPC after the scan carries the descriptor,
/// `release_lock` commits it in a batch, and the request after that is in autocommit again.
#[tokio::test]
async fn scan_locked_is_a_batch_whose_transaction_lasts_until_release_lock() {
    let server = FakeServer::start().await;
    let ci = audit_log_ci();
    let statement = sql::scan_locked(&ci.table, &ci.columns).unwrap();
    let day = NaiveDate::from_ymd_opt(2024, 5, 1).unwrap();
    let row = |event: &str| vec![Cell::Text(event.into()), Cell::Date(day)];
    server.on(
        &statement,
        Reply::rows(
            vec![
                col("event", SqlType::NVarChar(50)),
                col("Order Date", SqlType::Date),
            ],
            // Duplicate rows: a table without a key may hold them.
            vec![row("login"), row("login"), row("logout")],
        ),
    );
    server.on(
        sql::RELEASE_LOCK,
        Reply::rows(
            vec![col("open_transactions", SqlType::Int)],
            vec![vec![Cell::Int(1)]],
        ),
    );
    server.on(
        sql::GET_MAX_LSN,
        Reply::rows(
            vec![col("max_lsn", SqlType::Binary(10))],
            vec![vec![lsn_cell(900)]],
        ),
    );
    let mut session = session(&server).await;
    let mut sink = VecSink::default();
    assert_eq!(session.scan_locked(&ci, &mut sink).await.unwrap(), 3);
    assert_eq!(sink.columns, vec!["event", "Order Date"]);
    assert_eq!(
        sink.rows,
        vec![
            vec![Value::Text("login".into()), Value::Date(day)],
            vec![Value::Text("login".into()), Value::Date(day)],
            vec![Value::Text("logout".into()), Value::Date(day)],
        ]
    );
    // The baseline is read inside the scan's transaction, then the lock is released.
    assert_eq!(session.max_lsn().await.unwrap(), Some(lsn(900)));
    session.release_lock().await.unwrap();
    assert_eq!(session.max_lsn().await.unwrap(), Some(lsn(900)));

    let requests = server.requests();
    assert_eq!(requests.len(), 4);
    let scan = &requests[0];
    assert!(
        !scan.rpc,
        "a SQL batch, not sp_executesql (which would end with Msg 266)"
    );
    assert_eq!(scan.sql, statement);
    assert_eq!(
        scan.sql,
        "SET XACT_ABORT ON;\nBEGIN TRANSACTION;\n\
         SELECT [event], [Order Date] FROM [dbo].[audit_log] WITH (TABLOCK, HOLDLOCK);\n\
         SET XACT_ABORT OFF;"
    );
    assert!(scan.params.is_empty() && scan.declared.is_empty());
    assert_eq!(
        scan.transaction, [0; 8],
        "the scan starts in autocommit mode"
    );
    let inside = requests[1].transaction;
    assert!(requests[1].rpc);
    assert_ne!(
        inside, [0; 8],
        "the baseline read runs inside the scan's transaction"
    );
    let release = &requests[2];
    assert!(!release.rpc, "the commit is a batch too");
    assert_eq!(release.sql, sql::RELEASE_LOCK);
    assert_eq!(release.transaction, inside);
    assert_eq!(
        requests[3].transaction, [0; 8],
        "committed: autocommit again"
    );
}

/// The rule that makes `scan_locked` a batch: inside `sp_executesql` (a procedure) a
/// transaction that outlives the statement ends it with Msg 266, and the next request
/// must carry the transaction's descriptor.
#[tokio::test]
async fn a_transaction_begun_inside_sp_executesql_ends_with_msg_266() {
    use tokio_util::compat::TokioAsyncWriteCompatExt;
    let server = FakeServer::start().await;
    let ci = audit_log_ci();
    let statement = sql::scan_locked(&ci.table, &ci.columns).unwrap();
    server.on(
        &statement,
        Reply::rows(vec![col("event", SqlType::NVarChar(50))], vec![]),
    );
    let config = server.config();
    let tcp = tokio::net::TcpStream::connect(config.get_addr())
        .await
        .unwrap();
    let mut client = tiberius::Client::connect(config, tcp.compat_write())
        .await
        .unwrap();
    let outcome = async {
        client
            .query(statement.as_str(), &[])
            .await?
            .into_results()
            .await
    }
    .await;
    let err = outcome.expect_err("BEGIN TRANSACTION without COMMIT inside sp_executesql");
    assert_eq!(err.code(), Some(266), "{err}");
}

#[tokio::test]
async fn deadlock_and_throttling_are_transient_permission_is_not() {
    let server = FakeServer::start().await;
    let mut session = session(&server).await;
    for (number, transient) in [(1205, true), (40501, true), (40613, true), (229, false)] {
        server.on(sql::GET_MAX_LSN, Reply::error(number, "server says no"));
        let err = session.max_lsn().await.unwrap_err();
        match &err {
            CdcError::Sql {
                number: n,
                transient: t,
                ..
            } => {
                assert_eq!((*n, *t), (number, transient));
            }
            other => panic!("expected Sql, got {other:?}"),
        }
        assert_eq!(err.is_transient(), transient);
        if number == 229 {
            assert!(err.to_string().contains("permission"), "{err}");
        }
    }
}

fn ci_as() -> Collation {
    Collation::parse("SQL_Latin1_General_CP1_CI_AS").unwrap()
}

/// The scan selects the captured columns by name and casts every keyset parameter to its key
/// column's declared type and collation; the parameters go as the TDS types tiberius binds.
#[tokio::test]
async fn scan_pages_by_key_and_returns_the_last_key() {
    let server = FakeServer::start().await;
    let ci = CaptureInstance {
        key_columns: vec![
            KeyColumn::new(
                "region",
                KeyType::VarChar {
                    length: 10,
                    collation: ci_as(),
                },
            ),
            KeyColumn::new("created", KeyType::DateTime),
            KeyColumn::new("customer_id", KeyType::Int),
        ],
        columns: columns_of(&[], &["customer_id", "region", "created", "email"]),
        ..customers_ci()
    };
    let first = sql::scan(&ci.table, &ci.key_columns, &ci.columns, false, false).unwrap();
    let next = sql::scan(&ci.table, &ci.key_columns, &ci.columns, true, false).unwrap();
    let columns = vec![
        col("customer_id", SqlType::Int),
        col("region", SqlType::VarChar(10)),
        col("created", SqlType::DateTime),
        col("email", SqlType::VarChar(100)),
    ];
    let at = |ms: u32| {
        NaiveDate::from_ymd_opt(2024, 1, 1)
            .unwrap()
            .and_hms_milli_opt(0, 0, 0, ms)
            .unwrap()
    };
    server.on(
        &first,
        Reply::rows(
            columns.clone(),
            vec![
                vec![
                    Cell::Int(1),
                    Cell::Text("co-op".into()),
                    Cell::DateTime(at(3)),
                    Cell::Text("a@x".into()),
                ],
                vec![
                    Cell::Int(3),
                    Cell::Text("eu".into()),
                    Cell::DateTime(at(7)),
                    Cell::Null,
                ],
            ],
        ),
    );
    server.on(&next, Reply::rows(columns, vec![]));
    let mut session = session(&server).await;
    let mut sink = VecSink::default();
    let (rows, last) = session.scan(&ci, None, None, 2, &mut sink).await.unwrap();
    assert_eq!(rows, 2);
    let last_key = last.clone().unwrap();
    assert_eq!(last_key[0], Value::Text("eu".into()));
    assert_eq!(last_key[2], Value::Int(3));
    let (rows, last) = session
        .scan(&ci, last.as_deref(), None, 2, &mut sink)
        .await
        .unwrap();
    assert_eq!((rows, last), (0, None));
    assert_eq!(
        sink.columns,
        vec!["customer_id", "region", "created", "email"]
    );

    let requests = server.requests();
    assert_eq!(
        requests[0].sql,
        "SELECT TOP (@P1) [customer_id], [region], [created], [email] FROM [dbo].[customers] \
         ORDER BY [region], [created], [customer_id];"
    );
    assert_eq!(param_values(&requests[0]), vec![ParamValue::Int(2)]);
    assert_eq!(param_types(&requests[0]), vec!["intn(8)"]);
    let region = "CAST(@P2 COLLATE SQL_Latin1_General_CP1_CI_AS AS varchar(10))";
    let created = "CAST(@P3 AS datetime)";
    assert_eq!(
        requests[1].sql,
        format!(
            "SELECT TOP (@P1) [customer_id], [region], [created], [email] FROM [dbo].[customers] \
             WHERE [region] >= {region} AND ([region] > {region} OR ([region] = {region} AND \
             ([created] > {created} OR ([created] = {created} AND [customer_id] > CAST(@P4 AS int))))) \
             ORDER BY [region], [created], [customer_id];"
        )
    );
    assert_eq!(
        param_types(&requests[1]),
        vec!["intn(8)", "nvarchar", "datetime2", "intn(8)"]
    );
    let ParamValue::DateTime(sent) = &param_values(&requests[1])[2] else {
        panic!("created goes as a date and time");
    };
    // The datetime read back (tick 2 = .00666… s) goes as datetime2(7): CAST(… AS datetime)
    // on the server rounds it back to the same tick.
    assert_eq!(
        cdc_copy_testkit::model::to_sql_datetime(*sent),
        cdc_copy_testkit::model::to_sql_datetime(at(7))
    );
    assert_eq!(
        param_values(&requests[1])[..2],
        [ParamValue::Int(2), ParamValue::Text("eu".into())]
    );
}

/// A resume key that no longer fits the key's type is refused before anything is sent.
#[tokio::test]
async fn a_resume_key_of_the_wrong_type_is_refused() {
    let server = FakeServer::start().await;
    let mut session = session(&server).await;
    let mut sink = VecSink::default();
    let err = session
        .scan(
            &customers_ci(),
            Some(&[Value::Text("7".into())]),
            None,
            10,
            &mut sink,
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("customer_id"), "{err}");
    assert!(server.requests().is_empty());
}

fn sample_watermark() -> Watermark {
    let at = Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 0).unwrap();
    Watermark {
        table: table("dbo", "customers"),
        capture_instance: "dbo_customers".into(),
        last_lsn: lsn(200),
        last_window_end: at,
        state: TableState::Ready,
        rows_copied: 10,
        bytes_copied: 2048,
        version: 3,
        updated_at: at + chrono::Duration::nanoseconds(1_234_500),
    }
}

fn watermark_columns() -> Vec<tds::Column> {
    use SqlType::*;
    let types = [
        NVarChar(128),
        NVarChar(128),
        NVarChar(128),
        Binary(10),
        DateTime2,
        Binary(10),
        DateTime2,
        NVarChar(1024),
        VarChar(32),
        Binary(10),
        Int,
        NVarCharMax,
        BigInt,
        BigInt,
        BigInt,
        BigInt,
        DateTime2,
    ];
    sql::WATERMARK_COLUMNS
        .iter()
        .zip(types)
        .map(|(name, ty)| col(name, ty))
        .collect()
}

fn watermark_cells(w: &Watermark) -> Vec<Cell> {
    let (pending, full) = match &w.state {
        TableState::Ready => (None, None),
        TableState::Pending(window) => (Some(window), None),
        TableState::Loading(progress) => (None, Some(progress)),
    };
    vec![
        Cell::Text(w.table.schema.clone()),
        Cell::Text(w.table.table.clone()),
        Cell::Text(w.capture_instance.clone()),
        Cell::Bytes(w.last_lsn.0.to_vec()),
        Cell::DateTime(w.last_window_end.naive_utc()),
        pending.map_or(Cell::Null, |p| Cell::Bytes(p.range.to().0.to_vec())),
        pending.map_or(Cell::Null, |p| Cell::DateTime(p.end.naive_utc())),
        pending.map_or(Cell::Null, |p| Cell::Text(p.blob.clone())),
        full.map_or(Cell::Null, |f| Cell::Text(f.load_id.clone())),
        full.map_or(Cell::Null, |f| Cell::Bytes(f.baseline_lsn.0.to_vec())),
        full.map_or(Cell::Null, |f| Cell::Int(f.parts_done.into())),
        full.and_then(|f| f.last_key.as_ref())
            .map_or(Cell::Null, |k| {
                Cell::Text(serde_json::to_string(k).unwrap())
            }),
        full.map_or(Cell::Null, |f| Cell::Int(f.rows_done as i64)),
        Cell::Int(w.rows_copied as i64),
        Cell::Int(w.bytes_copied as i64),
        Cell::Int(w.version),
        Cell::DateTime(w.updated_at.naive_utc()),
    ]
}

#[tokio::test]
async fn watermark_rows_round_trip() {
    let server = FakeServer::start().await;
    let read = sql::read_watermark(&watermark_table()).unwrap();
    let plain = sample_watermark();
    let pending = Watermark {
        state: TableState::Pending(Window {
            range: range(lsn(201), lsn(300)),
            start: plain.last_window_end,
            end: Utc.with_ymd_and_hms(2024, 5, 1, 12, 15, 0).unwrap(),
            blob: "dbo/customers/incremental/2024/05/01/20240501121500000.csv".into(),
        }),
        ..sample_watermark()
    };
    let loading = Watermark {
        state: TableState::Loading(FullLoadProgress {
            load_id: "20240501120000000".into(),
            baseline_lsn: lsn(190),
            parts_done: 2,
            last_key: Some(vec![Value::Int(99), Value::Text("eu".into())]),
            rows_done: 200_000,
        }),
        ..sample_watermark()
    };
    let mut session = session(&server).await;
    for row in [&plain, &pending, &loading] {
        server.on(
            &read,
            Reply::rows(watermark_columns(), vec![watermark_cells(row)]),
        );
        let got = session
            .read_watermark(&table("dbo", "customers"))
            .await
            .unwrap();
        assert_eq!(got.as_ref(), Some(row));
    }
    server.on(&read, Reply::rows(watermark_columns(), vec![]));
    assert_eq!(
        session
            .read_watermark(&table("dbo", "other"))
            .await
            .unwrap(),
        None
    );

    let requests = server.requests();
    assert_eq!(requests.len(), 4);
    assert!(requests[0]
        .sql
        .contains("FROM [cdc_copy].[watermark] WHERE schema_name = @P1 AND table_name = @P2;"));
    assert_eq!(
        param_values(&requests[3]),
        vec![
            ParamValue::Text("dbo".into()),
            ParamValue::Text("other".into())
        ]
    );
}

/// The table's CHECK constraints allow a row with both a pending window and a full load, or a
/// pending window that ends at or below `last_lsn`; the product never writes either, and reads
/// them as a protocol error instead of guessing which state holds.
#[tokio::test]
async fn impossible_watermark_rows_are_refused() {
    let server = FakeServer::start().await;
    let read = sql::read_watermark(&watermark_table()).unwrap();
    let plain = sample_watermark();
    let mut both = watermark_cells(&Watermark {
        state: TableState::Pending(Window {
            range: range(lsn(201), lsn(300)),
            start: plain.last_window_end,
            end: plain.last_window_end + chrono::Duration::minutes(15),
            blob: "dbo/customers/incremental/x.csv".into(),
        }),
        ..plain.clone()
    });
    let loading = watermark_cells(&Watermark {
        state: TableState::Loading(FullLoadProgress {
            load_id: "20240501120000000".into(),
            baseline_lsn: lsn(190),
            parts_done: 2,
            last_key: None,
            rows_done: 10,
        }),
        ..plain.clone()
    });
    // Columns 8 to 12 are the full-load ones (sql::WATERMARK_COLUMNS order).
    both[8..13].clone_from_slice(&loading[8..13]);
    let mut empty_window = watermark_cells(&plain);
    empty_window[5] = Cell::Bytes(lsn(200).0.to_vec()); // pending_to_lsn = last_lsn
    empty_window[6] = Cell::DateTime(plain.last_window_end.naive_utc());
    empty_window[7] = Cell::Text("dbo/customers/incremental/y.csv".into());
    let mut session = session(&server).await;
    for (cells, want) in [
        (both, "both a pending window and a full load"),
        (empty_window, "the pending window is empty"),
    ] {
        server.on(&read, Reply::rows(watermark_columns(), vec![cells]));
        let err = session
            .read_watermark(&table("dbo", "customers"))
            .await
            .unwrap_err();
        assert!(matches!(err, CdcError::Protocol(_)), "{err:?}");
        assert!(err.to_string().contains(want), "{err}");
    }
}

#[tokio::test]
async fn watermark_insert_and_conditional_update() {
    let server = FakeServer::start().await;
    let insert = sql::insert_watermark(&watermark_table()).unwrap();
    let update = sql::update_watermark(&watermark_table()).unwrap();
    let mut session = session(&server).await;
    let row = sample_watermark();

    for (reply, expected) in [
        (Reply::RowCount(1), true),
        (Reply::RowCount(0), false),
        (
            Reply::error(2627, "Violation of PRIMARY KEY constraint 'PK_watermark'."),
            false,
        ),
    ] {
        server.on(&insert, reply);
        assert_eq!(session.insert_watermark(&row).await.unwrap(), expected);
    }
    let sent = &server.requests()[0];
    assert_eq!(sent.sql, insert);
    assert_eq!(sent.params.len(), 17);
    assert_eq!(
        param_types(sent),
        vec![
            "nvarchar",
            "nvarchar",
            "nvarchar",
            "bigvarbinary",
            "datetime2",
            "null",
            "null",
            "null",
            "null",
            "null",
            "intn(4)",
            "null",
            "intn(8)",
            "intn(8)",
            "intn(8)",
            "intn(8)",
            "datetime2",
        ]
    );
    assert_eq!(
        sent.declared,
        "@P1 nvarchar(4000),@P2 nvarchar(4000),@P3 nvarchar(4000),@P4 varbinary(8000),\
         @P5 datetime2,@P6 varbinary(max),@P7 datetime2,@P8 nvarchar(4000),@P9 nvarchar(4000),\
         @P10 varbinary(max),@P11 int,@P12 nvarchar(4000),@P13 bigint,@P14 bigint,@P15 bigint,\
         @P16 bigint,@P17 datetime2"
    );
    assert_eq!(
        sent.params[4].value,
        ParamValue::DateTime(row.last_window_end.naive_utc())
    );
    assert_eq!(
        sent.params[16].value,
        ParamValue::DateTime(row.updated_at.naive_utc())
    );

    server.clear_requests();
    let next = Watermark {
        version: 4,
        last_lsn: lsn(250),
        state: TableState::Loading(FullLoadProgress {
            load_id: "20240501120000000".into(),
            baseline_lsn: lsn(190),
            parts_done: 7,
            // A long key: the request spans several packets and goes as nvarchar(max).
            last_key: Some(vec![Value::Text("k".repeat(6000))]),
            rows_done: 7,
        }),
        ..row
    };
    server.on(&update, Reply::RowCount(1));
    assert!(session.update_watermark(3, &next).await.unwrap());
    server.on(&update, Reply::RowCount(0));
    assert!(!session.update_watermark(3, &next).await.unwrap());
    let sent = &server.requests()[0];
    assert_eq!(sent.sql, update);
    assert_eq!(sent.params.len(), 18);
    assert_eq!(sent.params[15].value, ParamValue::Int(4), "new version");
    assert_eq!(
        sent.params[17].value,
        ParamValue::Int(3),
        "expected version"
    );
    assert_eq!(sent.params[11].tds_type, "nvarchar(max)");
    assert_eq!(
        sent.params[11].value,
        ParamValue::Text(serde_json::to_string(&vec![Value::Text("k".repeat(6000))]).unwrap())
    );
}

#[tokio::test]
async fn missing_watermark_table_is_named() {
    let server = FakeServer::start().await;
    server.on(
        &sql::read_watermark(&watermark_table()).unwrap(),
        Reply::error(208, "Invalid object name 'cdc_copy.watermark'."),
    );
    let mut session = session(&server).await;
    let err = session
        .read_watermark(&table("dbo", "customers"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, CdcError::NoWatermarkTable(ref name) if name == "cdc_copy.watermark"),
        "{err:?}"
    );
    assert!(err.to_string().contains("sql/setup.sql"));
}

/// A watermark table from an older `sql/setup.sql` lacks the columns this version writes: SQL
/// Server refuses the statement with Msg 207, and the copier says to re-run the script, which
/// migrates in place, instead of surfacing "Invalid column name" as an unexplained SQL error.
#[tokio::test]
async fn a_watermark_table_without_this_version_s_columns_names_the_migration() {
    let server = FakeServer::start().await;
    server.on(
        &sql::update_watermark(&watermark_table()).unwrap(),
        Reply::error(207, "Invalid column name 'last_error'."),
    );
    let mut session = session(&server).await;
    let err = session
        .update_watermark(3, &sample_watermark())
        .await
        .unwrap_err();
    assert!(
        matches!(err, CdcError::OutdatedWatermarkTable { ref table, ref message }
            if table == "cdc_copy.watermark" && message.contains("'last_error'")),
        "{err:?}"
    );
    assert!(!err.is_transient());
    assert!(err.to_string().contains("run sql/setup.sql again"), "{err}");
}

#[tokio::test]
async fn zero_change_run_costs_five_round_trips() {
    let server = FakeServer::start().await;
    server.on(
        sql::CAPTURE_INSTANCES,
        capture_instances_reply(
            &[("dbo_customers", true, 100)],
            &[("dbo_customers", "customer_id")],
        ),
    );
    let read = sql::read_watermark(&watermark_table()).unwrap();
    server.on(
        &read,
        Reply::rows(
            watermark_columns(),
            vec![watermark_cells(&sample_watermark())],
        ),
    );
    server.on(
        sql::CAPTURE_PROGRESS,
        Reply::rows(
            vec![
                col("max_lsn", SqlType::Binary(10)),
                col("max_lsn_time", SqlType::DateTimeOffset),
                col("lsn_at", SqlType::Binary(10)),
                col("server_utc_offset_minutes", SqlType::Int),
                col("drained_since", SqlType::DateTimeOffset),
                col("newest_scan_session_id", SqlType::Int),
                col("newest_scan_empty_scans", SqlType::Int),
                col("server_now", SqlType::DateTimeOffset),
            ],
            vec![vec![
                lsn_cell(400),
                Cell::DateTimeOffset(
                    Utc.with_ymd_and_hms(2024, 5, 1, 12, 16, 0)
                        .unwrap()
                        .fixed_offset(),
                ),
                lsn_cell(380),
                Cell::Int(0),
                Cell::Null,
                Cell::Null,
                Cell::Null,
                Cell::DateTimeOffset(
                    Utc.with_ymd_and_hms(2024, 5, 1, 12, 16, 1)
                        .unwrap()
                        .fixed_offset(),
                ),
            ]],
        ),
    );
    let net = net_changes_sql(&customers_ci());
    server.on(&net, Reply::rows(net_change_columns(), vec![]));
    server.on(
        &sql::update_watermark(&watermark_table()).unwrap(),
        Reply::RowCount(1),
    );

    // What the incremental job does when nothing changed.
    let mut session = session(&server).await;
    let t = table("dbo", "customers");
    let ci = session.capture_instance(&t, None).await.unwrap();
    let mark = session.read_watermark(&t).await.unwrap().unwrap();
    let window_end = Utc.with_ymd_and_hms(2024, 5, 1, 12, 15, 0).unwrap();
    let progress = session.capture_progress(window_end).await.unwrap();
    let from = mark.last_lsn.increment().unwrap();
    let to = progress.lsn_at.unwrap().min(progress.max_lsn);
    let mut sink = VecSink::default();
    let rows = session
        .net_changes(&ci, range(from, to), RowFilter::All, &mut sink)
        .await
        .unwrap();
    assert_eq!(rows, 0);
    let advanced = Watermark {
        last_lsn: to,
        last_window_end: window_end,
        version: mark.version + 1,
        ..mark.clone()
    };
    assert!(session
        .update_watermark(mark.version, &advanced)
        .await
        .unwrap());

    let sent: Vec<String> = server.requests().into_iter().map(|r| r.sql).collect();
    assert_eq!(
        sent,
        vec![
            sql::CAPTURE_INSTANCES.to_string(),
            read,
            sql::CAPTURE_PROGRESS.to_string(),
            net,
            sql::update_watermark(&watermark_table()).unwrap(),
        ]
    );
}

#[tokio::test]
async fn login_failures_are_typed_and_never_show_the_password() {
    let server = FakeServer::start().await;
    for (number, transient, message) in [
        (18456, false, "Login failed for user 'copier'."),
        // Transient on Azure SQL Database's list: a database moving between nodes says it.
        (
            4060,
            true,
            "Cannot open database \"cdcdb\" requested by the login. The login failed.",
        ),
        (
            40613,
            true,
            "Database 'cdcdb' on server 'x' is not currently available.",
        ),
    ] {
        server.set_login_reply(LoginReply::Error {
            number,
            message: message.into(),
        });
        let err = match source(&server).session().await {
            Err(e) => e,
            Ok(_) => panic!("login {number} should fail"),
        };
        assert!(
            matches!(&err, CdcError::Sql { number: n, .. } if *n == number),
            "{err:?}"
        );
        assert_eq!(err.is_transient(), transient, "{number}");
        let text = format!("{err} {err:?}");
        assert!(!text.contains("s3cret-pw"), "{text}");
        assert!(text.contains(message), "{text}");
    }
}

#[tokio::test]
async fn unreachable_server_is_a_transient_connection_error() {
    let server = FakeServer::start().await;
    let mut config = server.config();
    drop(server); // nothing listens on that port any more
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    config.port(1); // and certainly not here
    let err = match SqlServerSource::from_config(config, watermark_table())
        .session()
        .await
    {
        Err(e) => e,
        Ok(_) => panic!("connect should fail"),
    };
    assert!(matches!(err, CdcError::Connection { .. }), "{err:?}");
    assert!(err.is_transient());
}

#[tokio::test]
async fn gateway_redirect_is_followed() {
    let target = FakeServer::start().await;
    target.on(
        sql::GET_MAX_LSN,
        Reply::rows(
            vec![col("max_lsn", SqlType::Binary(10))],
            vec![vec![lsn_cell(5)]],
        ),
    );
    let gateway = FakeServer::start().await;
    gateway.set_login_reply(LoginReply::Route {
        host: "127.0.0.1".into(),
        port: target.port(),
    });
    let mut session = source(&gateway).session().await.unwrap();
    assert_eq!(session.max_lsn().await.unwrap(), Some(lsn(5)));
    assert_eq!(gateway.logins().len(), 1);
    assert_eq!(target.logins().len(), 1);
    assert!(gateway.requests().is_empty());
    assert_eq!(target.requests().len(), 1);
}

#[tokio::test]
async fn ado_connection_string_with_the_test_switch() {
    // The fake speaks no TLS: the plaintext permission (CDC_ALLOW_PLAINTEXT_SQL) exists for
    // test doubles like it, and is decided with the rest of the settings.
    let server = FakeServer::start().await;
    server.on(
        sql::GET_MAX_LSN,
        Reply::rows(
            vec![col("max_lsn", SqlType::Binary(10))],
            vec![vec![lsn_cell(9)]],
        ),
    );
    let connection_string = Secret::new(server.connection_string());
    let refused = SqlTarget::from_connection_string(&connection_string, false).unwrap_err();
    assert_eq!(refused.setting(), "CDC_SQL_CONNECTION_STRING");
    assert!(!refused.to_string().contains("s3cret-pw"), "{refused}");
    let target = SqlTarget::from_connection_string(&connection_string, true).unwrap();
    let source = SqlServerSource::new(&target, watermark_table()).unwrap();
    let debug = format!("{source:?}");
    assert!(!debug.contains("s3cret-pw"), "{debug}");
    let mut session = source.session().await.unwrap();
    assert_eq!(session.max_lsn().await.unwrap(), Some(lsn(9)));
    assert_eq!(server.logins()[0].database, "cdcdb");
}

#[tokio::test]
async fn sql_batches_are_recorded_and_answered() {
    use tokio_util::compat::TokioAsyncWriteCompatExt;
    let server = FakeServer::start().await;
    server.on(
        "SELECT 1 AS one;",
        Reply::rows(vec![col("one", SqlType::Int)], vec![vec![Cell::Int(1)]]),
    );
    let config = server.config();
    let tcp = tokio::net::TcpStream::connect(config.get_addr())
        .await
        .unwrap();
    let mut client = tiberius::Client::connect(config, tcp.compat_write())
        .await
        .unwrap();
    let rows = client
        .simple_query("SELECT 1 AS one;")
        .await
        .unwrap()
        .into_first_result()
        .await
        .unwrap();
    assert_eq!(rows[0].get::<i32, _>("one"), Some(1));
    // An unscripted statement is an error, so a test cannot pass by accident.
    let err = match client.simple_query("SELECT 2;").await {
        Err(e) => e,
        Ok(_) => panic!("unscripted statements fail"),
    };
    assert_eq!(err.code(), Some(50000));
    let requests = server.requests();
    assert!(!requests[0].rpc);
    assert_eq!(requests[0].sql, "SELECT 1 AS one;");
    assert_eq!(requests.len(), 2);
}

/// Counts rows and checks they arrive in key order, keeping nothing.
#[derive(Default)]
struct OrderSink {
    rows: u64,
    last_id: i64,
}

#[async_trait]
impl RowSink for OrderSink {
    async fn columns(&mut self, _: &[String]) -> Result<(), RowSinkError> {
        Ok(())
    }
    async fn row(&mut self, row: &[Value]) -> Result<(), RowSinkError> {
        let Value::Int(id) = row[3] else {
            panic!("customer_id is {:?}", row[3]);
        };
        assert!(id > self.last_id, "rows out of order");
        self.last_id = id;
        self.rows += 1;
        Ok(())
    }
}

#[tokio::test]
async fn many_rows_stream_through_in_order() {
    const ROWS: i64 = 100_000;
    let server = FakeServer::start().await;
    let statement = net_changes_sql(&customers_ci());
    let columns = vec![
        col("__$start_lsn", SqlType::Binary(10)),
        col("__$operation", SqlType::Int),
        col("__$update_mask", SqlType::VarBinary(128)),
        col("customer_id", SqlType::Int),
        col("city", SqlType::NVarChar(50)),
    ];
    let rows = (1..=ROWS)
        .map(|id| {
            vec![
                lsn_cell(150),
                Cell::Int(2),
                Cell::Null,
                Cell::Int(id),
                Cell::Text(format!("city {id}")),
            ]
        })
        .collect();
    server.on(&statement, Reply::rows(columns, rows));
    let mut session = session(&server).await;
    let mut sink = OrderSink::default();
    let started = std::time::Instant::now();
    let sent = session
        .net_changes(
            &customers_ci(),
            range(lsn(101), lsn(200)),
            RowFilter::All,
            &mut sink,
        )
        .await
        .unwrap();
    let elapsed = started.elapsed();
    assert_eq!(
        (sent, sink.rows, sink.last_id),
        (ROWS as u64, ROWS as u64, ROWS)
    );
    println!(
        "{ROWS} rows in {elapsed:?} ({:.0} rows/s, fake included)",
        ROWS as f64 / elapsed.as_secs_f64()
    );
}

/// Issue 9, item 3: right after `sys.sp_cdc_enable_table` SQL Server answers a NULL
/// `start_lsn` (and `fn_cdc_get_min_lsn` 0x00…, `fn_cdc_get_max_lsn()` NULL); the session
/// reports them as such, so the jobs can refuse the instance instead of baselining at zero.
#[tokio::test]
async fn a_capture_instance_not_yet_recognised_reads_as_null_start_lsn() {
    let server = FakeServer::start().await;
    server.on(
        sql::CAPTURE_INSTANCES,
        capture_instances_reply_started(
            &[("dbo_customers", true, 0, None)],
            &[("dbo_customers", "customer_id")],
        ),
    );
    server.on(
        sql::GET_MAX_LSN,
        Reply::rows(
            vec![col("max_lsn", SqlType::Binary(10))],
            vec![vec![Cell::Null]],
        ),
    );
    let mut session = session(&server).await;
    let ci = session
        .capture_instance(&table("dbo", "customers"), None)
        .await
        .unwrap();
    assert_eq!(ci.start_lsn, None);
    assert_eq!(ci.min_lsn, Lsn::ZERO);
    assert_eq!(
        session.max_lsn().await.unwrap(),
        None,
        "NULL is not an error here"
    );
    assert!(
        sql::CAPTURE_INSTANCES.contains("ct.start_lsn"),
        "the statement reads it"
    );

    // A start LSN but min LSN 0x00…: fn_cdc_get_min_lsn's way of saying "not for you".
    server.on(
        sql::CAPTURE_INSTANCES,
        capture_instances_reply_started(
            &[("dbo_customers", true, 0, Some(100))],
            &[("dbo_customers", "customer_id")],
        ),
    );
    let err = session
        .capture_instance(&table("dbo", "customers"), None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, CdcError::ChangeDataNotReadable { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("lacks permission"), "{err}");
}

/// The error of reading `customers_ci()`'s net changes over `[150, 400]`.
async fn refused_net_changes(session: &mut dyn CdcSession) -> CdcError {
    session
        .net_changes(
            &customers_ci(),
            range(lsn(150), lsn(400)),
            RowFilter::All,
            &mut VecSink::default(),
        )
        .await
        .unwrap_err()
}

/// Issue 9, item 6: the CDC functions refuse a range with Msg 208 (their own pages) or 313
/// ("Work with change data"); either way the session re-reads `sys.fn_cdc_get_min_lsn`, so a
/// cleanup that ran after the instance was looked up (min LSN 100 then, 300 now) gets the full
/// cleanup message with the fresh minimum, and 0x00… says the login may lack permission.
#[tokio::test]
async fn a_refused_range_is_explained_from_a_fresh_min_lsn() {
    let statement = net_changes_sql(&customers_ci());
    // (server error, fresh min LSN, what the run reports)
    let cases: &[(u32, Option<u128>, &str)] = &[
        (208, Some(300), "cleaned up"),
        (313, Some(300), "cleaned up"),
        (208, Some(120), "validity interval"),
        (313, Some(120), "validity interval"),
        (208, Some(0), "lacks permission"),
        (313, Some(0), "lacks permission"),
        (208, None, "validity interval"),
    ];
    for (number, fresh, says) in cases {
        let server = FakeServer::start().await;
        server.on(
            &statement,
            Reply::error(*number, "Invalid object name / insufficient arguments."),
        );
        if let Some(fresh) = fresh {
            server.on(
                sql::GET_MIN_LSN,
                Reply::rows(
                    vec![col("min_lsn", SqlType::Binary(10))],
                    vec![vec![lsn_cell(*fresh)]],
                ),
            );
        }
        let err = refused_net_changes(session(&server).await.as_mut()).await;
        let text = err.to_string();
        assert!(text.contains(says), "{number}, {fresh:?}: {text}");
        assert!(!err.is_transient(), "{number}, {fresh:?}");
        if *says == "cleaned up" {
            assert!(
                matches!(&err, CdcError::LsnNotAvailable { requested, minimum, .. }
                    if *requested == lsn(150) && *minimum == lsn(300)),
                "{err:?}"
            );
        }
        let requests = server.requests();
        assert_eq!(requests.len(), 2, "the statement, then the re-read");
        assert_eq!(requests[1].sql, sql::GET_MIN_LSN);
        assert_eq!(
            param_values(&requests[1]),
            vec![ParamValue::Text("dbo_customers".into())]
        );
        assert_eq!(param_types(&requests[1]), vec!["nvarchar"]);
    }
}

/// Issue 9, item 6: with NOCOUNT on at the server (`user options` 512) SQL Server sends no
/// row count; the watermark writes set NOCOUNT OFF in their own batch, so "1 row updated" still
/// arrives. Without it (the statement as it was) the update reads 0 rows: superseded forever.
#[tokio::test]
async fn watermark_writes_read_their_row_count_with_nocount_on_at_the_server() {
    let server = FakeServer::start().await;
    server.set_nocount_default(true);
    let update = sql::update_watermark(&watermark_table()).unwrap();
    let insert = sql::insert_watermark(&watermark_table()).unwrap();
    let without_set = update.trim_start_matches("SET NOCOUNT OFF;\n").to_string();
    for statement in [&update, &insert, &without_set] {
        server.on(statement, Reply::RowCount(1));
    }
    let mut session = session(&server).await;
    let row = sample_watermark();
    assert!(session
        .update_watermark(row.version - 1, &row)
        .await
        .unwrap());
    assert!(session.insert_watermark(&row).await.unwrap());

    // The rule the fake follows, on the statement without its SET: no count at all.
    assert_ne!(without_set, update);
    let mut client = tiberius::Client::connect(
        server.config(),
        tokio_util::compat::TokioAsyncWriteCompatExt::compat_write(
            tokio::net::TcpStream::connect(("127.0.0.1", server.port()))
                .await
                .unwrap(),
        ),
    )
    .await
    .unwrap();
    assert_eq!(
        client
            .execute(without_set.as_str(), &[])
            .await
            .unwrap()
            .total(),
        0
    );
    assert_eq!(
        client.execute(update.as_str(), &[]).await.unwrap().total(),
        1
    );
}

/// Issue 9, item 5: a statement the server never answers ends after the command timeout
/// (here 200 ms; tiberius's own timer, so this test waits for it) with an error naming the
/// statement and the setting, transient.
#[tokio::test]
async fn a_stalled_statement_names_itself_and_the_setting() {
    let server = FakeServer::start().await;
    let timeout =
        cdc_copy::config::CommandTimeout::new(std::time::Duration::from_millis(200)).unwrap();
    let statement = net_changes_sql(&customers_ci());
    server.on(&statement, Reply::Stall);
    server.on(
        &sql::update_watermark(&watermark_table()).unwrap(),
        Reply::Stall,
    );
    let source = source(&server).with_command_timeout(timeout);

    let err = refused_net_changes(source.session().await.unwrap().as_mut()).await;
    assert!(matches!(err, CdcError::CommandTimeout { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("net changes of dbo_customers"), "{text}");
    assert!(text.contains("CDC_SQL_COMMAND_TIMEOUT_SECONDS"), "{text}");
    assert!(text.contains("200ms"), "{text}");
    assert!(err.is_transient());

    let mut session = source.session().await.unwrap();
    let row = sample_watermark();
    let err = session
        .update_watermark(row.version - 1, &row)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("watermark update"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Keys and columns as the catalog declares them (issue 9, items 1, 2 and 4).

fn varchar_key(ci: &'static str, column: &'static str, length: i64) -> KeyRow {
    KeyRow {
        system_type: Some("varchar"),
        type_name: "varchar",
        max_length: length,
        precision: 0,
        scale: 0,
        collation: Some("SQL_Latin1_General_CP1_CI_AS"),
        ..int_key(ci, column)
    }
}

fn captured(ci: &str, columns: &[(&str, bool)]) -> Vec<(String, String, bool)> {
    columns
        .iter()
        .map(|(c, computed)| (ci.to_string(), c.to_string(), *computed))
        .collect()
}

/// Result set 2 carries each key column's declared type: alias types come back resolved to
/// their base system type, lengths in bytes (nvarchar: two per character).
#[tokio::test]
async fn capture_instance_reads_declared_key_types_and_captured_columns() {
    let server = FakeServer::start().await;
    let keys = vec![
        KeyRow {
            type_name: "region_code",
            ..varchar_key("dbo_customers", "region", 20)
        },
        KeyRow {
            system_type: Some("nvarchar"),
            type_name: "sysname",
            max_length: 256,
            collation: Some("Latin1_General_100_CI_AS_SC"),
            ..varchar_key("dbo_customers", "owner", 0)
        },
        KeyRow {
            system_type: Some("datetime2"),
            type_name: "datetime2",
            max_length: 8,
            precision: 27,
            scale: 7,
            ..int_key("dbo_customers", "created")
        },
        KeyRow {
            system_type: Some("decimal"),
            type_name: "decimal",
            max_length: 9,
            precision: 18,
            scale: 2,
            ..int_key("dbo_customers", "amount")
        },
    ];
    server.on(
        sql::CAPTURE_INSTANCES,
        capture_reply(
            &[("dbo_customers", true, 100)],
            Some("ux_customers"),
            &keys,
            &captured(
                "dbo_customers",
                &[
                    ("region", false),
                    ("owner", false),
                    ("created", false),
                    ("amount", false),
                    ("total", true),
                    ("name", false),
                ],
            ),
        ),
    );
    let mut session = session(&server).await;
    let ci = session
        .capture_instance(&table("dbo", "customers"), None)
        .await
        .unwrap();
    assert_eq!(
        ci.key_columns,
        vec![
            KeyColumn::new(
                "region",
                KeyType::VarChar {
                    length: 20,
                    collation: ci_as()
                }
            ),
            KeyColumn::new(
                "owner",
                KeyType::NVarChar {
                    length: 128,
                    collation: Collation::parse("Latin1_General_100_CI_AS_SC").unwrap()
                }
            ),
            KeyColumn::new("created", KeyType::DateTime2 { scale: 7 }),
            KeyColumn::new(
                "amount",
                KeyType::Decimal {
                    precision: 18,
                    scale: 2
                }
            ),
        ]
    );
    assert_eq!(
        ci.column_names(),
        vec!["region", "owner", "created", "amount", "name"],
        "the computed column is left out"
    );
}

/// Item 2: a unique index with nullable columns is refused up front, naming the columns, the
/// index and the remedy; an unsupported key type is refused naming the column and the type.
#[tokio::test]
async fn nullable_or_unsupported_key_columns_are_refused_by_name() {
    let server = FakeServer::start().await;
    let mut session = session(&server).await;
    let nullable = vec![
        KeyRow {
            nullable: true,
            ..varchar_key("dbo_customers", "email", 100)
        },
        int_key("dbo_customers", "tenant"),
        KeyRow {
            nullable: true,
            ..int_key("dbo_customers", "branch")
        },
    ];
    server.on(
        sql::CAPTURE_INSTANCES,
        capture_reply(
            &[("dbo_customers", true, 100)],
            Some("ux_customers_email"),
            &nullable,
            &captured("dbo_customers", &[("email", false)]),
        ),
    );
    let err = session
        .capture_instance(&table("dbo", "customers"), None)
        .await
        .unwrap_err();
    match &err {
        CdcError::NullableKey { index, columns, .. } => {
            assert_eq!(index, "ux_customers_email");
            assert_eq!(columns, &vec!["email".to_string(), "branch".to_string()]);
        }
        other => panic!("expected NullableKey, got {other:?}"),
    }
    assert!(!err.is_transient());
    let message = err.to_string();
    for part in [
        "ux_customers_email",
        "email, branch",
        "NOT NULL",
        "primary key",
        "dbo.customers",
    ] {
        assert!(message.contains(part), "{part:?} missing from: {message}");
    }

    for (system, type_name) in [(Some("sql_variant"), "sql_variant"), (None, "hierarchyid")] {
        let keys = vec![KeyRow {
            system_type: system,
            type_name,
            ..int_key("dbo_customers", "node")
        }];
        server.on(
            sql::CAPTURE_INSTANCES,
            capture_reply(&[("dbo_customers", true, 100)], None, &keys, &[]),
        );
        let err = session
            .capture_instance(&table("dbo", "customers"), None)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, CdcError::UnsupportedKey { column, type_name: t, .. } if column == "node" && t == type_name),
            "{err:?}"
        );
        assert!(err.to_string().contains(type_name), "{err}");
    }
}

/// Item 4: the full load and the net changes select the same captured columns in the same
/// order (the net changes after the CDC columns), computed columns in neither.
#[tokio::test]
async fn scan_and_net_changes_select_the_same_captured_columns() {
    let server = FakeServer::start().await;
    server.on(
        sql::CAPTURE_INSTANCES,
        capture_reply(
            &[("dbo_customers", true, 100)],
            None,
            &[int_key("dbo_customers", "customer_id")],
            &captured(
                "dbo_customers",
                &[("customer_id", false), ("total", true), ("name", false)],
            ),
        ),
    );
    server.on_prefix(
        "SELECT TOP (@P1)",
        Reply::rows(
            vec![
                col("customer_id", SqlType::Int),
                col("name", SqlType::NVarChar(50)),
            ],
            vec![],
        ),
    );
    server.on_prefix("SELECT [__$start_lsn]", Reply::rows(vec![], vec![]));
    let mut session = session(&server).await;
    let ci = session
        .capture_instance(&table("dbo", "customers"), None)
        .await
        .unwrap();
    let mut sink = VecSink::default();
    session.scan(&ci, None, None, 10, &mut sink).await.unwrap();
    session
        .net_changes(&ci, range(lsn(101), lsn(200)), RowFilter::All, &mut sink)
        .await
        .unwrap();
    let requests = server.requests();
    assert_eq!(
        requests[1].sql,
        "SELECT TOP (@P1) [customer_id], [name] FROM [dbo].[customers] ORDER BY [customer_id];"
    );
    assert_eq!(
        requests[2].sql,
        "SELECT [__$start_lsn], [__$operation], [__$update_mask], [customer_id], [name] \
         FROM cdc.[fn_cdc_get_net_changes_dbo_customers](@P1, @P2, @P3) \
         ORDER BY [__$start_lsn], [customer_id];"
    );
}

// A full load over TDS against a fake that evaluates the keyset predicate the way SQL Server
// does, so a page boundary lands where the server would put it.

/// Scripts a one-table full load: capture instance, no watermark yet, max LSN, watermark
/// writes; the scan is answered by `page` from the request.
fn script_full_load(
    server: &FakeServer,
    key: KeyRow,
    page: impl Fn(&tds::Request) -> Reply + Send + Sync + 'static,
) {
    let ci = key.ci;
    let column = key.column;
    server.on(
        sql::CAPTURE_INSTANCES,
        capture_reply(
            &[(ci, true, 100)],
            None,
            &[key],
            &captured(ci, &[(column, false), ("n", false)]),
        ),
    );
    let wm = watermark_table();
    server.on(
        &sql::read_watermark(&wm).unwrap(),
        Reply::rows(watermark_columns(), vec![]),
    );
    server.on(
        sql::GET_MAX_LSN,
        Reply::rows(
            vec![col("max_lsn", SqlType::Binary(10))],
            vec![vec![lsn_cell(500)]],
        ),
    );
    server.on(&sql::insert_watermark(&wm).unwrap(), Reply::RowCount(1));
    server.on(&sql::update_watermark(&wm).unwrap(), Reply::RowCount(1));
    server.on_fn("SELECT TOP (@P1)", page);
}

/// Runs FullLoad over the fake into Azurite with two rows per part; the key column of every
/// row written, in blob order.
async fn full_load_keys(server: &FakeServer) -> Vec<String> {
    let azurite = common::azurite::Azurite::shared();
    let container = common::azurite::unique_container("keyset");
    let settings = Arc::new(common::cdc::settings(
        azurite,
        &container,
        &[("CDC_FULL_LOAD_PART_ROWS", "2")],
    ));
    let blobs = BlobTarget::new(&settings.storage, &settings.container).unwrap();
    let ctx = Context::new(settings, Arc::new(source(server)), blobs);
    let report = jobs::full_load::run(
        &ctx,
        &FullLoadRequest::default_all(),
        std::time::Duration::from_secs(60),
    )
    .await;
    assert_eq!(report.status, Status::Done, "{:?}", report.logs());
    let mut names = ctx.blobs.list("dbo/customers/full/").await.unwrap();
    names.sort();
    let mut keys = Vec::new();
    for name in names {
        let bytes = ctx.blobs.read(&name).await.unwrap().expect("listed blob");
        let records = common::cdc::parse_csv(&bytes);
        keys.extend(records.into_iter().skip(1).map(|r| r[0].clone().unwrap()));
    }
    keys
}

fn limit_of(request: &tds::Request) -> usize {
    match request.params[0].value {
        ParamValue::Int(n) => n as usize,
        ref other => panic!("@P1 is {other:?}"),
    }
}

/// Item 1, varchar keys: the table is in the index's order (non-Unicode rules of
/// SQL_Latin1_General_CP1_CI_AS, hyphen and apostrophe significant). The fake compares the
/// way data-type precedence makes the server compare: a parameter cast to the column's type
/// and collation compares as varchar; an nvarchar parameter converts the column, which is
/// then compared with Unicode rules (hyphen and apostrophe ignored). Parts end at 'co-op'
/// and 'oat': every row must land exactly once.
#[tokio::test]
async fn varchar_keys_with_hyphens_page_in_index_order() {
    let mut table = vec!["a", "co-op", "coat", "cob", "o'neil", "oat", "oats", "z"];
    table.sort_by(|a, b| Rules::SqlNonUnicode.compare(a, b));
    assert_eq!(table[1..4], ["co-op", "coat", "cob"], "the index order");
    let server = FakeServer::start().await;
    let rows = table.clone();
    script_full_load(
        &server,
        varchar_key("dbo_customers", "code", 20),
        move |request| {
            let after = match request.params.get(1).map(|p| &p.value) {
                None => None,
                Some(ParamValue::Text(key)) => Some(key.clone()),
                Some(other) => panic!("@P2 is {other:?}"),
            };
            let rules = if request
                .sql
                .contains("CAST(@P2 COLLATE SQL_Latin1_General_CP1_CI_AS AS varchar(20))")
            {
                Rules::SqlNonUnicode
            } else {
                Rules::UnicodeWordSort
            };
            let page = rows
                .iter()
                .enumerate()
                .filter(|(_, code)| {
                    after
                        .as_deref()
                        .is_none_or(|a| rules.compare(code, a) == std::cmp::Ordering::Greater)
                })
                .take(limit_of(request))
                .map(|(i, code)| vec![Cell::Text(code.to_string()), Cell::Int(i as i64)])
                .collect();
            Reply::rows(
                vec![col("code", SqlType::VarChar(20)), col("n", SqlType::Int)],
                page,
            )
        },
    );
    assert_eq!(full_load_keys(&server).await, table);
}

/// Item 1, datetime keys: values in 1/300 s ticks (.000, .003, .007, …), parts ending at odd
/// ticks. A parameter cast to datetime rounds to the column's tick; a datetime2(7) parameter
/// makes the server compare the column converted to datetime2, exactly (compatibility level
/// 130 and later), so the boundary row read back as .0033333 is still "after" itself.
#[tokio::test]
async fn datetime_keys_page_without_rereading_the_boundary_row() {
    let base = NaiveDate::from_ymd_opt(2024, 1, 1)
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap();
    let tick_time =
        move |tick: i64| base + chrono::Duration::nanoseconds(tick * 1_000_000_000 / 300);
    let server = FakeServer::start().await;
    let key = KeyRow {
        system_type: Some("datetime"),
        type_name: "datetime",
        max_length: 8,
        precision: 23,
        scale: 3,
        ..int_key("dbo_customers", "at")
    };
    script_full_load(&server, key, move |request| {
        // Both sides in units of 1/(300·10⁹) s, so the exact datetime2 comparison is integral.
        let after = request.params.get(1).map(|p| match &p.value {
            ParamValue::DateTime(t) => {
                let ns = (*t - base).num_nanoseconds().unwrap() as i128;
                if request.sql.contains("CAST(@P2 AS datetime)") {
                    ((ns * 300 + 500_000_000) / 1_000_000_000) * 1_000_000_000
                } else {
                    ns * 300
                }
            }
            other => panic!("@P2 is {other:?}"),
        });
        let page = (0..7i64)
            .filter(|tick| after.is_none_or(|a| i128::from(*tick) * 1_000_000_000 > a))
            .take(limit_of(request))
            .map(|tick| vec![Cell::DateTime(tick_time(tick)), Cell::Int(tick)])
            .collect();
        Reply::rows(
            vec![col("at", SqlType::DateTime), col("n", SqlType::Int)],
            page,
        )
    });
    // As SQL Server shows a datetime: milliseconds .000, .003, .007 (format version 2).
    let expected: Vec<String> = (0..7)
        .map(|tick| {
            let value = Value::DateTime(cdc_copy_testkit::model::to_sql_datetime(tick_time(tick)));
            let mut out = Vec::new();
            cdc_copy::sink::csv::write_typed(
                &mut out,
                &value,
                &cdc_copy::cdc::ColumnType::DateTime,
            );
            String::from_utf8(out).unwrap()
        })
        .collect();
    let got = full_load_keys(&server).await;
    assert_eq!(got.len(), 7, "every row exactly once: {got:?}");
    assert_eq!(got, expected);
}

/// `release_lock` finds the scan's transaction already rolled back (`@@TRANCOUNT` 0): the
/// lock may have been gone during the load, so the load must not trust its baseline; the
/// error is transient (the load starts again).
#[tokio::test]
async fn a_lock_released_after_its_transaction_ended_is_an_error() {
    let server = FakeServer::start().await;
    server.on(
        sql::RELEASE_LOCK,
        Reply::rows(
            vec![col("open_transactions", SqlType::Int)],
            vec![vec![Cell::Int(0)]],
        ),
    );
    let mut session = session(&server).await;
    let err = session.release_lock().await.unwrap_err();
    assert!(matches!(err, CdcError::LockLost), "{err}");
    assert!(err.is_transient());
    assert!(err.to_string().contains("rolled it back"), "{err}");
    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    assert!(!requests[0].rpc, "the commit is a batch");
}

/// `SET_LAST_ERROR` and `READ_LAST_ERROR` (issue 12): the statement texts, `nvarchar` for the
/// names and the message, `datetime2` for the time, NULLs to clear; the read gives the pair
/// back, and no row means no error.
#[tokio::test]
async fn last_error_is_written_read_and_cleared_with_typed_parameters() {
    let server = FakeServer::start().await;
    let set = sql::set_last_error(&watermark_table()).unwrap();
    let read = sql::read_last_error(&watermark_table()).unwrap();
    let mut session = session(&server).await;
    let customers = table("dbo", "customers");
    let at = Utc.with_ymd_and_hms(2026, 11, 21, 10, 15, 0).unwrap()
        + chrono::Duration::nanoseconds(1_234_500);
    let error = cdc_copy::cdc::LastError::new("dbo.customers: Zürich, \"timeout\"", at);

    server.on(&set, Reply::RowCount(1));
    session
        .set_last_error(&customers, Some(&error))
        .await
        .unwrap();
    session.set_last_error(&customers, None).await.unwrap();
    let sent = server.requests();
    assert_eq!(sent[0].sql, set);
    assert_eq!(
        param_types(&sent[0]),
        vec!["nvarchar", "nvarchar", "nvarchar", "datetime2"]
    );
    assert_eq!(
        param_values(&sent[0])[2],
        ParamValue::Text(error.message.clone())
    );
    assert_eq!(
        param_values(&sent[0])[3],
        ParamValue::DateTime(at.naive_utc())
    );
    assert_eq!(param_types(&sent[1])[2..], ["null", "null"], "cleared");

    server.on(
        &read,
        Reply::rows(
            vec![
                col("last_error", SqlType::NVarChar(4000)),
                col("last_error_at", SqlType::DateTime2),
            ],
            vec![vec![
                Cell::Text(error.message.clone()),
                Cell::DateTime(at.naive_utc()),
            ]],
        ),
    );
    assert_eq!(session.last_error(&customers).await.unwrap(), Some(error));
    server.on(
        &read,
        Reply::rows(
            vec![
                col("last_error", SqlType::NVarChar(4000)),
                col("last_error_at", SqlType::DateTime2),
            ],
            vec![],
        ),
    );
    assert_eq!(session.last_error(&customers).await.unwrap(), None);
    assert_eq!(server.requests().last().unwrap().sql, read);
    assert_eq!(
        param_types(server.requests().last().unwrap()),
        ["nvarchar", "nvarchar"]
    );
}

/// `CAPTURE_INSTANCES` for `dbo.customers` (one instance, `int` key `customer_id`) whose result
/// set 3 rows are `rows`, as the server would send them.
fn reply_with_captured(rows: &[CapturedColumnRow]) -> Reply {
    let captured: Vec<(String, String, bool)> = rows
        .iter()
        .map(|r| ("dbo_customers".to_string(), r.column_name.clone(), false))
        .collect();
    let keys = [int_key("dbo_customers", "customer_id")];
    let Reply::Results(mut sets) =
        capture_reply(&[("dbo_customers", true, 100)], None, &keys, &captured)
    else {
        unreachable!("capture_reply answers result sets")
    };
    let opt_text = |v: &Option<String>| v.clone().map_or(Cell::Null, Cell::Text);
    for (cells, row) in sets[2].rows.iter_mut().zip(rows) {
        cells.truncate(4);
        cells.extend([
            opt_text(&row.system_type),
            Cell::Text(row.type_name.clone()),
            row.max_length.map_or(Cell::Null, |n| Cell::Int(n.into())),
            Cell::Int(row.precision.into()),
            Cell::Int(row.scale.into()),
            opt_text(&row.collation_name),
            Cell::Bit(row.is_nullable),
        ]);
    }
    Reply::Results(sets)
}

/// Issue 11: result set 3 gives each captured column its declared type, decoded into the
/// instance's `ColumnDesc`s (alias and CLR types by their base type or name, `(max)`,
/// decimal precision and scale, time scales, collations and nullability).
#[tokio::test]
async fn captured_columns_carry_their_declared_types() {
    let server = FakeServer::start().await;
    let ci_as = "SQL_Latin1_General_CP1_CI_AS";
    let wanted = vec![
        ColumnDesc::new("customer_id", ColumnType::Int, false),
        ColumnDesc::new("code", ColumnType::VarChar(Length::Max), true).with_collation(ci_as),
        ColumnDesc::new("name", ColumnType::NChar(Length::Of(10)), false).with_collation(ci_as),
        ColumnDesc::new(
            "amount",
            ColumnType::Decimal {
                precision: 38,
                scale: 6,
            },
            true,
        ),
        ColumnDesc::new("cash", ColumnType::SmallMoney, true),
        ColumnDesc::new("at", ColumnType::DateTime2 { scale: 3 }, true),
        ColumnDesc::new("seen", ColumnType::DateTimeOffset { scale: 0 }, true),
        ColumnDesc::new("version", ColumnType::Binary(Length::Of(8)), false),
        ColumnDesc::new("shape", ColumnType::Other("geography".into()), true),
    ];
    let mut rows: Vec<CapturedColumnRow> = wanted
        .iter()
        .map(|d| CapturedColumnRow::typed(&d.name, d))
        .collect();
    // An alias type: sys.types gives the alias's name, system_type_name its base type.
    rows[2].type_name = "customer_name".into();
    server.on(sql::CAPTURE_INSTANCES, reply_with_captured(&rows));
    let mut session = session(&server).await;
    let ci = session
        .capture_instance(&table("dbo", "customers"), None)
        .await
        .unwrap();
    assert_eq!(ci.columns, wanted);
    assert_eq!(
        ci.change_columns(cdc_copy::cdc::ChangeMode::Net)
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>()[..4],
        [
            "__$start_lsn",
            "__$operation",
            "__$update_mask",
            "customer_id"
        ]
    );
    assert_eq!(&ci.load_columns()[..], &wanted[..]);
}

/// Without VIEW DEFINITION on the change table, its `sys.columns` rows are invisible and the
/// outer joins give NULL types: refused, naming the columns and the grant, never guessed.
#[tokio::test]
async fn captured_column_types_the_login_cannot_see_are_refused_naming_the_grant() {
    let server = FakeServer::start().await;
    let hidden = |name: &str| CapturedColumnRow {
        system_type: None,
        type_name: "int".into(),
        max_length: None,
        ..CapturedColumnRow::typed(name, &non_key(name))
    };
    server.on(
        sql::CAPTURE_INSTANCES,
        reply_with_captured(&[hidden("customer_id"), hidden("name")]),
    );
    let mut session = session(&server).await;
    let err = session
        .capture_instance(&table("dbo", "customers"), None)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, CdcError::ColumnTypesNotVisible { columns, .. } if columns == &["customer_id", "name"]),
        "{err:?}"
    );
    assert!(!err.is_transient());
    let message = err.to_string();
    assert!(
        message.contains("GRANT VIEW DEFINITION ON OBJECT::cdc.[dbo_customers_CT]"),
        "{message}"
    );
}

//! The Rust half of the reader test (`scripts/check-readers.sh` is the other): every SQL
//! Server type, with its edge values, through the real sink into a real Azurite, downloaded
//! with its schema document into `target/readers/`, beside `cases.json`, the values the
//! readers must find, written here independently of the encoder. A small table for the
//! documented upsert is written the same way (a full-load part and two windows).
//!
//! The expected values are canonical text the Python side derives from each tool's values
//! the same way: integers and decimals as exact digits (all the scale's), floats as JSON
//! numbers (the shortest text of the same double), binary as lowercase hex, times with 7
//! fractional digits, `datetimeoffset` as its UTC instant with `Z`, GUIDs uppercase.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{FixedOffset, NaiveDate, NaiveDateTime, NaiveTime, TimeZone};
use serde_json::{json, Value as Json};

use cdc_copy::cdc::{ChangeMode, ColumnDesc, ColumnType, Length, RowSink, TableRef, Value};
use cdc_copy::sink::blob::BlobTarget;
use cdc_copy::sink::format::{FileSink, Format};
use cdc_copy::sink::schema_doc::{self, SchemaDoc};

use common::azurite::{unique_container, Azurite};

/// One column of the every-type table: its declaration and (value, expected) pairs; the rows
/// past a column's list hold NULL.
struct Case {
    column: ColumnDesc,
    values: Vec<(Value, Json)>,
}

fn case(name: &str, ty: ColumnType, values: Vec<(Value, Json)>) -> Case {
    let mut column = ColumnDesc::new(name, ty, true);
    if matches!(
        column.ty,
        ColumnType::Char(_)
            | ColumnType::VarChar(_)
            | ColumnType::NChar(_)
            | ColumnType::NVarChar(_)
            | ColumnType::Text
            | ColumnType::NText
    ) {
        column = column.with_collation("SQL_Latin1_General_CP1_CI_AS");
    }
    Case { column, values }
}

fn int(v: i64) -> (Value, Json) {
    (Value::Int(v), json!(v.to_string()))
}

fn float(v: f64) -> (Value, Json) {
    (Value::Float(v), json!(v))
}

fn real(v: f32) -> (Value, Json) {
    (Value::Real(v), json!(f64::from(v)))
}

/// `digits` is the exact decimal text; the value is built from it.
fn dec(digits: &str, scale: u8) -> (Value, Json) {
    let unscaled: i128 = digits.replace('.', "").parse().unwrap();
    (Value::Decimal { unscaled, scale }, json!(digits))
}

fn text(s: &str) -> (Value, Json) {
    (Value::Text(s.to_string()), json!(s))
}

fn bytes(b: &[u8]) -> (Value, Json) {
    let hex: String = b.iter().map(|b| format!("{b:02x}")).collect();
    (Value::Binary(b.to_vec()), json!(hex))
}

fn at(y: i32, m: u32, d: u32, h: u32, mi: u32, s: u32, nanos: u32) -> NaiveDateTime {
    NaiveDate::from_ymd_opt(y, m, d)
        .unwrap()
        .and_time(NaiveTime::from_hms_nano_opt(h, mi, s, nanos).unwrap())
}

fn ts(v: NaiveDateTime, expected: &str) -> (Value, Json) {
    (Value::DateTime(v), json!(expected))
}

fn time(h: u32, mi: u32, s: u32, nanos: u32, expected: &str) -> (Value, Json) {
    let t = NaiveTime::from_hms_nano_opt(h, mi, s, nanos).unwrap();
    (Value::Time(t), json!(expected))
}

fn dto(offset_minutes: i32, local: NaiveDateTime, utc: &str) -> (Value, Json) {
    let tz = FixedOffset::east_opt(offset_minutes * 60).unwrap();
    (
        Value::DateTimeOffset(tz.from_local_datetime(&local).unwrap()),
        json!(utc),
    )
}

/// A `datetime` as tiberius decodes it: `tick` 1/300 s after `second`, truncated to ns.
fn datetime_tick(second: NaiveDateTime, tick: u32, expected: &str) -> (Value, Json) {
    let nanos = (u64::from(tick) * 1_000_000_000 / 300) as i64;
    ts(second + chrono::Duration::nanoseconds(nanos), expected)
}

fn guid(s: &str) -> (Value, Json) {
    (
        Value::Guid(uuid::Uuid::parse_str(s).unwrap()),
        json!(s.to_uppercase()),
    )
}

fn cases() -> Vec<Case> {
    use ColumnType as T;
    let long = "x".repeat(5000);
    vec![
        case(
            "c_bit",
            T::Bit,
            vec![
                (Value::Bit(true), json!("1")),
                (Value::Bit(false), json!("0")),
            ],
        ),
        case("c_tinyint", T::TinyInt, vec![int(0), int(255)]),
        case("c_smallint", T::SmallInt, vec![int(-32768), int(32767)]),
        case(
            "c_int",
            T::Int,
            vec![int(i32::MIN.into()), int(i32::MAX.into()), int(0)],
        ),
        case("c_bigint", T::BigInt, vec![int(i64::MIN), int(i64::MAX)]),
        case(
            "c_real",
            T::Real,
            vec![
                real(3.0),
                real(0.1),
                real(f32::MAX),
                real(-f32::MAX),
                real(f32::MIN_POSITIVE),
                real(1e-45),
                real(16_777_216.0),
                real(-0.0),
            ],
        ),
        case(
            "c_float",
            T::Float,
            vec![
                float(3.0),
                float(42.0),
                float(0.1),
                float(1.0 / 3.0),
                float(f64::MAX),
                float(f64::MIN),
                float(f64::MIN_POSITIVE),
                float(5e-324),
                float(1e16),
                float(-0.0),
            ],
        ),
        case(
            "c_decimal_38_0",
            T::Decimal {
                precision: 38,
                scale: 0,
            },
            vec![
                dec("99999999999999999999999999999999999999", 0),
                dec("-99999999999999999999999999999999999999", 0),
                dec("0", 0),
            ],
        ),
        case(
            "c_decimal_38_38",
            T::Decimal {
                precision: 38,
                scale: 38,
            },
            vec![
                dec("0.99999999999999999999999999999999999999", 38),
                dec("-0.99999999999999999999999999999999999999", 38),
                dec("0.00000000000000000000000000000000000000", 38),
            ],
        ),
        case(
            "c_decimal_38_10",
            T::Decimal {
                precision: 38,
                scale: 10,
            },
            vec![
                dec("1234567890123456789012345678.9012345678", 10),
                dec("-9999999999999999999999999999.9999999999", 10),
            ],
        ),
        case(
            "c_decimal_18_2",
            T::Decimal {
                precision: 18,
                scale: 2,
            },
            vec![dec("1.50", 2), dec("-0.05", 2)],
        ),
        case(
            "c_money",
            T::Money,
            vec![
                dec("-922337203685477.5808", 4),
                dec("922337203685477.5807", 4),
                dec("0.0001", 4),
            ],
        ),
        case(
            "c_smallmoney",
            T::SmallMoney,
            vec![dec("-214748.3648", 4), dec("214748.3647", 4)],
        ),
        case(
            "c_char",
            T::Char(Length::Of(10)),
            vec![text("abc       "), text("          ")],
        ),
        case(
            "c_varchar",
            T::VarChar(Length::Of(50)),
            vec![
                text(""),
                text("NULL"),
                text("NaN"),
                text("N/A"),
                text("#N/A"),
                text("a,b"),
                text("say \"hi\""),
                text("line1\r\nline2"),
                text("lf\nonly"),
                text(" lead"),
                text("trail "),
                text("0x00"),
            ],
        ),
        case("c_nchar", T::NChar(Length::Of(4)), vec![text("東京都 ")]),
        case(
            "c_nvarchar_max",
            T::NVarChar(Length::Max),
            vec![
                text("Zürich"),
                text("東京都"),
                text("😀 emoji, \"quoted\""),
                text(""),
                text(&long),
            ],
        ),
        case("c_text", T::Text, vec![text("text"), text("")]),
        case("c_ntext", T::NText, vec![text("ntext ü")]),
        case("c_xml", T::Xml, vec![text("<a b=\"1\">x</a>")]),
        case("c_image", T::Image, vec![bytes(&[0xFF, 0xD8]), bytes(&[])]),
        case(
            "c_binary",
            T::Binary(Length::Of(4)),
            vec![bytes(&[0, 1, 2, 0xFF])],
        ),
        case(
            "c_varbinary_max",
            T::VarBinary(Length::Max),
            vec![bytes(&[]), bytes(&[0xAB; 100])],
        ),
        case(
            "c_rowversion",
            T::RowVersion,
            vec![bytes(&[0, 0, 0, 0, 0, 0, 0x07, 0xD1])],
        ),
        case(
            "c_date",
            T::Date,
            vec![
                (
                    Value::Date(NaiveDate::from_ymd_opt(1, 1, 1).unwrap()),
                    json!("0001-01-01"),
                ),
                (
                    Value::Date(NaiveDate::from_ymd_opt(9999, 12, 31).unwrap()),
                    json!("9999-12-31"),
                ),
                (
                    Value::Date(NaiveDate::from_ymd_opt(2024, 2, 29).unwrap()),
                    json!("2024-02-29"),
                ),
            ],
        ),
        case(
            "c_time_0",
            T::Time { scale: 0 },
            vec![
                time(0, 0, 0, 0, "00:00:00.0000000"),
                time(23, 59, 59, 0, "23:59:59.0000000"),
            ],
        ),
        case(
            "c_time_3",
            T::Time { scale: 3 },
            vec![time(12, 34, 56, 789_000_000, "12:34:56.7890000")],
        ),
        case(
            "c_time_7",
            T::Time { scale: 7 },
            vec![
                time(23, 59, 59, 999_999_900, "23:59:59.9999999"),
                time(0, 0, 0, 100, "00:00:00.0000001"),
            ],
        ),
        case(
            "c_datetime",
            T::DateTime,
            vec![
                datetime_tick(at(1753, 1, 1, 0, 0, 0, 0), 0, "1753-01-01T00:00:00.0000000"),
                datetime_tick(at(2024, 5, 6, 7, 8, 9, 0), 1, "2024-05-06T07:08:09.0030000"),
                datetime_tick(at(2024, 5, 6, 7, 8, 9, 0), 2, "2024-05-06T07:08:09.0070000"),
                datetime_tick(
                    at(9999, 12, 31, 23, 59, 59, 0),
                    299,
                    "9999-12-31T23:59:59.9970000",
                ),
            ],
        ),
        case(
            "c_smalldatetime",
            T::SmallDateTime,
            vec![
                ts(at(1900, 1, 1, 0, 0, 0, 0), "1900-01-01T00:00:00.0000000"),
                ts(at(2079, 6, 6, 23, 59, 0, 0), "2079-06-06T23:59:00.0000000"),
            ],
        ),
        case(
            "c_datetime2_0",
            T::DateTime2 { scale: 0 },
            vec![
                ts(at(1, 1, 1, 0, 0, 0, 0), "0001-01-01T00:00:00.0000000"),
                ts(
                    at(9999, 12, 31, 23, 59, 59, 0),
                    "9999-12-31T23:59:59.0000000",
                ),
            ],
        ),
        case(
            "c_datetime2_3",
            T::DateTime2 { scale: 3 },
            vec![ts(
                at(2024, 5, 6, 7, 8, 9, 123_000_000),
                "2024-05-06T07:08:09.1230000",
            )],
        ),
        case(
            "c_datetime2_7",
            T::DateTime2 { scale: 7 },
            vec![
                ts(at(1, 1, 1, 0, 0, 0, 0), "0001-01-01T00:00:00.0000000"),
                ts(
                    at(9999, 12, 31, 23, 59, 59, 999_999_900),
                    "9999-12-31T23:59:59.9999999",
                ),
                ts(
                    at(2024, 5, 6, 7, 8, 9, 123_456_700),
                    "2024-05-06T07:08:09.1234567",
                ),
            ],
        ),
        case(
            "c_datetimeoffset_0",
            T::DateTimeOffset { scale: 0 },
            vec![dto(
                330,
                at(2024, 1, 2, 3, 4, 5, 0),
                "2024-01-01T21:34:05.0000000Z",
            )],
        ),
        case(
            "c_datetimeoffset_7",
            T::DateTimeOffset { scale: 7 },
            vec![
                dto(
                    -14 * 60,
                    at(1, 1, 1, 0, 0, 0, 0),
                    "0001-01-01T14:00:00.0000000Z",
                ),
                dto(
                    14 * 60,
                    at(9999, 12, 31, 23, 59, 59, 999_999_900),
                    "9999-12-31T09:59:59.9999999Z",
                ),
                dto(
                    -30,
                    at(2024, 1, 2, 3, 4, 5, 123_456_700),
                    "2024-01-02T03:34:05.1234567Z",
                ),
            ],
        ),
        case(
            "c_uniqueidentifier",
            T::UniqueIdentifier,
            vec![
                guid("6f9619ff-8b86-d011-b42d-00c04fc964ff"),
                guid("00000000-0000-0000-0000-000000000000"),
            ],
        ),
        // Copied as the driver returns it (hierarchyid arrives as bytes): read as the text.
        case(
            "c_hierarchyid",
            T::Other("hierarchyid".into()),
            vec![(Value::Binary(vec![0x58]), json!("0x58"))],
        ),
    ]
}

fn lsn(n: u8) -> Value {
    Value::Binary(vec![0, 0, 0, 0x2A, 0, 0, 0x01, 0xF0, 0, n])
}

fn hex(v: &Value) -> Json {
    match v {
        Value::Binary(b) => json!(b.iter().map(|b| format!("{b:02x}")).collect::<String>()),
        _ => unreachable!(),
    }
}

/// Where the files go: `target/readers/` of the workspace, or `CDC_READERS_DIR`.
fn out_dir() -> PathBuf {
    std::env::var_os("CDC_READERS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/readers"))
}

/// Writes `rows` through the real sink of `doc`'s file format (the one the jobs use, from
/// `FileSink`) into `name`, with the schema document's metadata.
async fn write_file(
    blobs: &BlobTarget,
    name: &str,
    doc: &SchemaDoc,
    columns: &[ColumnDesc],
    rows: &[Vec<Value>],
) {
    let columns: Arc<[ColumnDesc]> = columns.to_vec().into();
    let format = Format::of_blob(name, Format::Csv);
    let writer = blobs.writer(name, doc.blob_metadata(), 64 * 1024);
    let mut sink = FileSink::new(format, writer, 64 * 1024, columns.clone());
    let names: Vec<String> = columns.iter().map(|c| c.name.clone()).collect();
    sink.columns(&names).await.unwrap();
    for row in rows {
        sink.row(row).await.unwrap();
    }
    sink.finish().await.unwrap();
}

/// Downloads `name` into the output folder, keeping its path; returns the local path.
async fn download(blobs: &BlobTarget, name: &str) -> String {
    let path = out_dir().join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, blobs.read(name).await.unwrap().unwrap()).unwrap();
    path.to_string_lossy().into_owned()
}

/// Publishes the schema document of the table's files in `format` (a CSV and a Parquet file
/// of one table are two versions: the file format is part of a version's shape).
async fn publish(
    blobs: &BlobTarget,
    format: Format,
    table: &TableRef,
    key: &[&str],
    columns: &[ColumnDesc],
) -> SchemaDoc {
    let doc = SchemaDoc::new(
        table,
        &format!("{}_{}", table.schema, table.table),
        (format.extension(), cdc_copy::jobs::FORMAT_VERSION),
        ChangeMode::Net,
        key.iter().map(|k| k.to_string()).collect(),
        columns,
    );
    schema_doc::publish(blobs, doc).await.unwrap()
}

/// Every type: one incremental (net) file, CDC columns then the captured ones.
async fn every_type(blobs: &BlobTarget) -> Json {
    let table = TableRef {
        schema: "dbo".into(),
        table: "every_type".into(),
    };
    let cases = cases();
    let captured: Vec<ColumnDesc> = cases.iter().map(|c| c.column.clone()).collect();
    let doc = publish(blobs, Format::Csv, &table, &[], &captured).await;
    let parquet_doc = publish(blobs, Format::Parquet, &table, &[], &captured).await;
    let rows_n = cases.iter().map(|c| c.values.len()).max().unwrap() + 1;
    let mut file_columns = cdc_copy::cdc::cdc_columns(ChangeMode::Net);
    file_columns.extend(captured.iter().cloned());
    let mut rows = Vec::new();
    // A `datetimeoffset`'s offset, which Parquet keeps beside the instant.
    let mut offsets: serde_json::Map<String, Json> = serde_json::Map::new();
    let mut expected: serde_json::Map<String, Json> = serde_json::Map::new();
    for name in ["__$start_lsn", "__$operation", "__$update_mask"] {
        expected.insert(name.into(), json!([]));
    }
    for c in &cases {
        expected.insert(c.column.name.clone(), json!([]));
    }
    for i in 0..rows_n {
        let mut row = vec![
            lsn(i as u8),
            Value::Int(2),
            if i % 2 == 0 {
                Value::Null
            } else {
                Value::Binary(vec![0x0F])
            },
        ];
        expected["__$start_lsn"]
            .as_array_mut()
            .unwrap()
            .push(hex(&row[0]));
        expected["__$operation"]
            .as_array_mut()
            .unwrap()
            .push(json!("2"));
        expected["__$update_mask"]
            .as_array_mut()
            .unwrap()
            .push(if i % 2 == 0 { Json::Null } else { json!("0f") });
        for c in &cases {
            let (value, canonical) = c
                .values
                .get(i)
                .cloned()
                .unwrap_or((Value::Null, Json::Null));
            if let ColumnType::DateTimeOffset { .. } = c.column.ty {
                let minutes = match &value {
                    Value::DateTimeOffset(dt) => json!(dt.offset().local_minus_utc() / 60),
                    _ => Json::Null,
                };
                offsets
                    .entry(c.column.name.clone())
                    .or_insert_with(|| json!([]))
                    .as_array_mut()
                    .unwrap()
                    .push(minutes);
            }
            row.push(value);
            expected[&c.column.name]
                .as_array_mut()
                .unwrap()
                .push(canonical);
        }
        rows.push(row);
    }
    let name = "dbo/every_type/incremental/2026/11/21/20261121101500000.csv";
    write_file(blobs, name, &doc, &file_columns, &rows).await;
    let info = blobs.properties(name).await.unwrap().unwrap();
    assert_eq!(info.metadata["schema_version"], "1");
    let parquet = "dbo/every_type/incremental/2026/11/21/20261121101500000.parquet";
    write_file(blobs, parquet, &parquet_doc, &file_columns, &rows).await;
    let parquet_info = blobs.properties(parquet).await.unwrap().unwrap();
    assert_eq!(parquet_info.metadata["schema_version"], "2");
    json!({
        "schema_file": download(blobs, &schema_doc::document_name(&doc.table, doc.schema_version)).await,
        "parquet_schema_file": download(blobs, &schema_doc::document_name(&parquet_doc.table, parquet_doc.schema_version)).await,
        "csv_files": [download(blobs, name).await],
        "parquet_files": [download(blobs, parquet).await],
        // What the footer's key/value metadata must carry.
        "parquet_blob_metadata": parquet_info.metadata,
        "rows": rows_n,
        "expected": expected,
        "expected_offset_minutes": offsets,
    })
}

/// The documented upsert: a full-load part and two windows of net changes, in both formats.
async fn upsert(blobs: &BlobTarget) -> Json {
    let table = TableRef {
        schema: "dbo".into(),
        table: "customers".into(),
    };
    let captured = vec![
        ColumnDesc::new("customer_id", ColumnType::Int, false),
        ColumnDesc::new("name", ColumnType::NVarChar(Length::Of(50)), true),
    ];
    let mut file_columns = cdc_copy::cdc::cdc_columns(ChangeMode::Net);
    file_columns.extend(captured.iter().cloned());
    let person = |id: i64, name: Option<&str>| {
        vec![
            Value::Int(id),
            name.map_or(Value::Null, |n| Value::Text(n.into())),
        ]
    };
    let change = |n: u8, op: i64, row: Vec<Value>| {
        let mut r = vec![lsn(n), Value::Int(op), Value::Null];
        r.extend(row);
        r
    };
    let full = vec![
        person(1, Some("Ada")),
        person(2, Some("Grace")),
        person(3, Some("")),
    ];
    let windows = [
        (
            "20261121101500000",
            vec![
                change(1, 4, person(1, Some("Ada L."))),
                change(2, 1, person(2, Some("Grace"))),
                change(3, 2, person(4, None)),
            ],
        ),
        (
            "20261121103000000",
            vec![
                change(4, 4, person(1, Some("Ada Lovelace"))),
                change(5, 2, person(2, Some("Grace H."))),
                change(6, 1, person(3, Some(""))),
            ],
        ),
    ];
    let mut out = serde_json::Map::new();
    for format in [Format::Csv, Format::Parquet] {
        let ext = format.extension();
        let doc = publish(blobs, format, &table, &["customer_id"], &captured).await;
        let part = format!("dbo/customers/full/load-1/part-00000.{ext}");
        write_file(blobs, &part, &doc, &captured, &full).await;
        let mut files = Vec::new();
        for (window, rows) in &windows {
            let name = format!("dbo/customers/incremental/2026/11/21/{window}.{ext}");
            write_file(blobs, &name, &doc, &file_columns, rows).await;
            files.push(download(blobs, &name).await);
        }
        let schema_file = download(
            blobs,
            &schema_doc::document_name(&doc.table, doc.schema_version),
        )
        .await;
        let prefix = if format == Format::Csv {
            ""
        } else {
            "parquet_"
        };
        out.insert(format!("{prefix}schema_file"), json!(schema_file));
        out.insert(
            format!("{prefix}full_load_files"),
            json!([download(blobs, &part).await]),
        );
        out.insert(format!("{ext}_files"), json!(files));
    }
    out.insert(
        "expected".into(),
        json!([[1, "Ada Lovelace"], [2, "Grace H."], [4, null]]),
    );
    Json::Object(out)
}

#[tokio::test]
async fn every_type_lands_for_the_readers() {
    let blobs = Azurite::shared().target(&unique_container("readers"));
    blobs.ensure_container().await.unwrap();
    let _ = std::fs::remove_dir_all(out_dir());
    let cases = json!({
        "every_type": every_type(&blobs).await,
        "upsert": upsert(&blobs).await,
    });
    std::fs::write(
        out_dir().join("cases.json"),
        serde_json::to_string_pretty(&cases).unwrap(),
    )
    .unwrap();
}

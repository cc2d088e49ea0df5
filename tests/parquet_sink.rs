//! The Parquet sink end to end: rows → `ParquetBlobSink` → block blob in a real Azurite → read
//! back with the blob API → decoded by the `parquet` crate's own Arrow reader. Every declared
//! type at its extremes, NULL against empty, the footer's key/value metadata, row groups that
//! leave memory before the commit, and a failed upload that leaves nothing behind.

mod common;

use std::sync::Arc;
use std::time::Duration;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Date32Type, Decimal128Type, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type,
    Time64NanosecondType, TimestampMicrosecondType, UInt8Type,
};
use arrow_array::{Array, RecordBatch};
use arrow_schema::DataType;
use bytes::Bytes;
use cdc_copy::cdc::{ColumnDesc, ColumnType, Length, RowSink, Value};
use cdc_copy::config::StorageAccount;
use cdc_copy::sink::blob::BlobTarget;
use cdc_copy::sink::parquet::{ParquetBlobSink, CONTENT_TYPE};
use cdc_copy::sink::retry::RetryPolicy;
use chrono::{FixedOffset, NaiveDate, NaiveDateTime, NaiveTime, TimeZone};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use common::azurite::{unique_container, Azurite};
use common::proxy::{Fault, Proxy, Rule};

fn columns() -> Arc<[ColumnDesc]> {
    let c = |name: &str, ty: ColumnType| ColumnDesc::new(name, ty, true);
    vec![
        ColumnDesc::lsn("__$start_lsn"),
        ColumnDesc::operation(),
        ColumnDesc::update_mask(),
        ColumnDesc::new("id", ColumnType::BigInt, false),
        c("flag", ColumnType::Bit),
        c("tiny", ColumnType::TinyInt),
        c("small", ColumnType::SmallInt),
        c("int", ColumnType::Int),
        c("real", ColumnType::Real),
        c("float", ColumnType::Float),
        c(
            "dec",
            ColumnType::Decimal {
                precision: 38,
                scale: 10,
            },
        ),
        c("money", ColumnType::Money),
        c("smallmoney", ColumnType::SmallMoney),
        c("text", ColumnType::NVarChar(Length::Max)),
        c("fixed", ColumnType::Binary(Length::Of(4))),
        c("blob", ColumnType::VarBinary(Length::Max)),
        c("date", ColumnType::Date),
        c("time", ColumnType::Time { scale: 7 }),
        c("dt2", ColumnType::DateTime2 { scale: 7 }),
        c("dto", ColumnType::DateTimeOffset { scale: 7 }),
        c("guid", ColumnType::UniqueIdentifier),
        c("shape", ColumnType::Other("hierarchyid".into())),
    ]
    .into()
}

fn at(y: i32, m: u32, d: u32, h: u32, mi: u32, s: u32, nano: u32) -> NaiveDateTime {
    NaiveDate::from_ymd_opt(y, m, d)
        .unwrap()
        .and_hms_nano_opt(h, mi, s, nano)
        .unwrap()
}

/// Three rows: the lows, the highs, and NULLs (with `''` for the text, so NULL and empty
/// differ).
fn rows() -> Vec<Vec<Value>> {
    let max_dec = 10i128.pow(38) - 1;
    let lsn = |b: u8| Value::Binary(vec![0, 0, 0, 0x2A, 0, 0, 1, 0xF0, 0, b]);
    let low = vec![
        lsn(1),
        Value::Int(1),
        Value::Binary(Vec::new()),
        Value::Int(i64::MIN),
        Value::Bit(false),
        Value::Int(0),
        Value::Int(i16::MIN.into()),
        Value::Int(i32::MIN.into()),
        Value::Real(-3.4e38),
        Value::Float(-1.79e308),
        Value::Decimal {
            unscaled: -max_dec,
            scale: 10,
        },
        Value::Decimal {
            unscaled: i128::from(i64::MIN),
            scale: 4,
        },
        Value::Decimal {
            unscaled: i128::from(i32::MIN),
            scale: 4,
        },
        Value::Text(String::new()),
        Value::Binary(vec![0; 4]),
        Value::Binary(Vec::new()),
        Value::Date(NaiveDate::from_ymd_opt(1, 1, 1).unwrap()),
        Value::Time(NaiveTime::from_hms_opt(0, 0, 0).unwrap()),
        Value::DateTime(at(1, 1, 1, 0, 0, 0, 0)),
        Value::DateTimeOffset(
            FixedOffset::east_opt(14 * 3600)
                .unwrap()
                .from_local_datetime(&at(1, 1, 2, 0, 0, 0, 0))
                .unwrap(),
        ),
        Value::Guid(uuid::Uuid::nil()),
        Value::Binary(vec![0x58]),
    ];
    let high = vec![
        lsn(2),
        Value::Int(4),
        Value::Binary(vec![0xFF; 128]),
        Value::Int(i64::MAX),
        Value::Bit(true),
        Value::Int(255),
        Value::Int(i16::MAX.into()),
        Value::Int(i32::MAX.into()),
        Value::Real(3.4e38),
        Value::Float(1.79e308),
        Value::Decimal {
            unscaled: max_dec,
            scale: 10,
        },
        Value::Decimal {
            unscaled: i128::from(i64::MAX),
            scale: 4,
        },
        Value::Decimal {
            unscaled: i128::from(i32::MAX),
            scale: 4,
        },
        Value::Text("Zürich, \"東京\"\r\n".into()),
        Value::Binary(vec![0xFF; 4]),
        Value::Binary(vec![0xAB; 8000]),
        Value::Date(NaiveDate::from_ymd_opt(9999, 12, 31).unwrap()),
        Value::Time(NaiveTime::from_hms_nano_opt(23, 59, 59, 999_999_900).unwrap()),
        Value::DateTime(at(9999, 12, 31, 23, 59, 59, 999_999_900)),
        Value::DateTimeOffset(
            FixedOffset::west_opt(14 * 3600)
                .unwrap()
                .from_local_datetime(&at(9999, 12, 30, 23, 59, 59, 999_999_900))
                .unwrap(),
        ),
        Value::Guid("6F9619FF-8B86-D011-B42D-00C04FC964FF".parse().unwrap()),
        Value::Text("/1/2/".into()),
    ];
    let mut nulls = vec![lsn(3), Value::Int(2), Value::Null, Value::Int(0)];
    nulls.resize(low.len(), Value::Null);
    vec![low, high, nulls]
}

fn read(bytes: Bytes) -> (Vec<RecordBatch>, parquet::file::metadata::ParquetMetaData) {
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes).unwrap();
    let metadata = builder.metadata().as_ref().clone();
    let batches = builder
        .build()
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    (batches, metadata)
}

fn micros(dt: NaiveDateTime) -> i64 {
    dt.and_utc().timestamp_micros()
}

#[tokio::test]
async fn every_type_round_trips_through_azurite_exactly() {
    let azurite = Azurite::shared();
    let blobs = azurite.target(&unique_container("parquet"));
    blobs.ensure_container().await.unwrap();
    let metadata = vec![
        ("table".to_string(), "dbo.typed".to_string()),
        ("from_lsn".to_string(), "0x0000002A0000010F0001".to_string()),
    ];
    let writer = blobs.writer("dbo/typed/1.parquet", metadata, 64 * 1024);
    let columns = columns();
    let mut sink = ParquetBlobSink::new(writer, columns.clone());
    let names: Vec<String> = columns.iter().map(|c| c.name.clone()).collect();
    sink.columns(&names).await.unwrap();
    for row in rows() {
        sink.row(&row).await.unwrap();
    }
    sink.set_metadata("rows", "3".into());
    sink.finish().await.unwrap();

    let props = blobs
        .properties("dbo/typed/1.parquet")
        .await
        .unwrap()
        .unwrap();
    let bytes = blobs.read("dbo/typed/1.parquet").await.unwrap().unwrap();
    assert_eq!(props.size, bytes.len() as u64);
    assert_eq!(props.content_type.as_deref(), Some(CONTENT_TYPE));
    let (batches, meta) = read(bytes);
    // Every blob metadata entry is in the footer too, the row count included.
    let kv: Vec<(String, String)> = meta
        .file_metadata()
        .key_value_metadata()
        .unwrap()
        .iter()
        .filter(|kv| kv.key != "ARROW:schema")
        .map(|kv| (kv.key.clone(), kv.value.clone().unwrap_or_default()))
        .collect();
    assert_eq!(
        kv,
        [
            ("table".to_string(), "dbo.typed".to_string()),
            ("from_lsn".to_string(), "0x0000002A0000010F0001".to_string()),
            ("rows".to_string(), "3".to_string()),
        ]
    );
    assert_eq!(meta.file_metadata().num_rows(), 3);
    assert_eq!(batches.len(), 1);
    let b = &batches[0];
    let schema = b.schema();
    for (field, column) in schema.fields().iter().zip(columns.iter()) {
        assert_eq!(field.name(), &column.name);
        assert_eq!(field.is_nullable(), column.nullable, "{}", column.name);
    }
    let col = |name: &str| b.column_by_name(name).unwrap().clone();

    let lsn = col("__$start_lsn");
    assert_eq!(lsn.data_type(), &DataType::FixedSizeBinary(10));
    assert_eq!(
        lsn.as_fixed_size_binary().value(1),
        [0, 0, 0, 0x2A, 0, 0, 1, 0xF0, 0, 2]
    );
    assert_eq!(
        col("__$operation").as_primitive::<Int32Type>().values(),
        &[1, 4, 2]
    );
    let mask = col("__$update_mask");
    assert_eq!(mask.as_binary::<i32>().value(0), b"");
    assert_eq!(mask.as_binary::<i32>().value(1), &[0xFF; 128][..]);
    assert!(mask.is_null(2));
    assert_eq!(
        col("id").as_primitive::<Int64Type>().values(),
        &[i64::MIN, i64::MAX, 0]
    );
    let flag = col("flag");
    assert!(!flag.as_boolean().value(0) && flag.as_boolean().value(1) && flag.is_null(2));
    assert_eq!(
        &col("tiny").as_primitive::<UInt8Type>().values()[..2],
        &[0, 255]
    );
    assert_eq!(
        &col("small").as_primitive::<Int16Type>().values()[..2],
        &[i16::MIN, i16::MAX]
    );
    assert_eq!(
        &col("int").as_primitive::<Int32Type>().values()[..2],
        &[i32::MIN, i32::MAX]
    );
    assert_eq!(
        &col("real").as_primitive::<Float32Type>().values()[..2],
        &[-3.4e38, 3.4e38]
    );
    assert_eq!(
        &col("float").as_primitive::<Float64Type>().values()[..2],
        &[-1.79e308, 1.79e308]
    );
    let dec = col("dec");
    assert_eq!(dec.data_type(), &DataType::Decimal128(38, 10));
    let max_dec = 10i128.pow(38) - 1;
    assert_eq!(
        &dec.as_primitive::<Decimal128Type>().values()[..2],
        &[-max_dec, max_dec]
    );
    assert!(dec.is_null(2));
    let money = col("money");
    assert_eq!(money.data_type(), &DataType::Decimal128(19, 4));
    assert_eq!(
        &money.as_primitive::<Decimal128Type>().values()[..2],
        &[i128::from(i64::MIN), i128::from(i64::MAX)]
    );
    let small = col("smallmoney");
    assert_eq!(small.data_type(), &DataType::Decimal128(10, 4));
    assert_eq!(
        &small.as_primitive::<Decimal128Type>().values()[..2],
        &[i128::from(i32::MIN), i128::from(i32::MAX)]
    );
    let text = col("text");
    let text = text.as_string::<i32>();
    assert_eq!(text.value(0), "", "empty string is a value");
    assert!(!text.is_null(0));
    assert_eq!(text.value(1), "Zürich, \"東京\"\r\n");
    assert!(text.is_null(2), "NULL is NULL");
    assert_eq!(col("fixed").as_fixed_size_binary().value(1), [0xFF; 4]);
    let blob = col("blob");
    assert_eq!(blob.as_binary::<i32>().value(0), b"");
    assert_eq!(blob.as_binary::<i32>().value(1), &[0xAB; 8000][..]);
    assert_eq!(
        &col("date").as_primitive::<Date32Type>().values()[..2],
        &[-719_162, 2_932_896]
    );
    assert_eq!(
        &col("time").as_primitive::<Time64NanosecondType>().values()[..2],
        &[0, 86_399_999_999_900]
    );
    let dt2 = col("dt2");
    assert_eq!(
        &dt2.as_primitive::<TimestampMicrosecondType>().values()[..2],
        // The 7th digit is cut: .9999999 → .999999.
        &[
            micros(at(1, 1, 1, 0, 0, 0, 0)),
            micros(at(9999, 12, 31, 23, 59, 59, 999_999_000))
        ]
    );
    let dto = col("dto");
    let dto = dto.as_struct();
    let utc = dto.column(0).as_primitive::<TimestampMicrosecondType>();
    let offset = dto.column(1).as_primitive::<Int16Type>();
    assert_eq!(
        &utc.values()[..2],
        &[
            micros(at(1, 1, 1, 10, 0, 0, 0)),
            micros(at(9999, 12, 31, 13, 59, 59, 999_999_000))
        ]
    );
    assert_eq!(&offset.values()[..2], &[14 * 60, -14 * 60]);
    assert!(dto.is_null(2));
    let guid = col("guid");
    assert_eq!(guid.as_fixed_size_binary().value(0), [0; 16]);
    assert_eq!(
        guid.as_fixed_size_binary().value(1),
        [
            0x6F, 0x96, 0x19, 0xFF, 0x8B, 0x86, 0xD0, 0x11, 0xB4, 0x2D, 0x00, 0xC0, 0x4F, 0xC9,
            0x64, 0xFF
        ],
        "RFC 4122 order: the bytes as the canonical text reads"
    );
    let shape = col("shape");
    assert_eq!(shape.as_string::<i32>().value(0), "0x58");
    assert_eq!(shape.as_string::<i32>().value(1), "/1/2/");
}

#[tokio::test]
async fn a_value_that_does_not_fit_its_column_is_refused_by_name() {
    let azurite = Azurite::shared();
    let blobs = azurite.target(&unique_container("parquet-bad"));
    let columns: Arc<[ColumnDesc]> = vec![
        ColumnDesc::new("id", ColumnType::Int, false),
        ColumnDesc::new("tiny", ColumnType::TinyInt, true),
        ColumnDesc::new(
            "amount",
            ColumnType::Decimal {
                precision: 5,
                scale: 2,
            },
            true,
        ),
    ]
    .into();
    let cases: Vec<(Vec<Value>, &str)> = vec![
        (
            vec![Value::Null, Value::Null, Value::Null],
            "id is declared NOT NULL",
        ),
        (
            vec![Value::Int(1), Value::Int(256), Value::Null],
            "column tiny is declared tinyint but the row holds the integer 256",
        ),
        (
            vec![
                Value::Int(1),
                Value::Null,
                Value::Decimal {
                    unscaled: 1234,
                    scale: 3,
                },
            ],
            "column amount is declared decimal(5,2) but the row holds a decimal of scale 3",
        ),
        (
            vec![Value::Text("1".into()), Value::Null, Value::Null],
            "column id is declared int but the row holds text",
        ),
    ];
    for (row, message) in cases {
        let writer = blobs.writer("bad.parquet", vec![], 64 * 1024);
        let mut sink = ParquetBlobSink::new(writer, columns.clone());
        let err = sink.row(&row).await.unwrap_err();
        assert!(!err.is_transient());
        assert!(err.to_string().contains(message), "{err} ∌ {message}");
    }
}

fn narrow() -> Arc<[ColumnDesc]> {
    vec![
        ColumnDesc::new("id", ColumnType::Int, false),
        ColumnDesc::new("name", ColumnType::VarChar(Length::Of(40)), true),
    ]
    .into()
}

fn narrow_row(i: i32) -> Vec<Value> {
    vec![
        Value::Int(i.into()),
        Value::Text(format!("customer number {i} of many")),
    ]
}

/// Memory stays flat: row groups leave the sink as they fill and their blocks are staged
/// before the footer, so the bytes held never grow with the file.
#[tokio::test]
async fn row_groups_are_staged_as_blocks_before_the_footer() {
    let azurite = Azurite::shared();
    let blobs = azurite.target(&unique_container("parquet-groups"));
    blobs.ensure_container().await.unwrap();
    let block = 64 * 1024;
    let writer = blobs.writer("groups.parquet", vec![], block);
    let mut sink = ParquetBlobSink::new(writer, narrow()).with_row_group_bytes(128 * 1024);
    let rows = 100_000;
    let mut staged_while_writing = Vec::new();
    for i in 0..rows {
        sink.row(&narrow_row(i)).await.unwrap();
        if i % 20_000 == 19_999 {
            staged_while_writing.push((sink.row_groups(), sink.bytes()));
        }
    }
    assert!(
        blobs.read("groups.parquet").await.unwrap().is_none(),
        "invisible before the commit"
    );
    // Each checkpoint has flushed more row groups and staged more bytes than the last.
    for pair in staged_while_writing.windows(2) {
        assert!(
            pair[1].0 > pair[0].0 && pair[1].1 > pair[0].1,
            "{staged_while_writing:?}"
        );
    }
    let summary = sink.finish().await.unwrap();
    assert!(summary.blocks > 4, "{summary:?}");
    let (batches, meta) = read(blobs.read("groups.parquet").await.unwrap().unwrap());
    assert!(
        meta.num_row_groups() > 4,
        "{} row groups",
        meta.num_row_groups()
    );
    let ids: Vec<i32> = batches
        .iter()
        .flat_map(|b| b.column(0).as_primitive::<Int32Type>().values().to_vec())
        .collect();
    assert_eq!(ids, (0..rows).collect::<Vec<_>>(), "every row, in order");
}

/// All or nothing: a Put Block that keeps failing fails the file, and no blob appears.
#[tokio::test]
async fn a_failed_upload_leaves_no_blob() {
    let azurite = Azurite::shared();
    let container = unique_container("parquet-fail");
    azurite.target(&container).ensure_container().await.unwrap();
    let proxy = Proxy::start(azurite.blob_port).await;
    let blobs = BlobTarget::new(
        &StorageAccount::from_connection_string(&proxy.connection_string()).unwrap(),
        &container,
    )
    .unwrap()
    .with_retry(RetryPolicy {
        max_tries: 2,
        initial_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(20),
        try_timeout: Duration::from_millis(2000),
    });
    proxy.add(Rule::put_block(Fault::Status(503), 1000));
    let writer = blobs.writer("failed.parquet", vec![], 64 * 1024);
    let mut sink = ParquetBlobSink::new(writer, narrow()).with_row_group_bytes(64 * 1024);
    let mut failed = false;
    for i in 0..50_000 {
        if sink.row(&narrow_row(i)).await.is_err() {
            failed = true;
            break;
        }
    }
    if !failed {
        assert!(sink.finish().await.is_err(), "the commit must fail");
    }
    proxy.heal();
    assert!(
        azurite
            .target(&container)
            .read("failed.parquet")
            .await
            .unwrap()
            .is_none(),
        "no blob after a failed upload"
    );
    assert!(!proxy.put_blocks().is_empty(), "blocks were attempted");
}

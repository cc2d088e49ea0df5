//! End to end through the sink: rows → CSV → block blob in a real Azurite → read back with the
//! blob API → parsed by an independent CSV parser (the `csv` crate). Many small blocks, awkward
//! values, and the bytes must equal a local encoding of the same rows.

mod common;

use std::sync::Arc;

use cdc_copy::cdc::{RowSink, Value};
use cdc_copy::sink::csv::{write_header, write_row};
use cdc_copy::sink::rows::CsvBlobSink;
use chrono::{NaiveDate, TimeZone};

use common::azurite::{unique_container, Azurite};

fn row(i: i64) -> Vec<Value> {
    let date = NaiveDate::from_ymd_opt(2026, 11, 21)
        .unwrap()
        .and_hms_nano_opt(10, 15, 0, 123_456_700)
        .unwrap();
    vec![
        Value::Int(i),
        Value::Text(format!("name {i}, \"quoted\"")),
        if i % 3 == 0 {
            Value::Null
        } else {
            Value::Text(if i % 3 == 1 {
                String::new()
            } else {
                "Zürich\r\n東京".into()
            })
        },
        Value::Decimal {
            unscaled: -i as i128 * 1005,
            scale: 3,
        },
        Value::Binary(vec![0, 0, 0, 0x2A, 0, 0, 1, 0xF0, 0, i as u8]),
        Value::DateTime(date),
        Value::DateTimeOffset(
            chrono::FixedOffset::east_opt(-5 * 3600)
                .unwrap()
                .from_utc_datetime(&date),
        ),
        Value::Bit(i % 2 == 0),
    ]
}

#[tokio::test]
async fn rows_land_in_azurite_byte_identical_and_parse_back() {
    let azurite = Azurite::shared();
    let blobs = azurite.target(&unique_container("sink"));
    blobs.ensure_container().await.unwrap();
    let names: Vec<String> = [
        "id",
        "name",
        "city",
        "amount",
        "lsn",
        "at",
        "at_offset",
        "active",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let block_size = 64 * 1024;
    let mut sink = CsvBlobSink::new(
        blobs.writer("e2e/rows.csv", vec![], block_size),
        block_size,
        Arc::from(Vec::new()),
    );
    sink.columns(&names).await.unwrap();
    let mut expected = Vec::new();
    write_header(&mut expected, &names);
    for i in 0..20_000 {
        let r = row(i);
        sink.row(&r).await.unwrap();
        write_row(&mut expected, &r, &[]);
    }
    assert!(
        blobs.read("e2e/rows.csv").await.unwrap().is_none(),
        "invisible before the commit"
    );
    let summary = sink.finish().await.unwrap();
    assert!(summary.blocks > 10, "many blocks: {}", summary.blocks);
    let bytes = blobs.read("e2e/rows.csv").await.unwrap().unwrap();
    assert_eq!(bytes.len() as u64, summary.bytes);
    assert!(
        bytes[..] == expected[..],
        "the blob holds exactly the encoded bytes"
    );

    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(&bytes[..]);
    assert_eq!(reader.headers().unwrap().iter().collect::<Vec<_>>(), names);
    let mut count = 0;
    for (i, record) in reader.records().enumerate() {
        let record = record.unwrap();
        assert_eq!(record.len(), names.len());
        assert_eq!(record[0].parse::<i64>().unwrap(), i as i64);
        assert_eq!(&record[1], format!("name {i}, \"quoted\""));
        let city = match i % 3 {
            0 | 1 => "",
            _ => "Zürich\r\n東京",
        };
        assert_eq!(&record[2], city);
        assert_eq!(&record[5], "2026-11-21T10:15:00.1234567");
        assert_eq!(&record[6], "2026-11-21T05:15:00.1234567-05:00");
        assert_eq!(&record[7], if i % 2 == 0 { "1" } else { "0" });
        count += 1;
    }
    assert_eq!(count, 20_000);
}

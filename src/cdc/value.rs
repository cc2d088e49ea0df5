//! The values a SQL Server row can hold, independent of the driver.
//!
//! The CSV encoder, the in-memory CDC model and the tiberius decoder all meet here, so the
//! rendering rules (docs/csv-format.md) are decided once, in the encoder, for one small enum
//! rather than for every driver type.

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime};
use serde::{Deserialize, Serialize};

/// One column value. Integer types of every width share `Int`; every character type shares
/// `Text`; `binary`, `varbinary`, `image`, `rowversion` share `Binary`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "t", content = "v")]
pub enum Value {
    Null,
    Bit(bool),
    Int(i64),
    Real(f32),
    Float(f64),
    /// decimal, numeric, money, smallmoney: `unscaled / 10^scale`, exact.
    Decimal {
        unscaled: i128,
        scale: u8,
    },
    Text(String),
    Binary(Vec<u8>),
    Date(NaiveDate),
    Time(NaiveTime),
    /// datetime, datetime2, smalldatetime (no zone).
    DateTime(NaiveDateTime),
    DateTimeOffset(DateTime<FixedOffset>),
    Guid(uuid::Uuid),
}

//! tiberius values to and from [`Value`].
//!
//! The rest of the crate only knows [`Value`]; this is the one place that knows how the
//! driver represents each SQL Server type, so that the CSV rules are decided once in the
//! encoder. Two driver quirks are handled here:
//! - tiberius decodes `money`/`smallmoney` to `f64`. Money is a fixed-point number with four
//!   decimals, so the value is turned back into `Decimal { scale: 4 }` by rounding
//!   `value × 10⁴`; that is exact while `|value| < 2⁵³ / 10⁴ ≈ 9·10¹¹` (every amount a
//!   customer table plausibly holds), beyond that the last digits are those of the `f64`.
//! - `xml` arrives as its own type and is rendered as text.

use std::borrow::Cow;

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime};
use tiberius::numeric::Numeric;
use tiberius::{ColumnData, ColumnType, FromSql, ToSql};

use crate::cdc::{KeyType, Lsn, Value};

/// Converts one cell. `column_type` is the column's declared type (only money needs it).
pub fn to_value(data: ColumnData<'static>, column_type: ColumnType) -> Result<Value, String> {
    let money = matches!(column_type, ColumnType::Money | ColumnType::Money4);
    Ok(match data {
        ColumnData::U8(v) => v.map_or(Value::Null, |v| Value::Int(v.into())),
        ColumnData::I16(v) => v.map_or(Value::Null, |v| Value::Int(v.into())),
        ColumnData::I32(v) => v.map_or(Value::Null, |v| Value::Int(v.into())),
        ColumnData::I64(v) => v.map_or(Value::Null, Value::Int),
        ColumnData::F32(v) => v.map_or(Value::Null, Value::Real),
        ColumnData::F64(None) => Value::Null,
        ColumnData::F64(Some(v)) if money => Value::Decimal {
            unscaled: (v * 10_000.0).round() as i128,
            scale: 4,
        },
        ColumnData::F64(Some(v)) => Value::Float(v),
        ColumnData::Bit(v) => v.map_or(Value::Null, Value::Bit),
        ColumnData::String(v) => v.map_or(Value::Null, |s| Value::Text(s.into_owned())),
        ColumnData::Guid(v) => v.map_or(Value::Null, Value::Guid),
        ColumnData::Binary(v) => v.map_or(Value::Null, |b| Value::Binary(b.into_owned())),
        ColumnData::Numeric(v) => v.map_or(Value::Null, |n| Value::Decimal {
            unscaled: n.value(),
            scale: n.scale(),
        }),
        ColumnData::Xml(v) => v.map_or(Value::Null, |x| Value::Text(x.into_owned().into_string())),
        data @ (ColumnData::DateTime(_)
        | ColumnData::SmallDateTime(_)
        | ColumnData::DateTime2(_)) => NaiveDateTime::from_sql(&data)
            .map_err(|e| e.to_string())?
            .map_or(Value::Null, Value::DateTime),
        data @ ColumnData::Date(_) => NaiveDate::from_sql(&data)
            .map_err(|e| e.to_string())?
            .map_or(Value::Null, Value::Date),
        data @ ColumnData::Time(_) => NaiveTime::from_sql(&data)
            .map_err(|e| e.to_string())?
            .map_or(Value::Null, Value::Time),
        data @ ColumnData::DateTimeOffset(_) => DateTime::<FixedOffset>::from_sql(&data)
            .map_err(|e| e.to_string())?
            .map_or(Value::Null, Value::DateTimeOffset),
    })
}

/// A key value as a keyset parameter for a key column of type `ty`. The statement casts it
/// to the declared type ([`KeyType::cast`]), so the wire type only has to carry the value
/// exactly: integers as `bigint`, text as `nvarchar` (tiberius binds strings that way),
/// times as `datetime2(7)`, which holds every `datetime`/`smalldatetime` value exactly. A
/// value that does not fit the column's type (a resume key saved before the table changed)
/// is refused.
pub fn to_param(value: &Value, ty: &KeyType) -> Result<ColumnData<'static>, String> {
    use KeyType as K;
    Ok(match (value, ty) {
        (Value::Int(i), K::TinyInt | K::SmallInt | K::Int | K::BigInt) => ColumnData::I64(Some(*i)),
        (Value::Bit(b), K::Bit) => ColumnData::Bit(Some(*b)),
        (Value::Real(f), K::Real) => ColumnData::F32(Some(*f)),
        (Value::Float(f), K::Float) => ColumnData::F64(Some(*f)),
        (Value::Decimal { unscaled, scale }, K::Decimal { .. } | K::Money | K::SmallMoney) => {
            ColumnData::Numeric(Some(Numeric::new_with_scale(*unscaled, *scale)))
        }
        (
            Value::Text(s),
            K::Char { .. } | K::VarChar { .. } | K::NChar { .. } | K::NVarChar { .. },
        ) => ColumnData::String(Some(Cow::Owned(s.clone()))),
        (Value::Binary(b), K::Binary { .. } | K::VarBinary { .. } | K::RowVersion) => {
            ColumnData::Binary(Some(Cow::Owned(b.clone())))
        }
        (Value::Date(d), K::Date) => owned(d.to_sql()),
        (Value::Time(t), K::Time { .. }) => owned(t.to_sql()),
        (Value::DateTime(dt), K::DateTime | K::DateTime2 { .. } | K::SmallDateTime) => {
            owned(dt.to_sql())
        }
        (Value::DateTimeOffset(dt), K::DateTimeOffset { .. }) => owned(dt.to_sql()),
        (Value::Guid(g), K::UniqueIdentifier) => ColumnData::Guid(Some(*g)),
        (value, ty) => return Err(format!("value {value:?} does not fit the key type {ty}")),
    })
}

/// Date and time parameters hold no borrowed data; this just restates the lifetime.
fn owned(data: ColumnData<'_>) -> ColumnData<'static> {
    match data {
        ColumnData::Date(v) => ColumnData::Date(v),
        ColumnData::Time(v) => ColumnData::Time(v),
        ColumnData::DateTime2(v) => ColumnData::DateTime2(v),
        ColumnData::DateTimeOffset(v) => ColumnData::DateTimeOffset(v),
        ColumnData::DateTime(v) => ColumnData::DateTime(v),
        other => unreachable!("date/time parameter became {other:?}"),
    }
}

/// An LSN as a `binary(10)`-compatible parameter (sent as `varbinary(8000)`).
pub fn lsn_param(lsn: &Lsn) -> ColumnData<'static> {
    ColumnData::Binary(Some(Cow::Owned(lsn.0.to_vec())))
}

/// An optional LSN parameter (NULL when absent).
pub fn opt_lsn_param(lsn: Option<&Lsn>) -> ColumnData<'static> {
    match lsn {
        Some(lsn) => lsn_param(lsn),
        None => ColumnData::Binary(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tiberius::numeric::Numeric;

    #[test]
    fn cells_become_values() {
        let date = NaiveDate::from_ymd_opt(2024, 2, 29).unwrap();
        let time = NaiveTime::from_hms_nano_opt(23, 59, 58, 123_456_700).unwrap();
        let naive = NaiveDateTime::new(date, time);
        let offset = FixedOffset::east_opt(2 * 3600).unwrap();
        let dto = naive.and_local_timezone(offset).unwrap();
        let guid = uuid::Uuid::parse_str("6f9619ff-8b86-d011-b42d-00c04fc964ff").unwrap();
        let cases: Vec<(ColumnData<'static>, ColumnType, Value)> = vec![
            (ColumnData::U8(Some(7)), ColumnType::Int1, Value::Int(7)),
            (ColumnData::I16(Some(-7)), ColumnType::Int2, Value::Int(-7)),
            (
                ColumnData::I32(Some(1 << 30)),
                ColumnType::Int4,
                Value::Int(1 << 30),
            ),
            (
                ColumnData::I64(Some(i64::MIN)),
                ColumnType::Int8,
                Value::Int(i64::MIN),
            ),
            (ColumnData::I64(None), ColumnType::Intn, Value::Null),
            (
                ColumnData::F32(Some(1.5)),
                ColumnType::Float4,
                Value::Real(1.5),
            ),
            (
                ColumnData::F64(Some(2.25)),
                ColumnType::Float8,
                Value::Float(2.25),
            ),
            (
                ColumnData::F64(Some(1234.5678)),
                ColumnType::Money,
                Value::Decimal {
                    unscaled: 12_345_678,
                    scale: 4,
                },
            ),
            (
                ColumnData::F64(Some(-0.0001)),
                ColumnType::Money4,
                Value::Decimal {
                    unscaled: -1,
                    scale: 4,
                },
            ),
            (ColumnData::F64(None), ColumnType::Money, Value::Null),
            (
                ColumnData::Bit(Some(true)),
                ColumnType::Bitn,
                Value::Bit(true),
            ),
            (ColumnData::Bit(None), ColumnType::Bitn, Value::Null),
            (
                ColumnData::Numeric(Some(Numeric::new_with_scale(-12345, 2))),
                ColumnType::Decimaln,
                Value::Decimal {
                    unscaled: -12345,
                    scale: 2,
                },
            ),
            (ColumnData::Numeric(None), ColumnType::Decimaln, Value::Null),
            (
                ColumnData::String(Some("Zoë".into())),
                ColumnType::NVarchar,
                Value::Text("Zoë".into()),
            ),
            (
                ColumnData::String(Some("".into())),
                ColumnType::BigVarChar,
                Value::Text(String::new()),
            ),
            (ColumnData::String(None), ColumnType::NVarchar, Value::Null),
            (
                ColumnData::Binary(Some(vec![0, 1, 0xFF].into())),
                ColumnType::BigVarBin,
                Value::Binary(vec![0, 1, 0xFF]),
            ),
            (
                ColumnData::Guid(Some(guid)),
                ColumnType::Guid,
                Value::Guid(guid),
            ),
            (
                naive.to_sql().clone_static(),
                ColumnType::Datetime2,
                Value::DateTime(naive),
            ),
            (
                ColumnData::DateTime2(None),
                ColumnType::Datetime2,
                Value::Null,
            ),
            (
                date.to_sql().clone_static(),
                ColumnType::Daten,
                Value::Date(date),
            ),
            (
                time.to_sql().clone_static(),
                ColumnType::Timen,
                Value::Time(time),
            ),
            (
                dto.to_sql().clone_static(),
                ColumnType::DatetimeOffsetn,
                Value::DateTimeOffset(dto),
            ),
            (
                ColumnData::DateTimeOffset(None),
                ColumnType::DatetimeOffsetn,
                Value::Null,
            ),
        ];
        for (data, ty, expected) in cases {
            let label = format!("{data:?}");
            assert_eq!(to_value(data, ty).unwrap(), expected, "{label}");
        }
    }

    trait CloneStatic {
        fn clone_static(self) -> ColumnData<'static>;
    }
    impl CloneStatic for ColumnData<'_> {
        fn clone_static(self) -> ColumnData<'static> {
            owned(self)
        }
    }

    #[test]
    fn params_round_trip_through_values() {
        use crate::cdc::Collation;
        let date = NaiveDate::from_ymd_opt(2001, 1, 1).unwrap();
        let ci_as = Collation::parse("SQL_Latin1_General_CP1_CI_AS").unwrap();
        let cases = [
            (Value::Int(42), KeyType::TinyInt),
            (Value::Int(i64::MIN), KeyType::BigInt),
            (
                Value::Text("O'Brien".into()),
                KeyType::VarChar {
                    length: 20,
                    collation: ci_as,
                },
            ),
            (Value::Binary(vec![1, 2]), KeyType::VarBinary { length: 8 }),
            (Value::Binary(vec![0; 8]), KeyType::RowVersion),
            (
                Value::Decimal {
                    unscaled: 314,
                    scale: 2,
                },
                KeyType::Decimal {
                    precision: 9,
                    scale: 2,
                },
            ),
            (
                Value::Decimal {
                    unscaled: 12_345,
                    scale: 4,
                },
                KeyType::Money,
            ),
            (Value::Bit(false), KeyType::Bit),
            (Value::Date(date), KeyType::Date),
            (
                Value::DateTime(date.and_hms_milli_opt(1, 2, 3, 7).unwrap()),
                KeyType::DateTime,
            ),
            (Value::Guid(uuid::Uuid::nil()), KeyType::UniqueIdentifier),
        ];
        for (value, ty) in cases {
            let column_type = match value {
                Value::Decimal { .. } => ColumnType::Decimaln,
                _ => ColumnType::Null,
            };
            let param = to_param(&value, &ty).unwrap();
            assert_eq!(to_value(param, column_type).unwrap(), value, "{ty}");
        }
        let mismatches = [
            (Value::Text("1".into()), KeyType::Int),
            (Value::Int(1), KeyType::VarBinary { length: 4 }),
            (Value::Null, KeyType::Int),
            (Value::Float(1.0), KeyType::Real),
        ];
        for (value, ty) in mismatches {
            assert!(to_param(&value, &ty).is_err(), "{value:?} as {ty}");
        }
        assert_eq!(
            lsn_param(&Lsn::MAX),
            ColumnData::Binary(Some(vec![0xFF; 10].into()))
        );
        assert_eq!(opt_lsn_param(None), ColumnData::Binary(None));
    }
}

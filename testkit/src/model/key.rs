//! A total order on key tuples, so the model can keep a table in a `BTreeMap` and group
//! change rows by key in a `HashMap`.
//!
//! `Value` holds floats, so it has no `Eq`/`Ord`/`Hash` of its own; keys need all three and
//! they must agree with each other (equal keys hash equally). The order is SQL Server's where
//! that is cheap to follow (numbers numerically, `uniqueidentifier` in SQL Server's byte
//! order) and plain byte order elsewhere (text is compared by code point, not by a
//! collation: see docs/model.md).

use std::cmp::Ordering;
use std::hash::{Hash, Hasher};

use cdc_copy::cdc::Value;

/// A key tuple (the values of a table's key columns, in key order) with a total order.
#[derive(Debug, Clone)]
pub struct Key(pub Vec<Value>);

impl Key {
    pub fn values(&self) -> &[Value] {
        &self.0
    }
}

impl From<Vec<Value>> for Key {
    fn from(values: Vec<Value>) -> Key {
        Key(values)
    }
}

impl From<&[Value]> for Key {
    fn from(values: &[Value]) -> Key {
        Key(values.to_vec())
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Key {}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Key) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Key {
    fn cmp(&self, other: &Key) -> Ordering {
        cmp_keys(&self.0, &other.0)
    }
}

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_usize(self.0.len());
        for value in &self.0 {
            hash_value(value, state);
        }
    }
}

/// Lexicographic order of two key tuples under [`cmp_values`].
pub fn cmp_keys(a: &[Value], b: &[Value]) -> Ordering {
    for (x, y) in a.iter().zip(b) {
        match cmp_values(x, y) {
            Ordering::Equal => continue,
            other => return other,
        }
    }
    a.len().cmp(&b.len())
}

/// Variant rank: values of different types (which a well-typed key column never mixes)
/// still get a deterministic order. NULL sorts first, as in SQL Server.
fn rank(value: &Value) -> u8 {
    match value {
        Value::Null => 0,
        Value::Bit(_) => 1,
        Value::Int(_) => 2,
        Value::Real(_) => 3,
        Value::Float(_) => 4,
        Value::Decimal { .. } => 5,
        Value::Text(_) => 6,
        Value::Binary(_) => 7,
        Value::Date(_) => 8,
        Value::Time(_) => 9,
        Value::DateTime(_) => 10,
        Value::DateTimeOffset(_) => 11,
        Value::Guid(_) => 12,
    }
}

/// A total order on values: numeric for numbers (floats by `total_cmp`), decimals by value
/// whatever their scale, `datetimeoffset` by instant, `uniqueidentifier` as SQL Server sorts
/// it, text and binary bytewise.
pub fn cmp_values(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::Null, Value::Null) => Ordering::Equal,
        (Value::Bit(x), Value::Bit(y)) => x.cmp(y),
        (Value::Int(x), Value::Int(y)) => x.cmp(y),
        (Value::Real(x), Value::Real(y)) => x.total_cmp(y),
        (Value::Float(x), Value::Float(y)) => x.total_cmp(y),
        (
            Value::Decimal {
                unscaled: ua,
                scale: sa,
            },
            Value::Decimal {
                unscaled: ub,
                scale: sb,
            },
        ) => cmp_decimal((*ua, *sa), (*ub, *sb)),
        (Value::Text(x), Value::Text(y)) => x.cmp(y),
        (Value::Binary(x), Value::Binary(y)) => x.cmp(y),
        (Value::Date(x), Value::Date(y)) => x.cmp(y),
        (Value::Time(x), Value::Time(y)) => x.cmp(y),
        (Value::DateTime(x), Value::DateTime(y)) => x.cmp(y),
        (Value::DateTimeOffset(x), Value::DateTimeOffset(y)) => x.cmp(y),
        (Value::Guid(x), Value::Guid(y)) => sql_guid_bytes(x).cmp(&sql_guid_bytes(y)),
        _ => rank(a).cmp(&rank(b)),
    }
}

/// The bytes of a GUID in the order SQL Server compares `uniqueidentifier`: the last six
/// bytes (node) first, then the clock sequence, then the first three groups with their
/// least significant byte first (SqlGuid comparison order 10..15, 8, 9, 6, 7, 4, 5, 0..3 of
/// the little-endian `Guid.ToByteArray()` layout, restated on RFC 4122 byte order).
fn sql_guid_bytes(guid: &uuid::Uuid) -> [u8; 16] {
    const ORDER: [usize; 16] = [10, 11, 12, 13, 14, 15, 8, 9, 7, 6, 5, 4, 3, 2, 1, 0];
    let bytes = guid.as_bytes();
    let mut out = [0u8; 16];
    for (slot, index) in out.iter_mut().zip(ORDER) {
        *slot = bytes[index];
    }
    out
}

/// Strips trailing zeros so that equal decimals have one representation (1.10 == 1.1).
fn normalize_decimal(mut unscaled: i128, mut scale: u8) -> (i128, u8) {
    while scale > 0 && unscaled % 10 == 0 {
        unscaled /= 10;
        scale -= 1;
    }
    (unscaled, scale)
}

fn cmp_decimal(a: (i128, u8), b: (i128, u8)) -> Ordering {
    let (ua, sa) = normalize_decimal(a.0, a.1);
    let (ub, sb) = normalize_decimal(b.0, b.1);
    // Bring both to the larger scale; if that overflows, the scaled value is larger in
    // magnitude than anything an i128 holds, so its sign decides.
    let scale_up =
        |u: i128, by: u8| -> Option<i128> { 10i128.checked_pow(by.into())?.checked_mul(u) };
    match sa.cmp(&sb) {
        Ordering::Equal => ua.cmp(&ub),
        Ordering::Less => match scale_up(ua, sb - sa) {
            Some(x) => x.cmp(&ub),
            None => 0.cmp(&ua).reverse(),
        },
        Ordering::Greater => match scale_up(ub, sa - sb) {
            Some(y) => ua.cmp(&y),
            None => 0.cmp(&ub),
        },
    }
}

fn hash_value<H: Hasher>(value: &Value, state: &mut H) {
    state.write_u8(rank(value));
    match value {
        Value::Null => {}
        Value::Bit(x) => x.hash(state),
        Value::Int(x) => x.hash(state),
        Value::Real(x) => x.to_bits().hash(state),
        Value::Float(x) => x.to_bits().hash(state),
        Value::Decimal { unscaled, scale } => normalize_decimal(*unscaled, *scale).hash(state),
        Value::Text(x) => x.hash(state),
        Value::Binary(x) => x.hash(state),
        Value::Date(x) => x.hash(state),
        Value::Time(x) => x.hash(state),
        Value::DateTime(x) => x.hash(state),
        Value::DateTimeOffset(x) => x.naive_utc().hash(state),
        Value::Guid(x) => x.hash(state),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::hash_map::DefaultHasher;

    fn hash_of(key: &Key) -> u64 {
        let mut hasher = DefaultHasher::new();
        key.hash(&mut hasher);
        hasher.finish()
    }

    fn dec(unscaled: i128, scale: u8) -> Value {
        Value::Decimal { unscaled, scale }
    }

    #[test]
    fn value_order_table() {
        use Ordering::*;
        let guid = |s: &str| Value::Guid(s.parse().unwrap());
        let cases = [
            (Value::Int(-5), Value::Int(3), Less),
            (Value::Null, Value::Int(i64::MIN), Less),
            (dec(110, 2), dec(11, 1), Equal),
            (dec(15, 1), dec(2, 0), Less),
            (dec(i128::MAX, 0), dec(1, 5), Greater),
            (dec(-1, 0), dec(i128::MAX, 30), Less),
            (Value::Text("B".into()), Value::Text("a".into()), Less),
            (Value::Binary(vec![1]), Value::Binary(vec![1, 0]), Less),
            (Value::Float(-0.0), Value::Float(0.0), Less),
            // SQL Server sorts uniqueidentifier by its last group first.
            (
                guid("ffffffff-ffff-ffff-ffff-000000000001"),
                guid("00000000-0000-0000-0000-000000000002"),
                Less,
            ),
            // ... and within the first group, by its least significant byte first.
            (
                guid("01000000-0000-0000-0000-000000000000"),
                guid("00000001-0000-0000-0000-000000000000"),
                Less,
            ),
        ];
        for (a, b, expected) in cases {
            assert_eq!(cmp_values(&a, &b), expected, "{a:?} vs {b:?}");
            assert_eq!(cmp_values(&b, &a), expected.reverse(), "{b:?} vs {a:?}");
        }
    }

    #[test]
    fn equal_keys_hash_equally() {
        let a = Key(vec![dec(1500, 3), Value::Text("x".into())]);
        let b = Key(vec![dec(15, 1), Value::Text("x".into())]);
        assert_eq!(a, b);
        assert_eq!(hash_of(&a), hash_of(&b));
        let c = Key(vec![Value::Int(1)]);
        let d = Key(vec![Value::Int(1), Value::Int(0)]);
        assert!(c < d, "a prefix sorts first");
    }
}

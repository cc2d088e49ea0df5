//! SQL Server log sequence numbers.
//!
//! CDC bounds are closed intervals of 10-byte LSNs compared bytewise, so the whole
//! incremental algorithm rests on getting `Ord` and `increment` right; they live here,
//! away from any I/O, with property tests.
//! <https://learn.microsoft.com/sql/relational-databases/system-functions/sys-fn-cdc-increment-lsn-transact-sql>

use std::fmt;
use std::str::FromStr;

/// A 10-byte log sequence number (`binary(10)`), ordered bytewise (big-endian).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub [u8; 10]);

/// A closed, non-empty LSN interval `[from, to]`: the bounds CDC's table-valued functions
/// take. Empty ranges cannot be built, so nothing downstream can send `from > to` (which
/// SQL Server answers with Msg 313) or has to check for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LsnRange {
    from: Lsn,
    to: Lsn,
}

impl LsnRange {
    /// `[from, to]`, or `None` when `to < from` (no LSN in between).
    pub fn new(from: Lsn, to: Lsn) -> Option<LsnRange> {
        (from <= to).then_some(LsnRange { from, to })
    }

    /// The LSNs after `last` up to `to`: `[increment(last), to]`, the range a window copies
    /// when `last` is already copied. `None` when nothing lies after `last` up to `to`.
    pub fn after(last: Lsn, to: Lsn) -> Option<LsnRange> {
        LsnRange::new(last.increment()?, to)
    }

    pub fn from(&self) -> Lsn {
        self.from
    }

    pub fn to(&self) -> Lsn {
        self.to
    }
}

impl fmt::Display for LsnRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}..={}", self.from, self.to)
    }
}

/// Why a text or byte string is not an LSN.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LsnParseError {
    #[error("an LSN is 10 bytes (20 hex digits, optionally prefixed 0x), got {0} hex digits")]
    Length(usize),
    #[error("an LSN is hexadecimal, found {0:?}")]
    NotHex(char),
    #[error("an LSN is 10 bytes, got {0} bytes")]
    ByteLength(usize),
}

impl Lsn {
    /// `0x00000000000000000000`: what `fn_cdc_get_min_lsn` returns for an unknown instance.
    pub const ZERO: Lsn = Lsn([0; 10]);
    /// The largest representable LSN.
    pub const MAX: Lsn = Lsn([0xFF; 10]);

    /// The LSN from a `binary(10)` column value.
    pub fn from_bytes(bytes: &[u8]) -> Result<Lsn, LsnParseError> {
        let array: [u8; 10] = bytes
            .try_into()
            .map_err(|_| LsnParseError::ByteLength(bytes.len()))?;
        Ok(Lsn(array))
    }

    pub fn as_bytes(&self) -> &[u8; 10] {
        &self.0
    }

    pub fn is_zero(&self) -> bool {
        *self == Lsn::ZERO
    }

    /// The smallest LSN greater than `self`, as `sys.fn_cdc_increment_lsn` returns it.
    /// `None` only for [`Lsn::MAX`].
    pub fn increment(&self) -> Option<Lsn> {
        let mut bytes = self.0;
        for byte in bytes.iter_mut().rev() {
            let (next, overflow) = byte.overflowing_add(1);
            *byte = next;
            if !overflow {
                return Some(Lsn(bytes));
            }
        }
        None
    }

    /// The largest LSN smaller than `self` (`sys.fn_cdc_decrement_lsn`). `None` for zero.
    pub fn decrement(&self) -> Option<Lsn> {
        let mut bytes = self.0;
        for byte in bytes.iter_mut().rev() {
            let (next, underflow) = byte.overflowing_sub(1);
            *byte = next;
            if !underflow {
                return Some(Lsn(bytes));
            }
        }
        None
    }

    /// The LSN as an integer, for arithmetic in tests and models.
    pub fn to_u128(&self) -> u128 {
        self.0
            .iter()
            .fold(0u128, |acc, b| (acc << 8) | u128::from(*b))
    }

    /// The LSN whose integer value is `value` (the low 80 bits).
    pub fn from_u128(value: u128) -> Lsn {
        let bytes = value.to_be_bytes();
        let mut out = [0u8; 10];
        out.copy_from_slice(&bytes[6..]);
        Lsn(out)
    }
}

impl fmt::Display for Lsn {
    /// `0x0000002A000001F00003`, the way SQL Server Management Studio shows `binary(10)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("0x")?;
        for byte in self.0 {
            write!(f, "{byte:02X}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Lsn({self})")
    }
}

impl FromStr for Lsn {
    type Err = LsnParseError;

    fn from_str(s: &str) -> Result<Lsn, LsnParseError> {
        let hex = s
            .strip_prefix("0x")
            .or_else(|| s.strip_prefix("0X"))
            .unwrap_or(s);
        if let Some(bad) = hex.chars().find(|c| !c.is_ascii_hexdigit()) {
            return Err(LsnParseError::NotHex(bad));
        }
        if hex.len() != 20 {
            return Err(LsnParseError::Length(hex.len()));
        }
        let mut out = [0u8; 10];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("checked hex digits");
        }
        Ok(Lsn(out))
    }
}

impl serde::Serialize for Lsn {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Lsn {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Lsn, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ranges_are_never_empty() {
        let n = Lsn::from_u128;
        let cases = [
            ((5, 5), Some((5, 5))),
            ((5, 9), Some((5, 9))),
            ((9, 5), None),
        ];
        for ((from, to), want) in cases {
            let got = LsnRange::new(n(from), n(to)).map(|r| (r.from().to_u128(), r.to().to_u128()));
            assert_eq!(got, want, "[{from}, {to}]");
        }
        let after = |last, to| {
            LsnRange::after(n(last), n(to)).map(|r| (r.from().to_u128(), r.to().to_u128()))
        };
        assert_eq!(after(4, 5), Some((5, 5)), "one LSN after the last copied");
        assert_eq!(after(5, 5), None, "nothing after the last copied");
        assert_eq!(LsnRange::after(Lsn::MAX, Lsn::MAX), None);
    }

    #[test]
    fn display_and_parse_table() {
        let cases = [
            ("0x00000000000000000000", Lsn::ZERO),
            ("0xFFFFFFFFFFFFFFFFFFFF", Lsn::MAX),
            (
                "0x0000002A000001F00003",
                Lsn([0, 0, 0, 0x2A, 0, 0, 0x01, 0xF0, 0, 0x03]),
            ),
        ];
        for (text, lsn) in cases {
            assert_eq!(lsn.to_string(), text);
            assert_eq!(text.parse::<Lsn>().unwrap(), lsn);
            assert_eq!(text.to_lowercase().parse::<Lsn>().unwrap(), lsn);
            assert_eq!(text[2..].parse::<Lsn>().unwrap(), lsn);
        }
    }

    #[test]
    fn parse_errors_table() {
        assert_eq!("0x00".parse::<Lsn>(), Err(LsnParseError::Length(2)));
        assert_eq!(
            "0x0000002A000001F0000G".parse::<Lsn>(),
            Err(LsnParseError::NotHex('G'))
        );
        assert_eq!(
            Lsn::from_bytes(&[1, 2, 3]),
            Err(LsnParseError::ByteLength(3))
        );
    }

    #[test]
    fn increment_carries_and_stops_at_max() {
        let lsn: Lsn = "0x000000000000000000FF".parse().unwrap();
        assert_eq!(
            lsn.increment().unwrap().to_string(),
            "0x00000000000000000100"
        );
        assert_eq!(Lsn::MAX.increment(), None);
        assert_eq!(Lsn::ZERO.decrement(), None);
    }

    proptest! {
        #[test]
        fn increment_is_successor(bytes in proptest::array::uniform10(any::<u8>())) {
            let lsn = Lsn(bytes);
            if let Some(next) = lsn.increment() {
                prop_assert!(next > lsn);
                prop_assert_eq!(next.to_u128(), lsn.to_u128() + 1);
                prop_assert_eq!(next.decrement(), Some(lsn));
            } else {
                prop_assert_eq!(lsn, Lsn::MAX);
            }
        }

        #[test]
        fn order_is_numeric_order(a in proptest::array::uniform10(any::<u8>()), b in proptest::array::uniform10(any::<u8>())) {
            prop_assert_eq!(Lsn(a).cmp(&Lsn(b)), Lsn(a).to_u128().cmp(&Lsn(b).to_u128()));
        }

        #[test]
        fn text_round_trip(bytes in proptest::array::uniform10(any::<u8>())) {
            let lsn = Lsn(bytes);
            prop_assert_eq!(lsn.to_string().parse::<Lsn>().unwrap(), lsn);
            prop_assert_eq!(Lsn::from_u128(lsn.to_u128()), lsn);
        }
    }
}

//! RFC 4180 CSV encoding of [`crate::cdc::Value`] rows.
//!
//! This is the hot path of every copy (each changed row passes through it once), so it appends
//! straight into a caller-owned `Vec<u8>`: no per-field allocation, no `format!`, integers via
//! `itoa`, and one table-driven byte scan to decide whether a text field needs quotes. The
//! rendering of each SQL Server type is decided here, once, and documented in
//! `docs/csv-format.md`; the choices that matter to consumers:
//!
//! - Records end with CRLF (RFC 4180 §2.1); fields are separated by `,`; text is UTF-8 with no BOM.
//! - NULL is an empty, unquoted field; the empty string is `""`. The two differ at the byte
//!   level, so a consumer that looks at quoting can tell them apart.
//! - A text field is quoted when it is empty, contains `,` `"` CR or LF, or starts or ends with a
//!   space or tab (some readers trim unquoted edge whitespace; quoting keeps it). Quotes inside
//!   are doubled. Every other field is written bare.
//! - `bit` is `1`/`0`; binary (including LSNs) is `0x` + uppercase hex (`0x` alone when empty);
//!   decimals are exact text from (unscaled, scale), never through `f64`; floats are the
//!   shortest text that reads back exactly, always with a `.` so that readers infer a float;
//!   `uniqueidentifier` is uppercase canonical, as SQL Server shows it.
//! - Date/time types are ISO 8601 as SQL Server shows the declared type ([`write_typed`],
//!   format version 2): `datetime` in milliseconds, `smalldatetime` in minutes, `time(n)`,
//!   `datetime2(n)` and `datetimeoffset(n)` with `n` fractional digits; `datetimeoffset` keeps
//!   its own offset. The value alone ([`write_value`]) cannot tell `datetime` from
//!   `datetime2(7)`, so without the declaration they get 7 digits.
//!
//! Known edge: a row made of a single NULL column encodes as an empty line, which many readers
//! skip. CDC rows always carry `__$start_lsn`, `__$operation` and `__$update_mask` first, so the
//! copy never produces one.

use chrono::{Datelike, NaiveDate, NaiveDateTime, NaiveTime, Timelike};

use crate::cdc::{ColumnDesc, ColumnType, Value};

/// Record terminator (RFC 4180 §2.1).
pub const LINE_END: &[u8] = b"\r\n";

/// Bytes that force a field into quotes wherever they appear.
const NEEDS_QUOTES: [bool; 256] = {
    let mut t = [false; 256];
    t[b',' as usize] = true;
    t[b'"' as usize] = true;
    t[b'\r' as usize] = true;
    t[b'\n' as usize] = true;
    t
};

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

/// Appends the header record: each name is a text field, then CRLF.
pub fn write_header(out: &mut Vec<u8>, names: &[String]) {
    for (i, name) in names.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_text(out, name.as_bytes());
    }
    out.extend_from_slice(LINE_END);
}

/// Appends one record: the fields separated by `,`, then CRLF. `columns[i]` declares
/// `row[i]` (the file's columns, see [`crate::cdc::CaptureInstance::change_columns`]) and
/// decides its rendering ([`write_typed`]); a value past the declared columns renders by its
/// value alone ([`write_value`]).
pub fn write_row(out: &mut Vec<u8>, row: &[Value], columns: &[ColumnDesc]) {
    for (i, value) in row.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        match columns.get(i) {
            Some(column) => write_typed(out, value, &column.ty),
            None => write_value(out, value),
        }
    }
    out.extend_from_slice(LINE_END);
}

/// Appends one field, quoted if its text needs it (no separator, no line end).
pub fn write_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Null => {}
        Value::Bit(b) => out.push(if *b { b'1' } else { b'0' }),
        Value::Int(i) => out.extend_from_slice(itoa::Buffer::new().format(*i).as_bytes()),
        Value::Real(f) => write_float(out, f),
        Value::Float(f) => write_float(out, f),
        Value::Decimal { unscaled, scale } => write_decimal(out, *unscaled, *scale),
        Value::Text(s) => write_text(out, s.as_bytes()),
        Value::Binary(bytes) => write_hex(out, bytes),
        Value::Date(d) => write_date(out, d),
        Value::Time(t) => write_time(out, t),
        Value::DateTime(dt) => {
            write_date(out, &dt.date());
            out.push(b'T');
            write_time(out, &dt.time());
        }
        Value::DateTimeOffset(dt) => {
            let local = dt.naive_local();
            write_date(out, &local.date());
            out.push(b'T');
            write_time(out, &local.time());
            write_offset(out, dt.offset().local_minus_utc());
        }
        Value::Guid(g) => {
            let mut buf = uuid::Uuid::encode_buffer();
            out.extend_from_slice(g.hyphenated().encode_upper(&mut buf).as_bytes());
        }
    }
}

/// Appends one field rendered by its column's declared type (format version 2): `datetime`
/// as SQL Server shows it (milliseconds `.000`/`.003`/`.007`), `smalldatetime` to the minute,
/// `time`/`datetime2`/`datetimeoffset` with exactly their declared fractional digits. Every
/// other type renders by its value ([`write_value`]), as does a value that does not match
/// its declared type (which the decoder never produces).
pub fn write_typed(out: &mut Vec<u8>, value: &Value, ty: &ColumnType) {
    match (ty, value) {
        (ColumnType::DateTime, Value::DateTime(dt)) => {
            write_date_time(out, &datetime_as_shown(dt), 3)
        }
        (ColumnType::SmallDateTime, Value::DateTime(dt)) => {
            write_date_time(out, &smalldatetime_as_shown(dt), 0)
        }
        (ColumnType::DateTime2 { scale }, Value::DateTime(dt)) => write_date_time(out, dt, *scale),
        (ColumnType::Time { scale }, Value::Time(t)) => write_time_digits(out, t, *scale),
        (ColumnType::DateTimeOffset { scale }, Value::DateTimeOffset(dt)) => {
            write_date_time(out, &dt.naive_local(), *scale);
            write_offset(out, dt.offset().local_minus_utc());
        }
        _ => write_value(out, value),
    }
}

/// A `datetime` as SQL Server shows it: the nearest 1/300 s tick (the type's unit; the
/// decoder's nanoseconds are the tick's value truncated), then the nearest millisecond,
/// which is `.000`, `.003` or `.007` within each 10 ms. Tick 300 (a value within 1/600 s of
/// the next second) carries into the next second, day and year.
/// <https://learn.microsoft.com/sql/t-sql/data-types/datetime-transact-sql>
pub fn datetime_as_shown(dt: &NaiveDateTime) -> NaiveDateTime {
    let nanos = u64::from(dt.nanosecond());
    let tick = (nanos * 300 + 500_000_000) / 1_000_000_000;
    // round(tick × 10 / 3): the remainder is 0, 1/3 or 2/3, never a half.
    let millis = (tick * 10 + 1) / 3;
    truncate_nanos(dt) + chrono::Duration::milliseconds(millis as i64)
}

/// A `smalldatetime` as SQL Server shows it: whole minutes, "29.998 seconds or less are
/// rounded down to the nearest minute; values of 29.999 seconds or more are rounded up".
/// The decoder's values are whole minutes already.
/// <https://learn.microsoft.com/sql/t-sql/data-types/smalldatetime-transact-sql>
pub fn smalldatetime_as_shown(dt: &NaiveDateTime) -> NaiveDateTime {
    let into_minute =
        u64::from(dt.second()) * 1_000_000_000 + u64::from(dt.nanosecond().min(999_999_999));
    let minute = truncate_nanos(dt) - chrono::Duration::seconds(i64::from(dt.second()));
    if into_minute >= 29_999_000_000 {
        minute + chrono::Duration::minutes(1)
    } else {
        minute
    }
}

fn truncate_nanos(dt: &NaiveDateTime) -> NaiveDateTime {
    dt.with_nanosecond(0).expect("0 ns is always valid")
}

/// `YYYY-MM-DDTHH:MM:SS` and `digits` fractional digits (none, and no point, for 0).
fn write_date_time(out: &mut Vec<u8>, dt: &NaiveDateTime, digits: u8) {
    write_date(out, &dt.date());
    out.push(b'T');
    write_time_digits(out, &dt.time(), digits);
}

/// True when the bytes of a text field must be quoted (see the module docs for the rule).
fn needs_quotes(bytes: &[u8]) -> bool {
    match (bytes.first(), bytes.last()) {
        (Some(&first), Some(&last)) => {
            matches!(first, b' ' | b'\t')
                || matches!(last, b' ' | b'\t')
                || bytes.iter().any(|&b| NEEDS_QUOTES[b as usize])
        }
        // Empty text is quoted so that it differs from NULL.
        _ => true,
    }
}

fn write_text(out: &mut Vec<u8>, bytes: &[u8]) {
    if !needs_quotes(bytes) {
        out.extend_from_slice(bytes);
        return;
    }
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut rest = bytes;
    while let Some(pos) = rest.iter().position(|&b| b == b'"') {
        // Copy through the quote, then double it.
        out.extend_from_slice(&rest[..=pos]);
        out.push(b'"');
        rest = &rest[pos + 1..];
    }
    out.extend_from_slice(rest);
    out.push(b'"');
}

/// The shortest text that reads back as the same float, always with a `.` in the mantissa so
/// that every reader infers a float: `3.0`, not `3` (a column of integral floats would infer
/// as an integer); `1.0e16`, `1.5e-7` where an exponent is needed (`Debug` switches to one
/// outside 1e-4 ≤ |x| < 1e16, where plain digits would run long). SQL Server cannot store NaN
/// or infinities; were one to reach here it would be written `NaN`, `inf` or `-inf`.
fn write_float<T: std::fmt::Debug>(out: &mut Vec<u8>, value: T) {
    use std::io::Write;
    let start = out.len();
    // Writing into a Vec cannot fail.
    let _ = write!(out, "{value:?}");
    let text = &out[start..];
    if let Some(e) = text.iter().position(|&b| b == b'e') {
        if !text[..e].contains(&b'.') {
            let at = start + e;
            out.splice(at..at, *b".0");
        }
    }
}

/// `unscaled / 10^scale` as exact decimal text, keeping every fractional digit of the scale
/// (decimal(10,2) 1.50 stays `1.50`), with a leading `0` before the point.
fn write_decimal(out: &mut Vec<u8>, unscaled: i128, scale: u8) {
    if unscaled < 0 {
        out.push(b'-');
    }
    let mut buf = itoa::Buffer::new();
    let digits = buf.format(unscaled.unsigned_abs()).as_bytes();
    let scale = usize::from(scale);
    if scale == 0 {
        out.extend_from_slice(digits);
    } else if digits.len() > scale {
        let (int, frac) = digits.split_at(digits.len() - scale);
        out.extend_from_slice(int);
        out.push(b'.');
        out.extend_from_slice(frac);
    } else {
        out.extend_from_slice(b"0.");
        out.resize(out.len() + (scale - digits.len()), b'0');
        out.extend_from_slice(digits);
    }
}

fn write_hex(out: &mut Vec<u8>, bytes: &[u8]) {
    out.reserve(2 + bytes.len() * 2);
    out.extend_from_slice(b"0x");
    for &b in bytes {
        out.push(HEX_UPPER[usize::from(b >> 4)]);
        out.push(HEX_UPPER[usize::from(b & 0x0f)]);
    }
}

/// `n` (< 10^width) as exactly `width` decimal digits.
fn push_padded(out: &mut Vec<u8>, mut n: u32, width: usize) {
    let start = out.len();
    out.resize(start + width, b'0');
    for slot in out[start..].iter_mut().rev() {
        *slot = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

/// `YYYY-MM-DD`. SQL Server dates are years 0001–9999; chrono's wider range (never produced
/// by the decoder) is written ISO 8601 "expanded" style, with a sign and at least 4 digits.
fn write_date(out: &mut Vec<u8>, d: &NaiveDate) {
    let year = d.year();
    if (0..=9999).contains(&year) {
        push_padded(out, year as u32, 4);
    } else {
        out.push(if year < 0 { b'-' } else { b'+' });
        let abs = year.unsigned_abs();
        if abs < 10_000 {
            push_padded(out, abs, 4);
        } else {
            out.extend_from_slice(itoa::Buffer::new().format(abs).as_bytes());
        }
    }
    out.push(b'-');
    push_padded(out, d.month(), 2);
    out.push(b'-');
    push_padded(out, d.day(), 2);
}

/// `HH:MM:SS.fffffff`: 7 fractional digits (100 ns, the precision of `time(7)` and
/// `datetime2(7)`), for a value whose declared type is not known.
fn write_time(out: &mut Vec<u8>, t: &NaiveTime) {
    write_time_digits(out, t, 7);
}

/// `HH:MM:SS` and `digits` (0–9) fractional digits, no point for 0. Digits beyond them are
/// truncated: a value decoded from `time(n)`/`datetime2(n)` has none. chrono's leap-second
/// representation (never produced by SQL Server) is written as second 60.
fn write_time_digits(out: &mut Vec<u8>, t: &NaiveTime, digits: u8) {
    let (mut sec, mut nanos) = (t.second(), t.nanosecond());
    if nanos >= 1_000_000_000 {
        sec += 1;
        nanos -= 1_000_000_000;
    }
    push_padded(out, t.hour(), 2);
    out.push(b':');
    push_padded(out, t.minute(), 2);
    out.push(b':');
    push_padded(out, sec, 2);
    let digits = u32::from(digits.min(9));
    if digits > 0 {
        out.push(b'.');
        push_padded(out, nanos / 10u32.pow(9 - digits), digits as usize);
    }
}

/// `+HH:MM` / `-HH:MM` (`+00:00` for UTC, as SQL Server shows it). Offsets with seconds cannot
/// come from SQL Server; if one does, its seconds are appended as `:SS`.
fn write_offset(out: &mut Vec<u8>, seconds_east: i32) {
    out.push(if seconds_east < 0 { b'-' } else { b'+' });
    let abs = seconds_east.unsigned_abs();
    push_padded(out, abs / 3600, 2);
    out.push(b':');
    push_padded(out, abs / 60 % 60, 2);
    if !abs.is_multiple_of(60) {
        out.push(b':');
        push_padded(out, abs % 60, 2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{FixedOffset, NaiveDateTime, TimeZone};
    use proptest::prelude::*;

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    fn time(h: u32, mi: u32, s: u32, nanos: u32) -> NaiveTime {
        NaiveTime::from_hms_nano_opt(h, mi, s, nanos).unwrap()
    }

    fn datetime(y: i32, m: u32, d: u32, h: u32, mi: u32, s: u32, nanos: u32) -> NaiveDateTime {
        date(y, m, d).and_time(time(h, mi, s, nanos))
    }

    fn dto(offset_secs: i32, local: NaiveDateTime) -> Value {
        let tz = FixedOffset::east_opt(offset_secs).unwrap();
        Value::DateTimeOffset(tz.from_local_datetime(&local).unwrap())
    }

    fn text(s: &str) -> Value {
        Value::Text(s.to_string())
    }

    fn dec(unscaled: i128, scale: u8) -> Value {
        Value::Decimal { unscaled, scale }
    }

    fn field(v: &Value) -> String {
        let mut out = Vec::new();
        write_value(&mut out, v);
        String::from_utf8(out).expect("encoder writes UTF-8")
    }

    #[test]
    fn every_variant_renders_as_documented() {
        let cases: Vec<(&str, Value, &str)> = vec![
            ("null is an empty field", Value::Null, ""),
            ("bit true", Value::Bit(true), "1"),
            ("bit false", Value::Bit(false), "0"),
            ("int zero", Value::Int(0), "0"),
            ("int negative", Value::Int(-42), "-42"),
            ("bigint max", Value::Int(i64::MAX), "9223372036854775807"),
            ("bigint min", Value::Int(i64::MIN), "-9223372036854775808"),
            ("real shortest", Value::Real(0.1), "0.1"),
            ("real integral", Value::Real(3.0), "3.0"),
            ("float shortest", Value::Float(0.1), "0.1"),
            ("float negative", Value::Float(-2.5e-3), "-0.0025"),
            ("float third", Value::Float(1.0 / 3.0), "0.3333333333333333"),
            ("float large", Value::Float(1.5e20), "1.5e20"),
            ("decimal scale 2", dec(150, 2), "1.50"),
            ("decimal small negative", dec(-5, 3), "-0.005"),
            ("decimal scale 0", dec(12345, 0), "12345"),
            ("money scale 4", dec(15000, 4), "1.5000"),
            ("decimal negative scale 0", dec(-7, 0), "-7"),
            ("decimal zero", dec(0, 0), "0"),
            ("decimal zero with scale", dec(0, 4), "0.0000"),
            ("decimal all fraction", dec(12345, 5), "0.12345"),
            (
                "decimal money",
                dec(-9_223_372_036_854_775_808, 4),
                "-922337203685477.5808",
            ),
            (
                "decimal(38,0) max",
                dec(99_999_999_999_999_999_999_999_999_999_999_999_999, 0),
                "99999999999999999999999999999999999999",
            ),
            (
                "decimal(38,38) min",
                dec(-99_999_999_999_999_999_999_999_999_999_999_999_999, 38),
                "-0.99999999999999999999999999999999999999",
            ),
            (
                "decimal(38,10)",
                dec(12_345_678_901_234_567_890_123_456_789_012_345_678, 10),
                "1234567890123456789012345678.9012345678",
            ),
            (
                "i128 min does not overflow",
                dec(i128::MIN, 0),
                "-170141183460469231731687303715884105728",
            ),
            ("text plain", text("Seattle"), "Seattle"),
            ("text empty is quoted", text(""), "\"\""),
            ("text comma", text("a,b"), "\"a,b\""),
            (
                "text quote doubled",
                text("say \"hi\""),
                "\"say \"\"hi\"\"\"",
            ),
            ("text only a quote", text("\""), "\"\"\"\""),
            ("text CR", text("a\rb"), "\"a\rb\""),
            ("text LF", text("a\nb"), "\"a\nb\""),
            ("text CRLF", text("a\r\nb"), "\"a\r\nb\""),
            ("text leading space", text(" a"), "\" a\""),
            ("text trailing space", text("a "), "\"a \""),
            ("text trailing tab", text("a\t"), "\"a\t\""),
            ("text inner space bare", text("New York"), "New York"),
            ("text CJK", text("東京都"), "東京都"),
            ("text emoji", text("café 😀"), "café 😀"),
            ("text emoji with comma", text("😀,😀"), "\"😀,😀\""),
            ("binary empty", Value::Binary(vec![]), "0x"),
            (
                "binary bytes",
                Value::Binary(vec![0x00, 0xab, 0x0f, 0xff]),
                "0x00AB0FFF",
            ),
            (
                "lsn binary(10)",
                Value::Binary(vec![0, 0, 0, 0x2a, 0, 0, 0x01, 0xf0, 0, 0x03]),
                "0x0000002A000001F00003",
            ),
            ("date", Value::Date(date(2024, 2, 29)), "2024-02-29"),
            ("date year 1", Value::Date(date(1, 1, 1)), "0001-01-01"),
            (
                "date before 1900",
                Value::Date(date(1753, 1, 1)),
                "1753-01-01",
            ),
            (
                "date year 9999",
                Value::Date(date(9999, 12, 31)),
                "9999-12-31",
            ),
            (
                "time midnight",
                Value::Time(time(0, 0, 0, 0)),
                "00:00:00.0000000",
            ),
            (
                "time 100ns",
                Value::Time(time(23, 59, 59, 999_999_900)),
                "23:59:59.9999999",
            ),
            (
                "time sub-100ns truncated",
                Value::Time(time(1, 2, 3, 456_789_199)),
                "01:02:03.4567891",
            ),
            (
                "datetime2(7)",
                Value::DateTime(datetime(2024, 5, 6, 7, 8, 9, 123_456_700)),
                "2024-05-06T07:08:09.1234567",
            ),
            (
                "datetime2(3) padded to 7 digits",
                Value::DateTime(datetime(2024, 5, 6, 7, 8, 9, 123_000_000)),
                "2024-05-06T07:08:09.1230000",
            ),
            (
                "smalldatetime",
                Value::DateTime(datetime(2024, 5, 6, 7, 8, 0, 0)),
                "2024-05-06T07:08:00.0000000",
            ),
            (
                "datetime ms",
                Value::DateTime(datetime(1900, 1, 1, 0, 0, 0, 3_000_000)),
                "1900-01-01T00:00:00.0030000",
            ),
            (
                "datetime before 1900",
                Value::DateTime(datetime(1812, 6, 18, 12, 0, 0, 0)),
                "1812-06-18T12:00:00.0000000",
            ),
            (
                "datetime max",
                Value::DateTime(datetime(9999, 12, 31, 23, 59, 59, 999_999_900)),
                "9999-12-31T23:59:59.9999999",
            ),
            (
                "datetimeoffset utc",
                dto(0, datetime(2024, 1, 2, 3, 4, 5, 0)),
                "2024-01-02T03:04:05.0000000+00:00",
            ),
            (
                "datetimeoffset positive",
                dto(5 * 3600 + 30 * 60, datetime(2024, 1, 2, 3, 4, 5, 100)),
                "2024-01-02T03:04:05.0000001+05:30",
            ),
            (
                "datetimeoffset negative keeps local time",
                dto(-(8 * 3600), datetime(2023, 12, 31, 23, 30, 0, 500_000_000)),
                "2023-12-31T23:30:00.5000000-08:00",
            ),
            (
                "datetimeoffset -14:00",
                dto(-14 * 3600, datetime(1, 1, 1, 14, 0, 0, 0)),
                "0001-01-01T14:00:00.0000000-14:00",
            ),
            (
                "datetimeoffset -00:30",
                dto(-30 * 60, datetime(2000, 6, 1, 0, 0, 0, 0)),
                "2000-06-01T00:00:00.0000000-00:30",
            ),
            (
                "guid uppercase",
                Value::Guid(uuid::Uuid::parse_str("6f9619ff-8b86-d011-b42d-00c04fc964ff").unwrap()),
                "6F9619FF-8B86-D011-B42D-00C04FC964FF",
            ),
        ];
        for (name, value, expected) in cases {
            assert_eq!(field(&value), expected, "case {name}: {value:?}");
        }
    }

    #[test]
    fn rows_and_header_are_crlf_records() {
        let cases: Vec<(&str, Vec<Value>, &str)> = vec![
            ("empty row", vec![], "\r\n"),
            (
                "null vs empty string",
                vec![Value::Int(1), Value::Null, text(""), Value::Null],
                "1,,\"\",\r\n",
            ),
            (
                "customers shape",
                vec![
                    Value::Binary(vec![0, 0, 0, 0x2a, 0, 0, 0x01, 0xf0, 0, 0x03]),
                    Value::Int(2),
                    Value::Null,
                    Value::Int(17),
                    text("Ada"),
                    text("Lovelace, Countess"),
                    text("ada@example.com"),
                    text("Zürich"),
                ],
                "0x0000002A000001F00003,2,,17,Ada,\"Lovelace, Countess\",ada@example.com,Zürich\r\n",
            ),
        ];
        for (name, row, expected) in cases {
            let mut out = Vec::new();
            write_row(&mut out, &row, &[]);
            assert_eq!(String::from_utf8(out).unwrap(), expected, "case {name}");
        }

        let mut out = Vec::new();
        let names: Vec<String> = ["__$start_lsn", "__$operation", "odd,name", ""]
            .iter()
            .map(|s| s.to_string())
            .collect();
        write_header(&mut out, &names);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "__$start_lsn,__$operation,\"odd,name\",\"\"\r\n"
        );
    }

    /// The example in docs/csv-format.md, byte for byte.
    #[test]
    fn documented_example() {
        let names: Vec<String> = [
            "__$start_lsn",
            "__$operation",
            "__$update_mask",
            "id",
            "first_name",
            "last_name",
            "email",
            "city",
            "phone",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let lsn =
            |tail: [u8; 2]| Value::Binary(vec![0, 0, 0, 0x2a, 0, 0, 0x01, tail[0], 0, tail[1]]);
        let mut out = Vec::new();
        write_header(&mut out, &names);
        write_row(
            &mut out,
            &[
                lsn([0xf0, 0x03]),
                Value::Int(2),
                Value::Null,
                Value::Int(17),
                text("Ada"),
                text("Lovelace, Countess"),
                text("ada@example.com"),
                text("Zürich"),
                Value::Null,
            ],
            &[],
        );
        write_row(
            &mut out,
            &[
                lsn([0xf8, 0x02]),
                Value::Int(4),
                Value::Null,
                Value::Int(18),
                text("Grace"),
                text("Hopper"),
                text(""),
                text("東京"),
                text("+1-206-555-0100"),
            ],
            &[],
        );
        let doc = include_str!("../../docs/csv-format.md");
        let example = doc
            .split("```text\n")
            .nth(1)
            .and_then(|rest| rest.split("```").next())
            .expect("docs/csv-format.md has a ```text example");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            example.replace('\n', "\r\n")
        );
    }

    #[test]
    fn appends_without_disturbing_existing_bytes() {
        let mut out = b"prefix|".to_vec();
        write_row(&mut out, &[text("x"), dec(-5, 3)], &[]);
        assert_eq!(out, b"prefix|x,-0.005\r\n");
    }

    #[test]
    fn very_long_values() {
        // 1 MiB of plain text is copied bare.
        let plain = "x".repeat(1 << 20);
        let mut out = Vec::new();
        write_value(&mut out, &Value::Text(plain.clone()));
        assert_eq!(out, plain.as_bytes());

        // 1 MiB with a quote every 8 bytes: each quote doubled, whole field quoted.
        let quoted = "abc\"def,".repeat(1 << 17);
        let mut out = Vec::new();
        write_row(&mut out, &[Value::Text(quoted.clone()), Value::Int(1)], &[]);
        assert_eq!(out.len(), (1 << 20) + (1 << 17) + 2 + ",1\r\n".len());
        let mut reader = ::csv::ReaderBuilder::new()
            .has_headers(false)
            .from_reader(out.as_slice());
        let record = reader.records().next().unwrap().unwrap();
        assert_eq!(&record[0], quoted);
        assert_eq!(&record[1], "1");

        // 1 MiB of binary is 2 MiB + 2 of hex.
        let bytes: Vec<u8> = (0..(1 << 20)).map(|i| (i % 251) as u8).collect();
        let mut out = Vec::new();
        write_value(&mut out, &Value::Binary(bytes.clone()));
        assert_eq!(out.len(), 2 + 2 * bytes.len());
        assert_eq!(&out[..8], b"0x000102");
    }

    /// A strict RFC 4180 reader that keeps what the `csv` crate folds away: whether a field
    /// was quoted. Unquoted-and-empty is NULL (`None`); anything quoted is text.
    fn parse_strict(bytes: &[u8]) -> Vec<Vec<Option<String>>> {
        let mut rows = Vec::new();
        let mut row = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            let value = if bytes[i] == b'"' {
                let mut field = Vec::new();
                i += 1;
                loop {
                    if bytes[i] == b'"' {
                        if bytes.get(i + 1) == Some(&b'"') {
                            field.push(b'"');
                            i += 2;
                        } else {
                            i += 1;
                            break;
                        }
                    } else {
                        field.push(bytes[i]);
                        i += 1;
                    }
                }
                Some(String::from_utf8(field).unwrap())
            } else {
                let start = i;
                while bytes[i] != b',' && bytes[i] != b'\r' {
                    assert!(!matches!(bytes[i], b'"' | b'\n'), "bare quote or LF");
                    i += 1;
                }
                (i > start).then(|| String::from_utf8(bytes[start..i].to_vec()).unwrap())
            };
            row.push(value);
            match bytes[i] {
                b',' => i += 1,
                b'\r' => {
                    assert_eq!(bytes[i + 1], b'\n', "CR must start CRLF");
                    i += 2;
                    rows.push(std::mem::take(&mut row));
                }
                other => panic!("unexpected byte {other} after a field"),
            }
        }
        assert!(row.is_empty(), "last record must end with CRLF");
        rows
    }

    fn cell() -> impl Strategy<Value = Option<String>> {
        let tricky = proptest::string::string_regex("[a-z ,\"\r\n\t'é東😀]{0,12}").unwrap();
        proptest::option::weighted(0.8, prop_oneof![tricky, any::<String>()])
    }

    fn table() -> impl Strategy<Value = Vec<Vec<Option<String>>>> {
        (2usize..6).prop_flat_map(|cols| {
            proptest::collection::vec(proptest::collection::vec(cell(), cols), 1..8)
        })
    }

    proptest! {
        #[test]
        fn text_round_trips_through_the_csv_crate(rows in table()) {
            let mut out = Vec::new();
            for row in &rows {
                let values: Vec<Value> = row
                    .iter()
                    .map(|c| c.clone().map_or(Value::Null, Value::Text))
                    .collect();
                write_row(&mut out, &values, &[]);
            }

            // The csv crate reads back every string; NULL comes back as "".
            let mut reader = ::csv::ReaderBuilder::new()
                .has_headers(false)
                .from_reader(out.as_slice());
            let parsed: Vec<Vec<String>> = reader
                .records()
                .map(|r| r.unwrap().iter().map(str::to_string).collect())
                .collect();
            let expected: Vec<Vec<String>> = rows
                .iter()
                .map(|r| r.iter().map(|c| c.clone().unwrap_or_default()).collect())
                .collect();
            prop_assert_eq!(parsed, expected);

            // At the byte level NULL and "" stay distinct.
            prop_assert_eq!(parse_strict(&out), rows);
        }
    }
}

/// Format version 2: rendering by declared type.
#[cfg(test)]
mod typed_tests {
    use super::*;
    use chrono::{FixedOffset, TimeZone};
    use proptest::prelude::*;

    fn at(y: i32, m: u32, d: u32, h: u32, mi: u32, s: u32, nanos: u32) -> NaiveDateTime {
        NaiveDate::from_ymd_opt(y, m, d)
            .unwrap()
            .and_hms_nano_opt(h, mi, s, nanos)
            .unwrap()
    }

    fn typed(value: &Value, ty: &ColumnType) -> String {
        let mut out = Vec::new();
        write_typed(&mut out, value, ty);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn floats_are_shortest_and_always_read_as_floats() {
        let cases: Vec<(&str, Value, &str)> = vec![
            ("integral", Value::Float(3.0), "3.0"),
            ("zero", Value::Float(0.0), "0.0"),
            ("negative zero", Value::Float(-0.0), "-0.0"),
            ("shortest", Value::Float(0.1), "0.1"),
            ("third", Value::Float(1.0 / 3.0), "0.3333333333333333"),
            ("1e-4 is plain", Value::Float(1e-4), "0.0001"),
            (
                "below 1e-4 uses an exponent",
                Value::Float(1.5e-7),
                "1.5e-7",
            ),
            (
                "integral mantissa keeps a point",
                Value::Float(1e-5),
                "1.0e-5",
            ),
            (
                "below 1e16 is plain",
                Value::Float(1e15),
                "1000000000000000.0",
            ),
            ("1e16 uses an exponent", Value::Float(1e16), "1.0e16"),
            (
                "2^53 is plain",
                Value::Float(9_007_199_254_740_992.0),
                "9007199254740992.0",
            ),
            ("max", Value::Float(f64::MAX), "1.7976931348623157e308"),
            ("lowest", Value::Float(f64::MIN), "-1.7976931348623157e308"),
            (
                "min positive normal",
                Value::Float(f64::MIN_POSITIVE),
                "2.2250738585072014e-308",
            ),
            ("smallest subnormal", Value::Float(5e-324), "5.0e-324"),
            ("real integral", Value::Real(3.0), "3.0"),
            ("real shortest", Value::Real(0.1), "0.1"),
            ("real 2^24", Value::Real(16_777_216.0), "16777216.0"),
            ("real max", Value::Real(f32::MAX), "3.4028235e38"),
            (
                "real min positive",
                Value::Real(f32::MIN_POSITIVE),
                "1.1754944e-38",
            ),
            ("real negative", Value::Real(-2.5e-3), "-0.0025"),
        ];
        for (name, value, expected) in cases {
            for ty in [ColumnType::Float, ColumnType::Real] {
                assert_eq!(typed(&value, &ty), expected, "case {name} ({ty})");
            }
        }
    }

    proptest! {
        #[test]
        fn floats_read_back_exactly(bits in any::<u64>(), bits32 in any::<u32>()) {
            let f = f64::from_bits(bits);
            let r = f32::from_bits(bits32);
            if f.is_finite() {
                let text = typed(&Value::Float(f), &ColumnType::Float);
                prop_assert!(text.contains('.'), "{text}");
                prop_assert_eq!(text.parse::<f64>().unwrap().to_bits(), f.to_bits());
            }
            if r.is_finite() {
                let text = typed(&Value::Real(r), &ColumnType::Real);
                prop_assert!(text.contains('.'), "{text}");
                prop_assert_eq!(text.parse::<f32>().unwrap().to_bits(), r.to_bits());
            }
        }
    }

    /// Every tick of a second, through tiberius's own decoding (ticks → truncated
    /// nanoseconds): the millisecond shown is the nearest to tick × 10/3 ms, so one of
    /// .xx0/.xx3/.xx7, and it never leaves the second.
    #[test]
    fn every_datetime_tick_shows_as_sql_server_shows_it() {
        use tiberius::{ColumnData, FromSql};
        let mut last = None;
        for day_tick in [0u32, 86_399 * 300, 25_919_700] {
            for tick in 0..300u32 {
                let data = ColumnData::DateTime(Some(tiberius::time::DateTime::new(
                    40_000,
                    day_tick + tick,
                )));
                let decoded = NaiveDateTime::from_sql(&data).unwrap().unwrap();
                let shown = typed(&Value::DateTime(decoded), &ColumnType::DateTime);
                let (second, millis) = shown.split_at(shown.len() - 3);
                let millis: i64 = millis.parse().unwrap();
                assert!(
                    (3 * millis - 10 * i64::from(tick)).abs() <= 1,
                    "tick {tick} shown as {shown}"
                );
                assert!(matches!(millis % 10, 0 | 3 | 7), "tick {tick}: {shown}");
                assert_eq!(
                    &second[..20],
                    &decoded.format("%Y-%m-%dT%H:%M:%S.").to_string(),
                    "tick {tick} stays in its second"
                );
                if let Some(prev) = last.replace(millis) {
                    if tick > 0 {
                        assert!(millis > prev, "tick {tick} increases");
                    }
                }
            }
        }
        // The last tick of a day.
        let data = ColumnData::DateTime(Some(tiberius::time::DateTime::new(0, 25_919_999)));
        let decoded = NaiveDateTime::from_sql(&data).unwrap().unwrap();
        assert_eq!(
            typed(&Value::DateTime(decoded), &ColumnType::DateTime),
            "1900-01-01T23:59:59.997"
        );
    }

    #[test]
    fn time_types_render_as_declared() {
        let t = |h, mi, s, n| NaiveTime::from_hms_nano_opt(h, mi, s, n).unwrap();
        let dto = |offset: i32, local: NaiveDateTime| {
            Value::DateTimeOffset(
                FixedOffset::east_opt(offset)
                    .unwrap()
                    .from_local_datetime(&local)
                    .unwrap(),
            )
        };
        let dt = |v: NaiveDateTime| Value::DateTime(v);
        let cases: Vec<(&str, Value, ColumnType, &str)> = vec![
            // datetime: SQL Server's documented rounding examples (a value that is not a
            // tick, as a datetime2 converted to datetime would be, rounds to the nearest).
            (
                "datetime .999 rounds into the next day",
                dt(at(1998, 1, 1, 23, 59, 59, 999_000_000)),
                ColumnType::DateTime,
                "1998-01-02T00:00:00.000",
            ),
            (
                "datetime .998",
                dt(at(1998, 1, 1, 23, 59, 59, 998_000_000)),
                ColumnType::DateTime,
                "1998-01-01T23:59:59.997",
            ),
            (
                "datetime .995",
                dt(at(1998, 1, 1, 23, 59, 59, 995_000_000)),
                ColumnType::DateTime,
                "1998-01-01T23:59:59.997",
            ),
            (
                "datetime .994",
                dt(at(1998, 1, 1, 23, 59, 59, 994_000_000)),
                ColumnType::DateTime,
                "1998-01-01T23:59:59.993",
            ),
            (
                "datetime .992",
                dt(at(1998, 1, 1, 23, 59, 59, 992_000_000)),
                ColumnType::DateTime,
                "1998-01-01T23:59:59.993",
            ),
            (
                "datetime .991",
                dt(at(1998, 1, 1, 23, 59, 59, 991_000_000)),
                ColumnType::DateTime,
                "1998-01-01T23:59:59.990",
            ),
            (
                "datetime .9999999 into the next year",
                dt(at(1999, 12, 31, 23, 59, 59, 999_999_900)),
                ColumnType::DateTime,
                "2000-01-01T00:00:00.000",
            ),
            (
                "datetime tick 1",
                dt(at(1900, 1, 1, 0, 0, 0, 3_333_333)),
                ColumnType::DateTime,
                "1900-01-01T00:00:00.003",
            ),
            (
                "datetime min",
                dt(at(1753, 1, 1, 0, 0, 0, 0)),
                ColumnType::DateTime,
                "1753-01-01T00:00:00.000",
            ),
            (
                "datetime max",
                dt(at(9999, 12, 31, 23, 59, 59, 996_666_666)),
                ColumnType::DateTime,
                "9999-12-31T23:59:59.997",
            ),
            (
                "smalldatetime",
                dt(at(2024, 5, 6, 7, 8, 0, 0)),
                ColumnType::SmallDateTime,
                "2024-05-06T07:08:00",
            ),
            (
                "smalldatetime 29.998 s down",
                dt(at(2024, 5, 6, 7, 8, 29, 998_000_000)),
                ColumnType::SmallDateTime,
                "2024-05-06T07:08:00",
            ),
            (
                "smalldatetime 29.999 s up",
                dt(at(2024, 5, 6, 7, 8, 29, 999_000_000)),
                ColumnType::SmallDateTime,
                "2024-05-06T07:09:00",
            ),
            (
                "smalldatetime up into the next day",
                dt(at(2079, 6, 5, 23, 59, 30, 0)),
                ColumnType::SmallDateTime,
                "2079-06-06T00:00:00",
            ),
            (
                "smalldatetime max",
                dt(at(2079, 6, 6, 23, 59, 0, 0)),
                ColumnType::SmallDateTime,
                "2079-06-06T23:59:00",
            ),
            (
                "datetime2(0)",
                dt(at(2024, 5, 6, 7, 8, 9, 0)),
                ColumnType::DateTime2 { scale: 0 },
                "2024-05-06T07:08:09",
            ),
            (
                "datetime2(3)",
                dt(at(2024, 5, 6, 7, 8, 9, 123_000_000)),
                ColumnType::DateTime2 { scale: 3 },
                "2024-05-06T07:08:09.123",
            ),
            (
                "datetime2(7)",
                dt(at(2024, 5, 6, 7, 8, 9, 123_456_700)),
                ColumnType::DateTime2 { scale: 7 },
                "2024-05-06T07:08:09.1234567",
            ),
            (
                "datetime2(7) min",
                dt(at(1, 1, 1, 0, 0, 0, 0)),
                ColumnType::DateTime2 { scale: 7 },
                "0001-01-01T00:00:00.0000000",
            ),
            (
                "datetime2(7) max",
                dt(at(9999, 12, 31, 23, 59, 59, 999_999_900)),
                ColumnType::DateTime2 { scale: 7 },
                "9999-12-31T23:59:59.9999999",
            ),
            (
                "time(0)",
                Value::Time(t(23, 59, 59, 0)),
                ColumnType::Time { scale: 0 },
                "23:59:59",
            ),
            (
                "time(1)",
                Value::Time(t(1, 2, 3, 400_000_000)),
                ColumnType::Time { scale: 1 },
                "01:02:03.4",
            ),
            (
                "time(4)",
                Value::Time(t(1, 2, 3, 456_700_000)),
                ColumnType::Time { scale: 4 },
                "01:02:03.4567",
            ),
            (
                "time(7)",
                Value::Time(t(23, 59, 59, 999_999_900)),
                ColumnType::Time { scale: 7 },
                "23:59:59.9999999",
            ),
            (
                "datetimeoffset(0)",
                dto(0, at(2024, 1, 2, 3, 4, 5, 0)),
                ColumnType::DateTimeOffset { scale: 0 },
                "2024-01-02T03:04:05+00:00",
            ),
            (
                "datetimeoffset(7) +14:00",
                dto(14 * 3600, at(9999, 12, 31, 23, 59, 59, 999_999_900)),
                ColumnType::DateTimeOffset { scale: 7 },
                "9999-12-31T23:59:59.9999999+14:00",
            ),
            (
                "datetimeoffset(3) -05:30",
                dto(-(5 * 3600 + 1800), at(2024, 1, 2, 3, 4, 5, 120_000_000)),
                ColumnType::DateTimeOffset { scale: 3 },
                "2024-01-02T03:04:05.120-05:30",
            ),
            // Other types render by value, unchanged from format version 1.
            (
                "decimal",
                Value::Decimal {
                    unscaled: 150,
                    scale: 2,
                },
                ColumnType::Decimal {
                    precision: 5,
                    scale: 2,
                },
                "1.50",
            ),
            (
                "binary",
                Value::Binary(vec![0xab]),
                ColumnType::VarBinary(crate::cdc::Length::Max),
                "0xAB",
            ),
            ("null", Value::Null, ColumnType::DateTime, ""),
            (
                "empty text",
                Value::Text(String::new()),
                ColumnType::NVarChar(crate::cdc::Length::Of(5)),
                "\"\"",
            ),
        ];
        for (name, value, ty, expected) in cases {
            assert_eq!(typed(&value, &ty), expected, "case {name}");
        }
    }
}

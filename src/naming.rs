//! Blob names from path templates and trigger times.
//!
//! Names are the only identity a landed file has: a retried window must land on the same name
//! (so a retry overwrites instead of duplicating) and two windows must never share one. Both
//! follow from deriving the name from the table and the trigger time alone, which is why a
//! template must contain `{table}` and the millisecond timestamp `{yyyyMMddHHmmssfff}`.
//! Templates come from configuration, so they are checked once, at start-up, against Azure's
//! blob naming rules
//! (<https://learn.microsoft.com/rest/api/storageservices/naming-and-referencing-containers--blobs--and-metadata>):
//! at most 1024 characters and 254 path segments, no empty, `.` or `..` segments, no trailing
//! `/` or `.`, no backslash or control characters. Rendering is then infallible.
//!
//! Rendered names may hold characters that are legal in blob names but reserved in URLs (a
//! table may be called `#tmp`); the blob client percent-encodes the name when building a URL.

use std::fmt::Write as _;

use chrono::{DateTime, Datelike, Timelike, Utc};

use crate::cdc::TableRef;

/// The default incremental layout: schema and table first, so one table's blobs share a prefix,
/// then the UTC trigger date, then the trigger time to the millisecond.
pub const DEFAULT_INCREMENTAL_TEMPLATE: &str =
    "{schema}/{table}/incremental/{yyyy}/{MM}/{dd}/{yyyyMMddHHmmssfff}.csv";

/// Azure's limit on a blob name, in characters.
pub const MAX_BLOB_NAME_CHARS: usize = 1024;
/// Azure's limit on the number of `/`-separated segments in a blob name.
pub const MAX_PATH_SEGMENTS: usize = 254;

/// The placeholder that makes names unique per trigger time.
const UNIQUE_TIME: &str = "yyyyMMddHHmmssfff";

/// The placeholder of the file format's extension (`csv` or `parquet`, `CDC_FORMAT`).
const EXTENSION: &str = "ext";

/// The extension a template spells out literally; in another format it is replaced.
const CSV_SUFFIX: &str = ".csv";

/// Every placeholder a template may use (case-sensitive: `MM` is the month, `mm` the minute).
pub const PLACEHOLDERS: &[&str] = &[
    "schema",
    "table",
    "yyyy",
    "MM",
    "dd",
    "HH",
    "mm",
    "ss",
    UNIQUE_TIME,
    EXTENSION,
];

/// Why a path template or container name is refused. All are configuration errors: retrying
/// cannot fix them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NamingError {
    #[error("path template is empty")]
    Empty,
    #[error(
        "path template is {chars} characters long; blob names are limited to {MAX_BLOB_NAME_CHARS}"
    )]
    TooLong { chars: usize },
    #[error(
        "path template has {segments} path segments; blob names are limited to {MAX_PATH_SEGMENTS}"
    )]
    TooManySegments { segments: usize },
    #[error("path template must not start with '/' (blob names are relative to the container)")]
    LeadingSlash,
    #[error("path template must not end with '/' or '.'")]
    TrailingSlashOrDot,
    #[error("path template contains an empty path segment ('//')")]
    EmptySegment,
    #[error("path template contains a {0:?} path segment")]
    DotSegment(String),
    #[error("path template contains a backslash; use '/' to separate path segments")]
    Backslash,
    #[error("path template contains a control character at character {position}")]
    ControlChar { position: usize },
    #[error("path template has an unbalanced '{brace}' at character {position}")]
    UnbalancedBrace { brace: char, position: usize },
    #[error("path template has unknown placeholder {{{0}}}; known: {{schema}} {{table}} {{yyyy}} {{MM}} {{dd}} {{HH}} {{mm}} {{ss}} {{yyyyMMddHHmmssfff}} {{ext}}")]
    UnknownPlaceholder(String),
    #[error(
        "path template must contain {{{0}}} so that every table and trigger time gets its own blob"
    )]
    MissingPlaceholder(&'static str),
    #[error("container name {name:?} is invalid: {reason}")]
    ContainerName { name: String, reason: &'static str },
}

/// A validated blob path template such as
/// `{schema}/{table}/incremental/{yyyy}/{MM}/{dd}/{yyyyMMddHHmmssfff}.csv`, and the extension
/// of the file format its names get.
///
/// The extension: `{ext}` renders as the format's (`csv` or `parquet`). A template that spells
/// `.csv` at its very end (the default, and every template written before `CDC_FORMAT`
/// existed) gets the format's extension there instead, so it stays valid and a Parquet file
/// is never named `.csv`. Any other text is kept as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathTemplate {
    template: String,
    extension: &'static str,
}

/// One piece of a template: literal text or a placeholder name (without braces).
enum Piece<'a> {
    Literal(&'a str),
    Placeholder(&'a str),
}

/// Splits a template into pieces, checking brace balance. Placeholder names are not checked.
fn pieces(template: &str) -> Result<Vec<Piece<'_>>, NamingError> {
    let mut out = Vec::new();
    let mut rest = template;
    let mut offset = 0; // characters consumed before `rest`, for error positions
    while !rest.is_empty() {
        match rest.find(['{', '}']) {
            None => {
                out.push(Piece::Literal(rest));
                break;
            }
            Some(at) => {
                if at > 0 {
                    out.push(Piece::Literal(&rest[..at]));
                }
                let brace_pos = offset + rest[..at].chars().count();
                if rest.as_bytes()[at] == b'}' {
                    return Err(NamingError::UnbalancedBrace {
                        brace: '}',
                        position: brace_pos,
                    });
                }
                let inner = &rest[at + 1..];
                let close = match inner.find(['{', '}']) {
                    Some(c) if inner.as_bytes()[c] == b'}' => c,
                    _ => {
                        return Err(NamingError::UnbalancedBrace {
                            brace: '{',
                            position: brace_pos,
                        })
                    }
                };
                out.push(Piece::Placeholder(&inner[..close]));
                let consumed = at + 1 + close + 1;
                offset += rest[..consumed].chars().count();
                rest = &rest[consumed..];
            }
        }
    }
    Ok(out)
}

impl std::str::FromStr for PathTemplate {
    type Err = NamingError;

    fn from_str(template: &str) -> Result<Self, Self::Err> {
        if template.is_empty() {
            return Err(NamingError::Empty);
        }
        let chars = template.chars().count();
        if chars > MAX_BLOB_NAME_CHARS {
            return Err(NamingError::TooLong { chars });
        }
        if let Some(position) = template.chars().position(char::is_control) {
            return Err(NamingError::ControlChar { position });
        }
        if template.contains('\\') {
            return Err(NamingError::Backslash);
        }
        if template.starts_with('/') {
            return Err(NamingError::LeadingSlash);
        }
        if template.ends_with('/') || template.ends_with('.') {
            return Err(NamingError::TrailingSlashOrDot);
        }
        let segments: Vec<&str> = template.split('/').collect();
        if segments.len() > MAX_PATH_SEGMENTS {
            return Err(NamingError::TooManySegments {
                segments: segments.len(),
            });
        }
        for segment in &segments {
            match *segment {
                "" => return Err(NamingError::EmptySegment),
                "." | ".." => return Err(NamingError::DotSegment(segment.to_string())),
                _ => {}
            }
        }
        let mut has_table = false;
        let mut has_unique_time = false;
        for piece in pieces(template)? {
            if let Piece::Placeholder(name) = piece {
                if !PLACEHOLDERS.contains(&name) {
                    return Err(NamingError::UnknownPlaceholder(name.to_string()));
                }
                has_table |= name == "table";
                has_unique_time |= name == UNIQUE_TIME;
            }
        }
        if !has_table {
            return Err(NamingError::MissingPlaceholder("table"));
        }
        if !has_unique_time {
            return Err(NamingError::MissingPlaceholder(UNIQUE_TIME));
        }
        Ok(PathTemplate {
            template: template.to_string(),
            extension: "csv",
        })
    }
}

impl Default for PathTemplate {
    fn default() -> Self {
        DEFAULT_INCREMENTAL_TEMPLATE
            .parse()
            .expect("the default template is valid")
    }
}

impl std::fmt::Display for PathTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.template)
    }
}

impl PathTemplate {
    /// The same template for files with `extension` (`csv` or `parquet`, without the dot).
    pub fn with_extension(self, extension: &'static str) -> PathTemplate {
        PathTemplate { extension, ..self }
    }

    /// The extension rendered names get.
    pub fn extension(&self) -> &'static str {
        self.extension
    }

    /// The blob name for `table` at trigger time `at` (UTC). Date and time placeholders are
    /// zero padded; `{yyyyMMddHHmmssfff}` is [`timestamp_id`].
    pub fn render(&self, table: &TableRef, at: DateTime<Utc>) -> String {
        let literal_csv = self.extension != "csv" && self.template.ends_with(CSV_SUFFIX);
        let template = match literal_csv {
            true => &self.template[..self.template.len() - CSV_SUFFIX.len()],
            false => &self.template[..],
        };
        let mut out =
            String::with_capacity(self.template.len() + table.schema.len() + table.table.len());
        // The template was validated by `from_str`, so splitting cannot fail.
        for piece in pieces(template).expect("validated template") {
            match piece {
                Piece::Literal(text) => out.push_str(text),
                Piece::Placeholder("schema") => out.push_str(&table.schema),
                Piece::Placeholder("table") => out.push_str(&table.table),
                Piece::Placeholder("yyyy") => {
                    let _ = write!(out, "{:04}", at.year());
                }
                Piece::Placeholder("MM") => {
                    let _ = write!(out, "{:02}", at.month());
                }
                Piece::Placeholder("dd") => {
                    let _ = write!(out, "{:02}", at.day());
                }
                Piece::Placeholder("HH") => {
                    let _ = write!(out, "{:02}", at.hour());
                }
                Piece::Placeholder("mm") => {
                    let _ = write!(out, "{:02}", at.minute());
                }
                Piece::Placeholder("ss") => {
                    let _ = write!(out, "{:02}", at.second());
                }
                Piece::Placeholder(EXTENSION) => out.push_str(self.extension),
                Piece::Placeholder(_) => out.push_str(&timestamp_id(at)),
            }
        }
        if literal_csv {
            out.push('.');
            out.push_str(self.extension);
        }
        out
    }

    /// The template text as configured.
    pub fn as_str(&self) -> &str {
        &self.template
    }

    /// Whether the template separates tables of the same name in different schemas. When it
    /// does not (the seed's own layout), configuration must not list two such tables.
    pub fn has_schema(&self) -> bool {
        self.template.contains("{schema}")
    }
}

/// `yyyyMMddHHmmssfff` of `at` (UTC): 17 digits, milliseconds truncated, so names sort by time.
/// A chrono leap second (never produced by a timer) is clamped to `59.999`.
pub fn timestamp_id(at: DateTime<Utc>) -> String {
    let (second, millis) = if at.nanosecond() >= 1_000_000_000 {
        (59, 999)
    } else {
        (at.second(), at.nanosecond() / 1_000_000)
    };
    let mut out = String::with_capacity(17);
    let _ = write!(
        out,
        "{:04}{:02}{:02}{:02}{:02}{:02}{:03}",
        at.year(),
        at.month(),
        at.day(),
        at.hour(),
        at.minute(),
        second,
        millis
    );
    out
}

/// The blob of the rest of an old capture instance when a window spans the switch to a new
/// one: the window's blob name with `-<old instance>` before its extension, so a retry of
/// the same trigger time names it the same, and it sorts before the window's own blob (`-`
/// sorts before `.`; a template without an extension gets the suffix at the end, which
/// sorts after — the LSN metadata orders the two either way).
pub fn tail_name(window_blob: &str, old_instance: &str) -> String {
    let file_start = window_blob.rfind('/').map_or(0, |i| i + 1);
    match window_blob[file_start..].rfind('.') {
        Some(dot) => {
            let dot = file_start + dot;
            format!(
                "{}-{old_instance}{}",
                &window_blob[..dot],
                &window_blob[dot..]
            )
        }
        None => format!("{window_blob}-{old_instance}"),
    }
}

/// The name of one part of a full load: `{schema}/{table}/full/{load_id}/part-00000.csv`
/// (`.parquet` for `extension` `parquet`). Parts are numbered from 0 with at least 5 digits,
/// so up to 100 000 parts sort by name.
pub fn full_load_part_name(table: &TableRef, load_id: &str, part: u32, extension: &str) -> String {
    format!(
        "{}/{}/full/{}/part-{:05}.{extension}",
        table.schema, table.table, load_id, part
    )
}

/// The name of part `part` of range `range` of a load split into ranges:
/// `{schema}/{table}/full/{load_id}/range-000-part-00000.csv`. Ranges are numbered in key
/// order, so the names still sort in key order; a load of one range keeps
/// [`full_load_part_name`].
pub fn full_load_range_part_name(
    table: &TableRef,
    load_id: &str,
    range: u32,
    part: u32,
    extension: &str,
) -> String {
    format!(
        "{}/{}/full/{}/range-{:03}-part-{:05}.{extension}",
        table.schema, table.table, load_id, range, part
    )
}

/// Azure container naming: 3–63 characters, lowercase letters, digits and hyphens, starting and
/// ending with a letter or digit, no two hyphens in a row.
pub fn validate_container_name(name: &str) -> Result<(), NamingError> {
    let refuse = |reason| {
        Err(NamingError::ContainerName {
            name: name.to_string(),
            reason,
        })
    };
    if !(3..=63).contains(&name.len()) {
        return refuse("it must be 3 to 63 characters long");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return refuse("only lowercase letters, digits and '-' are allowed");
    }
    if name.starts_with('-') || name.ends_with('-') {
        return refuse("it must start and end with a letter or digit");
    }
    if name.contains("--") {
        return refuse("consecutive hyphens are not allowed");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(schema: &str, name: &str) -> TableRef {
        TableRef {
            schema: schema.to_string(),
            table: name.to_string(),
        }
    }

    fn utc(rfc3339: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(rfc3339)
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn accepted_templates_render() {
        let t = table("dbo", "customers");
        // A Functions timer trigger time with 7 fractional digits.
        let at = utc("2024-03-05T06:07:08.1234567Z");
        let cases: &[(&str, &str)] = &[
            (
                DEFAULT_INCREMENTAL_TEMPLATE,
                "dbo/customers/incremental/2024/03/05/20240305060708123.csv",
            ),
            (
                // The seed tutorial's own layout.
                "{table}/incremental/{yyyy}/{MM}/{dd}/{yyyyMMddHHmmssfff}.csv",
                "customers/incremental/2024/03/05/20240305060708123.csv",
            ),
            (
                "{schema}.{table}/{yyyy}-{MM}-{dd}T{HH}:{mm}:{ss}/{yyyyMMddHHmmssfff}",
                "dbo.customers/2024-03-05T06:07:08/20240305060708123",
            ),
            (
                "cdc/{table}_{yyyyMMddHHmmssfff}.csv",
                "cdc/customers_20240305060708123.csv",
            ),
            (
                "données/{table}/{yyyyMMddHHmmssfff}.csv",
                "données/customers/20240305060708123.csv",
            ),
            (
                ".hidden/{table}/{yyyyMMddHHmmssfff}.csv",
                ".hidden/customers/20240305060708123.csv",
            ),
            (
                "{table}/...x/{yyyyMMddHHmmssfff}",
                "customers/...x/20240305060708123",
            ),
        ];
        for (template, expected) in cases {
            let parsed: PathTemplate = template
                .parse()
                .unwrap_or_else(|e| panic!("{template}: {e}"));
            assert_eq!(parsed.as_str(), *template);
            assert_eq!(parsed.to_string(), *template);
            assert_eq!(parsed.render(&t, at), *expected, "template {template}");
        }
    }

    #[test]
    fn refused_templates_say_why() {
        let long = format!("{{table}}/{{yyyyMMddHHmmssfff}}/{}", "a".repeat(1000));
        let deep = format!("{{table}}/{{yyyyMMddHHmmssfff}}{}", "/a".repeat(253));
        let cases: Vec<(&str, String, NamingError)> = vec![
            ("empty", String::new(), NamingError::Empty),
            ("too long", long, NamingError::TooLong { chars: 1028 }),
            (
                "too many segments",
                deep,
                NamingError::TooManySegments { segments: 255 },
            ),
            (
                "leading slash",
                "/{table}/{yyyyMMddHHmmssfff}.csv".into(),
                NamingError::LeadingSlash,
            ),
            (
                "trailing slash",
                "{table}/{yyyyMMddHHmmssfff}/".into(),
                NamingError::TrailingSlashOrDot,
            ),
            (
                "trailing dot",
                "{table}/{yyyyMMddHHmmssfff}.".into(),
                NamingError::TrailingSlashOrDot,
            ),
            (
                "double slash",
                "{table}//{yyyyMMddHHmmssfff}.csv".into(),
                NamingError::EmptySegment,
            ),
            (
                "dot segment",
                "{table}/./{yyyyMMddHHmmssfff}.csv".into(),
                NamingError::DotSegment(".".into()),
            ),
            (
                "dot-dot segment",
                "../{table}/{yyyyMMddHHmmssfff}.csv".into(),
                NamingError::DotSegment("..".into()),
            ),
            (
                "backslash",
                "{table}\\{yyyyMMddHHmmssfff}.csv".into(),
                NamingError::Backslash,
            ),
            (
                "control char",
                "{table}/\n{yyyyMMddHHmmssfff}.csv".into(),
                NamingError::ControlChar { position: 8 },
            ),
            (
                "unclosed brace",
                "{table}/{yyyyMMddHHmmssfff.csv".into(),
                NamingError::UnbalancedBrace {
                    brace: '{',
                    position: 8,
                },
            ),
            (
                "nested brace",
                "{table}/{yyyy{MM}}/{yyyyMMddHHmmssfff}".into(),
                NamingError::UnbalancedBrace {
                    brace: '{',
                    position: 8,
                },
            ),
            (
                "stray closing brace",
                "{table}/x}/{yyyyMMddHHmmssfff}".into(),
                NamingError::UnbalancedBrace {
                    brace: '}',
                    position: 9,
                },
            ),
            (
                "unknown placeholder",
                "{table}/{date}/{yyyyMMddHHmmssfff}".into(),
                NamingError::UnknownPlaceholder("date".into()),
            ),
            (
                "wrong case placeholder",
                "{Table}/{yyyyMMddHHmmssfff}".into(),
                NamingError::UnknownPlaceholder("Table".into()),
            ),
            (
                "empty placeholder",
                "{table}/{}/{yyyyMMddHHmmssfff}".into(),
                NamingError::UnknownPlaceholder(String::new()),
            ),
            (
                "no unique time",
                "{schema}/{table}/{yyyy}/{MM}/{dd}/{HH}{mm}{ss}.csv".into(),
                NamingError::MissingPlaceholder("yyyyMMddHHmmssfff"),
            ),
            (
                "no table",
                "{schema}/{yyyyMMddHHmmssfff}.csv".into(),
                NamingError::MissingPlaceholder("table"),
            ),
        ];
        for (name, template, expected) in cases {
            let err = template.parse::<PathTemplate>().unwrap_err();
            assert_eq!(err, expected, "case {name}");
            assert!(!err.to_string().is_empty());
        }
    }

    #[test]
    fn limits_are_inclusive() {
        let exactly_1024 = format!("{{table}}/{{yyyyMMddHHmmssfff}}/{}", "a".repeat(996));
        assert_eq!(exactly_1024.chars().count(), 1024);
        assert!(exactly_1024.parse::<PathTemplate>().is_ok());
        let exactly_254 = format!("{{table}}/{{yyyyMMddHHmmssfff}}{}", "/a".repeat(252));
        assert!(exactly_254.parse::<PathTemplate>().is_ok());
    }

    #[test]
    fn default_template_is_valid_and_has_schema() {
        let parsed: PathTemplate = DEFAULT_INCREMENTAL_TEMPLATE.parse().unwrap();
        assert_eq!(parsed, PathTemplate::default());
        assert!(parsed.has_schema());
        let seed: PathTemplate = "{table}/incremental/{yyyy}/{MM}/{dd}/{yyyyMMddHHmmssfff}.csv"
            .parse()
            .unwrap();
        assert!(!seed.has_schema());
    }

    #[test]
    fn timestamp_ids() {
        let cases = [
            ("2024-03-05T06:07:08.1234567Z", "20240305060708123"),
            ("2024-03-05T06:07:08.9999999Z", "20240305060708999"),
            ("2024-03-05T06:07:08Z", "20240305060708000"),
            ("1999-12-31T23:59:59.001Z", "19991231235959001"),
            // Offsets are converted to UTC first.
            ("2024-01-01T01:30:00.5+02:00", "20231231233000500"),
        ];
        for (input, expected) in cases {
            let id = timestamp_id(utc(input));
            assert_eq!(id, expected, "{input}");
            assert_eq!(id.len(), 17);
        }
        // Names sort in time order.
        assert!(
            timestamp_id(utc("2024-03-05T06:07:08.999Z"))
                < timestamp_id(utc("2024-03-05T06:07:09.000Z"))
        );
    }

    #[test]
    fn full_load_part_names() {
        let t = table("sales", "orders");
        let cases = [
            (
                "20240305060708123",
                0,
                "sales/orders/full/20240305060708123/part-00000.csv",
            ),
            (
                "20240305060708123",
                42,
                "sales/orders/full/20240305060708123/part-00042.csv",
            ),
            ("x", 99_999, "sales/orders/full/x/part-99999.csv"),
            ("x", 100_000, "sales/orders/full/x/part-100000.csv"),
        ];
        assert_eq!(
            full_load_range_part_name(&t, "x", 3, 42, "csv"),
            "sales/orders/full/x/range-003-part-00042.csv"
        );
        assert_eq!(
            full_load_range_part_name(&t, "x", 3, 42, "parquet"),
            "sales/orders/full/x/range-003-part-00042.parquet"
        );
        for (load_id, part, expected) in cases {
            assert_eq!(full_load_part_name(&t, load_id, part, "csv"), expected);
            let parquet = expected.replace(".csv", ".parquet");
            assert_eq!(full_load_part_name(&t, load_id, part, "parquet"), parquet);
        }
    }

    /// `CDC_FORMAT` names the files: `{ext}` anywhere, and a literal `.csv` at the end of the
    /// template (the default, and templates written before the setting) becomes the format's
    /// extension; every existing template stays valid and renders as before in CSV.
    #[test]
    fn the_extension_follows_the_format() {
        let t = table("dbo", "customers");
        let at = utc("2024-03-05T06:07:08.123Z");
        let cases = [
            (
                DEFAULT_INCREMENTAL_TEMPLATE,
                "dbo/customers/incremental/2024/03/05/20240305060708123.csv",
                "dbo/customers/incremental/2024/03/05/20240305060708123.parquet",
            ),
            (
                "{table}/{yyyyMMddHHmmssfff}.{ext}",
                "customers/20240305060708123.csv",
                "customers/20240305060708123.parquet",
            ),
            (
                "{ext}/{table}/{yyyyMMddHHmmssfff}.{ext}",
                "csv/customers/20240305060708123.csv",
                "parquet/customers/20240305060708123.parquet",
            ),
            // No extension, or a `.csv` that is not the end: kept as written.
            (
                "{table}/{yyyyMMddHHmmssfff}",
                "customers/20240305060708123",
                "customers/20240305060708123",
            ),
            (
                "{table}.csv/{yyyyMMddHHmmssfff}.txt",
                "customers.csv/20240305060708123.txt",
                "customers.csv/20240305060708123.txt",
            ),
        ];
        for (template, csv, parquet) in cases {
            let parsed: PathTemplate = template.parse().unwrap();
            assert_eq!(parsed.render(&t, at), csv, "{template}");
            assert_eq!(parsed.as_str(), template);
            let as_parquet = parsed.with_extension("parquet");
            assert_eq!(as_parquet.render(&t, at), parquet, "{template}");
            assert_eq!(as_parquet.to_string(), template, "shown as configured");
        }
        // The tail blob of a Parquet window keeps the extension last.
        assert_eq!(
            tail_name("dbo/customers/20240305060708123.parquet", "dbo_customers"),
            "dbo/customers/20240305060708123-dbo_customers.parquet"
        );
    }

    #[test]
    fn container_names() {
        let cases: &[(&str, bool)] = &[
            ("raw", true),
            ("abc", true),
            ("cdc-copy-01", true),
            ("0raw", true),
            (&"a".repeat(63), true),
            ("ab", false),
            (&"a".repeat(64), false),
            ("Raw", false),
            ("raw_data", false),
            ("raw.data", false),
            ("-raw", false),
            ("raw-", false),
            ("raw--data", false),
            ("$logs", false),
            ("", false),
            ("räw", false),
        ];
        for (name, ok) in cases {
            let result = validate_container_name(name);
            assert_eq!(result.is_ok(), *ok, "{name:?}: {result:?}");
            if let Err(e) = result {
                assert!(matches!(e, NamingError::ContainerName { .. }));
            }
        }
    }

    /// The old instance's tail of a split window: named from the window's blob, and sorting
    /// before it when the name has an extension (the default template's `.csv`).
    #[test]
    fn a_tail_blob_sorts_before_its_window() {
        let cases = [
            (
                "dbo/t/incremental/2026/12/01/20261201130000000.csv",
                "dbo/t/incremental/2026/12/01/20261201130000000-dbo_t.csv",
                true,
            ),
            ("x/20261201.tar.gz", "x/20261201.tar-dbo_t.gz", true),
            ("a.b/x/20261201", "a.b/x/20261201-dbo_t", false),
        ];
        for (window, tail, before) in cases {
            assert_eq!(tail_name(window, "dbo_t"), tail);
            assert_eq!(tail < window, before, "{tail} vs {window}");
        }
    }
}

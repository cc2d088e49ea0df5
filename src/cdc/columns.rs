//! A capture instance's columns as the copier needs them: the key with its declared types, and
//! the captured columns it writes.
//!
//! Why the declared type matters: a keyset page's "after" predicate compares the key column
//! with a parameter. A parameter whose type ranks above the column's (tiberius sends strings
//! as `nvarchar`, times as `datetime2`) makes SQL Server convert the *column*, so the
//! comparison no longer agrees with the `ORDER BY` (a `varchar` under a SQL_* collation is
//! compared with Unicode rules but sorted with non-Unicode ones; a `datetime` read back and
//! re-sent as `datetime2(7)` misses its own value). Casting each parameter to the column's
//! own type and collation makes the comparison the index's.
//!
//! Decoding is staged, so nothing unchecked reaches SQL text: the catalog rows
//! ([`KeyColumnRow`], [`CapturedColumnRow`]) are what the server said; [`describe`] turns
//! them into a [`Columns`] whose [`KeyType`]s can only be types SQL Server accepts in a
//! primary key or unique index and whose collation names passed [`Collation::parse`], or
//! refuses them with an error naming the column.

use std::fmt;

use super::{ColumnDesc, ColumnType, Length};

/// A collation name safe to splice after `COLLATE` (letters, digits and `_` only; SQL Server's
/// collation names are all of that form, e.g. `SQL_Latin1_General_CP1_CI_AS`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Collation(String);

impl Collation {
    pub fn parse(name: &str) -> Option<Collation> {
        let ok = !name.is_empty()
            && name.len() <= 128
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        ok.then(|| Collation(name.to_string()))
    }

    pub fn name(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Collation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A type SQL Server accepts for a primary-key or unique-index column, with the length,
/// precision, scale and collation the column was declared with.
/// <https://learn.microsoft.com/sql/t-sql/data-types/data-types-transact-sql>
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KeyType {
    TinyInt,
    SmallInt,
    Int,
    BigInt,
    Bit,
    /// `decimal`/`numeric(precision, scale)` (synonyms).
    Decimal {
        precision: u8,
        scale: u8,
    },
    Money,
    SmallMoney,
    Float,
    Real,
    /// `char(length)` / `varchar(length)`; length in bytes as declared.
    Char {
        length: u16,
        collation: Collation,
    },
    VarChar {
        length: u16,
        collation: Collation,
    },
    /// `nchar(length)` / `nvarchar(length)`; length in characters.
    NChar {
        length: u16,
        collation: Collation,
    },
    NVarChar {
        length: u16,
        collation: Collation,
    },
    Binary {
        length: u16,
    },
    VarBinary {
        length: u16,
    },
    Date,
    Time {
        scale: u8,
    },
    DateTime,
    DateTime2 {
        scale: u8,
    },
    SmallDateTime,
    DateTimeOffset {
        scale: u8,
    },
    UniqueIdentifier,
    /// `rowversion`/`timestamp`: eight bytes, compared as `binary(8)`.
    RowVersion,
}

impl KeyType {
    /// The same declaration as a [`ColumnType`] (a key column is a captured column too).
    pub fn column_type(&self) -> ColumnType {
        match self {
            KeyType::TinyInt => ColumnType::TinyInt,
            KeyType::SmallInt => ColumnType::SmallInt,
            KeyType::Int => ColumnType::Int,
            KeyType::BigInt => ColumnType::BigInt,
            KeyType::Bit => ColumnType::Bit,
            KeyType::Decimal { precision, scale } => ColumnType::Decimal {
                precision: *precision,
                scale: *scale,
            },
            KeyType::Money => ColumnType::Money,
            KeyType::SmallMoney => ColumnType::SmallMoney,
            KeyType::Float => ColumnType::Float,
            KeyType::Real => ColumnType::Real,
            KeyType::Char { length, .. } => ColumnType::Char(Length::Of(*length)),
            KeyType::VarChar { length, .. } => ColumnType::VarChar(Length::Of(*length)),
            KeyType::NChar { length, .. } => ColumnType::NChar(Length::Of(*length)),
            KeyType::NVarChar { length, .. } => ColumnType::NVarChar(Length::Of(*length)),
            KeyType::Binary { length } => ColumnType::Binary(Length::Of(*length)),
            KeyType::VarBinary { length } => ColumnType::VarBinary(Length::Of(*length)),
            KeyType::Date => ColumnType::Date,
            KeyType::Time { scale } => ColumnType::Time { scale: *scale },
            KeyType::DateTime => ColumnType::DateTime,
            KeyType::DateTime2 { scale } => ColumnType::DateTime2 { scale: *scale },
            KeyType::SmallDateTime => ColumnType::SmallDateTime,
            KeyType::DateTimeOffset { scale } => ColumnType::DateTimeOffset { scale: *scale },
            KeyType::UniqueIdentifier => ColumnType::UniqueIdentifier,
            KeyType::RowVersion => ColumnType::RowVersion,
        }
    }

    /// The type as T-SQL spells it (the target of a `CAST`): `varchar(20)`, `decimal(18,2)`…
    /// A `rowversion` parameter is cast to `binary(8)` (a rowversion cannot be a CAST target).
    pub fn sql(&self) -> String {
        match self {
            KeyType::TinyInt => "tinyint".into(),
            KeyType::SmallInt => "smallint".into(),
            KeyType::Int => "int".into(),
            KeyType::BigInt => "bigint".into(),
            KeyType::Bit => "bit".into(),
            KeyType::Decimal { precision, scale } => format!("decimal({precision},{scale})"),
            KeyType::Money => "money".into(),
            KeyType::SmallMoney => "smallmoney".into(),
            KeyType::Float => "float".into(),
            KeyType::Real => "real".into(),
            KeyType::Char { length, .. } => format!("char({length})"),
            KeyType::VarChar { length, .. } => format!("varchar({length})"),
            KeyType::NChar { length, .. } => format!("nchar({length})"),
            KeyType::NVarChar { length, .. } => format!("nvarchar({length})"),
            KeyType::Binary { length } => format!("binary({length})"),
            KeyType::VarBinary { length } => format!("varbinary({length})"),
            KeyType::Date => "date".into(),
            KeyType::Time { scale } => format!("time({scale})"),
            KeyType::DateTime => "datetime".into(),
            KeyType::DateTime2 { scale } => format!("datetime2({scale})"),
            KeyType::SmallDateTime => "smalldatetime".into(),
            KeyType::DateTimeOffset { scale } => format!("datetimeoffset({scale})"),
            KeyType::UniqueIdentifier => "uniqueidentifier".into(),
            KeyType::RowVersion => "binary(8)".into(),
        }
    }

    /// The collation of a character key.
    pub fn collation(&self) -> Option<&Collation> {
        match self {
            KeyType::Char { collation, .. }
            | KeyType::VarChar { collation, .. }
            | KeyType::NChar { collation, .. }
            | KeyType::NVarChar { collation, .. } => Some(collation),
            _ => None,
        }
    }

    /// `expr` as a value of this type: `CAST(expr AS int)`, and for character keys
    /// `CAST(expr COLLATE <collation> AS varchar(20))`. When the input and the output of a
    /// CAST are character strings the output keeps the input's collation, so the explicit
    /// `COLLATE` is what makes both the code-page conversion and the comparison use the
    /// column's collation.
    /// <https://learn.microsoft.com/sql/t-sql/functions/cast-and-convert-transact-sql>
    /// <https://learn.microsoft.com/sql/t-sql/statements/collations>
    pub fn cast(&self, expr: &str) -> String {
        match self.collation() {
            Some(collation) => format!("CAST({expr} COLLATE {collation} AS {})", self.sql()),
            None => format!("CAST({expr} AS {})", self.sql()),
        }
    }

    /// Decodes one key column's catalog entry. `system_type` is the base system type's name
    /// (`sys.types` row of `sys.columns.system_type_id`; NULL for CLR types), `type_name` the
    /// declared (possibly alias) type's name, kept for messages. `max_length` is in bytes, as
    /// in `sys.columns`.
    pub fn from_catalog(
        system_type: Option<&str>,
        type_name: &str,
        max_length: i16,
        precision: u8,
        scale: u8,
        collation: Option<&str>,
    ) -> Result<KeyType, KeyTypeError> {
        let unsupported = || KeyTypeError::Unsupported(type_name.to_string());
        let system = system_type.ok_or_else(unsupported)?.to_ascii_lowercase();
        let bytes = || u16::try_from(max_length).map_err(|_| unsupported());
        let collation = || {
            let name = collation.ok_or_else(|| KeyTypeError::Collation(String::new()))?;
            Collation::parse(name).ok_or_else(|| KeyTypeError::Collation(name.to_string()))
        };
        Ok(match system.as_str() {
            "tinyint" => KeyType::TinyInt,
            "smallint" => KeyType::SmallInt,
            "int" => KeyType::Int,
            "bigint" => KeyType::BigInt,
            "bit" => KeyType::Bit,
            "decimal" | "numeric" => KeyType::Decimal { precision, scale },
            "money" => KeyType::Money,
            "smallmoney" => KeyType::SmallMoney,
            "float" => KeyType::Float,
            "real" => KeyType::Real,
            "char" => KeyType::Char {
                length: bytes()?,
                collation: collation()?,
            },
            "varchar" => KeyType::VarChar {
                length: bytes()?,
                collation: collation()?,
            },
            "nchar" => KeyType::NChar {
                length: bytes()? / 2,
                collation: collation()?,
            },
            "nvarchar" => KeyType::NVarChar {
                length: bytes()? / 2,
                collation: collation()?,
            },
            "binary" => KeyType::Binary { length: bytes()? },
            "varbinary" => KeyType::VarBinary { length: bytes()? },
            "date" => KeyType::Date,
            "time" => KeyType::Time { scale },
            "datetime" => KeyType::DateTime,
            "datetime2" => KeyType::DateTime2 { scale },
            "smalldatetime" => KeyType::SmallDateTime,
            "datetimeoffset" => KeyType::DateTimeOffset { scale },
            "uniqueidentifier" => KeyType::UniqueIdentifier,
            "timestamp" | "rowversion" => KeyType::RowVersion,
            _ => return Err(unsupported()),
        })
    }
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.collation() {
            Some(c) => write!(f, "{} COLLATE {c}", self.sql()),
            None => f.write_str(&self.sql()),
        }
    }
}

/// Why one key column's type is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyTypeError {
    /// Not a type the copier can page by (`sql_variant`, `hierarchyid`, CLR types, `(max)`…).
    Unsupported(String),
    /// A character key without a collation the copier can name in `COLLATE`.
    Collation(String),
}

/// One key column of the capture instance's unique index.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyColumn {
    pub name: String,
    pub ty: KeyType,
}

impl KeyColumn {
    pub fn new(name: impl Into<String>, ty: KeyType) -> KeyColumn {
        KeyColumn {
            name: name.into(),
            ty,
        }
    }
}

/// A key column as the catalog describes it (`sys.index_columns` → `sys.columns` →
/// `sys.types`), one row of `CAPTURE_INSTANCES` result set 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyColumnRow {
    pub column_name: String,
    /// The base system type (alias types resolved); `None` for CLR types.
    pub system_type: Option<String>,
    /// The declared type's own name (an alias type's name, or the system type's).
    pub type_name: String,
    pub max_length: i16,
    pub precision: u8,
    pub scale: u8,
    pub collation_name: Option<String>,
    pub is_nullable: bool,
}

/// A captured column (`cdc.captured_columns`) with its declared type in the change table
/// (`sys.columns` of `cdc.change_tables.object_id`), one row of `CAPTURE_INSTANCES` result
/// set 3. `max_length` is `None` when the change table's columns are not visible to the login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapturedColumnRow {
    pub column_name: String,
    pub is_computed: bool,
    pub system_type: Option<String>,
    pub type_name: String,
    pub max_length: Option<i16>,
    pub precision: u8,
    pub scale: u8,
    pub collation_name: Option<String>,
    pub is_nullable: bool,
}

impl CapturedColumnRow {
    /// A captured column of type `ty` as the catalog would list it (for tests and fakes).
    pub fn typed(column_name: &str, desc: &crate::cdc::ColumnDesc) -> CapturedColumnRow {
        let (system, max_length, precision, scale) = catalog_of(&desc.ty);
        CapturedColumnRow {
            column_name: column_name.to_string(),
            is_computed: false,
            system_type: system.clone(),
            type_name: system.unwrap_or_else(|| desc.ty.sql()),
            max_length: Some(max_length),
            precision,
            scale,
            collation_name: desc.collation.clone(),
            is_nullable: desc.nullable,
        }
    }
}

/// The `sys.columns` view of a [`ColumnType`]: the base system type's name (`None` for
/// [`ColumnType::Other`]), `max_length` in bytes (-1 for `(max)`), precision and scale. The
/// inverse of [`ColumnType::from_catalog`], so fakes answer the catalog as the server would.
/// <https://learn.microsoft.com/sql/relational-databases/system-catalog-views/sys-columns-transact-sql>
pub fn catalog_of(ty: &ColumnType) -> (Option<String>, i16, u8, u8) {
    let len = |n: &Length, unit: i16| match n {
        Length::Max => -1,
        Length::Of(n) => i16::try_from(*n).unwrap_or(i16::MAX).saturating_mul(unit),
    };
    let (name, max_length, precision, scale): (&str, i16, u8, u8) = match ty {
        ColumnType::Bit => ("bit", 1, 1, 0),
        ColumnType::TinyInt => ("tinyint", 1, 3, 0),
        ColumnType::SmallInt => ("smallint", 2, 5, 0),
        ColumnType::Int => ("int", 4, 10, 0),
        ColumnType::BigInt => ("bigint", 8, 19, 0),
        ColumnType::Real => ("real", 4, 24, 0),
        ColumnType::Float => ("float", 8, 53, 0),
        ColumnType::Decimal { precision, scale } => ("decimal", 17, *precision, *scale),
        ColumnType::Money => ("money", 8, 19, 4),
        ColumnType::SmallMoney => ("smallmoney", 4, 10, 4),
        ColumnType::Char(n) => ("char", len(n, 1), 0, 0),
        ColumnType::VarChar(n) => ("varchar", len(n, 1), 0, 0),
        ColumnType::NChar(n) => ("nchar", len(n, 2), 0, 0),
        ColumnType::NVarChar(n) => ("nvarchar", len(n, 2), 0, 0),
        ColumnType::Text => ("text", 16, 0, 0),
        ColumnType::NText => ("ntext", 16, 0, 0),
        ColumnType::Image => ("image", 16, 0, 0),
        ColumnType::Xml => ("xml", -1, 0, 0),
        ColumnType::Binary(n) => ("binary", len(n, 1), 0, 0),
        ColumnType::VarBinary(n) => ("varbinary", len(n, 1), 0, 0),
        ColumnType::RowVersion => ("timestamp", 8, 0, 0),
        ColumnType::Date => ("date", 3, 10, 0),
        ColumnType::Time { scale } => ("time", 5, 16, *scale),
        ColumnType::DateTime => ("datetime", 8, 23, 3),
        ColumnType::SmallDateTime => ("smalldatetime", 4, 16, 0),
        ColumnType::DateTime2 { scale } => ("datetime2", 8, 27, *scale),
        ColumnType::DateTimeOffset { scale } => ("datetimeoffset", 10, 34, *scale),
        ColumnType::UniqueIdentifier => ("uniqueidentifier", 16, 0, 0),
        ColumnType::Other(_) => return (None, -1, 0, 0),
    };
    (Some(name.to_string()), max_length, precision, scale)
}

/// What [`describe`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Columns {
    /// Empty for a table without a primary key or unique index (read by all changes).
    pub key: Vec<KeyColumn>,
    /// The captured columns the copier writes, in `column_ordinal` order, with their declared
    /// types: computed columns are left out (CDC records them as NULL in every change row, see
    /// docs/csv-format.md).
    pub captured: Vec<ColumnDesc>,
}

/// Why a capture instance's columns cannot be copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColumnsError {
    /// The unique index has nullable columns: their NULL-key rows never come out of net changes.
    NullableKey(Vec<String>),
    UnsupportedKey {
        column: String,
        type_name: String,
    },
    KeyCollation {
        column: String,
        collation: String,
    },
    /// The change table's `sys.columns` rows are not visible to the login (no VIEW DEFINITION
    /// on `cdc.<capture_instance>_CT`), so the captured columns have no declared type.
    TypesNotVisible(Vec<String>),
}

/// Catalog rows (key columns in key order, captured columns in `column_ordinal` order) to a
/// validated description.
pub fn describe(
    keys: &[KeyColumnRow],
    captured: &[CapturedColumnRow],
) -> Result<Columns, ColumnsError> {
    let nullable: Vec<String> = keys
        .iter()
        .filter(|k| k.is_nullable)
        .map(|k| k.column_name.clone())
        .collect();
    if !nullable.is_empty() {
        return Err(ColumnsError::NullableKey(nullable));
    }
    let key = keys
        .iter()
        .map(|k| {
            KeyType::from_catalog(
                k.system_type.as_deref(),
                &k.type_name,
                k.max_length,
                k.precision,
                k.scale,
                k.collation_name.as_deref(),
            )
            .map(|ty| KeyColumn::new(&k.column_name, ty))
            .map_err(|e| match e {
                KeyTypeError::Unsupported(type_name) => ColumnsError::UnsupportedKey {
                    column: k.column_name.clone(),
                    type_name,
                },
                KeyTypeError::Collation(collation) => ColumnsError::KeyCollation {
                    column: k.column_name.clone(),
                    collation,
                },
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let captured: Vec<&CapturedColumnRow> = captured.iter().filter(|c| !c.is_computed).collect();
    let hidden: Vec<String> = captured
        .iter()
        .filter(|c| c.max_length.is_none())
        .map(|c| c.column_name.clone())
        .collect();
    if !hidden.is_empty() {
        return Err(ColumnsError::TypesNotVisible(hidden));
    }
    let captured = captured
        .into_iter()
        .map(|c| {
            let ty = ColumnType::from_catalog(
                c.system_type.as_deref(),
                &c.type_name,
                c.max_length.unwrap_or(-1),
                c.precision,
                c.scale,
            );
            let desc = ColumnDesc::new(&c.column_name, ty, c.is_nullable);
            match &c.collation_name {
                Some(collation) => desc.with_collation(collation),
                None => desc,
            }
        })
        .collect();
    Ok(Columns { key, captured })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ci_as() -> Collation {
        Collation::parse("SQL_Latin1_General_CP1_CI_AS").unwrap()
    }

    #[test]
    fn catalog_types_decode_to_key_types() {
        let c = Some("SQL_Latin1_General_CP1_CI_AS");
        /// (system type, max_length, precision, scale, collation, decoded, as SQL)
        type Case = (
            &'static str,
            i16,
            u8,
            u8,
            Option<&'static str>,
            KeyType,
            &'static str,
        );
        #[rustfmt::skip]
        let cases: &[Case] = &[
            ("tinyint", 1, 3, 0, None, KeyType::TinyInt, "tinyint"),
            ("smallint", 2, 5, 0, None, KeyType::SmallInt, "smallint"),
            ("int", 4, 10, 0, None, KeyType::Int, "int"),
            ("bigint", 8, 19, 0, None, KeyType::BigInt, "bigint"),
            ("bit", 1, 1, 0, None, KeyType::Bit, "bit"),
            ("decimal", 9, 18, 2, None, KeyType::Decimal { precision: 18, scale: 2 }, "decimal(18,2)"),
            ("numeric", 5, 5, 0, None, KeyType::Decimal { precision: 5, scale: 0 }, "decimal(5,0)"),
            ("money", 8, 19, 4, None, KeyType::Money, "money"),
            ("smallmoney", 4, 10, 4, None, KeyType::SmallMoney, "smallmoney"),
            ("float", 8, 53, 0, None, KeyType::Float, "float"),
            ("real", 4, 24, 0, None, KeyType::Real, "real"),
            ("char", 10, 0, 0, c, KeyType::Char { length: 10, collation: ci_as() }, "char(10)"),
            ("varchar", 20, 0, 0, c, KeyType::VarChar { length: 20, collation: ci_as() }, "varchar(20)"),
            ("nchar", 20, 0, 0, c, KeyType::NChar { length: 10, collation: ci_as() }, "nchar(10)"),
            ("nvarchar", 100, 0, 0, c, KeyType::NVarChar { length: 50, collation: ci_as() }, "nvarchar(50)"),
            ("binary", 16, 0, 0, None, KeyType::Binary { length: 16 }, "binary(16)"),
            ("varbinary", 32, 0, 0, None, KeyType::VarBinary { length: 32 }, "varbinary(32)"),
            ("date", 3, 10, 0, None, KeyType::Date, "date"),
            ("time", 5, 16, 7, None, KeyType::Time { scale: 7 }, "time(7)"),
            ("datetime", 8, 23, 3, None, KeyType::DateTime, "datetime"),
            ("datetime2", 7, 23, 3, None, KeyType::DateTime2 { scale: 3 }, "datetime2(3)"),
            ("smalldatetime", 4, 16, 0, None, KeyType::SmallDateTime, "smalldatetime"),
            ("datetimeoffset", 10, 34, 7, None, KeyType::DateTimeOffset { scale: 7 }, "datetimeoffset(7)"),
            ("uniqueidentifier", 16, 0, 0, None, KeyType::UniqueIdentifier, "uniqueidentifier"),
            ("timestamp", 8, 0, 0, None, KeyType::RowVersion, "binary(8)"),
        ];
        for (system, len, p, s, coll, expected, sql) in cases {
            let ty = KeyType::from_catalog(Some(system), system, *len, *p, *s, *coll).unwrap();
            assert_eq!(&ty, expected, "{system}");
            assert_eq!(ty.sql(), *sql, "{system}");
        }
    }

    #[test]
    fn types_that_cannot_page_are_refused_by_name() {
        /// (system type, declared type, max_length, collation, refusal)
        type Case = (
            Option<&'static str>,
            &'static str,
            i16,
            Option<&'static str>,
            KeyTypeError,
        );
        let cases: &[Case] = &[
            (
                Some("sql_variant"),
                "sql_variant",
                8016,
                None,
                KeyTypeError::Unsupported("sql_variant".into()),
            ),
            (
                None,
                "hierarchyid",
                892,
                None,
                KeyTypeError::Unsupported("hierarchyid".into()),
            ),
            (
                None,
                "geography",
                -1,
                None,
                KeyTypeError::Unsupported("geography".into()),
            ),
            (
                Some("varchar"),
                "varchar",
                -1,
                Some("Latin1_General_CI_AS"),
                KeyTypeError::Unsupported("varchar".into()),
            ),
            (
                Some("varchar"),
                "varchar",
                10,
                None,
                KeyTypeError::Collation(String::new()),
            ),
            (
                Some("nvarchar"),
                "nvarchar",
                10,
                Some("x]; DROP TABLE t;--"),
                KeyTypeError::Collation("x]; DROP TABLE t;--".into()),
            ),
        ];
        for (system, name, len, coll, expected) in cases {
            assert_eq!(
                KeyType::from_catalog(*system, name, *len, 0, 0, *coll),
                Err(expected.clone()),
                "{name}"
            );
        }
    }

    fn key_row(name: &str, system: &str, nullable: bool) -> KeyColumnRow {
        KeyColumnRow {
            column_name: name.into(),
            system_type: Some(system.into()),
            type_name: system.into(),
            max_length: 4,
            precision: 10,
            scale: 0,
            collation_name: None,
            is_nullable: nullable,
        }
    }

    fn captured(name: &str, is_computed: bool) -> CapturedColumnRow {
        CapturedColumnRow {
            is_computed,
            ..CapturedColumnRow::typed(name, &ColumnDesc::new(name, ColumnType::Int, false))
        }
    }

    #[test]
    fn describe_validates_keys_and_drops_computed_columns() {
        let alias = KeyColumnRow {
            type_name: "customer_code".into(),
            ..key_row("region", "int", false)
        };
        let ok = describe(
            &[alias, key_row("id", "bigint", false)],
            &[
                captured("region", false),
                captured("id", false),
                captured("total", true),
                captured("name", false),
            ],
        )
        .unwrap();
        assert_eq!(
            ok.key,
            vec![
                KeyColumn::new("region", KeyType::Int),
                KeyColumn::new("id", KeyType::BigInt)
            ]
        );
        let names: Vec<&str> = ok.captured.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["region", "id", "name"]);
        let cases: Vec<(Vec<KeyColumnRow>, ColumnsError)> = vec![
            (
                vec![
                    key_row("a", "int", true),
                    key_row("b", "int", false),
                    key_row("c", "int", true),
                ],
                ColumnsError::NullableKey(vec!["a".into(), "c".into()]),
            ),
            (
                vec![KeyColumnRow {
                    system_type: None,
                    type_name: "hierarchyid".into(),
                    ..key_row("node", "x", false)
                }],
                ColumnsError::UnsupportedKey {
                    column: "node".into(),
                    type_name: "hierarchyid".into(),
                },
            ),
            (
                vec![key_row("v", "sql_variant", false)],
                ColumnsError::UnsupportedKey {
                    column: "v".into(),
                    type_name: "sql_variant".into(),
                },
            ),
        ];
        for (keys, expected) in cases {
            assert_eq!(describe(&keys, &[]), Err(expected));
        }
    }

    #[test]
    fn casts_carry_type_and_collation() {
        assert_eq!(KeyType::Int.cast("@P2"), "CAST(@P2 AS int)");
        assert_eq!(
            KeyType::VarChar {
                length: 20,
                collation: ci_as()
            }
            .cast("@P2"),
            "CAST(@P2 COLLATE SQL_Latin1_General_CP1_CI_AS AS varchar(20))"
        );
        assert_eq!(KeyType::RowVersion.cast("@P3"), "CAST(@P3 AS binary(8))");
    }

    #[test]
    fn captured_columns_carry_their_change_table_types() {
        let ci_as = "SQL_Latin1_General_CP1_CI_AS";
        let wanted = [
            ColumnDesc::new("id", ColumnType::Int, false),
            ColumnDesc::new("name", ColumnType::NVarChar(Length::Of(50)), true)
                .with_collation(ci_as),
            ColumnDesc::new(
                "price",
                ColumnType::Decimal {
                    precision: 38,
                    scale: 10,
                },
                true,
            ),
            ColumnDesc::new("at", ColumnType::DateTime2 { scale: 3 }, true),
            ColumnDesc::new("notes", ColumnType::VarChar(Length::Max), true).with_collation(ci_as),
            ColumnDesc::new("shape", ColumnType::Other("geography".into()), true),
        ];
        let rows: Vec<CapturedColumnRow> = wanted
            .iter()
            .map(|d| CapturedColumnRow {
                // An alias or CLR type's own name, as `sys.types` gives it.
                type_name: match &d.ty {
                    ColumnType::Other(name) => name.clone(),
                    _ => "alias_name".into(),
                },
                ..CapturedColumnRow::typed(&d.name, d)
            })
            .collect();
        assert_eq!(describe(&[], &rows).unwrap().captured, wanted);
        // Without VIEW DEFINITION on the change table its sys.columns rows are invisible, and
        // the LEFT JOIN gives NULLs: refused by column name, never guessed.
        let hidden = CapturedColumnRow {
            max_length: None,
            ..rows[1].clone()
        };
        assert_eq!(
            describe(&[], &[rows[0].clone(), hidden]),
            Err(ColumnsError::TypesNotVisible(vec!["name".into()]))
        );
    }
}

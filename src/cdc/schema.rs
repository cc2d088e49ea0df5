//! Every copied column's declared SQL Server type, as the catalog states it.
//!
//! Why the files need it: a [`Value`](super::Value) says what the driver decoded, not what the
//! column was declared as. `datetime`, `datetime2(3)` and `smalldatetime` all decode to one
//! `DateTime`; `decimal(18,2)` and `money` to one `Decimal`. A typed file format (Parquet's
//! Decimal128 with its precision, a timestamp unit) and a CSV that shows `datetime` the way SQL
//! Server does (milliseconds) both need the declaration, and a reader needs it to load CSV with
//! exact types. So the declaration is read once per capture instance, with the key columns, and
//! travels with the rows to the sink and into the schema document beside the data.
//!
//! Unlike [`KeyType`](super::KeyType), which only admits what a keyset page can compare, a
//! [`ColumnType`] takes every type a table can hold: what the copier cannot type exactly
//! (`sql_variant`, `hierarchyid`, spatial and CLR types) is [`ColumnType::Other`], copied as the
//! driver returns it and named in the schema document so a reader is not left guessing.
//! <https://learn.microsoft.com/sql/t-sql/data-types/data-types-transact-sql>

use std::fmt;

/// The declared length of a character or binary column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Length {
    /// `(max)`: `sys.columns.max_length` is -1.
    Max,
    /// Bytes for `char`/`varchar`/`binary`/`varbinary`, characters for `nchar`/`nvarchar`,
    /// as T-SQL declares them.
    Of(u16),
}

impl fmt::Display for Length {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Length::Max => f.write_str("max"),
            Length::Of(n) => write!(f, "{n}"),
        }
    }
}

/// A SQL Server column type with its length, precision or scale.
/// <https://learn.microsoft.com/sql/t-sql/data-types/data-types-transact-sql>
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ColumnType {
    Bit,
    TinyInt,
    SmallInt,
    Int,
    BigInt,
    /// `real` (`float(1..24)`).
    Real,
    /// `float` (`float(25..53)`).
    Float,
    /// `decimal`/`numeric(precision, scale)` (synonyms).
    Decimal {
        precision: u8,
        scale: u8,
    },
    /// `money`: decimal(19,4) in range and precision.
    Money,
    /// `smallmoney`: decimal(10,4).
    SmallMoney,
    Char(Length),
    VarChar(Length),
    NChar(Length),
    NVarChar(Length),
    /// The deprecated large-object types.
    Text,
    NText,
    Image,
    Xml,
    Binary(Length),
    VarBinary(Length),
    /// `rowversion`/`timestamp`: eight bytes.
    RowVersion,
    Date,
    /// `time(scale)`, scale 0–7 fractional digits.
    Time {
        scale: u8,
    },
    /// `datetime`: 1/300 s ticks, shown by SQL Server rounded to .000, .003 or .007.
    DateTime,
    /// `smalldatetime`: whole minutes.
    SmallDateTime,
    DateTime2 {
        scale: u8,
    },
    DateTimeOffset {
        scale: u8,
    },
    UniqueIdentifier,
    /// A type copied as the driver returns it, without an exact file type: `sql_variant`,
    /// `hierarchyid`, `geometry`, `geography`, CLR user-defined types. Holds the type's name.
    Other(String),
}

impl ColumnType {
    /// Decodes one column's catalog entry. `system_type` is the base system type's name
    /// (`sys.types` row of `sys.columns.system_type_id`; NULL for CLR types), `type_name` the
    /// declared (possibly alias) type's name. `max_length` is in bytes, -1 for `(max)` and
    /// `xml`, as in `sys.columns`. Never fails: an unknown type is [`ColumnType::Other`].
    /// <https://learn.microsoft.com/sql/relational-databases/system-catalog-views/sys-columns-transact-sql>
    pub fn from_catalog(
        system_type: Option<&str>,
        type_name: &str,
        max_length: i16,
        precision: u8,
        scale: u8,
    ) -> ColumnType {
        let Some(system) = system_type.map(str::to_ascii_lowercase) else {
            return ColumnType::Other(type_name.to_string());
        };
        let bytes = || match u16::try_from(max_length) {
            Ok(n) => Length::Of(n),
            Err(_) => Length::Max,
        };
        let chars = || match bytes() {
            Length::Of(n) => Length::Of(n / 2),
            Length::Max => Length::Max,
        };
        match system.as_str() {
            "bit" => ColumnType::Bit,
            "tinyint" => ColumnType::TinyInt,
            "smallint" => ColumnType::SmallInt,
            "int" => ColumnType::Int,
            "bigint" => ColumnType::BigInt,
            "real" => ColumnType::Real,
            "float" => ColumnType::Float,
            "decimal" | "numeric" => ColumnType::Decimal { precision, scale },
            "money" => ColumnType::Money,
            "smallmoney" => ColumnType::SmallMoney,
            "char" => ColumnType::Char(bytes()),
            "varchar" => ColumnType::VarChar(bytes()),
            "nchar" => ColumnType::NChar(chars()),
            "nvarchar" => ColumnType::NVarChar(chars()),
            "text" => ColumnType::Text,
            "ntext" => ColumnType::NText,
            "image" => ColumnType::Image,
            "xml" => ColumnType::Xml,
            "binary" => ColumnType::Binary(bytes()),
            "varbinary" => ColumnType::VarBinary(bytes()),
            "timestamp" | "rowversion" => ColumnType::RowVersion,
            "date" => ColumnType::Date,
            "time" => ColumnType::Time { scale },
            "datetime" => ColumnType::DateTime,
            "smalldatetime" => ColumnType::SmallDateTime,
            "datetime2" => ColumnType::DateTime2 { scale },
            "datetimeoffset" => ColumnType::DateTimeOffset { scale },
            "uniqueidentifier" => ColumnType::UniqueIdentifier,
            _ => ColumnType::Other(type_name.to_string()),
        }
    }

    /// The type as T-SQL declares it: `varchar(20)`, `nvarchar(max)`, `decimal(18,2)`,
    /// `datetime2(3)`.
    pub fn sql(&self) -> String {
        match self {
            ColumnType::Bit => "bit".into(),
            ColumnType::TinyInt => "tinyint".into(),
            ColumnType::SmallInt => "smallint".into(),
            ColumnType::Int => "int".into(),
            ColumnType::BigInt => "bigint".into(),
            ColumnType::Real => "real".into(),
            ColumnType::Float => "float".into(),
            ColumnType::Decimal { precision, scale } => format!("decimal({precision},{scale})"),
            ColumnType::Money => "money".into(),
            ColumnType::SmallMoney => "smallmoney".into(),
            ColumnType::Char(n) => format!("char({n})"),
            ColumnType::VarChar(n) => format!("varchar({n})"),
            ColumnType::NChar(n) => format!("nchar({n})"),
            ColumnType::NVarChar(n) => format!("nvarchar({n})"),
            ColumnType::Text => "text".into(),
            ColumnType::NText => "ntext".into(),
            ColumnType::Image => "image".into(),
            ColumnType::Xml => "xml".into(),
            ColumnType::Binary(n) => format!("binary({n})"),
            ColumnType::VarBinary(n) => format!("varbinary({n})"),
            ColumnType::RowVersion => "rowversion".into(),
            ColumnType::Date => "date".into(),
            ColumnType::Time { scale } => format!("time({scale})"),
            ColumnType::DateTime => "datetime".into(),
            ColumnType::SmallDateTime => "smalldatetime".into(),
            ColumnType::DateTime2 { scale } => format!("datetime2({scale})"),
            ColumnType::DateTimeOffset { scale } => format!("datetimeoffset({scale})"),
            ColumnType::UniqueIdentifier => "uniqueidentifier".into(),
            ColumnType::Other(name) => name.clone(),
        }
    }

    /// Fractional-second digits SQL Server shows for a time type (`datetime` 3, `smalldatetime`
    /// 0: its seconds are always zero), `None` for other types.
    pub fn fraction_digits(&self) -> Option<u8> {
        match self {
            ColumnType::Time { scale }
            | ColumnType::DateTime2 { scale }
            | ColumnType::DateTimeOffset { scale } => Some(*scale),
            ColumnType::DateTime => Some(3),
            ColumnType::SmallDateTime => Some(0),
            _ => None,
        }
    }
}

impl fmt::Display for ColumnType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.sql())
    }
}

/// One column of a file: its name, declared type, nullability and (for character types) the
/// collation, as the catalog gives them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ColumnDesc {
    pub name: String,
    pub ty: ColumnType,
    pub nullable: bool,
    /// `sys.columns.collation_name`: set for character columns only.
    pub collation: Option<String>,
}

/// A column is named by its name wherever a statement lists columns.
impl AsRef<str> for ColumnDesc {
    fn as_ref(&self) -> &str {
        &self.name
    }
}

impl ColumnDesc {
    pub fn new(name: impl Into<String>, ty: ColumnType, nullable: bool) -> ColumnDesc {
        ColumnDesc {
            name: name.into(),
            ty,
            nullable,
            collation: None,
        }
    }

    pub fn with_collation(mut self, collation: impl Into<String>) -> ColumnDesc {
        self.collation = Some(collation.into());
        self
    }

    /// `__$start_lsn` / `__$seqval`: `binary(10)`, never NULL.
    /// <https://learn.microsoft.com/sql/relational-databases/system-functions/cdc-fn-cdc-get-net-changes-capture-instance-transact-sql>
    pub fn lsn(name: &str) -> ColumnDesc {
        ColumnDesc::new(name, ColumnType::Binary(Length::Of(10)), false)
    }

    /// `__$operation`: `int` (1 delete, 2 insert, 3 before-image, 4 after-image; 5 merge).
    pub fn operation() -> ColumnDesc {
        ColumnDesc::new("__$operation", ColumnType::Int, false)
    }

    /// `__$update_mask`: `varbinary(128)`, NULL for net changes without `with mask`.
    pub fn update_mask() -> ColumnDesc {
        ColumnDesc::new(
            "__$update_mask",
            ColumnType::VarBinary(Length::Of(128)),
            true,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_rows_decode_to_their_declared_types() {
        // (system type, type name, max_length, precision, scale) → T-SQL text.
        type Case<'a> = (Option<&'a str>, &'a str, i16, u8, u8, &'a str);
        let cases: &[Case] = &[
            (Some("int"), "int", 4, 10, 0, "int"),
            (Some("bigint"), "bigint", 8, 19, 0, "bigint"),
            (Some("bit"), "bit", 1, 1, 0, "bit"),
            (Some("float"), "float", 8, 53, 0, "float"),
            (Some("real"), "real", 4, 24, 0, "real"),
            (Some("decimal"), "decimal", 9, 18, 2, "decimal(18,2)"),
            (Some("numeric"), "numeric", 17, 38, 10, "decimal(38,10)"),
            (Some("money"), "money", 8, 19, 4, "money"),
            (Some("smallmoney"), "smallmoney", 4, 10, 4, "smallmoney"),
            (Some("varchar"), "varchar", 50, 0, 0, "varchar(50)"),
            (Some("varchar"), "varchar", -1, 0, 0, "varchar(max)"),
            (Some("nvarchar"), "nvarchar", 100, 0, 0, "nvarchar(50)"),
            (Some("nvarchar"), "nvarchar", -1, 0, 0, "nvarchar(max)"),
            (Some("nchar"), "nchar", 20, 0, 0, "nchar(10)"),
            (Some("char"), "char", 3, 0, 0, "char(3)"),
            (Some("binary"), "binary", 10, 0, 0, "binary(10)"),
            (Some("varbinary"), "varbinary", -1, 0, 0, "varbinary(max)"),
            (Some("timestamp"), "timestamp", 8, 0, 0, "rowversion"),
            (Some("xml"), "xml", -1, 0, 0, "xml"),
            (Some("text"), "text", 16, 0, 0, "text"),
            (Some("ntext"), "ntext", 16, 0, 0, "ntext"),
            (Some("image"), "image", 16, 0, 0, "image"),
            (Some("date"), "date", 3, 10, 0, "date"),
            (Some("time"), "time", 5, 16, 7, "time(7)"),
            (Some("datetime"), "datetime", 8, 23, 3, "datetime"),
            (
                Some("smalldatetime"),
                "smalldatetime",
                4,
                16,
                0,
                "smalldatetime",
            ),
            (Some("datetime2"), "datetime2", 7, 23, 3, "datetime2(3)"),
            (
                Some("datetimeoffset"),
                "datetimeoffset",
                10,
                34,
                7,
                "datetimeoffset(7)",
            ),
            (
                Some("uniqueidentifier"),
                "uniqueidentifier",
                16,
                0,
                0,
                "uniqueidentifier",
            ),
            // An alias type decodes by its base type.
            (Some("nvarchar"), "Name", 100, 0, 0, "nvarchar(50)"),
            (
                Some("sql_variant"),
                "sql_variant",
                8016,
                0,
                0,
                "sql_variant",
            ),
            // CLR types have no system type row.
            (None, "hierarchyid", 892, 0, 0, "hierarchyid"),
            (None, "geography", -1, 0, 0, "geography"),
        ];
        for &(system, name, len, precision, scale, sql) in cases {
            let ty = ColumnType::from_catalog(system, name, len, precision, scale);
            assert_eq!(ty.sql(), sql, "{system:?} {name} {len} {precision} {scale}");
        }
    }

    #[test]
    fn time_types_know_the_digits_sql_server_shows() {
        let cases = [
            (ColumnType::DateTime, Some(3)),
            (ColumnType::SmallDateTime, Some(0)),
            (ColumnType::DateTime2 { scale: 7 }, Some(7)),
            (ColumnType::DateTime2 { scale: 0 }, Some(0)),
            (ColumnType::Time { scale: 3 }, Some(3)),
            (ColumnType::DateTimeOffset { scale: 5 }, Some(5)),
            (ColumnType::Date, None),
            (ColumnType::Int, None),
        ];
        for (ty, digits) in cases {
            assert_eq!(ty.fraction_digits(), digits, "{ty}");
        }
    }

    #[test]
    fn cdc_columns_have_their_documented_types() {
        assert_eq!(ColumnDesc::lsn("__$start_lsn").ty.sql(), "binary(10)");
        assert_eq!(ColumnDesc::operation().ty, ColumnType::Int);
        let mask = ColumnDesc::update_mask();
        assert_eq!(
            (mask.ty.sql().as_str(), mask.nullable),
            ("varbinary(128)", true)
        );
    }
}

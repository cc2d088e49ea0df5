//! The schema document of a table: what its files hold, written beside them.
//!
//! A CSV file says nothing about types, and even a Parquet file cannot say that a column was
//! `datetime` rather than `datetime2(3)`, which collation its text has or which columns are the
//! key. So each table gets JSON documents at `{schema}/{table}/_schema/v{N}.json`, next to its
//! full loads (`{schema}/{table}/full/…`), and every data blob's metadata names the version it
//! was written with (`schema_version`, `schema_document`).
//!
//! Why this layout rather than only blob metadata: metadata is capped at 8 KiB per blob and
//! is ASCII, too small for a wide table's collations and types, and a reader wants one file to
//! fetch per version, not a HEAD per data file. Why one fixed folder per table rather than one
//! under the incremental path template: the template is free-form (it may not even start with
//! the table), while `{schema}/{table}/` is where full loads always go.
//!
//! A version is the table's *shape*: format version, file format, table, key, change mode's CDC
//! columns and every captured column with its type. A run whose shape is already published
//! writes nothing; a new shape (a capture-instance switch that adds a column, another file
//! format) gets `v{N+1}`. The document is committed create-only before the first data blob that
//! names it, so a reader never meets a data file whose schema is not there yet, and two runs
//! racing to publish the same new shape end with one document (the loser adopts it).

use serde::{Deserialize, Serialize};

use super::blob::{BlobTarget, BlockPrefix};
use super::SinkError;
use crate::cdc::{ColumnDesc, ColumnType, Length, TableRef};

/// How many versions a shape change may race through before giving up (each lost race means
/// another run published a different shape in between, which takes a schema change per run).
const MAX_RACES: usize = 5;

/// One column as the document describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnEntry {
    pub name: String,
    /// As T-SQL declares it: `decimal(18,2)`, `nvarchar(max)`, `datetime2(3)`.
    pub sql_type: String,
    /// The base type name alone: `decimal`, `nvarchar`, `datetime2`.
    pub type_name: String,
    /// Characters (`nchar`/`nvarchar`) or bytes (`char`/`varchar`/`binary`/`varbinary`); `-1`
    /// for `(max)`.
    pub max_length: Option<i32>,
    /// `decimal`/`numeric` precision (`money` 19, `smallmoney` 10).
    pub precision: Option<u8>,
    /// Decimal scale (`money` 4), or fractional-second digits of a time type (`datetime` 3,
    /// `smalldatetime` 0).
    pub scale: Option<u8>,
    pub collation: Option<String>,
    pub nullable: bool,
}

impl From<&ColumnDesc> for ColumnEntry {
    fn from(c: &ColumnDesc) -> ColumnEntry {
        let length = |n: &Length| match n {
            Length::Max => -1,
            Length::Of(n) => i32::from(*n),
        };
        let (max_length, precision, scale) = match &c.ty {
            ColumnType::Char(n)
            | ColumnType::VarChar(n)
            | ColumnType::NChar(n)
            | ColumnType::NVarChar(n)
            | ColumnType::Binary(n)
            | ColumnType::VarBinary(n) => (Some(length(n)), None, None),
            ColumnType::Decimal { precision, scale } => (None, Some(*precision), Some(*scale)),
            ColumnType::Money => (None, Some(19), Some(4)),
            ColumnType::SmallMoney => (None, Some(10), Some(4)),
            ty => (None, None, ty.fraction_digits()),
        };
        let sql_type = c.ty.sql();
        let type_name = sql_type.split('(').next().unwrap_or(&sql_type).to_string();
        ColumnEntry {
            name: c.name.clone(),
            sql_type,
            type_name,
            max_length,
            precision,
            scale,
            collation: c.collation.clone(),
            nullable: c.nullable,
        }
    }
}

/// The table a document describes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableName {
    pub schema: String,
    pub name: String,
}

/// One version of a table's schema document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchemaDoc {
    /// `N` of `v{N}.json`; set when published.
    pub schema_version: u32,
    /// The data files' `format_version` metadata.
    pub format_version: String,
    /// `csv` or `parquet`.
    pub file_format: String,
    pub table: TableName,
    /// The capture instance this version was first published for. A later instance with the
    /// same shape reuses the version; each data blob's `capture_instance` metadata is exact.
    pub capture_instance: String,
    /// `net` or `all`: which CDC columns incremental files start with.
    pub mode: String,
    /// The source table's key in key order (empty for a table without one).
    pub key_columns: Vec<String>,
    /// The columns incremental files carry before the captured ones (full-load files do not).
    pub cdc_columns: Vec<ColumnEntry>,
    /// The captured columns, in file order.
    pub columns: Vec<ColumnEntry>,
}

impl SchemaDoc {
    /// The document of a table's files, not yet published (version 0).
    pub fn new(
        table: &TableRef,
        capture_instance: &str,
        (file_format, format_version): (&str, &str),
        mode: crate::cdc::ChangeMode,
        key_columns: Vec<String>,
        columns: &[ColumnDesc],
    ) -> SchemaDoc {
        SchemaDoc {
            schema_version: 0,
            format_version: format_version.to_string(),
            file_format: file_format.to_string(),
            table: TableName {
                schema: table.schema.clone(),
                name: table.table.clone(),
            },
            capture_instance: capture_instance.to_string(),
            mode: mode.as_str().to_string(),
            key_columns,
            cdc_columns: crate::cdc::cdc_columns(mode)
                .iter()
                .map(ColumnEntry::from)
                .collect(),
            columns: columns.iter().map(ColumnEntry::from).collect(),
        }
    }

    /// Whether `other` describes the same files (everything but the version number and the
    /// instance that first published it).
    pub fn same_shape(&self, other: &SchemaDoc) -> bool {
        fn key(d: &SchemaDoc) -> impl PartialEq + '_ {
            (
                &d.format_version,
                &d.file_format,
                &d.table,
                &d.mode,
                &d.key_columns,
                &d.cdc_columns,
                &d.columns,
            )
        }
        key(self) == key(other)
    }

    /// The document's JSON, pretty-printed.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a schema document always serializes") + "\n"
    }

    /// The metadata every data blob of this version carries.
    pub fn blob_metadata(&self) -> Vec<(String, String)> {
        vec![
            (
                "schema_version".to_string(),
                self.schema_version.to_string(),
            ),
            (
                "schema_document".to_string(),
                document_name(&self.table, self.schema_version),
            ),
        ]
    }
}

/// `{schema}/{table}/_schema/`: the folder of a table's documents.
pub fn folder(table: &TableName) -> String {
    format!("{}/{}/_schema/", table.schema, table.name)
}

/// `{schema}/{table}/_schema/v{N}.json`.
pub fn document_name(table: &TableName, version: u32) -> String {
    format!("{}v{version}.json", folder(table))
}

/// The versions a listing of [`folder`] holds, newest first; other names are ignored.
pub fn versions(folder: &str, names: &[String]) -> Vec<u32> {
    let mut versions: Vec<u32> = names
        .iter()
        .filter_map(|n| {
            n.strip_prefix(folder)?
                .strip_prefix('v')?
                .strip_suffix(".json")
        })
        .filter(|n| !n.starts_with('0'))
        .filter_map(|n| n.parse().ok())
        .collect();
    versions.sort_unstable_by(|a, b| b.cmp(a));
    versions
}

/// Publishes `doc` unless a version of the same shape exists, and returns the document with
/// its version: the newest published version of that shape, or a new one, `v{N+1}` after
/// the newest, committed create-only. Costs a listing and one read when nothing changed.
pub async fn publish(blobs: &BlobTarget, mut doc: SchemaDoc) -> Result<SchemaDoc, SinkError> {
    let folder = folder(&doc.table);
    for _ in 0..MAX_RACES {
        let published = versions(&folder, &blobs.list(&folder).await?);
        for &version in &published {
            let existing = read(blobs, &doc.table, version).await?;
            if existing.as_ref().is_some_and(|e| e.same_shape(&doc)) {
                doc.schema_version = version;
                return Ok(doc);
            }
        }
        doc.schema_version = published.first().map_or(1, |newest| newest + 1);
        let name = document_name(&doc.table, doc.schema_version);
        let json = doc.to_json();
        let mut writer = blobs.writer(&name, Vec::new(), 1 << 20);
        writer.create_only();
        // Two runs racing for one version with different documents would otherwise stage
        // under the same block ID, and the winner's block list could commit the loser's
        // bytes: block IDs of the content's own keep each document whole.
        writer.block_prefix(BlockPrefix::of(&[json.as_bytes()]));
        writer.write(json.as_bytes()).await?;
        match writer.finish().await {
            Ok(_) => {
                tracing::info!(
                    table = %format!("{}.{}", doc.table.schema, doc.table.name),
                    schema_version = doc.schema_version,
                    document = %name,
                    columns = doc.columns.len(),
                    "published a schema document"
                );
                return Ok(doc);
            }
            // Another run published this version first: look again (it may be ours).
            Err(e) if e.is_already_exists() => continue,
            Err(e) => return Err(e),
        }
    }
    Err(SinkError::SchemaRace {
        folder,
        races: MAX_RACES,
    })
}

/// Version `version` of a table's document; `None` when it does not exist.
async fn read(
    blobs: &BlobTarget,
    table: &TableName,
    version: u32,
) -> Result<Option<SchemaDoc>, SinkError> {
    let name = document_name(table, version);
    let Some(bytes) = blobs.read(&name).await? else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|source| SinkError::SchemaDocument { name, source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cdc::ChangeMode;

    fn table() -> TableRef {
        TableRef {
            schema: "dbo".into(),
            table: "customers".into(),
        }
    }

    fn columns() -> Vec<ColumnDesc> {
        vec![
            ColumnDesc::new("id", ColumnType::Int, false),
            ColumnDesc::new("name", ColumnType::NVarChar(Length::Of(50)), true)
                .with_collation("SQL_Latin1_General_CP1_CI_AS"),
            ColumnDesc::new(
                "total",
                ColumnType::Decimal {
                    precision: 18,
                    scale: 2,
                },
                true,
            ),
        ]
    }

    fn doc(mode: ChangeMode, columns: &[ColumnDesc]) -> SchemaDoc {
        SchemaDoc::new(
            &table(),
            "dbo_customers",
            ("csv", "2"),
            mode,
            vec!["id".into()],
            columns,
        )
    }

    #[test]
    fn columns_carry_their_declared_type() {
        // (type, sql_type, type_name, max_length, precision, scale)
        type Case<'a> = (
            ColumnType,
            &'a str,
            &'a str,
            Option<i32>,
            Option<u8>,
            Option<u8>,
        );
        let cases: Vec<Case> = vec![
            (ColumnType::Int, "int", "int", None, None, None),
            (
                ColumnType::NVarChar(Length::Of(50)),
                "nvarchar(50)",
                "nvarchar",
                Some(50),
                None,
                None,
            ),
            (
                ColumnType::VarBinary(Length::Max),
                "varbinary(max)",
                "varbinary",
                Some(-1),
                None,
                None,
            ),
            (
                ColumnType::Decimal {
                    precision: 38,
                    scale: 10,
                },
                "decimal(38,10)",
                "decimal",
                None,
                Some(38),
                Some(10),
            ),
            (ColumnType::Money, "money", "money", None, Some(19), Some(4)),
            (
                ColumnType::SmallMoney,
                "smallmoney",
                "smallmoney",
                None,
                Some(10),
                Some(4),
            ),
            (
                ColumnType::DateTime,
                "datetime",
                "datetime",
                None,
                None,
                Some(3),
            ),
            (
                ColumnType::SmallDateTime,
                "smalldatetime",
                "smalldatetime",
                None,
                None,
                Some(0),
            ),
            (
                ColumnType::DateTime2 { scale: 3 },
                "datetime2(3)",
                "datetime2",
                None,
                None,
                Some(3),
            ),
            (
                ColumnType::Time { scale: 0 },
                "time(0)",
                "time",
                None,
                None,
                Some(0),
            ),
            (
                ColumnType::DateTimeOffset { scale: 7 },
                "datetimeoffset(7)",
                "datetimeoffset",
                None,
                None,
                Some(7),
            ),
            (
                ColumnType::Other("hierarchyid".into()),
                "hierarchyid",
                "hierarchyid",
                None,
                None,
                None,
            ),
        ];
        for (ty, sql, name, len, precision, scale) in cases {
            let entry = ColumnEntry::from(&ColumnDesc::new("c", ty.clone(), true));
            assert_eq!(
                (
                    entry.sql_type.as_str(),
                    entry.type_name.as_str(),
                    entry.max_length,
                    entry.precision,
                    entry.scale
                ),
                (sql, name, len, precision, scale),
                "{ty}"
            );
        }
    }

    #[test]
    fn the_document_names_everything_a_reader_needs() {
        let json: serde_json::Value =
            serde_json::from_str(&doc(ChangeMode::All, &columns()).to_json()).unwrap();
        assert_eq!(json["format_version"], "2");
        assert_eq!(json["file_format"], "csv");
        assert_eq!(json["table"]["schema"], "dbo");
        assert_eq!(json["table"]["name"], "customers");
        assert_eq!(json["capture_instance"], "dbo_customers");
        assert_eq!(json["key_columns"][0], "id");
        let cdc: Vec<&str> = json["cdc_columns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            cdc,
            [
                "__$start_lsn",
                "__$seqval",
                "__$operation",
                "__$update_mask"
            ]
        );
        assert_eq!(json["cdc_columns"][0]["sql_type"], "binary(10)");
        assert_eq!(
            json["columns"][1]["collation"],
            "SQL_Latin1_General_CP1_CI_AS"
        );
        assert_eq!(json["columns"][1]["nullable"], true);
        assert_eq!(json["columns"][2]["precision"], 18);
        let net = doc(ChangeMode::Net, &columns());
        let names: Vec<&str> = net.cdc_columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["__$start_lsn", "__$operation", "__$update_mask"]);
    }

    #[test]
    fn a_shape_is_everything_but_the_version_and_instance() {
        let base = doc(ChangeMode::Net, &columns());
        let mut other_instance = base.clone();
        other_instance.capture_instance = "dbo_customers_v2".into();
        other_instance.schema_version = 7;
        assert!(base.same_shape(&other_instance));

        let mut added = columns();
        added.push(ColumnDesc::new(
            "email",
            ColumnType::VarChar(Length::Of(100)),
            true,
        ));
        let mut retyped = columns();
        retyped[2].ty = ColumnType::Decimal {
            precision: 19,
            scale: 2,
        };
        let mut renullable = columns();
        renullable[0].nullable = true;
        let mut recollated = columns();
        recollated[1].collation = Some("Latin1_General_100_CI_AS_SC_UTF8".into());
        let mut parquet = base.clone();
        parquet.file_format = "parquet".into();
        let mut rekeyed = base.clone();
        rekeyed.key_columns = vec!["name".into()];
        let changed = [
            ("added column", doc(ChangeMode::Net, &added)),
            ("retyped column", doc(ChangeMode::Net, &retyped)),
            ("nullability", doc(ChangeMode::Net, &renullable)),
            ("collation", doc(ChangeMode::Net, &recollated)),
            ("mode", doc(ChangeMode::All, &columns())),
            ("file format", parquet),
            ("key", rekeyed),
        ];
        for (name, changed) in changed {
            assert!(!base.same_shape(&changed), "{name} is a new shape");
        }
    }

    #[test]
    fn versions_are_read_from_names_newest_first() {
        let folder = "dbo/customers/_schema/";
        let names: Vec<String> = [
            "dbo/customers/_schema/v1.json",
            "dbo/customers/_schema/v10.json",
            "dbo/customers/_schema/v2.json",
            "dbo/customers/_schema/v02.json",
            "dbo/customers/_schema/v3.json.tmp",
            "dbo/customers/_schema/notes.txt",
            "dbo/customers/_schema/vx.json",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(versions(folder, &names), [10, 2, 1]);
        let t = TableName {
            schema: "dbo".into(),
            name: "customers".into(),
        };
        assert_eq!(document_name(&t, 3), "dbo/customers/_schema/v3.json");
        let published = SchemaDoc {
            schema_version: 3,
            ..doc(ChangeMode::Net, &columns())
        };
        assert_eq!(
            published.blob_metadata(),
            [
                ("schema_version".to_string(), "3".to_string()),
                (
                    "schema_document".to_string(),
                    "dbo/customers/_schema/v3.json".to_string()
                )
            ]
        );
    }

    #[test]
    fn a_document_reads_back_as_itself() {
        let d = doc(ChangeMode::All, &columns());
        let back: SchemaDoc = serde_json::from_str(&d.to_json()).unwrap();
        assert_eq!(back, d);
    }
}

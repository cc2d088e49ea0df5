//! Live case for typed columns (issue 11): `CAPTURE_INSTANCES` result set 3 gives every
//! captured column the declared type of the change table's column. A table of one column per
//! type family is enabled for CDC; then a captured column is widened with ALTER COLUMN, which
//! the change table follows ("if the data type of a column is changed, the change is also
//! propagated to the change table"), and a `rowversion` column is typed `binary(8)` there
//! ("The data type in the change table is converted to binary").

use super::*;

use cdc_copy::cdc::{ColumnDesc, ColumnType, Length};

const CREATE: &str = "
CREATE TABLE dbo.typed (
    id int NOT NULL PRIMARY KEY,
    flag bit NULL,
    tiny tinyint NULL,
    amount decimal(38,10) NULL,
    cash money NULL,
    code varchar(20) COLLATE Latin1_General_100_CI_AS NULL,
    label nvarchar(max) NULL,
    blob varbinary(16) NULL,
    born date NULL,
    at_ms datetime2(3) NULL,
    legacy datetime NULL,
    seen datetimeoffset(7) NULL,
    uid uniqueidentifier NULL,
    version rowversion NOT NULL,
    doubled AS (id * 2)
);
EXEC sys.sp_cdc_enable_db;
EXEC sys.sp_cdc_enable_table @source_schema = N'dbo', @source_name = N'typed',
     @role_name = NULL, @supports_net_changes = 1;";

fn expected(code: Length) -> Vec<ColumnDesc> {
    let ci_as = "Latin1_General_100_CI_AS";
    vec![
        ColumnDesc::new("id", ColumnType::Int, false),
        ColumnDesc::new("flag", ColumnType::Bit, true),
        ColumnDesc::new("tiny", ColumnType::TinyInt, true),
        ColumnDesc::new(
            "amount",
            ColumnType::Decimal {
                precision: 38,
                scale: 10,
            },
            true,
        ),
        ColumnDesc::new("cash", ColumnType::Money, true),
        ColumnDesc::new("code", ColumnType::VarChar(code), true).with_collation(ci_as),
        ColumnDesc::new("label", ColumnType::NVarChar(Length::Max), true),
        ColumnDesc::new("blob", ColumnType::VarBinary(Length::Of(16)), true),
        ColumnDesc::new("born", ColumnType::Date, true),
        ColumnDesc::new("at_ms", ColumnType::DateTime2 { scale: 3 }, true),
        ColumnDesc::new("legacy", ColumnType::DateTime, true),
        ColumnDesc::new("seen", ColumnType::DateTimeOffset { scale: 7 }, true),
        ColumnDesc::new("uid", ColumnType::UniqueIdentifier, true),
        ColumnDesc::new("version", ColumnType::Binary(Length::Of(8)), false),
    ]
}

/// Compares types and nullability; the collation of `label` is the database default, so
/// only `code`'s (declared) collation is compared.
fn shape(columns: &[ColumnDesc]) -> Vec<(String, String, bool, Option<String>)> {
    columns
        .iter()
        .map(|c| {
            let collation = (c.name == "code").then(|| c.collation.clone()).flatten();
            (c.name.clone(), c.ty.sql(), c.nullable, collation)
        })
        .collect()
}

#[tokio::test]
async fn live_captured_columns_carry_the_change_tables_declared_types() {
    let Some(conn) = live_connection_string() else {
        println!("skipped: {ENV} not set");
        return;
    };
    let db = TestDatabase::create(&conn).await;
    let mut sql = db.connect().await;
    batch(&mut sql, CREATE).await;
    run_setup_sql(&mut sql).await;
    wait_for_first_capture(&mut sql, &db.name).await;

    let source =
        SqlServerSource::from_config(db.config(), TableRef::parse(WATERMARK_TABLE).unwrap());
    let typed = TableRef::parse("dbo.typed").unwrap();
    let mut session = source.session().await.expect("session");
    let instances = session.capture_instances(&typed).await.unwrap();
    assert_eq!(instances.len(), 1);
    // The computed column is captured (NULL in every change row) but not copied.
    assert_eq!(
        shape(&instances[0].columns),
        shape(&expected(Length::Of(20)))
    );
    assert!(
        instances[0].columns[6].collation.is_some(),
        "nvarchar(max) has the database's collation: {:?}",
        instances[0].columns[6]
    );

    batch(
        &mut sql,
        "ALTER TABLE dbo.typed ALTER COLUMN code varchar(40) COLLATE Latin1_General_100_CI_AS NULL;",
    )
    .await;
    let after = session.capture_instances(&typed).await.unwrap();
    assert_eq!(
        shape(&after[0].columns),
        shape(&expected(Length::Of(40))),
        "ALTER COLUMN on a captured column is propagated to the change table"
    );
}

//! The schema document per table against a real Azurite: one version per shape, nothing
//! written when the shape is unchanged, create-only and race-safe, and (through the jobs) a
//! capture-instance switch with a new column giving the next version before the first blob
//! that uses it.

mod common;

use cdc_copy::cdc::{ChangeMode, ColumnDesc, ColumnType, Length, TableRef};
use cdc_copy::sink::blob::BlobTarget;
use cdc_copy::sink::schema_doc::{self, SchemaDoc};

use common::azurite::{unique_container, Azurite};

fn table() -> TableRef {
    TableRef {
        schema: "dbo".into(),
        table: "customers".into(),
    }
}

fn columns(extra: &[&str]) -> Vec<ColumnDesc> {
    let mut columns = vec![
        ColumnDesc::new("id", ColumnType::Int, false),
        ColumnDesc::new("name", ColumnType::NVarChar(Length::Of(50)), true)
            .with_collation("SQL_Latin1_General_CP1_CI_AS"),
    ];
    columns.extend(
        extra
            .iter()
            .map(|name| ColumnDesc::new(*name, ColumnType::VarChar(Length::Of(20)), true)),
    );
    columns
}

fn doc(instance: &str, extra: &[&str]) -> SchemaDoc {
    SchemaDoc::new(
        &table(),
        instance,
        ("csv", cdc_copy::jobs::FORMAT_VERSION),
        ChangeMode::Net,
        vec!["id".into()],
        &columns(extra),
    )
}

async fn container() -> BlobTarget {
    let blobs = Azurite::shared().target(&unique_container("schema"));
    blobs.ensure_container().await.unwrap();
    blobs
}

async fn documents(blobs: &BlobTarget) -> Vec<(String, String)> {
    blobs.list_etags("dbo/customers/_schema/").await.unwrap()
}

#[tokio::test]
async fn an_unchanged_shape_writes_nothing_and_a_new_one_is_the_next_version() {
    let blobs = container().await;
    let v1 = schema_doc::publish(&blobs, doc("dbo_customers", &[]))
        .await
        .unwrap();
    assert_eq!(v1.schema_version, 1);
    let listed = documents(&blobs).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].0, "dbo/customers/_schema/v1.json");

    // The same shape again, even from another instance: v1, and v1 is not rewritten.
    let again = schema_doc::publish(&blobs, doc("dbo_customers_v2", &[]))
        .await
        .unwrap();
    assert_eq!(again.schema_version, 1);
    assert_eq!(documents(&blobs).await, listed, "nothing was committed");

    // A new column: v2, beside v1.
    let v2 = schema_doc::publish(&blobs, doc("dbo_customers_v2", &["loyalty"]))
        .await
        .unwrap();
    assert_eq!(v2.schema_version, 2);
    let stored: SchemaDoc = serde_json::from_slice(
        &blobs
            .read("dbo/customers/_schema/v2.json")
            .await
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(stored, v2);
    assert_eq!(stored.columns.last().unwrap().name, "loyalty");
    assert_eq!(stored.capture_instance, "dbo_customers_v2");

    // The old shape again (the retried tail of the old instance): v1 still, nothing new.
    let before = documents(&blobs).await;
    let old = schema_doc::publish(&blobs, doc("dbo_customers", &[]))
        .await
        .unwrap();
    assert_eq!(old.schema_version, 1);
    assert_eq!(documents(&blobs).await, before);
}

#[tokio::test]
async fn runs_racing_to_publish_end_with_one_document_per_shape() {
    let blobs = container().await;
    schema_doc::publish(&blobs, doc("dbo_customers", &[]))
        .await
        .unwrap();
    // Eight runs publish the same new shape at once: one v2, which they all name.
    let same = futures::future::join_all(
        (0..8).map(|_| schema_doc::publish(&blobs, doc("dbo_customers_v2", &["loyalty"]))),
    )
    .await;
    for published in &same {
        assert_eq!(published.as_ref().unwrap().schema_version, 2);
    }
    assert_eq!(documents(&blobs).await.len(), 2);

    // Two different new shapes at once: each gets its own version, each document is its own.
    let (a, b) = futures::join!(
        schema_doc::publish(&blobs, doc("dbo_customers_v3", &["loyalty", "a"])),
        schema_doc::publish(&blobs, doc("dbo_customers_v3", &["loyalty", "b"])),
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    let mut versions = [a.schema_version, b.schema_version];
    versions.sort();
    assert_eq!(versions, [3, 4]);
    for published in [a, b] {
        let name = schema_doc::document_name(&published.table, published.schema_version);
        let stored: SchemaDoc =
            serde_json::from_slice(&blobs.read(&name).await.unwrap().unwrap()).unwrap();
        assert_eq!(stored, published, "{name}");
    }
}

#[tokio::test]
async fn an_edited_document_is_refused_naming_it() {
    let blobs = container().await;
    let mut writer = blobs.writer("dbo/customers/_schema/v1.json", vec![], 1024);
    writer.write(b"{ not json").await.unwrap();
    writer.finish().await.unwrap();
    let error = schema_doc::publish(&blobs, doc("dbo_customers", &[]))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("dbo/customers/_schema/v1.json") && error.contains("FullLoad"),
        "{error}"
    );
}

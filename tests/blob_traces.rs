//! What the blob sink traces: block and commit events with structured fields, and never the
//! account key or a request signature. Its own test binary, so no other test shares the
//! process-wide tracing callsite cache while the subscriber is installed.

mod common;

use common::azurite::{unique_container, Azurite};
use common::traces::Captured;

#[tokio::test]
async fn traces_name_blocks_and_never_carry_the_key_or_signature() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    // current_thread runtime: the spawned Put Block tasks run on this thread too.
    let _guard = tracing::subscriber::set_default(subscriber);

    let target = Azurite::shared().target(&unique_container("trace"));
    target.ensure_container().await.unwrap();
    let mut w = target.writer("t/traced.csv", vec![("row_count".into(), "2".into())], 8);
    w.write(b"a,b\n1,2\n3,4\n").await.unwrap();
    w.finish().await.unwrap();
    let _ = target.read("t/traced.csv").await.unwrap();

    let text = captured.text();
    assert!(text.contains("staged block"), "{text}");
    assert!(text.contains("block=1"), "{text}");
    assert!(text.contains("bytes=8"), "{text}");
    assert!(text.contains("committed block list"), "{text}");
    assert!(!text.contains(cdc_copy::config::DEV_ACCOUNT_KEY), "{text}");
    assert!(!text.contains("SharedKey devstoreaccount1:"), "{text}");
}

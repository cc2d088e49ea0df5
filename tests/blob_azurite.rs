//! The blob sink against a real Azurite: staging, commit, visibility, metadata, re-runs,
//! definite and transient failures. Each test uses its own container in one shared Azurite;
//! failures are injected by the fault proxy in front of it, and tries are counted in the
//! proxy's request log (the retry schedule itself is unit-tested in `sink::retry`).

mod common;

use std::time::{Duration, Instant};

use cdc_copy::config::StorageAccount;
use cdc_copy::sink::blob::BlobTarget;
use cdc_copy::sink::retry::RetryPolicy;
use cdc_copy::sink::SinkError;
use common::azurite::{unique_container, Azurite};
use common::proxy::{Fault, Proxy, Rule};

/// Deterministic pseudo-random bytes (xorshift), so block boundaries see varied content.
fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

async fn fresh_target(prefix: &str) -> BlobTarget {
    let target = Azurite::shared().target(&unique_container(prefix));
    target.ensure_container().await.expect("create container");
    target
}

/// A proxy in front of the shared Azurite and a target for `container` through it.
async fn proxied(container: &str) -> (Proxy, BlobTarget) {
    let proxy = Proxy::start(Azurite::shared().blob_port).await;
    let account = StorageAccount::from_connection_string(&proxy.connection_string()).unwrap();
    let target = BlobTarget::new(&account, container).unwrap();
    (proxy, target)
}

/// Short waits, so exhausting the tries takes milliseconds.
fn short_retry(max_tries: u32) -> RetryPolicy {
    RetryPolicy {
        max_tries,
        initial_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(30),
        try_timeout: Duration::from_millis(500),
    }
}

fn meta(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[tokio::test]
async fn ensure_container_creates_once_and_tolerates_existing() {
    let target = Azurite::shared().target(&unique_container("ensure"));
    target
        .probe()
        .await
        .expect("probe: missing container is fine");
    assert!(
        target.list("").await.is_err(),
        "container should not exist yet"
    );
    target.ensure_container().await.expect("create");
    target
        .ensure_container()
        .await
        .expect("exists already is ok");
    target.probe().await.expect("probe after create");
    assert_eq!(target.list("").await.unwrap(), Vec::<String>::new());
}

#[tokio::test]
async fn multi_block_upload_is_invisible_until_finish_then_byte_identical() {
    let target = fresh_target("multi").await;
    let name = "dbo/customers/incremental/2024/01/02/20240102030405006.csv";
    let block_size = 64 * 1024;
    let payload = data(5 * 1024 * 1024 + 123, 7);
    let metadata = meta(&[
        ("table", "dbo.customers"),
        ("capture_instance", "dbo_customers"),
        ("from_lsn", "0x0000002A000000100003"),
        ("to_lsn", "0x0000002B000000200001"),
        ("window_start", "2024-01-02T02:04:05.006Z"),
        ("window_end", "2024-01-02T03:04:05.006Z"),
        ("row_count", "4242"),
        ("format_version", "1"),
    ]);
    let mut writer = target.writer(name, metadata.clone(), block_size);
    // Mix both ways of writing: `write` and encoder-style `buffer` + `flush_full_blocks`.
    for (i, chunk) in payload.chunks(1000).enumerate() {
        if i % 2 == 0 {
            writer.write(chunk).await.unwrap();
        } else {
            writer.buffer().extend_from_slice(chunk);
            writer.flush_full_blocks().await.unwrap();
        }
        // Bounded memory: after a flush the pending block is below one block.
        assert!(writer.buffer().len() < block_size);
    }
    assert_eq!(writer.bytes_written(), payload.len() as u64);

    // Blocks are staged but nothing is visible yet.
    assert_eq!(target.list("dbo/").await.unwrap(), Vec::<String>::new());
    assert_eq!(target.read(name).await.unwrap(), None);
    assert_eq!(target.properties(name).await.unwrap(), None);

    let summary = writer.finish().await.unwrap();
    assert_eq!(summary.name, name);
    assert_eq!(summary.bytes, payload.len() as u64);
    assert_eq!(summary.blocks as usize, payload.len().div_ceil(block_size));

    assert_eq!(target.list("dbo/").await.unwrap(), vec![name.to_string()]);
    assert_eq!(target.list("other/").await.unwrap(), Vec::<String>::new());
    let back = target.read(name).await.unwrap().expect("committed");
    assert!(back.as_ref() == payload.as_slice(), "content differs");
    let info = target.properties(name).await.unwrap().expect("committed");
    assert_eq!(info.size, payload.len() as u64);
    let want: std::collections::BTreeMap<String, String> = metadata.into_iter().collect();
    assert_eq!(info.metadata, want);
}

#[tokio::test]
async fn empty_blob_commits_with_metadata() {
    let target = fresh_target("empty").await;
    let writer = target.writer("t/empty.csv", meta(&[("row_count", "0")]), 4 << 20);
    let summary = writer.finish().await.unwrap();
    assert_eq!((summary.bytes, summary.blocks), (0, 0));
    let info = target
        .properties("t/empty.csv")
        .await
        .unwrap()
        .expect("visible");
    assert_eq!(info.size, 0);
    assert_eq!(
        info.metadata.get("row_count").map(String::as_str),
        Some("0")
    );
    assert_eq!(
        target.read("t/empty.csv").await.unwrap().as_deref(),
        Some(&b""[..])
    );
}

#[tokio::test]
async fn rerun_after_a_crash_and_reupload_give_identical_content() {
    let target = fresh_target("rerun").await;
    let name = "t/window.csv";
    let payload = data(300 * 1024 + 17, 11);
    let block_size = 32 * 1024;

    // A run that dies after staging some blocks: nothing visible.
    let mut crashed = target.writer(name, meta(&[("row_count", "1")]), block_size);
    crashed.write(&payload[..200 * 1024]).await.unwrap();
    drop(crashed);
    assert_eq!(target.read(name).await.unwrap(), None);

    // The re-run of the same window stages the same block IDs and commits.
    for round in 0..2 {
        let mut w = target.writer(name, meta(&[("row_count", "1")]), block_size);
        w.write(&payload).await.unwrap();
        w.finish().await.unwrap();
        let back = target.read(name).await.unwrap().expect("committed");
        assert!(back.as_ref() == payload.as_slice(), "round {round}");
    }

    // A shorter upload under the same name replaces the blob whole.
    let mut w = target.writer(name, vec![], block_size);
    w.write(b"short").await.unwrap();
    w.finish().await.unwrap();
    assert_eq!(
        target.read(name).await.unwrap().as_deref(),
        Some(&b"short"[..])
    );
    assert_eq!(target.list("t/").await.unwrap(), vec![name.to_string()]);
}

#[tokio::test]
async fn invalid_metadata_is_a_config_error_and_commits_nothing() {
    let target = fresh_target("badmeta").await;
    // Found before any upload: at the first block, or at finish for a single small block.
    let mut w = target.writer("t/x.csv", meta(&[("from-lsn", "1")]), 4);
    let err = w.write(b"a,b\n").await.unwrap_err();
    assert!(matches!(err, SinkError::Config(_)), "{err}");
    let mut w = target.writer("t/x.csv", meta(&[("from-lsn", "1")]), 1024);
    w.write(b"a,b\n").await.unwrap();
    let err = w.finish().await.unwrap_err();
    assert!(matches!(err, SinkError::Config(_)), "{err}");
    assert!(err.to_string().contains("from-lsn"), "{err}");
    assert_eq!(target.read("t/x.csv").await.unwrap(), None);
}

/// A block whose bytes change on the way no longer matches its Content-MD5: the service
/// refuses it (400 `Md5Mismatch`), nothing corrupted is ever staged, and the writer sends the
/// same bytes again (a corruption in transit is transient), so the blob commits intact.
#[tokio::test]
async fn a_block_corrupted_in_transit_is_refused_then_sent_again() {
    let container = unique_container("md5");
    let (proxy, target) = proxied(&container).await;
    target.ensure_container().await.unwrap();
    proxy.add(Rule::put_block(Fault::CorruptRequestBody, 1));
    let bytes = data(2048, 5);
    let mut w = target.writer("t/md5.csv", vec![], 1024);
    w.write(&bytes).await.unwrap();
    w.finish().await.unwrap();
    assert_eq!(proxy.faults_applied(), 1);
    let refused: Vec<_> = proxy
        .put_blocks()
        .into_iter()
        .filter(|s| s.status == Some(400))
        .collect();
    assert_eq!(refused.len(), 1, "the corrupted block was refused");
    assert_eq!(
        proxy.put_blocks().len(),
        3,
        "two blocks, one of them sent twice"
    );
    assert_eq!(
        target.read("t/md5.csv").await.unwrap().as_deref(),
        Some(&bytes[..])
    );
}

#[tokio::test]
async fn wrong_account_key_is_a_definite_403_without_the_key() {
    let wrong_key = "d3Jvbmcta2V5LWZvci10ZXN0cy1vbmx5LXdyb25nLWtleS13cm9uZy1rZXk=";
    let proxy = Proxy::start(Azurite::shared().blob_port).await;
    let cs = format!(
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={wrong_key};\
         BlobEndpoint={}",
        proxy.blob_endpoint()
    );
    let account = StorageAccount::from_connection_string(&cs).unwrap();
    let target = BlobTarget::new(&account, &unique_container("wrongkey")).unwrap();
    let err = target.ensure_container().await.unwrap_err();
    match &err {
        SinkError::Http { status, code, .. } => {
            assert_eq!(*status, 403, "{err}");
            // Azure answers AuthenticationFailed, Azurite AuthorizationFailure.
            assert!(
                matches!(
                    code.as_deref(),
                    Some("AuthenticationFailed" | "AuthorizationFailure")
                ),
                "{err}"
            );
        }
        other => panic!("expected HTTP 403, got {other:?}"),
    }
    assert!(!err.is_transient());
    // Definite: one try, no retries.
    assert_eq!(proxy.log().len(), 1, "{:?}", proxy.log());
    for text in [err.to_string(), format!("{err:?}")] {
        assert!(!text.contains(wrong_key), "{text}");
        assert!(!text.contains("d3Jvbmcta2V5"), "{text}");
    }
    // The other operations map it the same way, each with one try.
    proxy.clear_log();
    let err = target.probe().await.unwrap_err();
    assert!(matches!(err, SinkError::Http { status: 403, .. }), "{err}");
    let err = target.writer("x", vec![], 10).finish().await.unwrap_err();
    assert!(matches!(err, SinkError::Http { status: 403, .. }), "{err}");
    assert_eq!(proxy.log().len(), 2, "{:?}", proxy.log());
}

/// Connections that fail are transient and retried until `max_tries` is used up: by the
/// container operations and by the writer's background Put Block alike.
#[tokio::test]
async fn dropped_connections_are_transient_after_bounded_retries() {
    let (proxy, target) = proxied("raw").await;
    let target = target.with_retry(short_retry(4));
    proxy.add(Rule::any(Fault::Drop, 1000));
    let err = target.ensure_container().await.unwrap_err();
    assert!(matches!(err, SinkError::Transport { .. }), "{err:?}");
    assert!(err.is_transient());
    assert_eq!(proxy.requests("restype=container").len(), 4);

    proxy.clear_log();
    let mut w = target.writer("t/x.csv", vec![], 4);
    let staged = w.write(b"0123456789").await; // stages in the background
    let err = match staged {
        Err(e) => e,
        Ok(()) => w.finish().await.unwrap_err(),
    };
    assert!(err.is_transient(), "{err:?}");
    // Several blocks are in flight at once; each is tried at most 4 times, and the one that
    // failed the blob exactly 4.
    let mut tries: std::collections::HashMap<String, usize> = Default::default();
    for put in proxy.put_blocks() {
        *tries
            .entry(block_id_of(&put.uri).unwrap().to_string())
            .or_default() += 1;
    }
    assert_eq!(tries.values().max(), Some(&4), "{:?}", proxy.log());
    assert!(!format!("{err:?}").contains(cdc_copy::config::DEV_ACCOUNT_KEY));
}

/// A server that never answers: each try is cut off by `try_timeout` and counts as transient.
#[tokio::test]
async fn a_server_that_never_answers_times_out_as_transient() {
    let (proxy, target) = proxied("raw").await;
    let target = target.with_retry(RetryPolicy {
        try_timeout: Duration::from_millis(200),
        ..short_retry(2)
    });
    proxy.add(Rule::any(Fault::Delay(Duration::from_secs(3600)), 1000));
    let err = target.read("t/x.csv").await.unwrap_err();
    assert!(matches!(err, SinkError::Transport { .. }), "{err:?}");
    assert!(err.to_string().contains("no answer within"), "{err}");
    assert!(err.is_transient());
    assert_eq!(proxy.requests("x.csv").len(), 2, "{:?}", proxy.log());
}

/// The raw ingest rate of Azurite for the benchmark notes:
/// `cargo test --release --test blob_azurite ingest_rate -- --ignored --nocapture`
/// (`CDC_COPY_BENCH_MB` changes the size, default 100).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark; run explicitly with --ignored --nocapture"]
async fn ingest_rate() {
    let mb: usize = std::env::var("CDC_COPY_BENCH_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let azurite = Azurite::start();
    let target = azurite.target("bench");
    target.ensure_container().await.unwrap();
    let chunk = data(64 * 1024, 3);
    let total = mb * 1024 * 1024;
    let block_size = 4 * 1024 * 1024;
    let start = Instant::now();
    let mut w = target.writer("bench.csv", vec![], block_size);
    let mut written = 0;
    while written < total {
        let n = chunk.len().min(total - written);
        w.write(&chunk[..n]).await.unwrap();
        written += n;
    }
    let summary = w.finish().await.unwrap();
    let secs = start.elapsed().as_secs_f64();
    let info = target.properties("bench.csv").await.unwrap().unwrap();
    assert_eq!(info.size, total as u64);
    println!(
        "azurite ingest: {mb} MiB in {} blocks of 4 MiB: {secs:.2} s = {:.1} MiB/s",
        summary.blocks,
        mb as f64 / secs
    );
}

/// Two writers of one blob name with different content (two runs that planned different
/// windows for one trigger time): with block IDs of their own, the loser's staged blocks
/// never end up in the winner's blob. With one set of IDs they would (shown first).
#[tokio::test]
async fn writers_of_one_name_with_other_content_do_not_mix_blocks() {
    use cdc_copy::sink::blob::BlockPrefix;
    let target = fresh_target("mix").await;
    let (a, b) = (data(64, 1), data(64, 2));
    for separate in [false, true] {
        let name = format!("w/separate-{separate}.csv");
        let mut winner = target.writer(&name, vec![], 16);
        let mut loser = target
            .clone()
            .with_blocks_in_flight(1)
            .writer(&name, vec![], 16);
        if separate {
            winner.block_prefix(BlockPrefix::of(&[b"winner"]));
            loser.block_prefix(BlockPrefix::of(&[b"loser"]));
        }
        winner.write(&a).await.unwrap();
        winner.flush_full_blocks().await.unwrap();
        // The loser stages its blocks after the winner's, before the winner commits, then
        // stops (it lost the watermark record). With one block in flight each block waits for
        // the one before it, so with one more block its first four are surely staged.
        loser.write(&b).await.unwrap();
        loser.write(&data(16, 3)).await.unwrap();
        loser.flush_full_blocks().await.unwrap();
        drop(loser);
        winner.finish().await.unwrap();
        let got = target.read(&name).await;
        if separate {
            assert_eq!(got.unwrap().unwrap().to_vec(), a, "the winner's bytes only");
        } else {
            // The loser's blocks are in the committed blob: its bytes do not match the
            // Content-MD5 the winner committed (or, by chance, are not the winner's).
            match got {
                Err(e) => assert!(e.to_string().contains("Content-MD5"), "{e}"),
                Ok(bytes) => assert_ne!(bytes.unwrap().to_vec(), a, "shared IDs mix blocks"),
            }
        }
    }
}

/// For tests that hold requests in the proxy until others have happened: a writer that never
/// sends those others fails after 10 s (its held try cut off, then a second try, which the
/// tests count) instead of waiting the default 120 s.
fn held_retry() -> RetryPolicy {
    RetryPolicy {
        try_timeout: Duration::from_secs(10),
        ..RetryPolicy::default()
    }
}

/// The `blockid` of a Put Block request, as the proxy saw it (URL-encoded base64).
fn block_id_of(uri: &str) -> Option<&str> {
    let start = uri.find("blockid=")? + "blockid=".len();
    Some(uri[start..].split('&').next().unwrap_or_default())
}

/// What a Put Block of block `index` (default prefix) has in its query.
fn block_query(index: u32) -> &'static str {
    use base64::Engine as _;
    let b64 =
        base64::engine::general_purpose::STANDARD.encode(cdc_copy::sink::blob::block_id(index));
    Box::leak(format!("blockid={}", b64.trim_end_matches('=')).into_boxed_str())
}

/// Several blocks in flight finish in any order; the block list names them in the order their
/// bytes were written. Block 0 is held in the proxy until three later blocks have finished
/// (ordered by the proxy's own count, not by time), and the blob still reads back
/// byte-identical. With one block in flight block 0 would be alone: it would wait until its
/// try timed out, and the order check below would fail.
#[tokio::test]
async fn blocks_finishing_out_of_order_commit_in_write_order() {
    let container = unique_container("order");
    let (proxy, target) = proxied(&container).await;
    target.ensure_container().await.unwrap();
    let target = target.with_blocks_in_flight(4).with_retry(held_retry());
    proxy.add(Rule::put_block(Fault::HoldUntilFinished(3), 1));
    let block_size = 16 * 1024;
    let payload = data(10 * block_size + 99, 13);
    let mut w = target.writer("t/order.csv", vec![], block_size);
    w.write(&payload).await.unwrap();
    let summary = w.finish().await.unwrap();
    assert_eq!(summary.blocks, 11);

    let puts = proxy.put_blocks();
    assert_eq!(puts.len(), 11, "one try each: {puts:?}");
    let finished = |index: u32| {
        puts.iter()
            .find(|s| s.uri.contains(block_query(index)))
            .and_then(|s| s.finished)
            .unwrap_or_else(|| panic!("block {index} not seen: {puts:?}"))
    };
    let before_block_0 = (1..11).filter(|&i| finished(i) < finished(0)).count();
    assert!(
        before_block_0 >= 3,
        "only {before_block_0} later blocks finished before block 0"
    );
    assert_eq!(
        target.read("t/order.csv").await.unwrap().as_deref(),
        Some(&payload[..]),
        "committed in write order"
    );
}

/// All or nothing with several blocks in flight: one block refused for good (a definite 400)
/// fails the blob, whatever the others do; it is not retried, no block list is committed and
/// nothing is visible.
#[tokio::test]
async fn one_failed_block_among_several_in_flight_fails_the_blob() {
    let container = unique_container("onefails");
    let (proxy, target) = proxied(&container).await;
    target.ensure_container().await.unwrap();
    let target = target.with_blocks_in_flight(4).with_retry(short_retry(3));
    proxy.add(Rule::new(
        Some("PUT"),
        block_query(2),
        Fault::Status(400),
        1000,
    ));
    let block_size = 8 * 1024;
    let mut w = target.writer("t/onefails.csv", vec![], block_size);
    let err = match w.write(&data(12 * block_size, 17)).await {
        Err(e) => e,
        Ok(()) => w.finish().await.unwrap_err(),
    };
    assert!(
        matches!(err, SinkError::Http { status: 400, .. }),
        "{err:?}"
    );
    assert!(!err.is_transient(), "{err:?}");
    let commits = proxy.requests("comp=blocklist");
    assert!(commits.is_empty(), "nothing committed: {commits:?}");
    assert_eq!(
        proxy.requests(block_query(2)).len(),
        1,
        "a definite failure is not retried"
    );
    assert_eq!(target.read("t/onefails.csv").await.unwrap(), None);
    assert_eq!(target.list("t/").await.unwrap(), Vec::<String>::new());
}

/// The memory bound: a writer never has more than its `blocks_in_flight` Put Blocks
/// outstanding (so it holds at most that plus the block being filled), and it does use them
/// all. The first `n` Put Blocks wait at a barrier for each other, which they pass only if `n`
/// are outstanding at once; 10 ms per request afterwards keeps the window full.
#[tokio::test]
async fn put_blocks_in_flight_stay_within_the_setting() {
    for n in [1u32, 2, 4, 8] {
        // A proxy of its own each time: its barrier counts every arrival.
        let container = unique_container("window");
        let (proxy, target) = proxied(&container).await;
        target.ensure_container().await.unwrap();
        proxy.set_delay(Duration::from_millis(10));
        proxy.add(Rule::put_block(Fault::Barrier(n), n));
        let target = target
            .with_blocks_in_flight(n as usize)
            .with_retry(held_retry());
        let name = format!("t/window-{n}.csv");
        let block_size = 4 * 1024;
        let payload = data(3 * n as usize * block_size + 5, u64::from(n));
        let mut w = target.writer(&name, vec![], block_size);
        for chunk in payload.chunks(1000) {
            w.write(chunk).await.unwrap();
        }
        w.finish().await.unwrap();
        assert_eq!(proxy.peak_put_blocks(), n, "{n} in flight");
        assert_eq!(proxy.put_blocks().len(), 3 * n as usize + 1, "one try each");
        assert_eq!(
            target.read(&name).await.unwrap().as_deref(),
            Some(&payload[..])
        );
    }
}

//! Streaming one blob as blocks. The shape follows from the guarantees:
//! - A blob is visible only when complete: rows are staged as uncommitted blocks (Put Block)
//!   and made visible by one Put Block List at [`BlobWriter::finish`]. A crash before that
//!   leaves nothing visible; the service drops uncommitted blocks after a week.
//! - Re-running a window writes the same bytes under the same name: block IDs are the base64
//!   of a fixed-width block index (behind a prefix of what the content is, for an incremental
//!   window its LSN range), so a re-run stages the same IDs and the commit replaces the blob
//!   whole, while a writer of other content under the same name never stages into its IDs.
//! - Memory stays flat and uploads keep up with latency: up to `blocks_in_flight` Put Blocks
//!   run on the runtime while the encoder fills the next block, so a blob is not capped at one
//!   block per round trip (against Azure Storage every request costs one). When the window is
//!   full the writer waits for a block to finish before it starts another, so it never holds
//!   more than `blocks_in_flight + 1` blocks. Blocks may finish in any order; the block list
//!   names them by index, in the order their bytes were written, so the order does not matter.
//! - All or nothing: one block that fails (after its retries) fails the blob; the blocks still
//!   in flight are aborted and no block list is committed.
//! - Each block carries a `Content-MD5`, so the service rejects a block corrupted on the way,
//!   and the commit records the whole blob's MD5, so readers can tell a corrupted download.

use std::collections::HashMap;
use std::sync::Arc;

use azure_core::http::RequestContent;
use azure_storage_blob::models::{
    BlockBlobClientCommitBlockListOptions, BlockBlobClientStageBlockOptions,
    BlockBlobClientStageBlockResultHeaders, BlockLookupList,
};
use azure_storage_blob::BlockBlobClient;
use bytes::Bytes;
use md5::{Digest as _, Md5};
use tokio::task::JoinSet;

use super::errors::map_err;
use super::retry::RetryPolicy;
use super::SinkError;

/// The service's limit of blocks per blob.
pub const MAX_BLOCKS: u32 = 50_000;
/// The service's largest block (4000 MiB); larger `block_size` values are clamped.
pub const MAX_BLOCK_SIZE: usize = 4000 * 1024 * 1024;

/// Room reserved past `block_size` in the block being filled. An encoder appends whole rows,
/// so the buffer runs past `block_size` by up to one row before it is split; without this
/// headroom that row would make the `Vec` double its capacity and copy the whole block, once
/// per block. Rows longer than this still work (the `Vec` grows as usual).
const ROW_HEADROOM: usize = 64 * 1024;

/// `CDC_UPLOAD_BLOCKS_IN_FLIGHT`'s default, and the largest value it takes.
pub const DEFAULT_BLOCKS_IN_FLIGHT: usize = 4;
pub const MAX_BLOCKS_IN_FLIGHT: usize = 16;

/// The content type of committed blobs.
pub const CONTENT_TYPE: &str = "text/csv";

/// What [`BlobWriter::finish`] committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobSummary {
    pub name: String,
    pub bytes: u64,
    pub blocks: u32,
}

/// Metadata names must be C# identifiers (letters, digits, `_`, not starting with a digit) and
/// values printable ASCII (they travel as HTTP headers).
pub(crate) fn validate_metadata(metadata: &[(String, String)]) -> Result<(), SinkError> {
    for (k, v) in metadata {
        let mut chars = k.chars();
        let ident = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ident {
            return Err(SinkError::Config(format!(
                "blob metadata name {k:?} is not a C# identifier"
            )));
        }
        if !v.bytes().all(|b| (0x20..0x7f).contains(&b)) {
            return Err(SinkError::Config(format!(
                "blob metadata {k:?} has a value that is not printable ASCII"
            )));
        }
    }
    Ok(())
}

/// The block ID of block `index`: the same for the same index on every run.
pub fn block_id(index: u32) -> Vec<u8> {
    block_id_in(&BlockPrefix::default(), index)
}

/// What a writer puts in front of its block indices, so that two writers of one blob name
/// with different content never stage into each other's uncommitted blocks (the service keeps
/// one uncommitted block per ID and a block list names IDs, not contents). Writers of the same
/// content use the same prefix and so the same IDs. 20 characters, so every ID of every
/// writer has the service's required single length (32).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockPrefix(String);

impl Default for BlockPrefix {
    fn default() -> BlockPrefix {
        BlockPrefix("0".repeat(20))
    }
}

impl BlockPrefix {
    /// The prefix for content identified by `parts` (an incremental window's LSN range): 20
    /// hex digits of their MD5.
    pub fn of(parts: &[&[u8]]) -> BlockPrefix {
        let mut md5 = Md5::new();
        for part in parts {
            md5.update(part);
        }
        let digest = md5.finalize();
        BlockPrefix(digest[..10].iter().map(|b| format!("{b:02x}")).collect())
    }
}

/// The block ID of block `index` under `prefix`: 20 prefix characters and 12 digits.
pub fn block_id_in(prefix: &BlockPrefix, index: u32) -> Vec<u8> {
    format!("{}{index:012}", prefix.0).into_bytes()
}

/// Streams one blob as blocks. Write with [`write`](Self::write), or fill
/// [`buffer`](Self::buffer) directly and call [`flush_full_blocks`](Self::flush_full_blocks);
/// nothing is visible until [`finish`](Self::finish). Dropping the writer without finishing
/// aborts the blocks in flight and commits nothing.
pub struct BlobWriter {
    client: Arc<BlockBlobClient>,
    name: String,
    target: String,
    metadata: Vec<(String, String)>,
    block_size: usize,
    retry: RetryPolicy,
    /// The block being filled (may run past `block_size` by what one caller write added).
    buf: Vec<u8>,
    /// The Put Blocks running on the runtime (at most `blocks_in_flight`); dropping the set
    /// aborts them.
    in_flight: JoinSet<Result<(), SinkError>>,
    blocks_in_flight: usize,
    /// Blocks handed to Put Block so far (staged or in flight).
    blocks: u32,
    staged_bytes: u64,
    /// MD5 of every byte staged, committed as the blob's `Content-MD5` so that readers (and
    /// [`BlobTarget::read`]) can tell a corrupted download.
    content_md5: Md5,
    /// Commit with `If-None-Match: *`: fail with 409 instead of replacing an existing blob.
    create_only: bool,
    block_prefix: BlockPrefix,
    /// Committed as the blob's `Content-Type`: [`CONTENT_TYPE`] unless the sink says otherwise.
    content_type: &'static str,
}

impl std::fmt::Debug for BlobWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobWriter")
            .field("blob", &self.target)
            .field("block_size", &self.block_size)
            .field("blocks", &self.blocks)
            .field("bytes", &self.bytes_written())
            .finish()
    }
}

impl BlobWriter {
    pub(crate) fn new(
        client: BlockBlobClient,
        name: &str,
        target: String,
        metadata: Vec<(String, String)>,
        (block_size, blocks_in_flight): (usize, usize),
        retry: RetryPolicy,
    ) -> BlobWriter {
        BlobWriter {
            client: Arc::new(client),
            name: name.to_string(),
            target,
            metadata,
            block_size: block_size.clamp(1, MAX_BLOCK_SIZE),
            retry,
            buf: Vec::new(),
            in_flight: JoinSet::new(),
            blocks_in_flight: blocks_in_flight.clamp(1, MAX_BLOCKS_IN_FLIGHT),
            blocks: 0,
            staged_bytes: 0,
            content_md5: Md5::new(),
            create_only: false,
            block_prefix: BlockPrefix::default(),
            content_type: CONTENT_TYPE,
        }
    }

    /// Stages under `prefix` (see [`BlockPrefix`]); set before the first write.
    pub fn block_prefix(&mut self, prefix: BlockPrefix) {
        self.block_prefix = prefix;
    }

    /// Appends `bytes`, staging a block each time `block_size` is reached.
    pub async fn write(&mut self, mut bytes: &[u8]) -> Result<(), SinkError> {
        while !bytes.is_empty() {
            let room = self.block_size.saturating_sub(self.buf.len()).max(1);
            let take = room.min(bytes.len());
            if self.buf.capacity() == 0 {
                self.buf.reserve_exact(self.block_size + ROW_HEADROOM);
            }
            self.buf.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            self.flush_full_blocks().await?;
        }
        Ok(())
    }

    /// The pending block, for an encoder to write into; call
    /// [`flush_full_blocks`](Self::flush_full_blocks) after each row or so.
    pub fn buffer(&mut self) -> &mut Vec<u8> {
        if self.buf.capacity() == 0 {
            self.buf.reserve_exact(self.block_size + ROW_HEADROOM);
        }
        &mut self.buf
    }

    /// Stages every full block in the buffer. Waits while `blocks_in_flight` blocks are in
    /// flight, so at most that many upload while the next one fills.
    pub async fn flush_full_blocks(&mut self) -> Result<(), SinkError> {
        while self.buf.len() >= self.block_size {
            // Make room before splitting, so a finished block is gone before the next buffer
            // is allocated: at most `blocks_in_flight + 1` blocks are ever held.
            self.make_room().await?;
            let rest = self.buf.split_off(self.block_size);
            let mut next = Vec::with_capacity((self.block_size + ROW_HEADROOM).max(rest.len()));
            next.extend_from_slice(&rest);
            drop(rest);
            let block = std::mem::replace(&mut self.buf, next);
            self.stage(Bytes::from(block)).await?;
        }
        Ok(())
    }

    /// Makes the commit create-only (`If-None-Match: *`): if the blob exists already, `finish`
    /// fails with [`SinkError::is_already_exists`] and the existing blob stays untouched.
    /// Used where two writers must not both win (full-load parts).
    pub fn create_only(&mut self) {
        self.create_only = true;
    }

    /// Sets (or replaces) a metadata entry before the commit, for what is known only at the
    /// end, such as the row count.
    pub fn set_metadata(&mut self, key: &str, value: String) {
        match self.metadata.iter_mut().find(|(k, _)| k == key) {
            Some(entry) => entry.1 = value,
            None => self.metadata.push((key.to_string(), value)),
        }
    }

    /// The blob's name in its container.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The metadata the commit will set (what the writer was created with, and what
    /// [`set_metadata`](Self::set_metadata) added), for a format that repeats it in the file.
    pub fn metadata(&self) -> &[(String, String)] {
        &self.metadata
    }

    /// The `Content-Type` the commit sets (default [`CONTENT_TYPE`]).
    pub fn set_content_type(&mut self, content_type: &'static str) {
        self.content_type = content_type;
    }

    /// Bytes accepted so far (staged, in flight and buffered).
    pub fn bytes_written(&self) -> u64 {
        self.staged_bytes + self.buf.len() as u64
    }

    /// Stages what is left, waits for every block, then commits the block list with the
    /// metadata and content type (`text/csv` unless set). Only now does the blob become visible (or replace
    /// the previous version whole). An empty blob commits an empty block list.
    pub async fn finish(mut self) -> Result<BlobSummary, SinkError> {
        validate_metadata(&self.metadata)?;
        if !self.buf.is_empty() {
            let block = Bytes::from(std::mem::take(&mut self.buf));
            self.stage(block).await?;
        }
        while let Some(done) = self.in_flight.join_next().await {
            self.check(done)?;
        }

        let ids: Vec<Vec<u8>> = (0..self.blocks)
            .map(|i| block_id_in(&self.block_prefix, i))
            .collect();
        let metadata: HashMap<String, String> = self.metadata.iter().cloned().collect();
        let content_md5 = std::mem::take(&mut self.content_md5).finalize().to_vec();
        let target = self.target.clone();
        let client = self.client.clone();
        let create_only = self.create_only;
        let content_type = self.content_type;
        self.retry
            .run("put block list", &target, || {
                let list = BlockLookupList {
                    latest: Some(ids.clone()),
                    ..Default::default()
                };
                let options = BlockBlobClientCommitBlockListOptions {
                    blob_content_type: Some(content_type.to_string()),
                    blob_content_md5: Some(content_md5.clone()),
                    metadata: Some(metadata.clone()),
                    if_none_match: create_only.then(|| azure_core::http::Etag::from("*")),
                    ..Default::default()
                };
                let client = client.clone();
                let target = target.clone();
                async move {
                    let content: RequestContent<BlockLookupList, _> = list
                        .try_into()
                        .map_err(|e| map_err("put block list", &target, e))?;
                    client
                        .commit_block_list(content, Some(options))
                        .await
                        .map(|_| ())
                        .map_err(|e| map_err("put block list", &target, e))
                }
            })
            .await?;
        tracing::debug!(
            blob = %self.target,
            blocks = self.blocks,
            bytes = self.staged_bytes,
            "committed block list"
        );
        Ok(BlobSummary {
            name: self.name.clone(),
            bytes: self.staged_bytes,
            blocks: self.blocks,
        })
    }

    /// Waits until fewer than `blocks_in_flight` blocks are in flight; fails with the first
    /// block that failed.
    async fn make_room(&mut self) -> Result<(), SinkError> {
        while self.in_flight.len() >= self.blocks_in_flight {
            let done = self
                .in_flight
                .join_next()
                .await
                .expect("the set is not empty");
            self.check(done)?;
        }
        Ok(())
    }

    fn check(
        &self,
        done: Result<Result<(), SinkError>, tokio::task::JoinError>,
    ) -> Result<(), SinkError> {
        done.map_err(|e| {
            SinkError::Other(format!("staging a block of {} failed: {e}", self.target))
        })?
    }

    /// Waits for room in the window, then starts staging `block` in the background.
    async fn stage(&mut self, block: Bytes) -> Result<(), SinkError> {
        self.make_room().await?;
        // Checked per block (a handful of keys) so a bad name fails before the upload.
        validate_metadata(&self.metadata)?;
        if self.blocks >= MAX_BLOCKS {
            return Err(SinkError::Config(format!(
                "blob {} would need more than {MAX_BLOCKS} blocks of {} bytes; raise the block size",
                self.target, self.block_size
            )));
        }
        let index = self.blocks;
        self.blocks += 1;
        self.staged_bytes += block.len() as u64;
        self.content_md5.update(&block);
        let client = self.client.clone();
        let retry = self.retry.clone();
        let target = self.target.clone();
        let id = block_id_in(&self.block_prefix, index);
        self.in_flight
            .spawn(async move { stage_block(&client, &retry, &target, (index, id), block).await });
        Ok(())
    }
}

/// Put Block with a `Content-MD5`, retried. Also checks the MD5 the service echoes, when it
/// echoes one.
async fn stage_block(
    client: &BlockBlobClient,
    retry: &RetryPolicy,
    target: &str,
    (index, id): (u32, Vec<u8>),
    block: Bytes,
) -> Result<(), SinkError> {
    let md5 = Md5::digest(&block).to_vec();
    let len = block.len() as u64;
    retry
        .run("put block", target, || async {
            let options = BlockBlobClientStageBlockOptions {
                transactional_content_md5: Some(md5.clone()),
                ..Default::default()
            };
            let rsp = client
                .stage_block(&id, len, block.clone().into(), Some(options))
                .await
                .map_err(|e| map_err("put block", target, e))?;
            if let Ok(Some(echoed)) = rsp.content_md5() {
                if echoed != md5 {
                    // The service checked our Content-MD5 (a mismatch is a 400), so the
                    // answer was altered on the way back: transient, stage the block again.
                    return Err(SinkError::transport(
                        "put block",
                        target,
                        format!(
                            "block {index}: the service acknowledged a different MD5 (reply corrupted on the way)"
                        ),
                    ));
                }
            }
            Ok(())
        })
        .await?;
    tracing::debug!(blob = %target, block = index, bytes = len, "staged block");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_names_and_values() {
        let m = |k: &str, v: &str| vec![(k.to_string(), v.to_string())];
        let cases = [
            (m("table", "dbo.customers"), true),
            (m("from_lsn", "0x0000002A000000100003"), true),
            (m("_x1", ""), true),
            (m("from-lsn", "x"), false),
            (m("1st", "x"), false),
            (m("", "x"), false),
            (m("t", "é"), false),
            (m("t", "a\nb"), false),
        ];
        for (metadata, ok) in cases {
            assert_eq!(validate_metadata(&metadata).is_ok(), ok, "{metadata:?}");
        }
    }

    #[test]
    fn block_ids_fixed_width_and_stable() {
        assert_eq!(block_id(0), b"00000000000000000000000000000000".to_vec());
        assert_eq!(block_id(49_999).len(), 32);
        assert_eq!(block_id(7), block_id(7));
        let window = BlockPrefix::of(&[b"from", b"to"]);
        let id = block_id_in(&window, 7);
        assert_eq!(id.len(), 32);
        assert!(
            id.ends_with(b"000000000007"),
            "the index in the last 12 digits"
        );
        assert_eq!(block_id_in(&window, 49_999).len(), 32);
        assert_eq!(window, BlockPrefix::of(&[b"from", b"to"]), "stable");
        assert_ne!(
            window,
            BlockPrefix::of(&[b"from", b"to2"]),
            "another range, other IDs"
        );
        assert_ne!(block_id_in(&window, 0), block_id(0));
    }
}

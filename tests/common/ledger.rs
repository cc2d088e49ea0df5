//! The replay oracle of `cdc.rs`, kept incrementally so it can run after every one of
//! hundreds of invocations: each check lists the container once (names and ETags), reads only
//! the blobs committed since the last check, and applies new incremental blobs to the state
//! replayed so far with the same strict rules as `Bench::replay`.
//!
//! What one [`Ledger::check`] proves, after any invocation, crashed or not:
//! - nothing half-visible: every listed blob parses as complete CSV whose `row_count`
//!   metadata equals its rows (guarantee 2);
//! - re-running a window reproduces it: a blob committed again under a name seen before (a new
//!   ETag) holds the bytes and metadata of its first commit (guarantee 4);
//! - nothing lost or duplicated, and the watermark never past what is copied: the blobs
//!   replayed in name order equal the source as of each blob's `to_lsn` and, at the end, as of
//!   the watermark (or the pending window, once its blob is committed) (guarantees 1 and 3).

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};

use cdc_copy::cdc::{Lsn, TableState};
use cdc_copy::sink::errors::CONTAINER_NOT_FOUND;

use super::cdc::{apply_full_part, apply_incremental, diff, parse_csv, Bench, Rows};

/// A blob as first committed.
struct Seen {
    etag: String,
    bytes: Vec<u8>,
    metadata: BTreeMap<String, String>,
}

/// What the checks covered, for the summary line.
#[derive(Debug, Default, Clone)]
pub struct Figures {
    pub checks: u64,
    /// Blob commits read and verified (first commits and re-commits).
    pub commits_checked: u64,
    /// Re-commits of a name seen before, each byte-identical.
    pub recommits: u64,
    pub incremental_blobs: u64,
    /// Change rows (net changes) read from incremental blobs and replayed.
    pub change_rows: u64,
    pub full_load_rows: u64,
    /// Changes are lost when the replay misses one; duplicated when one is applied twice.
    pub lost: u64,
    pub duplicated: u64,
}

#[derive(Default)]
pub struct Ledger {
    seen: HashMap<String, Seen>,
    rows: Rows,
    /// The full load replayed (its id), once it has finished.
    load_id: Option<String>,
    last_applied: Option<String>,
    previous_to: Option<Lsn>,
    /// Schema documents seen, with the ETag of their one commit.
    documents: HashMap<String, String>,
    pub figures: Figures,
}

impl Ledger {
    pub fn new() -> Ledger {
        Ledger::default()
    }

    /// Schema documents are committed once each (create-only: a document's ETag never
    /// changes) and never disappear.
    fn check_schema_documents(&mut self, documents: &[(String, String)], context: &str) {
        for (name, etag) in documents {
            let first = self
                .documents
                .entry(name.clone())
                .or_insert_with(|| etag.clone());
            assert_eq!(
                first, etag,
                "{context}: schema document {name} was rewritten"
            );
        }
        for name in self.documents.keys() {
            assert!(
                documents.iter().any(|(n, _)| n == name),
                "{context}: schema document {name} disappeared"
            );
        }
    }

    /// Checks everything committed so far; panics with `context` on the first violation.
    pub async fn check(&mut self, bench: &Bench, context: &str) {
        self.figures.checks += 1;
        // The default layouts, for the bench's table (several tables may share a container).
        let table = format!("{}/{}/", bench.table.schema, bench.table.table);
        let (full, incremental) = (format!("{table}full/"), format!("{table}incremental/"));
        let (full, incremental) = (full.as_str(), incremental.as_str());
        // No container yet (a run that failed before its first blob): nothing committed.
        let listing = match bench.ctx.blobs.list_etags(&table).await {
            Err(e) if e.code() == Some(CONTAINER_NOT_FOUND) => Vec::new(),
            other => other.unwrap(),
        };
        let (documents, listing): (Vec<_>, Vec<_>) = listing
            .into_iter()
            .partition(|(n, _)| n.contains("/_schema/"));
        self.check_schema_documents(&documents, context);
        let listed: HashMap<&str, &str> = listing
            .iter()
            .map(|(n, e)| (n.as_str(), e.as_str()))
            .collect();
        for name in self.seen.keys() {
            assert!(
                listed.contains_key(name.as_str()),
                "{context}: {name} disappeared"
            );
        }
        // Every commit since the last check: complete, and identical to the first commit of
        // its name.
        for (name, etag) in &listing {
            if self.seen.get(name).is_some_and(|s| &s.etag == etag) {
                continue;
            }
            let bytes = bench.read(name).await;
            let info = bench.ctx.blobs.properties(name).await.unwrap().unwrap();
            let records = parse_csv(&bytes);
            assert!(!records.is_empty(), "{context}: {name} has no header");
            assert_eq!(
                info.metadata.get("row_count"),
                Some(&(records.len() - 1).to_string()),
                "{context}: {name}: row_count metadata vs rows (a partial blob is visible)"
            );
            let document = info.metadata.get("schema_document");
            assert!(
                document.is_some_and(|d| documents.iter().any(|(n, _)| n == d)),
                "{context}: {name} names schema document {document:?}, which is not committed"
            );
            self.figures.commits_checked += 1;
            match self.seen.get_mut(name) {
                Some(first) => {
                    assert!(
                        first.bytes == bytes,
                        "{context}: {name} was committed again with different bytes"
                    );
                    assert_eq!(
                        first.metadata, info.metadata,
                        "{context}: {name} was committed again with different metadata"
                    );
                    first.etag = etag.clone();
                    self.figures.recommits += 1;
                }
                None => {
                    self.seen.insert(
                        name.clone(),
                        Seen {
                            etag: etag.clone(),
                            bytes,
                            metadata: info.metadata,
                        },
                    );
                }
            }
        }

        let Some(wm) = bench.model.watermark(&bench.table) else {
            assert!(
                listing.is_empty(),
                "{context}: blobs without a watermark row"
            );
            return;
        };
        // The full load, once finished: the latest load's parts are the base state.
        if self.load_id.is_none() && !matches!(wm.state, TableState::Loading(_)) {
            let load_id = listing
                .iter()
                .filter(|(n, _)| n.starts_with(full))
                .filter_map(|(n, _)| n.split('/').nth(3))
                .max()
                .expect("a finished load has parts")
                .to_string();
            let prefix = format!("{full}{load_id}/");
            let mut parts: Vec<&String> = self
                .seen
                .keys()
                .filter(|n| n.starts_with(&prefix))
                .collect();
            parts.sort();
            for name in parts {
                let problems = apply_full_part(&mut self.rows, name, &self.seen[name].bytes);
                assert!(problems.is_empty(), "{context}: {problems:?}");
            }
            self.figures.full_load_rows = self.rows.len() as u64;
            let baseline: Lsn = self.seen[&format!("{prefix}part-00000.csv")].metadata
                ["baseline_lsn"]
                .parse()
                .unwrap();
            assert_eq!(
                bench.source_at(baseline),
                self.rows,
                "{context}: the full load is the source at its baseline"
            );
            self.previous_to = Some(baseline);
            self.load_id = Some(load_id);
        }

        // New incremental blobs, in name order, each after the last one applied.
        let mut new: Vec<&String> = listing
            .iter()
            .map(|(n, _)| n)
            .filter(|n| n.starts_with(incremental))
            .filter(|n| self.last_applied.as_ref().is_none_or(|last| *n > last))
            .collect();
        new.sort();
        let applied_count = listing
            .iter()
            .filter(|(n, _)| n.starts_with(incremental))
            .count()
            - new.len();
        assert_eq!(
            applied_count as u64, self.figures.incremental_blobs,
            "{context}: an incremental blob appeared before one already replayed"
        );
        if !new.is_empty() {
            assert!(
                self.load_id.is_some(),
                "{context}: incremental blobs before the full load finished"
            );
        }
        for name in new {
            let seen = &self.seen[name];
            let problems = apply_incremental(
                &mut self.rows,
                name,
                &seen.metadata,
                &seen.bytes,
                &mut self.previous_to,
                true,
            );
            for p in &problems {
                if p.contains("duplicate") || p.contains("delete of absent") {
                    self.figures.duplicated += 1;
                } else if p.contains("absent") {
                    self.figures.lost += 1;
                }
            }
            assert!(problems.is_empty(), "{context}: {problems:?}");
            self.figures.change_rows += parse_csv(&seen.bytes).len() as u64 - 1;
            self.figures.incremental_blobs += 1;
            // Nothing lost between blobs either: the replay equals the source at to_lsn.
            let to: Lsn = seen.metadata["to_lsn"].parse().unwrap();
            self.assert_rows(bench, to, &format!("{context}: after {name}"));
            self.last_applied = Some(name.clone());
        }

        // The watermark never passes what is committed: the replay equals the source at the
        // watermark (or at the pending window's end once its blob is committed).
        if self.load_id.is_some() {
            let mut copied_to = wm.last_lsn;
            if let TableState::Pending(pending) = &wm.state {
                if listed.contains_key(pending.blob.as_str()) {
                    copied_to = pending.range.to();
                }
            }
            assert_eq!(
                self.previous_to.map(|p| p <= copied_to),
                Some(true),
                "{context}: a committed blob reaches past the watermark {copied_to} without being its pending window"
            );
            self.assert_rows(bench, copied_to, &format!("{context}: at the watermark"));
        }
    }

    fn assert_rows(&mut self, bench: &Bench, lsn: Lsn, context: &str) {
        let expected = bench.source_at(lsn);
        if self.rows != expected {
            let (missing, extra, differing) = diff(&self.rows, &expected);
            self.figures.lost += (missing.len() + differing.len()) as u64;
            self.figures.duplicated += extra.len() as u64;
            panic!(
                "{context}: replay differs from the source at {lsn}: missing {missing:?}, extra {extra:?}, differing {differing:?}"
            );
        }
    }
}

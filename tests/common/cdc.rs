//! A job test bench: the in-memory CDC model as the source, a real Azurite as the sink, and an
//! oracle that replays the committed blobs and compares them with the source.
//!
//! The oracle is the point: after any sequence of runs, crashes and retries, the full-load
//! blobs plus every incremental blob applied in name order must equal the source table as of
//! the watermark's LSN — nothing lost (a missing change shows as a difference), nothing
//! duplicated (an insert of a present key or an update/delete of an absent one is refused).

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};

use cdc_copy::cdc::{FullLoadProgress, Lsn, TableRef, TableState, Value, Watermark, Window};
use cdc_copy::config::Settings;
use cdc_copy::host::{FullLoadRequest, TimerTrigger};
use cdc_copy::jobs::{self, Context};
use cdc_copy::report::Report;
use cdc_copy::sink::blob::BlobTarget;
use cdc_copy_testkit::faults::Faults;
use cdc_copy_testkit::model::CdcModel;

use super::azurite::{unique_container, Azurite};

/// The customers shape of the testkit's bench generator; the values differ (see [`customer`]).
pub use cdc_copy_testkit::rows::COLUMNS;

pub fn customers() -> TableRef {
    TableRef::parse("dbo.customers").unwrap()
}

pub fn start_time() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 21, 10, 0, 0).unwrap()
}

/// A customers row ([`COLUMNS`]), with awkward text now and then (quotes, commas, newlines,
/// Unicode, ""): the oracle's test data, unlike the realistic sizes of
/// `cdc_copy_testkit::rows::customer`.
pub fn customer(id: i64, version: u64) -> Vec<Value> {
    let city = match (id as u64 + version) % 5 {
        0 => Value::Null,
        1 => Value::Text(String::new()),
        2 => Value::Text("Zürich, \"Altstadt\"\nline 2".to_string()),
        3 => Value::Text("東京".to_string()),
        _ => Value::Text(format!("City {version}")),
    };
    vec![
        Value::Int(id),
        Value::Text(format!("First{id}")),
        Value::Text(format!("Last v{version}")),
        Value::Text(format!("c{id}@example.com")),
        city,
    ]
}

/// Random DML on the bench's table: inserts, updates (some of the key itself, which SQL
/// Server captures as delete + insert), deletes, and an insert+delete of the same key inside
/// one window (nets to nothing); `1..60` s of model time between statements. Keys stay unique
/// through `next_id`.
pub fn random_dml(bench: &Bench, rng: &mut rand::rngs::StdRng, next_id: &mut i64, version: u64) {
    use rand::Rng;
    let table = &bench.table;
    let ops = rng.random_range(0..12);
    for _ in 0..ops {
        let keys: Vec<i64> = bench
            .model
            .table_rows(table)
            .iter()
            .map(|r| match r[0] {
                Value::Int(k) => k,
                _ => unreachable!(),
            })
            .collect();
        let pick = |rng: &mut rand::rngs::StdRng| keys[rng.random_range(0..keys.len())];
        match rng.random_range(0..10) {
            0..=3 => {
                bench
                    .model
                    .insert(table, customer(*next_id, version))
                    .unwrap();
                *next_id += 1;
            }
            4..=5 if !keys.is_empty() => {
                let k = pick(rng);
                bench
                    .model
                    .update(table, &[Value::Int(k)], customer(k, version))
                    .unwrap();
            }
            6 if !keys.is_empty() => {
                let k = pick(rng);
                bench
                    .model
                    .update(table, &[Value::Int(k)], customer(*next_id, version))
                    .unwrap();
                *next_id += 1;
            }
            7 => {
                bench
                    .model
                    .insert(table, customer(*next_id, version))
                    .unwrap();
                bench.model.delete(table, &[Value::Int(*next_id)]).unwrap();
                *next_id += 1;
            }
            _ if !keys.is_empty() => {
                bench.model.delete(table, &[Value::Int(pick(rng))]).unwrap();
            }
            _ => {}
        }
        bench
            .model
            .advance(Duration::seconds(rng.random_range(1..60)));
    }
}

/// Settings for a test: Azurite for blobs, a connection string that is never dialled (the
/// model is the source), short capture waits.
pub fn settings(azurite: &Azurite, container: &str, extra: &[(&str, &str)]) -> Settings {
    let mut vars: HashMap<String, String> = [
        (
            "CDC_SQL_CONNECTION_STRING",
            "Server=tcp:127.0.0.1,1;Database=db;User ID=u;Password=Hunter2-not-used;Encrypt=true",
        ),
        (
            "CDC_STORAGE_CONNECTION_STRING",
            azurite.connection_string.as_str(),
        ),
        ("CDC_CONTAINER", container),
        ("CDC_TABLES", "dbo.customers"),
        ("CDC_CAPTURE_WAIT_SECONDS", "0"),
        ("CDC_CAPTURE_POLL_SECONDS", "1"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for (k, v) in extra {
        vars.insert(k.to_string(), v.to_string());
    }
    Settings::from_map(&vars).expect("test settings are valid")
}

/// The state of a watermark row, read the way tests ask about it.
pub trait WatermarkExt {
    /// The window a run recorded and has not finished, if any.
    fn pending(&self) -> Option<&Window>;
    /// The full load in progress, if any.
    fn loading(&self) -> Option<&FullLoadProgress>;
}

impl WatermarkExt for Watermark {
    fn pending(&self) -> Option<&Window> {
        match &self.state {
            TableState::Pending(window) => Some(window),
            _ => None,
        }
    }

    fn loading(&self) -> Option<&FullLoadProgress> {
        match &self.state {
            TableState::Loading(progress) => Some(progress),
            _ => None,
        }
    }
}

/// The model, the job context and the container, for one test.
pub struct Bench {
    pub model: CdcModel,
    /// Faults and call counts on the way from the jobs to the model.
    pub faults: Faults,
    pub ctx: Context,
    pub table: TableRef,
}

impl Bench {
    /// A customers table with `rows` rows, CDC enabled (`dbo_customers`, net changes), and a
    /// job context over it with `extra` settings.
    pub async fn new(rows: i64, model: CdcModel, extra: &[(&str, &str)]) -> Bench {
        let table = customers();
        model
            .create_table(
                table.clone(),
                COLUMNS.iter().map(|c| c.to_string()).collect(),
                vec!["customer_id".to_string()],
            )
            .unwrap();
        model.enable_cdc(&table, "dbo_customers", true).unwrap();
        for id in 0..rows {
            model.insert(&table, customer(id, 0)).unwrap();
        }
        Bench::over(model, extra).await
    }

    /// A job context over `model`, whose `dbo.customers` the caller has created and enabled.
    pub async fn over(model: CdcModel, extra: &[(&str, &str)]) -> Bench {
        Bench::over_table(model, customers(), extra).await
    }

    /// A job context over `model` copying `table` (created and enabled by the caller).
    pub async fn over_table(model: CdcModel, table: TableRef, extra: &[(&str, &str)]) -> Bench {
        let azurite = Azurite::shared();
        let container = unique_container("jobs");
        let tables = table.to_string();
        let mut extra = extra.to_vec();
        if !extra.iter().any(|(k, _)| *k == "CDC_TABLES") {
            extra.push(("CDC_TABLES", &tables));
        }
        let settings = Arc::new(settings(azurite, &container, &extra));
        model.advance(Duration::seconds(1));
        // No ensure_container here: the jobs must create the container themselves.
        let blobs = BlobTarget::new(&settings.storage, &settings.container).unwrap();
        let faults = Faults::new();
        let source = faults.wrap(Arc::new(model.clone()));
        let clock_model = model.clone();
        let ctx = Context {
            settings,
            source,
            blobs,
            clock: Arc::new(move || clock_model.now()),
            container_ready: Arc::default(),
        };
        Bench {
            model,
            faults,
            ctx,
            table,
        }
    }

    /// Blocks of `bytes` instead of MiB, so that small windows and parts span several.
    pub fn set_block_size(&mut self, bytes: usize) {
        let mut settings = (*self.ctx.settings).clone();
        settings.block_size = bytes;
        self.ctx.settings = Arc::new(settings);
    }

    pub async fn full_load(&self) -> Report {
        jobs::full_load::run(
            &self.ctx,
            &FullLoadRequest::default_all(),
            std::time::Duration::from_secs(600),
        )
        .await
    }

    /// An incremental run for the trigger time `at`.
    pub async fn incremental(&self, at: DateTime<Utc>) -> Report {
        let trigger = TimerTrigger {
            trigger_time: at,
            last: None,
            is_past_due: false,
        };
        jobs::incremental::run(&self.ctx, &trigger).await
    }

    pub fn watermark(&self) -> Watermark {
        self.model.watermark(&self.table).expect("a watermark row")
    }

    /// Committed data blob names under `prefix`, sorted (timestamp names sort
    /// chronologically); the tables' schema documents (`…/_schema/`) are left out.
    pub async fn blobs(&self, prefix: &str) -> Vec<String> {
        let mut names = self.ctx.blobs.list(prefix).await.unwrap();
        names.retain(|n| !n.contains("/_schema/"));
        names.sort();
        names
    }

    pub async fn incremental_blobs(&self) -> Vec<String> {
        self.blobs("dbo/customers/incremental/").await
    }

    pub async fn read(&self, name: &str) -> Vec<u8> {
        self.ctx
            .blobs
            .read(name)
            .await
            .unwrap()
            .expect("blob exists")
            .to_vec()
    }

    /// The table replayed from the blobs: the latest full load's parts, then every incremental
    /// blob in order, strictly (see module doc). Panics on a duplicate or impossible change.
    pub async fn replay(&self) -> BTreeMap<String, Vec<Option<String>>> {
        self.replay_with(true).await
    }

    /// `strict = false` applies inserts and updates as upserts: what consumers do with the
    /// documented overlap of a full load and the changes made while it scanned.
    pub async fn replay_with(&self, strict: bool) -> BTreeMap<String, Vec<Option<String>>> {
        let full = self.blobs("dbo/customers/full/").await;
        let load_id = full
            .iter()
            .filter_map(|n| n.split('/').nth(3))
            .max()
            .expect("a full load")
            .to_string();
        let mut rows = BTreeMap::new();
        for name in full
            .iter()
            .filter(|n| n.split('/').nth(3) == Some(load_id.as_str()))
        {
            let problems = apply_full_part(&mut rows, name, &self.read(name).await);
            assert!(problems.is_empty(), "{problems:?}");
        }
        let mut previous_to: Option<Lsn> = None;
        for name in self.incremental_blobs().await {
            let info = self.ctx.blobs.properties(&name).await.unwrap().unwrap();
            let problems = apply_incremental(
                &mut rows,
                &name,
                &info.metadata,
                &self.read(&name).await,
                &mut previous_to,
                strict,
            );
            assert!(problems.is_empty(), "{problems:?}");
        }
        rows
    }

    /// The source table rendered like the blobs, as of the watermark's LSN: the current rows
    /// with every change after the watermark undone (before-images rebuilt by walking the
    /// change log forward).
    pub fn source_at_watermark(&self) -> BTreeMap<String, Vec<Option<String>>> {
        self.source_at(self.watermark().last_lsn)
    }

    /// The source table as of `lsn`.
    pub fn source_at(&self, lsn: Lsn) -> BTreeMap<String, Vec<Option<String>>> {
        let mut rows: BTreeMap<String, Vec<Value>> = self
            .model
            .table_rows(&self.table)
            .into_iter()
            .map(|r| (render(&r[0]).unwrap(), r))
            .collect();
        let mut state: HashMap<String, Vec<Value>> = HashMap::new();
        let mut undo: Vec<(String, Option<Vec<Value>>)> = Vec::new();
        for (change_lsn, op, row) in self.model.changes_since(&self.table, Lsn::ZERO) {
            let key = render(&row[0]).unwrap();
            let before = if op == 1 {
                state.remove(&key)
            } else {
                state.insert(key.clone(), row)
            };
            if change_lsn > lsn {
                undo.push((key, before));
            }
        }
        for (key, before) in undo.into_iter().rev() {
            match before {
                Some(row) => rows.insert(key, row),
                None => rows.remove(&key),
            };
        }
        rows.into_iter()
            .map(|(k, r)| (k, r.iter().map(render).collect()))
            .collect()
    }

    /// Guarantees 1 and 3 at once: the blobs replay to the source as of the watermark.
    pub async fn assert_consistent(&self, context: &str) {
        self.assert_consistent_with(context, true).await
    }

    /// A pending window whose blob is already committed (a crash between the commit and the
    /// watermark update) is part of what the blobs hold; the watermark itself never passes
    /// what is committed.
    pub async fn assert_consistent_with(&self, context: &str, strict: bool) {
        let replayed = self.replay_with(strict).await;
        let wm = self.watermark();
        let mut copied_to = wm.last_lsn;
        if let TableState::Pending(pending) = &wm.state {
            if self
                .ctx
                .blobs
                .properties(&pending.blob)
                .await
                .unwrap()
                .is_some()
            {
                copied_to = pending.range.to();
            }
        }
        let expected = self.source_at(copied_to);
        if replayed != expected {
            let (missing, extra, differing) = diff(&replayed, &expected);
            panic!(
                "{context}: blobs do not replay to the source at watermark {}: missing {missing:?}, extra {extra:?}, differing {differing:?}",
                self.watermark().last_lsn
            );
        }
    }
}

/// Replayed rows by key (the rendered key column), each row's fields as the blobs hold them.
pub type Rows = BTreeMap<String, Vec<Option<String>>>;

/// Adds one full-load part to `rows`. Returns what is wrong (empty when all is well).
pub fn apply_full_part(rows: &mut Rows, name: &str, bytes: &[u8]) -> Vec<String> {
    let mut problems = Vec::new();
    let records = parse_csv(bytes);
    if records.first() != Some(&header(COLUMNS)) {
        problems.push(format!("{name}: header {:?}", records.first()));
        return problems;
    }
    for record in &records[1..] {
        let key = record[0].clone().expect("key");
        if rows.insert(key.clone(), record.clone()).is_some() {
            problems.push(format!("{name}: key {key} twice in the full load"));
        }
    }
    problems
}

/// Applies one incremental blob to `rows`: its LSN range must start after `previous_to`
/// (then becomes it), its rows must lie in the range and match its `row_count`, and with
/// `strict` an insert of a present key or an update/delete of an absent one is a duplicate
/// or a loss. Returns what is wrong (empty when all is well).
pub fn apply_incremental(
    rows: &mut Rows,
    name: &str,
    metadata: &BTreeMap<String, String>,
    bytes: &[u8],
    previous_to: &mut Option<Lsn>,
    strict: bool,
) -> Vec<String> {
    let mut problems = Vec::new();
    let from: Lsn = metadata["from_lsn"].parse().unwrap();
    let to: Lsn = metadata["to_lsn"].parse().unwrap();
    if let Some(prev) = *previous_to {
        if from <= prev {
            problems.push(format!(
                "{name}: LSN range [{from}, {to}] overlaps the previous blob's (to {prev}) (duplicate)"
            ));
        }
    }
    *previous_to = Some(to);
    let records = parse_csv(bytes);
    let mut want = vec![
        Some("__$start_lsn".to_string()),
        Some("__$operation".to_string()),
        Some("__$update_mask".to_string()),
    ];
    want.extend(header(COLUMNS));
    if records.first() != Some(&want) {
        problems.push(format!("{name}: header {:?}", records.first()));
        return problems;
    }
    if metadata.get("row_count") != Some(&(records.len() - 1).to_string()) {
        problems.push(format!(
            "{name}: row_count metadata {:?} but {} rows (partial blob)",
            metadata.get("row_count"),
            records.len() - 1
        ));
    }
    for record in &records[1..] {
        let lsn: Lsn = record[0].as_deref().unwrap().parse().unwrap();
        if !(from <= lsn && lsn <= to) {
            problems.push(format!("{name}: row LSN {lsn} outside [{from}, {to}]"));
        }
        let op = record[1].as_deref().unwrap();
        let row = record[3..].to_vec();
        let key = row[0].clone().expect("key");
        match op {
            "1" => {
                if rows.remove(&key).is_none() {
                    problems.push(format!("{name}: delete of absent key {key}"));
                }
            }
            "2" => {
                if rows.insert(key.clone(), row).is_some() && strict {
                    problems.push(format!("{name}: insert of present key {key} (duplicate)"));
                }
            }
            "4" => {
                if rows.insert(key.clone(), row).is_none() && strict {
                    problems.push(format!("{name}: update of absent key {key}"));
                }
            }
            "5" => {
                rows.insert(key, row);
            }
            other => problems.push(format!("{name}: unexpected operation {other}")),
        }
    }
    problems
}

/// The keys on which `replayed` and `expected` differ: (missing, extra, differing).
pub fn diff(replayed: &Rows, expected: &Rows) -> (Vec<String>, Vec<String>, Vec<String>) {
    let missing = expected
        .keys()
        .filter(|k| !replayed.contains_key(*k))
        .cloned()
        .collect();
    let extra = replayed
        .keys()
        .filter(|k| !expected.contains_key(*k))
        .cloned()
        .collect();
    let differing = expected
        .iter()
        .filter(|(k, v)| replayed.get(*k).is_some_and(|r| r != *v))
        .map(|(k, _)| k.clone())
        .collect();
    (missing, extra, differing)
}

/// One field as the encoder renders it, `None` for NULL.
pub fn render(value: &Value) -> Option<String> {
    if matches!(value, Value::Null) {
        return None;
    }
    let mut out = Vec::new();
    cdc_copy::sink::csv::write_value(&mut out, value);
    let parsed = parse_csv(&[out.as_slice(), b"\r\n"].concat());
    parsed[0][0].clone()
}

fn header(columns: &[&str]) -> Vec<Option<String>> {
    columns.iter().map(|c| Some(c.to_string())).collect()
}

/// A strict RFC 4180 reader that keeps NULL (unquoted empty field) apart from `""`.
pub fn parse_csv(bytes: &[u8]) -> Vec<Vec<Option<String>>> {
    let text = std::str::from_utf8(bytes).expect("UTF-8");
    let mut records = Vec::new();
    let mut record = Vec::new();
    let mut chars = text.chars().peekable();
    let mut at_record_start = true;
    while chars.peek().is_some() {
        at_record_start = false;
        let field = if chars.peek() == Some(&'"') {
            chars.next();
            let mut s = String::new();
            loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        s.push('"');
                    }
                    Some('"') => break,
                    Some(c) => s.push(c),
                    None => panic!("unterminated quoted field"),
                }
            }
            Some(s)
        } else {
            let mut s = String::new();
            while let Some(&c) = chars.peek() {
                if c == ',' || c == '\r' || c == '\n' {
                    break;
                }
                assert!(c != '"', "quote inside an unquoted field");
                s.push(c);
                chars.next();
            }
            (!s.is_empty()).then_some(s)
        };
        record.push(field);
        match chars.next() {
            Some(',') => {}
            Some('\r') => {
                assert_eq!(chars.next(), Some('\n'), "CR without LF");
                records.push(std::mem::take(&mut record));
                at_record_start = true;
            }
            Some('\n') => panic!("bare LF record end"),
            None => {
                records.push(std::mem::take(&mut record));
                at_record_start = true;
            }
            Some(c) => panic!("unexpected {c:?} after a field"),
        }
    }
    assert!(at_record_start, "incomplete last record");
    records
}

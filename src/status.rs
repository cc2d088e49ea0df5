//! `handler status`: where each configured table stands, for an operator.
//!
//! Read-only (the watermark row and its last error, the range table of a split load, the
//! capture instances and `capture_progress`), so it is safe to run beside the Functions host
//! at any time. Reading is [`collect`]; everything else is pure: [`TableStatus`] is the
//! stable JSON shape (`--json`, documented in docs/scale-out.md), [`render`] the terminal
//! table.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::cdc::{ChangeMode, Lsn, RangeProgress, TableRef, TableState, Watermark};
use crate::jobs::Context;

/// One table's status. Field names and meanings are stable: scripts read `--json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TableStatus {
    pub table: String,
    /// `loading`, `ready`, `pending` (a window recorded and not yet committed) or
    /// `not loaded` (no watermark row).
    pub state: &'static str,
    pub mode: Option<ChangeMode>,
    /// The capture instance the watermark names (the one copied from next).
    pub capture_instance: Option<String>,
    pub last_window_end: Option<DateTime<Utc>>,
    pub last_lsn: Option<Lsn>,
    /// `sys.fn_cdc_get_max_lsn()` now.
    pub max_lsn: Option<Lsn>,
    /// How far the copy trails capture: the time of the max LSN minus the last window end,
    /// in seconds (0 when the copy is ahead of the newest capture).
    pub lag_seconds: Option<i64>,
    pub pending_window: Option<PendingStatus>,
    pub full_load: Option<LoadStatus>,
    /// The last error of a copy of this table, and when (cleared by the next success).
    pub last_error: Option<String>,
    pub last_error_at: Option<DateTime<Utc>>,
    /// Why this table's status could not be read.
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PendingStatus {
    pub to_lsn: Lsn,
    pub end: DateTime<Utc>,
    pub blob: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadStatus {
    pub load_id: String,
    pub baseline_lsn: Lsn,
    pub rows_done: u64,
    pub parts_done: u32,
    /// One entry per key range (one for a load that is not split).
    pub ranges: Vec<RangeStatus>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RangeStatus {
    pub range: u32,
    pub parts_done: u32,
    pub rows_done: u64,
    pub done: bool,
}

impl TableStatus {
    fn new(table: &TableRef) -> TableStatus {
        TableStatus {
            table: table.to_string(),
            state: "not loaded",
            mode: None,
            capture_instance: None,
            last_window_end: None,
            last_lsn: None,
            max_lsn: None,
            lag_seconds: None,
            pending_window: None,
            full_load: None,
            last_error: None,
            last_error_at: None,
            error: None,
        }
    }

    /// The status of `table` from what was read: its watermark (if any), the ranges of its
    /// load in progress (empty when not split), and the max LSN with its time.
    pub fn of(
        table: &TableRef,
        wm: Option<&Watermark>,
        ranges: &[RangeProgress],
        max_lsn: Option<(Lsn, Option<DateTime<Utc>>)>,
    ) -> TableStatus {
        let mut status = TableStatus::new(table);
        status.max_lsn = max_lsn.map(|(lsn, _)| lsn);
        let Some(wm) = wm else {
            return status;
        };
        status.capture_instance = Some(wm.capture_instance.clone());
        status.last_window_end = Some(wm.last_window_end);
        status.last_lsn = Some(wm.last_lsn);
        status.lag_seconds = max_lsn
            .and_then(|(_, at)| at)
            .map(|at| (at - wm.last_window_end).num_seconds().max(0));
        match &wm.state {
            TableState::Ready => status.state = "ready",
            TableState::Pending(window) => {
                status.state = "pending";
                status.pending_window = Some(PendingStatus {
                    to_lsn: window.range.to(),
                    end: window.end,
                    blob: window.blob.clone(),
                });
            }
            TableState::Loading(progress) => {
                status.state = "loading";
                status.lag_seconds = None;
                let ranges: Vec<RangeStatus> = if ranges.is_empty() {
                    vec![RangeStatus {
                        range: 0,
                        parts_done: progress.parts_done,
                        rows_done: progress.rows_done,
                        done: false,
                    }]
                } else {
                    ranges
                        .iter()
                        .map(|r| RangeStatus {
                            range: r.range,
                            parts_done: r.parts_done,
                            rows_done: r.rows_done,
                            done: r.done,
                        })
                        .collect()
                };
                status.full_load = Some(LoadStatus {
                    load_id: progress.load_id.clone(),
                    baseline_lsn: progress.baseline_lsn,
                    rows_done: ranges.iter().map(|r| r.rows_done).sum(),
                    parts_done: ranges.iter().map(|r| r.parts_done).sum(),
                    ranges,
                });
            }
        }
        status
    }
}

/// Reads the status of every configured table; a table that cannot be read carries its
/// error (the others are still shown).
pub async fn collect(ctx: &Context) -> Vec<TableStatus> {
    let mut out = Vec::new();
    for spec in &ctx.settings.tables {
        let status = match read_one(ctx, &spec.table).await {
            Ok(status) => status,
            Err(e) => TableStatus {
                error: Some(e.to_string()),
                ..TableStatus::new(&spec.table)
            },
        };
        out.push(status);
    }
    out
}

async fn read_one(ctx: &Context, table: &TableRef) -> Result<TableStatus, crate::jobs::JobError> {
    let (mut session, capture) = ctx.open(table).await?;
    let wm = session.read_watermark(table).await?;
    let progress = session.capture_progress(ctx.now()).await?;
    let ranges = match wm.as_ref().map(|w| &w.state) {
        Some(TableState::Loading(p)) if crate::jobs::full_load::split_count(&p.load_id) > 1 => {
            session.read_ranges(table, &p.load_id).await?
        }
        _ => Vec::new(),
    };
    let last_error = match wm {
        Some(_) => session.last_error(table).await?,
        None => None,
    };
    let mut status = TableStatus::of(
        table,
        wm.as_ref(),
        &ranges,
        Some((progress.max_lsn, progress.max_lsn_time)),
    );
    status.last_error = last_error.as_ref().map(|e| e.message.clone());
    status.last_error_at = last_error.map(|e| e.at);
    let ci = wm
        .as_ref()
        .and_then(|w| capture.find(&w.capture_instance))
        .unwrap_or_else(|| capture.target());
    status.mode = capture.mode(ci).ok();
    status
        .capture_instance
        .get_or_insert_with(|| ci.name.clone());
    Ok(status)
}

/// The JSON of `handler status --json`: `{"tables": [TableStatus…]}`.
pub fn to_json(tables: &[TableStatus]) -> String {
    serde_json::to_string_pretty(&serde_json::json!({ "tables": tables }))
        .expect("status serializes")
}

/// The terminal table: one line per table, then one indented line per range of a load in
/// progress, then errors.
pub fn render(tables: &[TableStatus]) -> String {
    let header = [
        "TABLE",
        "STATE",
        "MODE",
        "INSTANCE",
        "WINDOW END",
        "LAST LSN",
        "LAG",
        "PROGRESS",
    ];
    let mut rows: Vec<[String; 8]> = vec![header.map(str::to_string)];
    for t in tables {
        let progress = match (&t.full_load, &t.pending_window) {
            (Some(load), _) => format!(
                "{}/{} ranges, {} rows",
                load.ranges.iter().filter(|r| r.done).count(),
                load.ranges.len(),
                load.rows_done
            ),
            (None, Some(p)) => format!("pending to {}", p.to_lsn),
            (None, None) => "-".to_string(),
        };
        rows.push([
            t.table.clone(),
            t.state.to_string(),
            t.mode.map_or("-".into(), |m| m.as_str().to_string()),
            t.capture_instance.clone().unwrap_or_else(|| "-".into()),
            t.last_window_end
                .map_or("-".into(), |e| e.format("%Y-%m-%d %H:%M:%S").to_string()),
            t.last_lsn.map_or("-".into(), |l| l.to_string()),
            t.lag_seconds.map_or("-".into(), human_seconds),
            progress,
        ]);
    }
    let widths: Vec<usize> = (0..8)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for (i, row) in rows.iter().enumerate() {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
        let Some(t) = i.checked_sub(1).map(|i| &tables[i]) else {
            continue;
        };
        if let Some(load) = &t.full_load {
            for r in &load.ranges {
                out.push_str(&format!(
                    "  range {:>2}: {:>5} parts {:>12} rows  {}\n",
                    r.range,
                    r.parts_done,
                    r.rows_done,
                    if r.done { "done" } else { "loading" }
                ));
            }
        }
        if let Some(e) = &t.last_error {
            let at = t
                .last_error_at
                .map(|a| format!(" at {}", a.format("%Y-%m-%d %H:%M:%S")))
                .unwrap_or_default();
            out.push_str(&format!("  last error{at}: {e}\n"));
        }
        if let Some(e) = &t.error {
            out.push_str(&format!("  cannot read: {e}\n"));
        }
    }
    out
}

/// One line for `handler full-load` on a terminal: each table loading, its ranges done and
/// rows so far, e.g. `dbo.customers 2/4 ranges 1200000 rows | sales.orders ready`.
pub fn progress_line(tables: &[TableStatus]) -> String {
    tables
        .iter()
        .map(|t| match &t.full_load {
            Some(load) => format!(
                "{} {}/{} ranges {} rows",
                t.table,
                load.ranges.iter().filter(|r| r.done).count(),
                load.ranges.len(),
                load.rows_done
            ),
            None => format!("{} {}", t.table, t.state),
        })
        .collect::<Vec<_>>()
        .join(" | ")
}

/// `42s`, `5m 3s`, `2h 0m`, `3d 4h`.
fn human_seconds(s: i64) -> String {
    match s {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m {}s", s / 60, s % 60),
        s if s < 86_400 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        s => format!("{}d {}h", s / 86_400, s % 86_400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cdc::{FullLoadProgress, LsnRange, Window};
    use chrono::TimeZone;

    fn at(min: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 1, 12, min, 0).unwrap()
    }

    fn lsn(n: u8) -> Lsn {
        let mut b = [0u8; 10];
        b[9] = n;
        Lsn(b)
    }

    fn table() -> TableRef {
        TableRef::parse("dbo.customers").unwrap()
    }

    fn wm(state: TableState) -> Watermark {
        Watermark {
            table: table(),
            capture_instance: "dbo_customers".into(),
            last_lsn: lsn(5),
            last_window_end: at(0),
            state,
            rows_copied: 0,
            bytes_copied: 0,
            version: 3,
            updated_at: at(0),
        }
    }

    fn range(i: u32, rows: u64, done: bool) -> RangeProgress {
        RangeProgress {
            table: table(),
            load_id: "20261201120000000-r2".into(),
            range: i,
            after: None,
            upto: None,
            parts_done: (rows / 10) as u32,
            last_key: None,
            rows_done: rows,
            bytes_done: rows * 10,
            done,
            version: 1,
            updated_at: at(0),
        }
    }

    fn loading(load_id: &str, parts: u32, rows: u64) -> TableState {
        TableState::Loading(FullLoadProgress {
            load_id: load_id.into(),
            baseline_lsn: lsn(5),
            parts_done: parts,
            last_key: None,
            rows_done: rows,
        })
    }

    #[test]
    fn status_of_each_state() {
        let window = Window {
            range: LsnRange::after(lsn(5), lsn(9)).unwrap(),
            start: at(0),
            end: at(15),
            blob: "dbo/customers/x.csv".into(),
        };
        let max = Some((lsn(12), Some(at(20))));
        let split = [range(0, 30, true), range(1, 20, false)];
        type Case<'a> = (
            Option<Watermark>,
            &'a [RangeProgress],
            &'a str,
            Option<i64>,
            Option<(usize, u64)>,
        );
        let cases: Vec<Case> = vec![
            (None, &[], "not loaded", None, None),
            (Some(wm(TableState::Ready)), &[], "ready", Some(1200), None),
            (
                Some(wm(TableState::Pending(window))),
                &[],
                "pending",
                Some(1200),
                None,
            ),
            (
                Some(wm(loading("20261201120000000", 4, 40))),
                &[],
                "loading",
                None,
                Some((1, 40)),
            ),
            (
                Some(wm(loading("20261201120000000-r2", 0, 0))),
                &split,
                "loading",
                None,
                Some((2, 50)),
            ),
        ];
        for (wm, ranges, state, lag, load) in cases {
            let s = TableStatus::of(&table(), wm.as_ref(), ranges, max);
            assert_eq!(s.state, state);
            assert_eq!(s.lag_seconds, lag, "{state}");
            assert_eq!(s.max_lsn, Some(lsn(12)));
            assert_eq!(
                s.full_load.as_ref().map(|l| (l.ranges.len(), l.rows_done)),
                load,
                "{state}"
            );
            assert_eq!(s.pending_window.is_some(), state == "pending");
        }
    }

    /// The `--json` shape scripts rely on: these names, these types.
    #[test]
    fn json_shape_is_stable() {
        let s = TableStatus::of(
            &table(),
            Some(&wm(loading("20261201120000000-r2", 0, 0))),
            &[range(0, 30, true), range(1, 20, false)],
            Some((lsn(12), Some(at(20)))),
        );
        let json: serde_json::Value = serde_json::from_str(&to_json(&[s])).unwrap();
        let t = &json["tables"][0];
        let mut keys: Vec<&str> = t.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "captureInstance",
                "error",
                "fullLoad",
                "lagSeconds",
                "lastError",
                "lastErrorAt",
                "lastLsn",
                "lastWindowEnd",
                "maxLsn",
                "mode",
                "pendingWindow",
                "state",
                "table"
            ]
        );
        assert_eq!(t["state"], "loading");
        assert_eq!(t["lastLsn"], "0x00000000000000000005");
        assert_eq!(t["fullLoad"]["loadId"], "20261201120000000-r2");
        assert_eq!(t["fullLoad"]["rowsDone"], 50);
        assert_eq!(
            t["fullLoad"]["ranges"][1],
            serde_json::json!({"range": 1, "partsDone": 2, "rowsDone": 20, "done": false})
        );
    }

    #[test]
    fn terminal_table_lines_up_and_lists_ranges() {
        let tables = [
            TableStatus::of(
                &table(),
                Some(&wm(TableState::Ready)),
                &[],
                Some((lsn(12), Some(at(20)))),
            ),
            TableStatus::of(
                &TableRef::parse("sales.orders").unwrap(),
                Some(&wm(loading("20261201120000000-r2", 0, 0))),
                &[range(0, 30, true), range(1, 20, false)],
                None,
            ),
            TableStatus {
                error: Some("login failed".into()),
                ..TableStatus::new(&TableRef::parse("dbo.x").unwrap())
            },
        ];
        let text = render(&tables);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("TABLE          STATE"), "{text}");
        assert!(lines[1].starts_with("dbo.customers  ready"), "{text}");
        assert!(lines[1].contains("20m 0s"), "{text}");
        assert!(lines[2].contains("1/2 ranges, 50 rows"), "{text}");
        assert_eq!(lines[3], "  range  0:     3 parts           30 rows  done");
        assert_eq!(
            lines[4],
            "  range  1:     2 parts           20 rows  loading"
        );
        assert_eq!(lines[6], "  cannot read: login failed");
        // Columns line up: STATE starts at the same offset on every table line.
        let col = lines[0].find("STATE").unwrap();
        assert_eq!(&lines[1][col..col + 5], "ready");
    }

    #[test]
    fn progress_line_per_table() {
        let loading = TableStatus::of(
            &table(),
            Some(&wm(loading("20261201120000000-r2", 0, 0))),
            &[range(0, 30, true), range(1, 20, false)],
            None,
        );
        let ready = TableStatus::of(
            &TableRef::parse("sales.orders").unwrap(),
            Some(&wm(TableState::Ready)),
            &[],
            None,
        );
        let cases = [
            (vec![], ""),
            (vec![loading.clone()], "dbo.customers 1/2 ranges 50 rows"),
            (
                vec![loading, ready],
                "dbo.customers 1/2 ranges 50 rows | sales.orders ready",
            ),
        ];
        for (tables, want) in cases {
            assert_eq!(progress_line(&tables), want);
        }
    }

    #[test]
    fn human_durations() {
        for (s, want) in [
            (0, "0s"),
            (59, "59s"),
            (60, "1m 0s"),
            (3599, "59m 59s"),
            (7200, "2h 0m"),
            (90_000, "1d 1h"),
        ] {
            assert_eq!(human_seconds(s), want);
        }
    }
}

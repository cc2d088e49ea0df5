//! Window arithmetic: from a trigger time, a watermark and what the capture process reports,
//! decide which LSN range a run copies.
//!
//! Pure so that every edge (first run, empty window, capture lag, cleanup gap, retried
//! trigger) is a table row in a unit test rather than a scenario against a database.

use chrono::{DateTime, Utc};

use crate::cdc::{CaptureProgress, Lsn, LsnRange, Window};

/// What a run should do for one table, given its watermark and the trigger time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// The trigger time is not after the last window's end: a retry or a late overlapping
    /// run of a window already copied. Nothing to do.
    UpToDate,
    /// The window `(last window end, window_end]` holds no change to copy: move the window
    /// end (and the LSN to `to`, which is never below the watermark's) without a blob.
    Advance { window_end: DateTime<Utc>, to: Lsn },
    /// Copy this window (its range is never empty).
    Copy(Window),
}

/// The run's plan before counting: `Copy` means there are LSNs to look at, not yet that
/// they hold net changes (the caller counts and turns an empty count into `Advance`).
///
/// The range starts at `increment(last_lsn)` (CDC intervals are closed, so the previous
/// upper bound must not be read twice) and ends at the largest LSN at or before the trigger
/// time, capped by the capture process's max LSN. Without a mapping at or before the
/// trigger time nothing is captured for the window yet: `Advance` with the LSN kept.
pub fn plan(
    last_lsn: Lsn,
    last_window_end: DateTime<Utc>,
    trigger_time: DateTime<Utc>,
    progress: &CaptureProgress,
    blob: impl FnOnce() -> String,
) -> Plan {
    if trigger_time <= last_window_end {
        return Plan::UpToDate;
    }
    let to = progress.lsn_at.map(|at| at.min(progress.max_lsn));
    match to.and_then(|to| LsnRange::after(last_lsn, to)) {
        Some(range) => Plan::Copy(Window {
            range,
            start: last_window_end,
            end: trigger_time,
            blob: blob(),
        }),
        None => Plan::Advance {
            window_end: trigger_time,
            to: last_lsn,
        },
    }
}

/// True once the capture process has written everything committed up to `trigger_time`:
/// `map_lsn_to_time(get_max_lsn()) >= trigger_time`.
pub fn capture_has_passed(progress: &CaptureProgress, trigger_time: DateTime<Utc>) -> bool {
    progress
        .max_lsn_time
        .is_some_and(|time| time >= trigger_time)
}

/// How far capture trails the trigger time (zero when it has passed it); `None` when CDC
/// has no mapping at all yet.
pub fn capture_lag(
    progress: &CaptureProgress,
    trigger_time: DateTime<Utc>,
) -> Option<chrono::Duration> {
    progress
        .max_lsn_time
        .map(|time| (trigger_time - time).max(chrono::Duration::zero()))
}

/// The full load's baseline: the max LSN read before the scan, but never below the capture
/// instance's first LSN minus one, so that `increment(baseline) >= min_lsn` holds for a
/// capture instance enabled moments before the load (its changes start after the baseline).
pub fn baseline(max_lsn: Lsn, min_lsn: Lsn) -> Lsn {
    let floor = min_lsn.decrement().unwrap_or(Lsn::ZERO);
    max_lsn.max(floor)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(minute: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 21, 10, minute, 0).unwrap()
    }

    fn lsn(n: u128) -> Lsn {
        Lsn::from_u128(n)
    }

    fn progress(max: u128, max_time: Option<u32>, at: Option<u128>) -> CaptureProgress {
        CaptureProgress {
            max_lsn: lsn(max),
            max_lsn_time: max_time.map(t),
            lsn_at: at.map(lsn),
            server_utc_offset_minutes: 0,
        }
    }

    fn copy(from: u128, to: u128, start: u32, end: u32) -> Plan {
        Plan::Copy(Window {
            range: LsnRange::new(lsn(from), lsn(to)).unwrap(),
            start: t(start),
            end: t(end),
            blob: "blob".to_string(),
        })
    }

    fn advance(end: u32, to: u128) -> Plan {
        Plan::Advance {
            window_end: t(end),
            to: lsn(to),
        }
    }

    #[test]
    fn plan_table() {
        struct Case {
            name: &'static str,
            last_lsn: u128,
            last_end: u32,
            trigger: u32,
            progress: CaptureProgress,
            want: Plan,
        }
        let cases = [
            Case {
                name: "normal window",
                last_lsn: 100,
                last_end: 0,
                trigger: 15,
                progress: progress(300, Some(16), Some(250)),
                want: copy(101, 250, 0, 15),
            },
            Case {
                name: "mapping beyond max lsn is capped by max lsn",
                last_lsn: 100,
                last_end: 0,
                trigger: 15,
                progress: progress(200, Some(14), Some(250)),
                want: copy(101, 200, 0, 15),
            },
            Case {
                name: "one LSN after the watermark is a range of one",
                last_lsn: 100,
                last_end: 0,
                trigger: 15,
                progress: progress(101, Some(15), Some(101)),
                want: copy(101, 101, 0, 15),
            },
            Case {
                name: "no mapping at or before the trigger: advance, LSN kept",
                last_lsn: 100,
                last_end: 0,
                trigger: 15,
                progress: progress(100, None, None),
                want: advance(15, 100),
            },
            Case {
                name: "mapping at the watermark: nothing new",
                last_lsn: 100,
                last_end: 0,
                trigger: 15,
                progress: progress(300, Some(16), Some(100)),
                want: advance(15, 100),
            },
            Case {
                name: "mapping below the watermark never moves it back",
                last_lsn: 100,
                last_end: 0,
                trigger: 15,
                progress: progress(300, Some(16), Some(90)),
                want: advance(15, 100),
            },
            Case {
                name: "retried trigger equal to the last end",
                last_lsn: 100,
                last_end: 15,
                trigger: 15,
                progress: progress(300, Some(16), Some(250)),
                want: Plan::UpToDate,
            },
            Case {
                name: "late run older than the last end",
                last_lsn: 100,
                last_end: 30,
                trigger: 15,
                progress: progress(300, Some(31), Some(250)),
                want: Plan::UpToDate,
            },
            Case {
                name: "hours late: the window spans everything since the last end",
                last_lsn: 100,
                last_end: 0,
                trigger: 59,
                progress: progress(5000, Some(59), Some(4999)),
                want: copy(101, 4999, 0, 59),
            },
            Case {
                name: "the watermark at the largest LSN: nothing can follow",
                last_lsn: Lsn::MAX.to_u128(),
                last_end: 0,
                trigger: 15,
                progress: CaptureProgress {
                    max_lsn: Lsn::MAX,
                    max_lsn_time: Some(t(16)),
                    lsn_at: Some(Lsn::MAX),
                    server_utc_offset_minutes: 0,
                },
                want: Plan::Advance {
                    window_end: t(15),
                    to: Lsn::MAX,
                },
            },
        ];
        for case in cases {
            let got = plan(
                lsn(case.last_lsn),
                t(case.last_end),
                t(case.trigger),
                &case.progress,
                || "blob".to_string(),
            );
            assert_eq!(got, case.want, "{}", case.name);
        }
    }

    #[test]
    fn capture_passed_and_lag() {
        assert!(capture_has_passed(&progress(1, Some(15), None), t(15)));
        assert!(capture_has_passed(&progress(1, Some(16), None), t(15)));
        assert!(!capture_has_passed(&progress(1, Some(14), None), t(15)));
        assert!(!capture_has_passed(&progress(1, None, None), t(15)));
        assert_eq!(
            capture_lag(&progress(1, Some(13), None), t(15)),
            Some(chrono::Duration::minutes(2))
        );
        assert_eq!(
            capture_lag(&progress(1, Some(16), None), t(15)),
            Some(chrono::Duration::zero())
        );
        assert_eq!(capture_lag(&progress(1, None, None), t(15)), None);
    }

    #[test]
    fn baseline_table() {
        assert_eq!(baseline(lsn(500), lsn(100)), lsn(500));
        assert_eq!(
            baseline(lsn(50), lsn(100)),
            lsn(99),
            "instance newer than max lsn"
        );
        assert_eq!(baseline(Lsn::ZERO, Lsn::ZERO), Lsn::ZERO);
    }
}

//! Window arithmetic: from a trigger time, a watermark and what the capture process reports,
//! decide which LSN range a run copies.
//!
//! Pure so that every edge (first run, empty window, capture lag, cleanup gap, retried
//! trigger) is a table row in a unit test rather than a scenario against a database.

use chrono::{DateTime, Utc};

use crate::cdc::{CaptureProgress, Lsn, LsnRange, ScanMark, Window};

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

/// The run's plan before streaming: `Copy` means there are LSNs to look at, not yet that
/// they hold net changes (the caller streams them, and advances without a blob when no row
/// comes).
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

/// The capture process writes a dummy `lsn_time_mapping` row at most this often when it finds
/// nothing to capture (`cdc.sp_ins_dummy_lsn_time_mapping`, `@dummy_entry_interval = 300`), so
/// a healthy idle capture's max LSN time trails the clock by up to this much.
pub const IDLE_MAPPING_INTERVAL: chrono::Duration = chrono::Duration::seconds(300);

/// True once the capture process has written everything committed up to `trigger_time`.
///
/// Either of two facts shows it:
/// - `map_lsn_to_time(get_max_lsn()) >= trigger_time`: capture has written a commit (or a
///   dummy mapping row) at or after the trigger time, and it captures in commit order;
/// - a completed log scan session that found nothing to capture began after the trigger
///   time (`drained_since`): a transaction committed before the trigger time has its commit
///   record in the log before that scan began, and the scan found nothing left to capture,
///   so the transaction was captured already.
///
/// `drained_since` unknown (`None`) is not evidence either way: the caller waits as before.
/// Neither fact being wrong can lose a change, only move it: the window's lower bound is the
/// watermark LSN, so a change captured late lands in the next window.
pub fn capture_has_passed(progress: &CaptureProgress, trigger_time: DateTime<Utc>) -> bool {
    progress
        .max_lsn_time
        .is_some_and(|time| time >= trigger_time)
        || progress
            .drained_since
            .is_some_and(|scan| scan > trigger_time)
}

/// What a run waiting for capture remembers between its polls, so that an idle capture job
/// is seen to pass the trigger time even if its folded row of empty scans keeps the first
/// scan's `start_time` (Microsoft's pages say only that "the empty_scan_count in the last
/// existing row is incremented"; then `drained_since` stays as old as the idle period).
///
/// The rule: the reference is the scan mark of the run's first poll whose `server_now` is at
/// or after the trigger time T. A later poll whose mark is the same row with
/// `empty_scans >= reference + 2` shows capture has passed T. Why: the count of a row grows
/// by one when an empty scan ends, and the capture job's scans run one after another. At
/// the reference poll the view was read after `server_now >= T` (the batch reads the clock
/// first) and showed `c`; so scan `c + 1` ended after T, and scan `c + 2` began after scan
/// `c + 1` ended, i.e. after T, and found nothing to capture: every transaction committed
/// at or before T has its commit record in the log before that scan began, so it was
/// captured already (the argument of [`capture_has_passed`]). One increment is not enough:
/// the scan that ended just after the reference poll may have begun before T.
///
/// A different newest session (a scan that captured something adds a row) or a smaller
/// count (the view was reset by a restart or failover) makes the current mark the
/// reference: it too was taken after T. An unknown mark (`None`: no permission, empty view,
/// an errored row) is never evidence; it keeps the reference. Nothing here can lose a
/// change, only move it: the window's lower bound is the watermark LSN.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanWatch {
    reference: Option<ScanMark>,
}

impl ScanWatch {
    /// Takes one poll's progress; true once capture has passed `trigger_time`, by
    /// [`capture_has_passed`] or by the scan marks.
    pub fn passed(&mut self, progress: &CaptureProgress, trigger_time: DateTime<Utc>) -> bool {
        let scanned = self.scanned_after(progress, trigger_time);
        scanned || capture_has_passed(progress, trigger_time)
    }

    /// [`next_poll`], or a second once the newest row has counted an empty scan since the
    /// reference: the job is seen scanning even when its row's times do not move, and the
    /// scan that ends the wait is due within its polling interval. A stopped job's count
    /// never moves, so it is still asked every `poll`.
    pub fn next_poll(
        &self,
        progress: &CaptureProgress,
        trigger_time: DateTime<Utc>,
        poll: std::time::Duration,
    ) -> std::time::Duration {
        let counted = match (self.reference, progress.newest_scan) {
            (Some(first), Some(mark)) => {
                first.session_id == mark.session_id && mark.empty_scans > first.empty_scans
            }
            _ => false,
        };
        let pause = next_poll(progress, trigger_time, poll);
        if counted {
            pause.min(std::time::Duration::from_secs(1))
        } else {
            pause
        }
    }

    fn scanned_after(&mut self, progress: &CaptureProgress, trigger_time: DateTime<Utc>) -> bool {
        let Some(mark) = progress.newest_scan else {
            return false;
        };
        if progress.server_now < trigger_time {
            return false;
        }
        match self.reference {
            Some(first)
                if first.session_id == mark.session_id && mark.empty_scans >= first.empty_scans =>
            {
                i64::from(mark.empty_scans) >= i64::from(first.empty_scans) + 2
            }
            _ => {
                self.reference = Some(mark);
                false
            }
        }
    }
}

/// How long a run waiting for capture pauses before asking again: `poll`
/// (`CDC_CAPTURE_POLL_SECONDS`), or a second while the capture job is seen scanning (a
/// drained log scan within [`SCANNING_RECENTLY`] of the trigger time): its next scan is due
/// within its polling interval (5 s by default), and asking is one cheap statement. A job
/// whose last drained scan is older is not scanning; asking every second would only add
/// statements.
pub fn next_poll(
    progress: &CaptureProgress,
    trigger_time: DateTime<Utc>,
    poll: std::time::Duration,
) -> std::time::Duration {
    let scanning = progress
        .drained_since
        .is_some_and(|scan| scan >= trigger_time - SCANNING_RECENTLY);
    if scanning {
        poll.min(std::time::Duration::from_secs(1))
    } else {
        poll
    }
}

/// A capture job that scanned this shortly before the trigger time is taken to be running.
/// Longer than Azure SQL Database's 20 s scheduler interval and SQL Server's usual polling.
pub const SCANNING_RECENTLY: chrono::Duration = chrono::Duration::seconds(60);

/// How far capture trails the trigger time when that is more than a healthy capture job can
/// explain (a dummy mapping row every [`IDLE_MAPPING_INTERVAL`] plus the run's `wait`), and
/// no drained log scan shows it passed: the capture job has stopped (SQL Server Agent down,
/// the job stopped, a paused serverless database). `None` when capture looks healthy or has
/// no mapping at all yet.
pub fn stalled_capture_lag(
    progress: &CaptureProgress,
    trigger_time: DateTime<Utc>,
    wait: std::time::Duration,
) -> Option<chrono::Duration> {
    if capture_has_passed(progress, trigger_time) {
        return None;
    }
    let allowed = IDLE_MAPPING_INTERVAL + chrono::Duration::from_std(wait).ok()?;
    capture_lag(progress, trigger_time).filter(|lag| *lag > allowed)
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
            drained_since: None,
            newest_scan: None,
            server_now: t(0),
        }
    }

    /// Capture progress whose max LSN maps to `max_time` and whose newest drained log scan
    /// began at `drained` (times in seconds after 10:00).
    fn scanned(max_time: Option<i64>, drained: Option<i64>) -> CaptureProgress {
        let at = |s: i64| t(0) + chrono::Duration::seconds(s);
        CaptureProgress {
            max_lsn_time: max_time.map(at),
            drained_since: drained.map(at),
            ..progress(1, None, None)
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
                    drained_since: None,
                    newest_scan: None,
                    server_now: t(16),
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

    /// The trigger is 10:15:00 (900 s); times are seconds after 10:00.
    #[test]
    fn a_drained_log_scan_after_the_trigger_passes_it() {
        let cases = [
            (
                "idle, mapping 4 min old, no scan signal",
                Some(660),
                None,
                false,
            ),
            (
                "idle, a drained scan began 1 s after",
                Some(660),
                Some(901),
                true,
            ),
            (
                "a drained scan began exactly at the trigger",
                Some(660),
                Some(900),
                false,
            ),
            (
                "the last drained scan began before",
                Some(660),
                Some(899),
                false,
            ),
            (
                "no mapping yet, a drained scan after",
                None,
                Some(905),
                true,
            ),
            ("mapping passed, scan signal unknown", Some(900), None, true),
            ("mapping passed, old scan", Some(930), Some(100), true),
        ];
        for (name, max_time, drained, want) in cases {
            assert_eq!(
                capture_has_passed(&scanned(max_time, drained), t(15)),
                want,
                "{name}"
            );
        }
    }

    /// One poll as the watch sees it: the server's clock (seconds after 10:00) and the newest
    /// scan row `(session_id, empty_scan_count)`; the mapping is 4 min old and the drained
    /// scan hours old throughout (the folded row keeps its first scan's times).
    fn poll(now: i64, mark: Option<(i32, i32)>) -> CaptureProgress {
        CaptureProgress {
            newest_scan: mark.map(|(session_id, empty_scans)| ScanMark {
                session_id,
                empty_scans,
            }),
            server_now: t(0) + chrono::Duration::seconds(now),
            ..scanned(Some(660), Some(-7200))
        }
    }

    /// The trigger is 10:15:00 (900 s). Each case is a run's polls in order, with whether
    /// the run may go on after each.
    #[test]
    fn two_more_empty_scans_of_the_same_row_after_the_trigger_pass_it() {
        type Polls = &'static [(i64, Option<(i32, i32)>, bool)];
        let cases: &[(&str, Polls)] = &[
            (
                "the same row, two more empty scans",
                &[
                    (900, Some((7, 40)), false),
                    (905, Some((7, 41)), false),
                    (910, Some((7, 42)), true),
                ],
            ),
            (
                "one more is not enough: that scan may have begun before the trigger",
                &[
                    (901, Some((7, 40)), false),
                    (906, Some((7, 41)), false),
                    (907, Some((7, 41)), false),
                ],
            ),
            (
                "two at once between two polls",
                &[(902, Some((7, 40)), false), (913, Some((7, 42)), true)],
            ),
            (
                "the first poll before the trigger (server clock behind) is no reference",
                &[
                    (898, Some((7, 40)), false),
                    (903, Some((7, 41)), false),
                    (908, Some((7, 42)), false),
                    (913, Some((7, 43)), true),
                ],
            ),
            (
                "a scan that captured something adds a row: the reference moves to it",
                &[
                    (900, Some((7, 40)), false),
                    (905, Some((8, 0)), false),
                    (910, Some((9, 1)), false),
                    (915, Some((9, 2)), false),
                    (920, Some((9, 3)), true),
                ],
            ),
            (
                "a reset view (smaller count) moves the reference",
                &[
                    (900, Some((7, 40)), false),
                    (905, Some((7, 1)), false),
                    (910, Some((7, 2)), false),
                    (915, Some((7, 3)), true),
                ],
            ),
            (
                "unknown marks are never evidence, and keep the reference",
                &[
                    (900, None, false),
                    (905, Some((7, 40)), false),
                    (910, None, false),
                    (915, Some((7, 42)), true),
                ],
            ),
            (
                "the view unreadable throughout",
                &[(900, None, false), (905, None, false), (910, None, false)],
            ),
            (
                "a capture job that stopped: the count does not move",
                &[
                    (900, Some((7, 40)), false),
                    (930, Some((7, 40)), false),
                    (960, Some((7, 40)), false),
                ],
            ),
            (
                "a row capturing changes (no empty scans) never passes by marks",
                &[(900, Some((8, 0)), false), (905, Some((8, 0)), false)],
            ),
        ];
        for (name, polls) in cases {
            let mut watch = ScanWatch::default();
            for (i, (now, mark, want)) in polls.iter().enumerate() {
                assert_eq!(
                    watch.passed(&poll(*now, *mark), t(15)),
                    *want,
                    "{name}: poll {i}"
                );
            }
        }
    }

    #[test]
    fn the_watch_polls_quickly_once_it_has_counted_an_empty_scan() {
        let five = std::time::Duration::from_secs(5);
        let one = std::time::Duration::from_secs(1);
        // (the run's polls: server clock, newest row, the pause after it)
        let cases = [
            (
                "one empty scan counted: the next is due within the job's interval",
                vec![(900, Some((7, 40)), five), (905, Some((7, 41)), one)],
            ),
            (
                "a stopped job's count does not move",
                vec![(900, Some((7, 40)), five), (905, Some((7, 40)), five)],
            ),
            (
                "a new row is a new reference, not a counted scan",
                vec![(900, Some((7, 40)), five), (905, Some((8, 0)), five)],
            ),
            ("unknown", vec![(900, None, five), (905, None, five)]),
        ];
        for (name, polls) in cases {
            let mut watch = ScanWatch::default();
            for (i, (now, mark, want)) in polls.iter().enumerate() {
                let progress = poll(*now, *mark);
                assert!(!watch.passed(&progress, t(15)), "{name}: poll {i}");
                assert_eq!(
                    watch.next_poll(&progress, t(15), five),
                    *want,
                    "{name}: poll {i}"
                );
            }
        }
    }

    #[test]
    fn the_watch_keeps_the_other_signals() {
        let mut watch = ScanWatch::default();
        assert!(
            watch.passed(&scanned(Some(900), None), t(15)),
            "mapping passed"
        );
        let mut watch = ScanWatch::default();
        assert!(
            watch.passed(&scanned(Some(660), Some(901)), t(15)),
            "drained scan after"
        );
        let mut watch = ScanWatch::default();
        assert!(!watch.passed(&scanned(Some(660), Some(899)), t(15)));
    }

    #[test]
    fn polls_are_quick_only_while_the_capture_job_is_seen_scanning() {
        let five = std::time::Duration::from_secs(5);
        let one = std::time::Duration::from_secs(1);
        let cases = [
            ("view unreadable", None, five),
            ("scanned 3 s before the trigger", Some(897), one),
            ("scanned exactly a minute before", Some(840), one),
            ("last scan an hour before: not scanning", Some(-2700), five),
        ];
        for (name, drained, want) in cases {
            assert_eq!(
                next_poll(&scanned(Some(600), drained), t(15), five),
                want,
                "{name}"
            );
        }
        let half = std::time::Duration::from_millis(500);
        assert_eq!(
            next_poll(&scanned(None, Some(899)), t(15), half),
            half,
            "never slower"
        );
    }

    #[test]
    fn a_stalled_capture_is_told_from_an_idle_one() {
        let wait = std::time::Duration::from_secs(120);
        let minutes = |m: i64| Some(chrono::Duration::minutes(m));
        let cases = [
            (
                "dummy row 4 min before the trigger: idle",
                Some(660),
                None,
                None,
            ),
            (
                "dummy row 7 min before: 300 s + 120 s exactly",
                Some(480),
                None,
                None,
            ),
            (
                "8 min behind, no scan signal: stopped",
                Some(420),
                None,
                minutes(8),
            ),
            (
                "an hour behind: stopped",
                Some(900 - 3600),
                None,
                minutes(60),
            ),
            (
                "an hour behind but a drained scan after: idle",
                Some(-2700),
                Some(910),
                None,
            ),
            (
                "an hour behind, last drained scan before: stopped",
                Some(-2700),
                Some(100),
                minutes(60),
            ),
            ("no mapping at all", None, None, None),
            ("capture passed", Some(905), None, None),
        ];
        for (name, max_time, drained, want) in cases {
            assert_eq!(
                stalled_capture_lag(&scanned(max_time, drained), t(15), wait),
                want,
                "{name}"
            );
        }
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

//! Which capture instance reads which LSNs: the switch through a schema change.
//!
//! An existing capture instance does not follow DDL (new columns are not captured, dropped
//! ones come back NULL), so Microsoft's way through a schema change is a second instance
//! created after it: "a transition from one to the other can be accomplished without loss of
//! change data" while both exist. The newer instance holds every change from its start LSN
//! on, the older one every change before it, so one LSN splits the stream between them and a
//! watermark only ever needs to know which instance reads its next LSN. The rules are pure
//! and live here so that the jobs (which do the I/O) and their tests agree on them.

use super::{CaptureInstance, CdcError, ChangeMode, Lsn, LsnRange, TableRef};

/// What reads a window `[from, to]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route<'a> {
    /// One instance reads all of it.
    One(&'a CaptureInstance),
    /// `old` reads `[from, at - 1]`, then `new` reads `[at, to]`; `at` is `new`'s start LSN.
    Switch {
        old: &'a CaptureInstance,
        new: &'a CaptureInstance,
        at: Lsn,
    },
}

/// Why no instance can read a window.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error(transparent)]
    Cdc(#[from] CdcError),
    /// The watermark's instance is gone and the one that remains starts after the next LSN
    /// to copy: the changes in between are in no instance any more.
    #[error(
        "{table} was being copied from capture instance {recorded}, which no longer exists, and \
         capture instance {next} only starts at {start}: the changes from {from} up to it are in \
         no capture instance and are lost. The old instance was disabled before the copier \
         switched (wait for the switch to be logged before disabling it); run FullLoad for \
         {table} with \"reset\": true to re-baseline"
    )]
    Gap {
        table: TableRef,
        recorded: String,
        next: String,
        from: Lsn,
        start: Lsn,
    },
}

/// The instance to read from now on: the one `CDC_TABLES` pins, or else the newest the
/// capture process has recognised (an instance created a moment ago has no start LSN yet and
/// cannot be read). `instances` is oldest first, as [`CdcSession::capture_instances`]
/// returns them.
///
/// [`CdcSession::capture_instances`]: super::CdcSession::capture_instances
pub fn target<'a>(
    table: &TableRef,
    instances: &'a [CaptureInstance],
    pinned: Option<&str>,
) -> Result<&'a CaptureInstance, CdcError> {
    let found = match pinned {
        Some(name) => instances.iter().find(|i| i.name == name),
        None => instances
            .iter()
            .rev()
            .find(|i| i.start_lsn.is_some())
            .or(instances.last()),
    };
    found.ok_or_else(|| CdcError::NoCaptureInstance {
        table: table.clone(),
        wanted: pinned.map(str::to_string),
    })
}

/// What reads `[from, to]` for a watermark whose row names instance `recorded`: the target
/// once its start LSN is reached, `recorded` before it, and both, split at the start LSN, for
/// a window that spans it. The target must have a start LSN (see [`target`]).
pub fn route<'a>(
    instances: &'a [CaptureInstance],
    recorded: &str,
    target: &'a CaptureInstance,
    range: LsnRange,
) -> Result<Route<'a>, RouteError> {
    if target.name == recorded {
        return Ok(Route::One(target));
    }
    let start = target.start_lsn.unwrap_or(Lsn::ZERO);
    if start <= range.from() {
        return Ok(Route::One(target));
    }
    let Some(old) = instances.iter().find(|i| i.name == recorded) else {
        return Err(RouteError::Gap {
            table: target.table.clone(),
            recorded: recorded.to_string(),
            next: target.name.clone(),
            from: range.from(),
            start,
        });
    };
    if start > range.to() {
        return Ok(Route::One(old));
    }
    Ok(Route::Switch {
        old,
        new: target,
        at: start,
    })
}

/// The instance the watermark names once every change up to `last_lsn` is copied: the one
/// that reads `last_lsn + 1`. This is how a switch is recorded.
pub fn reader_after<'a>(recorded: &'a str, target: &'a CaptureInstance, last_lsn: Lsn) -> &'a str {
    match target.start_lsn {
        Some(start) if last_lsn.increment().is_none_or(|next| start <= next) => &target.name,
        _ => recorded,
    }
}

/// How `ci` is read: as configured, or net changes when the instance has them.
pub fn mode(ci: &CaptureInstance, configured: Option<ChangeMode>) -> Result<ChangeMode, CdcError> {
    match configured {
        Some(ChangeMode::Net) if !ci.supports_net_changes => Err(CdcError::NoNetChanges {
            table: ci.table.clone(),
            capture_instance: ci.name.clone(),
        }),
        Some(mode) => Ok(mode),
        None if ci.supports_net_changes => Ok(ChangeMode::Net),
        None => Ok(ChangeMode::All),
    }
}

/// The warning for DDL the instance being read saw but does not follow, when no newer
/// instance exists to switch to; `None` otherwise.
pub fn ddl_warning(instances: &[CaptureInstance], reading: &CaptureInstance) -> Option<String> {
    let newest = instances.last()?;
    if newest.name != reading.name {
        return None; // a newer instance exists: the switch is coming
    }
    let last = reading.ddl.last()?;
    let command: String = last.command.chars().take(200).collect();
    let more = if instances.len() >= 2 {
        format!(
            " A table has at most two capture instances: disable {} first \
             (sys.sp_cdc_disable_table @capture_instance = N'{}'), once nothing reads it.",
            instances[0].name, instances[0].name
        )
    } else {
        String::new()
    };
    Some(format!(
        "{} changed after capture instance {} was created ({} DDL statement(s) in \
         cdc.ddl_history, the last at {} LSN {}: {command}); the instance does not capture new \
         columns and returns dropped ones as NULL.{more} Create a second capture instance: EXEC \
         sys.sp_cdc_enable_table @source_schema = N'{}', @source_name = N'{}', \
         @capture_instance = N'{}_v2', @role_name = NULL{}; the copier switches to it by itself \
         at its start LSN and logs the switch, after which {} can be disabled",
        reading.table,
        reading.name,
        reading.ddl.len(),
        last.time,
        last.lsn,
        reading.table.schema,
        reading.table.table,
        reading.name,
        if reading.supports_net_changes {
            ", @supports_net_changes = 1"
        } else {
            ""
        },
        reading.name,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cdc::{DdlEvent, KeyColumn, KeyType};

    fn table() -> TableRef {
        TableRef::parse("dbo.customers").unwrap()
    }

    fn lsn(n: u128) -> Lsn {
        Lsn::from_u128(n)
    }

    fn instance(name: &str, start: Option<u128>) -> CaptureInstance {
        CaptureInstance {
            table: table(),
            name: name.into(),
            supports_net_changes: true,
            min_lsn: start.map_or(Lsn::ZERO, lsn),
            start_lsn: start.map(lsn),
            key_columns: vec![KeyColumn::new("id", KeyType::Int)],
            columns: vec![crate::cdc::ColumnDesc::new(
                "id",
                crate::cdc::ColumnType::Int,
                false,
            )],
            ddl: Vec::new(),
        }
    }

    fn range(from: u128, to: u128) -> LsnRange {
        LsnRange::new(lsn(from), lsn(to)).unwrap()
    }

    /// Which instance reads a window, for a watermark on `v1` and a `v2` starting at 100.
    #[test]
    fn windows_before_across_and_after_the_start_lsn() {
        let both = [instance("v1", Some(10)), instance("v2", Some(100))];
        let target = target(&table(), &both, None).unwrap();
        assert_eq!(target.name, "v2");
        let cases = [
            ((20, 99), "v1", None),
            ((20, 100), "v1", Some(100)),
            ((20, 500), "v1", Some(100)),
            ((100, 500), "v2", None),
            ((150, 500), "v2", None),
        ];
        for ((from, to), first, split) in cases {
            match route(&both, "v1", target, range(from, to)).unwrap() {
                Route::One(ci) => {
                    assert_eq!((ci.name.as_str(), None), (first, split), "{from}..{to}")
                }
                Route::Switch { old, new, at } => {
                    assert_eq!(
                        (old.name.as_str(), Some(at)),
                        (first, split.map(lsn)),
                        "{from}..{to}"
                    );
                    assert_eq!(new.name, "v2");
                }
            }
        }
        // A watermark already on v2 stays there.
        assert_eq!(
            route(&both, "v2", target, range(20, 500)).unwrap(),
            Route::One(&both[1])
        );
    }

    /// The switch is recorded by the first advance that reaches the new start LSN.
    #[test]
    fn the_watermark_names_the_instance_of_its_next_lsn() {
        let v2 = instance("v2", Some(100));
        assert_eq!(reader_after("v1", &v2, lsn(98)), "v1");
        assert_eq!(reader_after("v1", &v2, lsn(99)), "v2");
        assert_eq!(reader_after("v1", &v2, lsn(400)), "v2");
        assert_eq!(reader_after("v1", &instance("v2", None), lsn(400)), "v1");
    }

    /// A newer instance the capture process has not recognised yet is not read; a pinned
    /// one is, whatever its age; nothing at all is an error naming the table.
    #[test]
    fn the_target_is_pinned_or_the_newest_recognised() {
        let fresh = [instance("v1", Some(10)), instance("v2", None)];
        assert_eq!(target(&table(), &fresh, None).unwrap().name, "v1");
        let both = [instance("v1", Some(10)), instance("v2", Some(100))];
        assert_eq!(target(&table(), &both, Some("v1")).unwrap().name, "v1");
        assert!(matches!(
            target(&table(), &both, Some("v3")),
            Err(CdcError::NoCaptureInstance { wanted: Some(w), .. }) if w == "v3"
        ));
        let only_new = [instance("v1", None)];
        assert_eq!(target(&table(), &only_new, None).unwrap().name, "v1");
    }

    /// An old instance disabled before the switch leaves a gap that is reported, never
    /// skipped; disabled after it (the window starts at or past the new start), nothing is lost.
    #[test]
    fn an_old_instance_disabled_too_early_is_a_gap() {
        let only_v2 = [instance("v2", Some(100))];
        let target = &only_v2[0];
        let err = route(&only_v2, "v1", target, range(20, 500)).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, RouteError::Gap { .. }), "{text}");
        for word in ["v1", "v2", "no longer exists", "reset"] {
            assert!(text.contains(word), "{word:?} missing from {text}");
        }
        assert_eq!(
            route(&only_v2, "v1", target, range(100, 500)).unwrap(),
            Route::One(target)
        );
    }

    #[test]
    fn the_mode_follows_the_instance_unless_configured() {
        let net = instance("v1", Some(1));
        let keyless = CaptureInstance {
            supports_net_changes: false,
            key_columns: Vec::new(),
            ..instance("v1", Some(1))
        };
        assert_eq!(mode(&net, None).unwrap(), ChangeMode::Net);
        assert_eq!(mode(&net, Some(ChangeMode::All)).unwrap(), ChangeMode::All);
        assert_eq!(mode(&keyless, None).unwrap(), ChangeMode::All);
        assert!(matches!(
            mode(&keyless, Some(ChangeMode::Net)),
            Err(CdcError::NoNetChanges { .. })
        ));
    }

    #[test]
    fn ddl_is_reported_until_a_newer_instance_exists() {
        let mut v1 = instance("dbo_customers", Some(10));
        assert_eq!(ddl_warning(std::slice::from_ref(&v1), &v1), None);
        v1.ddl.push(DdlEvent {
            command: "ALTER TABLE dbo.customers ADD email nvarchar(200) NULL".into(),
            lsn: lsn(50),
            time: chrono::NaiveDate::from_ymd_opt(2026, 12, 1)
                .unwrap()
                .and_hms_opt(12, 0, 0)
                .unwrap(),
        });
        let text = ddl_warning(std::slice::from_ref(&v1), &v1).unwrap();
        for word in [
            "dbo.customers",
            "ADD email",
            "sys.sp_cdc_enable_table",
            "@capture_instance = N'dbo_customers_v2'",
            "switches to it by itself",
        ] {
            assert!(text.contains(word), "{word:?} missing from {text}");
        }
        let v2 = instance("dbo_customers_v2", None);
        assert_eq!(ddl_warning(&[v1.clone(), v2], &v1), None);
    }
}

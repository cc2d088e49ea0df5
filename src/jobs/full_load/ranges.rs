//! Key ranges of a parallel full load: how a table's key space is cut into ranges that
//! never overlap and never leave a gap, whatever the key distribution.
//!
//! A range is `after < key <= upto` over the full (possibly composite) key, each bound
//! optional, compared by the server in index order (`sql::SCAN_AFTER`'s predicates). The
//! boundaries are keys of a server-ordered sample (`sql::SAMPLE_KEYS`), so they are
//! non-decreasing in exactly the order the server compares with; consecutive ranges share
//! their boundary (one's `upto` is the next one's `after`) and the first and last are open.
//! That alone makes every key fall in exactly one range: how good the sample is decides only
//! how even the ranges are, never whether a row is copied once. Stale or skewed samples (a
//! hot key prefix, a sample smaller than the range count, boundary keys deleted since) give
//! uneven or empty ranges, which are harmless.
//!
//! Why a sample and not the alternatives (docs/scale-out.md, "Parallel full load"): the
//! statistics histogram (`sys.dm_db_stats_histogram`) is free but covers the leading key
//! column only, returns `sql_variant` and needs statistics permissions; `NTILE` over the key
//! reads the whole index; min/max splits only integer and date keys, evenly only when they
//! are dense.

use std::cmp::Ordering;

use crate::cdc::Value;

/// Sample keys fetched per range: enough for even ranges, few enough to stay one small
/// round trip (a page-level sample returns whole pages, so the real count varies).
pub const SAMPLE_ROWS_PER_RANGE: u64 = 200;

/// One key range: `after < key <= upto`; `None` is unbounded.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct KeyRange {
    /// Exclusive lower bound: the previous range's `upto`.
    pub after: Option<Vec<Value>>,
    /// Inclusive upper bound.
    pub upto: Option<Vec<Value>>,
}

impl KeyRange {
    /// Whether `key` is in the range under `cmp`, the server's key order: the meaning of
    /// the range predicate the scan sends, for the model and the tests.
    pub fn contains(&self, key: &[Value], cmp: impl Fn(&[Value], &[Value]) -> Ordering) -> bool {
        let above = self
            .after
            .as_deref()
            .is_none_or(|a| cmp(key, a) == Ordering::Greater);
        let below = self
            .upto
            .as_deref()
            .is_none_or(|u| cmp(key, u) != Ordering::Greater);
        above && below
    }
}

/// How many ranges a table of about `rows` rows gets: one per `min_rows` rows, at least one,
/// at most `max_ranges`.
pub fn count(rows: u64, max_ranges: u32, min_rows: u64) -> u32 {
    let by_size = rows / min_rows.max(1);
    u32::try_from(by_size)
        .unwrap_or(u32::MAX)
        .clamp(1, max_ranges.max(1))
}

/// The `TABLESAMPLE SYSTEM` percentage that returns about [`SAMPLE_ROWS_PER_RANGE`] keys per
/// range from a table of about `rows` rows, in (0, 100].
pub fn sample_percent(rows: u64, ranges: u32) -> f64 {
    let wanted = SAMPLE_ROWS_PER_RANGE * u64::from(ranges);
    if rows <= wanted {
        return 100.0;
    }
    // Rounded up to 4 decimals, the precision the statement text carries.
    let percent = (wanted as f64 * 100.0 / rows as f64 * 10_000.0).ceil() / 10_000.0;
    percent.clamp(0.0001, 100.0)
}

/// Cuts the key space into at most `ranges` ranges at evenly spaced keys of `sample`, which
/// must be in the server's key order (duplicates allowed). Fewer ranges when the sample has
/// fewer distinct keys; one unbounded range for an empty sample or `ranges <= 1`.
pub fn split(sample: &[Vec<Value>], ranges: u32) -> Vec<KeyRange> {
    let n = sample.len();
    let mut boundaries: Vec<&Vec<Value>> = Vec::new();
    for i in 1..usize::try_from(ranges).unwrap_or(usize::MAX) {
        let at = i * n / ranges as usize;
        if at == 0 {
            continue;
        }
        let key = &sample[at - 1];
        if boundaries.last() != Some(&key) {
            boundaries.push(key);
        }
    }
    let mut out = Vec::with_capacity(boundaries.len() + 1);
    let mut after = None;
    for key in boundaries {
        out.push(KeyRange {
            after: after.clone(),
            upto: Some(key.clone()),
        });
        after = Some(key.clone());
    }
    out.push(KeyRange { after, upto: None });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn int(keys: &[i64]) -> Vec<Value> {
        keys.iter().map(|&k| Value::Int(k)).collect()
    }

    /// The tests' server order: integers and texts, compared column by column (texts
    /// case-insensitively, as a `_CI_` collation would).
    fn order(a: &[Value], b: &[Value]) -> Ordering {
        for (x, y) in a.iter().zip(b) {
            let o = match (x, y) {
                (Value::Int(x), Value::Int(y)) => x.cmp(y),
                (Value::Text(x), Value::Text(y)) => x.to_lowercase().cmp(&y.to_lowercase()),
                _ => panic!("test keys are ints and texts"),
            };
            if o != Ordering::Equal {
                return o;
            }
        }
        Ordering::Equal
    }

    #[test]
    fn ranges_by_size() {
        let cases = [
            // rows, max, min_rows, ranges
            (0, 4, 1_000_000, 1),
            (999_999, 4, 1_000_000, 1),
            (2_500_000, 4, 1_000_000, 2),
            (20_000_000, 4, 1_000_000, 4),
            (20_000_000, 1, 1_000_000, 1),
            (20_000_000, 0, 1_000_000, 1),
            (10, 8, 0, 8),
        ];
        for (rows, max, min_rows, want) in cases {
            assert_eq!(
                count(rows, max, min_rows),
                want,
                "{rows} rows, max {max}, min {min_rows}"
            );
        }
    }

    #[test]
    fn sample_percent_asks_for_about_200_keys_per_range() {
        let cases = [
            (0, 4, 100.0),
            (800, 4, 100.0),
            (20_000_000, 4, 0.004),
            (20_000_000, 1, 0.001),
            (3_000_000_000, 2, 0.0001),
            (7_000, 4, 11.4286),
        ];
        for (rows, ranges, want) in cases {
            assert_eq!(
                sample_percent(rows, ranges),
                want,
                "{rows} rows, {ranges} ranges"
            );
        }
    }

    #[test]
    fn splits_at_evenly_spaced_sample_keys() {
        let sample: Vec<Vec<Value>> = (1..=8).map(|k| int(&[k])).collect();
        type Bounds = Vec<(Option<i64>, Option<i64>)>;
        let cases: [(&[Vec<Value>], u32, Bounds); 6] = [
            (&sample, 1, vec![(None, None)]),
            (&[], 4, vec![(None, None)]),
            (
                &sample,
                4,
                vec![
                    (None, Some(2)),
                    (Some(2), Some(4)),
                    (Some(4), Some(6)),
                    (Some(6), None),
                ],
            ),
            (&sample[..1], 4, vec![(None, None)]),
            (&sample[..2], 4, vec![(None, Some(1)), (Some(1), None)]),
            (
                &sample,
                3,
                vec![(None, Some(2)), (Some(2), Some(5)), (Some(5), None)],
            ),
        ];
        for (sample, ranges, want) in cases {
            let got: Vec<(Option<i64>, Option<i64>)> = split(sample, ranges)
                .into_iter()
                .map(|r| {
                    let bound = |b: Option<Vec<Value>>| {
                        b.map(|k| match k[0] {
                            Value::Int(i) => i,
                            _ => unreachable!(),
                        })
                    };
                    (bound(r.after), bound(r.upto))
                })
                .collect();
            assert_eq!(got, want, "{} sample keys into {ranges}", sample.len());
        }
    }

    #[test]
    fn a_sample_of_one_repeated_key_gives_two_ranges() {
        let sample = vec![int(&[7]); 50];
        let got = split(&sample, 4);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].upto, Some(int(&[7])));
        assert_eq!(got[1].after, Some(int(&[7])));
    }

    /// Keys of one of three shapes: uniform ints, ints with 80 % of rows on a hot prefix, or
    /// composite (a low-cardinality text with mixed case, then an int).
    fn keys() -> impl Strategy<Value = Vec<Vec<Value>>> {
        prop_oneof![
            prop::collection::vec(any::<i32>().prop_map(|k| int(&[k as i64])), 0..400),
            prop::collection::vec(
                (0u8..10, any::<i16>()).prop_map(|(hot, k)| {
                    let k = if hot < 8 {
                        k as i64 % 5
                    } else {
                        k as i64 * 1000
                    };
                    int(&[k])
                }),
                0..400
            ),
            prop::collection::vec(
                (
                    prop::sample::select(vec!["a", "A", "b", "B", "c"]),
                    0i64..50
                )
                    .prop_map(|(t, k)| vec![Value::Text(t.to_string()), Value::Int(k)]),
                0..400
            ),
        ]
    }

    proptest! {
        /// The oracle: for any table, any sample of keys (some no longer in the table) in
        /// server order and any range count, every key of the table is in exactly one range.
        #[test]
        fn every_key_is_in_exactly_one_range(
            table in keys(),
            extra in keys(),
            pick in prop::collection::vec(any::<bool>(), 800),
            ranges in 1u32..9,
        ) {
            let mut table = table;
            table.sort_by(|a, b| order(a, b));
            table.dedup_by(|a, b| order(a, b) == Ordering::Equal);
            let width = table.first().map(Vec::len);
            let mut sample: Vec<Vec<Value>> = table
                .iter()
                .chain(extra.iter().filter(|k| Some(k.len()) == width))
                .zip(pick.iter().cycle())
                .filter(|(_, keep)| **keep)
                .map(|(k, _)| k.clone())
                .collect();
            sample.sort_by(|a, b| order(a, b));
            let got = split(&sample, ranges);
            prop_assert!(!got.is_empty() && got.len() <= ranges as usize);
            prop_assert!(got.first().unwrap().after.is_none() && got.last().unwrap().upto.is_none());
            for key in &table {
                let hits = got.iter().filter(|r| r.contains(key, order)).count();
                prop_assert_eq!(hits, 1, "key {:?} in {} ranges of {:?}", key, hits, got);
            }
        }
    }
}

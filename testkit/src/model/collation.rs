//! How the model compares character keys: one SQL_* collation, approximated closely enough to
//! show the rule that matters to a keyset scan.
//!
//! Under `SQL_Latin1_General_CP1_CI_AS` (the default of Azure SQL Database and of US-English
//! installs) SQL Server compares `char`/`varchar` with the collation's non-Unicode sort order,
//! in which hyphen and apostrophe are ordinary (significant) characters, and `nchar`/
//! `nvarchar` with Unicode rules, whose "word sort" ignores hyphen and apostrophe at the
//! first level. "Because SQL Server collations use different comparison rules for non-Unicode
//! and Unicode data, you will see different results for comparisons of the same data"
//! (Collation and Unicode support,
//! <https://learn.microsoft.com/sql/relational-databases/collations/collation-and-unicode-support>).
//! So `'co-op' < 'coat'` as `varchar` and `'co-op' > 'coat'` as `nvarchar`; a `varchar` key
//! compared with an `nvarchar` parameter is converted and compared the Unicode way, while the
//! index (and `ORDER BY`) is in the non-Unicode order.
//!
//! The approximation (docs/model.md): both sorts are case-insensitive (characters compared
//! upper-cased) and ignore trailing spaces; otherwise characters compare by code point, so
//! accents and the relative order of other punctuation are not modelled. Any other collation
//! compares by code point (as the `_BIN2` collations do), trailing spaces ignored.

use std::cmp::Ordering;

use cdc_copy::cdc::KeyType;

/// The collation that gets the non-Unicode / Unicode distinction.
pub const SQL_LATIN1_CI_AS: &str = "SQL_Latin1_General_CP1_CI_AS";

/// The comparison rules of one character key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rules {
    /// By code point (binary collations, untyped model columns).
    CodePoint,
    /// `SQL_Latin1_General_CP1_CI_AS` on `char`/`varchar`: hyphen and apostrophe significant.
    SqlNonUnicode,
    /// `SQL_Latin1_General_CP1_CI_AS` on `nchar`/`nvarchar` (or any comparison converted to
    /// `nvarchar`): hyphen and apostrophe ignored at the first level ("word sort").
    UnicodeWordSort,
}

impl Rules {
    /// The rules of a key column of type `ty`.
    pub fn of(ty: &KeyType) -> Rules {
        let sql_collation = ty.collation().is_some_and(|c| c.name() == SQL_LATIN1_CI_AS);
        match ty {
            KeyType::Char { .. } | KeyType::VarChar { .. } if sql_collation => Rules::SqlNonUnicode,
            KeyType::NChar { .. } | KeyType::NVarChar { .. } if sql_collation => {
                Rules::UnicodeWordSort
            }
            _ => Rules::CodePoint,
        }
    }

    /// A string whose code-point order is this collation's order of the originals (equal
    /// strings under the collation give equal sort keys).
    pub fn sort_key(self, s: &str) -> String {
        let trimmed = s.trim_end_matches(' ');
        match self {
            Rules::CodePoint => trimmed.to_string(),
            Rules::SqlNonUnicode => fold(trimmed),
            Rules::UnicodeWordSort => {
                let full = fold(trimmed);
                let primary: String = full.chars().filter(|c| !matches!(c, '-' | '\'')).collect();
                // First level without hyphen and apostrophe, ties broken by the full string.
                format!("{primary}\u{0}{full}")
            }
        }
    }

    pub fn compare(self, a: &str, b: &str) -> Ordering {
        self.sort_key(a).cmp(&self.sort_key(b))
    }
}

fn fold(s: &str) -> String {
    s.chars().flat_map(char::to_uppercase).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use cdc_copy::cdc::Collation;
    use Ordering::*;

    #[test]
    fn hyphen_and_apostrophe_sort_differently_in_varchar_and_nvarchar() {
        let cases: &[(&str, &str, Ordering, Ordering, Ordering)] = &[
            // (a, b, varchar, nvarchar, code point)
            ("co-op", "coat", Less, Greater, Less),
            ("o'neil", "oats", Less, Greater, Less),
            ("co-op", "coop", Less, Less, Less),
            ("ABC", "abc", Equal, Equal, Less),
            ("abc  ", "abc", Equal, Equal, Equal),
            ("a", "B", Less, Less, Greater),
            ("re-enter", "reenter", Less, Less, Less),
        ];
        for (a, b, varchar, nvarchar, code_point) in cases {
            assert_eq!(
                Rules::SqlNonUnicode.compare(a, b),
                *varchar,
                "{a} vs {b} varchar"
            );
            assert_eq!(
                Rules::UnicodeWordSort.compare(a, b),
                *nvarchar,
                "{a} vs {b} nvarchar"
            );
            assert_eq!(
                Rules::CodePoint.compare(a, b),
                *code_point,
                "{a} vs {b} bin"
            );
            assert_eq!(Rules::SqlNonUnicode.compare(b, a), varchar.reverse());
            assert_eq!(Rules::UnicodeWordSort.compare(b, a), nvarchar.reverse());
        }
    }

    #[test]
    fn rules_follow_the_declared_type_and_collation() {
        let sql = || Collation::parse(SQL_LATIN1_CI_AS).unwrap();
        let bin = || Collation::parse("Latin1_General_100_BIN2").unwrap();
        let cases = [
            (
                KeyType::VarChar {
                    length: 9,
                    collation: sql(),
                },
                Rules::SqlNonUnicode,
            ),
            (
                KeyType::Char {
                    length: 9,
                    collation: sql(),
                },
                Rules::SqlNonUnicode,
            ),
            (
                KeyType::NVarChar {
                    length: 9,
                    collation: sql(),
                },
                Rules::UnicodeWordSort,
            ),
            (
                KeyType::NChar {
                    length: 9,
                    collation: sql(),
                },
                Rules::UnicodeWordSort,
            ),
            (
                KeyType::VarChar {
                    length: 9,
                    collation: bin(),
                },
                Rules::CodePoint,
            ),
            (KeyType::Int, Rules::CodePoint),
        ];
        for (ty, rules) in cases {
            assert_eq!(Rules::of(&ty), rules, "{ty}");
        }
    }
}

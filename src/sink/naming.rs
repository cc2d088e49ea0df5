//! Blob names from path templates and trigger times.
//! TODO(helper)
//!
//! TEMPORARY SHIM from the `host` branch: only the `FromStr` that `config` needs, so that
//! branch compiles before the sink helper's real parser lands. On merge, take the sink
//! helper's version of this file and drop this shim.

/// A validated blob path template such as
/// `{schema}/{table}/incremental/{yyyy}/{MM}/{dd}/{yyyyMMddHHmmssfff}.csv`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathTemplate(String);

impl std::str::FromStr for PathTemplate {
    type Err = String;

    fn from_str(text: &str) -> Result<PathTemplate, String> {
        if text.is_empty() || text.starts_with('/') {
            return Err("must be a relative blob path, e.g. {schema}/{table}/x.csv".into());
        }
        if text.matches('{').count() != text.matches('}').count() {
            return Err("has unbalanced braces".into());
        }
        Ok(PathTemplate(text.to_string()))
    }
}

/// Azure container naming rules (shim; the sink helper's version replaces it).
pub fn validate_container_name(name: &str) -> Result<(), String> {
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !(3..=63).contains(&name.len())
        || !ok_chars
        || name.starts_with('-')
        || name.ends_with('-')
        || name.contains("--")
    {
        return Err(format!(
            "{name:?} is not a container name (3-63 lowercase letters, digits and single hyphens)"
        ));
    }
    Ok(())
}

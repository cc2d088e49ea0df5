//! Blob names from path templates and trigger times.
//! TODO(helper)

/// A validated blob path template such as
/// `{schema}/{table}/incremental/{yyyy}/{MM}/{dd}/{yyyyMMddHHmmssfff}.csv`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathTemplate(String);

//! RFC 4180 CSV encoding of [`crate::cdc::Value`] rows.

//! Blob names from path templates and trigger times.

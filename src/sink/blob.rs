//! Block blob upload (the one place in `sink` that does I/O).

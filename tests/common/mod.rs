//! Helpers shared by the integration tests (each test binary includes this with `mod common;`).

pub mod azurite;
pub mod cdc;
pub mod ledger;
pub mod proxy;

//! Helpers shared by the integration tests (each test binary includes this with `mod common;`).
//! The test doubles themselves (model, TDS fake, Azurite, fault proxy) live in the
//! `cdc-copy-testkit` crate; re-exported here so tests name them as before.

#[allow(unused_imports)]
pub use cdc_copy_testkit::{azurite, proxy};

pub mod cdc;
pub mod ledger;
pub mod traces;

//! Test doubles for cdc-copy, kept out of the product crate: nothing here is compiled into the
//! handler. Used as a dev-dependency by the integration tests and the benchmarks.
//!
//! - [`model`]: an in-memory SQL Server CDC behind the product's `CdcSource` seam.
//! - [`faults`]: a `CdcSource` decorator that fails chosen round trips (before, after their
//!   effect, mid-stream), and counts them.
//! - [`tds`]: a TDS-speaking fake SQL Server, so the real tiberius path runs in CI.
//! - [`azurite`]: a real Azurite blob service (and queue service) on a free loopback port.
//! - [`queue`]: an Azurite queue client and a stand-in for the Functions host's queue listener.
//! - [`proxy`]: a fault-injecting HTTP proxy in front of Azurite.
//! - [`live`]: the live suite's own single-function queries to a real SQL Server.
//! - [`rows`]: the customers-shaped row generator of the benchmarks.

pub mod azurite;
pub mod faults;
pub mod live;
pub mod model;
pub mod proxy;
pub mod queue;
pub mod rows;
pub mod tds;

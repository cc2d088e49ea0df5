//! The Functions host contract.

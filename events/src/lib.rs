//! Shiplog's domain core. No HTTP, no Docker.

pub mod catalog;
pub mod spec;

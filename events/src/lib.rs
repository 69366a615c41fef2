//! Shiplog's domain core: events, decisions, the event store, projections, the catalog
//! model, API keys, stack leases, the job queue and dry-run plans. No HTTP, no Docker.

pub mod apikey;
pub mod catalog;
pub mod commands;
pub mod db;
pub mod endpoint;
pub mod error;
pub mod event;
pub mod inventory;
pub mod lease;
pub mod listen;
pub mod plan;
pub mod projection;
pub mod queries;
pub mod queue;
pub mod secret;
pub mod spec;
pub mod store;

pub use error::{Error, Result};

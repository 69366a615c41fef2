//! `shiplog-worker`: queue consumers (apalis), the Docker driver (bollard) and the
//! deploy executor. Appends progress events through `shiplog_events`.

pub mod config;
pub mod docker;
pub mod error;
pub mod executor;
pub mod metrics;
pub mod probe;
pub mod runner;

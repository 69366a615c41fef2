//! `shiplog-api`: routing, authentication, request/response types and the one error →
//! response mapping. Domain logic lives in `shiplog_events`.

pub mod auth;
pub mod config;
pub mod error;
pub mod metrics;
pub mod registry;
pub mod request_id;
pub mod routes;
pub mod startup;
pub mod state;
pub mod telemetry;

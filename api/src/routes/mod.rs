//! HTTP routes. Handlers are thin: parse, authorise, call `shiplog_events`, shape the answer.

pub mod admin;
pub mod deployments;
pub mod health;
pub mod hooks;
pub mod lifecycle;
pub mod openapi;
pub mod stream;

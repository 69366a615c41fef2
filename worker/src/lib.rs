//! Shiplog's worker: apalis jobs, the Docker driver and the deploy executor.

pub mod docker;

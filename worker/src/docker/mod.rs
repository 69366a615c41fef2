//! The Docker driver (bollard).

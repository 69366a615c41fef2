//! Catalog: stack versions read from compose files with an `x-shiplog` block.
//!
//! A stack version is a compose file with a top-level `name` (the stack) and an extension
//! block, so it stays a valid compose file:
//!
//! ```yaml
//! name: ams-project
//! x-shiplog:
//!   version: 6.4.0
//!   description: optional text
//!   variables:
//!     GREETING: { default: "hello", description: "…" }
//!     API_TOKEN: { required: true, type: password }
//!     PORT: "8080"            # shorthand: a plain scalar is the default
//!     MODE: { type: select, options: [fast, safe], default: safe }
//! services:
//!   web:
//!     image: 127.0.0.1:5000/shiplog-test/web:${TAG:-v1}
//!     environment:
//!       GREETING: ${GREETING}
//!     ports: ["127.0.0.1::8080"]
//! ```
//!
//! - [`read_directory`] / [`parse_manifest`] load and fully validate files at catalog load,
//!   so a bad file is refused then, not when someone deploys it.
//! - [`effective_variables`] + [`resolve`] turn a manifest into the [`StackSpec`] a worker
//!   converges a host to, at request time (a missing variable is the caller's 400).
//!
//! [`StackSpec`]: crate::spec::StackSpec

mod compose;
mod directory;
pub mod git;
mod interpolate;
mod manifest;
mod passwords;
mod resolve;
mod vartype;
mod version;

#[cfg(test)]
mod tests;

pub use compose::{IGNORED_SERVICE_KEYS, REFUSED_SERVICE_KEYS};
pub use directory::{CatalogError, DirectoryScan, read_directory};
pub use manifest::{FileError, Manifest, VariableDef, parse_manifest};
pub use passwords::{MASK, mask_sealed, mask_values, open_passwords, seal_passwords};
pub use resolve::{ResolveError, VariableError, effective_variables, resolve};
pub use vartype::VariableType;
pub use version::compare_versions;

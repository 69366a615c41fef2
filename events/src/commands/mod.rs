//! Commands: each validates its input, decides which events follow (pure functions, unit
//! tested given/when/then), then appends them — and, for deployments, enqueues the job —
//! in one transaction.

pub mod catalog;
pub mod deployments;
pub mod dry_run;
pub mod environments;
pub mod keys;
pub mod lifecycle;

use crate::error::{Error, Result};

/// Names of environments, stacks and services: what compose accepts as a project name,
/// which also keeps them safe in paths, container names and stream ids.
pub fn validate_name(what: &str, value: &str) -> Result<()> {
    let ok = !value.is_empty()
        && value.len() <= 63
        && value
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "invalid {what} '{}': use 1–63 lowercase letters, digits, '-' or '_', starting with a letter or digit",
            value.chars().take(80).collect::<String>()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_compose_project_rules() {
        for good in ["a", "ams-project", "web_1", "0x"] {
            validate_name("stack", good).unwrap();
        }
        for bad in ["", "-a", "A", "a/b", "../x", "a b", &"a".repeat(64)] {
            assert!(validate_name("stack", bad).is_err(), "{bad}");
        }
    }
}

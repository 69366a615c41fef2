//! Version ordering and the name rules shared by the catalog.

use std::cmp::Ordering;

/// Orders versions semver-style without a crate: dot-separated components compare
/// numerically when both are numbers, a pre-release (`1.0.0-rc1`) sorts before its release,
/// build metadata (`+…`) is ignored, and anything else falls back to string comparison.
/// Distinct strings never compare equal, so the order is total.
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    let (a_core, a_pre) = split_version(a);
    let (b_core, b_pre) = split_version(b);
    compare_dotted(a_core, b_core)
        .then_with(|| match (a_pre, b_pre) {
            (None, None) => Ordering::Equal,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some(x), Some(y)) => compare_dotted(x, y),
        })
        .then_with(|| a.cmp(b))
}

/// `1.2.3-rc.1+build` → (`1.2.3`, Some(`rc.1`)).
fn split_version(v: &str) -> (&str, Option<&str>) {
    let v = v.split_once('+').map_or(v, |(core, _build)| core);
    match v.split_once('-') {
        Some((core, pre)) => (core, Some(pre)),
        None => (v, None),
    }
}

fn compare_dotted(a: &str, b: &str) -> Ordering {
    let mut xs = a.split('.');
    let mut ys = b.split('.');
    loop {
        match (xs.next(), ys.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) => match compare_component(x, y) {
                Ordering::Equal => {}
                other => return other,
            },
        }
    }
}

fn compare_component(x: &str, y: &str) -> Ordering {
    let numeric = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    match (numeric(x), numeric(y)) {
        // Compare digit strings without parsing so that huge numbers cannot overflow.
        (true, true) => {
            let (x, y) = (x.trim_start_matches('0'), y.trim_start_matches('0'));
            x.len().cmp(&y.len()).then_with(|| x.cmp(y))
        }
        // Semver: numeric identifiers have lower precedence than alphanumeric ones.
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
        (false, false) => x.cmp(y),
    }
}

/// Stack and service names follow compose's project-name rule, so they can be used as the
/// project label and in container, network and volume names as they are.
pub(crate) fn is_valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'_' | b'-'))
}

pub(crate) const NAME_RULE: &str =
    "use 1–63 lowercase letters, digits, '_' or '-', starting with a letter or digit";

pub(crate) fn is_valid_version(version: &str) -> bool {
    !version.is_empty()
        && version.len() <= 64
        && version
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'+' | b'-'))
}

pub(crate) const VERSION_RULE: &str = "use 1–64 letters, digits, '.', '_', '+' or '-'";

/// Variable names as compose accepts them in `${…}`.
pub(crate) fn is_valid_variable_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && (b[0].is_ascii_alphabetic() || b[0] == b'_')
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use Ordering::*;

    #[test]
    fn numeric_components_compare_as_numbers() {
        assert_eq!(compare_versions("1.2.10", "1.2.9"), Greater);
        assert_eq!(compare_versions("1.2.9", "1.2.10"), Less);
        assert_eq!(compare_versions("10.0.0", "9.99.99"), Greater);
        assert_eq!(compare_versions("1.2.3", "1.2.3"), Equal);
        assert_eq!(compare_versions("1.2", "1.2.0"), Less);
        assert_eq!(
            compare_versions("99999999999999999999999.0", "1.0"),
            Greater
        );
    }

    #[test]
    fn pre_releases_sort_before_their_release() {
        assert_eq!(compare_versions("1.0.0-rc1", "1.0.0"), Less);
        assert_eq!(compare_versions("1.0.0", "1.0.0-rc1"), Greater);
        assert_eq!(compare_versions("1.0.0-rc1", "1.0.0-rc2"), Less);
        assert_eq!(compare_versions("1.0.0-alpha", "1.0.0-alpha.1"), Less);
        assert_eq!(compare_versions("1.0.0-alpha.2", "1.0.0-alpha.10"), Less);
        assert_eq!(compare_versions("1.0.0-rc1", "0.9.9"), Greater);
    }

    #[test]
    fn build_metadata_and_odd_strings_still_order_totally() {
        assert_eq!(compare_versions("1.0.0+b", "1.0.0+a"), Greater);
        assert_eq!(compare_versions("1.0.0+a", "1.0.1"), Less);
        assert_eq!(compare_versions("v1.2.10", "v1.2.9"), Greater);
        assert_eq!(compare_versions("latest", "stable"), Less);
        assert_eq!(compare_versions("2024.01", "2024.1"), Less);

        let mut versions = vec!["6.5.0", "6.4.0", "6.10.0", "6.5.0-rc1", "1.0", "6.4.0+2"];
        versions.sort_by(|a, b| compare_versions(a, b));
        assert_eq!(
            versions,
            ["1.0", "6.4.0", "6.4.0+2", "6.5.0-rc1", "6.5.0", "6.10.0"]
        );
    }

    #[test]
    fn name_rules() {
        for ok in ["web", "ams-project", "a", "0db", "my_stack-2"] {
            assert!(is_valid_name(ok), "{ok}");
        }
        let long = "a".repeat(64);
        for bad in ["", "Web", "-web", "_web", "web.1", "web app", long.as_str()] {
            assert!(!is_valid_name(bad), "{bad}");
        }
        assert!(is_valid_version("6.4.0-rc.1+build_7"));
        assert!(
            !is_valid_version("6.4.0 beta") && !is_valid_version("") && !is_valid_version("1/2")
        );
        assert!(is_valid_variable_name("_A1") && !is_valid_variable_name("1A"));
    }
}

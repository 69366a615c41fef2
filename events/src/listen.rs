//! Listener addresses that may be switched off, shared by the binaries' configurations.

use std::net::SocketAddr;
use std::str::FromStr;

/// `host:port`, or `off` (or empty) to switch the listener off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionalAddress(pub Option<SocketAddr>);

impl FromStr for OptionalAddress {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, String> {
        match value.trim() {
            "" | "off" => Ok(OptionalAddress(None)),
            other => other
                .parse()
                .map(|a| OptionalAddress(Some(a)))
                .map_err(|e| {
                    format!("'{other}' is not an address like 0.0.0.0:9120, nor 'off': {e}")
                }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::OptionalAddress;

    #[test]
    fn addresses_or_off() {
        assert_eq!(
            "127.0.0.1:9120".parse::<OptionalAddress>().unwrap(),
            OptionalAddress(Some("127.0.0.1:9120".parse().unwrap()))
        );
        assert_eq!("off".parse::<OptionalAddress>().unwrap().0, None);
        assert_eq!("".parse::<OptionalAddress>().unwrap().0, None);
        assert!(
            "9120"
                .parse::<OptionalAddress>()
                .unwrap_err()
                .contains("9120")
        );
    }
}

//! API keys: `rsgo_` + 32 alphanumerics from the OS random source, stored only as SHA-256.

use std::fmt;

use chrono::{DateTime, Utc};
use rand::TryRngCore;
use rand::distr::{Alphanumeric, SampleString};
use rand::rngs::OsRng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

pub const KEY_PREFIX: &str = "rsgo_";
const KEY_RANDOM_LEN: usize = 32;
/// How much of the key lists show: `rsgo_` plus four characters.
const DISPLAY_PREFIX_LEN: usize = KEY_PREFIX.len() + 4;

/// A key in clear. Exists only while creating a key (to show it once) and while
/// authenticating a request; its `Debug` never prints the value.
#[derive(Clone, PartialEq, Eq)]
pub struct PlainApiKey(String);

impl PlainApiKey {
    pub fn generate() -> Self {
        let mut rng = OsRng.unwrap_err();
        let random = Alphanumeric.sample_string(&mut rng, KEY_RANDOM_LEN);
        PlainApiKey(format!("{KEY_PREFIX}{random}"))
    }

    /// Accepts only the documented shape, so junk never reaches the database.
    pub fn parse(value: &str) -> Option<Self> {
        let random = value.strip_prefix(KEY_PREFIX)?;
        (random.len() == KEY_RANDOM_LEN && random.bytes().all(|b| b.is_ascii_alphanumeric()))
            .then(|| PlainApiKey(value.to_owned()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn hash(&self) -> String {
        hex::encode(Sha256::digest(self.0.as_bytes()))
    }

    pub fn display_prefix(&self) -> String {
        self.0[..DISPLAY_PREFIX_LEN].to_owned()
    }
}

impl fmt::Debug for PlainApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PlainApiKey(<redacted>)")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Permission {
    #[serde(rename = "Hooks.Redeploy")]
    HooksRedeploy,
    #[serde(rename = "Hooks.Upgrade")]
    HooksUpgrade,
    #[serde(rename = "Hooks.SyncSources")]
    HooksSyncSources,
    #[serde(rename = "Hooks.Rollback")]
    HooksRollback,
    #[serde(rename = "Hooks.Deploy")]
    HooksDeploy,
    #[serde(rename = "Hooks.RestartContainers")]
    HooksRestartContainers,
    #[serde(rename = "Hooks.StopContainers")]
    HooksStopContainers,
}

impl Permission {
    pub const ALL: [Permission; 7] = [
        Permission::HooksRedeploy,
        Permission::HooksUpgrade,
        Permission::HooksSyncSources,
        Permission::HooksRollback,
        Permission::HooksDeploy,
        Permission::HooksRestartContainers,
        Permission::HooksStopContainers,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Permission::HooksRedeploy => "Hooks.Redeploy",
            Permission::HooksUpgrade => "Hooks.Upgrade",
            Permission::HooksSyncSources => "Hooks.SyncSources",
            Permission::HooksRollback => "Hooks.Rollback",
            Permission::HooksDeploy => "Hooks.Deploy",
            Permission::HooksRestartContainers => "Hooks.RestartContainers",
            Permission::HooksStopContainers => "Hooks.StopContainers",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

/// What a key may hold: a permission (`Hooks.Redeploy`), every permission of a group
/// (`Hooks.*`) or every permission there is (`*.*`). Wildcards cover permissions added
/// later too, which is why they are stored as given.
pub fn is_valid_grant(grant: &str) -> bool {
    Permission::parse(grant).is_some()
        || grant == "*.*"
        || grant
            .strip_suffix(".*")
            .is_some_and(|group| Permission::ALL.iter().any(|p| p.group() == group))
}

fn grant_allows(grant: &str, permission: Permission) -> bool {
    grant == permission.as_str()
        || grant == "*.*"
        || grant.strip_suffix(".*") == Some(permission.group())
}

impl Permission {
    /// `Hooks` for `Hooks.Redeploy`.
    pub fn group(self) -> &'static str {
        self.as_str()
            .split_once('.')
            .map_or(self.as_str(), |(group, _)| group)
    }
}

/// A stored key, as the `api_keys` projection holds it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ApiKey {
    pub id: Uuid,
    pub name: String,
    pub prefix: String,
    pub permissions: Vec<String>,
    pub environment_id: Option<String>,
    pub expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    /// `None`: every stack (of the environment scope).
    pub stacks: Option<Vec<String>>,
}

/// Why a presented key does not authenticate. Each is a 401, with its own message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyRejection {
    #[error("missing X-Api-Key header")]
    Missing,
    #[error("invalid API key")]
    Unknown,
    #[error("API key has expired")]
    Expired,
    #[error("API key has been revoked")]
    Revoked,
}

impl ApiKey {
    pub fn check_usable(&self, now: DateTime<Utc>) -> Result<(), KeyRejection> {
        if self.revoked_at.is_some() {
            return Err(KeyRejection::Revoked);
        }
        if self.expires_at.is_some_and(|at| at <= now) {
            return Err(KeyRejection::Expired);
        }
        Ok(())
    }

    /// Whether the key may act on (or read) this stack.
    pub fn covers_stack(&self, stack: &str) -> bool {
        self.stacks
            .as_ref()
            .is_none_or(|stacks| stacks.iter().any(|s| s == stack))
    }

    pub fn allows(&self, permission: Permission) -> bool {
        self.permissions.iter().any(|g| grant_allows(g, permission))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_have_the_documented_shape_and_differ() {
        let a = PlainApiKey::generate();
        let b = PlainApiKey::generate();
        assert_ne!(a, b);
        assert!(PlainApiKey::parse(a.expose()).is_some());
        assert_eq!(a.expose().len(), 37);
        assert_eq!(a.display_prefix().len(), 9);
        assert_eq!(a.hash().len(), 64);
    }

    #[test]
    fn wildcards_grant_a_group_or_everything() {
        let key = |grants: &[&str]| ApiKey {
            id: Uuid::nil(),
            name: "k".into(),
            prefix: "rsgo_abcd".into(),
            permissions: grants.iter().map(|g| g.to_string()).collect(),
            environment_id: None,
            expires_at: None,
            created_at: Utc::now(),
            revoked_at: None,
            stacks: None,
        };
        for p in Permission::ALL {
            assert!(key(&["Hooks.*"]).allows(p));
            assert!(key(&["*.*"]).allows(p));
        }
        assert!(key(&["Hooks.Upgrade"]).allows(Permission::HooksUpgrade));
        assert!(!key(&["Hooks.Upgrade"]).allows(Permission::HooksRedeploy));
        assert!(!key(&["Other.*"]).allows(Permission::HooksRedeploy));
        for good in ["Hooks.Redeploy", "Hooks.*", "*.*"] {
            assert!(is_valid_grant(good), "{good}");
        }
        for bad in [
            "Hooks",
            "Other.*",
            "*",
            "Hooks.Nope",
            "*.Redeploy",
            "hooks.*",
        ] {
            assert!(!is_valid_grant(bad), "{bad}");
        }
    }

    #[test]
    fn debug_never_prints_the_key() {
        let key = PlainApiKey::generate();
        let printed = format!("{key:?}");
        assert!(!printed.contains(&key.expose()[5..]));
    }

    #[test]
    fn parse_rejects_other_shapes() {
        for bad in [
            "",
            "rsgo_",
            "rsgo_short",
            "xxxx_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "rsgo_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa!",
            "rsgo_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        ] {
            assert!(PlainApiKey::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn permissions_round_trip_their_names() {
        for p in Permission::ALL {
            assert_eq!(Permission::parse(p.as_str()), Some(p));
        }
        assert_eq!(Permission::parse("Hooks.Nope"), None);
    }
}

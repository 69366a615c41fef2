//! `password` variables never rest in clear: the API seals their values (`secret.rs`) before
//! they enter a request event, the stack's stored variables keep them sealed, and only the
//! worker opens them, to hand them to the container.

use std::collections::BTreeMap;

use super::{VariableDef, VariableType};
use crate::secret::{self, SecretKey};

fn passwords(defs: &[VariableDef]) -> impl Iterator<Item = &str> {
    defs.iter()
        .filter(|d| d.kind == VariableType::Password)
        .map(|d| d.name.as_str())
}

/// Seals every password value given in clear; checks that sealed ones open with `key`.
/// Without a key, a password value cannot be stored: the error says how to configure one.
pub fn seal_passwords(
    defs: &[VariableDef],
    values: &mut BTreeMap<String, String>,
    key: Option<&SecretKey>,
) -> Result<(), String> {
    for name in passwords(defs) {
        let Some(value) = values.get_mut(name).filter(|v| !v.is_empty()) else {
            continue;
        };
        let Some(key) = key else {
            return Err(format!(
                "variable {name} is a password and Shiplog stores passwords only sealed: \
                 set SHIPLOG_SECRET_KEY (32 bytes, e.g. `openssl rand -hex 32`) on the API \
                 and the workers"
            ));
        };
        if secret::is_sealed(value) {
            key.open(value)
                .map_err(|e| format!("variable {name}: {e}"))?;
        } else {
            *value = key.seal(value);
        }
    }
    Ok(())
}

/// The values a container gets: password values opened, the rest as they are.
pub fn open_passwords(
    defs: &[VariableDef],
    values: &BTreeMap<String, String>,
    key: Option<&SecretKey>,
) -> Result<BTreeMap<String, String>, String> {
    let mut opened = values.clone();
    for name in passwords(defs) {
        let Some(value) = opened.get_mut(name).filter(|v| secret::is_sealed(v)) else {
            continue;
        };
        let key = key.ok_or_else(|| {
            format!("variable {name} is sealed and this worker has no SHIPLOG_SECRET_KEY")
        })?;
        *value = key
            .open(value)
            .map_err(|e| format!("variable {name}: {e} (is SHIPLOG_SECRET_KEY the API's?)"))?;
    }
    Ok(opened)
}

/// Replaces every sealed value of a variable map by `********`: what responses show.
pub fn mask_values(values: &mut BTreeMap<String, String>) {
    for value in values.values_mut() {
        if secret::is_sealed(value) {
            *value = MASK.to_owned();
        }
    }
}

/// Replaces every sealed value in a JSON document by `********`: what responses show.
pub fn mask_sealed(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::String(s) if secret::is_sealed(s) => *s = MASK.to_owned(),
        serde_json::Value::Array(items) => items.iter_mut().for_each(mask_sealed),
        serde_json::Value::Object(map) => map.values_mut().for_each(mask_sealed),
        _ => {}
    }
}

pub const MASK: &str = "********";

#[cfg(test)]
mod tests {
    use super::*;

    fn defs() -> Vec<VariableDef> {
        let def = |name: &str, kind| VariableDef {
            name: name.into(),
            default: None,
            required: false,
            description: None,
            kind,
        };
        vec![
            def("TOKEN", VariableType::Password),
            def("MODE", VariableType::String),
        ]
    }

    #[test]
    fn passwords_are_sealed_and_opened_back_the_rest_stays_clear() {
        let key = SecretKey::generate();
        let mut values = BTreeMap::from([
            ("TOKEN".to_owned(), "hunter2".to_owned()),
            ("MODE".to_owned(), "fast".to_owned()),
        ]);
        seal_passwords(&defs(), &mut values, Some(&key)).unwrap();
        assert!(secret::is_sealed(&values["TOKEN"]));
        assert_eq!(values["MODE"], "fast");
        // Sealing again keeps the sealed value (it still opens).
        let sealed = values["TOKEN"].clone();
        seal_passwords(&defs(), &mut values, Some(&key)).unwrap();
        assert_eq!(values["TOKEN"], sealed);
        let opened = open_passwords(&defs(), &values, Some(&key)).unwrap();
        assert_eq!(opened["TOKEN"], "hunter2");

        let mut json = serde_json::to_value(&values).unwrap();
        mask_sealed(&mut json);
        assert_eq!(json["TOKEN"], MASK);
        assert_eq!(json["MODE"], "fast");
    }

    #[test]
    fn no_key_or_another_key_is_a_clear_error() {
        let mut values = BTreeMap::from([("TOKEN".to_owned(), "hunter2".to_owned())]);
        let err = seal_passwords(&defs(), &mut values, None).unwrap_err();
        assert!(err.contains("SHIPLOG_SECRET_KEY"), "{err}");
        assert!(!err.contains("hunter2"));
        seal_passwords(&defs(), &mut values, Some(&SecretKey::generate())).unwrap();
        let err = open_passwords(&defs(), &values, Some(&SecretKey::generate())).unwrap_err();
        assert!(err.contains("TOKEN"), "{err}");
        let err = open_passwords(&defs(), &values, None).unwrap_err();
        assert!(err.contains("no SHIPLOG_SECRET_KEY"), "{err}");
        let err = seal_passwords(&defs(), &mut values, Some(&SecretKey::generate())).unwrap_err();
        assert!(err.contains("TOKEN"), "{err}");
    }
}

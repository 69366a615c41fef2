//! From a catalog manifest and variables to the desired state, at deployment request time.

use std::collections::BTreeMap;

use thiserror::Error;

use super::compose;
use super::interpolate::Interpolator;
use super::manifest::{Manifest, VariableDef, load};
use crate::spec::StackSpec;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum VariableError {
    /// Every required variable without a value, sorted.
    #[error("missing value for required {}: {}", plural(.0), .0.join(", "))]
    Missing(Vec<String>),
    /// A value that is not of the variable's declared type.
    #[error("variable '{name}' must be {wanted}, not {value:?}")]
    Invalid {
        name: String,
        wanted: String,
        value: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ResolveError {
    /// Every variable used without a value and without a default, sorted.
    #[error("missing value for {}: {} (give them in the request's variables)", plural(.0), .0.join(", "))]
    MissingVariables(Vec<String>),
    /// `${NAME?message}` with no value: the file's author explains what to set.
    #[error(
        "variable '{name}' is required: {message}{}",
        also_missing(name, missing)
    )]
    RequiredVariable {
        name: String,
        message: String,
        missing: Vec<String>,
    },
    /// The file is not a valid stack with these variable values (e.g. a port variable that
    /// is not a number).
    #[error("{0}")]
    Invalid(String),
}

fn plural(names: &[String]) -> &'static str {
    if names.len() == 1 {
        "variable"
    } else {
        "variables"
    }
}

fn also_missing(name: &str, missing: &[String]) -> String {
    let others: Vec<&str> = missing
        .iter()
        .map(String::as_str)
        .filter(|m| *m != name)
        .collect();
    if others.is_empty() {
        String::new()
    } else {
        format!(" (also missing: {})", others.join(", "))
    }
}

/// The variables a deployment uses: declared defaults, overlaid by the values stored for the
/// stack, overlaid by the request's values. Undeclared names are kept: the file may still
/// use them as `${NAME}`. A required variable counts as missing when its value is empty.
pub fn effective_variables(
    defs: &[VariableDef],
    stored: &BTreeMap<String, String>,
    overlay: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, VariableError> {
    let mut values: BTreeMap<String, String> = defs
        .iter()
        .filter_map(|d| Some((d.name.clone(), d.default.clone()?)))
        .collect();
    values.extend(stored.iter().map(|(k, v)| (k.clone(), v.clone())));
    values.extend(overlay.iter().map(|(k, v)| (k.clone(), v.clone())));
    let mut missing: Vec<String> = defs
        .iter()
        .filter(|d| d.required && values.get(&d.name).is_none_or(|v| v.is_empty()))
        .map(|d| d.name.clone())
        .collect();
    if missing.is_empty() {
        // An empty value of an optional variable means "unset": nothing to check.
        for def in defs {
            if let Some(value) = values.get(&def.name).filter(|v| !v.is_empty())
                && let Err(wanted) = def.kind.check(value)
            {
                return Err(VariableError::Invalid {
                    name: def.name.clone(),
                    wanted,
                    value: value.clone(),
                });
            }
        }
        return Ok(values);
    }
    missing.sort();
    missing.dedup();
    Err(VariableError::Missing(missing))
}

/// Interpolates the manifest with `variables` (all of them: an absent name is unset) and
/// builds the desired state. Unlike compose, which substitutes an empty string, a variable
/// without a value fails here, so a bad request is refused before anything is deployed.
pub fn resolve(
    manifest: &Manifest,
    variables: &BTreeMap<String, String>,
) -> Result<StackSpec, ResolveError> {
    let doc = load(&manifest.source_text)
        .map_err(|(_, message)| ResolveError::Invalid(format!("{}: {message}", manifest.file)))?;
    let mut interp = Interpolator::resolving(variables);
    let node =
        compose::to_node(&doc, &mut interp).map_err(|e| ResolveError::Invalid(e.to_string()))?;
    let missing: Vec<String> = interp.missing.iter().cloned().collect();
    if let Some((name, message)) = interp
        .required
        .iter()
        .find(|(_, message)| !message.is_empty())
    {
        return Err(ResolveError::RequiredVariable {
            name: name.clone(),
            message: message.clone(),
            missing,
        });
    }
    if !missing.is_empty() {
        return Err(ResolveError::MissingVariables(missing));
    }
    compose::build_stack(&node, &manifest.stack_name, &manifest.version)
        .map_err(|e| ResolveError::Invalid(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::super::parse_manifest;
    use super::*;
    use crate::spec::PortSpec;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn def(name: &str, default: Option<&str>, required: bool) -> VariableDef {
        VariableDef {
            name: name.into(),
            default: default.map(Into::into),
            required,
            description: None,
            kind: Default::default(),
        }
    }

    #[test]
    fn typed_values_are_checked() {
        use crate::catalog::VariableType;
        let mut port = def("PORT", Some("8080"), false);
        port.kind = VariableType::Port;
        let mut url = def("TOKEN", None, false);
        url.kind = VariableType::Url;
        let defs = [port, url];
        let ok = effective_variables(&defs, &map(&[]), &map(&[("PORT", "9090")])).unwrap();
        assert_eq!(ok["PORT"], "9090");
        let e = effective_variables(&defs, &map(&[]), &map(&[("PORT", "70000")])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "variable 'PORT' must be a port number (1-65535), not \"70000\""
        );
        // Empty means unset for an optional variable.
        assert!(effective_variables(&defs, &map(&[]), &map(&[("TOKEN", "")])).is_ok());
        let e = effective_variables(&defs, &map(&[]), &map(&[("TOKEN", "nope")])).unwrap_err();
        assert!(e.to_string().contains("absolute URL"), "{e}");
        let mut hidden = def("PASS", None, false);
        hidden.kind = VariableType::Select(vec!["x".into()]);
        let e = effective_variables(&[hidden], &map(&[]), &map(&[("PASS", "y")])).unwrap_err();
        assert!(e.to_string().contains("one of: x"), "{e}");
    }

    #[test]
    fn variables_overlay_defaults_then_stored_then_request() {
        let defs = [
            def("A", Some("default"), false),
            def("B", Some("default"), false),
            def("C", Some("default"), false),
        ];
        let stored = map(&[("B", "stored"), ("C", "stored"), ("OLD", "kept")]);
        let overlay = map(&[("C", "request"), ("EXTRA", "undeclared")]);
        assert_eq!(
            effective_variables(&defs, &stored, &overlay).unwrap(),
            map(&[
                ("A", "default"),
                ("B", "stored"),
                ("C", "request"),
                ("OLD", "kept"),
                ("EXTRA", "undeclared")
            ])
        );
    }

    #[test]
    fn required_variables_without_a_value_are_all_listed() {
        let defs = [
            def("ZED", None, true),
            def("ALPHA", None, true),
            def("SET", None, true),
            def("EMPTY", None, true),
            def("OPT", None, false),
        ];
        let err =
            effective_variables(&defs, &map(&[("SET", "x")]), &map(&[("EMPTY", "")])).unwrap_err();
        assert_eq!(
            err,
            VariableError::Missing(vec!["ALPHA".into(), "EMPTY".into(), "ZED".into()])
        );
        assert_eq!(
            err.to_string(),
            "missing value for required variables: ALPHA, EMPTY, ZED"
        );
        // The request can supply what the stored values lack.
        let ok = effective_variables(&defs[..1], &map(&[]), &map(&[("ZED", "z")])).unwrap();
        assert_eq!(ok, map(&[("ZED", "z")]));
        // A default satisfies `required`.
        assert!(effective_variables(&[def("D", Some("d"), true)], &map(&[]), &map(&[])).is_ok());
    }

    const STACK: &str = r#"name: ams-project
x-shiplog:
  version: 6.4.0
  description: "Uses ${NOT_A_VARIABLE} in prose"
  variables:
    GREETING: { default: "hello", description: "Shown as ${GREETING}" }
    API_TOKEN: { required: true }
    PORT: "8080"
services:
  web:
    image: 127.0.0.1:5000/shiplog-test/web:${TAG:-v1}
    environment:
      GREETING: ${GREETING}
      TOKEN: $API_TOKEN
      PRICE: "5$$ or $$HOME"
    ports: ["127.0.0.1::${PORT}"]
    healthcheck:
      test: wget -q -O- http://localhost:${PORT}/ || exit 1
"#;

    fn resolved(vars: &[(&str, &str)]) -> Result<StackSpec, ResolveError> {
        let manifest = parse_manifest("ams.yml", STACK).unwrap();
        let variables = effective_variables(&manifest.variables, &map(&[]), &map(vars)).unwrap();
        resolve(&manifest, &variables)
    }

    #[test]
    fn resolves_the_stack_with_defaults_and_request_values() {
        let stack = resolved(&[("API_TOKEN", "t0k3n")]).unwrap();
        assert_eq!(
            (stack.name.as_str(), stack.version.as_str()),
            ("ams-project", "6.4.0")
        );
        let web = &stack.services[0];
        assert_eq!(web.image, "127.0.0.1:5000/shiplog-test/web:v1");
        assert_eq!(
            web.environment,
            map(&[
                ("GREETING", "hello"),
                ("TOKEN", "t0k3n"),
                ("PRICE", "5$ or $HOME")
            ])
        );
        assert_eq!(
            web.ports,
            [PortSpec {
                host_ip: Some("127.0.0.1".into()),
                host_port: None,
                container_port: 8080,
                protocol: "tcp".into()
            }]
        );
        assert_eq!(
            web.healthcheck.as_ref().unwrap().test[1],
            "wget -q -O- http://localhost:8080/ || exit 1"
        );

        let stack = resolved(&[
            ("API_TOKEN", "t"),
            ("TAG", "v2"),
            ("PORT", "9090"),
            ("GREETING", ""),
        ])
        .unwrap();
        let web = &stack.services[0];
        assert_eq!(web.image, "127.0.0.1:5000/shiplog-test/web:v2");
        assert_eq!(web.environment["GREETING"], "");
        assert_eq!(web.ports[0].container_port, 9090);
    }

    #[test]
    fn a_variable_value_cannot_change_the_structure() {
        let stack = resolved(&[("API_TOKEN", "x"), ("GREETING", "a: b\nc")]).unwrap();
        let web = &stack.services[0];
        assert_eq!(web.environment.len(), 3);
        assert_eq!(web.environment["GREETING"], "a: b\nc");
        let err = resolved(&[
            ("API_TOKEN", "x"),
            ("PORT", "80\"]\n    privileged: true #"),
        ])
        .unwrap_err();
        assert!(
            matches!(&err, ResolveError::Invalid(m) if m.starts_with("service 'web', key 'ports': invalid port")),
            "{err}"
        );
    }

    #[test]
    fn missing_variables_are_listed_all_at_once() {
        let manifest = parse_manifest("ams.yml", STACK).unwrap();
        // Bypass effective_variables: `resolve` must stand on its own.
        let err = resolve(&manifest, &map(&[])).unwrap_err();
        assert_eq!(
            err,
            ResolveError::MissingVariables(vec![
                "API_TOKEN".into(),
                "GREETING".into(),
                "PORT".into()
            ])
        );
        assert_eq!(
            err.to_string(),
            "missing value for variables: API_TOKEN, GREETING, PORT (give them in the request's variables)"
        );
    }

    #[test]
    fn required_interpolation_carries_the_authors_message() {
        let text = "name: s\nx-shiplog: { version: 1.0.0 }\nservices:\n  web:\n    image: x:${TAG:?set TAG to the release tag}\n    environment: [\"A=${A}\", \"B=${B?}\"]\n";
        let manifest = parse_manifest("s.yml", text).unwrap();
        let err = resolve(&manifest, &map(&[])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "variable 'TAG' is required: set TAG to the release tag (also missing: A, B)"
        );
        let err = resolve(&manifest, &map(&[("TAG", "1")])).unwrap_err();
        assert_eq!(
            err,
            ResolveError::MissingVariables(vec!["A".into(), "B".into()])
        );
        let stack = resolve(&manifest, &map(&[("TAG", "1"), ("A", "a"), ("B", "")])).unwrap();
        assert_eq!(stack.services[0].image, "x:1");
        assert_eq!(stack.services[0].environment, map(&[("A", "a"), ("B", "")]));
    }

    #[test]
    fn parse_and_resolve_agree_when_every_variable_is_given() {
        let text = "name: s\nx-shiplog: { version: 1.0.0 }\nservices:\n  web:\n    image: x\n    ports: [\"${P}:80\"]\n    volumes: [\"${SRC}:/data\"]\n";
        let manifest = parse_manifest("s.yml", text).unwrap();
        let ok = resolve(&manifest, &map(&[("P", "8080"), ("SRC", "/srv/data")])).unwrap();
        assert_eq!(ok.services[0].volumes[0].source, "/srv/data");
        assert!(ok.services[0].volumes[0].bind);
        let err = resolve(&manifest, &map(&[("P", "8080"), ("SRC", "./data")])).unwrap_err();
        assert!(
            err.to_string().contains("relative bind mount './data'"),
            "{err}"
        );
    }
}

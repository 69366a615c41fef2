//! Stack files: read and fully validated at catalog load.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_yaml_ng::{Mapping, Value};

use super::compose::{self, Issue};
use super::interpolate::Interpolator;
use super::vartype::VariableType;
use super::version::{
    NAME_RULE, VERSION_RULE, is_valid_name, is_valid_variable_name, is_valid_version,
};

/// A variable declared in `x-shiplog.variables`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VariableDef {
    pub name: String,
    pub default: Option<String>,
    pub required: bool,
    pub description: Option<String>,
    /// `string` unless declared; manifests recorded before types existed read as strings.
    #[serde(default, rename = "type")]
    pub kind: VariableType,
}

/// One stack version of the catalog: the file's identity and declarations, plus its text,
/// from which `resolve` builds the desired state once the variables are known.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub stack_name: String,
    pub version: String,
    pub description: Option<String>,
    /// In declaration order.
    pub variables: Vec<VariableDef>,
    /// The file it was read from (relative to its catalog source), for messages.
    pub file: String,
    pub source_text: String,
}

/// A file that cannot be a catalog entry. Displays as `file:line: message`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileError {
    pub file: String,
    /// 1-based; `None` when the problem has no single place (e.g. a missing key).
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}: {}", self.file, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

impl std::error::Error for FileError {}

/// Parses and validates a stack file. The compose part is checked as `resolve` would check
/// it: values that depend on a variable without a declared default are known only at
/// deployment and are checked then; everything else must be valid now, so a bad file is
/// refused when the catalog loads rather than when someone deploys it.
pub fn parse_manifest(file: &str, text: &str) -> Result<Manifest, FileError> {
    let at = |issue: Issue| FileError {
        file: file.to_owned(),
        line: locate(text, &issue.path),
        message: issue.to_string(),
    };
    let doc = load(text).map_err(|(line, message)| FileError {
        file: file.to_owned(),
        line,
        message,
    })?;
    let Value::Mapping(top) = &doc else {
        return Err(at(Issue::new(
            &[],
            "a stack file must be a YAML mapping (name, x-shiplog, services)",
        )));
    };
    let stack_name = stack_name(top).map_err(at)?;
    let (version, description, variables) = x_shiplog(top).map_err(at)?;

    let defaults: BTreeMap<String, String> = variables
        .iter()
        .filter_map(|v| Some((v.name.clone(), v.default.clone()?)))
        .collect();
    let mut interp = Interpolator::checking(&defaults);
    let node = compose::to_node(&doc, &mut interp).map_err(at)?;
    compose::build_stack(&node, &stack_name, &version).map_err(at)?;

    Ok(Manifest {
        stack_name,
        version,
        description,
        variables,
        file: file.to_owned(),
        source_text: text.to_owned(),
    })
}

/// The YAML document with merge keys (`<<: *anchor`) applied. Errors carry the line.
pub(crate) fn load(text: &str) -> Result<Value, (Option<usize>, String)> {
    let mut doc: Value = serde_yaml_ng::from_str(text).map_err(|e| {
        let line = e.location().map(|l| {
            duplicate_key_line(text, &e.to_string(), l.line(), l.column()).unwrap_or(l.line())
        });
        (line, format!("invalid YAML: {e}"))
    })?;
    doc.apply_merge()
        .map_err(|e| (None, format!("invalid YAML merge key (<<): {e}")))?;
    Ok(doc)
}

/// libyaml places a duplicate key at the start of its mapping; the second occurrence is the
/// line to fix.
fn duplicate_key_line(text: &str, message: &str, line: usize, column: usize) -> Option<usize> {
    let key = message
        .split("duplicate entry with key \"")
        .nth(1)?
        .split('"')
        .next()?;
    let indent = column.checked_sub(1)?;
    let mut seen = false;
    for (i, l) in text.lines().enumerate().skip(line.checked_sub(1)?) {
        let content = l.trim_start();
        if content.is_empty() || content.starts_with('#') {
            continue;
        }
        let at = l.len() - content.len();
        if at < indent {
            break;
        }
        if at == indent && is_key_line(content, key) {
            if seen {
                return Some(i + 1);
            }
            seen = true;
        }
    }
    None
}

fn stack_name(top: &Mapping) -> Result<String, Issue> {
    match top.get("name") {
        None | Some(Value::Null) => Err(Issue::new(
            &[],
            "key 'name' is required: the stack name, at the top of the file",
        )),
        Some(Value::String(name)) if is_valid_name(name) => Ok(name.clone()),
        Some(Value::String(name)) => Err(Issue::new(
            &["name"],
            format!("invalid stack name '{name}': {NAME_RULE}"),
        )),
        Some(_) => Err(Issue::new(&["name"], "the stack name must be a string")),
    }
}

type Declarations = (String, Option<String>, Vec<VariableDef>);

/// The `x-shiplog` block, read as written: it is not interpolated.
fn x_shiplog(top: &Mapping) -> Result<Declarations, Issue> {
    const BLOCK: &str = "x-shiplog";
    let block = match top.get(BLOCK) {
        Some(Value::Mapping(block)) => block,
        None | Some(Value::Null) => {
            return Err(Issue::new(
                &[],
                "key 'x-shiplog' is required, with at least the stack version (x-shiplog: { version: 1.0.0 })",
            ));
        }
        Some(_) => return Err(Issue::new(&[BLOCK], "must be a mapping")),
    };
    let mut version = None;
    let mut description = None;
    let mut variables = Vec::new();
    for (key, value) in block {
        let key = key.as_str().unwrap_or_default();
        match key {
            "version" => version = Some(stack_version(value)?),
            "description" => description = optional_string(value, &[BLOCK, key])?,
            "variables" => variables = variable_defs(value)?,
            _ => {
                return Err(Issue::new(
                    &[BLOCK, key],
                    "unknown key (x-shiplog has version, description and variables)",
                ));
            }
        }
    }
    let version = version
        .ok_or_else(|| Issue::new(&[BLOCK], "needs 'version', the stack version (e.g. 1.0.0)"))?;
    Ok((version, description, variables))
}

fn stack_version(value: &Value) -> Result<String, Issue> {
    let path = ["x-shiplog", "version"];
    let version = match value {
        Value::String(s) => s.clone(),
        // An integer reads back as written; a float would not (`1.10` is `1.1`).
        Value::Number(n) if n.is_u64() => n.to_string(),
        Value::Number(n) => {
            return Err(Issue::new(
                &path,
                format!(
                    "write the version as a string (version: \"{n}…\"): YAML reads it as a number"
                ),
            ));
        }
        _ => return Err(Issue::new(&path, "must be a string")),
    };
    if !is_valid_version(&version) {
        return Err(Issue::new(
            &path,
            format!("invalid version '{version}': {VERSION_RULE}"),
        ));
    }
    Ok(version)
}

fn optional_string(value: &Value, path: &[&str]) -> Result<Option<String>, Issue> {
    match value {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        _ => Err(Issue::new(path, "must be a string")),
    }
}

fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// `NAME: value` is shorthand for a default; `NAME: { default, required, description }`.
fn variable_defs(value: &Value) -> Result<Vec<VariableDef>, Issue> {
    let base = ["x-shiplog", "variables"];
    let entries = match value {
        Value::Null => return Ok(Vec::new()),
        Value::Mapping(entries) => entries,
        _ => return Err(Issue::new(&base, "must be a mapping of variable names")),
    };
    let mut defs = Vec::with_capacity(entries.len());
    for (name, def) in entries {
        let name = name.as_str().unwrap_or_default();
        let path = ["x-shiplog", "variables", name];
        if !is_valid_variable_name(name) {
            return Err(Issue::new(
                &path,
                format!(
                    "invalid variable name {name:?}: use letters, digits and '_', not starting with a digit"
                ),
            ));
        }
        let mut var = VariableDef {
            name: name.to_owned(),
            default: None,
            required: false,
            description: None,
            kind: VariableType::String,
        };
        let mut type_name: Option<String> = None;
        let mut select_options: Option<Vec<String>> = None;
        match def {
            Value::Null => {}
            Value::Mapping(options) => {
                for (key, value) in options {
                    let key = key.as_str().unwrap_or_default();
                    let path = ["x-shiplog", "variables", name, key];
                    match key {
                        "default" => {
                            var.default = match value {
                                Value::Null => None,
                                v => Some(scalar_text(v).ok_or_else(|| {
                                    Issue::new(&path, "must be a string, number or boolean")
                                })?),
                            }
                        }
                        "required" => {
                            var.required = value
                                .as_bool()
                                .ok_or_else(|| Issue::new(&path, "must be true or false"))?
                        }
                        "description" => var.description = optional_string(value, &path)?,
                        "type" => {
                            type_name = Some(
                                value
                                    .as_str()
                                    .ok_or_else(|| {
                                        Issue::new(
                                            &path,
                                            format!("must be one of {}", VariableType::NAMES),
                                        )
                                    })?
                                    .to_owned(),
                            )
                        }
                        "options" => {
                            let list = value
                                .as_sequence()
                                .ok_or_else(|| Issue::new(&path, "must be a list of values"))?;
                            select_options = Some(
                                list.iter()
                                    .map(|v| {
                                        scalar_text(v).ok_or_else(|| {
                                            Issue::new(&path, "options must be plain values")
                                        })
                                    })
                                    .collect::<Result<_, _>>()?,
                            );
                        }
                        _ => {
                            return Err(Issue::new(
                                &path,
                                "unknown variable option (default, required, description, type, options)",
                            ));
                        }
                    }
                }
            }
            v => {
                var.default = Some(scalar_text(v).ok_or_else(|| {
                    Issue::new(
                        &path,
                        "must be a default value or a mapping (default, required, description)",
                    )
                })?);
            }
        }
        if type_name.is_some() || select_options.is_some() {
            let path = ["x-shiplog", "variables", name, "type"];
            var.kind =
                VariableType::parse(type_name.as_deref().unwrap_or("string"), select_options)
                    .map_err(|why| Issue::new(&path, why))?;
        }
        if let Some(default) = &var.default
            && let Err(wanted) = var.kind.check(default)
        {
            let path = ["x-shiplog", "variables", name, "default"];
            return Err(Issue::new(
                &path,
                format!("default {default:?} is not {wanted}"),
            ));
        }
        defs.push(var);
    }
    Ok(defs)
}

/// The 1-based line of the key at `path` in block-style YAML, or of its nearest ancestor
/// found. A text search is enough here: the YAML itself has already parsed.
pub(crate) fn locate(text: &str, path: &[String]) -> Option<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let mut found = None;
    let mut start = 0;
    // Indentation of the key found last; `None`: looking for a top-level key.
    let mut parent: Option<usize> = None;
    'keys: for key in path {
        let mut child_indent = None;
        for (i, line) in lines.iter().enumerate().skip(start) {
            let content = line.trim_start();
            if content.is_empty() || content.starts_with('#') {
                continue;
            }
            let indent = line.len() - content.len();
            if parent.is_some_and(|p| indent <= p) {
                break;
            }
            // Only keys at the block's own indentation, not deeper ones of the same name.
            if *child_indent.get_or_insert(if parent.is_none() { 0 } else { indent }) != indent {
                continue;
            }
            if is_key_line(content, key) {
                found = Some(i + 1);
                start = i + 1;
                parent = Some(indent);
                continue 'keys;
            }
        }
        break;
    }
    found
}

fn is_key_line(content: &str, key: &str) -> bool {
    ["", "\"", "'"].iter().any(|quote| {
        content
            .strip_prefix(quote)
            .and_then(|c| c.strip_prefix(key))
            .and_then(|c| c.strip_prefix(quote))
            .and_then(|c| c.strip_prefix(':'))
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(char::is_whitespace))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"name: ams-project
x-shiplog:
  version: 6.4.0
  description: "The AMS project: ${not interpolated}"
  variables:
    GREETING: { default: "hello", description: "What the page says" }
    API_TOKEN: { required: true }
    PORT: "8080"
    RETRIES: 3
    OPTIONAL:
services:
  web:
    image: 127.0.0.1:5000/shiplog-test/web:${TAG:-v1}
    environment:
      GREETING: ${GREETING}
      TOKEN: ${API_TOKEN}
    ports: ["127.0.0.1::${PORT}"]
"#;

    #[test]
    fn parses_the_header_and_the_variables() {
        let m = parse_manifest("ams/6.4.0.yml", GOOD).unwrap();
        assert_eq!(m.stack_name, "ams-project");
        assert_eq!(m.version, "6.4.0");
        assert_eq!(
            m.description.as_deref(),
            Some("The AMS project: ${not interpolated}")
        );
        assert_eq!(m.file, "ams/6.4.0.yml");
        assert_eq!(m.source_text, GOOD);
        let var =
            |name: &str, default: Option<&str>, required, description: Option<&str>| VariableDef {
                name: name.into(),
                default: default.map(Into::into),
                required,
                description: description.map(Into::into),
                kind: VariableType::String,
            };
        assert_eq!(
            m.variables,
            [
                var("GREETING", Some("hello"), false, Some("What the page says")),
                var("API_TOKEN", None, true, None),
                var("PORT", Some("8080"), false, None),
                var("RETRIES", Some("3"), false, None),
                var("OPTIONAL", None, false, None),
            ]
        );
    }

    fn error(text: &str) -> FileError {
        parse_manifest("f.yml", text).unwrap_err()
    }

    #[test]
    fn yaml_syntax_errors_carry_the_line() {
        let text = "name: s\nx-shiplog: { version: 1.0.0 }\nservices:\n  web:\n    image: [unclosed\n  db:\n";
        let err = error(text);
        assert_eq!(err.file, "f.yml");
        assert!(err.message.starts_with("invalid YAML"), "{err}");
        assert!(matches!(err.line, Some(5 | 6)), "{err:?}");

        let err = error(
            "name: s\nx-shiplog: {version: 1}\nservices:\n  web:\n    image: a\n   bad: indent\n",
        );
        assert_eq!(err.line, Some(6), "{err}");
        assert!(
            err.to_string().starts_with("f.yml:6: invalid YAML"),
            "{err}"
        );

        let err = error("name: s\nname: t\n");
        assert_eq!(err.line, Some(2), "{err}");
        let err = error("name: s\nservices:\n  web:\n    image: a\n    ports: []\n    image: b\n");
        assert_eq!(err.line, Some(6), "{err}");
        assert!(err.message.contains("duplicate"), "{err}");
    }

    #[test]
    fn semantic_errors_name_the_place_and_find_the_line() {
        let base = "name: s\nx-shiplog:\n  version: 1.0.0\nservices:\n  web:\n    image: nginx\n";
        let err = error(&format!(
            "{base}  app:\n    build: ./app\n    ports: [\"80\"]\n"
        ));
        assert_eq!(
            err.to_string(),
            "f.yml:8: service 'app', key 'build': not supported: a catalog deploys images; \
             build and push the image in CI and reference it with 'image:'"
        );

        let err = error(&format!("{base}  db:\n    environment: {{ A: b }}\n"));
        assert_eq!(
            err.to_string(),
            "f.yml:7: service 'db': key 'image' is required"
        );

        let err = error(&format!(
            "{base}    healthcheck:\n      test: x\n      interval: soon\n"
        ));
        assert_eq!(err.line, Some(9), "{err}");
        assert!(
            err.message
                .starts_with("service 'web', key 'healthcheck.interval': invalid duration 'soon'")
        );

        let err = error("x-shiplog: { version: 1.0.0 }\nservices: { web: { image: x } }\n");
        assert_eq!(
            err.to_string(),
            "f.yml: key 'name' is required: the stack name, at the top of the file"
        );
        let err = error("name: My Stack\nx-shiplog: { version: 1.0.0 }\n");
        assert_eq!(err.line, Some(1));
        assert!(
            err.message.contains("invalid stack name 'My Stack'"),
            "{err}"
        );

        let err = error("name: s\nservices: { web: { image: x } }\n");
        assert!(err.message.contains("key 'x-shiplog' is required"), "{err}");
        let err = error("name: s\nx-shiplog:\n  description: d\nservices: { web: { image: x } }\n");
        assert_eq!(
            err.to_string(),
            "f.yml:2: key 'x-shiplog': needs 'version', the stack version (e.g. 1.0.0)"
        );
        let err = error("name: s\nx-shiplog:\n  version: 1.0 beta\n");
        assert_eq!(err.line, Some(3));
        assert!(err.message.contains("invalid version '1.0 beta'"), "{err}");
        let err = error("name: s\nx-shiplog:\n  version: 1.10\n");
        assert!(err.message.contains("as a string"), "{err}");
        let err =
            error("name: s\nx-shiplog:\n  version: 1.0.0\n  variables:\n    X: { secret: true }\n");
        assert_eq!(err.line, Some(5));
        assert!(
            err.message
                .starts_with("key 'x-shiplog.variables.X.secret': unknown variable option"),
            "{err}"
        );
        let err = error("name: s\nx-shiplog:\n  version: 1.0.0\n  variables:\n    1X: a\n");
        assert!(err.message.contains("invalid variable name"), "{err}");
    }

    #[test]
    fn integer_versions_are_accepted_as_written() {
        let m = parse_manifest(
            "f.yml",
            "name: s\nx-shiplog: { version: 7 }\nservices: { web: { image: x } }",
        )
        .unwrap();
        assert_eq!(m.version, "7");
    }

    #[test]
    fn values_that_depend_on_unknown_variables_are_checked_at_deployment() {
        // PORT has no default: the port cannot be checked now, and that is not an error.
        let text = "name: s\nx-shiplog: { version: 1.0.0 }\nservices:\n  web:\n    image: x\n    ports: [\"${PORT}:80\"]\n";
        parse_manifest("f.yml", text).unwrap();
        // A declared default is a value the file will be deployed with: it is checked.
        let with_default = text.replace(
            "version: 1.0.0 }",
            "version: 1.0.0, variables: { PORT: abc } }",
        );
        let err = error(&with_default);
        assert!(err.message.contains("invalid port 'abc:80'"), "{err}");
        // So is an inline default: it is what an unset variable gives.
        let inline = text.replace("${PORT}", "${PORT:-80-90}");
        assert!(error(&inline).message.contains("port ranges"));
        // And interpolation syntax is checked everywhere.
        let bad = text.replace("${PORT}", "${PORT");
        let err = error(&bad);
        assert_eq!(err.line, Some(6));
        assert!(
            err.message
                .starts_with("service 'web', key 'ports': invalid interpolation"),
            "{err}"
        );
    }

    #[test]
    fn merge_keys_and_anchors_work() {
        let text = "name: s\nx-shiplog: { version: 1.0.0 }\nx-common: &common\n  restart: always\n  environment: { A: b }\nservices:\n  web:\n    <<: *common\n    image: x\n";
        parse_manifest("f.yml", text).unwrap();
    }

    #[test]
    fn locate_follows_the_key_path() {
        let text = "name: s\nservices:\n  db:\n    image: x\n    environment:\n      image: not-this\n  web:\n    # comment\n    environment: {}\n    image: y\n";
        let path = |p: &[&str]| p.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(locate(text, &path(&["services", "web", "image"])), Some(10));
        assert_eq!(locate(text, &path(&["services", "db", "image"])), Some(4));
        assert_eq!(locate(text, &path(&["services", "web", "ports"])), Some(7));
        assert_eq!(
            locate(text, &path(&["services", "db", "environment", "image"])),
            Some(6)
        );
        assert_eq!(locate(text, &path(&["volumes"])), None);
        assert_eq!(locate(text, &[]), None);
    }
}

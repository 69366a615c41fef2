//! The compose part of a stack file: from parsed YAML to `StackSpec`.
//!
//! The YAML is parsed first and only then are string scalars interpolated, so a variable
//! value can never add keys or items. Keys are never interpolated (compose does not either).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;

use serde_yaml_ng::Value;

use super::interpolate::Interpolator;
use super::version::{NAME_RULE, is_valid_name};
use crate::spec::{
    ContainerOptions, HealthSpec, Limits, Logging, NetworkAttachment, NetworkSpec, PortSpec,
    ServiceSpec, StackSpec, VolumeSpec,
};

/// Service keys that are valid compose and accepted, but not applied (see each comment).
pub const IGNORED_SERVICE_KEYS: &[&str] = &[
    // The engine's platform is used.
    "platform",
    // Shiplog always pulls before it deploys.
    "pull_policy",
];

/// Service keys refused with a reason: ignoring them would deploy something other than
/// what the file says.
pub const REFUSED_SERVICE_KEYS: &[(&str, &str)] = &[
    (
        "build",
        "a catalog deploys images; build and push the image in CI and reference it with 'image:'",
    ),
    (
        "container_name",
        "Shiplog names containers itself (it replaces them during deployments); remove it",
    ),
    (
        "env_file",
        "env files are not part of the catalog and have no base directory on a remote host; \
         use 'environment:' with ${VARIABLES}",
    ),
    (
        "secrets",
        "service secrets are not supported yet; pass the value as an x-shiplog variable",
    ),
    ("configs", "service configs are not supported yet"),
    (
        "network_mode",
        "services join the stack's own networks ('<stack>_default' or those listed under 'networks'); network_mode is not supported",
    ),
    (
        "extends",
        "extends needs other files, which a catalog entry does not have",
    ),
    (
        "volumes_from",
        "volumes_from is not supported; share a named volume instead",
    ),
    ("ulimits", "ulimits are not supported yet"),
    ("devices", "device mappings are not supported yet"),
];

const KNOWN_SERVICE_KEYS: &[&str] = &[
    "image",
    "environment",
    "command",
    "entrypoint",
    "ports",
    "volumes",
    "labels",
    "healthcheck",
    "restart",
    "depends_on",
    "deploy",
    "mem_limit",
    "cpus",
    "profiles",
    "hostname",
    "user",
    "working_dir",
    "stop_signal",
    "stop_grace_period",
    "privileged",
    "tty",
    "stdin_open",
    "init",
    "cap_add",
    "cap_drop",
    "security_opt",
    "dns",
    "extra_hosts",
    "expose",
    "sysctls",
    "shm_size",
    "logging",
    "networks",
];

/// Labels Shiplog sets on every container; a file must not fake them.
const RESERVED_LABEL_PREFIXES: &[&str] = &["io.shiplog.", "com.docker.compose."];

/// A problem at a place in the file. `path` holds mapping keys only (no list indices): it
/// both names the place in the message and finds the line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Issue {
    pub path: Vec<String>,
    pub message: String,
}

impl Issue {
    pub(crate) fn new(path: &[&str], message: impl Into<String>) -> Self {
        Self {
            path: path.iter().map(|s| s.to_string()).collect(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.path.as_slice() {
            [] => f.write_str(&self.message),
            [s, service] if s == "services" => write!(f, "service '{service}': {}", self.message),
            [s, service, rest @ ..] if s == "services" => {
                write!(
                    f,
                    "service '{service}', key '{}': {}",
                    rest.join("."),
                    self.message
                )
            }
            path => write!(f, "key '{}': {}", path.join("."), self.message),
        }
    }
}

/// The document after interpolation.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Node {
    Null,
    Bool(bool),
    Number(String),
    Str(String),
    /// A string whose value is known only at deployment: checked then, skipped at load.
    Deferred,
    Seq(Vec<Node>),
    Map(Vec<(String, Node)>),
}

/// A scalar's text, or `Deferred` when it is known only at deployment.
enum Text<'a> {
    Known(std::borrow::Cow<'a, str>),
    Deferred,
}

impl Node {
    fn text(&self) -> Option<Text<'_>> {
        match self {
            Node::Str(s) => Some(Text::Known(s.as_str().into())),
            Node::Number(n) => Some(Text::Known(n.as_str().into())),
            Node::Bool(b) => Some(Text::Known(if *b { "true" } else { "false" }.into())),
            Node::Deferred => Some(Text::Deferred),
            _ => None,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Node::Null => "null",
            Node::Bool(_) => "a boolean",
            Node::Number(_) => "a number",
            Node::Str(_) | Node::Deferred => "a string",
            Node::Seq(_) => "a list",
            Node::Map(_) => "a mapping",
        }
    }
}

/// Converts the whole document, interpolating every string scalar except inside top-level
/// `x-*` extension blocks (the `x-shiplog` block is read as written).
pub(crate) fn to_node(doc: &Value, interp: &mut Interpolator<'_>) -> Result<Node, Issue> {
    let Value::Mapping(top) = doc else {
        return Err(Issue::new(
            &[],
            "a stack file must be a YAML mapping (name, x-shiplog, services)",
        ));
    };
    let mut entries = Vec::new();
    for (key, value) in top {
        let key = key_text(key, &[])?;
        if key.starts_with("x-") {
            continue;
        }
        let mut path = vec![key.clone()];
        entries.push((key, convert(value, &mut path, interp)?));
    }
    Ok(Node::Map(entries))
}

fn key_text(key: &Value, path: &[String]) -> Result<String, Issue> {
    match key {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        _ => Err(Issue {
            path: path.to_vec(),
            message: "mapping keys must be strings".into(),
        }),
    }
}

fn convert(
    value: &Value,
    path: &mut Vec<String>,
    interp: &mut Interpolator<'_>,
) -> Result<Node, Issue> {
    Ok(match value {
        Value::Null => Node::Null,
        Value::Bool(b) => Node::Bool(*b),
        Value::Number(n) => Node::Number(n.to_string()),
        Value::String(s) => match interp.interpolate(s) {
            Ok(Some(s)) => Node::Str(s),
            Ok(None) => Node::Deferred,
            Err(message) => {
                return Err(Issue {
                    path: path.clone(),
                    message,
                });
            }
        },
        Value::Sequence(items) => Node::Seq(
            items
                .iter()
                .map(|v| convert(v, path, interp))
                .collect::<Result<_, _>>()?,
        ),
        Value::Mapping(map) => {
            let mut entries = Vec::with_capacity(map.len());
            for (k, v) in map {
                let key = key_text(k, path)?;
                path.push(key.clone());
                let node = convert(v, path, interp);
                path.pop();
                entries.push((key, node?));
            }
            Node::Map(entries)
        }
        Value::Tagged(tagged) => {
            return Err(Issue {
                path: path.clone(),
                message: format!("YAML tags are not supported (found '{}')", tagged.tag),
            });
        }
    })
}

fn get<'a>(map: &'a [(String, Node)], key: &str) -> Option<&'a Node> {
    map.iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

/// Builds the desired state. `name` and `version` come from the manifest (validated there).
pub(crate) fn build_stack(doc: &Node, name: &str, version: &str) -> Result<StackSpec, Issue> {
    let Node::Map(top) = doc else {
        return Err(Issue::new(
            &[],
            "a stack file must be a YAML mapping (name, x-shiplog, services)",
        ));
    };
    for (key, value) in top {
        match key.as_str() {
            // `version` is compose's obsolete file-format version, not the stack's.
            "name" | "version" | "services" | "volumes" | "networks" => {}
            "configs" | "secrets" => {
                if !matches!(value, Node::Map(_) | Node::Null) {
                    return Err(Issue::new(
                        &[key],
                        format!("must be a mapping, not {}", value.kind()),
                    ));
                }
            }
            "include" => {
                return Err(Issue::new(
                    &[key],
                    "include needs other files, which a catalog entry does not have",
                ));
            }
            _ => return Err(Issue::new(&[key], "unknown top-level key")),
        }
    }
    let volumes = declared_volumes(get(top, "volumes"))?;
    let services = match get(top, "services") {
        Some(Node::Map(services)) if !services.is_empty() => services,
        Some(Node::Map(_) | Node::Null) => {
            return Err(Issue::new(
                &["services"],
                "a stack needs at least one service",
            ));
        }
        Some(other) => {
            return Err(Issue::new(
                &["services"],
                format!("must be a mapping, not {}", other.kind()),
            ));
        }
        None => return Err(Issue::new(&[], "key 'services' is required")),
    };
    // Unsupported keys first, in every service: "uses build:" says more than a detail.
    for (service, body) in services {
        check_keys(service, body)?;
    }
    let mut specs = Vec::with_capacity(services.len());
    let mut gated = Vec::new();
    for (service, body) in services {
        let spec = build_service(service, body, &volumes)?;
        // As `docker compose up` without `--profile`: a service in a profile is not started.
        if has_profiles(body) {
            gated.push(spec.name);
        } else {
            specs.push(spec);
        }
    }
    if specs.is_empty() {
        return Err(Issue::new(
            &["services"],
            "every service is in a profile: nothing would be deployed (Shiplog activates no profile)",
        ));
    }
    for spec in &specs {
        if let Some(dependency) = spec.depends_on.iter().find(|d| gated.contains(d)) {
            return Err(Issue::new(
                &["services", spec.name.as_str(), "depends_on"],
                format!(
                    "depends on '{dependency}', which is in a profile and is not deployed \
                     (Shiplog activates no profile)"
                ),
            ));
        }
    }
    // After the services: a service asking for something unsupported (a fixed address)
    // is named before the network it asks it of.
    let networks = declared_networks(get(top, "networks"))?;
    for spec in &specs {
        if let Some(unknown) = spec
            .networks
            .iter()
            .find(|a| a.network != "default" && !networks.iter().any(|n| n.name == a.network))
        {
            return Err(Issue::new(
                &["services", spec.name.as_str(), "networks"],
                format!(
                    "network '{}' is not declared in the top-level 'networks'",
                    unknown.network
                ),
            ));
        }
    }
    Ok(StackSpec {
        name: name.to_owned(),
        version: version.to_owned(),
        services: start_order(specs)?,
        networks,
    })
}

fn has_profiles(body: &Node) -> bool {
    let Node::Map(entries) = body else {
        return false;
    };
    entries.iter().any(|(key, value)| {
        key == "profiles" && matches!(value, Node::Seq(items) if !items.is_empty())
    })
}

/// Networks declared at the top level. Shiplog creates them as `<stack>_<name>` bridge
/// networks; anything that asks for another network (external, another driver, fixed
/// addresses) is refused rather than silently replaced.
fn declared_networks(node: Option<&Node>) -> Result<Vec<NetworkSpec>, Issue> {
    let entries = match node {
        None | Some(Node::Null) => return Ok(Vec::new()),
        Some(Node::Map(entries)) => entries,
        Some(other) => {
            return Err(Issue::new(
                &["networks"],
                format!("must be a mapping, not {}", other.kind()),
            ));
        }
    };
    let mut networks = Vec::new();
    for (name, body) in entries {
        if !is_valid_name(name) {
            return Err(Issue::new(
                &["networks", name],
                format!("invalid network name: {NAME_RULE}"),
            ));
        }
        let mut network = NetworkSpec {
            name: name.clone(),
            internal: false,
        };
        match body {
            Node::Null => {}
            Node::Map(options) => {
                for (key, value) in options {
                    let path = ["networks", name.as_str(), key.as_str()];
                    match (key.as_str(), value) {
                        ("labels" | "attachable", _) => {}
                        ("driver", v) if matches!(v.text(), Some(Text::Known(d)) if d == "bridge") =>
                            {}
                        ("driver", Node::Deferred) => {}
                        ("internal", v) => {
                            network.internal =
                                flag(v).map_err(|e| Issue::new(&path, e))?.unwrap_or(false)
                        }
                        (
                            "external" | "name" | "driver" | "driver_opts" | "ipam" | "enable_ipv6",
                            _,
                        ) => {
                            return Err(Issue::new(
                                &path,
                                "not supported: Shiplog creates networks as '<stack>_<name>' \
                                 with the bridge driver",
                            ));
                        }
                        _ => return Err(Issue::new(&path, "unknown network option")),
                    }
                }
            }
            other => {
                return Err(Issue::new(
                    &["networks", name],
                    format!("must be a mapping or empty, not {}", other.kind()),
                ));
            }
        }
        if name != "default" {
            networks.push(network);
        }
    }
    Ok(networks)
}

/// A service's `networks`: a list of names, or a mapping of name to `aliases`.
fn service_networks(node: &Node) -> Result<Vec<NetworkAttachment>, String> {
    let mut attachments = Vec::new();
    match node {
        Node::Null => {}
        Node::Seq(_) => {
            for network in strings(node)? {
                attachments.push(NetworkAttachment {
                    network,
                    aliases: Vec::new(),
                });
            }
        }
        Node::Map(entries) => {
            for (network, options) in entries {
                let mut aliases = Vec::new();
                if let Node::Map(options) = options {
                    for (key, value) in options {
                        match key.as_str() {
                            "aliases" => aliases = strings(value)?,
                            "ipv4_address" | "ipv6_address" | "mac_address" | "link_local_ips" => {
                                return Err(format!(
                                    "'{key}' for network '{network}' is not supported: \
                                     the engine assigns addresses"
                                ));
                            }
                            "priority" | "gw_priority" => {}
                            other => {
                                return Err(format!(
                                    "unknown option '{other}' for network '{network}'"
                                ));
                            }
                        }
                    }
                } else if !matches!(options, Node::Null) {
                    return Err(format!(
                        "network '{network}' must be a mapping or empty, not {}",
                        options.kind()
                    ));
                }
                attachments.push(NetworkAttachment {
                    network: network.clone(),
                    aliases,
                });
            }
        }
        other => return Err(format!("must be a list or a mapping, not {}", other.kind())),
    }
    if attachments.iter().any(|a| !is_valid_name(&a.network)) {
        return Err(format!("invalid network name: {NAME_RULE}"));
    }
    // Only `default`: the same as saying nothing (keeps the config hash as it was).
    if attachments.len() == 1
        && attachments[0].network == "default"
        && attachments[0].aliases.is_empty()
    {
        attachments.clear();
    }
    Ok(attachments)
}

/// Named volumes declared at the top level. Shiplog creates them as `<stack>_<name>` with
/// the local driver, so anything that asks for another volume is refused rather than
/// silently replaced by a fresh, empty one.
fn declared_volumes(node: Option<&Node>) -> Result<BTreeSet<String>, Issue> {
    let entries = match node {
        None | Some(Node::Null) => return Ok(BTreeSet::new()),
        Some(Node::Map(entries)) => entries,
        Some(other) => {
            return Err(Issue::new(
                &["volumes"],
                format!("must be a mapping, not {}", other.kind()),
            ));
        }
    };
    let mut names = BTreeSet::new();
    for (name, def) in entries {
        if !is_valid_volume_name(name) {
            return Err(Issue::new(&["volumes", name], "invalid volume name"));
        }
        match def {
            Node::Null => {}
            Node::Map(opts) => {
                for (key, value) in opts {
                    let path = ["volumes", name.as_str(), key.as_str()];
                    match (key.as_str(), value) {
                        ("labels", _) => {}
                        ("driver", v) if matches!(v.text(), Some(Text::Known(d)) if d == "local") =>
                            {}
                        ("driver", Node::Deferred) => {}
                        ("external" | "name" | "driver" | "driver_opts", _) => {
                            return Err(Issue::new(
                                &path,
                                "not supported: Shiplog creates named volumes as '<stack>_<name>' \
                                 with the local driver",
                            ));
                        }
                        _ => return Err(Issue::new(&path, "unknown volume option")),
                    }
                }
            }
            other => {
                return Err(Issue::new(
                    &["volumes", name],
                    format!("must be a mapping or empty, not {}", other.kind()),
                ));
            }
        }
        names.insert(name.clone());
    }
    Ok(names)
}

fn check_keys(service: &str, body: &Node) -> Result<(), Issue> {
    let Node::Map(entries) = body else {
        return Ok(());
    };
    for (key, _) in entries {
        let key = key.as_str();
        if KNOWN_SERVICE_KEYS.contains(&key)
            || IGNORED_SERVICE_KEYS.contains(&key)
            || key.starts_with("x-")
        {
            continue;
        }
        let message = match REFUSED_SERVICE_KEYS.iter().find(|(k, _)| *k == key) {
            Some((_, reason)) => format!("not supported: {reason}"),
            None => "unknown or unsupported compose key".to_owned(),
        };
        return Err(Issue::new(&["services", service, key], message));
    }
    Ok(())
}

fn build_service(
    service: &str,
    body: &Node,
    volumes: &BTreeSet<String>,
) -> Result<ServiceSpec, Issue> {
    if !is_valid_name(service) {
        return Err(Issue::new(
            &["services", service],
            format!("invalid service name: {NAME_RULE}"),
        ));
    }
    let Node::Map(entries) = body else {
        return Err(Issue::new(
            &["services", service],
            format!("must be a mapping, not {}", body.kind()),
        ));
    };
    let mut spec = ServiceSpec {
        name: service.to_owned(),
        image: String::new(),
        environment: BTreeMap::new(),
        command: None,
        entrypoint: None,
        ports: Vec::new(),
        volumes: Vec::new(),
        labels: BTreeMap::new(),
        healthcheck: None,
        restart: None,
        depends_on: Vec::new(),
        limits: Limits::default(),
        options: ContainerOptions::default(),
        networks: Vec::new(),
    };
    let mut has_image = false;
    for (key, value) in entries {
        let fail = |message: String| Issue::new(&["services", service, key], message);
        match key.as_str() {
            "image" => {
                spec.image = image(value).map_err(fail)?;
                has_image = true;
            }
            "environment" => spec.environment = key_values(value).map_err(fail)?,
            "labels" => {
                spec.labels = key_values(value).map_err(fail)?;
                if let Some(reserved) = spec
                    .labels
                    .keys()
                    .find(|k| RESERVED_LABEL_PREFIXES.iter().any(|p| k.starts_with(p)))
                {
                    return Err(fail(format!(
                        "label '{reserved}' is reserved: Shiplog sets it"
                    )));
                }
            }
            "command" => spec.command = words(value).map_err(fail)?,
            "entrypoint" => spec.entrypoint = words(value).map_err(fail)?,
            "ports" => spec.ports = ports(value).map_err(fail)?,
            "volumes" => spec.volumes = service_volumes(value, volumes).map_err(fail)?,
            "healthcheck" => {
                spec.healthcheck = healthcheck(value).map_err(|(sub, message)| {
                    let mut path = vec!["services", service, key.as_str()];
                    path.extend(sub);
                    Issue::new(&path, message)
                })?
            }
            "restart" => spec.restart = restart(value).map_err(fail)?,
            "depends_on" => spec.depends_on = depends_on(value).map_err(fail)?,
            "deploy" => {
                let limits = deploy_limits(value).map_err(|(sub, message)| {
                    let mut path = vec!["services", service, key.as_str()];
                    path.extend(sub);
                    Issue::new(&path, message)
                })?;
                spec.limits.memory = limits.memory.or(spec.limits.memory);
                spec.limits.nano_cpus = limits.nano_cpus.or(spec.limits.nano_cpus);
            }
            "mem_limit" => spec.limits.memory = spec.limits.memory.or(memory(value).map_err(fail)?),
            "cpus" => spec.limits.nano_cpus = spec.limits.nano_cpus.or(cpus(value).map_err(fail)?),
            // Which services a profile gates is decided in `build` (they are not deployed).
            "profiles" => {
                words(value).map_err(fail)?;
            }
            "networks" => spec.networks = service_networks(value).map_err(fail)?,
            other => container_option(&mut spec.options, other, value).map_err(fail)?,
        }
    }
    if !has_image {
        return Err(Issue::new(
            &["services", service],
            "key 'image' is required",
        ));
    }
    Ok(spec)
}

/// Image references are checked lightly (the registry has the last word), but well enough
/// to catch what Docker would reject before any deployment starts.
fn image(node: &Node) -> Result<String, String> {
    let image = match node.text() {
        Some(Text::Known(s)) => s.into_owned(),
        Some(Text::Deferred) => return Ok(String::new()),
        None => return Err(format!("must be a string, not {}", node.kind())),
    };
    if image.is_empty() {
        return Err("must not be empty".into());
    }
    if image.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "invalid image reference {image:?}: it contains whitespace"
        ));
    }
    let name = image
        .split_once('@')
        .map_or(image.as_str(), |(name, _digest)| name);
    let repository = match name.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => repo,
        _ => name,
    };
    // The first component may be a registry host, where case does not matter.
    let path = match repository.split_once('/') {
        Some((host, rest)) if host.contains(['.', ':']) || host == "localhost" => rest,
        _ => repository,
    };
    if path.is_empty() || path.chars().any(|c| c.is_ascii_uppercase()) {
        return Err(format!(
            "invalid image reference '{image}': the repository name must be lowercase"
        ));
    }
    Ok(image)
}

/// `environment` and `labels`: a mapping (null values mean empty) or a list of `KEY=VALUE`
/// (a bare `KEY` means empty).
fn key_values(node: &Node) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    match node {
        Node::Null => {}
        Node::Map(entries) => {
            for (key, value) in entries {
                check_key(key)?;
                let value = match value {
                    Node::Null => String::new(),
                    other => match other.text() {
                        Some(Text::Known(s)) => s.into_owned(),
                        Some(Text::Deferred) => String::new(),
                        None => {
                            return Err(format!(
                                "the value of '{key}' must be a string, number or boolean"
                            ));
                        }
                    },
                };
                out.insert(key.clone(), value);
            }
        }
        Node::Seq(items) => {
            for item in items {
                let item = match item.text() {
                    Some(Text::Known(s)) => s.into_owned(),
                    // The key itself may depend on the variable; checked at deployment.
                    Some(Text::Deferred) => continue,
                    None => {
                        return Err(format!(
                            "list items must be KEY=VALUE strings, not {}",
                            item.kind()
                        ));
                    }
                };
                let (key, value) = item.split_once('=').unwrap_or((item.as_str(), ""));
                check_key(key)?;
                if out.insert(key.to_owned(), value.to_owned()).is_some() {
                    return Err(format!("'{key}' is set twice"));
                }
            }
        }
        other => {
            return Err(format!(
                "must be a mapping or a list of KEY=VALUE, not {}",
                other.kind()
            ));
        }
    }
    Ok(out)
}

fn check_key(key: &str) -> Result<(), String> {
    if key.is_empty()
        || key.chars().any(|c| c.is_whitespace() || c.is_control())
        || key.contains('=')
    {
        return Err(format!("invalid name {key:?}"));
    }
    Ok(())
}

/// `command` / `entrypoint`: a list as is, or a string split like a shell would.
fn words(node: &Node) -> Result<Option<Vec<String>>, String> {
    match node {
        Node::Null => Ok(None),
        Node::Seq(items) => items
            .iter()
            .map(|item| match item.text() {
                Some(Text::Known(s)) => Ok(s.into_owned()),
                Some(Text::Deferred) => Ok(String::new()),
                None => Err(format!("list items must be strings, not {}", item.kind())),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        other => match other.text() {
            Some(Text::Known(s)) => split_words(&s).map(Some),
            Some(Text::Deferred) => Ok(Some(Vec::new())),
            None => Err(format!("must be a string or a list, not {}", other.kind())),
        },
    }
}

/// Splits like a POSIX shell without expansion: whitespace separates words, single quotes
/// keep everything, double quotes keep everything but `\"`, `\\`, `\$` and `` \` ``.
pub(crate) fn split_words(s: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err(format!("unterminated single quote in {s:?}")),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => word.push(c),
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Err(format!("unterminated double quote in {s:?}")),
                        },
                        Some(c) => word.push(c),
                        None => return Err(format!("unterminated double quote in {s:?}")),
                    }
                }
            }
            '\\' => match chars.next() {
                Some('\n') => {}
                Some(c) => {
                    in_word = true;
                    word.push(c);
                }
                None => {
                    in_word = true;
                    word.push('\\');
                }
            },
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

fn ports(node: &Node) -> Result<Vec<PortSpec>, String> {
    let items = match node {
        Node::Null => return Ok(Vec::new()),
        Node::Seq(items) => items,
        other => return Err(format!("must be a list, not {}", other.kind())),
    };
    let mut out = Vec::new();
    for item in items {
        match item {
            Node::Map(entries) => out.push(long_port(entries)?),
            other => match other.text() {
                Some(Text::Known(s)) => out.push(short_port(&s)?),
                Some(Text::Deferred) => {}
                None => {
                    return Err(format!(
                        "list items must be strings or mappings, not {}",
                        other.kind()
                    ));
                }
            },
        }
    }
    Ok(out)
}

const PORT_FORMAT: &str = "expected [HOST_IP:][HOST_PORT:]CONTAINER_PORT[/PROTOCOL]";

/// `8080`, `80:8080`, `127.0.0.1:80:8080`, `127.0.0.1::8080`, `[::1]:80:8080`, each with an
/// optional `/tcp` or `/udp`.
pub(crate) fn short_port(s: &str) -> Result<PortSpec, String> {
    let (body, protocol) = match s.rsplit_once('/') {
        Some((body, protocol)) => (body, protocol),
        None => (s, "tcp"),
    };
    let protocol = check_protocol(protocol)?;
    let (ip, rest) = match body.strip_prefix('[') {
        Some(bracketed) => {
            let (ip, rest) = bracketed
                .split_once(']')
                .ok_or_else(|| format!("invalid port '{s}': {PORT_FORMAT}"))?;
            let rest = rest
                .strip_prefix(':')
                .ok_or_else(|| format!("invalid port '{s}': {PORT_FORMAT}"))?;
            (Some(ip), rest)
        }
        None => (None, body),
    };
    let fields: Vec<&str> = rest.split(':').collect();
    let (ip, host, container) = match (ip, fields.as_slice()) {
        (None, [container]) => (None, None, *container),
        (None, [host, container]) => (None, Some(*host), *container),
        (None, [ip, host, container]) => (Some(*ip), Some(*host), *container),
        (Some(ip), [host, container]) => (Some(ip), Some(*host), *container),
        _ => {
            return Err(format!(
                "invalid port '{s}': {PORT_FORMAT} (put an IPv6 address in brackets)"
            ));
        }
    };
    let host_ip = match ip {
        None | Some("") => None,
        Some(ip) => Some(check_ip(ip)?),
    };
    let host_port = match host {
        None | Some("") => None,
        Some(port) => Some(port_number(port, s)?),
    };
    Ok(PortSpec {
        host_ip,
        host_port,
        container_port: port_number(container, s)?,
        protocol,
    })
}

fn long_port(entries: &[(String, Node)]) -> Result<PortSpec, String> {
    let mut spec = PortSpec {
        host_ip: None,
        host_port: None,
        container_port: 0,
        protocol: "tcp".into(),
    };
    let mut has_target = false;
    let mut deferred = false;
    for (key, value) in entries {
        let text = match value {
            Node::Null => continue,
            v => match v.text() {
                Some(Text::Known(s)) => s.into_owned(),
                Some(Text::Deferred) => {
                    deferred = true;
                    continue;
                }
                None => return Err(format!("'{key}' must be a scalar, not {}", v.kind())),
            },
        };
        match key.as_str() {
            "target" => {
                spec.container_port = port_number(&text, &text)?;
                has_target = true;
            }
            "published" if !text.is_empty() => spec.host_port = Some(port_number(&text, &text)?),
            "published" => {}
            "host_ip" if !text.is_empty() => spec.host_ip = Some(check_ip(&text)?),
            "host_ip" => {}
            "protocol" => spec.protocol = check_protocol(&text)?,
            // Swarm-only or descriptive.
            "mode" | "name" | "app_protocol" => {}
            other => return Err(format!("unknown port option '{other}'")),
        }
    }
    if !has_target && !deferred {
        return Err("a port mapping needs 'target'".into());
    }
    Ok(spec)
}

fn port_number(text: &str, whole: &str) -> Result<u16, String> {
    if text.contains('-') {
        return Err(format!(
            "port ranges ('{whole}') are not supported; list each port"
        ));
    }
    match text.parse::<u16>() {
        Ok(port) if port > 0 => Ok(port),
        _ => Err(format!(
            "invalid port '{whole}': a port is a number from 1 to 65535 ({PORT_FORMAT})"
        )),
    }
}

fn check_ip(ip: &str) -> Result<String, String> {
    let ip = ip.trim_start_matches('[').trim_end_matches(']');
    ip.parse::<IpAddr>()
        .map(|_| ip.to_owned())
        .map_err(|_| format!("invalid host IP '{ip}'"))
}

fn check_protocol(protocol: &str) -> Result<String, String> {
    match protocol.to_ascii_lowercase().as_str() {
        p @ ("tcp" | "udp") => Ok(p.to_owned()),
        other => Err(format!("protocol '{other}' is not supported (tcp or udp)")),
    }
}

fn service_volumes(node: &Node, declared: &BTreeSet<String>) -> Result<Vec<VolumeSpec>, String> {
    let items = match node {
        Node::Null => return Ok(Vec::new()),
        Node::Seq(items) => items,
        other => return Err(format!("must be a list, not {}", other.kind())),
    };
    let mut out = Vec::new();
    for item in items {
        match item {
            Node::Map(entries) => out.extend(long_volume(entries, declared)?),
            other => match other.text() {
                Some(Text::Known(s)) => out.push(short_volume(&s, declared)?),
                Some(Text::Deferred) => {}
                None => {
                    return Err(format!(
                        "list items must be strings or mappings, not {}",
                        other.kind()
                    ));
                }
            },
        }
    }
    Ok(out)
}

/// `name:/path[:ro]` or `/abs:/path[:ro]`.
pub(crate) fn short_volume(s: &str, declared: &BTreeSet<String>) -> Result<VolumeSpec, String> {
    let fields: Vec<&str> = s.split(':').collect();
    let (source, target, options) = match fields.as_slice() {
        [target] => return Err(anonymous(target)),
        [source, target] => (*source, *target, ""),
        [source, target, options] => (*source, *target, *options),
        _ => return Err(format!("invalid volume '{s}': expected SOURCE:TARGET[:ro]")),
    };
    let mut read_only = false;
    for option in options.split(',').filter(|o| !o.is_empty()) {
        match option {
            "ro" => read_only = true,
            "rw" => read_only = false,
            // Docker Desktop consistency hints; no effect on Linux engines.
            "cached" | "delegated" | "consistent" => {}
            other => {
                return Err(format!(
                    "volume option '{other}' in '{s}' is not supported (ro or rw)"
                ));
            }
        }
    }
    mount(source, target, read_only, None, declared)
}

fn long_volume(
    entries: &[(String, Node)],
    declared: &BTreeSet<String>,
) -> Result<Option<VolumeSpec>, String> {
    let (mut kind, mut source, mut target, mut read_only) = (None, String::new(), None, false);
    for (key, value) in entries {
        let text = match value.text() {
            Some(Text::Known(s)) => Some(s.into_owned()),
            // Checked at deployment, when the value is known.
            Some(Text::Deferred) => return Ok(None),
            None => None,
        };
        let scalar = || {
            text.clone()
                .ok_or_else(|| format!("'{key}' must be a scalar, not {}", value.kind()))
        };
        match key.as_str() {
            "type" => kind = Some(scalar()?),
            "source" => source = scalar()?,
            "target" => target = Some(scalar()?),
            "read_only" => {
                read_only = boolean(&scalar()?).ok_or("'read_only' must be true or false")?
            }
            // Type-specific sub-options (nocopy, create_host_path, …) and Docker Desktop hints.
            "bind" | "volume" | "consistency" => {}
            other => return Err(format!("unknown volume option '{other}'")),
        }
    }
    let target = target.ok_or("a volume mapping needs 'target'")?;
    match kind.as_deref() {
        Some(kind @ ("volume" | "bind")) => {
            mount(&source, &target, read_only, Some(kind), declared).map(Some)
        }
        Some(other) => Err(format!(
            "volume type '{other}' is not supported (volume or bind)"
        )),
        None => Err("a volume mapping needs 'type' (volume or bind)".into()),
    }
}

fn mount(
    source: &str,
    target: &str,
    read_only: bool,
    kind: Option<&str>,
    declared: &BTreeSet<String>,
) -> Result<VolumeSpec, String> {
    if !target.starts_with('/') {
        return Err(format!(
            "volume target '{target}' must be an absolute path in the container"
        ));
    }
    if source.is_empty() {
        return Err(anonymous(target));
    }
    // Compose's rule: a source that looks like a path is a bind mount, anything else a name.
    let path_like = source.starts_with(['/', '.', '~']);
    let bind = match kind {
        Some(kind) => kind == "bind",
        None => path_like,
    };
    if bind {
        if !source.starts_with('/') {
            return Err(format!(
                "relative bind mount '{source}' is not supported: it has no base directory on a remote \
                 host; use an absolute path or a named volume"
            ));
        }
    } else {
        if path_like || !is_valid_volume_name(source) {
            return Err(format!("invalid volume name '{source}'"));
        }
        if !declared.contains(source) {
            return Err(format!(
                "named volume '{source}' is not declared under the top-level 'volumes' key"
            ));
        }
    }
    Ok(VolumeSpec {
        source: source.to_owned(),
        target: target.to_owned(),
        read_only,
        bind,
    })
}

fn anonymous(target: &str) -> String {
    format!(
        "anonymous volume '{target}' is not supported; give it a name (NAME:{target}) and declare it"
    )
}

fn is_valid_volume_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

fn boolean(s: &str) -> Option<bool> {
    match s {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

/// Errors carry the sub-key (e.g. `interval`) so the message and line point at it.
fn healthcheck(node: &Node) -> Result<Option<HealthSpec>, (Vec<&str>, String)> {
    let entries = match node {
        Node::Null => return Ok(None),
        Node::Map(entries) => entries,
        other => return Err((vec![], format!("must be a mapping, not {}", other.kind()))),
    };
    let mut spec = HealthSpec {
        test: Vec::new(),
        interval_ms: None,
        timeout_ms: None,
        retries: None,
        start_period_ms: None,
    };
    let mut disabled = false;
    for (key, value) in entries {
        let at = |message: String| (vec![key.as_str()], message);
        if matches!(value, Node::Null) {
            continue;
        }
        if key == "test" {
            spec.test = health_test(value).map_err(at)?;
            continue;
        }
        let text = match value.text() {
            Some(Text::Known(s)) => s.into_owned(),
            Some(Text::Deferred) => continue,
            None => return Err(at(format!("must be a scalar, not {}", value.kind()))),
        };
        match key.as_str() {
            "interval" => spec.interval_ms = Some(duration_ms(&text).map_err(at)?),
            "timeout" => spec.timeout_ms = Some(duration_ms(&text).map_err(at)?),
            "start_period" => spec.start_period_ms = Some(duration_ms(&text).map_err(at)?),
            // Docker ≥ 25 only; the spec has no field for it yet.
            "start_interval" => {
                duration_ms(&text).map_err(at)?;
            }
            "retries" => {
                spec.retries = Some(
                    text.parse()
                        .map_err(|_| at(format!("'{text}' is not a whole number")))?,
                )
            }
            "disable" => {
                disabled = boolean(&text).ok_or_else(|| at("must be true or false".into()))?
            }
            other => return Err(at(format!("unknown healthcheck option '{other}'"))),
        }
    }
    if disabled {
        return Ok(Some(HealthSpec {
            test: vec!["NONE".into()],
            ..spec
        }));
    }
    if spec.test.is_empty() {
        return Err((
            vec![],
            "a healthcheck needs 'test' (or 'disable: true')".into(),
        ));
    }
    Ok(Some(spec))
}

fn health_test(node: &Node) -> Result<Vec<String>, String> {
    match node {
        Node::Seq(items) => {
            let test = items
                .iter()
                .map(|item| match item.text() {
                    Some(Text::Known(s)) => Ok(s.into_owned()),
                    Some(Text::Deferred) => Ok(String::new()),
                    None => Err(format!("list items must be strings, not {}", item.kind())),
                })
                .collect::<Result<Vec<_>, _>>()?;
            match test.first().map(String::as_str) {
                Some("NONE") => Ok(test),
                Some("CMD" | "CMD-SHELL") if test.len() > 1 => Ok(test),
                Some("CMD" | "CMD-SHELL") => {
                    Err("the test list needs a command after CMD or CMD-SHELL".into())
                }
                _ => Err("a test list starts with CMD, CMD-SHELL or NONE".into()),
            }
        }
        other => match other.text() {
            Some(Text::Known(s)) if s.trim().is_empty() => Err("the test must not be empty".into()),
            Some(Text::Known(s)) => Ok(vec!["CMD-SHELL".into(), s.into_owned()]),
            Some(Text::Deferred) => Ok(vec!["CMD-SHELL".into(), String::new()]),
            None => Err(format!("must be a string or a list, not {}", other.kind())),
        },
    }
}

/// Compose durations (Go syntax): `1s`, `500ms`, `1m30s`, `1.5h`, `0`. Milliseconds,
/// rounded down.
pub(crate) fn duration_ms(s: &str) -> Result<u64, String> {
    let invalid =
        || format!("invalid duration '{s}': use a number with a unit, like 10s, 500ms or 1m30s");
    if s == "0" {
        return Ok(0);
    }
    let b = s.as_bytes();
    if b.is_empty() {
        return Err(invalid());
    }
    let mut nanos: u128 = 0;
    let mut i = 0;
    while i < b.len() {
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let whole = &s[start..i];
        let mut fraction = "";
        if i < b.len() && b[i] == b'.' {
            let f = i + 1;
            i += 1;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            fraction = &s[f..i];
        }
        if whole.is_empty() && fraction.is_empty() {
            return Err(invalid());
        }
        let unit_start = i;
        while i < b.len() && !b[i].is_ascii_digit() && b[i] != b'.' {
            i += 1;
        }
        let unit: u128 = match &s[unit_start..i] {
            "ns" => 1,
            "us" | "µs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(invalid()),
        };
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| invalid())?
        };
        // Enough digits for nanosecond precision of any unit, without overflow.
        let fraction = &fraction[..fraction.len().min(18)];
        let scale = 10u128.pow(fraction.len() as u32);
        let fraction: u128 = if fraction.is_empty() {
            0
        } else {
            fraction.parse().map_err(|_| invalid())?
        };
        nanos = whole
            .checked_mul(unit)
            .and_then(|n| n.checked_add(fraction * unit / scale))
            .and_then(|n| n.checked_add(nanos))
            .ok_or_else(invalid)?;
    }
    u64::try_from(nanos / 1_000_000).map_err(|_| invalid())
}

fn restart(node: &Node) -> Result<Option<String>, String> {
    let text = match node {
        Node::Null => return Ok(None),
        other => match other.text() {
            Some(Text::Known(s)) => s.into_owned(),
            Some(Text::Deferred) => return Ok(None),
            None => return Err(format!("must be a string, not {}", other.kind())),
        },
    };
    let valid = match text.split_once(':') {
        Some(("on-failure", n)) => n.parse::<u32>().is_ok(),
        Some(_) => false,
        None => matches!(
            text.as_str(),
            "no" | "always" | "on-failure" | "unless-stopped"
        ),
    };
    if !valid {
        return Err(format!(
            "invalid restart policy '{text}' (no, always, on-failure[:N] or unless-stopped)"
        ));
    }
    Ok(Some(text))
}

/// `deploy:` — only `resources.limits` (`memory`, `cpus`) changes a single-host container;
/// swarm-only keys (`replicas`, `placement`, `update_config`, …) are accepted and ignored,
/// as docker compose does. Errors carry the path below `deploy`.
fn deploy_limits(node: &Node) -> Result<Limits, (Vec<&'static str>, String)> {
    let mut limits = Limits::default();
    let Node::Map(entries) = node else {
        return match node {
            Node::Null => Ok(limits),
            other => Err((vec![], format!("must be a mapping, not {}", other.kind()))),
        };
    };
    for (key, value) in entries {
        if key != "resources" {
            continue;
        }
        let Node::Map(resources) = value else {
            continue;
        };
        for (kind, value) in resources {
            if kind != "limits" {
                // `reservations` only guide swarm's scheduler.
                continue;
            }
            let Node::Map(values) = value else {
                return Err((vec!["resources", "limits"], "must be a mapping".into()));
            };
            for (name, value) in values {
                match name.as_str() {
                    "memory" => {
                        limits.memory =
                            memory(value).map_err(|e| (vec!["resources", "limits", "memory"], e))?
                    }
                    "cpus" => {
                        limits.nano_cpus =
                            cpus(value).map_err(|e| (vec!["resources", "limits", "cpus"], e))?
                    }
                    // `pids` and device limits: not applied.
                    _ => {}
                }
            }
        }
    }
    Ok(limits)
}

/// A memory limit: the engine refuses less than 6 MiB.
fn memory(node: &Node) -> Result<Option<i64>, String> {
    size(node, 6 << 20)
}

/// Compose's byte values: a number of bytes, or a number with b, k/kb, m/mb, g/gb.
fn size(node: &Node, min: i64) -> Result<Option<i64>, String> {
    let text = match node.text() {
        Some(Text::Known(s)) => s.trim().to_ascii_lowercase(),
        Some(Text::Deferred) => return Ok(None),
        None => return Err(format!("must be a size like 512m, not {}", node.kind())),
    };
    let digits = text.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit: i64 = match &text[digits.len()..] {
        "" | "b" => 1,
        "k" | "kb" => 1 << 10,
        "m" | "mb" => 1 << 20,
        "g" | "gb" => 1 << 30,
        _ => return Err(format!("invalid size '{text}' (bytes, or k, m, g)")),
    };
    let value: f64 = digits
        .parse()
        .ok()
        .filter(|v: &f64| *v > 0.0 && v.is_finite())
        .ok_or_else(|| format!("invalid size '{text}' (bytes, or k, m, g)"))?;
    let bytes = value * unit as f64;
    // Anything near i64::MAX is a typo.
    if !(min as f64..=(1u64 << 50) as f64).contains(&bytes) {
        return Err(format!(
            "size '{text}' is out of range (at least {} bytes)",
            min
        ));
    }
    Ok(Some(bytes as i64))
}

/// The service keys that map one to one onto container settings.
fn container_option(options: &mut ContainerOptions, key: &str, node: &Node) -> Result<(), String> {
    match key {
        "hostname" => options.hostname = string(node)?,
        "user" => options.user = string(node)?,
        "working_dir" => options.working_dir = string(node)?,
        "stop_signal" => options.stop_signal = string(node)?,
        "stop_grace_period" => {
            options.stop_timeout_secs = match string(node)? {
                Some(text) => Some(duration_ms(&text)?.div_ceil(1000) as i64),
                None => None,
            }
        }
        "privileged" => options.privileged = flag(node)?.unwrap_or(false),
        "tty" => options.tty = flag(node)?.unwrap_or(false),
        "stdin_open" => options.stdin_open = flag(node)?.unwrap_or(false),
        "init" => options.init = flag(node)?,
        "cap_add" => options.cap_add = strings(node)?,
        "cap_drop" => options.cap_drop = strings(node)?,
        "security_opt" => options.security_opt = strings(node)?,
        "dns" => options.dns = strings(node)?,
        "extra_hosts" => options.extra_hosts = extra_hosts(node)?,
        "expose" => options.expose = expose(node)?,
        "sysctls" => options.sysctls = key_values(node)?,
        "shm_size" => options.shm_size = size(node, 1)?,
        "logging" => options.logging = logging(node)?,
        _ => {}
    }
    Ok(())
}

fn string(node: &Node) -> Result<Option<String>, String> {
    match node {
        Node::Null => Ok(None),
        other => match other.text() {
            Some(Text::Known(s)) => Ok(Some(s.into_owned())),
            Some(Text::Deferred) => Ok(None),
            None => Err(format!("must be a string, not {}", other.kind())),
        },
    }
}

fn flag(node: &Node) -> Result<Option<bool>, String> {
    match node.text() {
        Some(Text::Known(s)) => match s.as_ref() {
            "true" => Ok(Some(true)),
            "false" => Ok(Some(false)),
            other => Err(format!("must be true or false, not '{other}'")),
        },
        Some(Text::Deferred) => Ok(None),
        None if matches!(node, Node::Null) => Ok(None),
        None => Err(format!("must be true or false, not {}", node.kind())),
    }
}

/// A list of strings, or one string.
fn strings(node: &Node) -> Result<Vec<String>, String> {
    let items: Vec<&Node> = match node {
        Node::Null => return Ok(Vec::new()),
        Node::Seq(items) => items.iter().collect(),
        other => vec![other],
    };
    let mut out = Vec::new();
    for item in items {
        match item.text() {
            Some(Text::Known(s)) => out.push(s.into_owned()),
            Some(Text::Deferred) => {}
            None => return Err(format!("list items must be strings, not {}", item.kind())),
        }
    }
    Ok(out)
}

/// `["host:ip"]`, `["host=ip"]` or `{host: ip}`, as `host:ip`.
fn extra_hosts(node: &Node) -> Result<Vec<String>, String> {
    let pairs: Vec<(String, String)> = match node {
        Node::Map(_) => key_values(node)?.into_iter().collect(),
        _ => strings(node)?
            .into_iter()
            .map(|entry| {
                entry
                    .split_once('=')
                    .or_else(|| entry.split_once(':'))
                    .map(|(h, ip)| (h.to_owned(), ip.to_owned()))
                    .ok_or_else(|| format!("invalid extra host '{entry}' (host:ip)"))
            })
            .collect::<Result<_, _>>()?,
    };
    pairs
        .into_iter()
        .map(|(host, ip)| {
            let ip = ip.trim_matches(|c| c == '[' || c == ']');
            if host.is_empty() || (ip != "host-gateway" && ip.parse::<IpAddr>().is_err()) {
                return Err(format!("invalid extra host '{host}:{ip}' (host:ip)"));
            }
            Ok(format!("{host}:{ip}"))
        })
        .collect()
}

/// `expose: ["8080", "53/udp", 9000]` as `8080/tcp`, `53/udp`, `9000/tcp`.
fn expose(node: &Node) -> Result<Vec<String>, String> {
    strings(node)?
        .into_iter()
        .map(|entry| {
            let (port, proto) = entry.split_once('/').unwrap_or((entry.as_str(), "tcp"));
            match (port.parse::<u16>(), proto) {
                (Ok(p), "tcp" | "udp" | "sctp") if p > 0 => Ok(format!("{p}/{proto}")),
                _ => Err(format!(
                    "invalid exposed port '{entry}' (1–65535[/tcp|udp|sctp])"
                )),
            }
        })
        .collect()
}

fn logging(node: &Node) -> Result<Option<Logging>, String> {
    let Node::Map(entries) = node else {
        return match node {
            Node::Null => Ok(None),
            other => Err(format!("must be a mapping, not {}", other.kind())),
        };
    };
    let mut logging = Logging::default();
    for (key, value) in entries {
        match key.as_str() {
            "driver" => logging.driver = string(value)?.unwrap_or_default(),
            "options" => logging.options = key_values(value)?,
            other => return Err(format!("unknown logging option '{other}'")),
        }
    }
    if logging.driver.is_empty() {
        logging.driver = "json-file".into();
    }
    Ok(Some(logging))
}

fn cpus(node: &Node) -> Result<Option<i64>, String> {
    let text = match node.text() {
        Some(Text::Known(s)) => s.trim().to_owned(),
        Some(Text::Deferred) => return Ok(None),
        None => return Err(format!("must be a number like 0.5, not {}", node.kind())),
    };
    match text.parse::<f64>() {
        Ok(n) if n > 0.0 && n <= 1024.0 => Ok(Some((n * 1e9).round() as i64)),
        _ => Err(format!(
            "invalid cpus '{text}' (a number above 0, e.g. 0.5)"
        )),
    }
}

fn depends_on(node: &Node) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::new();
    let mut add = |name: String| {
        if !out.contains(&name) {
            out.push(name);
        }
    };
    match node {
        Node::Null => {}
        Node::Seq(items) => {
            for item in items {
                match item.text() {
                    Some(Text::Known(s)) => add(s.into_owned()),
                    Some(Text::Deferred) => {}
                    None => {
                        return Err(format!(
                            "list items must be service names, not {}",
                            item.kind()
                        ));
                    }
                }
            }
        }
        Node::Map(entries) => {
            for (name, options) in entries {
                match options {
                    Node::Null => {}
                    Node::Map(options) => {
                        for (key, value) in options {
                            let text = match value.text() {
                                Some(Text::Known(s)) => Some(s.into_owned()),
                                _ => None,
                            };
                            match (key.as_str(), text.as_deref()) {
                                // Shiplog waits for every dependency to run and be healthy
                                // (when it has a health check) before starting the next.
                                ("condition", Some("service_started" | "service_healthy")) => {}
                                // A one-shot dependency would count as failed when it exits.
                                ("condition", Some("service_completed_successfully")) => {
                                    return Err(format!(
                                        "condition service_completed_successfully for '{name}' is \
                                         not supported: Shiplog runs long-lived services and waits \
                                         for each dependency to be running (and healthy)"
                                    ));
                                }
                                ("condition", _) if matches!(value, Node::Deferred) => {}
                                ("condition", _) => {
                                    return Err(format!(
                                        "invalid condition for '{name}' (service_started or service_healthy)"
                                    ));
                                }
                                // Both are booleans in compose and change nothing here.
                                ("restart" | "required", _) => {}
                                (other, _) => {
                                    return Err(format!("unknown option '{other}' for '{name}'"));
                                }
                            }
                        }
                    }
                    other => {
                        return Err(format!(
                            "the entry for '{name}' must be a mapping, not {}",
                            other.kind()
                        ));
                    }
                }
                add(name.clone());
            }
        }
        other => return Err(format!("must be a list or a mapping, not {}", other.kind())),
    }
    Ok(out)
}

/// Dependencies first; otherwise file order, so the result is stable.
fn start_order(services: Vec<ServiceSpec>) -> Result<Vec<ServiceSpec>, Issue> {
    let names: BTreeSet<&str> = services.iter().map(|s| s.name.as_str()).collect();
    for service in &services {
        if let Some(unknown) = service
            .depends_on
            .iter()
            .find(|d| !names.contains(d.as_str()))
        {
            return Err(Issue::new(
                &["services", &service.name, "depends_on"],
                format!("unknown service '{unknown}'"),
            ));
        }
    }
    let mut placed: BTreeSet<String> = BTreeSet::new();
    let mut pending = services;
    let mut ordered = Vec::with_capacity(pending.len());
    while !pending.is_empty() {
        let Some(next) = pending
            .iter()
            .position(|s| s.depends_on.iter().all(|d| placed.contains(d)))
        else {
            let cycle: Vec<String> = pending.iter().map(|s| format!("'{}'", s.name)).collect();
            return Err(Issue::new(
                &["services", &pending[0].name, "depends_on"],
                format!("dependency cycle among services {}", cycle.join(", ")),
            ));
        };
        let service = pending.remove(next);
        placed.insert(service.name.clone());
        ordered.push(service);
    }
    Ok(ordered)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a one-file stack from a services block, resolving with `vars`.
    fn build(yaml: &str, vars: &[(&str, &str)]) -> Result<StackSpec, String> {
        let doc: Value = serde_yaml_ng::from_str(yaml).unwrap();
        let values: BTreeMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut interp = Interpolator::resolving(&values);
        let node = to_node(&doc, &mut interp).map_err(|e| e.to_string())?;
        assert!(interp.missing.is_empty(), "missing {:?}", interp.missing);
        build_stack(&node, "s", "1").map_err(|e| e.to_string())
    }

    fn service(body: &str) -> Result<ServiceSpec, String> {
        let indented: String = body.lines().map(|l| format!("    {l}\n")).collect();
        let yaml =
            format!("volumes: {{ data: {{}} }}\nservices:\n  web:\n    image: nginx\n{indented}");
        build(&yaml, &[]).map(|s| s.services.into_iter().next().unwrap())
    }

    fn port(
        host_ip: Option<&str>,
        host_port: Option<u16>,
        container_port: u16,
        protocol: &str,
    ) -> PortSpec {
        PortSpec {
            host_ip: host_ip.map(Into::into),
            host_port,
            container_port,
            protocol: protocol.into(),
        }
    }

    #[test]
    fn short_ports() {
        assert_eq!(short_port("8080").unwrap(), port(None, None, 8080, "tcp"));
        assert_eq!(
            short_port("80:8080").unwrap(),
            port(None, Some(80), 8080, "tcp")
        );
        assert_eq!(
            short_port("127.0.0.1:80:8080").unwrap(),
            port(Some("127.0.0.1"), Some(80), 8080, "tcp")
        );
        assert_eq!(
            short_port("127.0.0.1::8080").unwrap(),
            port(Some("127.0.0.1"), None, 8080, "tcp")
        );
        assert_eq!(
            short_port("53:53/udp").unwrap(),
            port(None, Some(53), 53, "udp")
        );
        assert_eq!(
            short_port("[::1]:80:8080/tcp").unwrap(),
            port(Some("::1"), Some(80), 8080, "tcp")
        );
        assert!(
            short_port("3000-3005:3000-3005")
                .unwrap_err()
                .contains("port ranges")
        );
        assert!(short_port("3000-3005").unwrap_err().contains("port ranges"));
        assert!(short_port("80:8080/sctp").unwrap_err().contains("sctp"));
        assert!(short_port("99999").unwrap_err().contains("1 to 65535"));
        assert!(short_port("0").is_err() && short_port("a:b").is_err() && short_port("").is_err());
        assert!(
            short_port("300.0.0.1:80:80")
                .unwrap_err()
                .contains("host IP")
        );
        assert!(short_port("::1:80:8080").unwrap_err().contains("brackets"));
    }

    #[test]
    fn port_forms_in_a_service() {
        let s = service(
            "ports:\n  - 8080\n  - \"127.0.0.1::9000\"\n  - target: 80\n    published: \"8081\"\n    host_ip: 127.0.0.1\n    protocol: udp\n    mode: host\n  - target: 443",
        )
        .unwrap();
        assert_eq!(
            s.ports,
            [
                port(None, None, 8080, "tcp"),
                port(Some("127.0.0.1"), None, 9000, "tcp"),
                port(Some("127.0.0.1"), Some(8081), 80, "udp"),
                port(None, None, 443, "tcp"),
            ]
        );
        let err = service("ports:\n  - target: 80\n    published: 8000-8010").unwrap_err();
        assert!(
            err.contains("service 'web', key 'ports'") && err.contains("port ranges"),
            "{err}"
        );
        assert!(
            service("ports:\n  - published: 80")
                .unwrap_err()
                .contains("needs 'target'")
        );
        assert!(
            service("ports: \"80\"")
                .unwrap_err()
                .contains("must be a list")
        );
    }

    #[test]
    fn volume_forms() {
        let s = service(
            "volumes:\n  - data:/var/lib/data\n  - /srv/conf:/etc/conf:ro\n  - type: bind\n    source: /run/docker.sock\n    target: /var/run/docker.sock\n    read_only: true\n  - type: volume\n    source: data\n    target: /cache\n    volume: { nocopy: true }",
        )
        .unwrap();
        let v = |source: &str, target: &str, read_only, bind| VolumeSpec {
            source: source.into(),
            target: target.into(),
            read_only,
            bind,
        };
        assert_eq!(
            s.volumes,
            [
                v("data", "/var/lib/data", false, false),
                v("/srv/conf", "/etc/conf", true, true),
                v("/run/docker.sock", "/var/run/docker.sock", true, true),
                v("data", "/cache", false, false),
            ]
        );
        for (body, expected) in [
            ("volumes: [\"./app:/app\"]", "relative bind mount './app'"),
            ("volumes: [\"~/x:/x\"]", "relative bind mount '~/x'"),
            ("volumes: [\".:/code\"]", "relative bind mount '.'"),
            ("volumes: [\"/node_modules\"]", "anonymous volume"),
            ("volumes: [\"other:/x\"]", "'other' is not declared"),
            ("volumes: [\"data:relative\"]", "absolute path"),
            ("volumes: [\"data:/x:z\"]", "option 'z'"),
            ("volumes: [{type: tmpfs, target: /tmp}]", "type 'tmpfs'"),
            (
                "volumes: [{type: bind, source: ./a, target: /a}]",
                "relative bind mount './a'",
            ),
            ("volumes: [{source: data, target: /a}]", "needs 'type'"),
        ] {
            let err = service(body).unwrap_err();
            assert!(
                err.contains("service 'web', key 'volumes'") && err.contains(expected),
                "{body}: {err}"
            );
        }
    }

    #[test]
    fn top_level_volume_options_that_would_lose_data_are_refused() {
        for volumes in [
            "{ data: { external: true } }",
            "{ data: { name: shared } }",
            "{ data: { driver: nfs } }",
        ] {
            let yaml = format!("volumes: {volumes}\nservices:\n  web:\n    image: nginx\n");
            let err = build(&yaml, &[]).unwrap_err();
            assert!(err.starts_with("key 'volumes.data."), "{err}");
        }
        let yaml = "volumes: { data: { driver: local, labels: { a: b } } }\nservices: { web: { image: nginx } }";
        assert!(build(yaml, &[]).is_ok());
    }

    #[test]
    fn environment_and_label_forms() {
        let s = service("environment:\n  A: text\n  B: 8000\n  C: true\n  D:\n  E: \"\"\nlabels: [\"x.y=1\", \"flag\", \"eq=a=b\"]").unwrap();
        let map = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(
            s.environment,
            map(&[
                ("A", "text"),
                ("B", "8000"),
                ("C", "true"),
                ("D", ""),
                ("E", "")
            ])
        );
        assert_eq!(s.labels, map(&[("x.y", "1"), ("flag", ""), ("eq", "a=b")]));

        let s = service("environment: [\"K=V\", \"EMPTY\", \"URL=http://a/?b=c\"]").unwrap();
        assert_eq!(
            s.environment,
            map(&[("K", "V"), ("EMPTY", ""), ("URL", "http://a/?b=c")])
        );

        assert!(
            service("environment: [\"K=1\", \"K=2\"]")
                .unwrap_err()
                .contains("'K' is set twice")
        );
        assert!(
            service("environment: { K: [1] }")
                .unwrap_err()
                .contains("value of 'K'")
        );
        assert!(
            service("environment: [\"=x\"]")
                .unwrap_err()
                .contains("invalid name")
        );
        let err = service("labels: { io.shiplog.stack: x }").unwrap_err();
        assert!(err.contains("reserved"), "{err}");
    }

    #[test]
    fn command_forms() {
        let s = service("command: /bin/sh -c \"echo 'hi there' && sleep 1\"").unwrap();
        assert_eq!(
            s.command.unwrap(),
            ["/bin/sh", "-c", "echo 'hi there' && sleep 1"]
        );
        let s = service("entrypoint: [\"/init\", \"--flag=a b\"]\ncommand: [serve, 8080]").unwrap();
        assert_eq!(s.entrypoint.unwrap(), ["/init", "--flag=a b"]);
        assert_eq!(s.command.unwrap(), ["serve", "8080"]);
        let s = service("command: []").unwrap();
        assert_eq!(s.command, Some(vec![]));
        assert_eq!(service("command:").unwrap().command, None);

        assert_eq!(
            split_words("a  'b c'\"d\\\"e\" f\\ g ''").unwrap(),
            ["a", "b cd\"e", "f g", ""]
        );
        assert_eq!(
            split_words(" --x=1\t--y=\"$HOME\" ").unwrap(),
            ["--x=1", "--y=$HOME"]
        );
        assert!(
            split_words("echo 'oops")
                .unwrap_err()
                .contains("unterminated single quote")
        );
        assert!(
            split_words("echo \"oops")
                .unwrap_err()
                .contains("unterminated double quote")
        );
    }

    #[test]
    fn healthcheck_forms() {
        let s = service(
            "healthcheck:\n  test: curl -f http://localhost/ || exit 1\n  interval: 1m30s\n  timeout: 500ms\n  start_period: 1.5s\n  retries: 3",
        )
        .unwrap();
        assert_eq!(
            s.healthcheck.unwrap(),
            HealthSpec {
                test: vec![
                    "CMD-SHELL".into(),
                    "curl -f http://localhost/ || exit 1".into()
                ],
                interval_ms: Some(90_000),
                timeout_ms: Some(500),
                retries: Some(3),
                start_period_ms: Some(1_500),
            }
        );
        let s = service("healthcheck:\n  test: [\"CMD\", \"pg_isready\"]").unwrap();
        assert_eq!(s.healthcheck.unwrap().test, ["CMD", "pg_isready"]);
        let s = service("healthcheck:\n  disable: true").unwrap();
        assert_eq!(s.healthcheck.unwrap().test, ["NONE"]);

        let err = service("healthcheck:\n  test: [\"CMD\", \"x\"]\n  interval: 10").unwrap_err();
        assert!(
            err.contains("key 'healthcheck.interval'") && err.contains("with a unit"),
            "{err}"
        );
        assert!(
            service("healthcheck:\n  test: [\"pg_isready\"]")
                .unwrap_err()
                .contains("starts with CMD")
        );
        assert!(
            service("healthcheck:\n  interval: 1s")
                .unwrap_err()
                .contains("needs 'test'")
        );
        assert!(
            service("healthcheck:\n  test: x\n  retries: -1")
                .unwrap_err()
                .contains("whole number")
        );
        assert!(
            service("healthcheck:\n  test: x\n  bogus: 1")
                .unwrap_err()
                .contains("'bogus'")
        );
    }

    #[test]
    fn durations() {
        for (text, ms) in [
            ("1s", 1_000),
            ("500ms", 500),
            ("1m30s", 90_000),
            ("1h", 3_600_000),
            ("0", 0),
            ("2.5m", 150_000),
            ("1500us", 1),
            ("0.5s", 500),
        ] {
            assert_eq!(duration_ms(text).unwrap(), ms, "{text}");
        }
        for bad in ["", "10", "s", "1x", "1.s5", "-1s", "1 s", ".s"] {
            assert!(duration_ms(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn restart_and_depends_on_forms() {
        assert_eq!(
            service("restart: unless-stopped")
                .unwrap()
                .restart
                .as_deref(),
            Some("unless-stopped")
        );
        assert_eq!(
            service("restart: \"no\"").unwrap().restart.as_deref(),
            Some("no")
        );
        // YAML 1.2: an unquoted `no` is a string, not a boolean.
        assert_eq!(
            service("restart: no").unwrap().restart.as_deref(),
            Some("no")
        );
        assert_eq!(
            service("restart: on-failure:3").unwrap().restart.as_deref(),
            Some("on-failure:3")
        );
        assert!(
            service("restart: sometimes")
                .unwrap_err()
                .contains("invalid restart policy")
        );

        let yaml = "services:\n  web:\n    image: web\n    depends_on:\n      db: { condition: service_healthy }\n      cache:\n  cache: { image: redis }\n  db:\n    image: postgres\n    depends_on: [cache]\n";
        let stack = build(yaml, &[]).unwrap();
        let order: Vec<&str> = stack.services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(order, ["cache", "db", "web"]);
        assert_eq!(stack.services[2].depends_on, ["db", "cache"]);

        let bad = "services:\n  web: { image: web, depends_on: { db: { condition: eventually } } }\n  db: { image: db }";
        assert!(
            build(bad, &[])
                .unwrap_err()
                .contains("invalid condition for 'db'")
        );
        let one_shot = "services:\n  web: { image: web, depends_on: { migrate: { condition: service_completed_successfully } } }\n  migrate: { image: m }";
        let err = build(one_shot, &[]).unwrap_err();
        assert!(
            err.contains("service_completed_successfully for 'migrate' is not supported"),
            "{err}"
        );
    }

    #[test]
    fn resource_limits_from_deploy_or_the_short_keys() {
        let yaml = "services:\n  web:\n    image: web\n    deploy:\n      replicas: 2\n      resources:\n        limits: { cpus: '0.5', memory: 512M }\n        reservations: { memory: 128m }\n  job:\n    image: job\n    mem_limit: 1g\n    cpus: 2\n  plain: { image: p }";
        let stack = build(yaml, &[]).unwrap();
        let limits = |name: &str| {
            stack
                .services
                .iter()
                .find(|s| s.name == name)
                .unwrap()
                .limits
        };
        assert_eq!(limits("web").memory, Some(512 << 20));
        assert_eq!(limits("web").nano_cpus, Some(500_000_000));
        assert_eq!(limits("job").memory, Some(1 << 30));
        assert_eq!(limits("job").nano_cpus, Some(2_000_000_000));
        assert!(limits("plain").is_none());
        // No limits: the serialized spec (and so the config hash) has no trace of them.
        let plain = stack.services.iter().find(|s| s.name == "plain").unwrap();
        assert!(!serde_json::to_string(plain).unwrap().contains("limits"));

        for (bad, wanted) in [
            ("mem_limit: 12q", "invalid size '12q'"),
            ("mem_limit: 1k", "out of range"),
            ("cpus: -1", "invalid cpus '-1'"),
            (
                "deploy: { resources: { limits: { memory: lots } } }",
                "invalid size 'lots'",
            ),
        ] {
            let yaml = format!("services:\n  web:\n    image: web\n    {bad}\n");
            let err = build(&yaml, &[]).unwrap_err();
            assert!(err.contains(wanted), "{bad}: {err}");
        }
        // A variable decides at deployment.
        let deferred = "services:\n  web: { image: web, mem_limit: '${MEM}' }";
        assert_eq!(
            build(deferred, &[("MEM", "256m")]).unwrap().services[0]
                .limits
                .memory,
            Some(256 << 20)
        );
    }

    #[test]
    fn container_settings_are_read_as_compose_writes_them() {
        let yaml = "services:
  web:
    image: web
    hostname: api-1
    user: \"1000:1000\"
    working_dir: /srv
    stop_signal: SIGINT
    stop_grace_period: 1m30s
    privileged: false
    init: true
    tty: true
    stdin_open: true
    cap_add: [NET_ADMIN]
    cap_drop: [ALL]
    security_opt: [no-new-privileges:true]
    dns: 9.9.9.9
    extra_hosts: [\"db.local:10.0.0.5\", \"gw=host-gateway\"]
    expose: [\"8080\", 53/udp, 9000]
    sysctls: [net.core.somaxconn=1024]
    shm_size: 64m
    logging: { driver: json-file, options: { max-size: 10m } }
  plain: { image: p }
";
        let stack = build(yaml, &[]).unwrap();
        let web = &stack
            .services
            .iter()
            .find(|s| s.name == "web")
            .unwrap()
            .options;
        assert_eq!(web.hostname.as_deref(), Some("api-1"));
        assert_eq!(web.user.as_deref(), Some("1000:1000"));
        assert_eq!(web.working_dir.as_deref(), Some("/srv"));
        assert_eq!(web.stop_signal.as_deref(), Some("SIGINT"));
        assert_eq!(web.stop_timeout_secs, Some(90));
        assert!(!web.privileged && web.tty && web.stdin_open);
        assert_eq!(web.init, Some(true));
        assert_eq!(web.cap_add, ["NET_ADMIN"]);
        assert_eq!(web.cap_drop, ["ALL"]);
        assert_eq!(web.dns, ["9.9.9.9"]);
        assert_eq!(web.extra_hosts, ["db.local:10.0.0.5", "gw:host-gateway"]);
        assert_eq!(web.expose, ["8080/tcp", "53/udp", "9000/tcp"]);
        assert_eq!(web.sysctls["net.core.somaxconn"], "1024");
        assert_eq!(web.shm_size, Some(64 << 20));
        let logging = web.logging.as_ref().unwrap();
        assert_eq!(
            (
                logging.driver.as_str(),
                logging.options["max-size"].as_str()
            ),
            ("json-file", "10m")
        );
        // Without settings the serialized spec (and its config hash) is as before.
        let plain = stack.services.iter().find(|s| s.name == "plain").unwrap();
        assert!(!serde_json::to_string(plain).unwrap().contains("options"));

        for (bad, wanted) in [
            ("privileged: maybe", "must be true or false"),
            ("extra_hosts: [nohost]", "invalid extra host 'nohost'"),
            ("expose: [\"99999\"]", "invalid exposed port '99999'"),
            ("ulimits: { nofile: 1024 }", "ulimits are not supported yet"),
            (
                "devices: [\"/dev/fuse\"]",
                "device mappings are not supported yet",
            ),
            (
                "logging: { driver: syslog, where: x }",
                "unknown logging option 'where'",
            ),
        ] {
            let yaml = format!("services:\n  web:\n    image: web\n    {bad}\n");
            let err = build(&yaml, &[]).unwrap_err();
            assert!(err.contains(wanted), "{bad}: {err}");
        }
    }

    #[test]
    fn networks_are_declared_then_joined_with_aliases() {
        let yaml = "services:
  web: { image: web, networks: [front] }
  api:
    image: api
    networks:
      front: { aliases: [backend] }
      back:
  db: { image: db, networks: [back] }
  plain: { image: p }
  explicit: { image: e, networks: [default] }
networks:
  front: {}
  back: { internal: true, driver: bridge }
";
        let stack = build(yaml, &[]).unwrap();
        let joined = |name: &str| -> Vec<(String, Vec<String>)> {
            let service = stack.services.iter().find(|s| s.name == name).unwrap();
            service
                .networks
                .iter()
                .map(|a| (a.network.clone(), a.aliases.clone()))
                .collect()
        };
        assert_eq!(joined("web"), [("front".to_owned(), vec![])]);
        assert_eq!(
            joined("api"),
            [
                ("front".to_owned(), vec!["backend".to_owned()]),
                ("back".to_owned(), vec![])
            ]
        );
        assert!(joined("plain").is_empty() && joined("explicit").is_empty());
        let declared: Vec<(&str, bool)> = stack
            .networks
            .iter()
            .map(|n| (n.name.as_str(), n.internal))
            .collect();
        assert_eq!(declared, [("front", false), ("back", true)]);

        for (bad, wanted) in [
            (
                "services: { web: { image: w, networks: [nope] } }",
                "network 'nope' is not declared",
            ),
            (
                "services: { web: { image: w } }\nnetworks: { proxy: { external: true } }",
                "key 'networks.proxy.external': not supported",
            ),
            (
                "services: { web: { image: w, networks: { n: { ipv4_address: 10.0.0.2 } } } }\nnetworks: { n: {} }",
                "'ipv4_address' for network 'n' is not supported",
            ),
            (
                "services: { web: { image: w } }\nnetworks: { n: { ipam: {} } }",
                "key 'networks.n.ipam': not supported",
            ),
        ] {
            let err = build(bad, &[]).unwrap_err();
            assert!(err.contains(wanted), "{bad}: {err}");
        }
    }

    #[test]
    fn services_in_a_profile_are_not_deployed() {
        let yaml =
            "services:\n  web: { image: web }\n  debug: { image: busybox, profiles: [debug] }";
        let names: Vec<String> = build(yaml, &[])
            .unwrap()
            .services
            .into_iter()
            .map(|s| s.name)
            .collect();
        assert_eq!(names, ["web"]);
        let needs = "services:\n  web: { image: web, depends_on: [debug] }\n  debug: { image: busybox, profiles: [debug] }";
        assert!(
            build(needs, &[])
                .unwrap_err()
                .contains("depends on 'debug', which is in a profile")
        );
        let only = "services:\n  debug: { image: busybox, profiles: [debug] }";
        assert!(
            build(only, &[])
                .unwrap_err()
                .contains("every service is in a profile")
        );
    }

    #[test]
    fn start_order_is_stable_and_rejects_unknown_services_and_cycles() {
        let yaml = "services:\n  b: { image: x }\n  a: { image: x }\n  c: { image: x, depends_on: [a] }\n  d: { image: x }";
        let order: Vec<String> = build(yaml, &[])
            .unwrap()
            .services
            .into_iter()
            .map(|s| s.name)
            .collect();
        assert_eq!(order, ["b", "a", "c", "d"]);

        let err = build("services:\n  web: { image: x, depends_on: [db] }", &[]).unwrap_err();
        assert_eq!(err, "service 'web', key 'depends_on': unknown service 'db'");

        let cycle = "services:\n  ok: { image: x }\n  a: { image: x, depends_on: [b] }\n  b: { image: x, depends_on: [a] }";
        let err = build(cycle, &[]).unwrap_err();
        assert!(
            err.contains("dependency cycle among services 'a', 'b'"),
            "{err}"
        );
        let own = build("services:\n  a: { image: x, depends_on: [a] }", &[]).unwrap_err();
        assert!(own.contains("cycle"), "{own}");
    }

    #[test]
    fn refused_and_unknown_keys_name_the_service_and_key() {
        let err = service("build: .").unwrap_err();
        assert!(
            err.starts_with("service 'web', key 'build': not supported: a catalog deploys images"),
            "{err}"
        );
        let err = service("container_name: web").unwrap_err();
        assert!(
            err.starts_with("service 'web', key 'container_name'"),
            "{err}"
        );
        let err = service("env_file: .env").unwrap_err();
        assert!(err.starts_with("service 'web', key 'env_file'"), "{err}");
        let err = service("runtime: runc").unwrap_err();
        assert_eq!(
            err,
            "service 'web', key 'runtime': unknown or unsupported compose key"
        );
        // Swarm-only keys and extensions pass.
        service("hostname: web\nuser: \"1000\"\ndeploy: { replicas: 1 }\nx-notes: anything\npull_policy: always").unwrap();

        let err = build("services:\n  web: { command: x }", &[]).unwrap_err();
        assert_eq!(err, "service 'web': key 'image' is required");
        let err = build("services:\n  Web: { image: x }", &[]).unwrap_err();
        assert!(
            err.starts_with("service 'Web': invalid service name"),
            "{err}"
        );
        let image = |image: &str| {
            build(
                &format!("services: {{ web: {{ image: \"{image}\" }} }}"),
                &[],
            )
        };
        assert!(image("Library/Nginx").unwrap_err().contains("lowercase"));
        assert!(image("nginx latest").unwrap_err().contains("whitespace"));
        assert!(image("").unwrap_err().contains("must not be empty"));
        image("Registry.Example.com:5000/team/app:V1.2").unwrap();
        image("localhost:5000/app@sha256:0123abcd").unwrap();
    }

    #[test]
    fn top_level_keys() {
        let ok = "version: '3.8'\nname: s\nnetworks: { a: {} }\nsecrets: { s: { file: x } }\nconfigs:\nx-anchors: { y: 1 }\nservices: { web: { image: x } }";
        build(ok, &[]).unwrap();
        assert_eq!(
            build("services: {}", &[]).unwrap_err(),
            "key 'services': a stack needs at least one service"
        );
        assert_eq!(
            build("name: s", &[]).unwrap_err(),
            "key 'services' is required"
        );
        assert!(
            build("services: { web: { image: x } }\ninclude: [a.yml]", &[])
                .unwrap_err()
                .contains("include")
        );
        assert_eq!(
            build("services: { web: { image: x } }\nbogus: 1", &[]).unwrap_err(),
            "key 'bogus': unknown top-level key"
        );
    }

    #[test]
    fn variable_values_cannot_inject_structure() {
        let yaml = "services:\n  web:\n    image: app\n    environment:\n      GREETING: ${GREETING}\n    command: [\"echo\", \"${GREETING}\"]";
        let evil = "a: b\nc";
        let stack = build(yaml, &[("GREETING", evil)]).unwrap();
        let web = &stack.services[0];
        assert_eq!(web.environment.len(), 1);
        assert_eq!(web.environment["GREETING"], evil);
        assert_eq!(web.command.as_deref().unwrap(), ["echo", evil]);
        let list = build(
            "services:\n  web:\n    image: app\n    ports: [\"${P}\"]",
            &[("P", "80\n- 90")],
        )
        .unwrap_err();
        // The whole value is one (invalid) port, not a second list item.
        assert!(
            list.starts_with("service 'web', key 'ports': port ranges ('80\n- 90')"),
            "{list}"
        );
    }
}

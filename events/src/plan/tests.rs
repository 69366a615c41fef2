use serde_json::json;

use super::*;
use crate::spec::ServiceSpec;

const OLD: &str = "sha256:aaaa";
const NEW: &str = "sha256:bbbb";

fn service(name: &str, env: &[(&str, &str)]) -> ServiceSpec {
    ServiceSpec {
        name: name.into(),
        image: format!("127.0.0.1:5000/x/{name}:live"),
        environment: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        command: None,
        entrypoint: None,
        ports: vec![],
        volumes: vec![],
        labels: BTreeMap::new(),
        healthcheck: None,
        restart: None,
        depends_on: vec![],
        limits: Default::default(),
        options: Default::default(),
        networks: Vec::new(),
    }
}

fn spec(version: &str, services: Vec<ServiceSpec>) -> StackSpec {
    StackSpec {
        name: "shop".into(),
        version: version.into(),
        services,
        networks: Vec::new(),
    }
}

fn deployed(name: &str, digest: Option<&str>) -> DeployedService {
    DeployedService {
        name: name.into(),
        image: format!("127.0.0.1:5000/x/{name}:live"),
        image_id: "sha256:1d".into(),
        digest: digest.map(Into::into),
        container: format!("c-{name}"),
    }
}

fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// `web` and `db` run 1.0.0, both recorded with digest OLD.
fn current() -> Current {
    Current {
        version: "1.0.0".into(),
        variables: vars(&[("GREETING", "hi")]),
        services: vec![deployed("web", Some(OLD)), deployed("db", Some(OLD))],
        running: true,
        spec: Ok(spec(
            "1.0.0",
            vec![service("web", &[("G", "hi")]), service("db", &[])],
        )),
    }
}

fn draft(action: DeployAction, target: StackSpec, current: Option<Current>) -> Draft {
    Draft {
        action,
        environment: "prod".into(),
        stack: "shop".into(),
        target_version: target.version.clone(),
        target_variables: current
            .as_ref()
            .map(|c| c.variables.clone())
            .unwrap_or_default(),
        force: false,
        current,
        target: Ok(target),
        secrets: BTreeSet::new(),
    }
}

fn known(pairs: &[(&str, &str)]) -> BTreeMap<String, TargetDigest> {
    pairs
        .iter()
        .map(|(s, d)| (s.to_string(), TargetDigest::Known(d.to_string())))
        .collect()
}

fn action_of(plan: &Plan, name: &str) -> ServiceAction {
    plan.services
        .iter()
        .find(|s| s.name == name)
        .unwrap()
        .action
}

#[test]
fn a_moved_tag_recreates_only_that_service_with_old_and_new_digests() {
    let d = draft(
        DeployAction::Redeploy,
        current().spec.unwrap(),
        Some(current()),
    );
    let plan = build(&d, &known(&[("web", NEW), ("db", OLD)]));
    assert!(plan.complete, "{plan:?}");
    assert_eq!(action_of(&plan, "db"), ServiceAction::Unchanged);
    let web = &plan.services[0];
    assert_eq!(web.action, ServiceAction::Recreate);
    assert_eq!(web.reasons, [format!("image digest {OLD} → {NEW}")]);
    assert_eq!(web.digest.current.as_deref(), Some(OLD));
    assert_eq!(web.digest.target.as_deref(), Some(NEW));
}

#[test]
fn an_absent_stack_creates_every_service_and_adds_every_variable() {
    let mut d = draft(
        DeployAction::Install,
        spec("1.0.0", vec![service("web", &[]), service("db", &[])]),
        None,
    );
    d.target_variables = vars(&[("GREETING", "hello"), ("TOKEN", "s3cret")]);
    d.secrets.insert("TOKEN".into());
    let plan = build(&d, &known(&[("web", NEW), ("db", NEW)]));
    assert!(
        plan.services
            .iter()
            .all(|s| s.action == ServiceAction::Create)
    );
    assert_eq!(plan.current_version, None);
    let json = serde_json::to_value(&plan.variables).unwrap();
    assert_eq!(
        json,
        json!({ "added": { "GREETING": { "value": "hello" }, "TOKEN": { "secret": true } },
                "removed": [], "changed": {} })
    );
    assert!(!json.to_string().contains("s3cret"));
}

#[test]
fn an_upgrade_reports_changed_configuration_removed_services_and_variables() {
    let mut d = draft(
        DeployAction::Upgrade,
        spec("2.0.0", vec![service("web", &[("G", "hey")])]),
        Some(current()),
    );
    d.target_variables = vars(&[("GREETING", "hey"), ("EXTRA", "x")]);
    let plan = build(&d, &known(&[("web", OLD)]));
    assert_eq!(plan.current_version.as_deref(), Some("1.0.0"));
    assert_eq!(plan.target_version, "2.0.0");
    assert_eq!(plan.services[0].action, ServiceAction::Recreate);
    assert_eq!(plan.services[0].reasons, ["configuration changed"]);
    let db = &plan.services[1];
    assert_eq!((db.name.as_str(), db.action), ("db", ServiceAction::Remove));
    assert_eq!(db.digest.current.as_deref(), Some(OLD));
    assert_eq!(
        serde_json::to_value(&plan.variables).unwrap(),
        json!({ "added": { "EXTRA": { "value": "x" } }, "removed": [],
                "changed": { "GREETING": { "old": "hi", "new": "hey" } } })
    );
}

#[test]
fn password_and_sealed_values_are_never_shown() {
    let mut cur = current();
    cur.variables = vars(&[("TOKEN", "old-secret"), ("KEY", "sealed:v1:AAAA")]);
    let mut d = draft(DeployAction::Upgrade, current().spec.unwrap(), Some(cur));
    d.target_variables = vars(&[("TOKEN", "new-secret"), ("KEY", "sealed:v1:BBBB")]);
    d.secrets.insert("TOKEN".into());
    let plan = build(&d, &known(&[("web", OLD), ("db", OLD)]));
    let json = serde_json::to_value(&plan.variables).unwrap();
    assert_eq!(
        json["changed"],
        json!({ "KEY": { "changed": true, "secret": true },
                "TOKEN": { "changed": true, "secret": true } })
    );
    let text = serde_json::to_string(&plan).unwrap();
    for value in ["old-secret", "new-secret", "AAAA", "BBBB"] {
        assert!(!text.contains(value), "{value} leaked: {text}");
    }
}

#[test]
fn an_unknown_target_digest_makes_the_plan_partial_but_not_a_failure() {
    let d = draft(
        DeployAction::Redeploy,
        current().spec.unwrap(),
        Some(current()),
    );
    let mut digests = known(&[("db", OLD)]);
    digests.insert(
        "web".into(),
        TargetDigest::Unknown("registry 127.0.0.1:1 unreachable".into()),
    );
    let plan = build(&d, &digests);
    assert!(!plan.complete);
    let web = &plan.services[0];
    assert_eq!(web.action, ServiceAction::Unknown);
    assert_eq!(web.digest.target, None);
    assert!(web.note.as_deref().unwrap().contains("unreachable"));
    assert_eq!(plan.notes.len(), 1);
    assert!(
        plan.notes[0].starts_with("service web:"),
        "{:?}",
        plan.notes
    );
    assert_eq!(action_of(&plan, "db"), ServiceAction::Unchanged);
}

#[test]
fn a_known_change_recreates_even_when_the_digest_is_unknown() {
    let d = draft(
        DeployAction::Upgrade,
        spec("2.0.0", vec![service("web", &[("G", "changed")])]),
        Some(current()),
    );
    let mut digests = BTreeMap::new();
    digests.insert("web".into(), TargetDigest::Unknown("timeout".into()));
    let plan = build(&d, &digests);
    assert_eq!(plan.services[0].action, ServiceAction::Recreate);
    assert!(!plan.complete);
}

#[test]
fn force_and_a_stopped_stack_recreate_what_would_be_unchanged() {
    let mut d = draft(
        DeployAction::Redeploy,
        current().spec.unwrap(),
        Some(current()),
    );
    d.force = true;
    let plan = build(&d, &known(&[("web", OLD), ("db", OLD)]));
    assert!(
        plan.services
            .iter()
            .all(|s| s.action == ServiceAction::Recreate)
    );
    assert!(plan.services[0].reasons[0].starts_with("forced"));

    let mut stopped = current();
    stopped.running = false;
    let d = draft(
        DeployAction::Redeploy,
        current().spec.unwrap(),
        Some(stopped),
    );
    let plan = build(&d, &known(&[("web", OLD), ("db", OLD)]));
    assert!(
        plan.services
            .iter()
            .all(|s| s.action == ServiceAction::Recreate)
    );
    assert!(plan.services[0].reasons[0].contains("stopped"));
}

#[test]
fn no_recorded_registry_digest_or_no_current_manifest_is_unknown_not_unchanged() {
    let mut cur = current();
    cur.services[0].digest = None;
    let d = draft(DeployAction::Redeploy, current().spec.unwrap(), Some(cur));
    let plan = build(&d, &known(&[("web", OLD), ("db", OLD)]));
    assert_eq!(plan.services[0].action, ServiceAction::Unknown);
    assert!(
        plan.services[0]
            .note
            .as_deref()
            .unwrap()
            .contains("image id")
    );

    let mut cur = current();
    cur.spec = Err("version 1.0.0 is no longer in the catalog".into());
    let d = draft(DeployAction::Redeploy, current().spec.unwrap(), Some(cur));
    let plan = build(&d, &known(&[("web", OLD), ("db", OLD)]));
    assert!(
        plan.services
            .iter()
            .all(|s| s.action == ServiceAction::Unknown)
    );
    assert!(!plan.complete);
}

#[test]
fn an_unresolvable_target_is_a_partial_plan_without_services() {
    let mut d = draft(
        DeployAction::Redeploy,
        current().spec.unwrap(),
        Some(current()),
    );
    d.target = Err("version 1.0.0 of stack 'shop' is no longer in the catalog".into());
    let plan = build(&d, &BTreeMap::new());
    assert!(plan.services.is_empty());
    assert!(!plan.complete);
    assert!(plan.notes[0].contains("would fail"));
}

#[test]
fn the_answer_has_the_documented_shape() {
    let d = draft(
        DeployAction::Redeploy,
        current().spec.unwrap(),
        Some(current()),
    );
    let plan = serde_json::to_value(build(&d, &known(&[("web", NEW), ("db", OLD)]))).unwrap();
    assert_eq!(plan["dryRun"], true);
    assert_eq!(plan["action"], "redeploy");
    assert_eq!(plan["stackName"], "shop");
    assert_eq!(plan["environmentId"], "prod");
    assert_eq!(plan["currentVersion"], "1.0.0");
    assert_eq!(plan["targetVersion"], "1.0.0");
    assert_eq!(plan["complete"], true);
    assert_eq!(plan["notes"], json!([]));
    assert_eq!(
        plan["services"][1],
        json!({ "name": "db", "action": "unchanged", "reasons": [],
                "image": "127.0.0.1:5000/x/db:live",
                "digest": { "current": OLD, "target": OLD } })
    );
}

//! Bad input never gets a 5xx and never writes anything: generated hook bodies, odd
//! names and versions, path tricks, huge bodies.

use proptest::prelude::*;
use serde_json::{Value, json};
use shiplog_tests::*;

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        ".{0,40}".prop_map(Value::String),
        Just(json!("../../etc/passwd")),
        Just(json!("a".repeat(300))),
        Just(json!("ümlaut-ß")),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("stackName".to_owned()),
                    Just("targetVersion".to_owned()),
                    Just("environmentId".to_owned()),
                    Just("variables".to_owned()),
                    Just("force".to_owned()),
                    "[a-zA-Z]{1,10}",
                ],
                inner,
                0..5
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Bodies shaped like the real ones, with odd values in each field.
fn hook_body() -> impl Strategy<Value = Value> {
    let name = prop_oneof![
        Just("web".to_owned()),
        "[a-z0-9_-]{0,70}",
        ".{0,20}",
        Just("../x".to_owned()),
        Just("a/b".to_owned()),
        Just("%2e%2e".to_owned()),
    ];
    (name.clone(), name.clone(), name, json_value(), json_value()).prop_map(|(stack, version, env, vars, force)| {
        json!({ "stackName": stack, "targetVersion": version, "environmentId": env, "variables": vars, "force": force })
    })
}

async fn counts(app: &TestApp) -> (i64, i64) {
    let events = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let jobs = sqlx::query_scalar("SELECT count(*) FROM apalis.jobs")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    (events, jobs)
}

#[test]
fn generated_hook_bodies_get_4xx_never_5xx_and_write_nothing() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let app = rt.block_on(async {
        let app = spawn_app_with(AppOptions {
            worker: false,
            ..Default::default()
        })
        .await;
        app.register_local_environment("local").await;
        app.catalog.write(
            "web.yml",
            &web_manifest("web", "1.0.0", &image("web:v1"), "    {}", ""),
        );
        assert_eq!(app.add_catalog_source().await.status, 201);
        app
    });
    let key = rt.block_on(app.create_key(
        &["Hooks.Redeploy", "Hooks.Upgrade", "Hooks.SyncSources"],
        None,
    ));
    let config = ProptestConfig {
        cases: 96,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    proptest!(config, |(path in prop_oneof![Just("/api/hooks/redeploy"), Just("/api/hooks/upgrade")],
                       body in prop_oneof![hook_body(), json_value()])| {
        rt.block_on(async {
            let before = counts(&app).await;
            let r = app.hook(path, Some(&key), &body.to_string()).await;
            // No stack is deployed, so nothing generated can be accepted.
            prop_assert!(r.status >= 400 && r.status < 500, "{} {} -> {} {:?}", path, body, r.status, r.body);
            prop_assert_eq!(&r.body["success"], &json!(false));
            prop_assert!(r.body["message"].as_str().is_some_and(|m| !m.is_empty()));
            prop_assert_eq!(counts(&app).await, before, "a refused request wrote something: {}", body);
            Ok(())
        })?;
    });

    rt.block_on(async {
        // Huge and malformed bodies, and odd methods, are JSON errors too.
        let huge = json!({ "stackName": "x".repeat(200_000) }).to_string();
        let r = app.hook("/api/hooks/redeploy", Some(&key), &huge).await;
        assert_eq!(r.status, 413, "{:?}", r.body);
        assert_eq!(r.body["success"], false);
        for raw in [
            "[]",
            "null",
            "\"x\"",
            "{\"stackName\":",
            "\u{0}",
            "{\"stackName\": \"web\", \"stackName\": \"web\"}",
        ] {
            let r = app.hook("/api/hooks/redeploy", Some(&key), raw).await;
            assert_eq!(r.status, 400, "{raw}: {:?}", r.body);
        }
        let r = reply(
            app.client
                .get(format!("{}/api/hooks/redeploy", app.address))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(r.status, 404, "{:?}", r.body);
        assert_eq!(r.body["success"], false);
    });
}

/// PostgreSQL stores no NUL character: a NUL anywhere in a body or a URL is a 400 that
/// names the place, never a 500 from the insert (schemathesis found the key name case).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nul_characters_are_refused_by_name_and_write_nothing() {
    let app = spawn_app_with(AppOptions {
        worker: false,
        ..Default::default()
    })
    .await;
    app.register_local_environment("local").await;
    let before = counts(&app).await;
    let r = app
        .admin(
            reqwest::Method::POST,
            "/api/keys",
            Some(json!({ "name": "ci\u{0}key", "permissions": ["Hooks.Redeploy"] })),
        )
        .await;
    assert_eq!(r.status, 400, "{:?}", r.body);
    assert!(
        r.body["message"].as_str().unwrap().contains(".name"),
        "{:?}",
        r.body
    );
    let key = app.create_key(&["Hooks.Upgrade"], Some("local")).await;
    let after_key = counts(&app).await;
    let body =
        json!({ "stackName": "web", "targetVersion": "1.0.0", "variables": { "A": "x\u{0}y" } });
    let r = app
        .hook("/api/hooks/upgrade", Some(&key), &body.to_string())
        .await;
    assert_eq!(r.status, 400, "{:?}", r.body);
    assert!(
        r.body["message"].as_str().unwrap().contains(".variables.A"),
        "{:?}",
        r.body
    );
    for path in [
        "/api/environments/local%00/stacks",
        "/api/environments/local/stacks/web%00",
        "/api/deployments?stack=a%00b",
    ] {
        let r = app.admin(reqwest::Method::GET, path, None).await;
        assert_eq!(r.status, 400, "{path}: {:?}", r.body);
        assert!(
            r.body["message"].as_str().unwrap().contains("NUL"),
            "{:?}",
            r.body
        );
    }
    assert_eq!(counts(&app).await, after_key, "nothing written");
    assert!(after_key.0 > before.0, "the key itself was recorded");
}

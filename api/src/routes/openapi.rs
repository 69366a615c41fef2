//! The OpenAPI 3.1 description (`api/openapi.json`, written by hand and kept honest by
//! tests: every route is in it, and schemathesis checks the answers against it) and a
//! self-contained page to browse it (no external assets: Shiplog often runs offline).

use actix_web::{HttpResponse, get, web};

pub const OPENAPI_JSON: &str = include_str!("../../openapi.json");

const DOCS_PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Shiplog API</title>
<style>
body{font:15px/1.45 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}
h2{margin-top:2rem;border-bottom:1px solid #ddd}
details{margin:.4rem 0;border:1px solid #e3e3e3;border-radius:4px;padding:.3rem .6rem}
summary{cursor:pointer}
code,.m{font-family:ui-monospace,monospace}
.m{display:inline-block;width:4.2rem;font-weight:bold}
.get{color:#0a6}.post{color:#06c}.delete{color:#c33}
pre{background:#f6f6f6;padding:.5rem;overflow:auto;font-size:13px}
</style></head><body>
<h1>Shiplog API</h1>
<p>Machine-readable: <a href="/api/openapi.json">/api/openapi.json</a> (OpenAPI 3.1).</p>
<div id="ops">Loading…</div>
<script>
fetch('/api/openapi.json').then(r => r.json()).then(spec => {
  const byTag = {};
  for (const [path, item] of Object.entries(spec.paths)) {
    for (const [method, op] of Object.entries(item)) {
      if (!['get','post','put','delete','patch'].includes(method)) continue;
      const tag = (op.tags || ['other'])[0];
      (byTag[tag] = byTag[tag] || []).push({path, method, op});
    }
  }
  const esc = s => String(s ?? '').replace(/[&<>]/g, c => ({'&':'&amp;','<':'&lt;','>':'&gt;'})[c]);
  let html = '';
  for (const [tag, ops] of Object.entries(byTag)) {
    html += `<h2>${esc(tag)}</h2>`;
    for (const {path, method, op} of ops) {
      html += `<details><summary><span class="m ${method}">${method.toUpperCase()}</span>` +
        `<code>${esc(path)}</code> — ${esc(op.summary)}</summary>` +
        (op.description ? `<p>${esc(op.description)}</p>` : '') +
        `<pre>${esc(JSON.stringify({parameters: op.parameters, requestBody: op.requestBody,
          responses: op.responses, security: op.security}, null, 2))}</pre></details>`;
    }
  }
  document.getElementById('ops').innerHTML = html;
});
</script></body></html>
"#;

#[get("/api/openapi.json")]
async fn openapi() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(OPENAPI_JSON)
}

#[get("/api/docs")]
async fn docs() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(DOCS_PAGE)
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(openapi).service(docs);
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::OPENAPI_JSON;

    /// Every `#[get("…")]`-style route under `src/routes`, as (method, path).
    fn routes_in_code() -> BTreeSet<(String, String)> {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/routes");
        let mut routes = BTreeSet::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let source = std::fs::read_to_string(entry.unwrap().path()).unwrap();
            for line in source.lines().map(str::trim) {
                for method in ["get", "post", "put", "delete", "patch"] {
                    if let Some(rest) = line.strip_prefix(&format!("#[{method}(\"")) {
                        let path = rest.split('"').next().unwrap();
                        routes.insert((method.to_owned(), path.to_owned()));
                    }
                }
            }
        }
        routes
    }

    fn routes_in_spec() -> BTreeSet<(String, String)> {
        let spec: serde_json::Value = serde_json::from_str(OPENAPI_JSON).unwrap();
        assert_eq!(spec["openapi"], "3.1.0");
        let mut routes = BTreeSet::new();
        for (path, item) in spec["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                if ["get", "post", "put", "delete", "patch"].contains(&method.as_str()) {
                    routes.insert((method.clone(), path.clone()));
                }
            }
        }
        routes
    }

    #[test]
    fn every_route_is_described_and_nothing_else() {
        let code = routes_in_code();
        let spec = routes_in_spec();
        assert!(code.len() >= 20, "routes found in the code: {code:?}");
        let missing: Vec<_> = code.difference(&spec).collect();
        assert!(
            missing.is_empty(),
            "routes missing from api/openapi.json: {missing:?}"
        );
        let extra: Vec<_> = spec.difference(&code).collect();
        assert!(
            extra.is_empty(),
            "api/openapi.json describes routes that do not exist: {extra:?}"
        );
    }

    #[test]
    fn every_operation_is_documented() {
        let spec: serde_json::Value = serde_json::from_str(OPENAPI_JSON).unwrap();
        for (path, item) in spec["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                if !["get", "post", "put", "delete", "patch"].contains(&method.as_str()) {
                    continue;
                }
                for field in ["operationId", "summary", "tags", "responses"] {
                    assert!(op.get(field).is_some(), "{method} {path} has no {field}");
                }
            }
        }
    }
}

//! Tests across the catalog: folders on disk and real-world compose files.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde_yaml_ng::{Mapping, Value};

use super::version::is_valid_name;
use super::*;

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let path = std::env::temp_dir().join(format!("shiplog-catalog-{}", uuid::Uuid::new_v4()));
        fs::create_dir_all(&path).unwrap();
        Self(path)
    }

    fn write(&self, relative: &str, text: &str) {
        let path = self.0.join(relative);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn stack(name: &str, version: &str) -> String {
    format!("name: {name}\nx-shiplog:\n  version: {version}\nservices:\n  web:\n    image: nginx\n")
}

#[test]
fn a_directory_loads_every_stack_file_below_it() {
    let dir = TempDir::new();
    dir.write("shop/1.0.0.yml", &stack("shop", "1.0.0"));
    dir.write("shop/nested/1.1.0.yaml", &stack("shop", "1.1.0"));
    dir.write("blog.yml", &stack("blog", "2"));
    dir.write("README.md", "not a stack");
    // Tooling folders such as .github hold YAML that is not a stack.
    dir.write(".github/workflows/ci.yml", "on: push\n");
    dir.write(
        "broken.yml",
        "name: broken\nx-shiplog: { version: 1.0.0 }\nservices:\n  app:\n    build: .\n",
    );

    let scan = read_directory(&dir.0).unwrap();
    let loaded: Vec<(&str, &str, &str)> = scan
        .manifests
        .iter()
        .map(|m| (m.file.as_str(), m.stack_name.as_str(), m.version.as_str()))
        .collect();
    assert_eq!(
        loaded,
        [
            ("blog.yml", "blog", "2"),
            ("shop/1.0.0.yml", "shop", "1.0.0"),
            ("shop/nested/1.1.0.yaml", "shop", "1.1.0"),
        ]
    );
    assert_eq!(scan.errors.len(), 1, "{:?}", scan.errors);
    assert_eq!(
        scan.errors[0].to_string(),
        "broken.yml:5: service 'app', key 'build': not supported: a catalog deploys images; \
         build and push the image in CI and reference it with 'image:'"
    );
    assert_eq!(scan.content_hash.len(), 64);
}

#[test]
fn the_content_hash_follows_paths_and_contents() {
    let dir = TempDir::new();
    dir.write("a.yml", &stack("a", "1"));
    dir.write("b/b.yml", &stack("b", "1"));
    let first = read_directory(&dir.0).unwrap().content_hash;
    assert_eq!(
        read_directory(&dir.0).unwrap().content_hash,
        first,
        "stable"
    );

    dir.write("notes.txt", "ignored");
    assert_eq!(
        read_directory(&dir.0).unwrap().content_hash,
        first,
        "other files do not count"
    );

    dir.write("b/b.yml", &stack("b", "2"));
    let changed = read_directory(&dir.0).unwrap().content_hash;
    assert_ne!(changed, first);

    fs::rename(dir.0.join("b/b.yml"), dir.0.join("b/c.yml")).unwrap();
    assert_ne!(
        read_directory(&dir.0).unwrap().content_hash,
        changed,
        "a rename counts"
    );
}

#[test]
fn the_same_stack_version_in_two_files_names_both_and_loads_neither() {
    let dir = TempDir::new();
    dir.write("a/shop.yml", &stack("shop", "1.0.0"));
    dir.write("b/shop-copy.yaml", &stack("shop", "1.0.0"));
    dir.write("c.yml", &stack("shop", "1.0.1"));

    let scan = read_directory(&dir.0).unwrap();
    let versions: Vec<&str> = scan.manifests.iter().map(|m| m.version.as_str()).collect();
    assert_eq!(versions, ["1.0.1"]);
    assert_eq!(scan.errors.len(), 1, "{:?}", scan.errors);
    let err = &scan.errors[0];
    assert_eq!(err.file, "b/shop-copy.yaml");
    assert_eq!(err.line, Some(3));
    assert!(
        err.message.contains("'a/shop.yml'") && err.message.contains("'b/shop-copy.yaml'"),
        "{err}"
    );
}

#[test]
fn a_bad_root_is_a_catalog_error() {
    let dir = TempDir::new();
    let missing = dir.0.join("nope");
    assert!(matches!(read_directory(&missing), Err(CatalogError::NotFound(p)) if p == missing));
    dir.write("file.yml", &stack("a", "1"));
    let file = dir.0.join("file.yml");
    let err = read_directory(&file).unwrap_err();
    assert!(matches!(&err, CatalogError::NotADirectory(p) if *p == file));
    assert!(
        err.to_string().ends_with("file.yml' is not a directory"),
        "{err}"
    );
}

#[cfg(unix)]
#[test]
fn symbolic_links_do_not_lead_out_of_the_root() {
    use std::os::unix::fs::symlink;
    let outside = TempDir::new();
    outside.write("secret.yml", &stack("secret", "1"));
    let dir = TempDir::new();
    dir.write("real/inside.yml", &stack("inside", "1"));
    symlink(outside.0.join("secret.yml"), dir.0.join("leak.yml")).unwrap();
    symlink(&outside.0, dir.0.join("outside-dir")).unwrap();
    // A link to its own parent would loop if directories were followed.
    symlink(&dir.0, dir.0.join("real/loop")).unwrap();
    symlink(dir.0.join("real/inside.yml"), dir.0.join("alias.yml")).unwrap();

    let scan = read_directory(&dir.0).unwrap();
    let names: Vec<(&str, &str)> = scan
        .manifests
        .iter()
        .map(|m| (m.file.as_str(), m.stack_name.as_str()))
        .collect();
    // The in-root alias reads the same stack version twice: reported as a duplicate.
    assert!(names.is_empty(), "{names:?}");
    let errors: Vec<String> = scan.errors.iter().map(|e| e.to_string()).collect();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(
        errors[0].starts_with("leak.yml: symbolic link to a file outside"),
        "{errors:?}"
    );
    assert!(
        errors[1].starts_with("real/inside.yml:3: stack 'inside' version '1'"),
        "{errors:?}"
    );
}

/// Compose project rules for a file stem: lowercase, other characters become '-'.
fn sanitize(stem: &str) -> String {
    let name: String = stem
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let name = name.trim_start_matches(['_', '-']);
    let name: String = name.chars().take(63).collect();
    if name.is_empty() {
        "stack".into()
    } else {
        name
    }
}

/// Every real-world sample either loads or is refused with a message that names the file, a
/// service and the key at fault: nothing is silently half-accepted.
#[test]
fn real_world_compose_files_load_or_are_refused_by_service_and_key() {
    let dir = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/fixtures/compose"
    ));
    if !dir.is_dir() {
        println!(
            "note: {} is absent; real-world compose samples not checked",
            dir.display()
        );
        return;
    }
    let mut paths: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "no samples in {}", dir.display());

    let mut loaded = Vec::new();
    let mut refused = Vec::new();
    for path in &paths {
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        let text = fs::read_to_string(path).unwrap();
        let mut doc: Value =
            serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
        let Value::Mapping(top) = &mut doc else {
            panic!("{file}: not a mapping")
        };
        if !top
            .get("name")
            .and_then(Value::as_str)
            .is_some_and(is_valid_name)
        {
            let stem = path.file_stem().unwrap().to_string_lossy();
            top.insert("name".into(), sanitize(&stem).into());
        }
        let mut block = Mapping::new();
        block.insert("version".into(), "1.0.0".into());
        top.insert("x-shiplog".into(), Value::Mapping(block));
        // The keys of each service, to check that a refusal names one of them.
        let services: Vec<(String, Vec<String>)> = top
            .get("services")
            .and_then(Value::as_mapping)
            .into_iter()
            .flatten()
            .map(|(name, body)| {
                let keys = body.as_mapping().into_iter().flatten();
                let keys = keys.filter_map(|(k, _)| k.as_str().map(String::from));
                (
                    name.as_str().unwrap_or_default().to_owned(),
                    keys.chain(["image".to_owned()]).collect(),
                )
            })
            .collect();
        let uses_build = services
            .iter()
            .any(|(_, keys)| keys.iter().any(|k| k == "build"));
        let text = serde_yaml_ng::to_string(&doc).unwrap();
        let outcome = check_sample(&file, &text, &services);
        match outcome {
            Ok(()) => {
                assert!(!uses_build, "{file} uses build: but was accepted");
                loaded.push(file);
            }
            Err(message) => {
                // Past the container names, more of the file is checked: it must hold too.
                if message.contains("key 'container_name'") {
                    strip_container_names(&mut doc);
                    let text = serde_yaml_ng::to_string(&doc).unwrap();
                    let again = match check_sample(&file, &text, &services) {
                        Ok(()) => "loads".to_owned(),
                        Err(message) => message,
                    };
                    refused.push(format!("{message}\n      without container_name: {again}"));
                } else {
                    refused.push(message);
                }
            }
        }
    }
    println!("{} loaded: {}", loaded.len(), loaded.join(", "));
    println!("{} refused:", refused.len());
    for message in &refused {
        println!("  {message}");
    }
    assert!(!loaded.is_empty(), "no sample loaded at all");
}

fn strip_container_names(doc: &mut Value) {
    let services = doc
        .get_mut("services")
        .and_then(Value::as_mapping_mut)
        .unwrap();
    for (_, body) in services.iter_mut() {
        if let Some(body) = body.as_mapping_mut() {
            body.remove("container_name");
        }
    }
}

/// `Err`: the refusal, after asserting that it names the file, a service and a key.
fn check_sample(file: &str, text: &str, services: &[(String, Vec<String>)]) -> Result<(), String> {
    match parse_manifest(file, text) {
        Ok(manifest) => {
            // Loaded files resolve too, or fail only for want of variables.
            match resolve(&manifest, &BTreeMap::new()) {
                Ok(_)
                | Err(ResolveError::MissingVariables(_) | ResolveError::RequiredVariable { .. }) => {
                    Ok(())
                }
                Err(e) => panic!("{file} loaded but does not resolve: {e}"),
            }
        }
        Err(e) => {
            let message = e.to_string();
            assert!(
                message.starts_with(&format!("{file}:")),
                "names no file: {message}"
            );
            let named = services.iter().any(|(service, keys)| {
                message.contains(&format!("service '{service}'"))
                    && keys.iter().any(|k| message.contains(&format!("key '{k}")))
            });
            assert!(
                named,
                "refusal names no service and key of the file: {message}"
            );
            Err(message)
        }
    }
}

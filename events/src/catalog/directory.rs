//! A catalog folder: every `*.yml` / `*.yaml` below it is one stack version.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use thiserror::Error;

use super::manifest::{FileError, Manifest, locate, parse_manifest};

/// Problems with the catalog root itself; problems with files inside it are `FileError`s.
#[derive(Debug, Error)]
pub enum CatalogError {
    #[error("catalog directory '{}' does not exist", .0.display())]
    NotFound(PathBuf),
    #[error("catalog path '{}' is not a directory", .0.display())]
    NotADirectory(PathBuf),
    // The cause is in the message (clients see it), so it is not also a `source`.
    #[error("cannot read catalog directory '{}': {error}", path.display())]
    Io { path: PathBuf, error: io::Error },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryScan {
    /// Valid stack versions, in path order.
    pub manifests: Vec<Manifest>,
    /// Every file that could not be loaded, paths relative to the root.
    pub errors: Vec<FileError>,
    /// SHA-256 (hex) over the sorted (relative path, content) of every stack file read:
    /// equal hashes mean nothing changed.
    pub content_hash: String,
}

/// Reads every `*.yml` / `*.yaml` below `root`, recursively, in sorted path order.
///
/// Hidden entries (`.git`, `.github`, …) are skipped: they hold tooling files, not stacks.
/// Symbolic links to directories are not followed (they could loop or read files twice);
/// a link to a stack file is read only when its target lies inside `root`.
pub fn read_directory(root: &Path) -> Result<DirectoryScan, CatalogError> {
    let io_error = |source: io::Error| match source.kind() {
        io::ErrorKind::NotFound => CatalogError::NotFound(root.to_owned()),
        _ => CatalogError::Io {
            path: root.to_owned(),
            error: source,
        },
    };
    if !fs::metadata(root).map_err(io_error)?.is_dir() {
        return Err(CatalogError::NotADirectory(root.to_owned()));
    }
    let real_root = fs::canonicalize(root).map_err(io_error)?;
    let mut files = Vec::new();
    let mut errors = Vec::new();
    // The root itself must be readable; what lies below is reported per entry.
    let entries = fs::read_dir(root).map_err(io_error)?;
    walk(&real_root, entries, "", &mut files, &mut errors);
    files.sort();

    let mut hasher = Sha256::new();
    let mut manifests = Vec::new();
    for (relative, path) in files {
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) => {
                errors.push(file_error(&relative, format!("cannot read the file: {e}")));
                continue;
            }
        };
        // Path and length prefixes keep the encoding unambiguous.
        hasher.update((relative.len() as u64).to_be_bytes());
        hasher.update(relative.as_bytes());
        hasher.update((bytes.len() as u64).to_be_bytes());
        hasher.update(&bytes);
        match String::from_utf8(bytes) {
            Ok(text) => match parse_manifest(&relative, &text) {
                Ok(manifest) => manifests.push(manifest),
                Err(e) => errors.push(e),
            },
            Err(_) => errors.push(file_error(&relative, "the file is not valid UTF-8".into())),
        }
    }
    let manifests = drop_duplicates(manifests, &mut errors);
    // Listing order is the file system's; reports should not depend on it.
    errors.sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
    Ok(DirectoryScan {
        manifests,
        errors,
        content_hash: hex::encode(hasher.finalize()),
    })
}

fn file_error(file: &str, message: String) -> FileError {
    FileError {
        file: file.to_owned(),
        line: None,
        message,
    }
}

fn is_stack_file(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    lower.ends_with(".yml") || lower.ends_with(".yaml")
}

fn walk(
    real_root: &Path,
    entries: fs::ReadDir,
    prefix: &str,
    files: &mut Vec<(String, PathBuf)>,
    errors: &mut Vec<FileError>,
) {
    for entry in entries {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) => {
                errors.push(file_error(
                    display_dir(prefix),
                    format!("cannot list the directory: {e}"),
                ));
                continue;
            }
        };
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let relative = format!("{prefix}{name}");
        let path = entry.path();
        let file_type = match entry.file_type() {
            Ok(file_type) => file_type,
            Err(e) => {
                errors.push(file_error(&relative, format!("cannot read the entry: {e}")));
                continue;
            }
        };
        if file_type.is_dir() {
            match fs::read_dir(&path) {
                Ok(children) => walk(real_root, children, &format!("{relative}/"), files, errors),
                Err(e) => errors.push(file_error(
                    &relative,
                    format!("cannot list the directory: {e}"),
                )),
            }
        } else if !is_stack_file(&name) {
            continue;
        } else if file_type.is_symlink() {
            match fs::canonicalize(&path) {
                Ok(target) if !target.starts_with(real_root) => errors.push(file_error(
                    &relative,
                    "symbolic link to a file outside the catalog directory; not read".into(),
                )),
                Ok(target) if target.is_file() => files.push((relative, target)),
                Ok(_) => {}
                Err(e) => errors.push(file_error(&relative, format!("broken symbolic link: {e}"))),
            }
        } else if file_type.is_file() {
            files.push((relative, path));
        }
    }
}

fn display_dir(prefix: &str) -> &str {
    match prefix.strip_suffix('/') {
        Some("") | None => ".",
        Some(dir) => dir,
    }
}

/// Two files for one (stack, version) make that version ambiguous: neither is loaded, and
/// each later file is reported naming the first.
fn drop_duplicates(manifests: Vec<Manifest>, errors: &mut Vec<FileError>) -> Vec<Manifest> {
    let mut first: HashMap<(String, String), String> = HashMap::new();
    let mut duplicated = std::collections::HashSet::new();
    for m in &manifests {
        let key = (m.stack_name.clone(), m.version.clone());
        match first.get(&key) {
            Some(first_file) => {
                let path = ["x-shiplog".to_owned(), "version".to_owned()];
                errors.push(FileError {
                    file: m.file.clone(),
                    line: locate(&m.source_text, &path),
                    message: format!(
                        "stack '{}' version '{}' is declared in both '{first_file}' and '{}'; \
                         neither is loaded",
                        m.stack_name, m.version, m.file
                    ),
                });
                duplicated.insert(key);
            }
            None => {
                first.insert(key, m.file.clone());
            }
        }
    }
    manifests
        .into_iter()
        .filter(|m| !duplicated.contains(&(m.stack_name.clone(), m.version.clone())))
        .collect()
}

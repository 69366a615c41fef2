//! Catalog sources (folders for now) and their synchronisation into the log.

use std::path::Path;

use sqlx::PgPool;

use crate::catalog::{self, DirectoryScan, FileError};
use crate::error::{Error, Result};
use crate::event::{CatalogStackVersion, Event, Metadata, stream};
use crate::store::{self, ExpectedVersion};

pub const DIRECTORY: &str = "directory";

/// A directory source's id: derived from its path so registering it twice is detectable.
pub fn directory_source_id(path: &str) -> String {
    use sha2::{Digest, Sha256};
    format!(
        "dir-{}",
        &hex::encode(Sha256::digest(path.as_bytes()))[..12]
    )
}

fn synced_event(source: &str, scan: &DirectoryScan) -> Event {
    Event::CatalogSynced {
        source: source.to_owned(),
        revision: None,
        content_hash: scan.content_hash.clone(),
        stacks: scan
            .manifests
            .iter()
            .map(|m| CatalogStackVersion {
                name: m.stack_name.clone(),
                version: m.version.clone(),
                file: m.file.clone(),
                description: m.description.clone(),
                variables: m.variables.clone(),
                manifest: m.source_text.clone(),
            })
            .collect(),
    }
}

fn scan_directory(path: &str) -> Result<DirectoryScan> {
    let scan = catalog::read_directory(Path::new(path))
        .map_err(|e| Error::Invalid(format!("catalog source '{path}': {e}")))?;
    if !scan.errors.is_empty() {
        return Err(Error::Invalid(format!(
            "catalog source '{path}' has invalid files: {}",
            join_errors(&scan.errors)
        )));
    }
    Ok(scan)
}

fn join_errors(errors: &[FileError]) -> String {
    errors
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct Source {
    pub id: String,
    pub kind: String,
    pub location: String,
    pub revision: Option<String>,
    pub content_hash: Option<String>,
    pub synced_at: Option<chrono::DateTime<chrono::Utc>>,
}

pub async fn list_sources(pool: &PgPool) -> Result<Vec<Source>> {
    Ok(sqlx::query_as(
        "SELECT id, kind, location, revision, content_hash, synced_at FROM catalog_sources ORDER BY created_at, id",
    )
    .fetch_all(pool)
    .await?)
}

/// Registers a folder and loads it. A folder with any invalid file is refused whole,
/// with every bad file named, and nothing is written.
pub async fn add_directory(
    pool: &PgPool,
    path: &str,
    metadata: &Metadata,
) -> Result<(Source, usize)> {
    if !Path::new(path).is_absolute() {
        return Err(Error::Invalid(format!(
            "catalog path '{path}' must be absolute"
        )));
    }
    let scan = scan_directory(path)?;
    let id = directory_source_id(path);
    let mut tx = pool.begin().await?;
    let events = [
        Event::CatalogSourceAdded {
            id: id.clone(),
            kind: DIRECTORY.into(),
            location: path.to_owned(),
        },
        synced_event(&id, &scan),
    ];
    match store::append(
        &mut tx,
        &stream::source(&id),
        ExpectedVersion::NoStream,
        &events,
        metadata,
    )
    .await
    {
        Err(Error::Conflict { .. }) => {
            return Err(Error::AlreadyExists(format!(
                "catalog source '{path}' is already registered as {id}"
            )));
        }
        other => other?,
    };
    tx.commit().await?;
    let source = list_sources(pool)
        .await?
        .into_iter()
        .find(|s| s.id == id)
        .ok_or_else(|| Error::NotFound(format!("catalog source {id} not found")))?;
    Ok((source, scan.manifests.len()))
}

#[derive(Debug, Clone, Default)]
pub struct SyncReport {
    pub sources_synced: usize,
    pub stacks_loaded: usize,
    /// Sources that could not be read, each with why; the others still synced.
    pub failures: Vec<(String, String)>,
}

/// Re-reads every source. A source whose content hash is unchanged records nothing new.
pub async fn sync_all(pool: &PgPool, metadata: &Metadata) -> Result<SyncReport> {
    let mut report = SyncReport::default();
    for source in list_sources(pool).await? {
        let scan = match scan_directory(&source.location) {
            Ok(scan) => scan,
            Err(e) => {
                tracing::warn!(source = %source.id, error = %e, "catalog source failed to sync");
                report
                    .failures
                    .push((source.location.clone(), e.to_string()));
                continue;
            }
        };
        report.sources_synced += 1;
        report.stacks_loaded += scan.manifests.len();
        if source.content_hash.as_deref() == Some(scan.content_hash.as_str()) {
            continue;
        }
        let mut tx = pool.begin().await?;
        let stream = stream::source(&source.id);
        let version = store::stream_version(&mut tx, &stream).await?;
        let event = synced_event(&source.id, &scan);
        store::append(
            &mut tx,
            &stream,
            ExpectedVersion::Exactly(version),
            &[event],
            metadata,
        )
        .await?;
        tx.commit().await?;
    }
    Ok(report)
}

#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CatalogStack {
    pub name: String,
    /// Ordered oldest to newest.
    pub versions: Vec<CatalogVersion>,
}

#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CatalogVersion {
    pub version: String,
    pub description: Option<String>,
    pub source: String,
    pub file: String,
    pub variables: serde_json::Value,
}

pub async fn list_stacks(pool: &PgPool) -> Result<Vec<CatalogStack>> {
    let rows: Vec<(
        String,
        String,
        Option<String>,
        String,
        String,
        serde_json::Value,
    )> = sqlx::query_as(
        "SELECT stack_name, version, description, source_id, file, variables FROM catalog_stacks
         ORDER BY stack_name",
    )
    .fetch_all(pool)
    .await?;
    let mut stacks: Vec<CatalogStack> = Vec::new();
    for (name, version, description, source, file, variables) in rows {
        let entry = CatalogVersion {
            version,
            description,
            source,
            file,
            variables,
        };
        match stacks.last_mut() {
            Some(last) if last.name == name => last.versions.push(entry),
            _ => stacks.push(CatalogStack {
                name,
                versions: vec![entry],
            }),
        }
    }
    for stack in &mut stacks {
        stack
            .versions
            .sort_by(|a, b| catalog::compare_versions(&a.version, &b.version));
    }
    Ok(stacks)
}

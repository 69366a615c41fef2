//! Catalog sources (folders and git repositories) and their synchronisation into the log.

use std::path::Path;

use sqlx::PgPool;

use crate::catalog::git::{self, GitCredentials, GitLocation, GitSettings};
use crate::catalog::{self, DirectoryScan, FileError};
use crate::error::{Error, Result};
use crate::event::{
    CatalogStackVersion, Event, GitSourceSpec, Metadata, SealedCredentials, stream,
};
use crate::secret::SecretKey;
use crate::store::{self, ExpectedVersion};

pub const DIRECTORY: &str = "directory";
pub const GIT: &str = "git";

/// What syncing sources needs besides the database.
#[derive(Debug, Clone, Default)]
pub struct CatalogSettings {
    pub git: GitSettings,
    /// Seals and opens git credentials; `None`: sources with credentials are refused.
    pub secret_key: Option<SecretKey>,
}

fn short_hash(parts: &[&str]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(parts.join("\0").as_bytes()))[..12].to_owned()
}

/// A directory source's id: derived from its path so registering it twice is detectable.
pub fn directory_source_id(path: &str) -> String {
    format!("dir-{}", short_hash(&[path]))
}

/// A git source's id: derived from URL, ref and folder, like a directory's.
pub fn git_source_id(location: &GitLocation) -> String {
    format!(
        "git-{}",
        short_hash(&[
            &location.url,
            &location.reference,
            location.path.as_deref().unwrap_or("")
        ])
    )
}

fn synced_event(source: &str, revision: Option<String>, scan: &DirectoryScan) -> Event {
    Event::CatalogSynced {
        source: source.to_owned(),
        revision,
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
    refuse_invalid_files(path, scan)
}

fn refuse_invalid_files(name: &str, scan: DirectoryScan) -> Result<DirectoryScan> {
    if !scan.errors.is_empty() {
        return Err(Error::Invalid(format!(
            "catalog source '{name}' has invalid files: {}",
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

/// How a source's credentials are shown: the kind and the user name, never the secret.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum CredentialsView {
    Https { username: String },
    Ssh { known_hosts: bool },
}

#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Source {
    pub id: String,
    /// `directory` or `git`.
    pub kind: String,
    /// A folder's path, or a git source's URL.
    pub location: String,
    /// Git: the branch or tag read.
    #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// Git: the folder inside the repository.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credentials: Option<CredentialsView>,
    /// Git: the commit last synced; folders have none.
    pub revision: Option<String>,
    pub content_hash: Option<String>,
    pub synced_at: Option<chrono::DateTime<chrono::Utc>>,
    #[serde(skip)]
    sealed: Option<SealedCredentials>,
}

impl Source {
    /// How reports name the source: a folder's path, a git source's `url#ref[:path]`.
    pub fn name(&self) -> String {
        match (&self.reference, &self.path) {
            (Some(r), Some(p)) => format!("{}#{r}:{p}", self.location),
            (Some(r), None) => format!("{}#{r}", self.location),
            _ => self.location.clone(),
        }
    }
}

type SourceRow = (
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    Option<sqlx::types::Json<SealedCredentials>>,
    Option<String>,
    Option<String>,
    Option<chrono::DateTime<chrono::Utc>>,
);

pub async fn list_sources(pool: &PgPool) -> Result<Vec<Source>> {
    let rows: Vec<SourceRow> = sqlx::query_as(
        "SELECT id, kind, location, git_ref, git_path, credentials, revision, content_hash,
                synced_at
         FROM catalog_sources ORDER BY created_at, id",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(id, kind, location, reference, path, sealed, revision, content_hash, synced_at)| {
                let sealed = sealed.map(|s| s.0);
                Source {
                    id,
                    kind,
                    location,
                    reference,
                    path,
                    credentials: sealed.as_ref().map(view),
                    revision,
                    content_hash,
                    synced_at,
                    sealed,
                }
            },
        )
        .collect())
}

fn view(sealed: &SealedCredentials) -> CredentialsView {
    match sealed {
        SealedCredentials::Https { username, .. } => CredentialsView::Https {
            username: username.clone(),
        },
        SealedCredentials::Ssh { known_hosts, .. } => CredentialsView::Ssh {
            known_hosts: known_hosts.is_some(),
        },
    }
}

async fn source(pool: &PgPool, id: &str) -> Result<Source> {
    list_sources(pool)
        .await?
        .into_iter()
        .find(|s| s.id == id)
        .ok_or_else(|| Error::NotFound(format!("catalog source {id} not found")))
}

/// Appends a new source and its first sync; registering one twice is `AlreadyExists`.
async fn register(
    pool: &PgPool,
    id: &str,
    name: &str,
    events: [Event; 2],
    metadata: &Metadata,
) -> Result<()> {
    let mut tx = pool.begin().await?;
    match store::append(
        &mut tx,
        &stream::source(id),
        ExpectedVersion::NoStream,
        &events,
        metadata,
    )
    .await
    {
        Err(Error::Conflict { .. }) => {
            return Err(Error::AlreadyExists(format!(
                "catalog source '{name}' is already registered as {id}"
            )));
        }
        other => other?,
    };
    tx.commit().await?;
    Ok(())
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
    let events = [
        Event::CatalogSourceAdded {
            id: id.clone(),
            kind: DIRECTORY.into(),
            location: path.to_owned(),
            git: None,
        },
        synced_event(&id, None, &scan),
    ];
    register(pool, &id, path, events, metadata).await?;
    Ok((source(pool, &id).await?, scan.manifests.len()))
}

const NO_SECRET_KEY: &str = "SHIPLOG_SECRET_KEY is not set: credentials cannot be stored \
    (set a 32-byte key, e.g. `openssl rand -hex 32`, on the API and restart it)";

fn seal(key: &SecretKey, credentials: &GitCredentials) -> SealedCredentials {
    match credentials {
        GitCredentials::Https { username, password } => SealedCredentials::Https {
            username: username.clone(),
            password: key.seal(password),
        },
        GitCredentials::Ssh {
            private_key,
            known_hosts,
        } => SealedCredentials::Ssh {
            private_key: key.seal(private_key),
            known_hosts: known_hosts.clone(),
        },
    }
}

fn open(key: Option<&SecretKey>, sealed: &SealedCredentials) -> Result<GitCredentials> {
    let key = key.ok_or_else(|| Error::Invalid(NO_SECRET_KEY.into()))?;
    let opened = |v: &str| {
        key.open(v).map_err(|e| {
            Error::Invalid(format!(
                "the source's credentials cannot be opened ({e}): was SHIPLOG_SECRET_KEY changed?"
            ))
        })
    };
    Ok(match sealed {
        SealedCredentials::Https { username, password } => GitCredentials::Https {
            username: username.clone(),
            password: opened(password)?,
        },
        SealedCredentials::Ssh {
            private_key,
            known_hosts,
        } => GitCredentials::Ssh {
            private_key: opened(private_key)?,
            known_hosts: known_hosts.clone(),
        },
    })
}

fn git_name(location: &GitLocation) -> String {
    match &location.path {
        Some(p) => format!("{}#{}:{p}", location.url, location.reference),
        None => format!("{}#{}", location.url, location.reference),
    }
}

async fn fetch_git(
    settings: &CatalogSettings,
    id: &str,
    location: &GitLocation,
    credentials: Option<&GitCredentials>,
) -> Result<(String, DirectoryScan)> {
    let name = git_name(location);
    let fetched = git::sync(&settings.git, id, location, credentials)
        .await
        .map_err(|e| Error::Invalid(format!("catalog source '{name}': {e}")))?;
    let scan = refuse_invalid_files(&name, fetched.scan)?;
    Ok((fetched.commit, scan))
}

/// Registers a git source and syncs it once. A bad URL, ref or path, an unreachable
/// repository or an invalid file is refused with git's reason; nothing is written.
pub async fn add_git(
    pool: &PgPool,
    settings: &CatalogSettings,
    location: GitLocation,
    credentials: Option<GitCredentials>,
    metadata: &Metadata,
) -> Result<(Source, usize)> {
    git::validate(&location).map_err(Error::Invalid)?;
    let sealed = match &credentials {
        None => None,
        Some(c) => {
            let key = settings
                .secret_key
                .as_ref()
                .ok_or_else(|| Error::Invalid(NO_SECRET_KEY.into()))?;
            Some(seal(key, c))
        }
    };
    let id = git_source_id(&location);
    let name = git_name(&location);
    if list_sources(pool).await?.iter().any(|s| s.id == id) {
        return Err(Error::AlreadyExists(format!(
            "catalog source '{name}' is already registered as {id}"
        )));
    }
    let (commit, scan) = fetch_git(settings, &id, &location, credentials.as_ref()).await?;
    let events = [
        Event::CatalogSourceAdded {
            id: id.clone(),
            kind: GIT.into(),
            location: location.url.clone(),
            git: Some(GitSourceSpec {
                url: location.url.clone(),
                reference: location.reference.clone(),
                path: location.path.clone(),
                credentials: sealed,
            }),
        },
        synced_event(&id, Some(commit), &scan),
    ];
    register(pool, &id, &name, events, metadata).await?;
    Ok((source(pool, &id).await?, scan.manifests.len()))
}

#[derive(Debug, Clone, Default)]
pub struct SyncReport {
    pub sources_synced: usize,
    pub stacks_loaded: usize,
    /// Sources that could not be read, each with why; the others still synced.
    pub failures: Vec<(String, String)>,
}

/// Reads one source as it is now: (revision, scan).
async fn read_source(
    settings: &CatalogSettings,
    source: &Source,
) -> Result<(Option<String>, DirectoryScan)> {
    if source.kind != GIT {
        return Ok((None, scan_directory(&source.location)?));
    }
    let location = GitLocation {
        url: source.location.clone(),
        reference: source.reference.clone().unwrap_or_default(),
        path: source.path.clone(),
    };
    let credentials = source
        .sealed
        .as_ref()
        .map(|s| open(settings.secret_key.as_ref(), s))
        .transpose()?;
    let (commit, scan) = fetch_git(settings, &source.id, &location, credentials.as_ref()).await?;
    Ok((Some(commit), scan))
}

/// Re-reads every source. A source whose revision and content hash are unchanged records
/// nothing new; one that fails keeps its last good catalog and is reported by name.
pub async fn sync_all(
    pool: &PgPool,
    settings: &CatalogSettings,
    metadata: &Metadata,
) -> Result<SyncReport> {
    let mut report = SyncReport::default();
    for source in list_sources(pool).await? {
        let (revision, scan) = match read_source(settings, &source).await {
            Ok(read) => read,
            Err(e) => {
                tracing::warn!(source = %source.id, error = %e, "catalog source failed to sync");
                report.failures.push((source.name(), e.to_string()));
                continue;
            }
        };
        report.sources_synced += 1;
        report.stacks_loaded += scan.manifests.len();
        if source.content_hash.as_deref() == Some(scan.content_hash.as_str())
            && source.revision == revision
        {
            continue;
        }
        let mut tx = pool.begin().await?;
        let stream = stream::source(&source.id);
        let version = store::stream_version(&mut tx, &stream).await?;
        let event = synced_event(&source.id, revision, &scan);
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

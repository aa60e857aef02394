//! Sources: turn a directory or a git commit into an immutable [`Snapshot`].
//!
//! Everything downstream (validation, rendering, planning) reads only the snapshot,
//! as Flux's controllers read only the source artifact: rendering needs no git, and
//! fetching needs no renderer.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The files of a config repository at one revision.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// The commit id, when the snapshot came from git.
    pub revision: Option<String>,
    /// Relative path (`/` separators) → content. Only the files MOP reads.
    pub files: BTreeMap<String, Vec<u8>>,
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a directory")]
    NotADirectory { path: PathBuf },
    #[error("cannot open a git repository at {path}: {source}")]
    OpenRepo {
        path: PathBuf,
        #[source]
        source: git2::Error,
    },
    #[error("cannot resolve git revision `{rev}`: {source}")]
    Revision {
        rev: String,
        #[source]
        source: git2::Error,
    },
    #[error("git: {0}")]
    Git(#[from] git2::Error),
    #[error("{path} in revision {rev} is not valid UTF-8 in its path")]
    BadPath { path: String, rev: String },
}

/// Whether MOP reads this repository path. Other files (README, CODEOWNERS, CI
/// config) are the users' business.
pub fn is_config_path(rel: &str) -> bool {
    rel == "mop.yaml" || rel == "versions.yaml" || rel.starts_with("tenants/")
}

impl Snapshot {
    /// Reads a working directory.
    pub fn from_dir(root: &Path) -> Result<Self, SourceError> {
        if !root.is_dir() {
            return Err(SourceError::NotADirectory {
                path: root.to_path_buf(),
            });
        }
        let mut files = BTreeMap::new();
        for name in ["mop.yaml", "versions.yaml"] {
            let p = root.join(name);
            if p.is_file() {
                files.insert(name.to_string(), read(&p)?);
            }
        }
        let tenants = root.join("tenants");
        if tenants.is_dir() {
            walk(&tenants, "tenants", &mut files)?;
        }
        Ok(Self {
            revision: None,
            files,
        })
    }

    /// Reads a commit straight from git objects: no checkout, so it works in bare
    /// clones and in dirty working trees, as CI jobs have them.
    pub fn from_git(repo_path: &Path, rev: &str) -> Result<Self, SourceError> {
        let repo =
            git2::Repository::discover(repo_path).map_err(|source| SourceError::OpenRepo {
                path: repo_path.to_path_buf(),
                source,
            })?;
        let commit = repo
            .revparse_single(rev)
            .and_then(|o| o.peel_to_commit())
            .map_err(|source| SourceError::Revision {
                rev: rev.to_string(),
                source,
            })?;
        let tree = commit.tree()?;
        // When the config repository is a subdirectory of the git repository (the
        // path given is below the work tree), read that subtree.
        let tree = match subdir_of_workdir(&repo, repo_path) {
            Some(sub) if !sub.as_os_str().is_empty() => {
                let entry = tree.get_path(&sub)?;
                repo.find_tree(entry.id())?
            }
            _ => tree,
        };
        let mut files = BTreeMap::new();
        let mut bad_path = None;
        tree.walk(git2::TreeWalkMode::PreOrder, |dir, entry| {
            if entry.kind() != Some(git2::ObjectType::Blob) {
                return git2::TreeWalkResult::Ok;
            }
            let Ok(name) = entry.name() else {
                bad_path = Some(dir.to_string());
                return git2::TreeWalkResult::Abort;
            };
            let rel = format!("{dir}{name}");
            if is_config_path(&rel)
                && let Ok(blob) = repo.find_blob(entry.id())
            {
                files.insert(rel, blob.content().to_vec());
            }
            git2::TreeWalkResult::Ok
        })?;
        if let Some(path) = bad_path {
            return Err(SourceError::BadPath {
                path,
                rev: rev.to_string(),
            });
        }
        Ok(Self {
            revision: Some(commit.id().to_string()),
            files,
        })
    }
}

fn subdir_of_workdir(repo: &git2::Repository, path: &Path) -> Option<PathBuf> {
    let workdir = repo.workdir()?.canonicalize().ok()?;
    let path = path.canonicalize().ok()?;
    path.strip_prefix(&workdir).ok().map(Path::to_path_buf)
}

fn read(p: &Path) -> Result<Vec<u8>, SourceError> {
    std::fs::read(p).map_err(|source| SourceError::Io {
        path: p.to_path_buf(),
        source,
    })
}

fn walk(dir: &Path, rel: &str, out: &mut BTreeMap<String, Vec<u8>>) -> Result<(), SourceError> {
    let entries = std::fs::read_dir(dir).map_err(|source| SourceError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    for entry in entries {
        let entry = entry.map_err(|source| SourceError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        let child = format!("{rel}/{name}");
        let ft = entry.file_type().map_err(|source| SourceError::Io {
            path: path.clone(),
            source,
        })?;
        if ft.is_dir() {
            walk(&path, &child, out)?;
        } else {
            out.insert(child, read(&path)?);
        }
    }
    Ok(())
}

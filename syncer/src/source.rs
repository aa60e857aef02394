//! Sources: turn a directory or a git commit into an immutable [`Snapshot`].
//!
//! Everything downstream (validation, rendering, planning) reads only the snapshot,
//! as Flux's controllers read only the source artifact: rendering needs no git, and
//! fetching needs no renderer. A snapshot is an index (path → content id) plus where
//! to read content from; files are read when parsed and dropped right after, so
//! memory follows the parsed model, not the size of the repository.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

/// The files of a config repository at one revision.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The commit id, when the snapshot came from git.
    pub revision: Option<String>,
    /// Relative path (`/` separators) → git blob id (`None` outside git). Only the
    /// files MOP reads. Equal blob ids mean equal content.
    pub files: BTreeMap<String, Option<String>>,
    /// Symbolic links among the config paths (path → the link's target as
    /// written). MOP never follows them and validation refuses them: a link
    /// resolves differently in a work tree, a git revision and the syncer's
    /// clone, and can point outside the repository. Recorded the same way from
    /// a directory and from git, so both give the same verdict.
    pub links: BTreeMap<String, String>,
    store: Store,
}

#[derive(Debug, Clone)]
enum Store {
    Memory(BTreeMap<String, Vec<u8>>),
    Dir(PathBuf),
    /// The git directory; content is read by blob id, never from the work tree.
    Git(PathBuf),
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
    #[error("a path in revision {rev} is not valid UTF-8 (under {path})")]
    BadPath { path: String, rev: String },
    #[error("{0} is not in the snapshot")]
    NotInSnapshot(String),
}

/// Whether MOP reads this repository path. Other files (README, CODEOWNERS, CI
/// config) are the users' business.
pub fn is_config_path(rel: &str) -> bool {
    rel == "mop.yaml"
        || rel == "versions.yaml"
        || rel == "alerting.yaml"
        || rel.starts_with("tenants/")
        || rel.starts_with("clusters/")
}

impl Snapshot {
    /// A snapshot of files held in memory (tests, and content already fetched).
    pub fn from_memory(files: BTreeMap<String, Vec<u8>>) -> Self {
        Self {
            revision: None,
            files: files.keys().map(|k| (k.clone(), None)).collect(),
            links: BTreeMap::new(),
            store: Store::Memory(files),
        }
    }

    /// Indexes a working directory.
    pub fn from_dir(root: &Path) -> Result<Self, SourceError> {
        if !root.is_dir() {
            return Err(SourceError::NotADirectory {
                path: root.to_path_buf(),
            });
        }
        let mut files = BTreeMap::new();
        let mut links = BTreeMap::new();
        // `symlink_metadata` never follows a link: a linked config file or
        // directory is recorded as a link, never read through.
        for name in [
            "mop.yaml",
            "versions.yaml",
            "alerting.yaml",
            "clusters",
            "tenants",
        ] {
            let path = root.join(name);
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.file_type().is_symlink() {
                links.insert(name.to_string(), link_target(&path));
            } else if (name == "tenants" || name == "clusters") && meta.is_dir() {
                walk(&path, name, &mut files, &mut links)?;
            } else if meta.is_file() {
                files.insert(name.to_string(), None);
            }
        }
        Ok(Self {
            revision: None,
            files,
            links,
            store: Store::Dir(root.to_path_buf()),
        })
    }

    /// Indexes a commit straight from git objects: no checkout, so it works in bare
    /// clones and in dirty working trees, as CI jobs have them.
    pub fn from_git(repo_path: &Path, rev: &str) -> Result<Self, SourceError> {
        // Like git itself, do not re-hash every object on read (libgit2 does by
        // default, at a tenth of a plan's time); fetches and `git fsck` verify.
        git2::opts::strict_hash_verification(false);
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
        let mut links = BTreeMap::new();
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
            if !is_config_path(&rel) && rel != "tenants" && rel != "clusters" {
                return git2::TreeWalkResult::Ok;
            }
            // A symlink is a blob holding the target path (mode 120000).
            if entry.filemode() == i32::from(git2::FileMode::Link) {
                let target = repo
                    .find_blob(entry.id())
                    .map(|b| String::from_utf8_lossy(b.content()).into_owned())
                    .unwrap_or_default();
                links.insert(rel, target);
            } else {
                files.insert(rel, Some(entry.id().to_string()));
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
            links,
            store: Store::Git(repo.path().to_path_buf()),
        })
    }

    pub fn contains(&self, path: &str) -> bool {
        self.files.contains_key(path)
    }

    /// A reader of this snapshot's content. Each thread opens its own (a git
    /// repository handle is not shareable between threads).
    pub fn reader(&self) -> Result<Reader<'_>, SourceError> {
        let repo = match &self.store {
            Store::Git(dir) => {
                Some(
                    git2::Repository::open(dir).map_err(|source| SourceError::OpenRepo {
                        path: dir.clone(),
                        source,
                    })?,
                )
            }
            _ => None,
        };
        Ok(Reader { snap: self, repo })
    }
}

/// Reads file content of a [`Snapshot`].
pub struct Reader<'a> {
    snap: &'a Snapshot,
    repo: Option<git2::Repository>,
}

impl Reader<'_> {
    /// Calls `f` with a file's content. From git, `f` reads the blob where libgit2
    /// holds it: a large repository's content is not copied once more (a tenth of
    /// a plan's CPU on the realistic benchmark repository was that copy).
    pub fn with_content<R>(
        &self,
        path: &str,
        f: impl FnOnce(&[u8]) -> R,
    ) -> Result<R, SourceError> {
        if let (Store::Git(_), Some(Some(id)), Some(repo)) =
            (&self.snap.store, self.snap.files.get(path), &self.repo)
        {
            let blob = repo.find_blob(git2::Oid::from_str(id)?)?;
            return Ok(f(blob.content()));
        }
        self.read(path).map(|bytes| f(&bytes))
    }

    pub fn read(&self, path: &str) -> Result<Vec<u8>, SourceError> {
        match (&self.snap.store, self.snap.files.get(path)) {
            (_, None) => Err(SourceError::NotInSnapshot(path.to_string())),
            (Store::Memory(m), _) => m
                .get(path)
                .cloned()
                .ok_or_else(|| SourceError::NotInSnapshot(path.to_string())),
            (Store::Dir(root), _) => read_no_follow(&root.join(path)),
            (Store::Git(_), Some(id)) => {
                let (Some(repo), Some(id)) = (&self.repo, id) else {
                    return Err(SourceError::NotInSnapshot(path.to_string()));
                };
                let blob = repo.find_blob(git2::Oid::from_str(id)?)?;
                Ok(blob.content().to_vec())
            }
        }
    }
}

fn subdir_of_workdir(repo: &git2::Repository, path: &Path) -> Option<PathBuf> {
    let workdir = repo.workdir()?.canonicalize().ok()?;
    let path = path.canonicalize().ok()?;
    path.strip_prefix(&workdir).ok().map(Path::to_path_buf)
}

/// Reads a file indexed as a regular file, refusing it if it became a link
/// since: never read anything outside the repository through a link.
fn read_no_follow(p: &Path) -> Result<Vec<u8>, SourceError> {
    let io = |source| SourceError::Io {
        path: p.to_path_buf(),
        source,
    };
    let meta = std::fs::symlink_metadata(p).map_err(io)?;
    if meta.file_type().is_symlink() {
        return Err(io(std::io::Error::other(
            "it is a symbolic link, which MOP does not follow",
        )));
    }
    std::fs::read(p).map_err(io)
}

fn link_target(p: &Path) -> String {
    std::fs::read_link(p)
        .map(|t| t.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn walk(
    dir: &Path,
    rel: &str,
    out: &mut BTreeMap<String, Option<String>>,
    links: &mut BTreeMap<String, String>,
) -> Result<(), SourceError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| SourceError::Io { path, source }
    };
    let mut dirs = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let entry = entry.map_err(io(dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        let child = format!("{rel}/{name}");
        // `DirEntry::file_type` does not follow links.
        let kind = entry.file_type().map_err(io(&path))?;
        if kind.is_symlink() {
            links.insert(child, link_target(&path));
        } else if kind.is_dir() {
            dirs.push((path, child));
        } else {
            out.insert(child, None);
        }
    }
    // Subdirectories are listed in parallel: before anything is read, a thousand
    // tenants' directories listed one by one were 5% of a large validate's wall
    // time, with the other core idle. The maps are merged in listing order, so
    // the first error is the one a sequential walk would meet first among them.
    let walked: Vec<_> = dirs
        .into_par_iter()
        .map(|(path, child)| {
            let (mut files, mut dir_links) = (BTreeMap::new(), BTreeMap::new());
            walk(&path, &child, &mut files, &mut dir_links).map(|()| (files, dir_links))
        })
        .collect();
    for w in walked {
        let (files, dir_links) = w?;
        out.extend(files);
        links.extend(dir_links);
    }
    Ok(())
}

//! The git source of `mop serve`: a local bare mirror of one branch of one remote.
//!
//! [`GitSource::fetch`] brings the branch up to date and says which commit it now
//! points at; [`GitSource::snapshot`] reads a commit straight from git objects (no
//! checkout), as [`Snapshot::from_git`] does. The mirror is a cache: an empty
//! directory (a Kubernetes `emptyDir`) is a valid starting point.
//!
//! Credentials live in files (mounted Secrets) and are read again on every fetch,
//! never cached and never logged, so a rotated token or key takes effect on the next
//! poll without a restart.
//!
//! git2 is blocking: call [`GitSource::fetch`] from `tokio::task::spawn_blocking`.

use std::cell::RefCell;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::source::{Snapshot, SourceError};

/// The username sent with an https token when none is configured. GitHub ignores
/// the username of a token login, Gitea accepts any, GitLab wants `oauth2` for
/// OAuth tokens and accepts any for personal/project access tokens.
pub const DEFAULT_TOKEN_USERNAME: &str = "x-access-token";

/// The ssh user when the URL names none (`ssh://host/repo`): what GitHub, GitLab and
/// Gitea all expect.
pub const DEFAULT_SSH_USERNAME: &str = "git";

/// How to authenticate to the remote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Auth {
    /// `file://`, plain paths, `git://`, or public https.
    #[default]
    None,
    /// https with a token as the password.
    Token {
        /// File holding the token (surrounding whitespace is ignored).
        token_file: PathBuf,
        /// Sent as the username; [`DEFAULT_TOKEN_USERNAME`] when `None`.
        username: Option<String>,
    },
    /// ssh with a private key.
    SshKey {
        /// The private key file (OpenSSH or PEM format).
        private_key: PathBuf,
        /// File holding the key's passphrase, when it has one.
        passphrase_file: Option<PathBuf>,
        /// OpenSSH `known_hosts` file the server's host key must be listed in.
        /// Without it [`GitSource::open`] refuses an ssh URL unless
        /// `insecure_accept_any_host_key` is set.
        known_hosts: Option<PathBuf>,
        /// Development only: accept any host key when no `known_hosts` file is
        /// given (a warning is logged on every fetch). A man-in-the-middle
        /// could then read the repository and serve a forged one.
        insecure_accept_any_host_key: bool,
        /// The ssh user when the URL names none; [`DEFAULT_SSH_USERNAME`] when `None`.
        username: Option<String>,
    },
}

/// What a [`GitSource`] mirrors.
#[derive(Debug, Clone)]
pub struct GitSourceConfig {
    /// `file://…`, a plain path, `git://…`, `https://…`, `ssh://…` or scp-like
    /// `user@host:path`.
    pub url: String,
    /// Branch name, without `refs/heads/`.
    pub branch: String,
    /// Directory of the local bare mirror; created when missing.
    pub mirror_dir: PathBuf,
    pub auth: Auth,
}

/// The result of one [`GitSource::fetch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchOutcome {
    /// The commit the branch points at now.
    pub commit: String,
    /// The commit it pointed at after the previous fetch into this mirror.
    pub previous: Option<String>,
    /// The branch moved to a commit that does not descend from `previous` (a
    /// force-push or a reset). The new commit is used all the same.
    pub forced: bool,
}

impl FetchOutcome {
    /// Whether the branch points somewhere new.
    pub fn changed(&self) -> bool {
        self.previous.as_deref() != Some(self.commit.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error(
        "cannot create or open the git mirror at {dir}: {source}; check that the directory is writable"
    )]
    Mirror {
        dir: PathBuf,
        #[source]
        source: git2::Error,
    },
    #[error(
        "cannot read the {what} file {path} for {url}: {source}; check that the Secret is mounted there and readable"
    )]
    CredentialFile {
        url: String,
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the {what} file {path} for {url} is empty; check the Secret's content")]
    EmptyCredential {
        url: String,
        what: &'static str,
        path: PathBuf,
    },
    #[error(
        "cannot reach {url}: {message}; check the URL, that the server is up, DNS and network policies"
    )]
    Unreachable { url: String, message: String },
    #[error("authentication to {url} failed: {message}; check the {hint}")]
    Auth {
        url: String,
        message: String,
        hint: &'static str,
    },
    #[error(
        "the host key of {host} (for {url}) {problem}; add the server's key to the known_hosts file"
    )]
    HostKey {
        url: String,
        host: String,
        problem: String,
    },
    #[error(
        "refusing to fetch {url} over ssh without checking the server's host key: give --ssh-known-hosts-file (an OpenSSH known_hosts file, e.g. made with `ssh-keyscan <host>` and checked against the key your git host publishes), or --insecure-accept-any-host-key for development only"
    )]
    NoKnownHosts { url: String },
    #[error(
        "branch `{branch}` does not exist in {url} (branches there: {available}); check the configured branch"
    )]
    MissingBranch {
        url: String,
        branch: String,
        available: String,
    },
    #[error("fetching {branch} from {url} failed: {message}")]
    Fetch {
        url: String,
        branch: String,
        message: String,
    },
    #[error(transparent)]
    Snapshot(#[from] SourceError),
}

/// A local bare mirror of one branch of one remote.
#[derive(Debug)]
pub struct GitSource {
    config: GitSourceConfig,
    /// `config.url` without userinfo, for messages and logs.
    display_url: String,
}

impl GitSource {
    /// Opens the mirror in `config.mirror_dir`, initialising a bare repository there
    /// when there is none. Nothing is fetched yet.
    ///
    /// An ssh URL without a `known_hosts` file is refused (unless host-key
    /// checking is explicitly turned off), so a missing mount of the file can
    /// never silently disable the check.
    pub fn open(config: GitSourceConfig) -> Result<Self, GitError> {
        let host_keys_checked = matches!(
            config.auth,
            Auth::SshKey {
                known_hosts: Some(_),
                ..
            } | Auth::SshKey {
                insecure_accept_any_host_key: true,
                ..
            }
        );
        if is_ssh_url(&config.url) && !host_keys_checked {
            return Err(GitError::NoKnownHosts {
                url: redact_url(&config.url),
            });
        }
        let mirror = |source| GitError::Mirror {
            dir: config.mirror_dir.clone(),
            source,
        };
        if git2::Repository::open_bare(&config.mirror_dir).is_err() {
            std::fs::create_dir_all(&config.mirror_dir).map_err(|e| {
                mirror(git2::Error::from_str(&format!(
                    "cannot create directory: {e}"
                )))
            })?;
            git2::Repository::init_bare(&config.mirror_dir).map_err(mirror)?;
        }
        let display_url = redact_url(&config.url);
        Ok(Self {
            config,
            display_url,
        })
    }

    /// The remote URL with any userinfo removed: safe for logs and messages.
    pub fn display_url(&self) -> &str {
        &self.display_url
    }

    pub fn branch(&self) -> &str {
        &self.config.branch
    }

    pub fn mirror_dir(&self) -> &Path {
        &self.config.mirror_dir
    }

    /// The commit the mirror's branch points at, without contacting the remote.
    pub fn current(&self) -> Result<Option<String>, GitError> {
        let repo = self.repo()?;
        Ok(branch_target(&repo, &self.local_ref()))
    }

    /// Fetches the branch (force-pushes included) and returns where it points now.
    /// Blocking. Fetches into one mirror must not run at once (git locks the ref
    /// being updated and the second fails): the server serialises them.
    pub fn fetch(&self) -> Result<FetchOutcome, GitError> {
        let repo = self.repo()?;
        let local_ref = self.local_ref();
        let previous = branch_target(&repo, &local_ref);

        let credentials = Credentials::new(&self.config.auth, &self.display_url);
        let state = RefCell::new(CallbackState::default());
        let mut remote = repo
            .remote_anonymous(&self.config.url)
            .map_err(|e| self.classify(e, &state))?;

        // One connection: list the remote's refs first (a branch missing there must
        // be an error, not a silent no-op that keeps serving a stale commit), then
        // fetch over the same connection, so credentials are asked for once.
        let listed = {
            let callbacks = self.callbacks(&credentials, &state);
            let mut conn = remote
                .connect_auth(git2::Direction::Fetch, Some(callbacks), None)
                .map_err(|e| self.classify(e, &state))?;
            let heads = conn.list().map_err(|e| self.classify(e, &state))?;
            let found = heads
                .iter()
                .find(|h| h.name() == local_ref)
                .map(|h| h.oid());
            let Some(listed) = found else {
                let mut available: Vec<&str> = heads
                    .iter()
                    .filter_map(|h| h.name().strip_prefix("refs/heads/"))
                    .collect();
                available.sort_unstable();
                let available = if available.is_empty() {
                    "none".to_string()
                } else {
                    available.join(", ")
                };
                return Err(GitError::MissingBranch {
                    url: self.display_url.clone(),
                    branch: self.config.branch.clone(),
                    available,
                });
            };
            // `+` makes the update forced: a branch reset to an unrelated commit is
            // taken as the new truth, as `git fetch --force` would.
            let refspec = format!("+{local_ref}:{local_ref}");
            let mut options = git2::FetchOptions::new();
            options
                .remote_callbacks(self.callbacks(&credentials, &state))
                .download_tags(git2::AutotagOption::None)
                .update_fetchhead(false);
            conn.remote()
                .fetch(&[refspec.as_str()], Some(&mut options), None)
                .map_err(|e| self.classify(e, &state))?;
            listed
        };

        let commit = branch_target(&repo, &local_ref).ok_or_else(|| GitError::Fetch {
            url: self.display_url.clone(),
            branch: self.config.branch.clone(),
            message: format!("{local_ref} is not set after the fetch"),
        })?;
        if commit != listed.to_string() {
            // The branch moved between listing and fetching; the fetched commit is
            // newer, so it wins.
            tracing::debug!(url = %self.display_url, listed = %listed, fetched = %commit, "branch moved during fetch");
        }
        let forced = match &previous {
            Some(prev) if *prev != commit => !descends_from(&repo, &commit, prev),
            _ => false,
        };
        Ok(FetchOutcome {
            commit,
            previous,
            forced,
        })
    }

    /// The files of `commit`, read from the mirror's objects.
    pub fn snapshot(&self, commit: &str) -> Result<Snapshot, GitError> {
        Ok(Snapshot::from_git(&self.config.mirror_dir, commit)?)
    }

    fn local_ref(&self) -> String {
        format!("refs/heads/{}", self.config.branch)
    }

    fn repo(&self) -> Result<git2::Repository, GitError> {
        git2::Repository::open_bare(&self.config.mirror_dir).map_err(|source| GitError::Mirror {
            dir: self.config.mirror_dir.clone(),
            source,
        })
    }

    fn callbacks<'a>(
        &'a self,
        credentials: &'a Credentials<'a>,
        state: &'a RefCell<CallbackState>,
    ) -> git2::RemoteCallbacks<'a> {
        let mut cb = git2::RemoteCallbacks::new();
        cb.credentials(move |_url, username_from_url, allowed| {
            let mut st = state.borrow_mut();
            if !allowed.contains(git2::CredentialType::USERNAME) {
                // libgit2 asks again after a rejected credential, forever if we
                // keep answering: a second ask means the first was refused.
                st.credential_calls += 1;
                if st.credential_calls > 1 {
                    st.auth_rejected = true;
                    return Err(git2::Error::from_str("credentials rejected by the server"));
                }
            }
            match credentials.request(username_from_url, allowed) {
                Ok(req) => req.into_cred(),
                Err(e) => {
                    let msg = e.to_string();
                    st.credential_error = Some(e);
                    Err(git2::Error::from_str(&msg))
                }
            }
        });
        cb.certificate_check(move |cert, host| {
            let Some(hostkey) = cert.as_hostkey() else {
                // TLS: keep libgit2's own verification against the system's CAs.
                return Ok(git2::CertificateCheckStatus::CertificatePassthrough);
            };
            match credentials.check_host_key(host, self.port(), hostkey.hostkey()) {
                Ok(()) => Ok(git2::CertificateCheckStatus::CertificateOk),
                Err(e) => {
                    let msg = e.to_string();
                    state.borrow_mut().credential_error = Some(e);
                    Err(git2::Error::from_str(&msg))
                }
            }
        });
        cb
    }

    /// The ssh port of the URL (22 unless `ssh://host:port/…` says otherwise).
    fn port(&self) -> u16 {
        url::Url::parse(&self.config.url)
            .ok()
            .filter(|u| u.scheme() == "ssh")
            .and_then(|u| u.port())
            .unwrap_or(22)
    }

    fn classify(&self, e: git2::Error, state: &RefCell<CallbackState>) -> GitError {
        let mut state = state.borrow_mut();
        if let Some(err) = state.credential_error.take() {
            return err;
        }
        // A git2 message can echo the URL; never let userinfo through.
        let message = e.message().replace(&self.config.url, &self.display_url);
        let hint = match self.config.auth {
            Auth::None => "repository's visibility, or configure a token or ssh key",
            Auth::Token { .. } => "token (is it expired or missing read access?) and the username",
            Auth::SshKey { .. } => "ssh key (is it registered as a deploy key?) and the ssh user",
        };
        if state.auth_rejected || e.code() == git2::ErrorCode::Auth {
            return GitError::Auth {
                url: self.display_url.clone(),
                message,
                hint,
            };
        }
        if e.code() == git2::ErrorCode::Certificate {
            return GitError::HostKey {
                url: self.display_url.clone(),
                host: host_of(&self.config.url).unwrap_or_default(),
                problem: message,
            };
        }
        match e.class() {
            git2::ErrorClass::Net | git2::ErrorClass::Os | git2::ErrorClass::Ssl => {
                GitError::Unreachable {
                    url: self.display_url.clone(),
                    message,
                }
            }
            git2::ErrorClass::Http if message.contains("401") || message.contains("403") => {
                GitError::Auth {
                    url: self.display_url.clone(),
                    message,
                    hint,
                }
            }
            // A local path or file:// URL that is not a repository.
            git2::ErrorClass::Repository | git2::ErrorClass::Reference
                if e.code() == git2::ErrorCode::NotFound =>
            {
                GitError::Unreachable {
                    url: self.display_url.clone(),
                    message,
                }
            }
            _ => GitError::Fetch {
                url: self.display_url.clone(),
                branch: self.config.branch.clone(),
                message,
            },
        }
    }
}

#[derive(Default)]
struct CallbackState {
    credential_calls: u32,
    auth_rejected: bool,
    /// An error of ours (credential file, host key) raised inside a callback; it
    /// is more precise than the generic error libgit2 returns for it.
    credential_error: Option<GitError>,
}

/// A secret read from a file; its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// What to answer libgit2's request for credentials. A plain value, so the logic
/// that reads the files can be tested without a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialRequest {
    UserPass {
        username: String,
        password: Secret,
    },
    SshKey {
        username: String,
        private_key: PathBuf,
        passphrase: Option<Secret>,
    },
    /// Only the ssh username (libgit2 asks for it before the key).
    Username(String),
}

impl CredentialRequest {
    fn into_cred(self) -> Result<git2::Cred, git2::Error> {
        match self {
            CredentialRequest::UserPass { username, password } => {
                git2::Cred::userpass_plaintext(&username, password.expose())
            }
            CredentialRequest::SshKey {
                username,
                private_key,
                passphrase,
            } => git2::Cred::ssh_key(
                &username,
                None,
                &private_key,
                passphrase.as_ref().map(Secret::expose),
            ),
            CredentialRequest::Username(u) => git2::Cred::username(&u),
        }
    }
}

/// Turns the configured [`Auth`] into credentials, reading its files on every
/// call.
pub struct Credentials<'a> {
    auth: &'a Auth,
    display_url: &'a str,
}

impl<'a> Credentials<'a> {
    pub fn new(auth: &'a Auth, display_url: &'a str) -> Self {
        Self { auth, display_url }
    }

    /// The credential for one request of libgit2. `username_from_url` is the user
    /// named in the URL (`git@host:…`), if any.
    pub fn request(
        &self,
        username_from_url: Option<&str>,
        allowed: git2::CredentialType,
    ) -> Result<CredentialRequest, GitError> {
        match self.auth {
            Auth::None => Err(GitError::Auth {
                url: self.display_url.to_string(),
                message: "the server asks for credentials and none are configured".into(),
                hint: "repository's visibility, or configure a token or ssh key",
            }),
            Auth::Token {
                token_file,
                username,
            } => {
                if !allowed.contains(git2::CredentialType::USER_PASS_PLAINTEXT) {
                    return Err(self.wrong_kind("a token", allowed));
                }
                let password = self.read_secret("token", token_file)?;
                Ok(CredentialRequest::UserPass {
                    username: username
                        .clone()
                        .unwrap_or_else(|| DEFAULT_TOKEN_USERNAME.to_string()),
                    password,
                })
            }
            Auth::SshKey {
                private_key,
                passphrase_file,
                username,
                ..
            } => {
                let username = username_from_url
                    .map(str::to_string)
                    .or_else(|| username.clone())
                    .unwrap_or_else(|| DEFAULT_SSH_USERNAME.to_string());
                if allowed.contains(git2::CredentialType::USERNAME) {
                    return Ok(CredentialRequest::Username(username));
                }
                if !allowed.contains(git2::CredentialType::SSH_KEY) {
                    return Err(self.wrong_kind("an ssh key", allowed));
                }
                // libssh2 reads the key itself; opening it here first turns a
                // missing or unreadable Secret into a clear error.
                std::fs::File::open(private_key).map_err(|source| GitError::CredentialFile {
                    url: self.display_url.to_string(),
                    what: "ssh private key",
                    path: private_key.clone(),
                    source,
                })?;
                let passphrase = passphrase_file
                    .as_ref()
                    .map(|p| self.read_secret("ssh key passphrase", p))
                    .transpose()?;
                Ok(CredentialRequest::SshKey {
                    username,
                    private_key: private_key.clone(),
                    passphrase,
                })
            }
        }
    }

    /// Checks an ssh host key (the raw key blob) against the configured
    /// `known_hosts`, read afresh. Without one, accepts any key (with a
    /// warning) only when `insecure_accept_any_host_key` is set.
    pub fn check_host_key(
        &self,
        host: &str,
        port: u16,
        key: Option<&[u8]>,
    ) -> Result<(), GitError> {
        let known_hosts = match self.auth {
            Auth::SshKey {
                known_hosts: Some(path),
                ..
            } => path,
            Auth::SshKey {
                insecure_accept_any_host_key: true,
                ..
            } => {
                tracing::warn!(url = %self.display_url, %host, "ssh host key NOT checked (--insecure-accept-any-host-key): a man-in-the-middle cannot be detected");
                return Ok(());
            }
            _ => {
                return Err(GitError::NoKnownHosts {
                    url: self.display_url.to_string(),
                });
            }
        };
        let host_key_err = |problem: String| GitError::HostKey {
            url: self.display_url.to_string(),
            host: host.to_string(),
            problem,
        };
        let Some(key) = key else {
            return Err(host_key_err(
                "was not sent in a form that can be checked".into(),
            ));
        };
        // Read it ourselves first for a clear "cannot read" error; libssh2 then
        // parses the content (hashed names, patterns, `[host]:port`).
        let content =
            std::fs::read_to_string(known_hosts).map_err(|source| GitError::CredentialFile {
                url: self.display_url.to_string(),
                what: "known_hosts",
                path: known_hosts.clone(),
                source,
            })?;
        let session =
            ssh2::Session::new().map_err(|e| host_key_err(format!("cannot be checked: {e}")))?;
        let mut hosts = session
            .known_hosts()
            .map_err(|e| host_key_err(format!("cannot be checked: {e}")))?;
        for line in content.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            // libssh2 rejects some entries OpenSSH accepts (markers such as
            // @cert-authority, unknown key types); skip those, as a host they
            // describe then simply does not match.
            if hosts
                .read_str(line, ssh2::KnownHostFileKind::OpenSSH)
                .is_err()
            {
                tracing::debug!(path = %known_hosts.display(), "skipping a known_hosts line libssh2 cannot parse");
            }
        }
        match hosts.check_port(host, port, key) {
            ssh2::CheckResult::Match => Ok(()),
            ssh2::CheckResult::Mismatch => Err(host_key_err(format!(
                "does NOT match the key listed in {} (possible man-in-the-middle, or the server's key changed)",
                known_hosts.display()
            ))),
            ssh2::CheckResult::NotFound => Err(host_key_err(format!(
                "is not listed in {}",
                known_hosts.display()
            ))),
            ssh2::CheckResult::Failure => {
                Err(host_key_err("could not be checked by libssh2".into()))
            }
        }
    }

    fn read_secret(&self, what: &'static str, path: &Path) -> Result<Secret, GitError> {
        let content = std::fs::read_to_string(path).map_err(|source| GitError::CredentialFile {
            url: self.display_url.to_string(),
            what,
            path: path.to_path_buf(),
            source,
        })?;
        let value = content.trim();
        if value.is_empty() {
            return Err(GitError::EmptyCredential {
                url: self.display_url.to_string(),
                what,
                path: path.to_path_buf(),
            });
        }
        Ok(Secret(value.to_string()))
    }

    fn wrong_kind(&self, have: &str, allowed: git2::CredentialType) -> GitError {
        GitError::Auth {
            url: self.display_url.to_string(),
            message: format!(
                "the server asks for {allowed:?} credentials, but {have} is configured"
            ),
            hint: "URL scheme (https for tokens, ssh for keys)",
        }
    }
}

/// `url` without userinfo (user and password/token), for messages and logs.
/// scp-like `user@host:path` keeps its user, which is never a secret.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.has_host() && (!u.username().is_empty() || u.password().is_some()) => {
            // Both fail only for URLs that cannot have userinfo, which have none.
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.to_string()
        }
        _ => url.to_string(),
    }
}

/// Whether `url` is fetched over ssh: `ssh://`, `git+ssh://`, `ssh+git://`, or
/// scp-like `[user@]host:path` (what git itself treats as ssh).
pub fn is_ssh_url(url: &str) -> bool {
    if let Some((scheme, _)) = url.split_once("://") {
        return matches!(scheme, "ssh" | "git+ssh" | "ssh+git");
    }
    // git's rule: a colon before the first slash makes it scp-like.
    url.split_once(':')
        .is_some_and(|(before, _)| !before.is_empty() && !before.contains('/'))
}

fn host_of(url: &str) -> Option<String> {
    if let Ok(u) = url::Url::parse(url) {
        return u.host_str().map(str::to_string);
    }
    // scp-like: [user@]host:path
    let (before, _) = url.split_once(':')?;
    Some(before.rsplit('@').next().unwrap_or(before).to_string())
}

fn branch_target(repo: &git2::Repository, reference: &str) -> Option<String> {
    repo.refname_to_id(reference).ok().map(|id| id.to_string())
}

fn descends_from(repo: &git2::Repository, commit: &str, ancestor: &str) -> bool {
    let (Ok(c), Ok(a)) = (git2::Oid::from_str(commit), git2::Oid::from_str(ancestor)) else {
        return false;
    };
    repo.graph_descendant_of(c, a).unwrap_or(false)
}

#[cfg(test)]
mod tests;

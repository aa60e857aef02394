//! `GitSource` against real repositories made with the `git` CLI: over `file://`,
//! a plain path and `git://` from a real `git daemon`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test crate: a panic is a failure report

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use mop_syncer::serve::git::{Auth, GitError, GitSource, GitSourceConfig};

use mop_test_support::{Proc, free_port, git};

/// A bare "server" repository and a working clone that pushes to it.
struct Upstream {
    _tmp: tempfile::TempDir,
    bare: PathBuf,
    work: PathBuf,
    mirror: PathBuf,
}

impl Upstream {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let bare = tmp.path().join("srv").join("config.git");
        let work = tmp.path().join("work");
        std::fs::create_dir_all(&bare).unwrap();
        std::fs::create_dir_all(&work).unwrap();
        git(&bare, &["init", "--bare", "-q", "-b", "main"]);
        git(&work, &["init", "-q", "-b", "main"]);
        git(&work, &["remote", "add", "origin", bare.to_str().unwrap()]);
        let mirror = tmp.path().join("mirror");
        Self {
            _tmp: tmp,
            bare,
            work,
            mirror,
        }
    }

    /// Commits `content` as `mop.yaml` and pushes; returns the commit id.
    fn commit(&self, content: &str, message: &str) -> String {
        std::fs::write(self.work.join("mop.yaml"), content).unwrap();
        std::fs::create_dir_all(self.work.join("tenants/acme")).unwrap();
        std::fs::write(self.work.join("tenants/acme/tenant.yaml"), message).unwrap();
        git(&self.work, &["add", "-A"]);
        git(&self.work, &["commit", "-q", "-m", message]);
        git(&self.work, &["push", "-q", "origin", "main"]);
        git(&self.work, &["rev-parse", "HEAD"])
    }

    fn source(&self, url: String, branch: &str) -> GitSource {
        GitSource::open(GitSourceConfig {
            url,
            branch: branch.into(),
            mirror_dir: self.mirror.clone(),
            auth: Auth::None,
        })
        .unwrap()
    }

    fn file_url(&self) -> String {
        format!("file://{}", self.bare.display())
    }
}

fn read(source: &GitSource, commit: &str, path: &str) -> String {
    let snap = source.snapshot(commit).unwrap();
    assert_eq!(snap.revision.as_deref(), Some(commit));
    String::from_utf8(snap.reader().unwrap().read(path).unwrap()).unwrap()
}

#[test]
fn fetch_over_file_url_then_new_commit() {
    let up = Upstream::new();
    let c1 = up.commit("version: 1\n", "first");
    let source = up.source(up.file_url(), "main");

    let first = source.fetch().unwrap();
    assert_eq!(first.commit, c1);
    assert_eq!(first.previous, None);
    assert!(!first.forced);
    assert!(first.changed());
    assert_eq!(read(&source, &c1, "mop.yaml"), "version: 1\n");

    // Nothing new: same commit, not changed.
    let again = source.fetch().unwrap();
    assert_eq!(again.commit, c1);
    assert!(!again.changed());

    let c2 = up.commit("version: 2\n", "second");
    let second = source.fetch().unwrap();
    assert_eq!(second.commit, c2);
    assert_eq!(second.previous.as_deref(), Some(c1.as_str()));
    assert!(!second.forced, "a fast-forward is not forced");
    assert_eq!(read(&source, &c2, "mop.yaml"), "version: 2\n");
    // The old commit stays readable (the last good commit may still be applied).
    assert_eq!(read(&source, &c1, "mop.yaml"), "version: 1\n");
}

#[test]
fn fetch_from_plain_path_and_reopen_existing_mirror() {
    let up = Upstream::new();
    let c1 = up.commit("a: 1\n", "first");
    let source = up.source(up.bare.display().to_string(), "main");
    assert_eq!(source.fetch().unwrap().commit, c1);

    // A restarted server reopens the mirror and knows where the branch was.
    let reopened = up.source(up.bare.display().to_string(), "main");
    assert_eq!(reopened.current().unwrap().as_deref(), Some(c1.as_str()));
    let c2 = up.commit("a: 2\n", "second");
    let out = reopened.fetch().unwrap();
    assert_eq!(out.previous.as_deref(), Some(c1.as_str()));
    assert_eq!(out.commit, c2);
}

#[test]
fn force_push_is_fetched_and_reported() {
    let up = Upstream::new();
    let base = up.commit("v: base\n", "base");
    let _c2 = up.commit("v: two\n", "two");
    let source = up.source(up.file_url(), "main");
    let before = source.fetch().unwrap().commit;

    // Rewrite history: reset to base and commit something else, force-push.
    git(&up.work, &["reset", "-q", "--hard", &base]);
    std::fs::write(up.work.join("mop.yaml"), "v: rewritten\n").unwrap();
    git(&up.work, &["commit", "-q", "-am", "rewritten"]);
    git(&up.work, &["push", "-q", "--force", "origin", "main"]);
    let rewritten = git(&up.work, &["rev-parse", "HEAD"]);

    let out = source.fetch().unwrap();
    assert_eq!(out.commit, rewritten);
    assert_eq!(out.previous.as_deref(), Some(before.as_str()));
    assert!(out.forced, "{out:?}");
    assert_eq!(read(&source, &rewritten, "mop.yaml"), "v: rewritten\n");

    // The next ordinary commit on top is a fast-forward again.
    let next = up.commit("v: next\n", "next");
    let out = source.fetch().unwrap();
    assert_eq!(out.commit, next);
    assert!(!out.forced);
}

#[test]
fn missing_branch_names_url_and_branches() {
    let up = Upstream::new();
    up.commit("a: 1\n", "first");
    let source = up.source(up.file_url(), "production");
    let err = source.fetch().unwrap_err();
    assert!(matches!(err, GitError::MissingBranch { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(&up.file_url()), "{msg}");
    assert!(msg.contains("`production`"), "{msg}");
    assert!(msg.contains("main"), "lists the branches there: {msg}");
}

#[test]
fn deleted_branch_is_an_error_not_the_stale_commit() {
    let up = Upstream::new();
    up.commit("a: 1\n", "first");
    git(&up.work, &["push", "-q", "origin", "main:feature"]);
    let source = up.source(up.file_url(), "feature");
    source.fetch().unwrap();
    git(&up.work, &["push", "-q", "origin", ":feature"]);
    let err = source.fetch().unwrap_err();
    assert!(matches!(err, GitError::MissingBranch { .. }), "{err:?}");
}

#[test]
fn missing_local_repository_is_unreachable_with_url() {
    let up = Upstream::new();
    let url = format!("file://{}/nope.git", up.bare.parent().unwrap().display());
    let source = up.source(url.clone(), "main");
    let err = source.fetch().unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, GitError::Unreachable { .. }), "{err:?}");
    assert!(msg.contains(&url), "{msg}");
}

/// `git daemon` forks `git-daemon`: the `Proc` kills the group it leads.
fn start_daemon(base: &Path, port: u16) -> Proc {
    let daemon = Proc::spawn(
        "git daemon",
        Command::new("git")
            .args([
                "daemon",
                "--reuseaddr",
                &format!("--base-path={}", base.display()),
                "--export-all",
                &format!("--port={port}"),
                "--listen=127.0.0.1",
            ])
            .arg(base),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "git daemon did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    daemon
}

#[test]
fn fetch_over_git_daemon_with_force_push() {
    let up = Upstream::new();
    let c1 = up.commit("over: git\n", "first");
    let port = free_port();
    let _daemon = start_daemon(up.bare.parent().unwrap(), port);
    let url = format!("git://127.0.0.1:{port}/config.git");
    let source = up.source(url.clone(), "main");

    let out = source.fetch().unwrap();
    assert_eq!(out.commit, c1);
    assert_eq!(read(&source, &c1, "mop.yaml"), "over: git\n");

    let c2 = up.commit("over: git 2\n", "second");
    let out = source.fetch().unwrap();
    assert_eq!((out.commit.as_str(), out.forced), (c2.as_str(), false));

    git(&up.work, &["reset", "-q", "--hard", &c1]);
    std::fs::write(up.work.join("mop.yaml"), "over: forced\n").unwrap();
    git(&up.work, &["commit", "-q", "-am", "forced"]);
    git(&up.work, &["push", "-q", "--force", "origin", "main"]);
    let forced = git(&up.work, &["rev-parse", "HEAD"]);
    let out = source.fetch().unwrap();
    assert_eq!(out.commit, forced);
    assert!(out.forced);
    assert_eq!(read(&source, &forced, "mop.yaml"), "over: forced\n");

    let err = up.source(url.clone(), "nope").fetch().unwrap_err();
    assert!(matches!(err, GitError::MissingBranch { .. }), "{err:?}");
    assert!(err.to_string().contains(&url));
}

#[test]
fn unreachable_git_daemon_names_url() {
    let up = Upstream::new();
    // A port nothing listens on (bound, then released).
    let url = format!("git://127.0.0.1:{}/config.git", free_port());
    let err = up.source(url.clone(), "main").fetch().unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, GitError::Unreachable { .. }), "{err:?}");
    assert!(msg.contains(&url), "{msg}");
}

#[test]
fn credentials_in_the_url_never_reach_the_error() {
    let up = Upstream::new();
    let port = free_port();
    let url = format!("https://x-access-token:ghp_topsecret@127.0.0.1:{port}/o/config.git");
    let err = up.source(url, "main").fetch().unwrap_err();
    let msg = err.to_string();
    assert!(!msg.contains("ghp_topsecret"), "{msg}");
    assert!(
        msg.contains(&format!("https://127.0.0.1:{port}/o/config.git")),
        "{msg}"
    );
}

/// An HTTP server that refuses every request with a Basic challenge and records
/// the `Authorization` headers it was sent.
fn refusing_http_server() -> (u16, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{BufRead, BufReader, Write};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap_or(0) > 0 && line != "\r\n" {
                if let Some(v) = line
                    .strip_prefix("Authorization: ")
                    .or_else(|| line.strip_prefix("authorization: "))
                {
                    record.lock().unwrap().push(v.trim().to_string());
                }
                line.clear();
            }
            let _ = stream.write_all(
                b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"git\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }
    });
    (port, seen)
}

#[test]
fn token_from_file_is_sent_reread_and_refusal_is_an_auth_error() {
    use base64::Engine as _;
    let up = Upstream::new();
    let (port, seen) = refusing_http_server();
    let token_file = up.mirror.with_file_name("token");
    std::fs::write(&token_file, "first-token\n").unwrap();
    let url = format!("http://127.0.0.1:{port}/org/config.git");
    let source = GitSource::open(GitSourceConfig {
        url: url.clone(),
        branch: "main".into(),
        mirror_dir: up.mirror.clone(),
        auth: Auth::Token {
            token_file: token_file.clone(),
            username: None,
        },
    })
    .unwrap();

    let err = source.fetch().unwrap_err();
    assert!(matches!(err, GitError::Auth { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(&url), "{msg}");
    assert!(!msg.contains("first-token"), "{msg}");
    let basic = |user_pass: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(user_pass)
        )
    };
    let sent = seen.lock().unwrap().clone();
    assert!(
        sent.contains(&basic("x-access-token:first-token")),
        "{sent:?}"
    );
    // A refused credential is not retried forever.
    assert!(sent.len() <= 2, "{sent:?}");

    // The Secret rotates: the next fetch sends the new token.
    std::fs::write(&token_file, "second-token").unwrap();
    seen.lock().unwrap().clear();
    source.fetch().unwrap_err();
    let sent = seen.lock().unwrap().clone();
    assert!(
        sent.contains(&basic("x-access-token:second-token")),
        "{sent:?}"
    );

    // The Secret disappears: a clear error naming the file.
    std::fs::remove_file(&token_file).unwrap();
    let err = source.fetch().unwrap_err();
    assert!(matches!(err, GitError::CredentialFile { .. }), "{err:?}");
    assert!(err.to_string().contains(&token_file.display().to_string()));
}

#[test]
fn https_and_ssh_transports_are_built_in() {
    let v = git2::Version::get();
    assert!(v.https(), "libgit2 built without https");
    assert!(v.ssh(), "libgit2 built without ssh");
}

use super::*;

use git2::CredentialType;

const URL: &str = "https://git.example/org/config.git";

fn token_auth(dir: &Path, username: Option<&str>) -> Auth {
    Auth::Token {
        token_file: dir.join("token"),
        username: username.map(str::to_string),
    }
}

#[test]
fn token_is_read_again_on_every_request() {
    let dir = tempfile::tempdir().unwrap();
    let auth = token_auth(dir.path(), None);
    let creds = Credentials::new(&auth, URL);

    std::fs::write(dir.path().join("token"), "first-token\n").unwrap();
    let first = creds
        .request(None, CredentialType::USER_PASS_PLAINTEXT)
        .unwrap();
    assert_eq!(
        first,
        CredentialRequest::UserPass {
            username: DEFAULT_TOKEN_USERNAME.into(),
            password: Secret("first-token".into()),
        }
    );

    // A rotated Secret: the next request sees the new token, no restart needed.
    std::fs::write(dir.path().join("token"), "  rotated-token  ").unwrap();
    let second = creds
        .request(None, CredentialType::USER_PASS_PLAINTEXT)
        .unwrap();
    let CredentialRequest::UserPass { password, .. } = second else {
        panic!("expected user/pass, got {second:?}");
    };
    assert_eq!(password.expose(), "rotated-token");
}

#[test]
fn token_username_is_configurable() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), "glpat-abc").unwrap();
    let auth = token_auth(dir.path(), Some("oauth2"));
    let req = Credentials::new(&auth, URL)
        .request(None, CredentialType::USER_PASS_PLAINTEXT)
        .unwrap();
    let CredentialRequest::UserPass { username, .. } = req else {
        panic!("expected user/pass, got {req:?}");
    };
    assert_eq!(username, "oauth2");
}

#[test]
fn missing_token_file_names_file_and_url() {
    let dir = tempfile::tempdir().unwrap();
    let auth = token_auth(dir.path(), None);
    let err = Credentials::new(&auth, URL)
        .request(None, CredentialType::USER_PASS_PLAINTEXT)
        .unwrap_err();
    assert!(matches!(err, GitError::CredentialFile { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(URL), "{msg}");
    assert!(
        msg.contains(&dir.path().join("token").display().to_string()),
        "{msg}"
    );
}

#[test]
fn empty_token_file_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), "\n").unwrap();
    let auth = token_auth(dir.path(), None);
    let err = Credentials::new(&auth, URL)
        .request(None, CredentialType::USER_PASS_PLAINTEXT)
        .unwrap_err();
    assert!(matches!(err, GitError::EmptyCredential { .. }), "{err:?}");
}

#[test]
fn secrets_never_show_in_debug_output() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), "s3cr3t-value").unwrap();
    let auth = token_auth(dir.path(), None);
    let req = Credentials::new(&auth, URL)
        .request(None, CredentialType::USER_PASS_PLAINTEXT)
        .unwrap();
    let shown = format!("{req:?}");
    assert!(!shown.contains("s3cr3t-value"), "{shown}");
}

#[test]
fn ssh_key_path_and_url_user_are_passed() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("id_ed25519");
    std::fs::write(&key, "-----BEGIN OPENSSH PRIVATE KEY-----\n").unwrap();
    std::fs::write(dir.path().join("pass"), "hunter2\n").unwrap();
    let auth = Auth::SshKey {
        private_key: key.clone(),
        passphrase_file: Some(dir.path().join("pass")),
        known_hosts: None,
        insecure_accept_any_host_key: false,
        username: Some("deploy".into()),
    };
    let creds = Credentials::new(&auth, "git@git.example:org/config.git");

    // The user in the URL wins over the configured one.
    let req = creds.request(Some("git"), CredentialType::SSH_KEY).unwrap();
    assert_eq!(
        req,
        CredentialRequest::SshKey {
            username: "git".into(),
            private_key: key.clone(),
            passphrase: Some(Secret("hunter2".into())),
        }
    );
    // No user in the URL: the configured one, asked for first on its own.
    assert_eq!(
        creds.request(None, CredentialType::USERNAME).unwrap(),
        CredentialRequest::Username("deploy".into())
    );
}

#[test]
fn ssh_user_defaults_to_git() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("id");
    std::fs::write(&key, "k").unwrap();
    let auth = Auth::SshKey {
        private_key: key,
        passphrase_file: None,
        known_hosts: None,
        insecure_accept_any_host_key: false,
        username: None,
    };
    let req = Credentials::new(&auth, "ssh://git.example/config.git")
        .request(None, CredentialType::SSH_KEY)
        .unwrap();
    let CredentialRequest::SshKey {
        username,
        passphrase,
        ..
    } = req
    else {
        panic!("expected an ssh key, got {req:?}");
    };
    assert_eq!(username, DEFAULT_SSH_USERNAME);
    assert_eq!(passphrase, None);
}

#[test]
fn missing_ssh_key_file_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("absent_key");
    let auth = Auth::SshKey {
        private_key: key.clone(),
        passphrase_file: None,
        known_hosts: None,
        insecure_accept_any_host_key: false,
        username: None,
    };
    let err = Credentials::new(&auth, "ssh://git.example/config.git")
        .request(None, CredentialType::SSH_KEY)
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, GitError::CredentialFile { .. }), "{err:?}");
    assert!(msg.contains(&key.display().to_string()), "{msg}");
    assert!(msg.contains("ssh://git.example/config.git"), "{msg}");
}

#[test]
fn token_offered_to_an_ssh_server_is_an_auth_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), "t").unwrap();
    let auth = token_auth(dir.path(), None);
    let err = Credentials::new(&auth, URL)
        .request(Some("git"), CredentialType::SSH_KEY)
        .unwrap_err();
    assert!(matches!(err, GitError::Auth { .. }), "{err:?}");
}

#[test]
fn no_auth_configured_but_asked_is_an_auth_error() {
    let err = Credentials::new(&Auth::None, URL)
        .request(None, CredentialType::USER_PASS_PLAINTEXT)
        .unwrap_err();
    assert!(matches!(err, GitError::Auth { .. }), "{err:?}");
    assert!(err.to_string().contains(URL));
}

// Two ed25519 public keys made by `ssh-keygen -t ed25519` (base64 of the key
// blob, as known_hosts holds it and as an ssh server presents it).
const HOST_KEY: &str = "AAAAC3NzaC1lZDI1NTE5AAAAICPlEtN1HVsnUipWN19F0ZuXb1zgPNjru0nwugDquvLA";
const OTHER_KEY: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIGT+eWuHtAUZzC9+HHGinzr+BS+N83b1wSRw9PAfIYqt";

fn blob(b64: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap()
}

fn ssh_auth_with_known_hosts(known_hosts: PathBuf) -> Auth {
    Auth::SshKey {
        private_key: PathBuf::from("/nonexistent"),
        passphrase_file: None,
        known_hosts: Some(known_hosts),
        insecure_accept_any_host_key: false,
        username: None,
    }
}

#[test]
fn host_key_listed_in_known_hosts_is_accepted_others_refused() {
    let dir = tempfile::tempdir().unwrap();
    let kh = dir.path().join("known_hosts");
    std::fs::write(
        &kh,
        format!(
            "# comment\ngit.example ssh-ed25519 {HOST_KEY}\n[git.example]:2222 ssh-ed25519 {OTHER_KEY}\n"
        ),
    )
    .unwrap();
    let auth = ssh_auth_with_known_hosts(kh);
    let creds = Credentials::new(&auth, "ssh://git.example/config.git");

    creds
        .check_host_key("git.example", 22, Some(&blob(HOST_KEY)))
        .unwrap();
    let err = creds
        .check_host_key("git.example", 22, Some(&blob(OTHER_KEY)))
        .unwrap_err();
    assert!(err.to_string().contains("does NOT match"), "{err}");
    // Non-standard ports are listed as [host]:port, as OpenSSH writes them.
    creds
        .check_host_key("git.example", 2222, Some(&blob(OTHER_KEY)))
        .unwrap();
    let err = creds
        .check_host_key("other.example", 22, Some(&blob(HOST_KEY)))
        .unwrap_err();
    assert!(err.to_string().contains("is not listed"), "{err}");
}

#[test]
fn known_hosts_is_reread_on_every_check() {
    let dir = tempfile::tempdir().unwrap();
    let kh = dir.path().join("known_hosts");
    std::fs::write(&kh, format!("git.example ssh-ed25519 {OTHER_KEY}\n")).unwrap();
    let auth = ssh_auth_with_known_hosts(kh.clone());
    let creds = Credentials::new(&auth, "ssh://git.example/config.git");
    assert!(
        creds
            .check_host_key("git.example", 22, Some(&blob(HOST_KEY)))
            .is_err()
    );
    std::fs::write(&kh, format!("git.example ssh-ed25519 {HOST_KEY}\n")).unwrap();
    creds
        .check_host_key("git.example", 22, Some(&blob(HOST_KEY)))
        .unwrap();
}

#[test]
fn unreadable_known_hosts_is_a_credential_file_error() {
    let dir = tempfile::tempdir().unwrap();
    let auth = ssh_auth_with_known_hosts(dir.path().join("absent"));
    let err = Credentials::new(&auth, "ssh://git.example/config.git")
        .check_host_key("git.example", 22, Some(&blob(HOST_KEY)))
        .unwrap_err();
    assert!(
        matches!(
            err,
            GitError::CredentialFile {
                what: "known_hosts",
                ..
            }
        ),
        "{err:?}"
    );
}

fn ssh_auth_without_known_hosts(dir: &Path, insecure: bool) -> Auth {
    Auth::SshKey {
        private_key: dir.join("k"),
        passphrase_file: None,
        known_hosts: None,
        insecure_accept_any_host_key: insecure,
        username: None,
    }
}

#[test]
fn without_known_hosts_a_host_key_is_refused_unless_insecure_is_explicit() {
    let dir = tempfile::tempdir().unwrap();
    let strict = ssh_auth_without_known_hosts(dir.path(), false);
    let err = Credentials::new(&strict, "ssh://git.example/config.git")
        .check_host_key("git.example", 22, Some(&blob(OTHER_KEY)))
        .unwrap_err();
    assert!(matches!(err, GitError::NoKnownHosts { .. }), "{err:?}");

    let insecure = ssh_auth_without_known_hosts(dir.path(), true);
    Credentials::new(&insecure, "ssh://git.example/config.git")
        .check_host_key("git.example", 22, Some(&blob(OTHER_KEY)))
        .unwrap();
}

#[test]
fn ssh_url_without_known_hosts_is_refused_at_open() {
    let dir = tempfile::tempdir().unwrap();
    for url in [
        "ssh://git.example/config.git",
        "git@git.example:org/config.git",
        "git+ssh://git.example/config.git",
    ] {
        for auth in [Auth::None, ssh_auth_without_known_hosts(dir.path(), false)] {
            let err = GitSource::open(GitSourceConfig {
                url: url.into(),
                branch: "main".into(),
                mirror_dir: dir.path().join("mirror"),
                auth,
            })
            .unwrap_err();
            let msg = err.to_string();
            assert!(
                matches!(err, GitError::NoKnownHosts { .. }),
                "{url}: {err:?}"
            );
            assert!(msg.contains("--ssh-known-hosts-file"), "{msg}");
            assert!(msg.contains("--insecure-accept-any-host-key"), "{msg}");
        }
    }
    // Nothing was created for a refused source.
    assert!(!dir.path().join("mirror").exists());
    // Explicitly insecure, or with a known_hosts file: opened.
    GitSource::open(GitSourceConfig {
        url: "ssh://git.example/config.git".into(),
        branch: "main".into(),
        mirror_dir: dir.path().join("m1"),
        auth: ssh_auth_without_known_hosts(dir.path(), true),
    })
    .unwrap();
    GitSource::open(GitSourceConfig {
        url: "git@git.example:org/config.git".into(),
        branch: "main".into(),
        mirror_dir: dir.path().join("m2"),
        auth: ssh_auth_with_known_hosts(dir.path().join("known_hosts")),
    })
    .unwrap();
}

#[test]
fn ssh_urls_are_recognised() {
    assert!(is_ssh_url("ssh://git@github.com/o/r.git"));
    assert!(is_ssh_url("git@github.com:o/r.git"));
    assert!(is_ssh_url("github.com:o/r.git"));
    assert!(!is_ssh_url("https://github.com/o/r.git"));
    assert!(!is_ssh_url("file:///srv/git/r.git"));
    assert!(!is_ssh_url("/srv/git/r.git"));
    assert!(!is_ssh_url("./a:b"));
    assert!(!is_ssh_url("git://git.example/r.git"));
}

#[test]
fn urls_lose_their_userinfo() {
    assert_eq!(
        redact_url("https://x-access-token:ghp_secret@github.com/o/r.git"),
        "https://github.com/o/r.git"
    );
    assert_eq!(
        redact_url("https://oauth2@gitlab.example/o/r.git"),
        "https://gitlab.example/o/r.git"
    );
    assert_eq!(
        redact_url("ssh://git@host:2222/o/r.git"),
        "ssh://host:2222/o/r.git"
    );
    assert_eq!(
        redact_url("git@github.com:o/r.git"),
        "git@github.com:o/r.git"
    );
    assert_eq!(redact_url("/srv/git/config.git"), "/srv/git/config.git");
}

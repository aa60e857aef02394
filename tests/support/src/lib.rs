//! Helpers shared by the tests of every crate (dev-dependency only; nothing
//! here may reach a product binary).
//!
//! - [`Proc`]: a child process that leads a process group of its own and is
//!   killed with that whole group (and reaped) on drop, so that nothing a test
//!   starts outlives it (`git daemon` forks `git-daemon`, nginx forks
//!   workers); [`Proc::terminate`] is the SIGTERM-and-wait a graceful-shutdown
//!   test needs.
//! - [`free_port`], [`wait_listening`], [`wait_port`]: loopback ports.
//! - [`git`]: the `git` CLI with a fixed identity and no user or system config.
//! - [`eventually`], [`wait_for`]: bounded polling.
//! - [`copy_dir`], [`which`], [`require`].
//! - `prometheus` feature: `prometheus::Prometheus`, a real Prometheus with
//!   the remote-write receiver on.
//! - `backends` feature: the strict Tempo, Loki and Mimir-OTLP fakes and the
//!   remote-write relay that plays Mimir's distributor in front of Prometheus.
// Test support: a panic is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![forbid(unsafe_code)]

#[cfg(feature = "backends")]
pub mod backends;
#[cfg(feature = "prometheus")]
pub mod prometheus;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A child process, killed with its process group and reaped on drop.
pub struct Proc {
    pub child: Child,
    pub name: &'static str,
    log: Option<PathBuf>,
}

impl Proc {
    /// Starts `cmd` as the leader of a new process group, stdio to /dev/null.
    pub fn spawn(name: &'static str, cmd: &mut Command) -> Proc {
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        Self::start(name, cmd, None)
    }

    /// Starts `cmd` as the leader of a new process group, stdout and stderr to
    /// `<logs>/<name>.log` (see [`Proc::log`]).
    pub fn spawn_logged(name: &'static str, logs: &Path, cmd: &mut Command) -> Proc {
        let log = logs.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).unwrap();
        cmd.stdout(file.try_clone().unwrap()).stderr(file);
        Self::start(name, cmd, Some(log))
    }

    fn start(name: &'static str, cmd: &mut Command, log: Option<PathBuf>) -> Proc {
        let child = cmd
            .process_group(0)
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        Proc { child, name, log }
    }

    /// Takes charge of a child spawned elsewhere; its process group is killed
    /// with it when it leads one.
    pub fn adopt(child: Child) -> Proc {
        Proc {
            child,
            name: "child",
            log: None,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The last 40 lines of the log of a [`Proc::spawn_logged`] process.
    pub fn log(&self) -> String {
        let Some(path) = &self.log else {
            return format!("--- {}: no log ---", self.name);
        };
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(40).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        format!(
            "--- {} log ({}) ---\n{}",
            self.name,
            path.display(),
            tail.join("\n")
        )
    }

    /// Panics with the log when the process has exited.
    pub fn assert_running(&mut self) {
        if let Some(st) = self.child.try_wait().unwrap() {
            panic!("{} exited with {st}\n{}", self.name, self.log());
        }
    }

    /// Sends SIGTERM and waits (up to `limit`) for the exit status.
    pub async fn terminate(&mut self, limit: Duration) -> ExitStatus {
        sigterm(self.child.id());
        let t0 = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            assert!(t0.elapsed() < limit, "no exit {limit:?} after SIGTERM");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        kill_tree(&mut self.child);
    }
}

/// Sends SIGTERM to `pid`, asserting it was delivered.
pub fn sigterm(pid: u32) {
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap()
            .success(),
        "kill -TERM {pid}"
    );
}

/// Kills `child` and, when it leads a process group, everything in that group;
/// then reaps it.
pub fn kill_tree(child: &mut Child) {
    let pid = child.id();
    let leads_group = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            // pid (comm) state ppid pgrp ...; comm may hold spaces and parens.
            let rest = &s[s.rfind(')')? + 1..];
            rest.split_whitespace().nth(2)?.parse::<u32>().ok()
        })
        == Some(pid);
    if leads_group {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{pid}")])
            .status();
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A loopback port free right now (bind `127.0.0.1:0` where the program
/// allows it; this is for those that need a number).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Blocks (bounded) until something accepts TCP connections on `port`.
pub fn wait_listening(port: u16, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("nothing listened on 127.0.0.1:{port} within {timeout:?}");
}

/// Waits (up to 10 s) until something accepts TCP connections on `port`.
pub async fn wait_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "port {port} never opened");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls `f` until it returns true (→ true) or `timeout` passes (→ false).
pub async fn eventually(timeout: Duration, mut f: impl AsyncFnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if f().await {
            return true;
        }
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Polls `cond` until it holds, failing the test after `limit`; returns how
/// long it took.
pub async fn wait_for<F: std::future::Future<Output = bool>>(
    what: &str,
    limit: Duration,
    mut cond: impl FnMut() -> F,
) -> Duration {
    let t0 = Instant::now();
    loop {
        if cond().await {
            return t0.elapsed();
        }
        assert!(
            t0.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs `git` in `dir` with a fixed identity and neither the user's nor the
/// system's configuration; fails the test when git does, with its stderr.
/// Returns stdout, trimmed.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "MOP Test")
        .env("GIT_AUTHOR_EMAIL", "test@example.com")
        .env("GIT_COMMITTER_NAME", "MOP Test")
        .env("GIT_COMMITTER_EMAIL", "test@example.com")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .expect("git is installed (Debian package git)");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Copies the tree `from` into `to` (created if missing).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), dst).unwrap();
        }
    }
}

/// `name` on `PATH`.
pub fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    })
}

/// A system program the test needs, on `PATH` or in `/usr/sbin`, `/sbin`;
/// fails saying which Debian package provides it.
pub fn require(bin: &str, package: &str) -> PathBuf {
    for dir in std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .chain(["/usr/sbin", "/sbin"])
    {
        let p = Path::new(dir).join(bin);
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "`{bin}` is not installed: this test needs it (Debian package `{package}`; `bash .ci/install-deps` installs what .ci/apt.d lists)"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proc_takes_its_process_group_with_it() {
        // The shell forks a sleep that would outlive a plain kill of the shell.
        let p = Proc::spawn("sh", Command::new("sh").args(["-c", "sleep 300 & wait"]));
        let pgid = p.pid();
        std::thread::sleep(Duration::from_millis(200));
        let members = || {
            std::fs::read_dir("/proc")
                .unwrap()
                .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
                .filter(|pid| {
                    std::fs::read_to_string(format!("/proc/{pid}/stat"))
                        .ok()
                        .and_then(|s| {
                            let rest = &s[s.rfind(')')? + 1..];
                            let mut f = rest.split_whitespace();
                            let state = f.next()?;
                            (state != "Z").then_some(())?;
                            f.nth(1)?.parse::<u32>().ok()
                        })
                        == Some(pgid)
                })
                .count()
        };
        assert_eq!(members(), 2, "sh and its sleep");
        drop(p);
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(members(), 0, "the group outlived its Proc");
    }

    #[tokio::test]
    async fn terminate_sends_sigterm_and_returns_the_status() {
        let mut p = Proc::spawn(
            "sh",
            Command::new("sh").args(["-c", "trap 'exit 7' TERM; while :; do sleep 0.05; done"]),
        );
        std::thread::sleep(Duration::from_millis(200));
        let st = p.terminate(Duration::from_secs(10)).await;
        assert_eq!(st.code(), Some(7));
    }

    #[test]
    fn git_runs_with_a_fixed_identity() {
        let d = std::env::temp_dir().join(format!("mop-test-support-git-{}", free_port()));
        std::fs::create_dir_all(&d).unwrap();
        git(&d, &["init", "-q", "-b", "main"]);
        git(&d, &["commit", "-q", "--allow-empty", "-m", "x"]);
        assert_eq!(
            git(&d, &["log", "-1", "--format=%an <%ae>"]),
            "MOP Test <test@example.com>"
        );
        std::fs::remove_dir_all(&d).unwrap();
    }
}

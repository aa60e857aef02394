//! Every external program the test suite runs is declared under `.ci/`, so that
//! `scripts/test` (through `.ci/install-deps`) installs it on a fresh machine.
//!
//! The suite's programs are found in its sources by the shapes the tests use to
//! start or locate them: `Command::new("x")`, `require("x", …)`, `which("x")`,
//! `pg_bin("x")` in Rust test code and build scripts, and `command -v x` in the
//! shell scripts the tests run. Each one must be installed here (else it cannot
//! have been tested) and come from one of:
//! - a Debian package listed in `.ci/apt.d/*.txt`, or one such a listed package
//!   depends on, or an Essential package (always on Debian);
//! - a script of its own in `.ci/bin.d/<name>`;
//! - a PyPI distribution pinned in `.ci/pip.d/*.txt` (its console scripts);
//! - the machine's toolchains that `.ci` does not install: cargo and rustc, and
//!   the CPython with pip (`/work/.library/env/machines/rust.md`: "CPython 3.11
//!   with pip" is on every new machine).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Files whose code runs as part of the suite.
fn suite_sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            if !matches!(
                name.as_str(),
                "target" | ".git" | "repo-template" | "node_modules"
            ) {
                suite_sources(&path, out);
            }
            continue;
        }
        let rel = path.strip_prefix(root()).unwrap().to_string_lossy();
        let test_code = name.ends_with(".rs")
            && (rel.contains("/tests/") || rel.starts_with("tests/") || name == "build.rs");
        let script = name.ends_with(".sh") && rel.starts_with("deploy/");
        if test_code || script {
            out.push(path);
        }
    }
}

/// Program name → the files that run it.
fn programs() -> BTreeMap<String, BTreeSet<String>> {
    let shapes = [
        r#"Command::new\("([A-Za-z0-9_.+-]+)"\)"#,
        r#"\brequire\("([A-Za-z0-9_.+-]+)""#,
        r#"\bwhich\("([A-Za-z0-9_.+-]+)"\)"#,
        r#"\bpg_bin\("([A-Za-z0-9_.+-]+)"\)"#,
        r#"unwrap_or_else\(\|_\| "(clang)"\.to_owned\(\)\)"#,
        r#"command -v ([A-Za-z0-9_.+-]+)"#,
    ]
    .map(|s| regex::Regex::new(s).unwrap());
    let mut files = Vec::new();
    suite_sources(&root(), &mut files);
    let mut found: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let rel = f.strip_prefix(root()).unwrap().display().to_string();
        // This file names programs in its own documentation and tests.
        if rel.ends_with("tests/tests/ci_deps.rs") {
            continue;
        }
        for re in &shapes {
            for c in re.captures_iter(&text) {
                found
                    .entry(c[1].to_string())
                    .or_default()
                    .insert(rel.clone());
            }
        }
    }
    found
}

fn declared_lines(dir: &str) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(root().join(dir)) else {
        return out;
    };
    for e in entries {
        let text = std::fs::read_to_string(e.unwrap().path()).unwrap();
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or("");
            out.extend(line.split_whitespace().map(str::to_string));
        }
    }
    out
}

/// Path → owning Debian package, for all `paths` in one `dpkg -S` (it scans
/// every package's file list, so one call instead of one per path).
fn dpkg_owners(paths: &[PathBuf]) -> BTreeMap<PathBuf, String> {
    let out = Command::new("dpkg").arg("-S").args(paths).output().unwrap();
    let mut owners = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        // "pkg[:arch][, pkg2]: /path"; "diversion by …: /path" is not an owner.
        if line.starts_with("diversion by ") {
            continue;
        }
        if let Some((pkgs, path)) = line.rsplit_once(": ") {
            let pkg = pkgs.split(',').next().unwrap().trim();
            let pkg = pkg.split(':').next().unwrap().to_string();
            owners.insert(PathBuf::from(path), pkg);
        }
    }
    owners
}

/// Installed package → (Essential, Depends), from one `dpkg-query`.
fn dpkg_packages() -> BTreeMap<String, (bool, String)> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Package}\t${Essential}\t${Depends}\n"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut f = l.splitn(3, '\t');
            let name = f.next()?.to_string();
            let essential = f.next()? == "yes";
            Some((name, (essential, f.next().unwrap_or("").to_string())))
        })
        .collect()
}

/// Where the program is: PATH, the sbin directories root has, PostgreSQL's.
fn locate(name: &str) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .map(PathBuf::from)
        .collect();
    dirs.extend(["/usr/bin", "/bin", "/usr/sbin", "/sbin"].map(PathBuf::from));
    if let Ok(pg) = std::fs::read_dir("/usr/lib/postgresql") {
        dirs.extend(pg.map(|e| e.unwrap().path().join("bin")));
    }
    dirs.iter()
        .map(|d| d.join(name))
        .filter(|p| p.is_file())
        .collect()
}

/// The console scripts of the pinned PyPI distributions.
fn pip_scripts() -> BTreeSet<String> {
    let reqs: Vec<String> = declared_lines(".ci/pip.d")
        .into_iter()
        .map(|r| r.split("==").next().unwrap().to_string())
        .collect();
    let out = Command::new("python3")
        .arg("-c")
        .arg(
            "import sys\nfrom importlib import metadata\n\
             for n in sys.argv[1:]:\n    \
             for e in metadata.distribution(n).entry_points:\n        \
             if e.group == 'console_scripts': print(e.name)",
        )
        .args(&reqs)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python3 could not read the installed PyPI distributions {reqs:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn every_program_the_suite_runs_is_declared_in_ci() {
    let programs = programs();
    // The check would pass vacuously if the scan found nothing.
    for must in ["git", "nginx", "promtool", "prometheus", "kubectl", "psql"] {
        assert!(
            programs.contains_key(must),
            "the scan no longer finds `{must}`: {programs:?}"
        );
    }
    let apt: BTreeSet<String> = declared_lines(".ci/apt.d")
        .iter()
        .flat_map(|l| l.split('|').map(str::to_string).collect::<Vec<_>>())
        .collect();
    let bin_d: BTreeSet<String> = std::fs::read_dir(root().join(".ci/bin.d"))
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    let pip = pip_scripts();
    let toolchain = ["cargo", "rustc", "python3"];
    let packages = dpkg_packages();
    // What the declared packages pull in (one level is what the suite needs:
    // python3 → python3-minimal, postgresql → postgresql-15).
    let mut provided = apt.clone();
    for p in &apt {
        let Some((_, depends)) = packages.get(p) else {
            continue;
        };
        for dep in depends.split(',') {
            let dep = dep.split(['(', '|', ':']).next().unwrap_or("").trim();
            if !dep.is_empty() {
                provided.insert(dep.to_string());
            }
        }
    }

    let wanted: Vec<(&String, &BTreeSet<String>, Vec<PathBuf>)> = programs
        .iter()
        .filter(|(name, _)| {
            !(toolchain.contains(&name.as_str()) || bin_d.contains(*name) || pip.contains(*name))
        })
        .map(|(name, files)| (name, files, locate(name)))
        .collect();
    let all_paths: Vec<PathBuf> = wanted
        .iter()
        .flat_map(|(_, _, paths)| paths.iter())
        .flat_map(|p| {
            [
                p.clone(),
                std::fs::canonicalize(p).unwrap_or_else(|_| p.clone()),
            ]
        })
        .collect();
    let owners = dpkg_owners(&all_paths);

    let mut problems = Vec::new();
    for (name, files, paths) in wanted {
        if paths.is_empty() {
            problems.push(format!(
                "`{name}` (run by {files:?}) is not installed: declare its package in .ci/apt.d, .ci/pip.d or .ci/bin.d"
            ));
            continue;
        }
        let mut from: Vec<&String> = paths
            .iter()
            .flat_map(|p| {
                [
                    p.clone(),
                    std::fs::canonicalize(p).unwrap_or_else(|_| p.clone()),
                ]
            })
            .filter_map(|p| owners.get(&p))
            .collect();
        from.dedup();
        let ok = from.iter().any(|o| {
            provided.contains(*o) || packages.get(*o).is_some_and(|(essential, _)| *essential)
        });
        if !ok {
            problems.push(format!(
                "`{name}` (run by {files:?}) comes from {from:?}, which no .ci/apt.d file declares \
                 (found at {paths:?}); add the package to .ci/apt.d/<part>.txt"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

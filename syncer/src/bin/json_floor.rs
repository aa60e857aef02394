//! The floor for `mop validate` on a repository's dashboards: how long `serde_json`
//! takes to parse the same dashboard bytes on one thread, with nothing else done.
//!
//!     cargo run --release -p mop-syncer --bin mop-bench-json-floor -- REPO [ROUNDS]
//!
//! Reads every `tenants/*/dashboards/*/*.json` of REPO (a directory) into memory
//! first, so no I/O is timed, then parses all of them once per round, two ways:
//!
//! - `IgnoredAny`: a full syntax check of every byte, building nothing. This is
//!   **the floor**: validation cannot do less than read each dashboard once.
//! - `serde_json::Value`: the same plus a tree of every value, what a naive
//!   validator would build.
//!
//! Prints, per way, the best and median wall time of the rounds and the thread's
//! CPU time (from /proc/thread-self/schedstat, so other load on the machine shows
//! as wall > CPU), and the throughput.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let Some(repo) = args.next() else {
        anyhow::bail!("usage: json_floor REPO [ROUNDS]");
    };
    let rounds: usize = args.next().map_or(Ok(5), |r| r.parse())?;
    let mut paths = Vec::new();
    collect(&Path::new(&repo).join("tenants"), &mut paths)?;
    paths.retain(|p| {
        p.extension().is_some_and(|e| e == "json")
            && p.components().any(|c| c.as_os_str() == "dashboards")
    });
    paths.sort();
    let blobs: Vec<Vec<u8>> = paths.iter().map(std::fs::read).collect::<Result<_, _>>()?;
    let bytes: usize = blobs.iter().map(Vec::len).sum();
    println!(
        "floor input: {} dashboards, {:.1} MB",
        blobs.len(),
        bytes as f64 / 1e6
    );
    let ignored = measure(rounds, || {
        for b in &blobs {
            serde_json::from_slice::<serde::de::IgnoredAny>(b)?;
        }
        Ok(())
    })?;
    report("IgnoredAny (the floor)", &ignored, bytes);
    let value = measure(rounds, || {
        for b in &blobs {
            std::hint::black_box(serde_json::from_slice::<serde_json::Value>(b)?);
        }
        Ok(())
    })?;
    report("serde_json::Value", &value, bytes);
    Ok(())
}

/// Wall and CPU time of each round.
fn measure(
    rounds: usize,
    mut f: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<Vec<(Duration, Duration)>> {
    let mut out = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let (c0, t0) = (thread_cpu()?, Instant::now());
        f()?;
        out.push((t0.elapsed(), thread_cpu()?.saturating_sub(c0)));
    }
    Ok(out)
}

fn report(name: &str, runs: &[(Duration, Duration)], bytes: usize) {
    let mut wall: Vec<_> = runs.iter().map(|r| r.0).collect();
    let mut cpu: Vec<_> = runs.iter().map(|r| r.1).collect();
    wall.sort();
    cpu.sort();
    let (best, median) = (wall[0], wall[wall.len() / 2]);
    println!(
        "floor {name}: best {:.3} s wall, median {:.3} s wall, best {:.3} s CPU ({} rounds, one thread), {:.0} MB/s",
        best.as_secs_f64(),
        median.as_secs_f64(),
        cpu[0].as_secs_f64(),
        runs.len(),
        bytes as f64 / 1e6 / cpu[0].as_secs_f64().max(1e-9),
    );
}

/// CPU time this thread has run, in nanoseconds of the scheduler's accounting.
fn thread_cpu() -> anyhow::Result<Duration> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat")?;
    let ns: u64 = s.split_whitespace().next().unwrap_or("0").parse()?;
    Ok(Duration::from_nanos(ns))
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        if e.file_type()?.is_dir() {
            collect(&e.path(), out)?;
        } else {
            out.push(e.path());
        }
    }
    Ok(())
}

//! What the running kernel offers, checked before loading, and reported in
//! plain words so an operator knows what to fix.
use std::{fs, path::Path, process::Command};

use tracing::{info, warn};

#[derive(Debug, Clone, Default)]
pub struct Report {
    pub kernel_release: String,
    pub btf: bool,
    pub tracefs: bool,
    pub ringbuf: bool,
    pub tracepoint_programs: bool,
    /// Problems that stop the agent, with what to do about them.
    pub fatal: Vec<String>,
    pub warnings: Vec<String>,
}

const TRACEFS: &str = "/sys/kernel/tracing";

fn tracefs_ready() -> bool {
    Path::new(TRACEFS).join("events/syscalls").exists()
        || Path::new("/sys/kernel/debug/tracing/events/syscalls").exists()
}

/// Probes the kernel. Mounts tracefs if it is missing and we may (root).
pub fn run() -> Report {
    let mut r = Report {
        kernel_release: fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_owned())
            .unwrap_or_default(),
        ..Report::default()
    };
    r.btf = Path::new("/sys/kernel/btf/vmlinux").exists();
    if !r.btf {
        r.fatal.push(
            "kernel BTF (/sys/kernel/btf/vmlinux) is missing: the programs use CO-RE; run a kernel built with CONFIG_DEBUG_INFO_BTF=y".into(),
        );
    }
    if !tracefs_ready() {
        // A container or a minimal host may not have tracefs mounted; the
        // tracepoint ids live there.
        let mounted = Command::new("mount")
            .args(["-t", "tracefs", "tracefs", TRACEFS])
            .status()
            .is_ok_and(|s| s.success());
        if mounted {
            r.warnings
                .push(format!("tracefs was not mounted; mounted it at {TRACEFS}"));
        }
    }
    r.tracefs = tracefs_ready();
    if !r.tracefs {
        r.fatal.push(format!(
            "tracefs is not available at {TRACEFS}: mount it (mount -t tracefs tracefs {TRACEFS}) or mount the host's /sys/kernel/tracing into the container"
        ));
    }
    r.ringbuf = aya::sys::is_map_supported(aya::maps::MapType::RingBuf).unwrap_or(false);
    if !r.ringbuf {
        r.fatal.push("BPF ring buffers are not supported (kernel 5.8+ needed), or the agent lacks CAP_BPF/root".into());
    }
    r.tracepoint_programs =
        aya::sys::is_program_supported(aya::programs::ProgramType::TracePoint).unwrap_or(false);
    if !r.tracepoint_programs {
        r.fatal.push(
            "tracepoint programs cannot be loaded: run as root or with CAP_BPF and CAP_PERFMON"
                .into(),
        );
    }
    // Before 5.11 BPF memory was charged against RLIMIT_MEMLOCK; since then it
    // is charged to the cgroup and raising the limit is optional.
    let unlimited = rustix::process::Rlimit {
        current: None,
        maximum: None,
    };
    if let Err(e) = rustix::process::setrlimit(rustix::process::Resource::Memlock, unlimited) {
        r.warnings.push(format!(
            "could not raise RLIMIT_MEMLOCK ({e}); fine on kernels >= 5.11, map creation may fail on older ones"
        ));
    }
    for w in &r.warnings {
        warn!("{w}");
    }
    info!(
        kernel = %r.kernel_release,
        btf = r.btf,
        tracefs = r.tracefs,
        ringbuf = r.ringbuf,
        tracepoints = r.tracepoint_programs,
        "kernel probe"
    );
    r
}

//! Loads the kernel programs, attaches them, and exposes the maps userspace
//! needs. The only module that talks to the kernel's BPF interface.
pub mod event;
pub mod probe;

use std::{collections::HashSet, os::fd::AsRawFd as _, path::Path};

use aya::{
    Btf, Ebpf, EbpfLoader,
    maps::{Array, HashMap, MapData, PerCpuArray, RingBuf},
    programs::{BtfTracePoint, TracePoint, UProbe, uprobe::UProbeScope},
};
use tracing::{info, warn};

/// Takes the map `name` out of the loaded object as the typed map `T`.
fn take_map<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf.take_map(name).ok_or(Error::MissingMap(name))?;
    T::try_from(map).map_err(|source| Error::Map { name, source })
}

/// The compiled `agent-ebpf/sockets` program set.
static SOCKETS_OBJ: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sockets.bpf.o"));

/// Number of per-CPU drop counters (`MOP_DROP__COUNT`).
pub const DROP_REASONS: [&str; 4] = [
    "ringbuf_full",
    "conn_table_full",
    "user_read_failed",
    "tls_fd_unknown",
];

/// The OpenSSL uprobes (`agent-ebpf/sockets/tls.h`): entry program, libssl
/// symbol, whether a library without the symbol is still worth hooking, and
/// whether the symbol also gets [`TLS_RETURN`] at its return (reads do;
/// writes are taken at entry, sparing a trap per call).
pub const TLS_ATTACHMENTS: &[(&str, &str, bool, bool)] = &[
    ("mop_ssl_read_enter", "SSL_read", true, true),
    ("mop_ssl_write_enter", "SSL_write", true, false),
    // Since OpenSSL 1.1.1; Python's ssl module uses these.
    ("mop_ssl_read_ex_enter", "SSL_read_ex", false, true),
    ("mop_ssl_write_ex_enter", "SSL_write_ex", false, false),
    // Ties the SSL object to its socket before the first write or read and
    // keeps the handshake's ciphertext out of the ring buffer.
    ("mop_ssl_handshake_enter", "SSL_do_handshake", false, true),
];
pub const TLS_RETURN: &str = "mop_ssl_ret";

/// The program of the `btf` attach mode (`agent-ebpf/sockets/sys_exit_btf.h`):
/// a BTF raw tracepoint on `sys_exit` doing the work of the `syscalls`
/// tracepoint pairs of [`ATTACHMENTS`] it replaces ([`replaced_by_btf`]).
pub const BTF_SYS_EXIT: &str = "mop_sys_exit";

/// How accept, connect and the data syscalls are followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachMode {
    /// One BTF raw tracepoint program on `sys_exit`: one run per syscall,
    /// without the per-hit trace record of syscall tracepoints (about 400 ns
    /// per read/write pair on the 2026-12-04 host, docs/performance.md).
    Btf,
    /// `sys_enter_X`/`sys_exit_X` syscall tracepoints: kernels without BTF
    /// raw tracepoints (before 5.5, or no `/sys/kernel/btf/vmlinux`), other
    /// architectures, or when configured (`capture.attach: tracepoints`).
    Tracepoints,
}

impl AttachMode {
    pub fn as_str(self) -> &'static str {
        match self {
            AttachMode::Btf => "btf",
            AttachMode::Tracepoints => "tracepoints",
        }
    }
}

/// Whether the `btf` mode's program does this tracepoint's work: every
/// syscall tracepoint but close's entry (close is followed at entry, while
/// the fd still names the socket, and is rare enough to keep its tracepoint).
pub fn replaced_by_btf(category: &str, tracepoint: &str) -> bool {
    category == "syscalls" && tracepoint != "sys_enter_close"
}

/// Every program of the set and its tracepoint, with whether the agent can do
/// without it (and what is lost then).
pub const ATTACHMENTS: &[(&str, &str, &str, Option<&str>)] = &[
    (
        "mop_exit_accept",
        "syscalls",
        "sys_exit_accept",
        Some("connections accepted with accept(2) start as role unknown"),
    ),
    (
        "mop_exit_accept4",
        "syscalls",
        "sys_exit_accept4",
        Some("connections accepted with accept4(2) start as role unknown"),
    ),
    (
        "mop_enter_connect",
        "syscalls",
        "sys_enter_connect",
        Some("outgoing connections start as role unknown"),
    ),
    (
        "mop_exit_connect",
        "syscalls",
        "sys_exit_connect",
        Some("outgoing connections start as role unknown"),
    ),
    ("mop_enter_read", "syscalls", "sys_enter_read", None),
    ("mop_exit_read", "syscalls", "sys_exit_read", None),
    ("mop_enter_recvfrom", "syscalls", "sys_enter_recvfrom", None),
    ("mop_exit_recvfrom", "syscalls", "sys_exit_recvfrom", None),
    (
        "mop_enter_readv",
        "syscalls",
        "sys_enter_readv",
        Some("data read with readv(2) is not seen"),
    ),
    (
        "mop_exit_readv",
        "syscalls",
        "sys_exit_readv",
        Some("data read with readv(2) is not seen"),
    ),
    (
        "mop_enter_recvmsg",
        "syscalls",
        "sys_enter_recvmsg",
        Some("data read with recvmsg(2) is not seen"),
    ),
    (
        "mop_exit_recvmsg",
        "syscalls",
        "sys_exit_recvmsg",
        Some("data read with recvmsg(2) is not seen"),
    ),
    ("mop_enter_write", "syscalls", "sys_enter_write", None),
    ("mop_exit_write", "syscalls", "sys_exit_write", None),
    ("mop_enter_sendto", "syscalls", "sys_enter_sendto", None),
    ("mop_exit_sendto", "syscalls", "sys_exit_sendto", None),
    (
        "mop_enter_writev",
        "syscalls",
        "sys_enter_writev",
        Some("responses written with writev(2) (nginx) are not seen"),
    ),
    (
        "mop_exit_writev",
        "syscalls",
        "sys_exit_writev",
        Some("responses written with writev(2) (nginx) are not seen"),
    ),
    (
        "mop_enter_sendmsg",
        "syscalls",
        "sys_enter_sendmsg",
        Some("data sent with sendmsg(2) is not seen"),
    ),
    (
        "mop_exit_sendmsg",
        "syscalls",
        "sys_exit_sendmsg",
        Some("data sent with sendmsg(2) is not seen"),
    ),
    (
        "mop_enter_sendfile64",
        "syscalls",
        "sys_enter_sendfile64",
        Some("sendfile(2) bodies are not counted; responses may end late"),
    ),
    (
        "mop_exit_sendfile64",
        "syscalls",
        "sys_exit_sendfile64",
        Some("sendfile(2) bodies are not counted; responses may end late"),
    ),
    (
        "mop_enter_close",
        "syscalls",
        "sys_enter_close",
        Some("closed connections linger until evicted"),
    ),
    (
        "mop_process_fork",
        "sched",
        "sched_process_fork",
        Some(
            "children of tracked processes (PostgreSQL backends, workers) are tracked only after the next rescan",
        ),
    ),
    (
        "mop_process_exit",
        "sched",
        "sched_process_exit",
        Some("exited processes stay in the kernel's tracked set until the next rescan"),
    ),
];

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "loading the eBPF object failed: {0}. The agent needs root or CAP_BPF+CAP_PERFMON, \
         and a kernel with BTF (/sys/kernel/btf/vmlinux); see docs/agent.md"
    )]
    Load(#[source] Box<aya::EbpfError>),
    #[error(
        "program {0} is missing from the eBPF object (was agent-ebpf built from another version?)"
    )]
    MissingProgram(&'static str),
    #[error("program {name}: {source}")]
    Program {
        name: &'static str,
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    #[error(
        "attaching {name} to tracepoint {category}/{tracepoint} failed: {source}. Is tracefs \
         mounted at /sys/kernel/tracing (mount -t tracefs tracefs /sys/kernel/tracing)?"
    )]
    Attach {
        name: &'static str,
        category: &'static str,
        tracepoint: &'static str,
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    #[error("attaching the TLS uprobe {name} to {symbol} in {library}: {source}")]
    TlsAttach {
        name: &'static str,
        symbol: &'static str,
        library: String,
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    #[error("map {0} is missing from the eBPF object")]
    MissingMap(&'static str),
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Settings the kernel programs are loaded with.
#[derive(Debug, Clone, Copy)]
pub struct LoadOptions {
    /// Payload prefix copied per syscall, 1..=MAX_CAPTURE.
    pub capture_bytes: u32,
    pub ring_buffer_bytes: u32,
    /// Data waiting in the ring buffer before the kernel wakes the reader.
    pub wakeup_bytes: u64,
    /// Skip the `btf` mode and use the syscall tracepoints.
    pub force_tracepoints: bool,
}

/// The loaded and attached programs. Dropping it detaches everything.
pub struct Programs {
    ebpf: Ebpf,
    tracked: HashMap<MapData, u32, u8>,
    /// `mop_tracked_bits_user`: the kernel's filter in front of `tracked`
    /// for the processes userspace tracks (`maps/tracked_bits.h`); this
    /// struct is its only writer.
    tracked_bits: Array<MapData, u64>,
    /// The ids whose bit this struct set, to clear them once the kernel has
    /// dropped the process (a stale bit costs untracked processes reusing
    /// the id a hash lookup per syscall, nothing else).
    bits_set: HashSet<u32>,
    drops: PerCpuArray<MapData, u64>,
    /// What could not be attached, in plain words.
    pub degraded: Vec<String>,
    pub program_ids: Vec<u32>,
    /// How the syscalls are followed (the `btf` mode unless it failed or
    /// was configured off).
    pub attach_mode: AttachMode,
    /// The TLS uprobes loaded (not attached: that happens per library).
    tls_ready: bool,
    /// libssl files hooked, by (device, inode): one uprobe per file covers
    /// every process that maps it, whatever path it was found under.
    tls_libraries: HashSet<(u64, u64)>,
}

impl Programs {
    /// Loads and attaches; returns the programs and the ring buffer to read.
    pub fn load(opts: LoadOptions) -> Result<(Programs, RingBuf<MapData>)> {
        let capture = opts.capture_bytes.clamp(1, event::MAX_CAPTURE as u32);
        let bit_words = pid_bitmap_words(
            std::fs::read_to_string("/proc/sys/kernel/pid_max")
                .ok()
                .and_then(|s| s.trim().parse().ok()),
        );
        let mut ebpf = EbpfLoader::new()
            .override_global("capture_bytes", &capture, true)
            .override_global("wakeup_bytes", &opts.wakeup_bytes, true)
            .map_max_entries(
                "mop_events",
                opts.ring_buffer_bytes.next_power_of_two().max(4096),
            )
            .map_max_entries("mop_tracked_bits_user", bit_words)
            .map_max_entries("mop_tracked_bits_kernel", bit_words)
            .load(SOCKETS_OBJ)
            .map_err(|e| Error::Load(Box::new(e)))?;
        let mut degraded = Vec::new();
        let mut program_ids = Vec::new();
        let attach_mode = if opts.force_tracepoints {
            AttachMode::Tracepoints
        } else {
            match attach_btf_sys_exit(&mut ebpf) {
                Ok(id) => {
                    program_ids.extend(id);
                    AttachMode::Btf
                }
                Err(e) => {
                    // Not degraded: the tracepoints see the same syscalls,
                    // at a higher cost per syscall.
                    info!(error = %e, "BTF raw tracepoint on sys_exit unavailable; using syscall tracepoints");
                    AttachMode::Tracepoints
                }
            }
        };
        for &(name, category, tracepoint, loss) in ATTACHMENTS {
            if attach_mode == AttachMode::Btf && replaced_by_btf(category, tracepoint) {
                continue;
            }
            let tp: &mut TracePoint = ebpf
                .program_mut(name)
                .ok_or(Error::MissingProgram(name))?
                .try_into()
                .map_err(|source| Error::Program {
                    name,
                    source: Box::new(source),
                })?;
            let exists = Path::new("/sys/kernel/tracing/events")
                .join(category)
                .join(tracepoint)
                .exists()
                || Path::new("/sys/kernel/debug/tracing/events")
                    .join(category)
                    .join(tracepoint)
                    .exists();
            if !exists && let Some(loss) = loss {
                warn!(tracepoint, "tracepoint not offered by this kernel; {loss}");
                degraded.push(format!("{category}/{tracepoint} missing: {loss}"));
                continue;
            }
            tp.load().map_err(|source| Error::Program {
                name,
                source: Box::new(source),
            })?;
            match tp.attach(category, tracepoint) {
                Ok(_) => {}
                Err(source) => match loss {
                    Some(loss) => {
                        warn!(tracepoint, error = %source, "attach failed; {loss}");
                        degraded.push(format!(
                            "{category}/{tracepoint} not attached ({source}): {loss}"
                        ));
                        continue;
                    }
                    None => {
                        return Err(Error::Attach {
                            name,
                            category,
                            tracepoint,
                            source: Box::new(source),
                        });
                    }
                },
            }
            if let Ok(info) = tp.info() {
                program_ids.push(info.id());
            }
        }
        let tls_ready = match load_tls(&mut ebpf) {
            Ok(()) => true,
            Err(e) => {
                warn!(error = %e, "TLS uprobes could not be loaded; TLS traffic is seen as ciphertext only");
                degraded.push(format!(
                    "TLS uprobes not loaded ({e}): TLS traffic is seen as ciphertext only"
                ));
                false
            }
        };
        let ring: RingBuf<_> = take_map(&mut ebpf, "mop_events")?;
        let tracked: HashMap<_, _, _> = take_map(&mut ebpf, "mop_tracked_pids")?;
        let tracked_bits: Array<_, _> = take_map(&mut ebpf, "mop_tracked_bits_user")?;
        let drops: PerCpuArray<_, _> = take_map(&mut ebpf, "mop_drops")?;
        info!(
            programs = program_ids.len(),
            attach_mode = attach_mode.as_str(),
            ring_fd = ring.as_raw_fd(),
            "eBPF programs attached"
        );
        Ok((
            Programs {
                ebpf,
                tracked,
                tracked_bits,
                bits_set: HashSet::new(),
                drops,
                degraded,
                program_ids,
                attach_mode,
                tls_ready,
                tls_libraries: HashSet::new(),
            },
            ring,
        ))
    }

    /// Hooks one libssl file (found in a tracked process's mappings) for
    /// every process that maps it; the kernel side keeps to tracked ones.
    /// Returns false if this file is already hooked or TLS is unavailable.
    pub fn attach_tls(&mut self, library: &Path) -> Result<bool> {
        use std::os::unix::fs::MetadataExt as _;
        if !self.tls_ready {
            return Ok(false);
        }
        let id = match std::fs::metadata(library) {
            Ok(m) => (m.dev(), m.ino()),
            Err(_) => return Ok(false),
        };
        if self.tls_libraries.contains(&id) {
            return Ok(false);
        }
        let lib = library.display().to_string();
        // The return probe goes first: an entry whose return is not hooked
        // would leave its thread looking as if inside an SSL call.
        for &(name, symbol, required, ret) in TLS_ATTACHMENTS {
            let progs: &[&'static str] = if ret { &[TLS_RETURN, name] } else { &[name] };
            for &prog in progs {
                let up = uprobe(&mut self.ebpf, prog)?;
                if let Err(source) = up.attach(symbol, library, UProbeScope::AllProcesses) {
                    if !required
                        && matches!(
                            source,
                            aya::programs::ProgramError::UProbeError(
                                aya::programs::uprobe::UProbeError::SymbolError { .. },
                            )
                        )
                    {
                        info!(library = %lib, symbol, "symbol absent; not hooked");
                        break;
                    }
                    return Err(Error::TlsAttach {
                        name: prog,
                        symbol,
                        library: lib,
                        source: Box::new(source),
                    });
                }
            }
        }
        self.tls_libraries.insert(id);
        info!(library = %lib, "TLS uprobes attached");
        Ok(true)
    }

    /// Starts capturing a process (and, through fork, its future children).
    pub fn track(&mut self, tgid: u32) -> Result<()> {
        self.tracked
            .insert(tgid, 1, 0)
            .map_err(|source| Error::Map {
                name: "mop_tracked_pids",
                source,
            })?;
        // The hash first: a set bit with no key is a lookup, a key with no
        // bit would be a process not captured.
        self.set_bit(tgid, true)
    }

    /// Clears the filter bits of processes the kernel no longer tracks
    /// (`tracked`: what [`Programs::tracked`] returned); the exit program
    /// removed them from the hash but cannot write userspace's bitmap.
    pub fn forget_exited(&mut self, tracked: &HashSet<u32>) {
        let gone: Vec<u32> = self
            .bits_set
            .iter()
            .filter(|id| !tracked.contains(id))
            .copied()
            .collect();
        for id in gone {
            if let Err(e) = self.set_bit(id, false) {
                warn!(pid = id, error = %e, "could not clear the tracked-process filter bit");
            }
        }
    }

    fn set_bit(&mut self, id: u32, on: bool) -> Result<()> {
        let (word, bit) = (id / 64, 1u64 << (id % 64));
        let map_err = |source| Error::Map {
            name: "mop_tracked_bits_user",
            source,
        };
        let old = match self.tracked_bits.get(&word, 0) {
            Ok(v) => v,
            // Beyond the bitmap (pid_max raised since load): the kernel
            // finds no word there and asks the hash instead.
            Err(aya::maps::MapError::OutOfBounds { .. }) => return Ok(()),
            Err(source) => return Err(map_err(source)),
        };
        let new = if on { old | bit } else { old & !bit };
        if new != old {
            self.tracked_bits.set(word, new, 0).map_err(map_err)?;
        }
        if on {
            self.bits_set.insert(id);
        } else {
            self.bits_set.remove(&id);
        }
        Ok(())
    }

    pub fn untrack(&mut self, tgid: u32) {
        // Absent keys are fine: the exit tracepoint may have removed it.
        let _ = self.tracked.remove(&tgid);
    }

    /// Processes the kernel currently tracks (including forked children).
    pub fn tracked(&self) -> Vec<u32> {
        self.tracked.keys().filter_map(|k| k.ok()).collect()
    }

    /// Kernel-side drops per reason, summed over CPUs.
    pub fn drops(&self) -> [u64; 4] {
        let mut out = [0u64; 4];
        for (i, slot) in out.iter_mut().enumerate() {
            if let Ok(values) = self.drops.get(&(i as u32), 0) {
                *slot = values.iter().sum();
            }
        }
        out
    }

    /// Number of programs in the object (for the start-up report).
    pub fn program_count(&self) -> usize {
        self.ebpf.programs().count()
    }
}

/// Words of the tracked-process bitmaps for ids below `pid_max` (the
/// kernel's `kernel.pid_max`; 4,194,304, the 64-bit limit, if unknown).
fn pid_bitmap_words(pid_max: Option<u32>) -> u32 {
    pid_max.unwrap_or(1 << 22).clamp(64, 1 << 22).div_ceil(64)
}

/// Loads and attaches the `btf` mode's program; returns its id if the kernel
/// reports one. Any error means the tracepoint mode is used instead.
fn attach_btf_sys_exit(ebpf: &mut Ebpf) -> Result<Option<u32>> {
    let name = BTF_SYS_EXIT;
    let program_err = |source| Error::Program {
        name,
        source: Box::new(source),
    };
    let btf = Btf::from_sys_fs().map_err(|e| program_err(aya::programs::ProgramError::Btf(e)))?;
    let prog: &mut BtfTracePoint = ebpf
        .program_mut(name)
        .ok_or(Error::MissingProgram(name))?
        .try_into()
        .map_err(program_err)?;
    prog.load("sys_exit", &btf).map_err(program_err)?;
    prog.attach().map_err(program_err)?;
    Ok(prog.info().ok().map(|i| i.id()))
}

fn uprobe<'a>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut UProbe> {
    ebpf.program_mut(name)
        .ok_or(Error::MissingProgram(name))?
        .try_into()
        .map_err(|source| Error::Program {
            name,
            source: Box::new(source),
        })
}

/// Loads the TLS uprobe programs into the kernel; they are attached per
/// library by [`Programs::attach_tls`].
fn load_tls(ebpf: &mut Ebpf) -> Result<()> {
    let names = TLS_ATTACHMENTS
        .iter()
        .map(|(n, _, _, _)| *n)
        .chain([TLS_RETURN]);
    for name in names {
        uprobe(ebpf, name)?
            .load()
            .map_err(|source| Error::Program {
                name,
                source: Box::new(source),
            })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::pid_bitmap_words;

    #[test]
    fn bitmap_covers_every_id_below_pid_max() {
        // Ids run from 0 to pid_max - 1; word id / 64 must exist.
        assert_eq!(pid_bitmap_words(Some(32768)), 512);
        assert_eq!(pid_bitmap_words(Some(32769)), 513);
        assert_eq!(pid_bitmap_words(Some(4_194_304)), 65536);
        assert_eq!(pid_bitmap_words(None), 65536);
        // The kernel's own floor is 301; never an empty map.
        assert_eq!(pid_bitmap_words(Some(0)), 1);
    }
}

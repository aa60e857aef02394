//! Processes: which ones to instrument (from /proc) and what they are
//! (executable, container id) for resource attributes.
use std::{
    collections::{HashMap, HashSet},
    fs,
    path::{Path, PathBuf},
};

use std::sync::Arc;

use crate::{
    config::{Instrument, ServiceRule},
    kube::SharedIndex,
};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading {path}: {source}")]
    Proc {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What the agent knows of one process.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProcessInfo {
    pub pid: u32,
    pub exe_path: String,
    pub exe_name: String,
    pub command_line: String,
    pub container_id: Option<String>,
}

impl ProcessInfo {
    pub fn read(proc_root: &Path, pid: u32) -> Result<ProcessInfo, Error> {
        let dir = proc_root.join(pid.to_string());
        let exe = fs::read_link(dir.join("exe")).map_err(|source| Error::Proc {
            path: dir.join("exe"),
            source,
        })?;
        let exe_path = exe
            .to_string_lossy()
            .trim_end_matches(" (deleted)")
            .to_owned();
        let exe_name = exe_path.rsplit('/').next().unwrap_or_default().to_owned();
        let command_line = fs::read(dir.join("cmdline"))
            .map(|b| {
                b.split(|c| *c == 0)
                    .filter(|s| !s.is_empty())
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default();
        let container_id = fs::read_to_string(dir.join("cgroup"))
            .ok()
            .and_then(|c| container_id(&c));
        Ok(ProcessInfo {
            pid,
            exe_path,
            exe_name,
            command_line,
            container_id,
        })
    }
}

/// The container id in a /proc/<pid>/cgroup file: the last 64-hex-digit
/// token of a path, as Docker, containerd and CRI-O name their cgroups
/// (`/docker/<id>`, `cri-containerd-<id>.scope`, `crio-<id>.scope`).
pub fn container_id(cgroup: &str) -> Option<String> {
    let mut found = None;
    for line in cgroup.lines() {
        let path = line.rsplit(':').next().unwrap_or_default();
        for part in path.split('/') {
            let part = part.trim_end_matches(".scope");
            let token = part.rsplit(['-', ':']).next().unwrap_or_default();
            if token.len() == 64 && token.bytes().all(|b| b.is_ascii_hexdigit()) {
                found = Some(token.to_ascii_lowercase());
            }
        }
    }
    found
}

/// Socket inodes listening on `ports` (TCP over IPv4 and IPv6), in the
/// agent's network namespace: from the kernel's socket diagnostics when
/// `proc_root` is the real `/proc`, else (or if that fails) from
/// `<proc_root>/net/tcp{,6}`.
fn listening_inodes(proc_root: &Path, ports: &[u16]) -> HashSet<u64> {
    if proc_root == Path::new("/proc")
        && let Ok(inodes) = listening_inodes_diag(ports)
    {
        return inodes;
    }
    listening_inodes_file(proc_root, ports)
}

/// The listening TCP sockets on `ports`, from a `NETLINK_SOCK_DIAG` dump
/// restricted to the LISTEN state. Reading `/proc/net/tcp` made the kernel
/// walk every bucket of the established-connections hash each rescan
/// (`established_get_first`, 6% of the agent's CPU under load even with a
/// handful of connections; more on a busy node); a LISTEN-only dump walks
/// the listening hash alone (`inet_diag_dump_icsk` in
/// `net/ipv4/inet_diag.c` stops before the established hash when no other
/// state is asked for). Layouts: `include/uapi/linux/netlink.h`,
/// `sock_diag.h`, `inet_diag.h`.
fn listening_inodes_diag(ports: &[u16]) -> std::io::Result<HashSet<u64>> {
    use rustix::net::{
        AddressFamily, RecvFlags, SendFlags, SocketType, netlink, recv, send, socket,
    };
    const NLMSG_HDR: usize = 16;
    const NLMSG_ERROR: u16 = 2;
    const NLMSG_DONE: u16 = 3;
    const SOCK_DIAG_BY_FAMILY: u16 = 20;
    const NLM_F_REQUEST_DUMP: u16 = 0x001 | 0x300;
    const TCP_LISTEN: u8 = 10;
    const INET_DIAG_MSG: usize = 72;
    let fd = socket(
        AddressFamily::NETLINK,
        SocketType::DGRAM,
        Some(netlink::SOCK_DIAG),
    )?;
    let mut out = HashSet::new();
    let mut buf = vec![0u8; 32 * 1024];
    for (seq, family) in [(1u32, libc_af::INET), (2, libc_af::INET6)] {
        // nlmsghdr, then inet_diag_req_v2 { family, protocol, ext, pad,
        // states, inet_diag_sockid (zero: any) }.
        let mut req = [0u8; NLMSG_HDR + 56];
        req[0..4].copy_from_slice(&((NLMSG_HDR + 56) as u32).to_ne_bytes());
        req[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
        req[6..8].copy_from_slice(&NLM_F_REQUEST_DUMP.to_ne_bytes());
        req[8..12].copy_from_slice(&seq.to_ne_bytes());
        req[16] = family;
        req[17] = 6; // IPPROTO_TCP
        req[20..24].copy_from_slice(&(1u32 << TCP_LISTEN).to_ne_bytes());
        send(&fd, &req, SendFlags::empty())?;
        'dump: loop {
            let (n, _) = recv(&fd, &mut buf[..], RecvFlags::empty())?;
            if n == 0 {
                break;
            }
            let mut off = 0;
            while off + NLMSG_HDR <= n {
                let word = |at: usize| [buf[at], buf[at + 1], buf[at + 2], buf[at + 3]];
                let len = u32::from_ne_bytes(word(off)) as usize;
                let kind = u16::from_ne_bytes([buf[off + 4], buf[off + 5]]);
                if len < NLMSG_HDR || off + len > n {
                    return Err(std::io::Error::other("malformed sock_diag reply"));
                }
                match kind {
                    NLMSG_DONE => break 'dump,
                    NLMSG_ERROR => {
                        return Err(std::io::Error::other("sock_diag dump refused"));
                    }
                    SOCK_DIAG_BY_FAMILY if len >= NLMSG_HDR + INET_DIAG_MSG => {
                        // inet_diag_msg: state at 1, id.idiag_sport (big
                        // endian) at 4, idiag_inode at 68.
                        let m = off + NLMSG_HDR;
                        let port = u16::from_be_bytes([buf[m + 4], buf[m + 5]]);
                        if buf[m + 1] == TCP_LISTEN && ports.contains(&port) {
                            out.insert(u64::from(u32::from_ne_bytes(word(m + 68))));
                        }
                    }
                    _ => {}
                }
                off += (len + 3) & !3;
            }
        }
    }
    Ok(out)
}

/// Address family numbers of `<sys/socket.h>` as sock_diag takes them.
mod libc_af {
    pub const INET: u8 = 2;
    pub const INET6: u8 = 10;
}

/// Socket inodes listening on `ports`, parsed from `net/tcp` and `net/tcp6`
/// under `proc_root`.
fn listening_inodes_file(proc_root: &Path, ports: &[u16]) -> HashSet<u64> {
    let mut out = HashSet::new();
    for file in ["net/tcp", "net/tcp6"] {
        let Ok(text) = fs::read_to_string(proc_root.join(file)) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() < 10 || cols[3] != "0A" {
                continue;
            }
            let port = cols[1]
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if port.is_some_and(|p| ports.contains(&p))
                && let Ok(inode) = cols[9].parse::<u64>()
            {
                out.insert(inode);
            }
        }
    }
    out
}

fn all_pids(proc_root: &Path) -> Vec<u32> {
    let Ok(rd) = fs::read_dir(proc_root) else {
        return Vec::new();
    };
    rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

fn holds_inode(proc_root: &Path, pid: u32, inodes: &HashSet<u64>) -> bool {
    let Ok(rd) = fs::read_dir(proc_root.join(pid.to_string()).join("fd")) else {
        return false;
    };
    rd.filter_map(|e| e.ok())
        .filter_map(|e| fs::read_link(e.path()).ok())
        .filter_map(|l| {
            let s = l.to_string_lossy().into_owned();
            s.strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse::<u64>()
                .ok()
        })
        .any(|i| inodes.contains(&i))
}

fn exe_matches(wanted: &str, info_path: &str) -> bool {
    if wanted.contains('/') {
        wanted == info_path
    } else {
        info_path.rsplit('/').next() == Some(wanted)
    }
}

/// Processes the config asks for, found by one pass over /proc.
pub fn discover(proc_root: &Path, rules: &Instrument) -> HashSet<u32> {
    Discovery::default().scan(proc_root, rules, &HashSet::new())
}

/// Repeated discovery. Walking every process's fd table to find who holds a
/// listening socket dominated the agent's idle CPU, so it is done only when
/// the set of listening sockets on the configured ports changed; processes
/// forked later from a tracked one are followed by the kernel instead.
#[derive(Debug, Default)]
pub struct Discovery {
    last_inodes: HashSet<u64>,
}

impl Discovery {
    /// Matching processes not in `known`.
    pub fn scan(
        &mut self,
        proc_root: &Path,
        rules: &Instrument,
        known: &HashSet<u32>,
    ) -> HashSet<u32> {
        let mut out: HashSet<u32> = rules
            .pids
            .iter()
            .copied()
            .filter(|p| !known.contains(p) && proc_root.join(p.to_string()).exists())
            .collect();
        if rules.ports.is_empty() && rules.executables.is_empty() {
            return out;
        }
        let inodes = listening_inodes(proc_root, &rules.ports);
        let scan_fds = !inodes.is_empty() && inodes != self.last_inodes;
        self.last_inodes = inodes;
        if !scan_fds && rules.executables.is_empty() {
            return out;
        }
        for pid in all_pids(proc_root) {
            if known.contains(&pid) {
                continue;
            }
            if !rules.executables.is_empty()
                && let Ok(exe) = fs::read_link(proc_root.join(pid.to_string()).join("exe"))
                && rules
                    .executables
                    .iter()
                    .any(|w| exe_matches(w, &exe.to_string_lossy()))
            {
                out.insert(pid);
                continue;
            }
            if scan_fds && holds_inode(proc_root, pid, &self.last_inodes) {
                out.insert(pid);
            }
        }
        out
    }
}

/// The OpenSSL libssl files a process maps, as paths through its own root
/// (`/proc/<pid>/root/...`) so that a container's library is found as the
/// container sees it.
pub fn mapped_libssl(proc_root: &Path, pid: u32) -> Vec<PathBuf> {
    let dir = proc_root.join(pid.to_string());
    let Ok(maps) = fs::read_to_string(dir.join("maps")) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = Vec::new();
    for line in maps.lines() {
        // address perms offset dev inode path; the path may contain spaces.
        let Some(path) = line.splitn(6, ' ').nth(5).map(str::trim_start) else {
            continue;
        };
        let name = path.rsplit('/').next().unwrap_or_default();
        if !path.starts_with('/') || !is_libssl(name) {
            continue;
        }
        let p = dir.join("root").join(path.trim_start_matches('/'));
        if !out.contains(&p) {
            out.push(p);
        }
    }
    out
}

/// `libssl.so.3`, `libssl.so.1.1`, `libssl.so`: OpenSSL's TLS library (not
/// `libssl3.so`, which is NSS's).
fn is_libssl(file_name: &str) -> bool {
    file_name == "libssl.so" || file_name.starts_with("libssl.so.")
}

/// Resource attributes of one (process, local port).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ResourceInfo {
    pub service_name: String,
    pub namespace: Option<String>,
    /// The pod the process runs in (Kubernetes metadata enabled).
    pub pod: Option<Arc<crate::kube::PodMeta>>,
    pub pid: u32,
    pub exe_name: String,
    pub exe_path: String,
    pub container_id: Option<String>,
}

/// Maps processes to resources by the config's service rules, caching
/// process facts (bounded: entries of exited processes are pruned).
#[derive(Debug)]
pub struct Resolver {
    proc_root: PathBuf,
    rules: Vec<ServiceRule>,
    pods: Option<SharedIndex>,
    cache: HashMap<u32, Option<ProcessInfo>>,
}

const MAX_CACHED: usize = 16384;

impl Resolver {
    pub fn new(proc_root: PathBuf, rules: Vec<ServiceRule>) -> Self {
        Resolver {
            proc_root,
            rules,
            pods: None,
            cache: HashMap::new(),
        }
    }

    /// Resolve containers to pods through this index.
    pub fn with_pods(mut self, pods: SharedIndex) -> Self {
        self.pods = Some(pods);
        self
    }

    pub fn process(&mut self, pid: u32) -> Option<&ProcessInfo> {
        if self.cache.len() >= MAX_CACHED && !self.cache.contains_key(&pid) {
            self.prune();
        }
        let root = &self.proc_root;
        self.cache
            .entry(pid)
            .or_insert_with(|| ProcessInfo::read(root, pid).ok())
            .as_ref()
    }

    /// Forgets processes that no longer exist.
    pub fn prune(&mut self) {
        let root = self.proc_root.clone();
        self.cache
            .retain(|pid, _| root.join(pid.to_string()).exists());
    }

    /// `comm` (the kernel's task name) stands in for the executable when the
    /// process is already gone from /proc (a short-lived client).
    pub fn resource(&mut self, pid: u32, local_port: Option<u16>, comm: &str) -> ResourceInfo {
        let info = self.process(pid).cloned().unwrap_or_else(|| ProcessInfo {
            pid,
            exe_name: comm.to_owned(),
            ..ProcessInfo::default()
        });
        let exe_key = if info.exe_path.is_empty() {
            info.exe_name.clone()
        } else {
            info.exe_path.clone()
        };
        let rule = self.rules.iter().find(|r| {
            r.executable
                .as_deref()
                .is_none_or(|e| exe_matches(e, &exe_key))
                && r.port.is_none_or(|p| Some(p) == local_port)
        });
        let pod = match (&self.pods, &info.container_id) {
            (Some(idx), Some(cid)) => idx.read().ok().and_then(|i| i.get(cid)),
            _ => None,
        };
        // Explicit config wins; then the pod's workload; then the executable.
        let service_name = rule
            .and_then(|r| r.service_name.clone())
            .or_else(|| pod.as_ref().and_then(|p| p.workload_name.clone()))
            .unwrap_or_else(|| {
                if info.exe_name.is_empty() {
                    format!("pid-{pid}")
                } else {
                    info.exe_name.clone()
                }
            });
        ResourceInfo {
            service_name,
            namespace: rule
                .and_then(|r| r.namespace.clone())
                .or_else(|| pod.as_ref().map(|p| p.namespace.clone())),
            pod,
            pid,
            exe_name: info.exe_name,
            exe_path: info.exe_path,
            container_id: info.container_id,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sock_diag dump finds the same listening sockets as
    /// `/proc/net/tcp{,6}`, and only listening ones.
    #[test]
    fn sock_diag_finds_what_proc_net_tcp_lists() {
        let v4 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let v4_port = v4.local_addr().unwrap().port();
        let v6 = std::net::TcpListener::bind("[::1]:0").ok();
        let mut ports = vec![v4_port];
        ports.extend(v6.as_ref().map(|l| l.local_addr().unwrap().port()));
        // A connection to the v4 listener: its established sockets use the
        // same local port and must not be counted.
        let _client = std::net::TcpStream::connect(("127.0.0.1", v4_port)).unwrap();
        let _server = v4.accept().unwrap();
        let diag = listening_inodes_diag(&ports).unwrap();
        assert_eq!(diag.len(), ports.len());
        assert_eq!(diag, listening_inodes_file(Path::new("/proc"), &ports));
        assert_eq!(diag, listening_inodes(Path::new("/proc"), &ports));
        assert!(listening_inodes_diag(&[]).unwrap().is_empty());
    }

    #[test]
    fn finds_libssl_in_a_processes_mappings() {
        let root = std::env::temp_dir().join(format!("mop-agent-maps-{}", std::process::id()));
        std::fs::create_dir_all(root.join("42")).unwrap();
        std::fs::write(
            root.join("42/maps"),
            "7f00-7f01 r--p 00000000 fe:01 1234   /usr/lib/x86_64-linux-gnu/libssl.so.3\n\
             7f01-7f02 r-xp 00001000 fe:01 1234   /usr/lib/x86_64-linux-gnu/libssl.so.3\n\
             7f02-7f03 r-xp 00000000 fe:01 99     /usr/lib/x86_64-linux-gnu/libssl3.so\n\
             7f03-7f04 r-xp 00000000 fe:01 98     /opt/my app/libssl.so.1.1\n\
             7f04-7f05 rw-p 00000000 00:00 0      [heap]\n",
        )
        .unwrap();
        let got = mapped_libssl(&root, 42);
        std::fs::remove_dir_all(&root).unwrap();
        assert_eq!(
            got,
            vec![
                root.join("42/root/usr/lib/x86_64-linux-gnu/libssl.so.3"),
                root.join("42/root/opt/my app/libssl.so.1.1"),
            ]
        );
    }

    #[test]
    fn container_ids_of_common_runtimes() {
        let id = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        assert_eq!(
            container_id(&format!("0::/system.slice/docker-{id}.scope\n")).as_deref(),
            Some(id)
        );
        assert_eq!(
            container_id(&format!(
                "0::/kubepods.slice/kubepods-burstable.slice/cri-containerd-{id}.scope"
            ))
            .as_deref(),
            Some(id)
        );
        assert_eq!(
            container_id(&format!("12:memory:/docker/{id}")).as_deref(),
            Some(id)
        );
        assert_eq!(
            container_id("0::/user.slice/user-0.slice/session-3.scope"),
            None
        );
    }

    #[test]
    fn finds_our_own_listener_by_port() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let rules = Instrument {
            ports: vec![port],
            ..Instrument::default()
        };
        let found = discover(Path::new("/proc"), &rules);
        assert!(found.contains(&std::process::id()), "{found:?}");
    }

    #[test]
    fn service_rules_first_match_wins_and_default_to_exe() {
        let me = std::process::id();
        let exe = ProcessInfo::read(Path::new("/proc"), me).unwrap().exe_name;
        let rules = vec![
            ServiceRule {
                port: Some(1),
                service_name: Some("one".into()),
                ..ServiceRule::default()
            },
            ServiceRule {
                executable: Some(exe.clone()),
                namespace: Some("team-a".into()),
                ..ServiceRule::default()
            },
        ];
        let mut r = Resolver::new("/proc".into(), rules);
        assert_eq!(r.resource(me, Some(1), "x").service_name, "one");
        let res = r.resource(me, Some(2), "x");
        assert_eq!(
            (res.service_name.as_str(), res.namespace.as_deref()),
            (exe.as_str(), Some("team-a"))
        );
    }
}

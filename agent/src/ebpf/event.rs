//! The Rust mirror of `agent-ebpf/include/mop_event.h` and its decoding.
//!
//! The `#[repr(C)]` structs are the layout contract (checked against the C
//! compiler's view by `tests/layout.rs`); decoding reads fields at the offsets
//! those structs define, so no `unsafe` transmutes are needed.
use std::{mem::offset_of, net::IpAddr};

/// Largest payload prefix the kernel copies per syscall (`MOP_MAX_CAPTURE`).
pub const MAX_CAPTURE: usize = 4096;

/// `struct mop_tuple`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RawTuple {
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    pub sport: u16,
    pub dport: u16,
    pub family: u16,
    pub role: u8,
    /// `enum mop_conn_flag`.
    pub flags: u8,
}

/// `struct mop_event` without its `data[]` tail.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct RawEventHeader {
    pub ts_ns: u64,
    pub tgid: u32,
    pub tid: u32,
    pub fd: i32,
    pub kind: u8,
    pub direction: u8,
    pub syscall: u8,
    /// `enum mop_event_flag`.
    pub flags: u8,
    pub total_len: u32,
    pub captured_len: u32,
    pub tuple: RawTuple,
    pub comm: [u8; 16],
}

/// `struct mop_event` in full, for the layout test.
#[repr(C)]
pub struct RawEvent {
    pub header: RawEventHeader,
    pub data: [u8; MAX_CAPTURE],
}

/// `MOP_EVF_TLS`.
pub const EVF_TLS: u8 = 1;
/// `MOP_SC_SSL_READ` and `MOP_SC_SSL_WRITE`.
pub const SC_SSL_READ: u8 = 13;
pub const SC_SSL_WRITE: u8 = 14;

pub const HEADER_SIZE: usize = std::mem::size_of::<RawEventHeader>();

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Open,
    Data,
    Close,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// The traced process read the bytes.
    Ingress,
    /// The traced process wrote the bytes.
    Egress,
}

/// Which side of the connection the traced process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Unknown,
    Server,
    Client,
}

/// A connection's addresses: `local` belongs to the traced process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tuple {
    pub local: IpAddr,
    pub local_port: u16,
    pub peer: IpAddr,
    pub peer_port: u16,
    pub role: Role,
}

/// One decoded kernel event, borrowing its payload from the ring buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event<'a> {
    /// CLOCK_MONOTONIC nanoseconds.
    pub ts_ns: u64,
    pub tgid: u32,
    pub tid: u32,
    pub fd: i32,
    pub kind: EventKind,
    pub direction: Option<Direction>,
    pub syscall: u8,
    /// The bytes are TLS plaintext taken at SSL_read/SSL_write (uprobes),
    /// not what the socket syscalls moved.
    pub tls: bool,
    /// Bytes the syscall moved; `data` holds at most the first of them.
    pub total_len: u32,
    pub data: &'a [u8],
    pub tuple: Tuple,
    /// The task's name (`comm`) as the kernel wrote it, at most 15 bytes
    /// and not checked as UTF-8 (`conn::Comm` does that, once per
    /// connection); empty on data events.
    pub comm: &'a [u8],
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("event of {0} bytes is shorter than the {HEADER_SIZE}-byte header")]
    Short(usize),
    #[error("unknown event kind {0}")]
    Kind(u8),
    #[error("captured_len {captured} exceeds the {available} bytes present")]
    Captured { captured: usize, available: usize },
    #[error("unknown address family {0}")]
    Family(u16),
}

fn u16_at(b: &[u8], off: usize) -> u16 {
    let mut a = [0u8; 2];
    a.copy_from_slice(&b[off..off + 2]);
    u16::from_ne_bytes(a)
}
fn u32_at(b: &[u8], off: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[off..off + 4]);
    u32::from_ne_bytes(a)
}
fn u64_at(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_ne_bytes(a)
}

fn addr(family: u16, raw: &[u8]) -> Result<IpAddr, Error> {
    match family {
        2 => Ok(IpAddr::from([raw[0], raw[1], raw[2], raw[3]])),
        10 => {
            let mut a = [0u8; 16];
            a.copy_from_slice(&raw[..16]);
            let v6 = std::net::Ipv6Addr::from(a);
            // IPv4-mapped peers of a dual-stack socket read better as IPv4.
            Ok(v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4))
        }
        f => Err(Error::Family(f)),
    }
}

impl<'a> Event<'a> {
    /// Decodes one ring-buffer record.
    pub fn decode(b: &'a [u8]) -> Result<Event<'a>, Error> {
        if b.len() < HEADER_SIZE {
            return Err(Error::Short(b.len()));
        }
        let h = |f: usize| f;
        let t = offset_of!(RawEventHeader, tuple);
        let kind = match b[h(offset_of!(RawEventHeader, kind))] {
            1 => EventKind::Open,
            2 => EventKind::Data,
            3 => EventKind::Close,
            k => return Err(Error::Kind(k)),
        };
        let direction = match b[offset_of!(RawEventHeader, direction)] {
            1 => Some(Direction::Ingress),
            2 => Some(Direction::Egress),
            _ => None,
        };
        let captured = u32_at(b, offset_of!(RawEventHeader, captured_len)) as usize;
        let available = b.len() - HEADER_SIZE;
        if captured > available {
            return Err(Error::Captured {
                captured,
                available,
            });
        }
        let family = u16_at(b, t + offset_of!(RawTuple, family));
        let saddr = t + offset_of!(RawTuple, saddr);
        let daddr = t + offset_of!(RawTuple, daddr);
        let role = match b[t + offset_of!(RawTuple, role)] {
            1 => Role::Server,
            2 => Role::Client,
            _ => Role::Unknown,
        };
        let comm_at = offset_of!(RawEventHeader, comm);
        let comm_raw = &b[comm_at..comm_at + 16];
        let comm_len = comm_raw.iter().position(|c| *c == 0).unwrap_or(16);
        Ok(Event {
            comm: &comm_raw[..comm_len],
            ts_ns: u64_at(b, offset_of!(RawEventHeader, ts_ns)),
            tgid: u32_at(b, offset_of!(RawEventHeader, tgid)),
            tid: u32_at(b, offset_of!(RawEventHeader, tid)),
            fd: u32_at(b, offset_of!(RawEventHeader, fd)) as i32,
            kind,
            direction,
            syscall: b[offset_of!(RawEventHeader, syscall)],
            tls: b[offset_of!(RawEventHeader, flags)] & EVF_TLS != 0,
            total_len: u32_at(b, offset_of!(RawEventHeader, total_len)),
            data: &b[HEADER_SIZE..HEADER_SIZE + captured],
            tuple: Tuple {
                local: addr(family, &b[saddr..saddr + 16])?,
                local_port: u16_at(b, t + offset_of!(RawTuple, sport)),
                peer: addr(family, &b[daddr..daddr + 16])?,
                peer_port: u16_at(b, t + offset_of!(RawTuple, dport)),
                role,
            },
        })
    }
}

impl Event<'_> {
    /// Encodes the event the way the kernel lays it out (IPv4 tuples
    /// only): for replaying recorded traffic in tests and benchmarks.
    pub fn encode(&self) -> Vec<u8> {
        let e = self;
        let mut b = vec![0u8; HEADER_SIZE + e.data.len()];
        let put = |b: &mut Vec<u8>, off: usize, v: &[u8]| b[off..off + v.len()].copy_from_slice(v);
        put(
            &mut b,
            offset_of!(RawEventHeader, ts_ns),
            &e.ts_ns.to_ne_bytes(),
        );
        put(
            &mut b,
            offset_of!(RawEventHeader, tgid),
            &e.tgid.to_ne_bytes(),
        );
        put(
            &mut b,
            offset_of!(RawEventHeader, tid),
            &e.tid.to_ne_bytes(),
        );
        put(&mut b, offset_of!(RawEventHeader, fd), &e.fd.to_ne_bytes());
        b[offset_of!(RawEventHeader, kind)] = match e.kind {
            EventKind::Open => 1,
            EventKind::Data => 2,
            EventKind::Close => 3,
        };
        b[offset_of!(RawEventHeader, direction)] = match e.direction {
            None => 0,
            Some(Direction::Ingress) => 1,
            Some(Direction::Egress) => 2,
        };
        b[offset_of!(RawEventHeader, syscall)] = e.syscall;
        b[offset_of!(RawEventHeader, flags)] = if e.tls { EVF_TLS } else { 0 };
        put(
            &mut b,
            offset_of!(RawEventHeader, total_len),
            &e.total_len.to_ne_bytes(),
        );
        put(
            &mut b,
            offset_of!(RawEventHeader, captured_len),
            &(e.data.len() as u32).to_ne_bytes(),
        );
        let t = offset_of!(RawEventHeader, tuple);
        put(
            &mut b,
            t + offset_of!(RawTuple, family),
            &2u16.to_ne_bytes(),
        );
        if let (IpAddr::V4(l), IpAddr::V4(p)) = (e.tuple.local, e.tuple.peer) {
            put(&mut b, t + offset_of!(RawTuple, saddr), &l.octets());
            put(&mut b, t + offset_of!(RawTuple, daddr), &p.octets());
        }
        put(
            &mut b,
            t + offset_of!(RawTuple, sport),
            &e.tuple.local_port.to_ne_bytes(),
        );
        put(
            &mut b,
            t + offset_of!(RawTuple, dport),
            &e.tuple.peer_port.to_ne_bytes(),
        );
        b[t + offset_of!(RawTuple, role)] = match e.tuple.role {
            Role::Unknown => 0,
            Role::Server => 1,
            Role::Client => 2,
        };
        let c = offset_of!(RawEventHeader, comm);
        let n = e.comm.len().min(15);
        b[c..c + n].copy_from_slice(&e.comm[..n]);
        b[HEADER_SIZE..].copy_from_slice(e.data);
        b
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample() -> Event<'static> {
        Event {
            ts_ns: 42,
            tgid: 7,
            tid: 8,
            fd: 5,
            kind: EventKind::Data,
            direction: Some(Direction::Ingress),
            syscall: 5,
            tls: false,
            total_len: 100,
            data: b"GET / HTTP/1.1\r\n",
            comm: b"nginx",
            tuple: Tuple {
                local: IpAddr::from([127, 0, 0, 1]),
                local_port: 8080,
                peer: IpAddr::from([127, 0, 0, 1]),
                peer_port: 50000,
                role: Role::Server,
            },
        }
    }

    #[test]
    fn round_trips_through_the_kernel_layout() {
        let e = sample();
        assert_eq!(Event::decode(&e.encode()), Ok(e));
    }

    #[test]
    fn rejects_truncated_records() {
        let b = sample().encode();
        assert_eq!(Event::decode(&b[..10]), Err(Error::Short(10)));
        assert!(matches!(
            Event::decode(&b[..HEADER_SIZE + 3]),
            Err(Error::Captured { .. })
        ));
    }

    proptest::proptest! {
        #[test]
        fn decode_never_panics(b in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            let _ = Event::decode(&b);
        }
    }
}

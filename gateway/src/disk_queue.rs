//! On-disk queue of encoded export requests, so that a backend outage (and a
//! gateway restart during it) loses nothing up to a disk budget.
//!
//! Layout of one queue directory:
//! - `<20-digit id>.seg`: segment files of records
//!   `[payload length: u32 LE][CRC-32 of payload: u32 LE][payload]`;
//! - `cursor`: `"<segment id> <offset>"` of the first record not yet delivered,
//!   replaced atomically (write + rename) after every acknowledged record.
//!
//! Delivery is at-least-once: a record is acknowledged only after the backend
//! accepted it, so a crash between the two resends it. Recovery on open truncates
//! a torn last record and starts a fresh segment; a record whose checksum does not
//! match is skipped with the rest of its segment and counted.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tokio::sync::Notify;

const HEADER: u64 = 8;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("disk queue {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("disk queue is over its budget of {0} bytes")]
    Full(u64),
    #[error("a record of {0} bytes does not fit the disk queue's 4 GiB record limit")]
    RecordTooLarge(usize),
    #[error("disk queue lock poisoned")]
    Poisoned,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// When appended records are flushed to stable storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FsyncPolicy {
    /// After every record: nothing acknowledged to the exporter is lost on power
    /// failure, at the cost of one fsync per batch.
    Always,
    /// By [`DiskQueue::sync`], called on a timer.
    Interval,
    /// Left to the OS.
    Never,
}

#[derive(Debug, Clone)]
pub struct Options {
    pub dir: PathBuf,
    pub segment_bytes: u64,
    pub max_bytes: u64,
    pub fsync: FsyncPolicy,
}

/// Where a record ends: acknowledging it moves the cursor here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    segment: u64,
    offset: u64,
}

#[derive(Debug)]
struct Inner {
    /// Segment id → size in bytes.
    segments: BTreeMap<u64, u64>,
    writer: File,
    writer_id: u64,
    read: Position,
    total: u64,
    dirty: bool,
    corrupt: u64,
}

#[derive(Debug)]
pub struct DiskQueue {
    opts: Options,
    inner: Mutex<Inner>,
    appended: Notify,
    freed: Notify,
}

/// What recovery found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovery {
    pub pending_bytes: u64,
    pub truncated_bytes: u64,
}

fn seg_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}.seg"))
}

/// Length of the valid prefix of a segment (stops at a torn or corrupt record).
fn valid_prefix(path: &Path) -> Result<u64, Error> {
    let mut data = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut data))
        .map_err(io(path))?;
    let mut off = 0usize;
    while off + HEADER as usize <= data.len() {
        let len =
            u32::from_le_bytes([data[off], data[off + 1], data[off + 2], data[off + 3]]) as usize;
        let crc = u32::from_le_bytes([data[off + 4], data[off + 5], data[off + 6], data[off + 7]]);
        let start = off + HEADER as usize;
        if start + len > data.len() || crc32fast::hash(&data[start..start + len]) != crc {
            break;
        }
        off = start + len;
    }
    Ok(off as u64)
}

impl DiskQueue {
    pub fn open(opts: Options) -> Result<(Self, Recovery), Error> {
        let dir = opts.dir.clone();
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let mut segments = BTreeMap::new();
        for entry in std::fs::read_dir(&dir).map_err(io(&dir))? {
            let entry = entry.map_err(io(&dir))?;
            let name = entry.file_name();
            let Some(id) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".seg"))
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            let size = entry.metadata().map_err(io(&entry.path()))?.len();
            segments.insert(id, size);
        }
        let cursor_path = dir.join("cursor");
        let mut read = match std::fs::read_to_string(&cursor_path) {
            Ok(text) => {
                let mut it = text.split_whitespace().map(|p| p.parse::<u64>());
                match (it.next(), it.next()) {
                    (Some(Ok(segment)), Some(Ok(offset))) => Position { segment, offset },
                    _ => Position {
                        segment: 0,
                        offset: 0,
                    },
                }
            }
            Err(_) => Position {
                segment: 0,
                offset: 0,
            },
        };
        // Segments before the cursor were delivered; a crash may have left them.
        let done: Vec<u64> = segments.range(..read.segment).map(|(id, _)| *id).collect();
        for id in done {
            let _ = std::fs::remove_file(seg_path(&dir, id));
            segments.remove(&id);
        }
        if !segments.contains_key(&read.segment) {
            read = Position {
                segment: segments.keys().next().copied().unwrap_or(0),
                offset: 0,
            };
        }
        let mut recovery = Recovery::default();
        if let Some((&last, &size)) = segments.iter().next_back() {
            let valid = valid_prefix(&seg_path(&dir, last))?;
            if valid < size {
                let p = seg_path(&dir, last);
                OpenOptions::new()
                    .write(true)
                    .open(&p)
                    .and_then(|f| f.set_len(valid))
                    .map_err(io(&p))?;
                recovery.truncated_bytes = size - valid;
                segments.insert(last, valid);
            }
        }
        // New records always go to a new segment, never after recovered bytes.
        let writer_id = segments.keys().next_back().map_or(0, |l| l + 1);
        let wp = seg_path(&dir, writer_id);
        let writer = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&wp)
            .map_err(io(&wp))?;
        segments.insert(writer_id, 0);
        if segments.len() == 1 {
            read = Position {
                segment: writer_id,
                offset: 0,
            };
        }
        let total = segments
            .iter()
            .filter(|(id, _)| **id >= read.segment)
            .map(|(_, s)| *s)
            .sum::<u64>()
            .saturating_sub(read.offset);
        recovery.pending_bytes = total;
        Ok((
            Self {
                opts,
                inner: Mutex::new(Inner {
                    segments,
                    writer,
                    writer_id,
                    read,
                    total,
                    dirty: false,
                    corrupt: 0,
                }),
                appended: Notify::new(),
                freed: Notify::new(),
            },
            recovery,
        ))
    }

    /// Bytes waiting to be delivered.
    pub fn pending_bytes(&self) -> u64 {
        self.inner.lock().map(|i| i.total).unwrap_or(0)
    }

    /// Records skipped because their checksum did not match.
    pub fn corrupt_records(&self) -> u64 {
        self.inner.lock().map(|i| i.corrupt).unwrap_or(0)
    }

    /// Appends one record, or fails with [`Error::Full`] when the budget would be
    /// exceeded (the caller waits with [`DiskQueue::space_freed`]).
    pub fn append(&self, payload: &[u8]) -> Result<(), Error> {
        // The length prefix is a u32; a longer payload would be written with a
        // wrapped length and read back as garbage.
        let Ok(prefix) = u32::try_from(payload.len()) else {
            return Err(Error::RecordTooLarge(payload.len()));
        };
        let mut g = self.inner.lock().map_err(|_| Error::Poisoned)?;
        let inner = &mut *g;
        let len = HEADER + u64::from(prefix);
        // A record larger than the whole budget is still taken when the queue is
        // empty, or it could never be written at all.
        if inner.total > 0 && inner.total + len > self.opts.max_bytes {
            return Err(Error::Full(self.opts.max_bytes));
        }
        let size = inner.segments.get(&inner.writer_id).copied().unwrap_or(0);
        if size > 0 && size + len > self.opts.segment_bytes {
            let old = seg_path(&self.opts.dir, inner.writer_id);
            inner.writer.sync_data().map_err(io(&old))?;
            inner.writer_id += 1;
            let p = seg_path(&self.opts.dir, inner.writer_id);
            inner.writer = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&p)
                .map_err(io(&p))?;
            inner.segments.insert(inner.writer_id, 0);
        }
        let mut rec = Vec::with_capacity(len as usize);
        rec.extend_from_slice(&prefix.to_le_bytes());
        rec.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
        rec.extend_from_slice(payload);
        let p = seg_path(&self.opts.dir, inner.writer_id);
        inner.writer.write_all(&rec).map_err(io(&p))?;
        if self.opts.fsync == FsyncPolicy::Always {
            inner.writer.sync_data().map_err(io(&p))?;
        } else {
            inner.dirty = true;
        }
        *inner.segments.entry(inner.writer_id).or_default() += len;
        inner.total += len;
        drop(g);
        self.appended.notify_one();
        Ok(())
    }

    /// Flushes appended records to disk (the `interval` fsync policy).
    pub fn sync(&self) -> Result<(), Error> {
        let mut g = self.inner.lock().map_err(|_| Error::Poisoned)?;
        if g.dirty {
            let p = seg_path(&self.opts.dir, g.writer_id);
            g.writer.sync_data().map_err(io(&p))?;
            g.dirty = false;
        }
        Ok(())
    }

    /// The oldest undelivered record and where it ends, if any.
    pub fn peek(&self) -> Result<Option<(Vec<u8>, Position)>, Error> {
        let mut g = self.inner.lock().map_err(|_| Error::Poisoned)?;
        loop {
            let pos = g.read;
            let size = g.segments.get(&pos.segment).copied().unwrap_or(0);
            if pos.offset + HEADER > size {
                if pos.segment >= g.writer_id {
                    return Ok(None);
                }
                // Finished (or skipped) segment: move on; deleted on the next ack.
                let next = g
                    .segments
                    .range(pos.segment + 1..)
                    .next()
                    .map(|(id, _)| *id);
                match next {
                    Some(n) => {
                        g.total = g.total.saturating_sub(size.saturating_sub(pos.offset));
                        g.read = Position {
                            segment: n,
                            offset: 0,
                        };
                        let _ = std::fs::remove_file(seg_path(&self.opts.dir, pos.segment));
                        g.segments.remove(&pos.segment);
                        continue;
                    }
                    None => return Ok(None),
                }
            }
            let p = seg_path(&self.opts.dir, pos.segment);
            let mut f = File::open(&p).map_err(io(&p))?;
            f.seek(SeekFrom::Start(pos.offset)).map_err(io(&p))?;
            let mut header = [0u8; HEADER as usize];
            f.read_exact(&mut header).map_err(io(&p))?;
            let len = u64::from(u32::from_le_bytes([
                header[0], header[1], header[2], header[3],
            ]));
            let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
            // The length prefix is checked against the bytes the segment really
            // holds before anything is allocated: a corrupted prefix (up to 4 GiB)
            // must not make the gateway allocate it.
            let fits = pos.offset + HEADER + len <= size;
            let payload = if fits {
                let mut payload = vec![0u8; usize::try_from(len).unwrap_or(usize::MAX)];
                (f.read_exact(&mut payload).is_ok() && crc32fast::hash(&payload) == crc)
                    .then_some(payload)
            } else {
                None
            };
            let Some(payload) = payload else {
                tracing::error!(segment = %p.display(), offset = pos.offset, "corrupt disk-queue record; skipping the rest of the segment");
                g.corrupt += 1;
                g.total = g.total.saturating_sub(size - pos.offset);
                g.read.offset = size;
                if pos.segment == g.writer_id {
                    return Ok(None);
                }
                continue;
            };
            return Ok(Some((
                payload,
                Position {
                    segment: pos.segment,
                    offset: pos.offset + HEADER + len,
                },
            )));
        }
    }

    /// Marks everything before `pos` delivered and persists the cursor.
    pub fn ack(&self, pos: Position) -> Result<(), Error> {
        let mut g = self.inner.lock().map_err(|_| Error::Poisoned)?;
        if pos.segment == g.read.segment && pos.offset > g.read.offset {
            g.total = g.total.saturating_sub(pos.offset - g.read.offset);
        }
        g.read = pos;
        let tmp = self.opts.dir.join("cursor.tmp");
        let cursor = self.opts.dir.join("cursor");
        std::fs::write(&tmp, format!("{} {}", pos.segment, pos.offset)).map_err(io(&tmp))?;
        std::fs::rename(&tmp, &cursor).map_err(io(&cursor))?;
        drop(g);
        self.freed.notify_waiters();
        Ok(())
    }

    pub async fn appended(&self) {
        self.appended.notified().await;
    }

    pub async fn space_freed(&self) {
        self.freed.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(dir: &Path, segment_bytes: u64, max_bytes: u64) -> Options {
        Options {
            dir: dir.to_path_buf(),
            segment_bytes,
            max_bytes,
            fsync: FsyncPolicy::Never,
        }
    }

    fn drain(q: &DiskQueue) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while let Some((p, pos)) = q.peek().unwrap() {
            out.push(p);
            q.ack(pos).unwrap();
        }
        out
    }

    #[test]
    fn records_survive_reopen_in_order_and_are_delivered_once() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (q, _) = DiskQueue::open(opts(dir.path(), 64, 1 << 20)).unwrap();
            for i in 0..20u8 {
                q.append(&[i; 10]).unwrap();
            }
            let (first, pos) = q.peek().unwrap().unwrap();
            assert_eq!(first, vec![0u8; 10]);
            q.ack(pos).unwrap();
        }
        let (q, rec) = DiskQueue::open(opts(dir.path(), 64, 1 << 20)).unwrap();
        assert_eq!(rec.pending_bytes, 19 * 18);
        let got = drain(&q);
        assert_eq!(got, (1..20u8).map(|i| vec![i; 10]).collect::<Vec<_>>());
        drop(q);
        let (q, rec) = DiskQueue::open(opts(dir.path(), 64, 1 << 20)).unwrap();
        assert_eq!(rec.pending_bytes, 0);
        assert!(drain(&q).is_empty());
        // Delivered segments are deleted.
        let segs = std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "seg")
            })
            .count();
        assert!(segs <= 2, "{segs}");
    }

    #[test]
    fn torn_tail_is_truncated_and_corruption_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (q, _) = DiskQueue::open(opts(dir.path(), 1 << 20, 1 << 20)).unwrap();
            q.append(b"one").unwrap();
            q.append(b"two").unwrap();
        }
        let seg = seg_path(dir.path(), 0);
        // A crash mid-write: half a header at the end.
        let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
        f.write_all(&[9, 0, 0]).unwrap();
        drop(f);
        let (q, rec) = DiskQueue::open(opts(dir.path(), 1 << 20, 1 << 20)).unwrap();
        assert_eq!(rec.truncated_bytes, 3);
        assert_eq!(drain(&q), vec![b"one".to_vec(), b"two".to_vec()]);
        drop(q);

        let dir = tempfile::tempdir().unwrap();
        {
            let (q, _) = DiskQueue::open(opts(dir.path(), 1 << 20, 1 << 20)).unwrap();
            q.append(b"good").unwrap();
            q.append(b"flip").unwrap();
            q.append(b"more").unwrap();
            // Open a second segment so the damaged one is not the last (not truncated).
            q.append(&[7u8; 2]).unwrap();
        }
        let seg = seg_path(dir.path(), 0);
        let mut data = std::fs::read(&seg).unwrap();
        let at = data.windows(4).position(|w| w == b"flip").unwrap();
        data[at] ^= 0xff;
        std::fs::write(&seg, &data).unwrap();
        std::fs::write(seg_path(dir.path(), 1), []).unwrap();
        let (q, _) = DiskQueue::open(opts(dir.path(), 1 << 20, 1 << 20)).unwrap();
        let got = drain(&q);
        assert_eq!(got[0], b"good".to_vec());
        assert!(!got.contains(&b"flip".to_vec()));
        assert_eq!(q.corrupt_records(), 1);
    }

    /// Regression: a corrupted length prefix of up to 4 GiB was allocated before
    /// it was checked against the segment. The check runs in a child process
    /// limited to 1 GiB of address space, where such an allocation aborts.
    #[test]
    fn corrupted_length_prefix_is_not_allocated() {
        const CHILD: &str = "MOP_DISK_QUEUE_LENGTH_CHILD";
        let Some(dir) = std::env::var_os(CHILD) else {
            let dir = tempfile::tempdir().unwrap();
            {
                let (q, _) = DiskQueue::open(opts(dir.path(), 16, 1 << 20)).unwrap();
                q.append(b"first").unwrap();
                // A second segment, so the damaged one is not the last (which
                // recovery would truncate before any read).
                q.append(b"second").unwrap();
            }
            let seg = seg_path(dir.path(), 0);
            let mut data = std::fs::read(&seg).unwrap();
            data[..4].copy_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
            std::fs::write(&seg, &data).unwrap();
            let exe = std::env::current_exe().unwrap();
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg("ulimit -v 1048576 && exec \"$0\" \"$@\"")
                .arg(exe)
                .args([
                    "--exact",
                    "disk_queue::tests::corrupted_length_prefix_is_not_allocated",
                    "--test-threads=1",
                    "--nocapture",
                ])
                .env(CHILD, dir.path())
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "child failed: {}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            // The child ran the check (not zero tests).
            assert!(
                String::from_utf8_lossy(&out.stdout).contains("1 passed"),
                "{}",
                String::from_utf8_lossy(&out.stdout)
            );
            return;
        };
        let (q, _) = DiskQueue::open(opts(Path::new(&dir), 16, 1 << 20)).unwrap();
        assert_eq!(drain(&q), vec![b"second".to_vec()]);
        assert_eq!(q.corrupt_records(), 1);
    }

    #[test]
    fn budget_is_enforced_and_freed_by_acks() {
        let dir = tempfile::tempdir().unwrap();
        let (q, _) = DiskQueue::open(opts(dir.path(), 1 << 20, 100)).unwrap();
        q.append(&[1; 40]).unwrap();
        q.append(&[2; 40]).unwrap();
        assert!(matches!(q.append(&[3; 40]), Err(Error::Full(100))));
        let (_, pos) = q.peek().unwrap().unwrap();
        q.ack(pos).unwrap();
        q.append(&[3; 40]).unwrap();
        assert_eq!(q.pending_bytes(), 96);
    }

    mod model {
        use super::*;
        use proptest::prelude::*;

        #[derive(Debug, Clone)]
        enum Op {
            Append(Vec<u8>),
            Deliver,
            Reopen,
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                3 => proptest::collection::vec(any::<u8>(), 0..40).prop_map(Op::Append),
                2 => Just(Op::Deliver),
                1 => Just(Op::Reopen),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(64))]
            /// The disk queue behaves like a FIFO that survives reopening.
            #[test]
            fn behaves_like_a_durable_fifo(ops in proptest::collection::vec(op(), 1..80)) {
                let dir = tempfile::tempdir().unwrap();
                let o = opts(dir.path(), 100, 1 << 20);
                let (mut q, _) = DiskQueue::open(o.clone()).unwrap();
                let mut model = std::collections::VecDeque::new();
                for op in ops {
                    match op {
                        Op::Append(p) => {
                            q.append(&p).unwrap();
                            model.push_back(p);
                        }
                        Op::Deliver => {
                            let got = q.peek().unwrap();
                            prop_assert_eq!(got.as_ref().map(|(p, _)| p.clone()), model.front().cloned());
                            if let Some((_, pos)) = got {
                                q.ack(pos).unwrap();
                                model.pop_front();
                            }
                        }
                        Op::Reopen => {
                            drop(q);
                            q = DiskQueue::open(o.clone()).unwrap().0;
                        }
                    }
                    let expected: u64 = model.iter().map(|p| p.len() as u64 + HEADER).sum();
                    prop_assert_eq!(q.pending_bytes(), expected);
                }
            }
        }
    }
}

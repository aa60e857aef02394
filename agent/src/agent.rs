//! Wires the parts together: kernel programs → ring buffer reader →
//! connection tracker → spans/metrics → exporter. Shutdown is staged: stop
//! reading (which detaches the programs), then let the exporter drain.
use std::{
    collections::{HashMap, HashSet},
    path::PathBuf,
    sync::{Arc, Mutex, atomic::Ordering::Relaxed},
    time::Duration,
};

use aya::maps::{MapData, RingBuf};
use tokio::{io::unix::AsyncFd, net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{
    config::Config,
    conn::{Site, Tracker},
    ebpf::{self, LoadOptions, Programs, event::Event, probe},
    export::{self, Exporter, SpanBatch, SpanSender},
    process::{self, Resolver, ResourceInfo},
    selfmetrics::{self, SelfMetrics},
    telemetry::{self, Metrics},
};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("this kernel cannot run the agent:\n  - {}", .0.join("\n  - "))]
    Kernel(Vec<String>),
    #[error(transparent)]
    Ebpf(#[from] ebpf::Error),
    #[error(transparent)]
    Export(#[from] export::Error),
    #[error("registering the ring buffer with the event loop: {0}")]
    RingFd(#[source] std::io::Error),
    #[error("binding the metrics listener on {addr}: {source}")]
    MetricsListen {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// A running agent. Call [`Agent::shutdown`] to detach and flush.
pub struct Agent {
    cancel: CancellationToken,
    reader: JoinHandle<()>,
    exporter: JoinHandle<()>,
    pub stats: Arc<SelfMetrics>,
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// eBPF program ids, to check that shutdown really detached them.
    pub program_ids: Vec<u32>,
    /// Capabilities that were missing at start, in plain words.
    pub degraded: Vec<String>,
    /// How the kernel side follows syscalls.
    pub attach_mode: ebpf::AttachMode,
}

fn clock_offset_ns() -> i128 {
    use rustix::time::{ClockId, clock_gettime};
    let mono = clock_gettime(ClockId::Monotonic);
    let real = clock_gettime(ClockId::Realtime);
    let ns =
        |t: rustix::time::Timespec| i128::from(t.tv_sec) * 1_000_000_000 + i128::from(t.tv_nsec);
    ns(real) - ns(mono)
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

impl Agent {
    pub async fn start(cfg: Config) -> Result<Agent, Error> {
        let report = probe::run();
        if !report.fatal.is_empty() {
            return Err(Error::Kernel(report.fatal));
        }
        let (mut programs, ring) = Programs::load(LoadOptions {
            capture_bytes: cfg.capture.bytes,
            ring_buffer_bytes: cfg.capture.ring_buffer_bytes,
            wakeup_bytes: cfg.capture.wakeup_bytes,
            force_tracepoints: cfg.capture.attach == crate::config::Attach::Tracepoints,
        })?;
        let attach_mode = programs.attach_mode;
        let mut degraded = report.warnings.clone();
        degraded.extend(programs.degraded.iter().cloned());
        let program_ids = programs.program_ids.clone();
        let proc_root = PathBuf::from("/proc");
        let mut discovery = process::Discovery::default();
        let mut tls = TlsHooks {
            enabled: cfg.capture.tls,
            ..TlsHooks::default()
        };
        for pid in discovery.scan(&proc_root, &cfg.instrument, &HashSet::new()) {
            programs.track(pid)?;
            tls.inspect(&mut programs, &proc_root, pid);
        }
        let stats = Arc::new(SelfMetrics::default());
        stats.attach_btf.store(
            attach_mode == ebpf::AttachMode::Btf,
            std::sync::atomic::Ordering::Relaxed,
        );
        let cancel = CancellationToken::new();
        let host = host_name();
        let metrics = Arc::new(Mutex::new(Metrics::new(
            export::now_unix_ns(),
            cfg.metric_cardinality_limit,
        )));
        let exporter = Exporter::new(
            &cfg.otlp_endpoint,
            cfg.export.clone(),
            host,
            metrics.clone(),
            stats.clone(),
        )?
        .with_token_file(cfg.gateway_token_file.clone());
        let (tx, rx) = export::queue(cfg.export.queue_size);
        let export_cancel = CancellationToken::new();
        let exporter = tokio::spawn(exporter.run(rx, export_cancel.clone()));

        let mut metrics_addr = None;
        if let Some(addr) = cfg.metrics_listen {
            let l = TcpListener::bind(addr)
                .await
                .map_err(|source| Error::MetricsListen { addr, source })?;
            metrics_addr = l.local_addr().ok();
            tokio::spawn(selfmetrics::serve(l, stats.clone(), cancel.clone()));
        }

        // `AsyncFd::new` is deprecated because a borrowed fd could be closed
        // while registered; here the AsyncFd owns the RingBuf that owns the
        // fd, so the fd lives exactly as long as the registration.
        #[allow(deprecated)]
        let ring = AsyncFd::new(ring).map_err(Error::RingFd)?;
        let mut resolver = Resolver::new(proc_root.clone(), cfg.services.clone());
        match cfg.kubernetes.resolve() {
            Ok(Some(api)) => {
                let index = crate::kube::SharedIndex::default();
                resolver = resolver.with_pods(index.clone());
                tokio::spawn(crate::kube::run(api, index, cancel.clone()));
            }
            Ok(None) => {}
            Err(e) => warn!(error = %e, "Kubernetes metadata disabled"),
        }
        let reader = Reader {
            ring,
            programs,
            pipeline: Pipeline::new(
                Tracker::new(cfg.capture.max_connections),
                resolver,
                clock_offset_ns(),
            ),
            tx,
            metrics,
            stats: stats.clone(),
            cfg,
            proc_root,
            discovery,
            tls,
        };
        let reader_cancel = cancel.clone();
        let reader = tokio::spawn(async move {
            reader.run(reader_cancel).await;
            // The reader owned the span sender; the exporter drains and ends.
            export_cancel.cancel();
        });
        info!(
            programs = program_ids.len(),
            attach_mode = attach_mode.as_str(),
            "mop-agent running"
        );
        Ok(Agent {
            cancel,
            reader,
            exporter,
            stats,
            metrics_addr,
            program_ids,
            degraded,
            attach_mode,
        })
    }

    /// Detaches the programs, then gives the exporter until `deadline` to
    /// send what is queued.
    pub async fn shutdown(self, deadline: Duration) {
        self.cancel.cancel();
        if let Err(e) = self.reader.await {
            warn!(error = %e, "reader task failed");
        }
        match tokio::time::timeout(deadline, self.exporter).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!(error = %e, "exporter task failed"),
            Err(_) => warn!("exporter did not drain before the deadline; queued spans are lost"),
        }
    }
}

struct Reader {
    ring: AsyncFd<RingBuf<MapData>>,
    programs: Programs,
    pipeline: Pipeline,
    tx: SpanSender,
    metrics: Arc<Mutex<Metrics>>,
    stats: Arc<SelfMetrics>,
    cfg: Config,
    proc_root: PathBuf,
    discovery: process::Discovery,
    tls: TlsHooks,
}

/// Which tracked processes were checked for a mapped libssl. A process may
/// load libssl after it was first seen (Python imports `ssl` lazily), so
/// those without it are checked again every [`TlsHooks::RECHECK`] rescans.
#[derive(Default)]
struct TlsHooks {
    /// `capture.tls`: off, no library is hooked.
    enabled: bool,
    /// pid → whether it maps libssl.
    seen: HashMap<u32, bool>,
    rescans: u64,
}

impl TlsHooks {
    const RECHECK: u64 = 10;

    fn inspect(&mut self, programs: &mut Programs, proc_root: &std::path::Path, pid: u32) {
        if !self.enabled {
            return;
        }
        let libs = process::mapped_libssl(proc_root, pid);
        for lib in &libs {
            if let Err(e) = programs.attach_tls(lib) {
                warn!(pid, library = %lib.display(), error = %e, "TLS of this library is not seen");
            }
        }
        self.seen.insert(pid, !libs.is_empty());
    }

    /// Checks the tracked processes not checked yet (children, new matches),
    /// and forgets those that are gone.
    fn rescan(
        &mut self,
        programs: &mut Programs,
        proc_root: &std::path::Path,
        tracked: &HashSet<u32>,
    ) {
        self.rescans += 1;
        let recheck = self.rescans.is_multiple_of(Self::RECHECK);
        self.seen.retain(|pid, _| tracked.contains(pid));
        for &pid in tracked {
            let due = match self.seen.get(&pid) {
                None => true,
                Some(has) => !has && recheck,
            };
            if due {
                self.inspect(programs, proc_root, pid);
            }
        }
    }
}

/// A resource's process and, for a server, its local port.
type ResourceKey = (u32, Option<u16>);

/// What happens to each ring-buffer record, separated from the ring so that
/// `benches/pipeline.rs` measures exactly the reader's work per record.
pub struct Pipeline {
    tracker: Tracker,
    resolver: Resolver,
    /// One Arc per (process, local port): built once per rescan period,
    /// shared by every span of that resource.
    resources: HashMap<ResourceKey, Arc<ResourceInfo>, foldhash::fast::RandomState>,
    /// The resource of the last span: consecutive spans mostly share it.
    last: Option<(ResourceKey, Arc<ResourceInfo>)>,
    scratch: telemetry::Scratch,
    /// CLOCK_REALTIME − CLOCK_MONOTONIC, ns.
    offset: i128,
}

impl Pipeline {
    pub fn new(tracker: Tracker, resolver: Resolver, wall_offset_ns: i128) -> Pipeline {
        Pipeline {
            tracker,
            resolver,
            resources: HashMap::default(),
            last: None,
            scratch: telemetry::Scratch::default(),
            offset: wall_offset_ns,
        }
    }

    /// Decodes one record, follows its connection, and turns each exchange
    /// it completes into a span in `batch` and an observation in `metrics`.
    /// Returns the number of exchanges.
    pub fn process(
        &mut self,
        record: &[u8],
        batch: &mut SpanBatch,
        mut metrics: Option<&mut Metrics>,
    ) -> Result<usize, ebpf::event::Error> {
        let ev = Event::decode(record)?;
        let mut n = 0;
        let Pipeline {
            tracker,
            resolver,
            resources,
            last,
            scratch,
            offset,
        } = self;
        tracker.handle_with(&ev, |l: &Site, exchange, conn| {
            n += 1;
            let port = (l.role != crate::ebpf::event::Role::Client).then_some(l.tuple.local_port);
            let key = (l.tgid, port);
            let res = match last {
                Some((k, r)) if *k == key => r,
                _ => {
                    let r = resources.entry(key).or_insert_with(|| {
                        Arc::new(resolver.resource(l.tgid, port, l.comm.as_str()))
                    });
                    &mut last.insert((key, r.clone())).1
                }
            };
            let obs = batch.push_with(res, |out| {
                telemetry::build(
                    exchange, &l.tuple, l.role, l.tls, *offset, conn, scratch, out,
                )
            });
            if let (Some(o), Some(m)) = (obs, metrics.as_deref_mut()) {
                m.record(res, o.metric, &scratch.series, o.seconds);
            }
        });
        Ok(n)
    }

    /// Rebuilds resources from now on (processes come and go, pids are
    /// reused) and prunes the resolver's process cache.
    pub fn forget_resources(&mut self) {
        self.resolver.prune();
        self.resources.clear();
        self.last = None;
    }

    pub fn tracker(&self) -> &Tracker {
        &self.tracker
    }
}

/// Records read per drain before yielding to other tasks (the exporter and
/// the metrics endpoint share the agent's one thread).
const DRAIN_BUDGET: usize = 16_384;

impl Reader {
    async fn run(mut self, cancel: CancellationToken) {
        let poll = self.cfg.poll_interval();
        let mut rescan =
            tokio::time::interval(Duration::from_millis(self.cfg.rescan_interval_ms.max(10)));
        rescan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = rescan.tick() => self.rescan(),
                r = tokio::time::timeout(poll, self.ring.readable_mut()) => {
                    if let Ok(Ok(mut guard)) = r {
                        guard.clear_ready();
                    }
                    self.drain();
                }
            }
        }
        // Whatever the kernel wrote before detach still becomes spans.
        self.drain();
        info!("detaching eBPF programs");
    }

    fn rescan(&mut self) {
        let kernel: HashSet<u32> = self.programs.tracked().into_iter().collect();
        for pid in self
            .discovery
            .scan(&self.proc_root, &self.cfg.instrument, &kernel)
        {
            if let Err(e) = self.programs.track(pid) {
                warn!(pid, error = %e, "could not track process");
            }
        }
        let tracked: HashSet<u32> = self.programs.tracked().into_iter().collect();
        self.programs.forget_exited(&tracked);
        self.tls
            .rescan(&mut self.programs, &self.proc_root, &tracked);
        // Config-derived attributes do not change, but processes come and go
        // (and pids are reused): rebuild resources each period.
        self.pipeline.forget_resources();
        if let Ok(mut m) = self.metrics.lock() {
            m.forget_pointers();
        }
        let drops = self.programs.drops();
        for (i, d) in drops.iter().enumerate() {
            self.stats.kernel_drops[i].store(*d, Relaxed);
        }
        self.stats
            .tracked_processes
            .store(kernel.len() as u64, Relaxed);
        self.stats
            .open_connections
            .store(self.pipeline.tracker().len() as u64, Relaxed);
        self.stats
            .conns_evicted
            .store(self.pipeline.tracker().stats.evicted, Relaxed);
        self.stats
            .conns_undetected
            .store(self.pipeline.tracker().stats.undetected, Relaxed);
        self.stats
            .parser_desyncs
            .store(self.pipeline.tracker().stats.desyncs, Relaxed);
        if let Ok(m) = self.metrics.lock() {
            self.stats.metric_overflow.store(m.overflowed, Relaxed);
        }
    }

    fn drain(&mut self) {
        let Reader {
            ring,
            pipeline,
            metrics,
            stats,
            tx,
            ..
        } = self;
        let ring = ring.get_mut();
        let mut batch = tx.batch();
        let mut n = 0;
        let mut exchanges = 0u64;
        {
            // One lock per drain; the exporter takes it once per interval.
            let mut metrics = metrics.lock().ok();
            while n < DRAIN_BUDGET {
                let Some(item) = ring.next() else { break };
                n += 1;
                match pipeline.process(&item, &mut batch, metrics.as_deref_mut()) {
                    Ok(k) => exchanges += k as u64,
                    Err(e) => {
                        SelfMetrics::inc(&stats.event_decode_errors);
                        warn!(error = %e, "undecodable ring buffer record");
                    }
                }
            }
        }
        stats.events.fetch_add(n as u64, Relaxed);
        if exchanges == 0 {
            tx.give_back(batch);
            return;
        }
        stats.exchanges.fetch_add(exchanges, Relaxed);
        let spans = batch.len() as u64;
        match tx.try_send(batch) {
            Ok(()) => {
                stats.spans_queued.fetch_add(spans, Relaxed);
            }
            Err(batch) => {
                stats.spans_dropped_queue_full.fetch_add(spans, Relaxed);
                tx.give_back(batch);
            }
        }
    }
}

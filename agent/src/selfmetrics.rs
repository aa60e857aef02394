//! The agent's own counters, served as Prometheus text on `/metrics`.
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpListener,
};
use tokio_util::sync::CancellationToken;
use tracing::warn;

#[derive(Debug, Default)]
pub struct SelfMetrics {
    pub events: AtomicU64,
    pub event_decode_errors: AtomicU64,
    pub exchanges: AtomicU64,
    pub spans_queued: AtomicU64,
    pub spans_dropped_queue_full: AtomicU64,
    pub spans_exported: AtomicU64,
    pub spans_dropped_export_failed: AtomicU64,
    pub export_retries: AtomicU64,
    pub metric_exports: AtomicU64,
    pub metric_exports_failed: AtomicU64,
    pub kernel_drops: [AtomicU64; 4],
    pub conns_evicted: AtomicU64,
    pub conns_undetected: AtomicU64,
    pub parser_desyncs: AtomicU64,
    pub metric_overflow: AtomicU64,
    pub tracked_processes: AtomicU64,
    pub open_connections: AtomicU64,
    /// The kernel side follows syscalls with the BTF raw tracepoint (else
    /// with syscall tracepoints): set once at start.
    pub attach_btf: AtomicBool,
}

impl SelfMetrics {
    pub fn inc(c: &AtomicU64) {
        c.fetch_add(1, Relaxed);
    }

    pub fn render(&self) -> String {
        let mut s = String::new();
        let mut counter = |name: &str, help: &str, v: u64| {
            s.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}\n"
            ));
        };
        counter(
            "mop_agent_events_total",
            "Kernel events read from the ring buffer.",
            self.events.load(Relaxed),
        );
        counter(
            "mop_agent_event_decode_errors_total",
            "Ring buffer records that did not decode.",
            self.event_decode_errors.load(Relaxed),
        );
        counter(
            "mop_agent_exchanges_total",
            "Request/response exchanges parsed.",
            self.exchanges.load(Relaxed),
        );
        counter(
            "mop_agent_spans_queued_total",
            "Spans handed to the exporter.",
            self.spans_queued.load(Relaxed),
        );
        counter(
            "mop_agent_spans_dropped_queue_full_total",
            "Spans dropped because the export queue was full.",
            self.spans_dropped_queue_full.load(Relaxed),
        );
        counter(
            "mop_agent_spans_exported_total",
            "Spans accepted by the OTLP endpoint.",
            self.spans_exported.load(Relaxed),
        );
        counter(
            "mop_agent_spans_dropped_export_failed_total",
            "Spans dropped after all export attempts failed.",
            self.spans_dropped_export_failed.load(Relaxed),
        );
        counter(
            "mop_agent_export_retries_total",
            "OTLP export attempts that were retried.",
            self.export_retries.load(Relaxed),
        );
        counter(
            "mop_agent_metric_exports_total",
            "OTLP metric exports sent.",
            self.metric_exports.load(Relaxed),
        );
        counter(
            "mop_agent_metric_exports_failed_total",
            "OTLP metric exports that failed.",
            self.metric_exports_failed.load(Relaxed),
        );
        counter(
            "mop_agent_connections_evicted_total",
            "Connections evicted from the full connection table.",
            self.conns_evicted.load(Relaxed),
        );
        counter(
            "mop_agent_connections_undetected_total",
            "Connections whose protocol was not recognised.",
            self.conns_undetected.load(Relaxed),
        );
        counter(
            "mop_agent_parser_desyncs_total",
            "Times a parser lost a stream and resynchronised.",
            self.parser_desyncs.load(Relaxed),
        );
        counter(
            "mop_agent_metric_overflow_total",
            "Observations recorded in the overflow series (cardinality cap).",
            self.metric_overflow.load(Relaxed),
        );
        s.push_str("# HELP mop_agent_kernel_drops_total Events the kernel side could not deliver.\n# TYPE mop_agent_kernel_drops_total counter\n");
        for (i, reason) in crate::ebpf::DROP_REASONS.iter().enumerate() {
            s.push_str(&format!(
                "mop_agent_kernel_drops_total{{reason=\"{reason}\"}} {}\n",
                self.kernel_drops[i].load(Relaxed)
            ));
        }
        s.push_str(&format!(
            "# HELP mop_agent_tracked_processes Processes the kernel side captures.\n# TYPE mop_agent_tracked_processes gauge\nmop_agent_tracked_processes {}\n",
            self.tracked_processes.load(Relaxed)
        ));
        s.push_str(&format!(
            "# HELP mop_agent_open_connections Connections being followed.\n# TYPE mop_agent_open_connections gauge\nmop_agent_open_connections {}\n",
            self.open_connections.load(Relaxed)
        ));
        let btf = self.attach_btf.load(Relaxed);
        s.push_str(&format!(
            "# HELP mop_agent_attach_mode How the kernel side follows syscalls (1: in use).\n# TYPE mop_agent_attach_mode gauge\nmop_agent_attach_mode{{mode=\"btf\"}} {}\nmop_agent_attach_mode{{mode=\"tracepoints\"}} {}\n",
            u8::from(btf),
            u8::from(!btf)
        ));
        s
    }
}

/// Serves `/metrics` (and `/healthz`) until cancelled. Deliberately tiny: one
/// request per connection, no keep-alive.
pub async fn serve(
    listener: TcpListener,
    metrics: std::sync::Arc<SelfMetrics>,
    cancel: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            _ = cancel.cancelled() => return,
            a = listener.accept() => a,
        };
        let Ok((mut sock, _)) = accepted else {
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            let n =
                match tokio::time::timeout(std::time::Duration::from_secs(5), sock.read(&mut buf))
                    .await
                {
                    Ok(Ok(n)) => n,
                    _ => return,
                };
            let req = String::from_utf8_lossy(&buf[..n]);
            let (status, body) = if req.starts_with("GET /metrics") {
                ("200 OK", metrics.render())
            } else if req.starts_with("GET /healthz") {
                ("200 OK", "ok\n".to_owned())
            } else {
                ("404 Not Found", "not found\n".to_owned())
            };
            let resp = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            if let Err(e) = sock.write_all(resp.as_bytes()).await {
                warn!(error = %e, "writing /metrics response failed");
            }
        });
    }
}

//! mop-agent: eBPF capture of service traffic into OpenTelemetry spans and
//! RED metrics, exported over OTLP/gRPC.
//!
//! Data flow: [`ebpf`] (kernel programs, ring buffer) → [`conn`] (per
//! connection reassembly) → [`protocol`] parsers → [`telemetry`] (spans,
//! histograms) → [`export`] (OTLP). [`agent`] wires them; `main.rs` only
//! parses arguments.
pub mod agent;
pub mod config;
pub mod conn;
pub mod ebpf;
pub mod export;
pub mod kube;
pub mod process;
pub mod protocol;
pub mod selfmetrics;
pub mod telemetry;
pub mod wire;

/// The C compiler's view of `struct mop_event`, written by build.rs; the
/// layout test compares it with [`ebpf::event`].
pub mod c_layout {
    include!(concat!(env!("OUT_DIR"), "/c_layout.rs"));
}

//! The `mop-agent` binary: parses arguments, runs the agent until SIGINT or
//! SIGTERM, then detaches and flushes.
use std::{path::PathBuf, time::Duration};

use anyhow::Context as _;
use clap::Parser;
use mop_agent::{agent::Agent, config::Config};
use tokio::signal::unix::{SignalKind, signal};

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// eBPF agent of the Managed Observability Platform.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Agent configuration (YAML); see docs/agent.md.
    #[arg(
        long,
        short,
        env = "MOP_AGENT_CONFIG",
        required_unless_present = "probe"
    )]
    config: Option<PathBuf>,
    /// Only probe the kernel and print what it offers.
    #[arg(long)]
    probe: bool,
}

// One thread: the reader, the exporter and the metrics endpoint together
// need well under a core, and on a multi-thread runtime the hand-offs
// between them showed up as futex wake-ups and context switches in the
// agent's profile.
#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    if args.probe {
        let r = mop_agent::ebpf::probe::run();
        println!(
            "kernel {}\nBTF: {}\ntracefs: {}\nring buffer: {}\ntracepoint programs: {}",
            r.kernel_release, r.btf, r.tracefs, r.ringbuf, r.tracepoint_programs
        );
        for f in &r.fatal {
            println!("missing: {f}");
        }
        for w in &r.warnings {
            println!("warning: {w}");
        }
        if !r.fatal.is_empty() {
            anyhow::bail!("the kernel lacks what the agent needs");
        }
        return Ok(());
    }
    let Some(path) = args.config else {
        anyhow::bail!("--config is required");
    };
    let cfg = Config::load(&path).context("loading the configuration")?;
    let agent = Agent::start(cfg).await.context("starting the agent")?;
    for d in &agent.degraded {
        tracing::warn!("{d}");
    }
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
    agent.shutdown(Duration::from_secs(10)).await;
    Ok(())
}

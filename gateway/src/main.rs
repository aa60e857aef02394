use clap::Parser;
use mop_gateway::{Gateway, Settings};
use tracing_subscriber::EnvFilter;

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .json()
        .init();
    let settings = Settings::parse();
    let gateway = Gateway::start(settings).await?;
    tracing::info!(
        grpc = %gateway.grpc_addr(),
        http = %gateway.http_addr(),
        admin = %gateway.admin_addr(),
        ring = %gateway.ring_addr().map(|a| a.to_string()).unwrap_or_default(),
        "mop-gateway started"
    );
    shutdown_signal().await;
    tracing::info!("shutdown requested");
    gateway.shutdown().await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

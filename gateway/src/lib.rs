//! `mop-gateway`: receives OTLP, routes every resource to the tenant that owns its
//! Kubernetes namespace, tail-samples traces per tenant and exports each tenant's
//! data to Tempo, Prometheus/Mimir remote-write and Loki with `X-Scope-OrgID`.
//!
//! `main.rs` only parses settings and calls [`gateway::Gateway::start`]; everything
//! testable lives in this library.

pub mod disk_queue;
pub mod export;
pub mod gateway;
pub mod identity;
pub mod pipeline;
pub mod receiver;
pub mod reload;
pub mod ring;
pub mod routing;
pub mod sampling;
pub mod settings;
pub mod signal;
pub mod telemetry;

pub use gateway::Gateway;
pub use settings::Settings;

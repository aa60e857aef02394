//! The backends of the platform end-to-end test: a strict Tempo fake, a real
//! Prometheus, and in front of Prometheus a relay that plays Mimir's distributor
//! (tenant header required) and records which tenant sent which series.
// An axum `Response` is the natural error of a handler helper.
#![allow(clippy::result_large_err)]

use mop_test_support::backends::{self, Fake};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

/// Tempo's distributor OTLP/HTTP receiver (the shared strict fake).
pub struct Tempo(Fake<ExportTraceServiceRequest>);

impl Tempo {
    pub async fn start() -> Tempo {
        Tempo(backends::tempo().await)
    }

    pub fn url(&self) -> String {
        self.0.url("/v1/traces")
    }

    pub fn received(&self) -> Vec<(String, ExportTraceServiceRequest)> {
        self.0.state.received()
    }
}

/// Plays Mimir's distributor in front of a real Prometheus (the shared relay).
pub use mop_test_support::backends::RemoteWriteRelay;

// ---------------------------------------------------------------- Prometheus

/// A real Prometheus with the remote-write receiver on, killed on drop.
pub use mop_test_support::prometheus::Prometheus;

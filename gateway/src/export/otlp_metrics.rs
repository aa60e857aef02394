//! Metrics to Mimir's native OTLP endpoint (`POST /otlp/v1/metrics`, OTLP/HTTP
//! protobuf, tenant in `X-Scope-OrgID`); Mimir then applies the OTLP→Prometheus
//! translation itself, including delta and exponential histograms.

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::metrics::v1::ResourceMetrics;
use prost::Message;

use super::{Encoded, Encoder};
use crate::signal::count_items;

#[derive(Debug, Default)]
pub struct OtlpMetricsEncoder;

impl Encoder<ResourceMetrics> for OtlpMetricsEncoder {
    fn encode(&self, _tenant: &str, items: Vec<ResourceMetrics>) -> Encoded {
        let n = count_items(&items);
        Encoded {
            body: ExportMetricsServiceRequest {
                resource_metrics: items,
            }
            .encode_to_vec()
            .into(),
            content_type: "application/x-protobuf".into(),
            items: n,
            ..Default::default()
        }
    }
}

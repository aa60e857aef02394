//! Traces to Tempo over OTLP/HTTP protobuf (`POST /v1/traces` on Tempo's
//! distributor OTLP receiver; the tenant in `X-Scope-OrgID`).

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;
use prost::Message;

use super::{Encoded, Encoder};
use crate::signal::count_items;

#[derive(Debug, Default)]
pub struct TempoEncoder;

impl Encoder<ResourceSpans> for TempoEncoder {
    fn encode(&self, _tenant: &str, items: Vec<ResourceSpans>) -> Encoded {
        let n = count_items(&items);
        let body = ExportTraceServiceRequest {
            resource_spans: items,
        }
        .encode_to_vec();
        Encoded {
            body: body.into(),
            content_type: "application/x-protobuf".into(),
            items: n,
            ..Default::default()
        }
    }
}

//! The three OTLP signals and what the gateway needs to know about their
//! resource-level containers (`ResourceSpans`, `ResourceMetrics`, `ResourceLogs`).

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::ResourceLogs;
use opentelemetry_proto::tonic::metrics::v1::{ResourceMetrics, metric};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;
use prometheus_client::encoding::EncodeLabelValue;

/// Resource attribute that decides the tenant.
pub const NAMESPACE_ATTR: &str = "k8s.namespace.name";

/// Resource attribute naming the pod an agent reports for.
pub const POD_ATTR: &str = "k8s.pod.name";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
pub enum Signal {
    Traces,
    Metrics,
    Logs,
}

impl Signal {
    pub fn as_str(self) -> &'static str {
        match self {
            Signal::Traces => "traces",
            Signal::Metrics => "metrics",
            Signal::Logs => "logs",
        }
    }
}

impl std::fmt::Display for Signal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A resource-level container of one signal.
pub trait ResourceItems: prost::Message + Clone + Default + Send + Sync + 'static {
    const SIGNAL: Signal;
    fn resource(&self) -> Option<&Resource>;
    fn resource_mut(&mut self) -> &mut Option<Resource>;
    /// Spans, data points or log records inside.
    fn item_count(&self) -> usize;
}

impl ResourceItems for ResourceSpans {
    fn resource_mut(&mut self) -> &mut Option<Resource> {
        &mut self.resource
    }
    const SIGNAL: Signal = Signal::Traces;
    fn resource(&self) -> Option<&Resource> {
        self.resource.as_ref()
    }
    fn item_count(&self) -> usize {
        self.scope_spans.iter().map(|s| s.spans.len()).sum()
    }
}

impl ResourceItems for ResourceMetrics {
    fn resource_mut(&mut self) -> &mut Option<Resource> {
        &mut self.resource
    }
    const SIGNAL: Signal = Signal::Metrics;
    fn resource(&self) -> Option<&Resource> {
        self.resource.as_ref()
    }
    fn item_count(&self) -> usize {
        self.scope_metrics
            .iter()
            .flat_map(|s| &s.metrics)
            .map(|m| match &m.data {
                Some(metric::Data::Gauge(g)) => g.data_points.len(),
                Some(metric::Data::Sum(s)) => s.data_points.len(),
                Some(metric::Data::Histogram(h)) => h.data_points.len(),
                Some(metric::Data::ExponentialHistogram(h)) => h.data_points.len(),
                Some(metric::Data::Summary(s)) => s.data_points.len(),
                None => 0,
            })
            .sum()
    }
}

impl ResourceItems for ResourceLogs {
    fn resource_mut(&mut self) -> &mut Option<Resource> {
        &mut self.resource
    }
    const SIGNAL: Signal = Signal::Logs;
    fn resource(&self) -> Option<&Resource> {
        self.resource.as_ref()
    }
    fn item_count(&self) -> usize {
        self.scope_logs.iter().map(|s| s.log_records.len()).sum()
    }
}

/// Items in a list of resource containers.
pub fn count_items<R: ResourceItems>(items: &[R]) -> usize {
    items.iter().map(ResourceItems::item_count).sum()
}

/// The string value of an attribute, if present and a string.
pub fn string_attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a str> {
    attrs.iter().find(|kv| kv.key == key).and_then(|kv| {
        match kv.value.as_ref()?.value.as_ref()? {
            any_value::Value::StringValue(s) => Some(s.as_str()),
            _ => None,
        }
    })
}

/// The namespace a resource says it comes from.
pub fn namespace_of<R: ResourceItems>(r: &R) -> Option<&str> {
    r.resource()
        .and_then(|res| string_attr(&res.attributes, NAMESPACE_ATTR))
}

/// The pod a resource says it comes from.
pub fn pod_of<R: ResourceItems>(r: &R) -> Option<&str> {
    r.resource()
        .and_then(|res| string_attr(&res.attributes, POD_ATTR))
}

/// Sets `k8s.namespace.name` to the namespace the gateway verified, replacing
/// whatever the sender wrote.
pub fn set_namespace<R: ResourceItems>(r: &mut R, ns: &str) {
    let value = Some(AnyValue {
        value: Some(any_value::Value::StringValue(ns.to_string())),
    });
    let attrs = &mut r
        .resource_mut()
        .get_or_insert_with(Resource::default)
        .attributes;
    match attrs.iter_mut().find(|kv| kv.key == NAMESPACE_ATTR) {
        Some(kv) => kv.value = value,
        None => attrs.push(KeyValue {
            key: NAMESPACE_ATTR.into(),
            value,
        }),
    }
}

/// Renders any OTLP value as the string a label or a policy compares against.
pub fn any_value_to_string(v: &AnyValue) -> String {
    match &v.value {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(any_value::Value::BytesValue(b)) => b.iter().map(|x| format!("{x:02x}")).collect(),
        Some(any_value::Value::ArrayValue(a)) => {
            let parts: Vec<String> = a.values.iter().map(any_value_to_string).collect();
            format!("[{}]", parts.join(","))
        }
        Some(any_value::Value::KvlistValue(kv)) => {
            let parts: Vec<String> = kv
                .values
                .iter()
                .map(|kv| {
                    let v = kv
                        .value
                        .as_ref()
                        .map(any_value_to_string)
                        .unwrap_or_default();
                    format!("{}={}", kv.key, v)
                })
                .collect();
            format!("{{{}}}", parts.join(","))
        }
        None => String::new(),
    }
}

//! OTLP/gRPC receiver: the three collector services on one tonic server.

use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tonic::codec::CompressionEncoding;
use tonic::{Request, Response, Status};

use super::{Error, HeaderText, Ingest, OtlpRequest};

#[derive(Debug, Clone)]
pub struct GrpcReceiver {
    pub ingest: Ingest,
}

fn to_status(e: Error, retry_after_s: u64) -> Status {
    match &e {
        Error::Unauthenticated(_) => Status::unauthenticated(e.to_string()),
        Error::Forbidden(_) => Status::permission_denied(e.to_string()),
        Error::Rejected(_) => Status::invalid_argument(e.to_string()),
        Error::QueueFull(_) => {
            // OTLP clients retry RESOURCE_EXHAUSTED only when the status carries a
            // RetryInfo (OTLP spec, "Failures"); without it they would drop the data.
            let details = retry_info_details(
                tonic::Code::ResourceExhausted,
                &e.to_string(),
                retry_after_s,
            );
            Status::with_details(
                tonic::Code::ResourceExhausted,
                e.to_string(),
                details.into(),
            )
        }
        Error::ShuttingDown => Status::unavailable(e.to_string()),
        Error::NotConfigured(_) => Status::unimplemented(e.to_string()),
        Error::Unavailable(_) => Status::unavailable(e.to_string()),
    }
}

/// `google.rpc.Status`, carried in `grpc-status-details-bin`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RpcStatus {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
    #[prost(message, repeated, tag = "3")]
    pub details: Vec<Any>,
}

/// `google.protobuf.Any`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Any {
    #[prost(string, tag = "1")]
    pub type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
}

/// `google.rpc.RetryInfo`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RetryInfo {
    #[prost(message, optional, tag = "1")]
    pub retry_delay: Option<ProtoDuration>,
}

/// `google.protobuf.Duration`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ProtoDuration {
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

pub const RETRY_INFO_TYPE: &str = "type.googleapis.com/google.rpc.RetryInfo";

fn retry_info_details(code: tonic::Code, message: &str, retry_after_s: u64) -> Vec<u8> {
    use prost::Message;
    let info = RetryInfo {
        retry_delay: Some(ProtoDuration {
            seconds: retry_after_s as i64,
            nanos: 0,
        }),
    };
    RpcStatus {
        code: code as i32,
        message: message.to_string(),
        details: vec![Any {
            type_url: RETRY_INFO_TYPE.into(),
            value: info.encode_to_vec(),
        }],
    }
    .encode_to_vec()
}

impl GrpcReceiver {
    async fn handle<Req: OtlpRequest>(
        &self,
        request: Request<Req>,
    ) -> Result<Response<Req::Response>, Status> {
        let peer = request.remote_addr().map(|a| a.ip());
        let md = request.metadata();
        let text = |name| match md.get(name).map(|v| v.to_str()) {
            None => Ok(None),
            Some(Ok(s)) => Ok(Some(s.to_string())),
            Some(Err(e)) => Err(e),
        };
        let auth = text("authorization");
        let org = text("x-scope-orgid");
        // tonic hands over the decoded message only; its encoded size is what
        // the byte budget counts (the HTTP receiver has the body's length).
        let request = request.into_inner();
        let bytes = request.encoded_len();
        let items = request.into_items();
        fn header<E>(h: &Result<Option<String>, E>) -> HeaderText<'_> {
            match h {
                Ok(None) => HeaderText::Absent,
                Ok(Some(s)) => HeaderText::Text(s.as_str()),
                Err(_) => HeaderText::NotAscii,
            }
        }
        self.ingest
            .ingest_headers(
                Req::queue(&self.ingest),
                header(&auth),
                header(&org),
                peer,
                items,
                bytes,
            )
            .await
            .map(|a| Response::new(Req::response(&a)))
            .map_err(|e| to_status(e, self.ingest.retry_after_s))
    }

    /// The tonic router with all three services, gzip accepted.
    pub fn router(self, max_bytes: usize) -> tonic::service::Routes {
        let traces = TraceServiceServer::new(self.clone())
            .accept_compressed(CompressionEncoding::Gzip)
            .max_decoding_message_size(max_bytes);
        let metrics = MetricsServiceServer::new(self.clone())
            .accept_compressed(CompressionEncoding::Gzip)
            .max_decoding_message_size(max_bytes);
        let logs = LogsServiceServer::new(self)
            .accept_compressed(CompressionEncoding::Gzip)
            .max_decoding_message_size(max_bytes);
        tonic::service::Routes::new(traces)
            .add_service(metrics)
            .add_service(logs)
    }
}

#[tonic::async_trait]
impl TraceService for GrpcReceiver {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        self.handle(request).await
    }
}

#[tonic::async_trait]
impl MetricsService for GrpcReceiver {
    async fn export(
        &self,
        request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        self.handle(request).await
    }
}

#[tonic::async_trait]
impl LogsService for GrpcReceiver {
    async fn export(
        &self,
        request: Request<ExportLogsServiceRequest>,
    ) -> Result<Response<ExportLogsServiceResponse>, Status> {
        self.handle(request).await
    }
}

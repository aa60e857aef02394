//! OTLP/gRPC receiver: the three collector services on one tonic server.

use bytes::{Buf, Bytes};
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
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
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
        // tonic hands over the decoded message only; its encoded size is what
        // the byte budget counts (the HTTP receiver has the body's length).
        let bytes = request.get_ref().encoded_len();
        let (metadata, extensions, request) = request.into_parts();
        let items = Request::from_parts(metadata, extensions, request.into_items());
        self.handle_items::<Req>(items, bytes).await
    }

    /// `bytes`: the request's encoded size, charged to the byte budget.
    async fn handle_items<Req: OtlpRequest>(
        &self,
        request: Request<Vec<Req::Item>>,
        bytes: usize,
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
        let items = request.into_inner();
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

    /// The trace service's handler: the request arrives as its (decompressed)
    /// bytes and is decoded here, with spans kept encoded while the ring
    /// forwards ([`crate::ring::wire`]). A body that does not decode is refused
    /// as tonic's prost codec refuses it (INTERNAL, prost's message).
    async fn export_traces(
        &self,
        request: Request<Bytes>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let (metadata, extensions, body) = request.into_parts();
        let items =
            <ExportTraceServiceRequest as OtlpRequest>::decode_items(body.clone(), &self.ingest)
                .map_err(|e| Status::internal(e.to_string()))?;
        let decoded = Request::from_parts(metadata, extensions, items);
        self.handle_items::<ExportTraceServiceRequest>(decoded, body.len())
            .await
    }

    /// The tonic router with all three services, gzip accepted.
    pub fn router(self, max_bytes: usize) -> tonic::service::Routes {
        let traces = TraceBytesServer {
            receiver: std::sync::Arc::new(self.clone()),
            max_bytes,
        };
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

const TRACE_SERVICE: &str = "opentelemetry.proto.collector.trace.v1.TraceService";
const TRACE_EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// OTLP's `TraceService` as `opentelemetry_proto`'s generated
/// `TraceServiceServer` serves it (same path, gzip, size limit, statuses), but
/// handing the handler the request's bytes instead of the decoded message.
#[derive(Debug, Clone)]
struct TraceBytesServer {
    /// Shared, not cloned per request (as the generated server holds it).
    receiver: std::sync::Arc<GrpcReceiver>,
    max_bytes: usize,
}

impl tonic::server::NamedService for TraceBytesServer {
    const NAME: &'static str = TRACE_SERVICE;
}

impl<B> tonic::codegen::Service<tonic::codegen::http::Request<B>> for TraceBytesServer
where
    B: tonic::codegen::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
{
    type Response = tonic::codegen::http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = tonic::codegen::BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: tonic::codegen::http::Request<B>) -> Self::Future {
        if req.uri().path() != TRACE_EXPORT_PATH {
            // As the generated server answers an unknown method.
            return Box::pin(async move {
                let mut response =
                    tonic::codegen::http::Response::new(tonic::body::Body::default());
                let headers = response.headers_mut();
                headers.insert(
                    Status::GRPC_STATUS,
                    (tonic::Code::Unimplemented as i32).into(),
                );
                headers.insert(
                    tonic::codegen::http::header::CONTENT_TYPE,
                    tonic::metadata::GRPC_CONTENT_TYPE,
                );
                Ok(response)
            });
        }
        let svc = ExportBytes(self.receiver.clone());
        let max = self.max_bytes;
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(RequestBytesCodec)
                .accept_compressed(CompressionEncoding::Gzip)
                .max_decoding_message_size(max);
            Ok(grpc.unary(svc, req).await)
        })
    }
}

struct ExportBytes(std::sync::Arc<GrpcReceiver>);

impl tonic::server::UnaryService<Bytes> for ExportBytes {
    type Response = ExportTraceServiceResponse;
    type Future = tonic::codegen::BoxFuture<Response<Self::Response>, Status>;
    fn call(&mut self, request: Request<Bytes>) -> Self::Future {
        let receiver = self.0.clone();
        Box::pin(async move { receiver.export_traces(request).await })
    }
}

/// Server codec: the request message as bytes (zero-copy out of tonic's
/// buffer), the response encoded by prost.
#[derive(Debug, Clone, Copy, Default)]
struct RequestBytesCodec;

struct ResponseEncoder;
struct BytesDecoder;

impl Codec for RequestBytesCodec {
    type Encode = ExportTraceServiceResponse;
    type Decode = Bytes;
    type Encoder = ResponseEncoder;
    type Decoder = BytesDecoder;
    fn encoder(&mut self) -> ResponseEncoder {
        ResponseEncoder
    }
    fn decoder(&mut self) -> BytesDecoder {
        BytesDecoder
    }
}

impl Encoder for ResponseEncoder {
    type Item = ExportTraceServiceResponse;
    type Error = Status;
    fn encode(
        &mut self,
        item: ExportTraceServiceResponse,
        dst: &mut EncodeBuf<'_>,
    ) -> Result<(), Status> {
        use prost::Message;
        item.encode(dst)
            .map_err(|e| Status::internal(e.to_string()))
    }
}

impl Decoder for BytesDecoder {
    type Item = Bytes;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
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

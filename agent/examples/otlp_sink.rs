//! A minimal OTLP/gRPC endpoint for the benchmark script: accepts the trace
//! and metrics Export calls, counts requests and bytes, prints the counts on
//! SIGTERM.
//!
//! It does not decode the requests: on the benchmark's two cores a decoding
//! receiver cost as much CPU per request as the agent itself, and that cost
//! belongs to the gateway (usually on another node), not to the agent. The
//! agent's own tests check what it sends against a decoding endpoint.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark helper, not product code
use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    task::{Context, Poll},
};

use bytes::{Buf as _, BufMut as _, Bytes};
use tonic::{
    Status,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    server::{NamedService, UnaryService},
};

/// Counts the bytes of a request instead of decoding it; answers with an
/// empty message (a valid `Export*ServiceResponse`).
#[derive(Debug, Clone, Copy, Default)]
struct Raw;

impl Codec for Raw {
    type Encode = Bytes;
    type Decode = usize;
    type Encoder = Raw;
    type Decoder = Raw;
    fn encoder(&mut self) -> Raw {
        Raw
    }
    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl Encoder for Raw {
    type Item = Bytes;
    type Error = Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = usize;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<usize>, Status> {
        let n = src.remaining();
        src.advance(n);
        Ok(Some(n))
    }
}

#[derive(Debug, Default)]
struct Counts {
    requests: AtomicU64,
    bytes: AtomicU64,
}

#[derive(Clone)]
struct Count(Arc<Counts>);

impl UnaryService<usize> for Count {
    type Response = Bytes;
    type Future = std::future::Ready<Result<tonic::Response<Bytes>, Status>>;
    fn call(&mut self, req: tonic::Request<usize>) -> Self::Future {
        self.0.requests.fetch_add(1, Relaxed);
        self.0.bytes.fetch_add(req.into_inner() as u64, Relaxed);
        std::future::ready(Ok(tonic::Response::new(Bytes::new())))
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

macro_rules! sink_service {
    ($ty:ident, $name:literal) => {
        #[derive(Clone)]
        struct $ty(Arc<Counts>);

        impl NamedService for $ty {
            const NAME: &'static str = $name;
        }

        impl tower_service::Service<http::Request<tonic::body::Body>> for $ty {
            type Response = http::Response<tonic::body::Body>;
            type Error = Infallible;
            type Future = BoxFuture<Result<Self::Response, Infallible>>;
            fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
                Poll::Ready(Ok(()))
            }
            fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
                let count = Count(self.0.clone());
                Box::pin(async move {
                    let mut grpc = tonic::server::Grpc::new(Raw);
                    Ok(grpc.unary(count, req).await)
                })
            }
        }
    };
}

sink_service!(
    Traces,
    "opentelemetry.proto.collector.trace.v1.TraceService"
);
sink_service!(
    Metrics,
    "opentelemetry.proto.collector.metrics.v1.MetricsService"
);

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:4317".into())
        .parse()
        .unwrap();
    let traces = Arc::new(Counts::default());
    let mut term =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).unwrap();
    tonic::transport::Server::builder()
        .add_service(Traces(traces.clone()))
        .add_service(Metrics(Arc::default()))
        .serve_with_shutdown(addr, async move {
            let _ = term.recv().await;
        })
        .await
        .unwrap();
    println!(
        "trace requests {} bytes {}",
        traces.requests.load(Relaxed),
        traces.bytes.load(Relaxed)
    );
}

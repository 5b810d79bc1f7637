//! gRPC: a tonic server and client instrumented with the same layers as HTTP.
//!
//! ```sh
//! cargo run --example grpc &                                          # on 127.0.0.1:50051
//! LISTEN_ADDR=127.0.0.1:50052 GRPC_UPSTREAM=http://127.0.0.1:50051 \
//!     cargo run --example grpc &                                      # calls the first one
//! grpcurl -plaintext -import-path examples/proto -proto greeter.proto \
//!     -H 'traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01' \
//!     -d '{"name": "Ada"}' 127.0.0.1:50052 tracewire.demo.Greeter/SayHello
//! ```
//!
//! Serves `tracewire.demo.Greeter/SayHello` (`proto/greeter.proto`) on `LISTEN_ADDR` (default
//! `127.0.0.1:50051`): it answers `Hello, {name}!`, and `INTERNAL` for the name `fail`. With
//! `GRPC_UPSTREAM` (a URI such as `http://127.0.0.1:50051`) it first asks that instance
//! through the client layer and answers with its greeting, or its error status.
//!
//! The server layer records a SERVER span `tracewire.demo.Greeter/SayHello` per call with the
//! `rpc.*` attributes and the gRPC status (`docs/grpc.md`), parented on the caller's
//! `traceparent` metadata; the client layer records the CLIENT span of the upstream call and
//! puts its context and the request id in the outgoing metadata, so a chain of instances is one
//! trace. Set `OTEL_EXPORTER_OTLP_ENDPOINT` to export spans and metrics over OTLP. Stops
//! gracefully on SIGINT or SIGTERM, flushing telemetry.

use http::Uri;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Endpoint, Server};
use tonic::{Request, Response, Status};
use tracewire::http::client::{Client, ClientLayer};
use tracewire::http::{RequestId, ServerLayer};
use tracewire_examples::greeter::greeter_client::GreeterClient;
use tracewire_examples::greeter::greeter_server::{Greeter, GreeterServer};
use tracewire_examples::greeter::{HelloReply, HelloRequest};

/// The Greeter service; with an upstream, a client of another instance.
struct Hello {
    upstream: Option<GreeterClient<Client<Channel>>>,
}

#[tonic::async_trait]
impl Greeter for Hello {
    async fn say_hello(
        &self,
        request: Request<HelloRequest>,
    ) -> Result<Response<HelloReply>, Status> {
        let name = request.into_inner().name;
        let request_id = RequestId::current();
        tracing::info!(
            name,
            request_id = request_id.as_ref().map(RequestId::as_str),
            "saying hello"
        );
        if let Some(upstream) = &self.upstream {
            // The CLIENT span is a child of this call's SERVER span: the context is current.
            let reply = upstream
                .clone()
                .say_hello(HelloRequest { name: name.clone() })
                .await
                .inspect_err(|status| {
                    tracing::warn!(code = ?status.code(), "upstream failed");
                })?;
            return Ok(Response::new(reply.into_inner()));
        }
        if name == "fail" {
            tracing::warn!("asked to fail");
            return Err(Status::internal("the name \"fail\" asks for a failure"));
        }
        Ok(Response::new(HelloReply {
            message: format!("Hello, {name}!"),
        }))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let telemetry = match tracewire::builder()
        .service_version(env!("CARGO_PKG_VERSION"))
        .init()
    {
        Ok(telemetry) => telemetry,
        Err(error) => {
            eprintln!("grpc: cannot set up telemetry: {error}");
            std::process::exit(2);
        }
    };

    let upstream = match std::env::var("GRPC_UPSTREAM") {
        Ok(uri) if !uri.is_empty() => {
            let origin: Uri = uri.parse()?;
            // Connects on first use; the layer records a CLIENT span per call.
            let channel = Endpoint::from(origin.clone()).connect_lazy();
            let client = ClientLayer::new_for_grpc();
            Some(GreeterClient::with_origin(
                tower::Layer::layer(&client, channel),
                origin,
            ))
        }
        _ => None,
    };

    let addr = std::env::var("LISTEN_ADDR").unwrap_or_else(|_| "127.0.0.1:50051".to_owned());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    let local = listener.local_addr()?;
    tracing::info!(
        addr = %local,
        upstream = std::env::var("GRPC_UPSTREAM").ok(),
        "grpc listening"
    );

    Server::builder()
        .layer(ServerLayer::new_for_grpc())
        .add_service(GreeterServer::new(Hello { upstream }))
        .serve_with_incoming_shutdown(TcpIncoming::from(listener), tracewire::shutdown_signal())
        .await?;

    tracing::info!("shutting down, flushing telemetry");
    if let Err(error) = telemetry.shutdown() {
        tracing::warn!(%error, "telemetry could not be flushed");
    }
    Ok(())
}

//! A tonic (gRPC) call through the client layer propagates the trace: a generated-style
//! `tonic::client::Grpc` over `ClientLayer` over a tonic `Channel`, against an HTTP/2 server
//! with `ServerLayer` that answers the gRPC method by hand and records the request headers.

mod client_support;

use std::convert::Infallible;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Response};
use axum::routing::post;
use bytes::Bytes;
use client_support::*;
use http::uri::PathAndQuery;
use http_body::Frame;
use http_body_util::StreamBody;
use opentelemetry::context::FutureExt;
use opentelemetry::trace::SpanKind;
use tonic::transport::Endpoint;
use tracewire_http::ServerLayer;
use tracewire_http::client::ClientLayer;
use tracewire_test::{Capture, SpanDataExt};

/// Answers `/demo.Users/Get` with one empty message and `grpc-status: 0` trailers.
async fn get_user(State(script): State<Script>, headers: HeaderMap) -> Response<Body> {
    script.seen.lock().unwrap().push(headers);
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    let frames = futures_util::stream::iter([
        // Uncompressed flag, zero length: an empty protobuf message.
        Ok::<_, Infallible>(Frame::data(Bytes::from_static(&[0, 0, 0, 0, 0]))),
        Ok(Frame::trailers(trailers)),
    ]);
    Response::builder()
        .header("content-type", "application/grpc")
        .body(Body::new(StreamBody::new(frames)))
        .unwrap()
}

#[tokio::test]
async fn a_grpc_call_through_the_layer_propagates() {
    let capture = Capture::install();
    let script = Script::default();
    let addr = serve(
        Router::new()
            .route("/demo.Users/Get", post(get_user))
            .with_state(script.clone())
            .layer(ServerLayer::new()),
    )
    .await;
    let origin: http::Uri = format!("http://127.0.0.1:{}", addr.port()).parse().unwrap();
    let channel = Endpoint::from(origin.clone()).connect().await.unwrap();
    let layered = tower::Layer::layer(&ClientLayer::new(), channel);
    let mut grpc = tonic::client::Grpc::with_origin(layered, origin);

    let parent = parent_context();
    let call = async {
        grpc.ready().await.unwrap();
        grpc.unary(
            tonic::Request::new(()),
            PathAndQuery::from_static("/demo.Users/Get"),
            tonic_prost::ProstCodec::<(), ()>::default(),
        )
        .await
    };
    let response = call.with_context(parent.clone()).await;
    assert!(response.is_ok(), "{response:?}");

    // Both sides see `content-type: application/grpc` and record a gRPC call.
    let spans = capture
        .wait_for_spans("demo.Users/Get", 2, Duration::from_secs(5))
        .await;
    assert_eq!(spans.len(), 2, "{spans:#?}");
    let client: Vec<_> = spans
        .iter()
        .filter(|s| s.kind() == SpanKind::Client)
        .collect();
    assert_eq!(client.len(), 1);
    let client = client[0];
    assert_eq!(
        client.attr_str("rpc.grpc.status_code").as_deref(),
        Some("0")
    );
    assert_eq!(client.parent_id(), span_id_of(&parent));
    assert_eq!(
        client.attr_str("url.full"),
        Some(format!("http://127.0.0.1:{}/demo.Users/Get", addr.port()))
    );
    assert_eq!(
        client.attr_str("network.protocol.version").as_deref(),
        Some("2")
    );
    assert_eq!(script.traceparents(), [traceparent_of(client)]);

    let server: Vec<_> = spans
        .iter()
        .filter(|s| s.kind() == SpanKind::Server)
        .collect();
    assert_eq!(server.len(), 1);
    assert_eq!(server[0].trace_id(), client.trace_id());
    assert_eq!(server[0].parent_id(), client.span_id());
    assert_eq!(server[0].attr_str("rpc.method").as_deref(), Some("Get"));
}

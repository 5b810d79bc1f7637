//! gRPC through the server and client layers: real tonic servers and clients on loopback
//! sockets. Calls are judged by `grpc-status` (from trailers, or from the headers of a
//! trailers-only response), spans carry the `rpc.*` conventions, a streaming call keeps one
//! span until its trailers, and a chain of services stays one trace.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::Stream;
use http::Uri;
use http::uri::PathAndQuery;
use http_body_util::{BodyExt, Full};
use opentelemetry::context::FutureExt;
use opentelemetry::trace::{SpanKind, Status as SpanStatus, TraceContextExt, Tracer};
use opentelemetry_sdk::trace::SpanData;
use prost::Message as _;
use tonic::server::NamedService;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Endpoint, Server};
use tonic::{Code, Status};
use tracewire_http::client::Client;
use tracewire_http::{ClientLayer, ServerLayer};
use tracewire_test::{Capture, SpanDataExt};

/// `message Msg { string text = 1; }`
#[derive(Clone, PartialEq, prost::Message)]
struct Msg {
    #[prost(string, tag = "1")]
    text: String,
}

fn msg(text: &str) -> Msg {
    Msg {
        text: text.to_owned(),
    }
}

type Codec = tonic_prost::ProstCodec<Msg, Msg>;
type GrpcClient = tonic::client::Grpc<Client<Channel>>;
type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send>>;
type MsgStream = Pin<Box<dyn Stream<Item = Result<Msg, Status>> + Send>>;

/// `test.Echo`:
/// - `Unary`: echoes; `fail:N` answers status N (a trailers-only response);
/// - `Stream`: `n:K` sends K messages 40 ms apart then OK; `n:K:fail` then INTERNAL in the
///   trailers;
/// - `Relay`: asks the upstream's `Unary` through the client layer and answers with its reply.
#[derive(Clone)]
struct Echo {
    upstream: Option<GrpcClient>,
}

impl NamedService for Echo {
    const NAME: &'static str = "test.Echo";
}

async fn unary(request: tonic::Request<Msg>) -> Result<tonic::Response<Msg>, Status> {
    let text = request.into_inner().text;
    if let Some(code) = text.strip_prefix("fail:") {
        let code = Code::from_i32(code.parse().unwrap());
        return Err(Status::new(code, "failing on purpose"));
    }
    Ok(tonic::Response::new(msg(&text)))
}

async fn stream(request: tonic::Request<Msg>) -> Result<tonic::Response<MsgStream>, Status> {
    let text = request.into_inner().text;
    let mut parts = text.split(':').skip(1);
    let count: u32 = parts.next().unwrap().parse().unwrap();
    let fail = parts.next() == Some("fail");
    let messages = futures_util::stream::unfold(0u32, move |sent| async move {
        if sent < count {
            tokio::time::sleep(Duration::from_millis(40)).await;
            Some((Ok(msg(&format!("part {sent}"))), sent + 1))
        } else if fail && sent == count {
            Some((Err(Status::internal("stream broke")), sent + 1))
        } else {
            None
        }
    });
    Ok(tonic::Response::new(Box::pin(messages) as MsgStream))
}

impl tower::Service<http::Request<tonic::body::Body>> for Echo {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut TaskContext<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let upstream = self.upstream.clone();
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(Codec::default());
            Ok(match req.uri().path() {
                "/test.Echo/Unary" => grpc.unary(tower::service_fn(unary), req).await,
                "/test.Echo/Stream" => grpc.server_streaming(tower::service_fn(stream), req).await,
                "/test.Echo/Relay" => {
                    let relay = move |request: tonic::Request<Msg>| {
                        let mut upstream = upstream.clone().expect("an upstream");
                        async move {
                            upstream
                                .ready()
                                .await
                                .map_err(|e| Status::unavailable(e.to_string()))?;
                            upstream
                                .unary(
                                    tonic::Request::new(request.into_inner()),
                                    PathAndQuery::from_static("/test.Echo/Unary"),
                                    Codec::default(),
                                )
                                .await
                        }
                    };
                    grpc.unary(tower::service_fn(relay), req).await
                }
                _ => Status::unimplemented("no such method").into_http(),
            })
        })
    }
}

/// Serves `test.Echo` behind `layer` on an ephemeral loopback port.
async fn serve(layer: ServerLayer, upstream: Option<GrpcClient>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = Server::builder()
        .layer(layer)
        .add_service(Echo { upstream });
    tokio::spawn(router.serve_with_incoming(TcpIncoming::from(listener)));
    addr
}

/// A tonic client of `addr` through `layer`.
async fn connect(addr: SocketAddr, layer: ClientLayer) -> GrpcClient {
    let origin: Uri = format!("http://{addr}").parse().unwrap();
    let channel = Endpoint::from(origin.clone()).connect().await.unwrap();
    tonic::client::Grpc::with_origin(tower::Layer::layer(&layer, channel), origin)
}

async fn call_unary(
    client: &mut GrpcClient,
    path: &'static str,
    text: &str,
) -> Result<Msg, Status> {
    client.ready().await.unwrap();
    client
        .unary(
            tonic::Request::new(msg(text)),
            PathAndQuery::from_static(path),
            Codec::default(),
        )
        .await
        .map(tonic::Response::into_inner)
}

/// Reads a server stream to its end: the messages, then the final status.
async fn call_stream(client: &mut GrpcClient, text: &str) -> (Vec<String>, Result<(), Status>) {
    client.ready().await.unwrap();
    let response = client
        .server_streaming(
            tonic::Request::new(msg(text)),
            PathAndQuery::from_static("/test.Echo/Stream"),
            Codec::default(),
        )
        .await
        .unwrap();
    let mut stream = response.into_inner();
    let mut messages = Vec::new();
    loop {
        match stream.message().await {
            Ok(Some(m)) => messages.push(m.text),
            Ok(None) => return (messages, Ok(())),
            Err(status) => return (messages, Err(status)),
        }
    }
}

fn of_kind(spans: &[SpanData], kind: &SpanKind) -> Vec<SpanData> {
    spans
        .iter()
        .filter(|s| s.kind() == *kind)
        .cloned()
        .collect()
}

async fn one(capture: &Capture, name: &str, kind: SpanKind) -> SpanData {
    let spans = capture
        .wait_for_spans(name, 2, Duration::from_millis(500))
        .await;
    let spans = of_kind(&spans, &kind);
    assert_eq!(spans.len(), 1, "one {kind:?} span {name}: {spans:#?}");
    spans.into_iter().next().unwrap()
}

fn code_of(span: &SpanData) -> Option<String> {
    span.attr_str("rpc.grpc.status_code")
}

#[tokio::test]
async fn unary_calls_are_rpc_spans_judged_by_grpc_status() {
    let capture = Capture::install();
    let addr = serve(ServerLayer::new(), None).await;
    let mut client = connect(addr, ClientLayer::new()).await;

    let parent = opentelemetry::global::tracer("test").start("parent");
    let parent = opentelemetry::Context::current_with_span(parent);
    let answer = call_unary(&mut client, "/test.Echo/Unary", "hi")
        .with_context(parent.clone())
        .await
        .unwrap();
    assert_eq!(answer.text, "hi");

    let server = one(&capture, "test.Echo/Unary", SpanKind::Server).await;
    let client_span = one(&capture, "test.Echo/Unary", SpanKind::Client).await;
    assert_eq!(
        client_span.parent_id(),
        parent.span().span_context().span_id().to_string()
    );
    assert_eq!(server.trace_id(), client_span.trace_id());
    assert_eq!(server.parent_id(), client_span.span_id());
    for span in [&server, &client_span] {
        assert_eq!(span.attr_str("rpc.system").as_deref(), Some("grpc"));
        assert_eq!(span.attr_str("rpc.system.name").as_deref(), Some("grpc"));
        assert_eq!(span.attr_str("rpc.service").as_deref(), Some("test.Echo"));
        assert_eq!(span.attr_str("rpc.method").as_deref(), Some("Unary"));
        assert_eq!(code_of(span).as_deref(), Some("0"));
        assert_eq!(
            span.attr_str("rpc.response.status_code").as_deref(),
            Some("OK")
        );
        assert_eq!(
            span.attr_str("server.address").as_deref(),
            Some("127.0.0.1")
        );
        assert_eq!(span.attr_str("server.port"), Some(addr.port().to_string()));
        assert_eq!(span.attr_str("error.type"), None);
        assert_eq!(span.status, SpanStatus::Unset);
    }
    // The server span carries the request id it answered with.
    assert_eq!(
        server.attr_str("http.request.id").map(|id| id.len()),
        Some(32)
    );
}

#[tokio::test]
async fn server_and_client_judge_status_codes_as_the_conventions_say() {
    let capture = Capture::install();
    let addr = serve(ServerLayer::new_for_grpc(), None).await;
    let mut client = connect(addr, ClientLayer::new_for_grpc()).await;

    // (code, error on the server side)
    let cases = [
        (Code::InvalidArgument, false),
        (Code::NotFound, false),
        (Code::PermissionDenied, false),
        (Code::Unknown, true),
        (Code::DeadlineExceeded, true),
        (Code::Internal, true),
        (Code::Unavailable, true),
        (Code::DataLoss, true),
    ];
    for (code, _) in cases {
        let status = call_unary(
            &mut client,
            "/test.Echo/Unary",
            &format!("fail:{}", code as i32),
        )
        .await
        .unwrap_err();
        assert_eq!(status.code(), code);
    }

    let spans = capture
        .wait_for_spans("test.Echo/Unary", 2 * cases.len(), Duration::from_secs(5))
        .await;
    assert_eq!(spans.len(), 2 * cases.len(), "{spans:#?}");
    for (code, server_error) in cases {
        let number = (code as i32).to_string();
        let name = status_name(code);
        let with_code: Vec<&SpanData> = spans
            .iter()
            .filter(|s| code_of(s).as_deref() == Some(number.as_str()))
            .collect();
        assert_eq!(
            with_code.len(),
            2,
            "client and server span with code {name}"
        );
        for span in with_code {
            assert_eq!(
                span.attr_str("rpc.response.status_code").as_deref(),
                Some(name)
            );
            let error = span.kind() == SpanKind::Client || server_error;
            assert_eq!(
                span.is_error(),
                error,
                "{:?} span, code {name}",
                span.kind()
            );
            assert_eq!(
                span.attr_str("error.type").as_deref(),
                error.then_some(name),
                "{:?} span, code {name}",
                span.kind()
            );
            if error {
                // The status message of the call is the span's status description.
                assert_eq!(span.status, SpanStatus::error("failing on purpose"));
            }
        }
    }

    // One rpc duration point per (side, code), with the same attributes; nothing in the HTTP
    // histograms.
    let server_points = capture.metric("rpc.server.call.duration");
    let internal = server_points
        .iter()
        .find(|p| p.attr("rpc.grpc.status_code") == Some("13"))
        .expect("server INTERNAL point");
    assert_eq!(internal.count_or_value(), 1.0);
    assert_eq!(internal.unit, "s");
    assert_eq!(internal.attr("rpc.method"), Some("Unary"));
    assert_eq!(internal.attr("rpc.service"), Some("test.Echo"));
    assert_eq!(internal.attr("rpc.system"), Some("grpc"));
    assert_eq!(internal.attr("rpc.response.status_code"), Some("INTERNAL"));
    assert_eq!(internal.attr("error.type"), Some("INTERNAL"));
    let not_found = server_points
        .iter()
        .find(|p| p.attr("rpc.grpc.status_code") == Some("5"))
        .expect("server NOT_FOUND point");
    assert_eq!(not_found.attr("error.type"), None);
    assert_eq!(server_points.len(), cases.len());

    let client_points = capture.metric("rpc.client.call.duration");
    assert_eq!(client_points.len(), cases.len());
    let not_found = client_points
        .iter()
        .find(|p| p.attr("rpc.grpc.status_code") == Some("5"))
        .expect("client NOT_FOUND point");
    assert_eq!(not_found.attr("error.type"), Some("NOT_FOUND"));
    assert_eq!(not_found.attr("server.address"), Some("127.0.0.1"));
    assert_eq!(
        not_found.attr("server.port"),
        Some(addr.port().to_string().as_str())
    );
    assert_eq!(not_found.attr("rpc.method"), Some("Unary"));
    assert!(capture.metric("http.server.request.duration").is_empty());
    assert!(capture.metric("http.client.request.duration").is_empty());
}

fn status_name(code: Code) -> &'static str {
    match code {
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::NotFound => "NOT_FOUND",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::Unknown => "UNKNOWN",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        other => panic!("no name for {other:?} in this test"),
    }
}

/// One gRPC message in its length-prefixed frame.
fn frame(message: &Msg) -> Bytes {
    let body = message.encode_to_vec();
    let mut framed = BytesMut::with_capacity(5 + body.len());
    framed.put_u8(0);
    framed.put_u32(body.len() as u32);
    framed.put_slice(&body);
    framed.freeze()
}

/// What a plain HTTP/2 client sees of a gRPC call: `grpc-status` in the response headers,
/// in the trailers.
async fn raw_call(addr: SocketAddr, path: &str, text: &str) -> (Option<String>, Option<String>) {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    let request = http::Request::post(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(frame(&msg(text))))
        .unwrap();
    let response = client.request(request).await.unwrap();
    let in_headers = response
        .headers()
        .get("grpc-status")
        .map(|v| v.to_str().unwrap().to_owned());
    let collected = response.into_body().collect().await.unwrap();
    let in_trailers = collected
        .trailers()
        .and_then(|t| t.get("grpc-status"))
        .map(|v| v.to_str().unwrap().to_owned());
    (in_headers, in_trailers)
}

#[tokio::test]
async fn status_from_trailers_only_responses_and_from_trailers() {
    let capture = Capture::install();
    let addr = serve(ServerLayer::new(), None).await;

    // What the server sends, seen by a plain HTTP/2 client: a unary failure is trailers-only,
    // a stream that breaks after its messages puts the status in the trailers.
    assert_eq!(
        raw_call(addr, "/test.Echo/Unary", "fail:13").await,
        (Some("13".to_owned()), None)
    );
    assert_eq!(
        raw_call(addr, "/test.Echo/Stream", "n:1:fail").await,
        (None, Some("13".to_owned()))
    );
    let servers = capture
        .wait_for_spans("test.Echo/Unary", 1, Duration::from_secs(5))
        .await;
    assert_eq!(code_of(&servers[0]).as_deref(), Some("13"));
    assert!(servers[0].is_error());
    let servers = capture
        .wait_for_spans("test.Echo/Stream", 1, Duration::from_secs(5))
        .await;
    assert_eq!(code_of(&servers[0]).as_deref(), Some("13"));
    assert_eq!(servers[0].status, SpanStatus::error("stream broke"));

    // The client layer reads both places too.
    let mut client = connect(addr, ClientLayer::new()).await;
    let status = call_unary(&mut client, "/test.Echo/Unary", "fail:13")
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Internal);
    let (messages, status) = call_stream(&mut client, "n:2:fail").await;
    assert_eq!(messages, ["part 0", "part 1"]);
    assert_eq!(status.unwrap_err().code(), Code::Internal);
    for name in ["test.Echo/Unary", "test.Echo/Stream"] {
        let spans = capture
            .wait_for_spans(name, 3, Duration::from_secs(5))
            .await;
        let clients = of_kind(&spans, &SpanKind::Client);
        assert_eq!(clients.len(), 1, "{name}: {spans:#?}");
        assert_eq!(code_of(&clients[0]).as_deref(), Some("13"), "{name}");
        assert_eq!(
            clients[0].attr_str("error.type").as_deref(),
            Some("INTERNAL")
        );
        assert!(clients[0].is_error());
    }
}

#[tokio::test]
async fn a_streaming_call_is_one_span_that_ends_with_the_trailers() {
    let capture = Capture::install();
    let addr = serve(ServerLayer::new(), None).await;
    let mut client = connect(addr, ClientLayer::new()).await;

    let (messages, status) = call_stream(&mut client, "n:4").await;
    assert_eq!(messages, ["part 0", "part 1", "part 2", "part 3"]);
    status.unwrap();

    let spans = capture
        .wait_for_spans("test.Echo/Stream", 2, Duration::from_secs(5))
        .await;
    assert_eq!(
        spans.len(),
        2,
        "one span per side for the whole stream: {spans:#?}"
    );
    for span in &spans {
        assert_eq!(code_of(span).as_deref(), Some("0"));
        assert!(!span.is_error());
        // Four messages 40 ms apart: the span lasts until the last one and the trailers.
        let lasted = span.end_time.duration_since(span.start_time).unwrap();
        assert!(
            lasted >= Duration::from_millis(160),
            "{:?} span ended after {lasted:?}, before the stream did",
            span.kind()
        );
    }
    let point = capture
        .metric("rpc.server.call.duration")
        .into_iter()
        .find(|p| p.attr("rpc.method") == Some("Stream"))
        .expect("server stream point");
    assert_eq!(point.count_or_value(), 1.0);
}

#[tokio::test]
async fn a_chain_of_services_is_one_trace_with_one_request_id() {
    let capture = Capture::install();
    let backend = serve(ServerLayer::new(), None).await;
    let relay_upstream = connect(backend, ClientLayer::new_for_grpc()).await;
    let front = serve(ServerLayer::new(), Some(relay_upstream)).await;

    // A plain client (no layer) with a traceparent and a request id in its metadata.
    let origin: Uri = format!("http://{front}").parse().unwrap();
    let channel = Endpoint::from(origin.clone()).connect().await.unwrap();
    let mut plain = tonic::client::Grpc::with_origin(channel, origin);
    plain.ready().await.unwrap();
    let mut request = tonic::Request::new(msg("through"));
    request.metadata_mut().insert(
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
            .parse()
            .unwrap(),
    );
    request
        .metadata_mut()
        .insert("x-request-id", "req-42".parse().unwrap());
    let answer = plain
        .unary(
            request,
            PathAndQuery::from_static("/test.Echo/Relay"),
            Codec::default(),
        )
        .await
        .unwrap();
    assert_eq!(answer.get_ref().text, "through");
    assert_eq!(
        answer
            .metadata()
            .get("x-request-id")
            .unwrap()
            .to_str()
            .unwrap(),
        "req-42"
    );

    let relay = one(&capture, "test.Echo/Relay", SpanKind::Server).await;
    let outbound = one(&capture, "test.Echo/Unary", SpanKind::Client).await;
    let backend_span = one(&capture, "test.Echo/Unary", SpanKind::Server).await;
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    assert_eq!(relay.trace_id(), trace);
    assert_eq!(relay.parent_id(), "00f067aa0ba902b7");
    assert_eq!(outbound.trace_id(), trace);
    assert_eq!(outbound.parent_id(), relay.span_id());
    assert_eq!(backend_span.trace_id(), trace);
    assert_eq!(backend_span.parent_id(), outbound.span_id());
    // The request id travels in the metadata of the outgoing call.
    assert_eq!(relay.attr_str("http.request.id").as_deref(), Some("req-42"));
    assert_eq!(
        backend_span.attr_str("http.request.id").as_deref(),
        Some("req-42")
    );
}

#[tokio::test]
async fn unknown_methods_and_explicit_http_classification() {
    let capture = Capture::install();
    let addr = serve(ServerLayer::new(), None).await;
    let mut client = connect(addr, ClientLayer::new()).await;
    let status = call_unary(&mut client, "/test.Echo/Nope", "x")
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented);

    // The server does not know the method: its name stays out of the span name and metrics.
    let spans = capture
        .wait_for_spans("grpc", 1, Duration::from_secs(5))
        .await;
    let server = &spans[0];
    assert_eq!(server.kind(), SpanKind::Server);
    assert_eq!(server.attr_str("rpc.method").as_deref(), Some("_OTHER"));
    assert_eq!(
        server.attr_str("rpc.method_original").as_deref(),
        Some("/test.Echo/Nope")
    );
    assert_eq!(code_of(server).as_deref(), Some("12"));
    assert!(server.is_error());
    let point = capture
        .metric("rpc.server.call.duration")
        .into_iter()
        .find(|p| p.attr("rpc.grpc.status_code") == Some("12"))
        .expect("UNIMPLEMENTED point");
    assert_eq!(point.attr("rpc.method"), Some("_OTHER"));
    assert_eq!(point.attr("rpc.service"), None);
    // The client names what it called.
    let client_span = one(&capture, "test.Echo/Nope", SpanKind::Client).await;
    assert_eq!(client_span.attr_str("rpc.method").as_deref(), Some("Nope"));

    // Chosen explicitly, HTTP classification judges by the HTTP status: 200, no error.
    let http_only = serve(
        ServerLayer::new().classifier(tracewire_http::classify::HttpClassifier::new()),
        None,
    )
    .await;
    let mut second = connect(http_only, ClientLayer::new()).await;
    call_unary(&mut second, "/test.Echo/Unary", "fail:13")
        .await
        .unwrap_err();
    let spans = capture
        .wait_for_spans("POST", 1, Duration::from_secs(5))
        .await;
    assert_eq!(spans.len(), 1, "{spans:#?}");
    assert_eq!(spans[0].kind(), SpanKind::Server);
    assert_eq!(
        spans[0].attr_str("http.response.status_code").as_deref(),
        Some("200")
    );
    assert_eq!(spans[0].attr_str("rpc.system"), None);
    assert!(!spans[0].is_error());
}

#[tokio::test]
async fn a_stream_the_client_drops_is_cancelled() {
    let capture = Capture::install();
    let addr = serve(ServerLayer::new(), None).await;
    let mut client = connect(addr, ClientLayer::new()).await;

    client.ready().await.unwrap();
    let response = client
        .server_streaming(
            tonic::Request::new(msg("n:50")),
            PathAndQuery::from_static("/test.Echo/Stream"),
            Codec::default(),
        )
        .await
        .unwrap();
    let mut stream = response.into_inner();
    assert_eq!(stream.message().await.unwrap().unwrap().text, "part 0");
    drop(stream);

    let spans = capture
        .wait_for_spans("test.Echo/Stream", 2, Duration::from_secs(5))
        .await;
    assert_eq!(spans.len(), 2, "{spans:#?}");
    for span in &spans {
        assert_eq!(code_of(span).as_deref(), Some("1"), "{:?}", span.kind());
        assert_eq!(
            span.attr_str("rpc.response.status_code").as_deref(),
            Some("CANCELLED")
        );
    }
    // A failure for the caller, not for the server.
    let client_span = of_kind(&spans, &SpanKind::Client).remove(0);
    assert_eq!(
        client_span.attr_str("error.type").as_deref(),
        Some("CANCELLED")
    );
    assert!(client_span.is_error());
    let server_span = of_kind(&spans, &SpanKind::Server).remove(0);
    assert_eq!(server_span.attr_str("error.type"), None);
    assert!(!server_span.is_error());
}

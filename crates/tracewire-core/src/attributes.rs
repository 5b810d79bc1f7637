//! The attribute keys tracewire emits.
//!
//! Standard keys are re-exported from `opentelemetry-semantic-conventions` so every crate spells
//! them the same way; the few keys tracewire adds are defined here and documented in
//! `docs/conventions.md`.

pub use opentelemetry_semantic_conventions::attribute::{
    CLIENT_ADDRESS, CODE_FUNCTION_NAME, ERROR_TYPE, EXCEPTION_MESSAGE, EXCEPTION_TYPE,
    HTTP_REQUEST_METHOD, HTTP_REQUEST_METHOD_ORIGINAL, HTTP_REQUEST_RESEND_COUNT,
    HTTP_RESPONSE_STATUS_CODE, HTTP_ROUTE, MESSAGING_BATCH_MESSAGE_COUNT,
    MESSAGING_CONSUMER_GROUP_NAME, MESSAGING_DESTINATION_NAME, MESSAGING_DESTINATION_PARTITION_ID,
    MESSAGING_KAFKA_MESSAGE_KEY, MESSAGING_KAFKA_OFFSET, MESSAGING_MESSAGE_BODY_SIZE,
    MESSAGING_MESSAGE_ID, MESSAGING_OPERATION_NAME, MESSAGING_OPERATION_TYPE,
    MESSAGING_RABBITMQ_DESTINATION_ROUTING_KEY, MESSAGING_RABBITMQ_MESSAGE_DELIVERY_TAG,
    MESSAGING_SYSTEM, NETWORK_PROTOCOL_VERSION, SERVER_ADDRESS, SERVER_PORT, URL_FULL, URL_PATH,
    URL_QUERY, URL_SCHEME, USER_AGENT_ORIGINAL,
};

/// The module path of an instrumented function (`code.namespace`). The semantic conventions
/// now fold it into `code.function.name`; tracewire writes both so dashboards built on either
/// keep working.
pub const CODE_NAMESPACE: &str = "code.namespace";

/// The request id of an HTTP request (`x-request-id`), on server spans and log lines.
pub const REQUEST_ID: &str = "http.request.id";

/// How many times a message has been tried, on consumer and retry-producer spans (1 = first).
pub const MESSAGING_ATTEMPT: &str = "messaging.message.attempt";

/// Whether RabbitMQ redelivered this message (its `redelivered` flag, on process spans; Kafka
/// cannot tell).
pub const MESSAGING_REDELIVERED: &str = "messaging.rabbitmq.message.redelivered";

/// How a consumer settled a message: the [`Outcome`](crate::messaging::Outcome) names `ack`,
/// `retry`, `dead_letter`, `reject`, `requeue`, `manual`.
pub const MESSAGING_OUTCOME: &str = "messaging.message.outcome";

/// Span events recording an error are named so, per the exception conventions.
pub const EXCEPTION_EVENT: &str = "exception";

// RPC (gRPC) keys. `rpc.method`, `rpc.response.status_code` and `rpc.system.name` are the
// current names; `rpc.system`, `rpc.service` and `rpc.grpc.status_code` are the gRPC keys most
// backends and dashboards read today, deprecated in the conventions crate but still written
// beside the new ones (see `docs/grpc.md`). Taken from the crate, not spelled out here.
pub use opentelemetry_semantic_conventions::attribute::{
    RPC_METHOD, RPC_METHOD_ORIGINAL, RPC_RESPONSE_STATUS_CODE, RPC_SYSTEM_NAME,
};

/// `rpc.system`: the remoting system (`grpc`); the older name of `rpc.system.name`.
#[allow(deprecated)]
pub const RPC_SYSTEM: &str = opentelemetry_semantic_conventions::attribute::RPC_SYSTEM;

/// `rpc.service`: the full name of the called service (`tracewire.demo.Greeter`).
#[allow(deprecated)]
pub const RPC_SERVICE: &str = opentelemetry_semantic_conventions::attribute::RPC_SERVICE;

/// `rpc.grpc.status_code`: the numeric gRPC status code of a call (`0` = OK).
#[allow(deprecated)]
pub const RPC_GRPC_STATUS_CODE: &str =
    opentelemetry_semantic_conventions::attribute::RPC_GRPC_STATUS_CODE;

//! Types shared by the examples and their tests: the telemetry events they emit.
//!
//! Events live in a library so a test can link them and hold their schema to the committed
//! `events.schema.json` (see `tests/schema_gate.rs`).

/// Emitted each time a user profile is served.
#[derive(Debug, tracewire::Event)]
#[event(name = "user.viewed", version = 1)]
pub struct UserViewed {
    /// The user's id.
    pub user_id: u64,
    /// The user's e-mail address: personal data, never written in clear.
    #[event(pii)]
    pub email: String,
}

/// The `tracewire.demo` protobuf package of `proto/greeter.proto`: the `Greeter` service
/// (server and client) and its messages, generated at build time.
#[allow(
    missing_docs,
    unreachable_pub,
    missing_debug_implementations,
    clippy::all
)]
pub mod greeter {
    tonic::include_proto!("tracewire.demo");
}

//! tracewire facade (in progress): `init()`, the builder, and re-exports.

#[cfg(feature = "http")]
pub use tracewire_http as http;

#[cfg(feature = "amqp")]
pub use tracewire_amqp as amqp;

#[cfg(feature = "kafka")]
pub use tracewire_kafka as kafka;

#[cfg(feature = "macros")]
#[doc(hidden)]
pub mod __private;

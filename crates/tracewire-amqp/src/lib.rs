//! amqp instrumentation (in progress).

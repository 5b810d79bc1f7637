//! [`Message`]: what a traced producer sends, the same type for every broker.

use std::fmt;

/// One message for a traced producer's `send` (`tracewire_amqp::TracedProducer::send`,
/// `tracewire_kafka::TracedProducer::send`): the same builder for every broker.
///
/// It borrows its parts, so nothing is copied until the broker client takes them, and the
/// caller still holds the data when a send fails. Only headers allocate (one vector).
///
/// - [`to`](Self::to): the destination, exactly as the PRODUCER span names it
///   (`messaging.destination.name`): a Kafka topic; for RabbitMQ a queue (published through the
///   default exchange) or, when a [`key`](Self::key) is given, an exchange.
/// - [`key`](Self::key): the Kafka record key (it picks the partition), or RabbitMQ's routing
///   key.
/// - [`header`](Self::header): application headers; trace headers (`traceparent`,
///   `tracestate`, `baggage`) given here are replaced by the producer span's context.
/// - [`message_id`](Self::message_id): `messaging.message.id` (RabbitMQ's `message_id`
///   property; a header of that name on Kafka).
///
/// ```
/// use tracewire_core::messaging::Message;
///
/// let order = br#"{"id":"o-1"}"#;
/// let message = Message::to("orders")
///     .key("o-1")
///     .payload(order)
///     .header("content-type", b"application/json")
///     .message_id("o-1");
/// assert_eq!(message.destination(), "orders");
/// assert_eq!(message.key_bytes(), Some(&b"o-1"[..]));
/// assert_eq!(message.payload_bytes(), order);
/// assert_eq!(message.headers(), [("content-type", &b"application/json"[..])]);
/// ```
#[derive(Clone, PartialEq, Eq)]
#[must_use = "a message does nothing until it is sent"]
pub struct Message<'a> {
    destination: &'a str,
    key: Option<&'a [u8]>,
    payload: &'a [u8],
    /// Allocated only when a header is added.
    headers: Vec<(&'a str, &'a [u8])>,
    message_id: Option<&'a str>,
}

impl<'a> Message<'a> {
    /// A message to `destination`, with an empty payload, no key and no headers.
    pub fn to(destination: &'a str) -> Self {
        Self {
            destination,
            key: None,
            payload: &[],
            headers: Vec::new(),
            message_id: None,
        }
    }

    /// The body.
    pub fn payload(mut self, payload: &'a (impl AsRef<[u8]> + ?Sized)) -> Self {
        self.payload = payload.as_ref();
        self
    }

    /// The Kafka record key, or RabbitMQ's routing key (the destination is then an exchange).
    pub fn key(mut self, key: &'a (impl AsRef<[u8]> + ?Sized)) -> Self {
        self.key = Some(key.as_ref());
        self
    }

    /// Adds an application header (a name given twice is sent twice; the broker decides
    /// which one a reader sees).
    pub fn header(mut self, name: &'a str, value: &'a (impl AsRef<[u8]> + ?Sized)) -> Self {
        self.headers.push((name, value.as_ref()));
        self
    }

    /// The message id (`messaging.message.id`).
    pub fn message_id(mut self, id: &'a str) -> Self {
        self.message_id = Some(id);
        self
    }

    /// Where the message goes.
    pub fn destination(&self) -> &'a str {
        self.destination
    }

    /// The key, if one was given.
    pub fn key_bytes(&self) -> Option<&'a [u8]> {
        self.key
    }

    /// The body.
    pub fn payload_bytes(&self) -> &'a [u8] {
        self.payload
    }

    /// The application headers, in the order given.
    pub fn headers(&self) -> &[(&'a str, &'a [u8])] {
        &self.headers
    }

    /// The message id, if one was given.
    pub fn id(&self) -> Option<&'a str> {
        self.message_id
    }
}

impl fmt::Debug for Message<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Payloads and header values can hold personal data: sizes and names only.
        f.debug_struct("Message")
            .field("destination", &self.destination)
            .field("key", &self.key.map(<[u8]>::len))
            .field("payload", &self.payload.len())
            .field(
                "headers",
                &self.headers().iter().map(|(n, _)| *n).collect::<Vec<_>>(),
            )
            .field("message_id", &self.message_id)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_message_is_empty_apart_from_its_destination() {
        let m = Message::to("t");
        assert_eq!(m.destination(), "t");
        assert_eq!(m.key_bytes(), None);
        assert!(m.payload_bytes().is_empty());
        assert!(m.headers().is_empty());
        assert_eq!(m.id(), None);
    }

    #[test]
    fn headers_keep_their_order() {
        let names: Vec<String> = (0..40).map(|i| format!("h{i}")).collect();
        let mut m = Message::to("t");
        for name in &names {
            m = m.header(name, name.as_bytes());
        }
        let got: Vec<&str> = m.headers().iter().map(|(n, _)| *n).collect();
        assert_eq!(got, names.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(m.headers()[39].1, b"h39");
    }

    #[test]
    fn debug_shows_no_payload_or_header_values() {
        let m = Message::to("orders")
            .key("user-42")
            .payload("secret body")
            .header("x-token", "secret value");
        let shown = format!("{m:?}");
        assert!(!shown.contains("secret"), "{shown}");
        assert!(
            shown.contains("x-token") && shown.contains("orders"),
            "{shown}"
        );
    }
}

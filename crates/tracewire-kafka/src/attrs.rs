//! Attribute values shared by the producer and the consumer side.

use std::borrow::Cow;
use std::sync::{Arc, OnceLock};

use opentelemetry::{KeyValue, StringValue, Value};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use tracewire_core::attributes::{MESSAGING_KAFKA_MESSAGE_KEY, MESSAGING_SYSTEM};

/// `messaging.system` for every Kafka span and metric.
pub(crate) const SYSTEM: &str = "kafka";

pub(crate) fn system() -> KeyValue {
    KeyValue::new(MESSAGING_SYSTEM, SYSTEM)
}

/// A topic name as a shareable attribute value: one allocation per record, cheap clones for
/// the span and the metric attributes.
pub(crate) fn topic_value(topic: &str) -> Value {
    Value::String(StringValue::from(Arc::<str>::from(topic)))
}

/// `messaging.destination.partition.id` is a string; the first partitions are preformatted so
/// no allocation happens for them.
pub(crate) fn partition_value(partition: i32) -> Value {
    static NAMES: OnceLock<Vec<String>> = OnceLock::new();
    const PREFORMATTED: i32 = 256;
    if (0..PREFORMATTED).contains(&partition) {
        let names = NAMES.get_or_init(|| (0..PREFORMATTED).map(|p| p.to_string()).collect());
        let name: &'static str = names[partition as usize].as_str();
        Value::from(name)
    } else {
        Value::from(partition.to_string())
    }
}

/// `messaging.kafka.message.key`, when recording keys is enabled and the key is text.
pub(crate) fn message_key(key: Option<&[u8]>) -> Option<KeyValue> {
    let key = std::str::from_utf8(key?).ok()?;
    Some(KeyValue::new(MESSAGING_KAFKA_MESSAGE_KEY, key.to_owned()))
}

/// `error.type` for a Kafka error: the librdkafka error code name when there is one
/// (`MessageTimedOut`, `UnknownTopicOrPartition`, …), else the kind of failure. A missing
/// topic is one `UnknownTopicOrPartition`, whether the broker said so or librdkafka's cached
/// metadata did (`UnknownTopic`).
pub(crate) fn error_type(err: &KafkaError) -> Cow<'static, str> {
    if let Some(code) = err.rdkafka_error_code() {
        if code == RDKafkaErrorCode::UnknownTopic {
            return Cow::Borrowed("UnknownTopicOrPartition");
        }
        return Cow::Owned(format!("{code:?}"));
    }
    Cow::Borrowed(match err {
        KafkaError::Canceled => "Canceled",
        KafkaError::NoMessageReceived => "NoMessageReceived",
        KafkaError::PartitionEOF(_) => "PartitionEOF",
        KafkaError::Nul(_) => "Nul",
        KafkaError::ClientCreation(_) => "ClientCreation",
        KafkaError::ClientConfig(..) => "ClientConfig",
        KafkaError::Subscription(_) => "Subscription",
        _ => "_OTHER",
    })
}

/// The failure a Kafka error ends an operation with: its `error.type` and message.
pub(crate) fn failure(err: &KafkaError) -> tracewire_core::operation::Failure {
    tracewire_core::operation::Failure::exception(error_type(err), err.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_topic_is_one_error_type() {
        for code in [
            RDKafkaErrorCode::UnknownTopic,
            RDKafkaErrorCode::UnknownTopicOrPartition,
        ] {
            assert_eq!(
                error_type(&KafkaError::MessageProduction(code)),
                "UnknownTopicOrPartition"
            );
        }
    }

    #[test]
    fn error_types_name_the_code() {
        assert_eq!(
            error_type(&KafkaError::MessageProduction(
                RDKafkaErrorCode::MessageTimedOut
            )),
            "MessageTimedOut"
        );
        assert_eq!(error_type(&KafkaError::Canceled), "Canceled");
    }

    #[test]
    fn partitions_are_strings() {
        assert_eq!(partition_value(3), Value::from("3"));
        assert_eq!(partition_value(1000), Value::from("1000"));
        assert_eq!(partition_value(-1), Value::from("-1"));
    }
}

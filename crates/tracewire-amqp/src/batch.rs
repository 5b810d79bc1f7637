//! Processing several deliveries in one span.

use std::future::Future;

use lapin::message::Delivery;
use opentelemetry::context::FutureExt as _;
use opentelemetry::{Context, KeyValue};
use tracewire_core::attributes as attr;
use tracewire_core::messaging::start_batch_span;

use crate::consume::{Outcome, ProcessSpan, TracedDelivery};

/// Runs `handler` on several deliveries inside one CONSUMER span `process {queue}` (a child of
/// the current context) that links every message's creation context, each link carrying the
/// message's `messaging.rabbitmq.message.delivery_tag`; `messaging.batch.message_count` is set.
/// Every delivery is then settled as the [`Outcome`] says, still inside the span.
///
/// Returns the outcome, or the first error met while settling (the other deliveries are still
/// settled). An empty batch runs the handler without a span.
///
/// ```no_run
/// # async fn demo(mut consumer: tracewire_amqp::TracedConsumer) -> Result<(), lapin::Error> {
/// use futures_util::StreamExt;
/// let mut chunks = consumer.ready_chunks(50);
/// while let Some(chunk) = chunks.next().await {
///     let deliveries = chunk.into_iter().collect::<Result<Vec<_>, _>>()?;
///     tracewire_amqp::process_batch(deliveries, |batch| async move {
///         tracing::info!(count = batch.len(), "bulk insert");
///         tracewire_amqp::Outcome::ack()
///     })
///     .await?;
/// }
/// # Ok(()) }
/// ```
pub async fn process_batch<F, Fut>(
    deliveries: Vec<TracedDelivery>,
    handler: F,
) -> lapin::Result<Outcome>
where
    F: FnOnce(Vec<Delivery>) -> Fut,
    Fut: Future<Output = Outcome>,
{
    let Some(first) = deliveries.first() else {
        return Ok(handler(Vec::new()).await);
    };
    let info = first.info().clone();
    let mut attrs = Vec::with_capacity(8);
    attrs.extend_from_slice(&info.base_attrs);
    attrs.push(KeyValue::new(attr::MESSAGING_OPERATION_TYPE, "process"));
    attrs.push(KeyValue::new(attr::MESSAGING_OPERATION_NAME, "process"));
    info.shared.push_server(&mut attrs);

    let mut ackers = Vec::with_capacity(deliveries.len());
    let mut links = Vec::with_capacity(deliveries.len());
    let mut plain = Vec::with_capacity(deliveries.len());
    for delivery in deliveries {
        let tag = i64::try_from(delivery.delivery_tag).unwrap_or(i64::MAX);
        let (delivery, creation) = delivery.into_parts();
        ackers.push(delivery.acker.clone());
        links.push((
            creation,
            vec![KeyValue::new(
                attr::MESSAGING_RABBITMQ_MESSAGE_DELIVERY_TAG,
                tag,
            )],
        ));
        plain.push(delivery);
    }
    let cx = Context::map_current(|parent| {
        start_batch_span(
            &info.shared.tracer,
            info.span_name.clone(),
            links,
            attrs,
            parent,
        )
    });
    let span = ProcessSpan::new(cx.clone(), &info);
    let outcome = handler(plain).with_context(cx.clone()).await;
    let mut first_error = None;
    for acker in &ackers {
        if let Err(err) = outcome.action().apply(acker).with_context(cx.clone()).await {
            first_error.get_or_insert(err);
        }
    }
    span.finish_settled(&outcome, first_error.as_ref());
    match first_error {
        Some(err) => Err(err),
        None => Ok(outcome),
    }
}

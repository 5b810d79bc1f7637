//! A consumer service that stops gracefully (the loop `docs/amqp.md` shows): stop consuming,
//! finish the message in hand, close the channel, then the connection.

mod support;

use std::future::Future;
use std::time::Duration;

use lapin::Connection;
use lapin::options::{BasicCancelOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use tokio::sync::oneshot;
use tracewire_amqp::{TracedChannel, TracedConsumer, TracedDelivery};
use tracewire_test::Capture;

use support::*;

/// The consumer loop of a service: processes deliveries until `shutdown` resolves, then stops.
/// A delivery in hand is finished (and settled) before the loop looks at `shutdown` again.
async fn serve<H, Fut>(
    connection: &Connection,
    channel: TracedChannel,
    mut consumer: TracedConsumer,
    shutdown: impl Future<Output = ()>,
    handle: H,
) -> Result<(), lapin::Error>
where
    H: Fn(&TracedDelivery) -> Fut,
    Fut: Future<Output = Result<(), std::io::Error>>,
{
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            received = consumer.recv() => match received {
                Some(Ok(delivery)) => {
                    consumer.process(&delivery, handle(&delivery)).await?;
                }
                Some(Err(err)) => return Err(err),
                None => break,
            },
        }
    }
    // 1. Stop consuming: the broker sends nothing more to this consumer.
    channel
        .basic_cancel(consumer.inner().tag(), BasicCancelOptions::default())
        .await?;
    drop(consumer);
    // 2. Close the channel: deliveries prefetched but not processed go back to the queue.
    channel.close(200, "consumer stopped".into()).await?;
    // 3. Then the connection (a channel merely dropped is closed by lapin in the background,
    //    racing the connection's close).
    connection.close(200, "consumer stopped".into()).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_finishes_the_message_in_hand_and_returns_the_rest() {
    let capture = Capture::install();
    let setup = connect().await;
    let setup_channel = traced_channel(&setup).await;
    let queue = unique("graceful");
    declare_kept_queue(&setup_channel, &queue).await;
    for body in [&b"one"[..], b"two", b"three"] {
        publish_confirmed(&setup_channel, &queue, body).await;
    }

    let connection = connect().await;
    let channel = traced_channel(&connection).await;
    let consumer = consume(&channel, &queue).await;
    let (stop, stopped) = oneshot::channel::<()>();
    let stop = std::sync::Mutex::new(Some(stop));
    let served = serve(
        &connection,
        channel,
        consumer,
        async {
            let _ = stopped.await;
        },
        |delivery| {
            // The stop request arrives while the first message is in hand.
            if let Some(stop) = stop.lock().unwrap().take() {
                let _ = stop.send(());
            }
            let body = delivery.data.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(200)).await;
                tracing::info!(body = %String::from_utf8_lossy(&body), "finished");
                Ok(())
            }
        },
    );
    tokio::time::timeout(Duration::from_secs(20), served)
        .await
        .expect("the service stops")
        .expect("a clean stop");
    assert!(!connection.status().connected(), "the connection is closed");

    // The message in hand was finished and acked; the two others are back in the queue.
    let spans = capture.spans_named(&format!("process {queue}"));
    assert_eq!(spans.len(), 1);
    assert_eq!(attr(&spans[0], "messaging.message.outcome"), s("ack"));
    assert!(!has_attr(&spans[0], "error.type"));
    let finished: Vec<_> = capture
        .logs()
        .into_iter()
        .filter(|l| l["message"] == "finished")
        .collect();
    assert_eq!(finished.len(), 1);
    assert_eq!(finished[0]["body"], "one");
    let left = setup_channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("passive declare");
    assert_eq!(left.message_count(), 2);
    setup_channel
        .queue_delete(queue.as_str().into(), Default::default())
        .await
        .expect("queue_delete");
}

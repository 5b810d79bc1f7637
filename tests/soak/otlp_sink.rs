//! A collector stand-in for `scripts/soak`: `otlp-sink <mode>` listens on loopback, prints
//! `grpc=<addr> http=<addr>` on its first line, and on SIGINT/SIGTERM prints
//! `received_spans=<n>` and exits.
//!
//! Modes: `ok` (answers at once), `slow <ms>` (answers each export after a delay),
//! `black-hole` (accepts connections, never reads or answers), `closed` (prints two ports
//! nothing listens on, then waits).

use std::time::Duration;

use tracewire_test::OtlpReceiver;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mode = args.first().map(String::as_str).unwrap_or("ok");
    let mut receiver = None;
    let mut held = Vec::new();
    match mode {
        "ok" | "slow" => {
            let delay = args
                .get(1)
                .and_then(|ms| ms.parse().ok())
                .map(Duration::from_millis)
                .unwrap_or(Duration::ZERO);
            let r = OtlpReceiver::start_with_delay(delay).await;
            println!(
                "grpc={} http={}",
                strip(&r.grpc_endpoint()),
                strip(&r.http_endpoint())
            );
            receiver = Some(r);
        }
        "black-hole" => {
            let mut addrs = Vec::new();
            for _ in 0..2 {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                addrs.push(listener.local_addr().unwrap());
                held.push(tokio::spawn(async move {
                    let mut sockets = Vec::new();
                    while let Ok((socket, _)) = listener.accept().await {
                        sockets.push(socket);
                    }
                }));
            }
            println!("grpc={} http={}", addrs[0], addrs[1]);
        }
        "closed" => {
            let a = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let b = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            println!(
                "grpc={} http={}",
                a.local_addr().unwrap(),
                b.local_addr().unwrap()
            );
        }
        other => {
            eprintln!("otlp-sink: unknown mode {other:?}: use ok, slow <ms>, black-hole, closed");
            std::process::exit(2);
        }
    }
    tracewire::shutdown_signal().await;
    let received = receiver.as_ref().map_or(0, |r| r.spans().len());
    println!("received_spans={received}");
}

fn strip(endpoint: &str) -> &str {
    endpoint.trim_start_matches("http://")
}

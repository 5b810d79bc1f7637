//! Waiting for the process to be asked to stop.
//!
//! Services built on the facade call `tracewire::shutdown_signal()`, which is this module's
//! [`shutdown_signal`]; binaries that sit on `tracewire-core` alone call it here.

/// Resolves at the first SIGINT (Ctrl-C) or SIGTERM (what `kill`, systemd and container
/// runtimes send). From then on, a second SIGINT or SIGTERM exits the process at once with
/// status 130, so a stop that hangs can always be cut short.
///
/// Must be awaited inside a tokio runtime with signal handling (the default).
pub async fn shutdown_signal() {
    stop_signal().await;
    // The first signal starts a graceful stop; a second one ends the process now.
    tokio::spawn(async {
        stop_signal().await;
        eprintln!("second stop signal: exiting now");
        std::process::exit(130);
    });
}

/// One SIGINT or SIGTERM.
async fn stop_signal() {
    let interrupt = async {
        // Without a signal handler there is nothing to wait for: never resolve.
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => {},
        _ = terminate => {},
    }
}

//! What only the end-to-end crate needs besides the shared support crate
//! (`zcaas-test-support`, where the scope and cleanup by label, the images,
//! the control plane in-process or as a process and the API verbs live):
//! the browser driver of the dashboard tests, the fake Telegram Bot API the
//! provider stand-in also serves, and the graceful shutdown of the test
//! servers this crate packages into images.

pub mod browser;
pub mod fake_telegram;

/// Resolves at the first SIGTERM or SIGINT: the graceful shutdown of the
/// test servers packaged into images (`docker stop` sends SIGTERM).
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => std::future::pending().await,
    }
}

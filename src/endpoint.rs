//! The daemon's local endpoints (the metrics HTTP port, the control socket)
//! served the same way: on a single-threaded tokio runtime, a task per
//! client, a fixed number of clients at once (more are closed at once), a
//! deadline for each whole exchange, and an accept loop that outlives its
//! errors (out of descriptors, for one): it waits a moment and accepts
//! again, logging at most once a minute.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, Semaphore};

/// Pause after a failed accept, so that the loop neither spins nor gives up.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Accept failures are logged at most this often.
const ACCEPT_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// A listening socket the loop accepts from.
pub trait Listener: Send + 'static {
    type Stream: Send + 'static;
    fn accept_one(&self) -> impl Future<Output = io::Result<Self::Stream>> + Send;
}

impl Listener for tokio::net::TcpListener {
    type Stream = tokio::net::TcpStream;
    async fn accept_one(&self) -> io::Result<Self::Stream> {
        self.accept().await.map(|(stream, _)| stream)
    }
}

impl Listener for tokio::net::UnixListener {
    type Stream = tokio::net::UnixStream;
    async fn accept_one(&self) -> io::Result<Self::Stream> {
        self.accept().await.map(|(stream, _)| stream)
    }
}

/// How clients are served.
pub struct Limits {
    /// Names the endpoint in log lines.
    pub what: &'static str,
    /// Clients served at once.
    pub max_clients: usize,
    /// Time for one whole exchange, from accept to the last byte.
    pub deadline: Duration,
}

/// Accepts clients until `stopped` fires, each served by `serve` in a task
/// of its own within `limits`.
pub async fn serve_clients<L, F, Fut>(
    listener: L,
    limits: Limits,
    mut stopped: oneshot::Receiver<()>,
    serve: F,
) where
    L: Listener,
    F: Fn(L::Stream) -> Fut,
    Fut: Future<Output = io::Result<()>> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(limits.max_clients));
    let mut last_logged: Option<Instant> = None;
    loop {
        let accepted = tokio::select! {
            _ = &mut stopped => return,
            accepted = listener.accept_one() => accepted,
        };
        match accepted {
            Ok(stream) => {
                // Over the cap the client is closed at once: a flood of idle
                // connections never grows memory or holds a client off for
                // longer than the deadline.
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    continue;
                };
                let exchange = serve(stream);
                let (what, deadline) = (limits.what, limits.deadline);
                tokio::spawn(async move {
                    let _slot = slot;
                    match tokio::time::timeout(deadline, exchange).await {
                        Ok(Err(e)) => log::debug!("{what}: {e}"),
                        Err(_) => log::debug!("{what}: client too slow, cut off"),
                        Ok(Ok(())) => {}
                    }
                });
            }
            Err(e) => {
                if last_logged.is_none_or(|t| t.elapsed() >= ACCEPT_LOG_INTERVAL) {
                    log::warn!("{}: accept: {e}; retrying", limits.what);
                    last_logged = Some(Instant::now());
                }
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

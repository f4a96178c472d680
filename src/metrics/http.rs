//! The metrics endpoint: `GET /metrics` over HTTP/1.1, served by hyper on a
//! single-threaded tokio runtime on a thread of its own, far from the workers.
//!
//! Anyone who can reach the port can misbehave, so every resource a client
//! can hold is bounded: headers (8 KiB, else 431), the time to send them and
//! the time of a whole exchange (one request per connection), and the number
//! of connections served at once (more are closed at once). A connection
//! costs a task, never a thread, and the accept loop outlives its errors
//! (out of descriptors, for one): it waits a moment and accepts again.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::oneshot;

use super::exposition::render;
use crate::endpoint::{serve_clients, Limits};
use crate::observe::Observed;

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// The most a request's head (request line and headers) may take; hyper's
/// smallest read buffer.
pub const MAX_HEAD_BYTES: usize = 8 * 1024;
/// Time to send the request head.
pub const HEAD_DEADLINE: Duration = Duration::from_secs(3);
/// Time for a whole exchange, from accept to the last byte of the answer.
pub const EXCHANGE_DEADLINE: Duration = Duration::from_secs(10);
/// Connections served at once; a scraper needs one.
pub const MAX_CONNECTIONS: usize = 32;

pub struct MetricsServer {
    local: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    pub fn start(addr: SocketAddr, view: Arc<Observed>) -> io::Result<MetricsServer> {
        let listener = std::net::TcpListener::bind(addr)
            .map_err(|e| io::Error::new(e.kind(), format!("metrics endpoint {addr}: {e}")))?;
        listener.set_nonblocking(true)?;
        let local = listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()?;
        let (stop, stopped) = oneshot::channel();
        let source = view;
        let thread = std::thread::Builder::new()
            .name("tachyon-metrics".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let limits = Limits {
                        what: "metrics endpoint",
                        max_clients: MAX_CONNECTIONS,
                        deadline: EXCHANGE_DEADLINE,
                    };
                    let serve_one = move |stream| {
                        let source = source.clone();
                        async move {
                            exchange(stream, source).await;
                            Ok(())
                        }
                    };
                    match tokio::net::TcpListener::from_std(listener) {
                        Ok(listener) => serve_clients(listener, limits, stopped, serve_one).await,
                        Err(e) => log::error!("metrics endpoint: {e}"),
                    }
                })
            })?;
        Ok(MetricsServer {
            local,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One connection: one request, one answer.
async fn exchange(stream: tokio::net::TcpStream, source: Arc<Observed>) {
    let service = service_fn(move |request: Request<Incoming>| {
        let source = source.clone();
        async move { Ok::<_, Infallible>(answer(&request, &source)) }
    });
    let result = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEAD_DEADLINE)
        .max_buf_size(MAX_HEAD_BYTES)
        .keep_alive(false)
        .serve_connection(TokioIo::new(stream), service)
        .await;
    if let Err(e) = result {
        log::debug!("metrics endpoint: {e}");
    }
}

fn answer(request: &Request<Incoming>, source: &Observed) -> Response<Full<Bytes>> {
    let (status, content_type, body) = if request.method() != Method::GET {
        (
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "only GET\n".to_string(),
        )
    } else if request.uri().path() == "/metrics" {
        (StatusCode::OK, CONTENT_TYPE, render(source))
    } else {
        (
            StatusCode::NOT_FOUND,
            "text/plain",
            "tachyond: see /metrics\n".to_string(),
        )
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(value) = hyper::header::HeaderValue::from_str(content_type) {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, value);
    }
    response
}

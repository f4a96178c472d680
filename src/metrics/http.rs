//! The metrics endpoint: `GET /metrics` over HTTP, served by tiny_http on its own
//! thread, far from the workers.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::exposition::{render, MetricsSource};

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

pub struct MetricsServer {
    local: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    pub fn start(addr: SocketAddr, source: MetricsSource) -> io::Result<MetricsServer> {
        let server = tiny_http::Server::http(addr)
            .map_err(|e| io::Error::other(format!("metrics endpoint {addr}: {e}")))?;
        let local = server
            .server_addr()
            .to_ip()
            .ok_or_else(|| io::Error::other("metrics endpoint has no IP address"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop_flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("tachyon-metrics".into())
            .spawn(move || {
                while !stop_flag.load(Ordering::Relaxed) {
                    let request = match server.recv_timeout(Duration::from_millis(250)) {
                        Ok(Some(r)) => r,
                        Ok(None) => continue,
                        Err(e) => {
                            log::warn!("metrics endpoint: {e}");
                            continue;
                        }
                    };
                    let response = if request.method() != &tiny_http::Method::Get {
                        tiny_http::Response::from_string("only GET\n").with_status_code(405)
                    } else if request.url() == "/metrics" {
                        let header = tiny_http::Header::from_bytes("Content-Type", CONTENT_TYPE)
                            .expect("static header");
                        tiny_http::Response::from_string(render(&source)).with_header(header)
                    } else {
                        tiny_http::Response::from_string("tachyond: see /metrics\n")
                            .with_status_code(404)
                    };
                    if let Err(e) = request.respond(response) {
                        log::debug!("metrics endpoint: {e}");
                    }
                }
            })?;
        Ok(MetricsServer {
            local,
            stop,
            thread: Some(thread),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

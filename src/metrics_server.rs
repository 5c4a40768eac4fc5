//! Serves a store's metrics over HTTP (`GET /metrics`, Prometheus text format), for
//! `metrics_listen` in a deployment and for `cascade metrics --listen`.
//!
//! The server holds only a weak reference to the store: it never keeps a closed store
//! (and its files, locks and pools) alive, and a detached server stops by itself once
//! the store is gone.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use cascade_core::metrics::CONTENT_TYPE;
use cascade_core::{CascadeStore, Error, ErrorKind, Result};

/// How often an idle server looks whether its store is still open (and whether it was
/// asked to stop): the longest a closed store's port stays bound.
const POLL: Duration = Duration::from_millis(100);

/// An HTTP endpoint serving one store's metrics; dropping it stops the server (unless it
/// was [detached](MetricsServer::detach)).
pub struct MetricsServer {
    addr: SocketAddr,
    server: Arc<tiny_http::Server>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for MetricsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl MetricsServer {
    /// Listens on `addr` (`"127.0.0.1:9464"`; port 0 picks a free one, see
    /// [`MetricsServer::local_addr`]) and serves `store`'s metrics at `/metrics` on a
    /// thread of its own.
    ///
    /// Errors: [`ErrorKind::Config`] when `addr` is not an address to listen on or is
    /// taken (naming it).
    pub fn start(addr: &str, store: Weak<CascadeStore>) -> Result<Self> {
        let server = tiny_http::Server::http(addr).map_err(|e| {
            Error::new(
                ErrorKind::Config,
                "metrics_listen: cannot listen for metrics",
            )
            .with_context("address", addr)
            .with_context("error", e)
        })?;
        let addr = server.server_addr().to_ip().ok_or_else(|| {
            Error::config("metrics_listen: not an IP address").with_context("address", addr)
        })?;
        let server = Arc::new(server);
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::Builder::new()
            .name("cascade-metrics".into())
            .spawn({
                let server = Arc::clone(&server);
                let stop = Arc::clone(&stop);
                move || serve(&server, &store, &stop)
            })
            .map_err(|e| Error::io("cannot start the metrics thread", e))?;
        tracing::info!(%addr, "serving metrics at http://{addr}/metrics");
        Ok(Self {
            addr,
            server,
            stop,
            thread: Some(thread),
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Lets the server run on its own until its store is closed (dropped).
    pub fn detach(mut self) {
        self.thread.take();
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        self.stop.store(true, Ordering::Relaxed);
        self.server.unblock();
        if thread.thread().id() != std::thread::current().id() && thread.join().is_err() {
            tracing::warn!("the metrics thread panicked");
        }
    }
}

fn serve(server: &tiny_http::Server, store: &Weak<CascadeStore>, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        match server.recv_timeout(POLL) {
            Ok(Some(request)) => {
                let Some(store) = store.upgrade() else {
                    respond(request, 503, "the store is closed\n", "text/plain");
                    return;
                };
                handle(request, &store);
            }
            Ok(None) if store.strong_count() == 0 => return,
            Ok(None) => {}
            Err(e) => {
                if !stop.load(Ordering::Relaxed) {
                    tracing::warn!(error = %e, "the metrics server stopped");
                }
                return;
            }
        }
    }
}

fn handle(request: tiny_http::Request, store: &CascadeStore) {
    let path = request.url().split('?').next().unwrap_or("");
    if *request.method() != tiny_http::Method::Get {
        respond(request, 405, "only GET is served\n", "text/plain");
    } else if path == "/metrics" {
        respond(request, 200, &store.metrics_text(), CONTENT_TYPE);
    } else {
        respond(request, 404, "metrics are at /metrics\n", "text/plain");
    }
}

fn respond(request: tiny_http::Request, status: u16, body: &str, content_type: &str) {
    let mut response = tiny_http::Response::from_string(body).with_status_code(status);
    if let Ok(header) = tiny_http::Header::from_bytes("Content-Type", content_type) {
        response = response.with_header(header);
    }
    if let Err(e) = request.respond(response) {
        tracing::debug!(error = %e, "a metrics client went away before the response");
    }
}

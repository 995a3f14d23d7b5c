//! Serving the API over TCP, plain or TLS, with the limits that keep slow and idle clients
//! from holding the server: a cap on open connections (taken at accept: over it, new
//! connections wait in the listen backlog), a time limit for a request's headers (and for the
//! TLS handshake), and an idle timeout for connections with no request in flight. Each request
//! carries its TCP peer as axum's `ConnectInfo<SocketAddr>`. On stop, accepting ends, idle
//! connections close and requests in flight finish (for up to the limits' shutdown grace,
//! [`SHUTDOWN_GRACE`] unless configured).
//!
//! hyper starts the header timer when it begins to wait for a request head, which on a
//! keep-alive HTTP/1.1 connection is right after the previous answer: there, the header read
//! timeout also bounds the quiet time between requests. The idle timeout covers HTTP/2 and
//! connections that never send a byte.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

/// How long requests in flight may run on after a stop, unless configured otherwise.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Limits on connections.
#[derive(Debug, Clone, Copy)]
pub struct ServeLimits {
    /// Time a client has to send a request's headers (and to finish the TLS handshake).
    pub header_read_timeout: Duration,
    /// A connection with no request in flight for this long is closed.
    pub idle_timeout: Duration,
    /// Connections open at once; more wait until one closes.
    pub max_connections: usize,
    /// After a stop, how long requests in flight may run on before the server stops anyway.
    pub shutdown_grace: Duration,
}

impl Default for ServeLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 4096,
            shutdown_grace: SHUTDOWN_GRACE,
        }
    }
}

/// Serves `app` on `listener` (TLS when `tls` is given) until `shutdown` completes.
pub(crate) async fn serve_connections(
    listener: TcpListener,
    app: Router,
    tls: Option<TlsAcceptor>,
    limits: ServeLimits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let max = u32::try_from(limits.max_connections.clamp(1, Semaphore::MAX_PERMITS)).unwrap_or(u32::MAX);
    let open = Arc::new(Semaphore::new(max as usize));
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = open.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, or a connection reset before it was accepted:
                    // wait a little rather than spin.
                    tracing::debug!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = tcp.set_nodelay(true);
        let conn = Conn { app: app.clone(), peer, limits, stop: stop_rx.clone(), _permit: permit };
        tokio::spawn(conn.run(tcp, tls.clone()));
    }
    drop(listener);
    let _ = stop_tx.send(true);
    if tokio::time::timeout(limits.shutdown_grace, open.acquire_many(max)).await.is_err() {
        tracing::warn!("requests still in flight after the shutdown grace period; stopping anyway");
    }
    Ok(())
}

/// One accepted connection.
struct Conn {
    app: Router,
    peer: SocketAddr,
    limits: ServeLimits,
    stop: watch::Receiver<bool>,
    /// Returned to the cap when the connection ends.
    _permit: OwnedSemaphorePermit,
}

impl Conn {
    async fn run(self, tcp: TcpStream, tls: Option<TlsAcceptor>) {
        match tls {
            None => self.serve(tcp).await,
            Some(acceptor) => {
                match tokio::time::timeout(self.limits.header_read_timeout, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => self.serve(stream).await,
                    Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!("TLS handshake timed out"),
                }
            }
        }
    }

    async fn serve<I: AsyncRead + AsyncWrite + Unpin + Send + 'static>(mut self, io: I) {
        let activity = Arc::new(Activity::new());
        let (app, peer, busy) = (self.app.clone(), self.peer, activity.clone());
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            let (app, in_flight) = (app.clone(), busy.begin());
            async move {
                let response = app.oneshot(request).await;
                drop(in_flight);
                Ok::<_, Infallible>(response.unwrap_or_else(|never| match never {}))
            }
        });
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder.http1().timer(TokioTimer::new()).header_read_timeout(self.limits.header_read_timeout);
        builder.http2().timer(TokioTimer::new());
        let conn = builder.serve_connection(TokioIo::new(io), service);
        tokio::pin!(conn);
        let mut closing = false;
        loop {
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                    return;
                }
                _ = self.stop.wait_for(|stop| *stop), if !closing => {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
                () = activity.idle_for(self.limits.idle_timeout), if !closing => {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
        }
    }
}

/// Requests in flight on a connection, and when the last one ended.
struct Activity {
    in_flight: AtomicUsize,
    last: Mutex<Instant>,
}

/// Counts a request in flight until dropped.
struct InFlight(Arc<Activity>);

impl Activity {
    fn new() -> Self {
        Self { in_flight: AtomicUsize::new(0), last: Mutex::new(Instant::now()) }
    }

    fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(self.clone())
    }

    fn quiet_since(&self) -> Instant {
        *self.last.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Completes once the connection has had no request in flight for `limit`.
    async fn idle_for(&self, limit: Duration) {
        loop {
            let quiet = self.quiet_since().elapsed();
            if self.in_flight.load(Ordering::SeqCst) == 0 && quiet >= limit {
                return;
            }
            tokio::time::sleep(limit.saturating_sub(quiet).max(Duration::from_millis(100))).await;
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        *self.0.last.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Instant::now();
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Raises this process's soft limit on open files to `wanted` (at most the hard limit), so that
/// the connection cap, not the file limit, is what turns clients away. Returns the soft limit
/// in force afterwards (None when it is unlimited or cannot be read).
#[cfg(unix)]
pub fn raise_open_files_limit(wanted: u64) -> Option<u64> {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    let current = limit.current?;
    if current >= wanted {
        return Some(current);
    }
    let raised = limit.maximum.map_or(wanted, |hard| wanted.min(hard));
    match setrlimit(Resource::Nofile, Rlimit { current: Some(raised), maximum: limit.maximum }) {
        Ok(()) => Some(raised),
        Err(_) => Some(current),
    }
}

/// Elsewhere the limit is left as it is.
#[cfg(not(unix))]
pub fn raise_open_files_limit(_wanted: u64) -> Option<u64> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(address: SocketAddr, path: &str) -> std::io::Result<String> {
        let mut stream = TcpStream::connect(address).await?;
        stream
            .write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
            .await?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await?;
        Ok(answer)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stop_lets_requests_in_flight_finish_and_takes_no_new_ones() {
        let app = Router::new()
            .route(
                "/slow",
                axum::routing::get(|| async {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    "done"
                }),
            )
            .route(
                "/peer",
                axum::routing::get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move {
                    peer.ip().to_string()
                }),
            );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve_connections(listener, app, None, ServeLimits::default(), async {
            let _ = stopped.await;
        }));
        assert!(get(address, "/peer").await.unwrap().ends_with("127.0.0.1"), "the peer is known");
        let slow = tokio::spawn(get(address, "/slow"));
        tokio::time::sleep(Duration::from_millis(100)).await;
        let _ = stop.send(());
        let answer = slow.await.unwrap().unwrap();
        assert!(answer.starts_with("HTTP/1.1 200") && answer.ends_with("done"), "{answer}");
        server.await.unwrap().unwrap();
        assert!(get(address, "/peer").await.is_err(), "nothing listens any more");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_quiet_keep_alive_connection_is_closed_after_the_header_read_timeout() {
        // hyper starts the header timer as soon as it waits for the next request head: the
        // documentation of --header-read-timeout relies on it.
        let app = Router::new().route("/", axum::routing::get(|| async { "ok" }));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let limits = ServeLimits {
            header_read_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(3600),
            ..ServeLimits::default()
        };
        tokio::spawn(serve_connections(listener, app, None, limits, std::future::pending()));
        let mut stream = TcpStream::connect(address).await.unwrap();
        stream.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let mut buf = [0u8; 512];
        let read = stream.read(&mut buf).await.unwrap();
        assert!(buf[..read].starts_with(b"HTTP/1.1 200"));
        let mut rest = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut rest)).await;
        assert!(closed.is_ok(), "the quiet connection is closed");
    }
}

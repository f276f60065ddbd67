//! Accepting HTTP connections with bounds a slow or hostile client cannot stretch: at most
//! [`Limits::max_connections`] open at once (more are closed at accept), and a request's headers
//! must arrive within [`Limits::header_read_timeout`]. `axum::serve` sets neither (it runs hyper
//! without a timer), so a client that sent half a header held its connection open for minutes.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// The bounds on connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Open connections at most; Zendesk keeps a few, health checks and operators a few more.
    pub max_connections: usize,
    /// How long a client may take to send a request's headers (Zendesk sends them at once).
    pub header_read_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 1024,
            header_read_timeout: Duration::from_secs(10),
        }
    }
}
/// After a stop is requested, how long open connections get to finish their request.
const DRAIN: Duration = Duration::from_secs(10);

/// Serves `app` on `listener` until `shutdown` is cancelled, then lets open requests finish.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: CancellationToken,
    limits: Limits,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.cancelled() => break,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and similar: wait a little instead of spinning.
                warn!(error = %e, "could not accept a connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            warn!(
                %peer,
                max = limits.max_connections,
                "too many open connections: closing a new one"
            );
            continue;
        };
        // The peer's address, for the console's log of who did what.
        let service = TowerToHyperService::new(tower_http::add_extension::AddExtension::new(
            app.clone(),
            axum::extract::ConnectInfo(peer),
        ));
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                debug!(%peer, error = %e, "connection ended with an error");
            }
            drop(slot);
        });
    }
    if tokio::time::timeout(DRAIN, graceful.shutdown())
        .await
        .is_err()
    {
        warn!("open connections did not finish within 10 s of the stop; closing them");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    async fn start(limits: Limits) -> (std::net::SocketAddr, CancellationToken) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let app = Router::new().route("/", get(|| async { "ok" }));
        tokio::spawn(serve(listener, app, stop.clone(), limits));
        (addr, stop)
    }

    /// Reads until the server closes; `None` if it is still open after `wait`.
    async fn closed_within(c: &mut TcpStream, wait: Duration) -> Option<String> {
        let mut got = Vec::new();
        tokio::time::timeout(wait, c.read_to_end(&mut got))
            .await
            .ok()
            .map(|_| String::from_utf8_lossy(&got).into_owned())
    }

    #[tokio::test]
    async fn a_half_sent_header_is_cut_off() {
        let (addr, stop) = start(Limits {
            max_connections: 8,
            header_read_timeout: Duration::from_millis(200),
        })
        .await;
        let mut slow = TcpStream::connect(addr).await.unwrap();
        slow.write_all(b"POST /webhooks/zendesk HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        let answer = closed_within(&mut slow, Duration::from_secs(3)).await;
        assert!(
            answer
                .as_deref()
                .is_some_and(|a| a.is_empty() || a.starts_with("HTTP/1.1 408")),
            "{answer:?}"
        );
        // A whole request still works.
        let mut ok = TcpStream::connect(addr).await.unwrap();
        ok.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let answer = closed_within(&mut ok, Duration::from_secs(3))
            .await
            .unwrap();
        assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
        stop.cancel();
    }

    #[tokio::test]
    async fn connections_past_the_cap_are_closed_at_once() {
        let (addr, stop) = start(Limits {
            max_connections: 2,
            header_read_timeout: Duration::from_secs(30),
        })
        .await;
        let mut held = Vec::new();
        for _ in 0..2 {
            held.push(TcpStream::connect(addr).await.unwrap());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut third = TcpStream::connect(addr).await.unwrap();
        assert_eq!(
            closed_within(&mut third, Duration::from_secs(3)).await,
            Some(String::new())
        );
        // The held ones are still open; closing one frees its slot.
        assert_eq!(
            closed_within(&mut held[0], Duration::from_millis(100)).await,
            None
        );
        drop(held.pop());
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut fourth = TcpStream::connect(addr).await.unwrap();
        fourth
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let answer = closed_within(&mut fourth, Duration::from_secs(3))
            .await
            .unwrap();
        assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
        stop.cancel();
    }
}

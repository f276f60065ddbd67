//! A TCP proxy in front of the fake Zendesk that can break the network: drop connections as soon
//! as a request arrives, or accept them and never answer (so deskbot's request timeout fires).

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// What the proxy does with each connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Fault {
    /// Pass bytes both ways.
    None = 0,
    /// Read the request, then close the connection without a word.
    Drop = 1,
    /// Read the request and hold the connection open, answering nothing.
    Hang = 2,
}

struct Shared {
    fault: AtomicU8,
    dropped: AtomicUsize,
    hung: AtomicUsize,
    /// Cancelled when the fault changes: open connections end, so pooled ones cannot bypass it.
    generation: Mutex<CancellationToken>,
}

/// Handle to a running proxy.
#[derive(Clone)]
pub struct FaultProxy {
    pub url: String,
    shared: Arc<Shared>,
}

impl FaultProxy {
    /// Starts a proxy on a random local port in front of `upstream` (`http://host:port`).
    pub async fn start(upstream: &str) -> FaultProxy {
        let upstream = upstream.trim_start_matches("http://").to_string();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let shared = Arc::new(Shared {
            fault: AtomicU8::new(Fault::None as u8),
            dropped: AtomicUsize::new(0),
            hung: AtomicUsize::new(0),
            generation: Mutex::new(CancellationToken::new()),
        });
        let s = shared.clone();
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let s = s.clone();
                let upstream = upstream.clone();
                tokio::spawn(async move { serve(conn, &upstream, &s).await });
            }
        });
        FaultProxy { url, shared }
    }

    /// Applies `fault` to every connection from now on, ending the ones open.
    pub fn set(&self, fault: Fault) {
        self.shared.fault.store(fault as u8, Ordering::SeqCst);
        let mut g = self.shared.generation.lock().unwrap();
        g.cancel();
        *g = CancellationToken::new();
    }

    /// Connections dropped so far.
    pub fn dropped(&self) -> usize {
        self.shared.dropped.load(Ordering::SeqCst)
    }

    /// Connections left unanswered so far.
    pub fn hung(&self) -> usize {
        self.shared.hung.load(Ordering::SeqCst)
    }
}

async fn serve(mut conn: TcpStream, upstream: &str, s: &Shared) {
    let token = s.generation.lock().unwrap().clone();
    let fault = s.fault.load(Ordering::SeqCst);
    if fault == Fault::None as u8 {
        let Ok(mut up) = TcpStream::connect(upstream).await else {
            return;
        };
        tokio::select! {
            _ = tokio::io::copy_bidirectional(&mut conn, &mut up) => {}
            _ = token.cancelled() => {}
        }
        return;
    }
    let mut buf = [0u8; 4096];
    let read = tokio::select! {
        r = conn.read(&mut buf) => r.unwrap_or(0),
        _ = token.cancelled() => 0,
    };
    if read == 0 {
        return;
    }
    if fault == Fault::Drop as u8 {
        s.dropped.fetch_add(1, Ordering::SeqCst);
        return;
    }
    s.hung.fetch_add(1, Ordering::SeqCst);
    token.cancelled().await;
}

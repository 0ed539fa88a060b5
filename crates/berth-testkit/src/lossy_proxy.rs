//! A loopback TCP proxy that fails the way a phone's network and its gateways do. It either
//! loses answers (the request reaches the server, which acts on it, but the connection is
//! cut as soon as the server starts answering) or stands in for a gateway that answers 503
//! without passing the request on. The first few connections fail; the rest pass through.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How the failing connections fail.
#[derive(Clone, Copy, Debug)]
enum Failure {
    AnswerLost,
    GatewayUnavailable,
}

pub struct LossyProxy {
    url: String,
    lost: Arc<AtomicUsize>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for LossyProxy {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl LossyProxy {
    /// Proxies to `upstream` (such as `127.0.0.1:7700`), losing the first `lose` answers.
    pub async fn start(upstream: SocketAddr, lose: usize) -> LossyProxy {
        Self::failing(upstream, lose, Failure::AnswerLost).await
    }

    /// Proxies to `upstream`, answering the first `refuse` requests itself with a 503, as a
    /// gateway whose backend is away: those never reach the server.
    pub async fn unavailable(upstream: SocketAddr, refuse: usize) -> LossyProxy {
        Self::failing(upstream, refuse, Failure::GatewayUnavailable).await
    }

    async fn failing(upstream: SocketAddr, count: usize, failure: Failure) -> LossyProxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let url = format!("http://{}", listener.local_addr().expect("an address"));
        let lost = Arc::new(AtomicUsize::new(0));
        let server = tokio::spawn({
            let lost = lost.clone();
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    let fails = lost
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                            (n < count).then_some(n + 1)
                        })
                        .is_ok();
                    match (fails, failure) {
                        (false, _) => tokio::spawn(pass(client, upstream)),
                        (true, Failure::AnswerLost) => tokio::spawn(lose_answer(client, upstream)),
                        (true, Failure::GatewayUnavailable) => tokio::spawn(refuse(client)),
                    };
                }
            }
        });
        LossyProxy { url, lost, server }
    }

    /// `http://127.0.0.1:PORT`, for a client to use instead of the server's own URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Connections that failed so far.
    pub fn lost(&self) -> usize {
        self.lost.load(Ordering::SeqCst)
    }
}

async fn pass(mut client: TcpStream, upstream: SocketAddr) {
    if let Ok(mut server) = TcpStream::connect(upstream).await {
        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
    }
}

async fn lose_answer(mut client: TcpStream, upstream: SocketAddr) {
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        return;
    };
    // The request goes through whole; the first byte of the answer ends both connections.
    let (mut from_client, _to_client) = client.split();
    let (mut from_server, mut to_server) = server.split();
    let forward = async {
        let mut buffer = vec![0u8; 16 << 10];
        loop {
            match from_client.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to_server.write_all(&buffer[..n]).await.is_err() {
                        break;
                    }
                }
            }
        }
        // The client will not send more; keep waiting for the server's answer.
        std::future::pending::<()>().await;
    };
    let answered = async {
        let mut first = [0u8; 1];
        let _ = from_server.read(&mut first).await;
    };
    tokio::select! {
        () = forward => {}
        () = answered => {}
    }
}

/// Reads the request (head and `Content-Length` body) and answers 503 itself.
async fn refuse(mut client: TcpStream) {
    let mut request = Vec::new();
    let mut buffer = [0u8; 4096];
    let wanted = loop {
        match client.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&buffer[..n]),
        }
        if let Some(end) = request.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&request[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|line| line.strip_prefix("content-length:"))
                .and_then(|value| value.trim().parse::<usize>().ok())
                .unwrap_or(0);
            break end + 4 + length;
        }
    };
    while request.len() < wanted {
        match client.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&buffer[..n]),
        }
    }
    let body = "no healthy upstream";
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = client.write_all(answer.as_bytes()).await;
    let _ = client.shutdown().await;
}

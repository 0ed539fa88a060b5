//! A loopback TCP proxy that loses answers, as a phone's network does: the request reaches
//! the server, which acts on it, but the client never hears back. The first `lose`
//! connections are cut as soon as the server starts answering; the rest are passed through.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

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
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let url = format!("http://{}", listener.local_addr().expect("an address"));
        let lost = Arc::new(AtomicUsize::new(0));
        let server = tokio::spawn({
            let lost = lost.clone();
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    let lose_this = lost
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                            (n < lose).then_some(n + 1)
                        })
                        .is_ok();
                    tokio::spawn(relay(client, upstream, lose_this));
                }
            }
        });
        LossyProxy { url, lost, server }
    }

    /// `http://127.0.0.1:PORT`, for a client to use instead of the server's own URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Connections whose answer was lost so far.
    pub fn lost(&self) -> usize {
        self.lost.load(Ordering::SeqCst)
    }
}

async fn relay(mut client: TcpStream, upstream: SocketAddr, lose: bool) {
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        return;
    };
    if !lose {
        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
        return;
    }
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

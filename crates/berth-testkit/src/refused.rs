//! An address where nothing answers, for tests of what a person is told when a server is down.
//!
//! Binding a listener, reading its port and dropping it leaves the port free for the next
//! server another test starts, which then answers where nothing should. A socket that is bound
//! but never listens keeps the port for itself and refuses every connection to it.
use std::net::SocketAddr;

use tokio::net::TcpSocket;

/// A loopback port that refuses connections for as long as this value lives.
pub struct RefusedPort {
    _held: TcpSocket,
    addr: SocketAddr,
}

impl RefusedPort {
    pub fn new() -> Self {
        let held = TcpSocket::new_v4().expect("a TCP socket");
        held.bind(([127, 0, 0, 1], 0).into())
            .expect("a loopback port");
        let addr = held.local_addr().expect("the bound port");
        RefusedPort { _held: held, addr }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Default for RefusedPort {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_answers_and_no_one_else_can_take_the_port() {
        let refused = RefusedPort::new();
        let err = std::net::TcpStream::connect(refused.addr()).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
        assert!(std::net::TcpListener::bind(refused.addr()).is_err());
    }
}

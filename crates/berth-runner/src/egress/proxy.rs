//! The egress proxy: an HTTP forward proxy on the egress network's gateway. A sandbox's
//! request names a host; the proxy knows the attempt by the sandbox's address on that network,
//! checks the host against the attempt's rules, resolves it itself, refuses internal
//! addresses, connects to exactly the addresses it checked, and records the decision.
//! HTTPS comes as `CONNECT host:port` and is tunnelled untouched; plain HTTP comes in absolute
//! form (`GET http://host/path`) and is forwarded.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::rules::{self, DomainRule};

type Body = BoxBody<Bytes, hyper::Error>;

/// One request through the proxy, allowed or refused: the payload of an `egress` event. It
/// holds no path or header, which may carry secrets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EgressRecord {
    pub host: String,
    pub port: u16,
    pub method: String,
    pub allowed: bool,
    /// Why it was refused.
    pub reason: Option<String>,
}

impl EgressRecord {
    pub fn to_json(&self) -> serde_json::Value {
        let mut payload = json!({
            "host": self.host, "port": self.port, "method": self.method, "allowed": self.allowed,
        });
        if let Some(reason) = &self.reason {
            payload["reason"] = json!(reason);
        }
        payload
    }
}

/// What the proxy knows of an admitted sandbox.
struct Admission {
    rules: Arc<Vec<DomainRule>>,
    records: mpsc::UnboundedSender<EgressRecord>,
}

type Admitted = Arc<Mutex<HashMap<IpAddr, Admission>>>;

/// A running proxy. Dropping it stops the listener.
pub struct EgressProxy {
    addr: SocketAddr,
    admitted: Admitted,
    listener: tokio::task::JoinHandle<()>,
}

/// A sandbox's admission: while it lives, requests from its address are judged by its rules.
/// Drop it before the sandbox goes, so an address the engine hands out again is unknown.
pub struct Admit {
    admitted: Admitted,
    source: IpAddr,
}

impl Drop for Admit {
    fn drop(&mut self) {
        self.admitted.lock().expect("admitted").remove(&self.source);
    }
}

/// How a name becomes addresses. `pinned` names go to the addresses written for them, and
/// only those bypass the internal-address check: an operator pins an internal mirror (or a
/// test its local server) on purpose, by name; no lookup can reach an internal address.
#[derive(Clone, Debug, Default)]
pub struct Resolver {
    pub pinned: HashMap<String, IpAddr>,
}

impl EgressProxy {
    /// Listens on `bind`: the egress network's gateway, and a port (0 for any free one).
    pub async fn start(bind: SocketAddr, resolver: Resolver) -> std::io::Result<Self> {
        let listener = TcpListener::bind(bind).await?;
        let addr = listener.local_addr()?;
        let admitted: Admitted = Default::default();
        let serving = serve(listener, admitted.clone(), Arc::new(resolver));
        Ok(Self {
            addr,
            admitted,
            listener: tokio::spawn(serving),
        })
    }

    /// Where sandboxes reach it.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Admits the sandbox at `source` with its rules; each of its requests is sent on the
    /// channel returned, which closes when the admission is dropped.
    pub fn admit(
        &self,
        source: IpAddr,
        rules: Vec<DomainRule>,
    ) -> (Admit, mpsc::UnboundedReceiver<EgressRecord>) {
        let (records, received) = mpsc::unbounded_channel();
        let admission = Admission {
            rules: Arc::new(rules),
            records,
        };
        self.admitted
            .lock()
            .expect("admitted")
            .insert(source, admission);
        let admit = Admit {
            admitted: self.admitted.clone(),
            source,
        };
        (admit, received)
    }
}

impl Drop for EgressProxy {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

async fn serve(listener: TcpListener, admitted: Admitted, resolver: Arc<Resolver>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                tracing::warn!(error = %err, "the egress proxy cannot accept a connection");
                continue;
            }
        };
        let (admitted, resolver) = (admitted.clone(), resolver.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                handle(request, peer.ip(), admitted.clone(), resolver.clone())
            });
            let served = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades()
                .await;
            if let Err(err) = served {
                tracing::debug!(error = %err, "an egress proxy connection ended");
            }
        });
    }
}

/// Judges one request and, if allowed, carries it out.
async fn handle(
    request: Request<Incoming>,
    source: IpAddr,
    admitted: Admitted,
    resolver: Arc<Resolver>,
) -> Result<Response<Body>, hyper::Error> {
    let found = {
        let admitted = admitted.lock().expect("admitted");
        admitted
            .get(&source)
            .map(|a| (a.rules.clone(), a.records.clone()))
    };
    let Some((rules, records)) = found else {
        return Ok(refusal("this address is not a sandbox the proxy knows"));
    };
    let method = request.method().to_string();
    let Some((host, port)) = target(&request) else {
        return Ok(refusal(
            "send CONNECT host:port, or an absolute http:// URL (set HTTP_PROXY/HTTPS_PROXY)",
        ));
    };
    let judged = match not_an_address(&host).and_then(|()| rules::check(&rules, &host, &method)) {
        Ok(()) => resolve(&resolver, &host, port).await,
        Err(reason) => Err(reason),
    };
    let _ = records.send(EgressRecord {
        host: host.clone(),
        port,
        method,
        allowed: judged.is_ok(),
        reason: judged.as_ref().err().cloned(),
    });
    let addresses = match judged {
        Ok(addresses) => addresses,
        Err(reason) => return Ok(refusal(&reason)),
    };
    match *request.method() == Method::CONNECT {
        true => Ok(tunnel(request, addresses)),
        false => forward(request, &host, addresses).await,
    }
}

/// The host and port a proxy request names: `CONNECT`'s authority, or an `http://` URL's.
fn target(request: &Request<Incoming>) -> Option<(String, u16)> {
    let uri = request.uri();
    let default_port = match *request.method() == Method::CONNECT {
        true => None,
        false if uri.scheme_str() == Some("http") => Some(80),
        false => return None,
    };
    let authority = uri.authority()?;
    let port = authority.port_u16().or(default_port)?;
    Some((authority.host().to_ascii_lowercase(), port))
}

/// Refuses an IP literal: what is allowed is names, and an address would skip their checks.
fn not_an_address(host: &str) -> Result<(), String> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<IpAddr>() {
        Ok(_) => Err(format!(
            "{host} is an IP address; only allowed names are reached"
        )),
        Err(_) => Ok(()),
    }
}

/// The addresses to connect to; a name with any internal address among its answers is refused
/// unless it is pinned.
async fn resolve(resolver: &Resolver, host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
    if let Some(ip) = resolver.pinned.get(host.trim_end_matches('.')) {
        return Ok(vec![SocketAddr::new(*ip, port)]);
    }
    let addresses: Vec<SocketAddr> = match tokio::net::lookup_host((host, port)).await {
        Ok(found) => found.collect(),
        Err(err) => return Err(format!("{host} does not resolve: {err}")),
    };
    if addresses.is_empty() {
        return Err(format!("{host} does not resolve"));
    }
    if let Some(internal) = addresses
        .iter()
        .find(|addr| berth_guard::is_internal(addr.ip()))
    {
        return Err(format!(
            "{host} resolves to an internal address ({})",
            internal.ip()
        ));
    }
    Ok(addresses)
}

/// Answers `200` and, once the client's connection is handed over, joins it to the target.
fn tunnel(request: Request<Incoming>, addresses: Vec<SocketAddr>) -> Response<Body> {
    tokio::spawn(async move {
        let upstream = TcpStream::connect(&addresses[..]).await;
        let upgraded = hyper::upgrade::on(request).await;
        match (upstream, upgraded) {
            (Ok(mut upstream), Ok(upgraded)) => {
                let mut client = TokioIo::new(upgraded);
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            }
            (Err(err), _) => tracing::debug!(error = %err, "an egress tunnel cannot connect"),
            (_, Err(err)) => tracing::debug!(error = %err, "an egress tunnel was not upgraded"),
        }
    });
    Response::new(empty())
}

/// Sends a plain-HTTP request on in origin form, without the headers meant for the proxy.
async fn forward(
    request: Request<Incoming>,
    host: &str,
    addresses: Vec<SocketAddr>,
) -> Result<Response<Body>, hyper::Error> {
    let stream = match TcpStream::connect(&addresses[..]).await {
        Ok(stream) => stream,
        Err(err) => return Ok(failure(&format!("cannot connect to {host}: {err}"))),
    };
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let (mut parts, body) = request.into_parts();
    // The server gets the name that was checked, not another the client put in `Host` (which
    // on a shared front end could reach a site that is not allowed).
    let authority = parts.uri.authority().map(|a| a.as_str().to_string());
    if let Some(value) = authority.and_then(|a| hyper::header::HeaderValue::from_str(&a).ok()) {
        parts.headers.insert(hyper::header::HOST, value);
    }
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |path| path.as_str())
        .to_string();
    parts.uri = path.parse().expect("a path and query is a URI");
    parts.headers.remove("proxy-connection");
    parts.headers.remove("proxy-authorization");
    let response = sender
        .send_request(Request::from_parts(parts, body))
        .await?;
    Ok(response.map(|body| body.boxed()))
}

fn refusal(reason: &str) -> Response<Body> {
    text(
        StatusCode::FORBIDDEN,
        format!("refused by Berth's egress proxy: {reason}\n"),
    )
}

fn failure(reason: &str) -> Response<Body> {
    text(StatusCode::BAD_GATEWAY, format!("{reason}\n"))
}

fn text(status: StatusCode, body: String) -> Response<Body> {
    let mut response = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() = status;
    response
}

fn empty() -> Body {
    Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn names_are_resolved_here_and_internal_answers_refused_unless_pinned() {
        let plain = Resolver::default();
        let err = resolve(&plain, "localhost", 80).await.unwrap_err();
        assert!(
            err.starts_with("localhost resolves to an internal address"),
            "{err}"
        );

        let pinned = Resolver {
            pinned: HashMap::from([("mirror.corp.example".into(), [10, 0, 0, 5].into())]),
        };
        assert_eq!(
            resolve(&pinned, "mirror.corp.example", 443).await,
            Ok(vec!["10.0.0.5:443".parse().unwrap()])
        );
        let err = resolve(&pinned, "localhost", 80).await.unwrap_err();
        assert!(
            err.contains("internal address"),
            "only the pinned name: {err}"
        );
    }

    #[test]
    fn ip_literals_are_refused_in_every_spelling() {
        for host in ["10.0.0.5", "8.8.8.8", "[::1]", "[2001:db8::1]"] {
            let err = not_an_address(host).unwrap_err();
            assert!(err.contains("is an IP address"), "{host}: {err}");
        }
        assert_eq!(not_an_address("pypi.org"), Ok(()));
    }
}

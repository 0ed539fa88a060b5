//! HTTPS from certificate files, with rustls (on the `ring` provider, which the HTTP clients
//! already use). Phones, service workers, Web Push and GitHub's webhooks need HTTPS; a reverse
//! proxy in front is the other way (docs/deploy.md).

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum_server::tls_rustls::RustlsConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;

/// How long requests in flight may finish after shutdown is asked for.
const GRACE: Duration = Duration::from_secs(30);

/// A certificate chain and its private key, read from PEM files.
#[derive(Clone)]
pub struct Certificate {
    config: RustlsConfig,
}

impl Certificate {
    /// Reads and checks both files now, so that a bad certificate stops the start with its
    /// path in the message instead of failing every handshake later.
    pub async fn load(cert: PathBuf, key: PathBuf) -> Result<Self, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let read = |path: &PathBuf| {
            std::fs::read(path).map_err(|err| format!("cannot read {}: {err}", path.display()))
        };
        let (chain, key_pem) = (read(&cert)?, read(&key)?);
        let chain = CertificateDer::pem_slice_iter(&chain)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|err| format!("tls_cert {}: {err}", cert.display()))?;
        if chain.is_empty() {
            return Err(format!("tls_cert {} holds no certificate", cert.display()));
        }
        let private = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|err| {
            format!(
                "tls_key {} holds no usable private key: {err}",
                key.display()
            )
        })?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|err| err.to_string())?
            .with_no_client_auth()
            .with_single_cert(chain, private)
            .map_err(|err| format!("tls_cert and tls_key do not make a certificate: {err}"))?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Self {
            config: RustlsConfig::from_config(Arc::new(config)),
        })
    }
}

/// Serves `app` over TLS on `listener` until `shutdown`, then lets requests finish.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    certificate: Certificate,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let handle = axum_server::Handle::new();
    let stopping = handle.clone();
    tokio::spawn(async move {
        shutdown.await;
        stopping.graceful_shutdown(Some(GRACE));
    });
    axum_server::from_tcp_rustls(listener.into_std()?, certificate.config)
        .handle(handle)
        .serve(app.into_make_service())
        .await
}

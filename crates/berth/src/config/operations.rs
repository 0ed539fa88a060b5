//! How the node is operated rather than what it does: how it logs, where it serves metrics,
//! and the certificate it serves HTTPS with.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Operations {
    /// `text` for a person (colours only at a terminal) or `json`, one object a line.
    pub log_format: LogFormat,
    /// Where `/metrics` (Prometheus) is served; off when unset.
    pub metrics_listen: Option<SocketAddr>,
    /// The certificate chain (PEM) to serve HTTPS with; with `tls_key`.
    pub tls_cert: Option<PathBuf>,
    /// Its private key (PEM).
    pub tls_key: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl Operations {
    pub fn validate(&self) -> Result<(), String> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) | (None, Some(_)) => {
                Err("tls_cert and tls_key go together: set both to serve HTTPS".into())
            }
            _ => Ok(()),
        }
    }

    /// The certificate to serve HTTPS with, read and checked; `None` for plain HTTP.
    pub async fn certificate(&self) -> anyhow::Result<Option<berth_server::tls::Certificate>> {
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
            return Ok(None);
        };
        let certificate = berth_server::tls::Certificate::load(cert.clone(), key.clone()).await;
        Ok(Some(certificate.map_err(anyhow::Error::msg)?))
    }
}

//! `berth server` serving HTTPS from certificate files: a certificate made here for
//! 127.0.0.1 by a CA made here, and clients that trust that CA (or do not).

mod common;

use common::{berth, start_server, terminate, token};
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};

/// A CA and a server certificate it signed for 127.0.0.1, as PEM: (CA, chain, key).
fn certificates() -> (String, String, String) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let params =
        CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    (ca.pem(), cert.pem(), key.serialize_pem())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_is_served_over_https_with_the_configured_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, chain, key) = certificates();
    std::fs::write(dir.path().join("cert.pem"), chain).unwrap();
    std::fs::write(dir.path().join("key.pem"), key).unwrap();
    let token = token(dir.path());
    let mut server = berth(dir.path());
    server
        .args([
            "server",
            "--no-runner",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            "state",
        ])
        .env("BERTH_TLS_CERT", "cert.pem")
        .env("BERTH_TLS_KEY", "key.pem");
    let (mut child, url, _) = start_server(server);
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");

    let trusting = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).unwrap())
        .build()
        .unwrap();
    let answer = trusting
        .get(format!("{url}/v1/me"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let me: serde_json::Value = answer.json().await.unwrap();
    assert_eq!(me["name"], "alice", "{me}");

    // A client that does not trust the CA refuses the connection; plain HTTP gets no answer.
    let err = reqwest::get(format!("{url}/healthz")).await.unwrap_err();
    assert!(err.is_connect(), "{err:?}");
    let plain = url.replace("https://", "http://");
    assert!(reqwest::get(format!("{plain}/healthz")).await.is_err());
    assert!(terminate(&mut child).success());
}

#[test]
fn a_key_that_does_not_match_or_half_a_pair_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let (_, chain, _) = certificates();
    let (_, _, other_key) = certificates();
    std::fs::write(dir.path().join("cert.pem"), chain).unwrap();
    std::fs::write(dir.path().join("other.pem"), other_key).unwrap();
    let start = |settings: &[(&str, &str)]| {
        let mut server = berth(dir.path());
        server.args([
            "server",
            "--no-runner",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            "state",
        ]);
        for (key, value) in settings {
            server.env(key, value);
        }
        let output = server.output().unwrap();
        assert_eq!(output.status.code(), Some(2));
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let stderr = start(&[
        ("BERTH_TLS_CERT", "cert.pem"),
        ("BERTH_TLS_KEY", "other.pem"),
    ]);
    assert!(
        stderr.contains("tls_cert and tls_key do not make a certificate"),
        "{stderr}"
    );
    let stderr = start(&[("BERTH_TLS_CERT", "cert.pem")]);
    assert!(
        stderr.contains("tls_cert and tls_key go together"),
        "{stderr}"
    );
    let stderr = start(&[
        ("BERTH_TLS_CERT", "missing.pem"),
        ("BERTH_TLS_KEY", "other.pem"),
    ]);
    assert!(stderr.contains("cannot read missing.pem"), "{stderr}");
}

//! TLS to PostgreSQL, against a real server with `ssl=on` and a certificate from a CA this test
//! makes: the database URL's `sslmode` and `sslrootcert` decide what Berth accepts.

use berth_testkit::postgres_server::PostgresServer;
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use sqlx::Connection;

/// A certificate authority made for one test.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca { cert, key }
    }

    /// A server certificate and its key (PEM) for these host names or addresses.
    fn issue(&self, names: &[&str]) -> (String, String) {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// Writes the CA's certificate to a file, as an operator would for `sslrootcert`.
    fn write(&self, dir: &tempfile::TempDir) -> String {
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, self.cert.pem()).unwrap();
        path.display().to_string()
    }
}

fn url(server: &PostgresServer, query: &str) -> String {
    format!(
        "postgres://postgres@127.0.0.1:{}/postgres?{query}",
        server.port
    )
}

/// Whether the connection this URL opens is encrypted, asked of the server itself.
async fn encrypted(url: &str) -> bool {
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(&mut conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn verify_full_with_the_right_ca_connects_and_migrates() {
    let ca = Ca::new("Berth test CA");
    let (cert, key) = ca.issue(&["localhost", "127.0.0.1"]);
    let Some(server) = PostgresServer::start_with_tls(&cert, &key) else {
        return;
    };
    let files = tempfile::tempdir().unwrap();
    let url = url(
        &server,
        &format!("sslmode=verify-full&sslrootcert={}", ca.write(&files)),
    );

    let store = berth_store::open_url(&url).await.unwrap();
    store.ping().await.unwrap();
    assert!(encrypted(&url).await, "the connection is not encrypted");
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    let migrations: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert!(migrations > 0, "no migration ran over TLS");
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused_naming_the_cause() {
    let (cert, key) = Ca::new("The server's CA").issue(&["localhost", "127.0.0.1"]);
    let Some(server) = PostgresServer::start_with_tls(&cert, &key) else {
        return;
    };
    let files = tempfile::tempdir().unwrap();
    let other = Ca::new("Some other CA").write(&files);
    let url = url(&server, &format!("sslmode=verify-full&sslrootcert={other}"));

    let err = berth_store::open_url(&url).await.err().expect("refused");
    let message = err.to_string();
    assert!(
        matches!(err, berth_store::StoreError::Tls(_)),
        "not a TLS error: {message}"
    );
    assert!(
        message.contains("UnknownIssuer"),
        "the cause is not named: {message}"
    );
    assert!(
        message.contains("sslrootcert"),
        "no hint at the fix: {message}"
    );
}

#[tokio::test]
async fn require_without_a_ca_encrypts_without_verifying() {
    // A certificate no one trusts: `require` encrypts but, as in libpq, checks nothing.
    let (cert, key) = Ca::new("Unknown CA").issue(&["db.internal"]);
    let Some(server) = PostgresServer::start_with_tls(&cert, &key) else {
        return;
    };
    let url = url(&server, "sslmode=require");

    let store = berth_store::open_url(&url).await.unwrap();
    store.ping().await.unwrap();
    assert!(encrypted(&url).await, "sslmode=require did not encrypt");
}

#[tokio::test]
async fn verify_full_refuses_a_certificate_for_another_host() {
    let ca = Ca::new("Berth test CA");
    let (cert, key) = ca.issue(&["db.internal"]);
    let Some(server) = PostgresServer::start_with_tls(&cert, &key) else {
        return;
    };
    let files = tempfile::tempdir().unwrap();
    let root = ca.write(&files);
    let url = url(&server, &format!("sslmode=verify-full&sslrootcert={root}"));

    let err = berth_store::open_url(&url).await.err().expect("refused");
    let message = err.to_string();
    assert!(
        matches!(err, berth_store::StoreError::Tls(_)),
        "not a TLS error: {message}"
    );
    assert!(
        message.contains("db.internal"),
        "the cause is not named: {message}"
    );
}

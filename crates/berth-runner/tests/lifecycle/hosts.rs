//! A repository's host cannot send the clone, or the owner's token, anywhere else: git on the
//! host follows no redirect.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use berth_proto::TaskStatus;
use tokio::io::AsyncReadExt;

use crate::{run_with, Nothing, Repo, Setup, TOKEN};

/// A listener that records the start of every request that reaches it.
async fn recorder() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut head = vec![0u8; 4096];
            let read = socket.read(&mut head).await.unwrap_or(0);
            record
                .lock()
                .unwrap()
                .push(String::from_utf8_lossy(&head[..read]).into_owned());
        }
    });
    (address, seen)
}

/// A host that answers every request with a redirect to `target`.
async fn redirector(target: SocketAddr) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let app = axum::Router::new().fallback(move |uri: axum::http::Uri| async move {
        let location = format!("http://{target}{uri}");
        (StatusCode::FOUND, [(header::LOCATION, location)]).into_response()
    });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    address
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_takes_neither_the_clone_nor_the_token_elsewhere() {
    let (elsewhere, seen) = recorder().await;
    let listed = redirector(elsewhere).await;
    let setup = Setup {
        repo: Repo::At(format!("http://{listed}/acme/tool.git"), listed),
        token: Some(TOKEN.to_string()),
        max_attempts: 1,
        ..Setup::default()
    };
    let (task, _) = run_with(Nothing, setup).await;
    assert_eq!(task.status, TaskStatus::Failed);
    let reason = task.error.unwrap();
    assert!(
        reason.starts_with("cloning the repository failed"),
        "{reason}"
    );
    assert!(!reason.contains(TOKEN), "{reason}");
    let reached = seen.lock().unwrap().clone();
    assert!(
        reached.is_empty(),
        "the clone followed the redirect: {reached:?}"
    );
}

/// Prints the token in the form git's header carries it, then fails naming it.
struct LeaksTheHeader(String);

#[async_trait::async_trait]
impl berth_runner::attempt::Work for LeaksTheHeader {
    async fn run(&self, job: berth_runner::attempt::Job<'_>) -> berth_runner::attempt::Ending {
        let echo = berth_sandbox::ExecRequest::new(format!("echo {}", self.0));
        let _ = job.exec_streamed(&echo, None).await;
        berth_runner::attempt::Ending::Failed(format!("the header was {}", self.0))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_is_redacted_in_the_form_git_sends_it_too() {
    use base64::Engine;
    let header =
        base64::engine::general_purpose::STANDARD.encode(format!("x-access-token:{TOKEN}"));
    let setup = Setup {
        token: Some(TOKEN.to_string()),
        max_attempts: 1,
        ..Setup::default()
    };
    let (task, events) = run_with(LeaksTheHeader(header.clone()), setup).await;
    assert_eq!(task.error.as_deref(), Some("the header was [REDACTED]"));
    let all = serde_json::to_string(&events).unwrap();
    assert!(!all.contains(&header), "{all}");
    assert!(all.contains("[REDACTED]"), "{all}");
}

//! A git server on loopback speaking git's smart HTTP protocol, for clone, fetch and push:
//! an axum front to the real `git http-backend`, run as CGI per request. It can demand a
//! token (HTTP Basic, as GitHub takes `x-access-token:<token>`), one fixed token or whichever
//! a check accepts (a GitHub App's live installation tokens, say), and answers questions about
//! its repositories for the tests' assertions.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use base64::Engine;

/// Whether a token may reach a repository: `(owner/name, token)`.
type TokenCheck = Arc<dyn Fn(&str, &str) -> bool + Send + Sync>;

#[derive(Default)]
struct Inner {
    tokens: Option<TokenCheck>,
    /// `(method, path and query, had an Authorization header)`
    requests: Vec<(String, String, bool)>,
    pushes: usize,
}

#[derive(Clone)]
struct Shared {
    root: PathBuf,
    inner: Arc<Mutex<Inner>>,
}

/// The server and its repositories, under a temporary directory removed on drop.
pub struct GitServer {
    url: String,
    root: tempfile::TempDir,
    inner: Arc<Mutex<Inner>>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for GitServer {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl GitServer {
    /// Starts serving on a free loopback port, with no repositories and no token required.
    pub async fn start() -> GitServer {
        let root = tempfile::tempdir().expect("a temporary directory");
        let inner = Arc::new(Mutex::new(Inner::default()));
        let shared = Shared {
            root: root.path().to_path_buf(),
            inner: inner.clone(),
        };
        let app = Router::new().fallback(serve).with_state(shared);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("git server");
        });
        GitServer {
            url,
            root,
            inner,
            server,
        }
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> &str {
        &self.url
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("git server lock")
    }

    fn bare(&self, path: &str) -> PathBuf {
        self.root.path().join(format!("{path}.git"))
    }

    /// Creates `<path>.git` (`path` like `acme/widgets`) with one commit on `main` holding
    /// `files`, by `Test <test@example.com>`, and HEAD on `main`; returns its clone URL.
    /// Anyone may push to it unless [`GitServer::require_token`] is called.
    pub fn create_repo(&self, path: &str, files: &[(&str, &str)]) -> String {
        self.create_repo_with(path, |work| {
            for (name, contents) in files {
                let file = work.join(name);
                std::fs::create_dir_all(file.parent().expect("a parent")).expect("mkdir");
                std::fs::write(file, contents).expect("write");
            }
        })
    }

    /// Like [`GitServer::create_repo`], with the first commit's files made by `fill` in the
    /// working directory it is given (large or binary files, say).
    pub fn create_repo_with(&self, path: &str, fill: impl FnOnce(&Path)) -> String {
        let work = tempfile::tempdir().expect("a temporary directory");
        fill(work.path());
        git(work.path(), &["init", "-q", "-b", "main"]);
        git(work.path(), &["add", "-A"]);
        git(work.path(), &["commit", "--allow-empty", "-qm", "initial"]);
        let bare = self.bare(path);
        std::fs::create_dir_all(bare.parent().expect("a parent")).expect("mkdir");
        let work_path = work.path().to_string_lossy().to_string();
        let bare_path = bare.to_string_lossy().to_string();
        git(
            self.root.path(),
            &["clone", "-q", "--bare", &work_path, &bare_path],
        );
        git(&bare, &["config", "http.receivepack", "true"]);
        format!("{}/{path}.git", self.url)
    }

    /// From now on, every request needs HTTP Basic with `token` as the user or the password.
    pub fn require_token(&self, token: &str) {
        let token = token.to_string();
        self.accept_tokens(move |_, given| given == token);
    }

    /// From now on, every request needs HTTP Basic with a token (as the user or the password)
    /// that `check(owner/name, token)` accepts for the repository asked.
    pub fn accept_tokens(&self, check: impl Fn(&str, &str) -> bool + Send + Sync + 'static) {
        self.lock().tokens = Some(Arc::new(check));
    }

    /// The commit `refs/heads/<branch>` points at.
    pub fn branch_head(&self, path: &str, branch: &str) -> Option<String> {
        output(
            &self.bare(path),
            &[
                "rev-parse",
                "--verify",
                "-q",
                &format!("refs/heads/{branch}"),
            ],
        )
    }

    /// A file's contents at a revision.
    pub fn file_at(&self, path: &str, rev: &str, file: &str) -> Option<String> {
        output_raw(&self.bare(path), &["show", &format!("{rev}:{file}")])
    }

    /// Commit subjects from `rev` back, newest first.
    pub fn log(&self, path: &str, rev: &str) -> Vec<String> {
        output(&self.bare(path), &["log", "--format=%s", rev])
            .map(|text| text.lines().map(str::to_string).collect())
            .unwrap_or_default()
    }

    /// Pushes the server accepted so far: `git-receive-pack` POSTs that updated every ref.
    pub fn pushes(&self) -> usize {
        self.lock().pushes
    }

    /// Every request so far, refused ones included: `(method, path and query, had an
    /// Authorization header)`.
    pub fn requests(&self) -> Vec<(String, String, bool)> {
        self.lock().requests.clone()
    }
}

/// `git -C dir`, deaf to the caller's git configuration and identity.
fn git_in(dir: &Path) -> Command {
    let mut command = Command::new("git");
    command
        .arg("-C")
        .arg(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "Test")
        .env("GIT_AUTHOR_EMAIL", "test@example.com")
        .env("GIT_COMMITTER_NAME", "Test")
        .env("GIT_COMMITTER_EMAIL", "test@example.com")
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE");
    command
}

fn git(dir: &Path, args: &[&str]) {
    let status = git_in(dir).args(args).status().expect("git runs");
    assert!(status.success(), "git {args:?}");
}

fn output_raw(dir: &Path, args: &[&str]) -> Option<String> {
    let out = git_in(dir).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn output(dir: &Path, args: &[&str]) -> Option<String> {
    output_raw(dir, args).map(|text| text.trim().to_string())
}

/// Whether the request carries a token accepted for its repository, if one is required.
fn authorized(inner: &Inner, uri: &Uri, headers: &HeaderMap) -> bool {
    let Some(check) = &inner.tokens else {
        return true;
    };
    // `/owner/name.git/info/refs` → `owner/name`
    let path = uri.path().trim_start_matches('/');
    let repository = path.split_once(".git/").map_or(path, |(repo, _)| repo);
    let Some(basic) = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
    else {
        return false;
    };
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(basic.trim()) else {
        return false;
    };
    let decoded = String::from_utf8_lossy(&decoded);
    let (user, password) = decoded.split_once(':').unwrap_or((&decoded, ""));
    check(repository, user) || check(repository, password)
}

async fn serve(
    State(shared): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let allowed = {
        let mut inner = shared.inner.lock().expect("git server lock");
        let path = uri
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default();
        let ok = authorized(&inner, &uri, &headers);
        inner.requests.push((
            method.to_string(),
            path,
            headers.contains_key("authorization"),
        ));
        ok
    };
    if !allowed {
        return (
            StatusCode::UNAUTHORIZED,
            [("www-authenticate", "Basic realm=\"git\"")],
            "authentication required\n",
        )
            .into_response();
    }
    // Packs can be large: no body limit here. Hyper has already undone chunked transfer;
    // a gzip body stays gzip, for http-backend to inflate.
    let Ok(body) = axum::body::to_bytes(body, usize::MAX).await else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let answer = match cgi(&shared.root, &method, &uri, &headers, body).await {
        Ok(answer) => answer,
        Err(problem) => return (StatusCode::INTERNAL_SERVER_ERROR, problem).into_response(),
    };
    let is_push = method == Method::POST && uri.path().ends_with("/git-receive-pack");
    if is_push && answer.status == StatusCode::OK && push_accepted(&answer.body) {
        shared.inner.lock().expect("git server lock").pushes += 1;
    }
    let mut response = Response::builder().status(answer.status);
    for (name, value) in &answer.headers {
        response = response.header(name, value);
    }
    response
        .body(Body::from(answer.body))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// Whether receive-pack's report says the pack unpacked and no ref was refused. The report
/// is pkt-lines, maybe inside side-band ones, so look for its lines rather than parse it.
fn push_accepted(report: &[u8]) -> bool {
    let has = |needle: &[u8]| report.windows(needle.len()).any(|w| w == needle);
    has(b"unpack ok\n") && !has(b"ng refs/")
}

/// What a CGI program answered: `Status:` (200 when absent), the other headers, the body.
struct CgiAnswer {
    status: StatusCode,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// Runs `git http-backend` for one request; `Err` carries its stderr when it answered no
/// CGI headers.
async fn cgi(
    root: &Path,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<CgiAnswer, String> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let mut command = tokio::process::Command::new("git");
    command
        .arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("REQUEST_METHOD", method.as_str())
        .env("PATH_INFO", uri.path())
        .env("QUERY_STRING", uri.query().unwrap_or(""))
        .env("CONTENT_TYPE", header("content-type"))
        .env("CONTENT_LENGTH", body.len().to_string())
        // Whoever got past `authorized` may push (receive-pack wants an authenticated user).
        .env("REMOTE_USER", "berth-test")
        .env("REMOTE_ADDR", "127.0.0.1")
        .env("GIT_PROTOCOL", header("git-protocol"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let encoding = header("content-encoding");
    if !encoding.is_empty() {
        command.env("HTTP_CONTENT_ENCODING", encoding);
    }
    let mut child = command
        .spawn()
        .map_err(|e| format!("git http-backend: {e}"))?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    // Written while the output is read, so neither side waits on a full pipe.
    let feed = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        let _ = stdin.write_all(&body).await;
    });
    let out = child
        .wait_with_output()
        .await
        .map_err(|e| format!("git http-backend: {e}"))?;
    let _ = feed.await;
    parse_cgi(out.stdout).ok_or_else(|| String::from_utf8_lossy(&out.stderr).into_owned())
}

fn parse_cgi(mut stdout: Vec<u8>) -> Option<CgiAnswer> {
    // Headers end at the first empty line; the body after it is binary and may hold either.
    let (at, gap) = [(find(&stdout, b"\r\n\r\n"), 4), (find(&stdout, b"\n\n"), 2)]
        .into_iter()
        .filter_map(|(at, gap)| Some((at?, gap)))
        .min()?;
    let body = stdout.split_off(at + gap);
    let mut answer = CgiAnswer {
        status: StatusCode::OK,
        headers: Vec::new(),
        body,
    };
    for line in String::from_utf8_lossy(&stdout[..at]).lines() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let (name, value) = (name.trim(), value.trim());
        if name.eq_ignore_ascii_case("status") {
            let code = value.split_whitespace().next().unwrap_or("");
            answer.status = code.parse().unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        } else {
            answer.headers.push((name.to_string(), value.to_string()));
        }
    }
    Some(answer)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

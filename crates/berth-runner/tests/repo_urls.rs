//! Where git really connects for a repository URL. For a corpus of tricky URLs, with listeners
//! of the test's own on several loopback addresses recording every connection, the runner's
//! clone reaches exactly the host and port the guard approved, and a refused URL reaches
//! nothing: git is not even started.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_guard::{AllowedHost, RepoHost};
use berth_proto::{Task, TaskId, UserId};
use berth_runner::attempt::Ending;
use berth_runner::git::{checked_against, Checkout, GitAccess, RepositoryLimits, ResolveHost};
use berth_testkit::git_server::GitServer;

/// Every connection made to any of the test's listeners, by the address it reached.
#[derive(Clone, Default)]
struct Connections(Arc<Mutex<Vec<SocketAddr>>>);

impl Connections {
    /// A listener on `ip`, port 0, that records each connection and closes it at once (so git
    /// fails quickly after connecting); `None` where the address cannot be bound.
    async fn listen(&self, ip: &str) -> Option<SocketAddr> {
        let ip: IpAddr = ip.parse().unwrap();
        let listener = tokio::net::TcpListener::bind((ip, 0)).await.ok()?;
        let address = listener.local_addr().unwrap();
        let seen = self.0.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                // Recorded before the close that makes git give up, so before git ends.
                seen.lock().unwrap().push(socket.local_addr().unwrap());
            }
        });
        Some(address)
    }

    fn take(&self) -> Vec<SocketAddr> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

/// What a corpus entry must do.
enum Expect {
    /// Approved as written, and git connects to the named listener only.
    Reaches(&'static str),
    /// Approved as this normalised URL, and git connects to the named listener only.
    ReachesAs(&'static str, &'static str),
    /// Approved as written, and cloned from the test's git server.
    Clones,
    /// Refused with words containing this; no connection anywhere.
    Refused(&'static str),
}
use Expect::{Clones, Reaches, ReachesAs, Refused};

/// `{A}`…: the ports of the listeners. A and A2 are on 127.0.0.1, B and B2 on 127.0.0.2, C on
/// 127.0.0.3 (which the test's DNS gives for `git.test`), V on [::1], G is the git server on
/// 127.0.0.1. Listed: http://127.0.0.1:{A}, 127.0.0.2:{B}, git.test:{C}, [::1]:{V},
/// http://127.0.0.1:{G}. A2 and B2 are listed nowhere.
const CORPUS: &[(&str, Expect)] = &[
    // Plain URLs reach what they name, up to case; the stored form is lower case.
    ("http://127.0.0.1:{A}/repo.git", Reaches("A")),
    (
        "HTTP://127.0.0.1:{A}/repo.git",
        ReachesAs("A", "http://127.0.0.1:{A}/repo.git"),
    ),
    ("https://127.0.0.2:{B}/o/r.git", Reaches("B")),
    ("ssh://git@127.0.0.2:{B}/o/r.git", Reaches("B")),
    ("ssh://127.0.0.2:{B}/~/r.git", Reaches("B")),
    // An entry listed as http://host:port allows https and ssh on that port too.
    ("https://127.0.0.1:{A}/repo.git", Reaches("A")),
    ("https://git.test:{C}/o/r.git", Reaches("C")),
    (
        "HTTPS://Git.TEST:{C}/O/R.git",
        ReachesAs("C", "https://git.test:{C}/O/R.git"),
    ),
    ("ssh://git@git.test:{C}/o/r.git", Reaches("C")),
    ("https://[::1]:{V}/o/r.git", Reaches("V")),
    ("ssh://git@[::1]:{V}/o/r.git", Reaches("V")),
    ("http://127.0.0.1:{G}/acme/tool.git", Clones),
    // Backslashes: the WHATWG reading is the part before `\@`, git and curl's the part after.
    (
        "http://127.0.0.1:{A}\\@127.0.0.2:{B2}/repo.git",
        Refused("backslashes"),
    ),
    (
        "https://127.0.0.2:{B}\\@127.0.0.1:{A2}/repo.git",
        Refused("backslashes"),
    ),
    (
        "https://git.test:{C}\\@127.0.0.2:{B2}/x.git",
        Refused("backslashes"),
    ),
    (
        "ssh://git@127.0.0.2:{B}\\@127.0.0.1:{A2}/r",
        Refused("backslashes"),
    ),
    (
        "http://127.0.0.1:{G}\\@127.0.0.2:{B2}/acme/tool.git",
        Refused("backslashes"),
    ),
    // `@`, `#` and `?` tricks.
    (
        "http://127.0.0.1:{A}@127.0.0.2:{B2}/repo.git",
        Refused("credentials"),
    ),
    (
        "https://127.0.0.2:{B}@127.0.0.1:{A2}/repo.git",
        Refused("credentials"),
    ),
    ("https://user:pw@127.0.0.2:{B}/o/r", Refused("credentials")),
    ("ssh://git:pw@127.0.0.2:{B}/o/r", Refused("credentials")),
    (
        "ssh://git@127.0.0.1:{A2}@127.0.0.2:{B}/o/r",
        Refused("port"),
    ),
    (
        "http://127.0.0.1:{A}#@127.0.0.2:{B2}/repo.git",
        Refused("fragment"),
    ),
    (
        "http://127.0.0.1:{A}?@127.0.0.2:{B2}/repo.git",
        Refused("query"),
    ),
    (
        "https://127.0.0.2:{B}/o/r?x=@127.0.0.1:{A2}",
        Refused("query"),
    ),
    // Percent-encoded hosts and user names.
    (
        "http://%31%32%37.0.0.1:{A}/repo.git",
        Refused("percent-encoding"),
    ),
    ("https://git%2etest:{C}/o/r", Refused("percent-encoding")),
    ("ssh://%67it@127.0.0.2:{B}/o/r", Refused("percent-encoding")),
    (
        "https://127.0.0.2:{B}/o/%2e%2e/r",
        Refused("percent-encoding"),
    ),
    // IPv6 literals and zones; other spellings of addresses.
    ("https://[::1%25lo]:{V}/o/r", Refused("percent-encoding")),
    (
        "https://[0:0:0:0:0:0:0:1]:{V}/o/r",
        Refused("write it as https://[::1]:{V}/o/r"),
    ),
    (
        "http://[::ffff:127.0.0.1]:{A}/repo.git",
        Refused("not allowed"),
    ),
    ("https://[::1]:{V}:{A}/o/r", Refused("port")),
    ("http://127.1:{A}/repo.git", Refused("four decimal numbers")),
    (
        "http://2130706433:{A}/repo.git",
        Refused("four decimal numbers"),
    ),
    (
        "http://0x7f.0.0.1:{A}/repo.git",
        Refused("four decimal numbers"),
    ),
    (
        "http://127.000.000.001:{A}/repo.git",
        Refused("four decimal numbers"),
    ),
    // IDNA and unicode hosts.
    ("https://gït.test:{C}/o/r", Refused("ASCII")),
    ("https://git\u{3002}test:{C}/o/r", Refused("ASCII")),
    ("https://ｇit.test:{C}/o/r", Refused("ASCII")),
    ("https://xn--gt-bja.test:{C}/o/r", Refused("not allowed")),
    // Trailing dots and odd ports.
    ("http://127.0.0.1.:{A}/repo.git", Refused("end with a dot")),
    ("https://git.test.:{C}/o/r.git", Refused("end with a dot")),
    ("https://git.test:0{C}/o/r", Refused("port")),
    ("https://git.test:/o/r", Refused("port")),
    ("http://127.0.0.1:{A2}/repo.git", Refused("not allowed")),
    ("https://127.0.0.2:{B2}/o/r", Refused("not allowed")),
    (
        "http://127.0.0.2:{B}/o/r",
        Refused("plain http:// is not allowed"),
    ),
    // scp forms with extra colons or brackets.
    ("git@127.0.0.2:{B}:repo.git", Refused("found ':'")),
    (
        "git@127.0.0.2:{B}/repo.git",
        Refused("git host 127.0.0.2 is not allowed"),
    ),
    ("[git@127.0.0.2:{B2}]:repo.git", Refused("user name")),
    ("git@[::1]:{V}:r.git", Refused("found ':'")),
    (
        "git@git.test:o/r.git",
        Refused("git host git.test is not allowed"),
    ),
    ("git.test:o/r.git", Refused("not a URL")),
    // Option-like names.
    (
        "ssh://-oProxyCommand=nc${IFS}127.0.0.2${IFS}{B2}/r",
        Refused("must be a name"),
    ),
    (
        "ssh://-oProxyCommand=true@127.0.0.2:{B}/r",
        Refused("user name"),
    ),
    ("-oProxyCommand=true@127.0.0.2:r", Refused("user name")),
    (
        "ssh://git@127.0.0.2:{B}/-oProxyCommand=true",
        Refused("starting with -"),
    ),
    ("git@-oProxyCommand=true:r", Refused("must be a name")),
    // Paths.
    ("https://127.0.0.2:{B}/o/../r", Refused(". or ..")),
    ("https://127.0.0.2:{B}//o/r", Refused("empty part")),
    ("https://127.0.0.2:{B}", Refused("repository path")),
    // Whitespace and control characters.
    (" https://git.test:{C}/o/r", Refused("spaces")),
    ("https://git.test:{C}/o/r\n", Refused("control")),
    ("https://git.test:{C}/o/r .git", Refused("spaces")),
    (
        "https://git.test:{C}\t@127.0.0.2:{B2}/o/r",
        Refused("spaces"),
    ),
    (
        "https://git.test:{C}\u{0}@127.0.0.2:{B2}/o/r",
        Refused("control"),
    ),
    // Other schemes and transports.
    ("ext::nc 127.0.0.2 {B2}", Refused("spaces")),
    ("file:///etc/passwd", Refused("scheme \"file\"")),
    ("git://127.0.0.2:{B2}/r", Refused("scheme \"git\"")),
    ("", Refused("empty")),
];

/// `{NAME}` replaced by the port of each listener.
fn fill(template: &str, listeners: &BTreeMap<&str, SocketAddr>) -> String {
    // Longest names first, so that {A2} is not read as {A} followed by 2.
    let mut names: Vec<&&str> = listeners.keys().collect();
    names.sort_by_key(|name| std::cmp::Reverse(name.len()));
    names.iter().fold(template.to_string(), |text, name| {
        text.replace(
            &format!("{{{name}}}"),
            &listeners[**name].port().to_string(),
        )
    })
}

/// A task naming `repo_url`, as the store would hand it to a runner.
fn task_for(repo_url: &str) -> Task {
    serde_json::from_value(serde_json::json!({
        "id": TaskId::new(), "owner_id": UserId::new(), "status": "running",
        "repo_url": repo_url, "prompt": "look", "network": "none", "budget": {},
        "open_pull_request": false, "attempt": 1,
        "created_at": "2025-01-01T00:00:00Z", "updated_at": "2025-01-01T00:00:00Z",
        "result": {"has_diff": false},
        "usage": {"input_tokens": 0, "output_tokens": 0, "cache_write_tokens": 0,
                  "cache_read_tokens": 0, "cost_usd": 0.0},
        "last_event_seq": 0,
    }))
    .unwrap()
}

/// The runner's own check ([`checked_against`]), with one name of the test's: `git.test`
/// stands for a public name and "resolves" to 127.0.0.3, which real DNS could not give
/// without the guard refusing it as internal. Records each URL it is asked about.
fn resolver(allowed: Vec<AllowedHost>, asked: Arc<Mutex<Vec<String>>>) -> ResolveHost {
    let guard = checked_against(allowed.clone());
    Arc::new(move |url: String| {
        let (guard, allowed) = (guard.clone(), allowed.clone());
        asked.lock().unwrap().push(url.clone());
        Box::pin(async move {
            let checked = berth_guard::check_repo_url(&url, &allowed)?;
            match checked.host() {
                RepoHost::Name(name) if name == "git.test" => {
                    Ok(vec![SocketAddr::new([127, 0, 0, 3].into(), checked.port())])
                }
                _ => guard(url).await,
            }
        })
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn git_connects_only_where_the_check_approved() {
    let connections = Connections::default();
    let git_server = GitServer::start().await;
    git_server.create_repo("acme/tool", &[("README", "served from G\n")]);
    let mut listeners = BTreeMap::new();
    for (name, ip) in [
        ("A", "127.0.0.1"),
        ("A2", "127.0.0.1"),
        ("B", "127.0.0.2"),
        ("B2", "127.0.0.2"),
        ("C", "127.0.0.3"),
        ("V", "::1"),
    ] {
        match connections.listen(ip).await {
            Some(address) => listeners.insert(name, address),
            None => panic!("cannot listen on {ip}: the test needs loopback IPv4 and IPv6"),
        };
    }
    let served = git_server
        .url()
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    listeners.insert("G", served);
    let allowed: Vec<AllowedHost> = [
        "http://127.0.0.1:{A}",
        "127.0.0.2:{B}",
        "git.test:{C}",
        "[::1]:{V}",
        "http://127.0.0.1:{G}",
    ]
    .iter()
    .map(|entry| AllowedHost::parse(&fill(entry, &listeners)).unwrap())
    .collect();
    let asked = Arc::new(Mutex::new(Vec::new()));
    let work = tempfile::tempdir().unwrap();
    let access = GitAccess {
        resolve_host: resolver(allowed, asked.clone()),
        credentials: Arc::new(|_, _, _| Box::pin(async { None })),
        work_dir: work.path().to_path_buf(),
        limits: RepositoryLimits {
            clone_timeout: Duration::from_secs(30),
            ..RepositoryLimits::default()
        },
    };

    for (template, expect) in CORPUS {
        let url = fill(template, &listeners);
        let result = access.clone_task(&task_for(&url), None).await;
        let seen = Seen {
            checked: std::mem::take(&mut *asked.lock().unwrap()),
            reached: connections.take(),
            result,
            url: url.clone(),
        };
        match expect {
            Reaches(name) => seen.reaches(listeners[name], &url),
            ReachesAs(name, normal) => seen.reaches(listeners[name], &fill(normal, &listeners)),
            Clones => seen.clones("served from G\n").await,
            Refused(says) => seen.refused(&fill(says, &listeners)),
        }
    }
    assert!(!git_server.requests().is_empty(), "the clone came from G");
}

/// What one clone of a corpus entry did.
struct Seen {
    url: String,
    result: Result<Checkout, Ending>,
    /// The URLs the check was asked about.
    checked: Vec<String>,
    /// Where git connected.
    reached: Vec<SocketAddr>,
}

impl Seen {
    /// Approved as `normal`, git ran and connected to `listener` and nowhere else.
    fn reaches(self, listener: SocketAddr, normal: &str) {
        let url = &self.url;
        let Err(Ending::Failed(reason)) = self.result else {
            panic!("{url:?}: expected a failed clone after connecting");
        };
        assert!(
            reason.starts_with("cloning the repository failed"),
            "{url:?}: git did not run: {reason}"
        );
        assert_eq!(self.checked, [normal], "{url:?}: what was checked");
        assert!(!self.reached.is_empty(), "{url:?}: git connected nowhere");
        assert!(
            self.reached.iter().all(|address| *address == listener),
            "{url:?}: approved for {listener}, git reached {:?}",
            self.reached
        );
    }

    /// Approved as written and cloned, with that URL as the checkout's origin.
    async fn clones(self, readme: &str) {
        let url = &self.url;
        let checkout = self
            .result
            .unwrap_or_else(|ending| panic!("{url:?}: {ending:?}"));
        assert_eq!(self.checked, [url.as_str()], "{url:?}");
        let cloned = std::fs::read_to_string(checkout.path().join("README")).unwrap();
        assert_eq!(cloned, readme);
        let origin = checkout.git_text(&["remote", "get-url", "origin"]).await;
        assert_eq!(
            origin.as_ref(),
            Ok(url),
            "git was handed the normalised URL"
        );
        assert!(
            self.reached.is_empty(),
            "{url:?}: also reached {:?}",
            self.reached
        );
    }

    /// Refused with words containing `says`, before git ran, having connected nowhere.
    fn refused(self, says: &str) {
        let url = &self.url;
        let Err(Ending::Failed(reason)) = self.result else {
            panic!("{url:?}: expected a refusal");
        };
        assert!(reason.contains("was refused"), "{url:?}: {reason}");
        assert!(reason.contains(says), "{url:?}: {reason}");
        assert!(
            self.reached.is_empty(),
            "{url:?}: refused, yet reached {:?}",
            self.reached
        );
    }
}

/// The control: handed to git as they were written (as the runner once did), the URLs the
/// WHATWG reader takes for a listed host reach a host that is listed nowhere. If git and curl
/// ever agree with that reader, this fails and the corpus above needs new traps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handed_to_git_raw_the_backslash_forms_reach_unlisted_hosts() {
    let connections = Connections::default();
    let mut listeners = BTreeMap::new();
    for (name, ip) in [("A", "127.0.0.1"), ("A2", "127.0.0.1"), ("B", "127.0.0.2")] {
        listeners.insert(name, connections.listen(ip).await.unwrap());
    }
    listeners.insert("B2", connections.listen("127.0.0.2").await.unwrap());
    for (template, unlisted) in [
        ("http://127.0.0.1:{A}\\@127.0.0.2:{B2}/repo.git", "B2"),
        ("https://127.0.0.2:{B}\\@127.0.0.1:{A2}/repo.git", "A2"),
    ] {
        let url = fill(template, &listeners);
        let whatwg = url::Url::parse(&url).unwrap();
        let listed = [listeners["A"], listeners["B"]];
        let whatwg_port = whatwg.port().unwrap();
        assert!(
            listed.iter().any(|address| address.port() == whatwg_port),
            "{url}: the WHATWG reader takes it for a listed host"
        );
        let _ = tokio::process::Command::new("git")
            .args(["ls-remote", "--", &url])
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_ALLOW_PROTOCOL", "https:http")
            .output()
            .await
            .unwrap();
        assert_eq!(connections.take(), [listeners[unlisted]], "{url}");
    }
}

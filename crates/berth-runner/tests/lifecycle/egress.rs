//! Egress control on the real Docker engine: a sandbox on the internal egress network reaches
//! an allowed name through Berth's proxy and nothing else, and what it asked for shows in its
//! task's events. The allowed name is pinned to this machine's test server with
//! `egress_pinned_hosts`, the one way past the proxy's internal-address check.

use std::collections::BTreeMap;
use std::net::IpAddr;

use async_trait::async_trait;
use berth_proto::{EventKind, Network, TaskStatus};
use berth_runner::attempt::{EgressSettings, Ending, Job, Work};
use berth_runner::egress::{DomainEntry, EgressRecord};
use berth_sandbox::{DockerSandbox, ExecRequest, Limits, NetworkPolicy, Sandbox, SandboxSpec};

use crate::{run_with, Setup};

const ALLOWED: &str = "pkg.berth.test";
const BODY: &str = "hello from the allowed host";

/// A test server on every address of this machine, so that only the route to it decides
/// whether a sandbox reaches it.
async fn test_server() -> u16 {
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let host = |headers: axum::http::HeaderMap| async move {
        format!(
            "host={}",
            headers[axum::http::header::HOST].to_str().unwrap()
        )
    };
    let app = axum::Router::new()
        .route("/hello", axum::routing::get(|| async { BODY }))
        .route("/host", axum::routing::get(host));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    port
}

/// The proxy as the runner starts it, allowing `ALLOWED` (pinned to loopback) and nothing else.
async fn egress() -> EgressSettings {
    let docker = berth_sandbox::connect().await.expect("the Docker engine");
    let settings = berth_runner::Settings {
        egress_allowed_domains: vec![DomainEntry::Domain(ALLOWED.into())],
        egress_pinned_hosts: BTreeMap::from([(ALLOWED.into(), [127, 0, 0, 1].into())]),
        ..Default::default()
    };
    berth_runner::egress::start(&docker, &settings)
        .await
        .expect("the egress proxy starts")
}

/// This machine's address on its way out (a UDP "connect" sends nothing).
fn outward_address() -> IpAddr {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    socket.connect("192.0.2.1:9").unwrap();
    socket.local_addr().unwrap().ip()
}

/// A sandbox on the ordinary sandbox network listening on port 8080: an address outside the
/// egress network that answers whoever reaches it.
async fn listener(docker: &bollard::Docker) -> (DockerSandbox, IpAddr) {
    let sandbox = DockerSandbox::create(docker, &spec("egress-listener"))
        .await
        .unwrap();
    sandbox.set_network(NetworkPolicy::Full).await.unwrap();
    let serve = ExecRequest::new(
        "setsid perl -MIO::Socket::INET -e '$s = IO::Socket::INET->new(LocalPort => 8080, \
         Listen => 5, ReuseAddr => 1) or die; while ($c = $s->accept) { print $c \"hi\\n\"; \
         close $c }' >/dev/null 2>&1 < /dev/null & sleep 1",
    );
    sandbox.exec(&serve, &mut |_, _| {}).await.unwrap();
    let inspected = docker
        .inspect_container(
            sandbox.id(),
            None::<bollard::query_parameters::InspectContainerOptions>,
        )
        .await
        .unwrap();
    let ip = inspected.network_settings.unwrap().networks.unwrap()[berth_sandbox::SANDBOX_NETWORK]
        .ip_address
        .clone()
        .unwrap()
        .parse()
        .unwrap();
    // It does answer, from this machine.
    let mut answer = String::new();
    let mut stream = tokio::net::TcpStream::connect((ip, 8080)).await.unwrap();
    tokio::io::AsyncReadExt::read_to_string(&mut stream, &mut answer)
        .await
        .unwrap();
    assert_eq!(answer, "hi\n");
    (sandbox, ip)
}

fn spec(name: &str) -> SandboxSpec {
    SandboxSpec {
        installation: "egress-test".into(),
        task_id: format!("{name}-{}", uuid::Uuid::now_v7().simple()),
        attempt: 1,
        node_id: "egress-test".into(),
        image: berth_sandbox::default_image(),
        limits: Limits::default(),
    }
}

/// An HTTP GET with Perl's HTTP::Tiny, which takes its proxy from `http_proxy` like curl,
/// git and pip do: prints the status, a space and the body.
fn get(url: &str) -> ExecRequest {
    ExecRequest {
        args: vec![url.to_string()],
        ..ExecRequest::new(
            "perl -MHTTP::Tiny -e '$r = HTTP::Tiny->new->get($ARGV[0]); \
             print \"$r->{status} $r->{content}\"' \"$1\"",
        )
    }
}

/// A CONNECT tunnel through `$HTTPS_PROXY` to `$1`, and a GET of /hello through it, by hand
/// (the image has no TLS client): prints the proxy's status line, then the server's answer.
fn connect_then_get(target: &str) -> ExecRequest {
    let script = r#"p=${HTTPS_PROXY#http://}
exec 3<>"/dev/tcp/${p%:*}/${p##*:}" || exit 9
printf 'CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n' "$1" "$1" >&3
IFS= read -r status <&3; echo "${status%$'\r'}"
while IFS= read -r line <&3 && [ -n "${line%$'\r'}" ]; do :; done
printf 'GET /hello HTTP/1.0\r\nHost: %s\r\n\r\n' "$1" >&3
timeout 20 cat <&3"#;
    ExecRequest {
        args: vec![target.to_string()],
        ..ExecRequest::new(script)
    }
}

async fn run(sandbox: &dyn Sandbox, request: &ExecRequest) -> (Option<i64>, String) {
    let ran = sandbox.exec(request, &mut |_, _| {}).await.unwrap();
    let mut text = String::from_utf8_lossy(&ran.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&ran.stderr));
    (ran.exit_code, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sandbox_reaches_allowed_names_through_the_proxy_and_nothing_else() {
    let port = test_server().await;
    let egress = egress().await;
    let docker = berth_sandbox::connect().await.unwrap();
    let (outside, outside_ip) = listener(&docker).await;
    let sandbox = DockerSandbox::create(&docker, &spec("egress"))
        .await
        .unwrap();
    let proxy = egress.proxy.addr();
    sandbox
        .set_network(NetworkPolicy::Egress { proxy })
        .await
        .unwrap();
    let source = sandbox.egress_address().await.unwrap().expect("an address");
    let (admit, mut records) = egress.proxy.admit(source, egress.rules.clone());
    let host = outward_address();
    let git = berth_testkit::git_server::GitServer::start().await;
    let repo = git.create_repo("acme/tool", &[("README", "hi\n")]);
    let git_port: u16 = repo
        .split(':')
        .nth(2)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();

    let allowed = run(&sandbox, &get(&format!("http://{ALLOWED}:{port}/hello"))).await;
    let tunnelled = run(&sandbox, &connect_then_get(&format!("{ALLOWED}:{port}"))).await;
    // git takes its proxy from the environment as it is, like pip, npm and cargo.
    let ls_remote = run(
        &sandbox,
        &ExecRequest::new(format!(
            "git ls-remote http://{ALLOWED}:{git_port}/acme/tool.git HEAD"
        )),
    )
    .await;
    // An absolute-form request by hand, naming another site in `Host`.
    let fronted = run(
        &sandbox,
        &ExecRequest::new(format!(
            r#"p=${{HTTP_PROXY#http://}}; exec 3<>"/dev/tcp/${{p%:*}}/${{p##*:}}" || exit 9
printf 'GET http://{ALLOWED}:{port}/host HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n' >&3
timeout 20 cat <&3"#
        )),
    )
    .await;
    let other = run(
        &sandbox,
        &get(&format!("http://other.berth.test:{port}/hello")),
    )
    .await;
    let by_address = run(&sandbox, &get(&format!("http://{host}:{port}/hello"))).await;
    // A refused connection would fail at once; a dropped one hangs, so it is given a while.
    let direct = run(
        &sandbox,
        &ExecRequest::new(format!(
            "timeout 10 bash -c 'exec 3<>/dev/tcp/{outside_ip}/8080 && echo connected'"
        )),
    )
    .await;
    // The test server listens on all of this machine's addresses: on the gateway (the host's
    // address on the egress network) and on its outward address it is a host service the
    // sandbox must not reach past the proxy.
    let reach = |ip: IpAddr| {
        ExecRequest::new(format!(
            "timeout 10 bash -c 'exec 3<>/dev/tcp/{ip}/{port} && echo connected'"
        ))
    };
    let host_service_on_gateway = run(&sandbox, &reach(proxy.ip())).await;
    let host_service_outward = run(&sandbox, &reach(host)).await;
    let proxy_port = run(
        &sandbox,
        &ExecRequest::new(format!(
            "exec 3<>/dev/tcp/{}/{} && echo connected",
            proxy.ip(),
            proxy.port()
        )),
    )
    .await;
    drop(admit);
    let _ = sandbox.destroy().await;
    let _ = outside.destroy().await;

    assert_eq!(allowed.1, format!("200 {BODY}"), "{allowed:?}");
    assert!(
        tunnelled.1.starts_with("HTTP/1.1 200") && tunnelled.1.ends_with(BODY),
        "{tunnelled:?}"
    );
    assert!(
        fronted.1.ends_with(&format!("host={ALLOWED}:{port}")),
        "the checked name, not the client's Host: {fronted:?}"
    );
    assert_eq!(ls_remote.0, Some(0), "{ls_remote:?}");
    assert!(ls_remote.1.trim_end().ends_with("\tHEAD"), "{ls_remote:?}");
    assert!(other.1.starts_with("403 "), "{other:?}");
    assert!(
        other
            .1
            .contains("other.berth.test is not an allowed domain"),
        "{other:?}"
    );
    assert!(by_address.1.starts_with("403 "), "{by_address:?}");
    assert!(by_address.1.contains("is an IP address"), "{by_address:?}");
    assert_ne!(
        direct.0,
        Some(0),
        "a direct connection to {host}: {direct:?}"
    );
    assert!(!direct.1.contains("connected"), "{direct:?}");
    for (ip, reached) in [
        (proxy.ip(), &host_service_on_gateway),
        (host, &host_service_outward),
    ] {
        assert!(
            reached.0 != Some(0) && !reached.1.contains("connected"),
            "a host service on {ip}:{port} answered a sandbox on the egress network: {reached:?}"
        );
    }
    assert_eq!(
        proxy_port.0,
        Some(0),
        "the gateway's proxy is reachable: {proxy_port:?}"
    );

    let mut seen = Vec::new();
    let mut git_requests = Vec::new();
    while let Some(record) = records.recv().await {
        match record.port == git_port {
            true => git_requests.push(record),
            false => seen.push(record),
        }
    }
    assert!(!git_requests.is_empty());
    assert!(
        git_requests.iter().all(|r| r.allowed && r.host == ALLOWED),
        "{git_requests:?}"
    );
    let record = |host: &str, method: &str, allowed: bool, reason: Option<&str>| EgressRecord {
        host: host.into(),
        port,
        method: method.into(),
        allowed,
        reason: reason.map(String::from),
    };
    assert_eq!(
        seen,
        vec![
            record(ALLOWED, "GET", true, None),
            record(ALLOWED, "CONNECT", true, None),
            record(ALLOWED, "GET", true, None),
            record(
                "other.berth.test",
                "GET",
                false,
                Some("other.berth.test is not an allowed domain")
            ),
            record(
                &host.to_string(),
                "GET",
                false,
                Some(&format!(
                    "{host} is an IP address; only allowed names are reached"
                ))
            ),
        ]
    );
}

/// Asks for a name the server does not allow, from the work phase.
struct AsksForTooMuch(u16);

#[async_trait]
impl Work for AsksForTooMuch {
    async fn run(&self, job: Job<'_>) -> Ending {
        let url = format!("http://refused.berth.test:{}/hello", self.0);
        match job.exec_streamed(&get(&url), None).await {
            Ok(_) => Ending::Done {
                summary: String::new(),
            },
            Err(ending) => ending,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_request_shows_in_the_tasks_events() {
    let port = test_server().await;
    let setup = Setup {
        network: Network::Allowlist,
        egress: Some(egress().await),
        ..Setup::default()
    };
    let (task, events) = run_with(AsksForTooMuch(port), setup).await;
    assert_eq!(task.status, TaskStatus::Succeeded, "{:?}", task.error);
    let egress: Vec<_> = events
        .iter()
        .filter(|e| e.kind == EventKind::Egress)
        .collect();
    assert_eq!(egress.len(), 1, "{events:?}");
    assert_eq!(
        egress[0].payload,
        serde_json::json!({
            "host": "refused.berth.test", "port": port, "method": "GET", "allowed": false,
            "reason": "refused.berth.test is not an allowed domain",
        })
    );
    let output: String = events
        .iter()
        .filter(|e| e.kind == EventKind::CommandOutput)
        .map(|e| e.payload["text"].as_str().unwrap_or_default())
        .collect();
    assert!(
        output.starts_with("403 refused by Berth's egress proxy"),
        "{output}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_proxy_an_allowlist_task_fails_with_the_reason() {
    let setup = Setup {
        network: Network::Allowlist,
        max_attempts: 1,
        ..Setup::default()
    };
    let (task, _) = run_with(crate::Nothing, setup).await;
    assert_eq!(task.status, TaskStatus::Failed);
    let reason = task.error.unwrap();
    assert!(reason.contains("runs no egress proxy"), "{reason}");
}

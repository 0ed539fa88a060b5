//! A sandbox's networks on the real Docker engine: none by default, the shared bridge, and
//! the egress network with its fence. Without an engine the tests fail on CI (CI is set) and
//! are skipped with a message elsewhere.

mod engine;
mod sandboxes;

use berth_sandbox::{Limits, NetworkPolicy, Sandbox};
use engine::engine;
use sandboxes::{run, sandbox_with, stdout_of, Guard};

const INTERFACES: &str = "ls /sys/class/net | sort | tr '\\n' ' '";

/// A sandbox starts with no network at all, before any policy is set: the clone and the setup
/// commands of a `network: none` task never had one to reach out with.
#[tokio::test]
async fn a_new_sandbox_has_only_loopback() {
    let Some(docker) = engine().await else { return };
    let sandbox = sandbox_with(&docker, Limits::default()).await;
    assert_eq!(stdout_of(&sandbox, INTERFACES).await, "lo ");
    let dns = run(&sandbox, "getent hosts deb.debian.org").await;
    assert_ne!(dns.exit_code, Some(0), "no name resolves without a network");
}

#[tokio::test]
async fn network_none_has_no_route_and_no_dns_while_full_has_the_bridge() {
    let Some(docker) = engine().await else { return };
    let sandbox = sandbox_with(&docker, Limits::default()).await;
    let default_route = "awk 'NR > 1 && $2 == \"00000000\"' /proc/net/route | wc -l";
    sandbox.0.set_network(NetworkPolicy::Full).await.unwrap();
    assert_eq!(stdout_of(&sandbox, INTERFACES).await, "eth0 lo ");
    assert_eq!(stdout_of(&sandbox, default_route).await.trim(), "1");

    sandbox.0.set_network(NetworkPolicy::None).await.unwrap();
    assert_eq!(stdout_of(&sandbox, INTERFACES).await, "lo ");
    assert_eq!(stdout_of(&sandbox, default_route).await.trim(), "0");
    let dns = run(&sandbox, "getent hosts deb.debian.org").await;
    assert_ne!(dns.exit_code, Some(0), "no name resolves without a network");
    sandbox
        .0
        .set_network(NetworkPolicy::None)
        .await
        .expect("switching twice is harmless");
}

/// On the egress network a sandbox has one interface, an address the proxy knows it by, and
/// the proxy variables in every command; leaving it takes all three away.
#[tokio::test]
async fn the_egress_network_comes_with_the_proxy_variables_and_goes_without_them() {
    let Some(docker) = engine().await else { return };
    let sandbox = sandbox_with(&docker, Limits::default()).await;
    let gateway = berth_sandbox::ensure_egress_network(&docker).await.unwrap();
    let proxy = std::net::SocketAddr::new(gateway, 3128);
    let variables = "echo \"$HTTP_PROXY $https_proxy $NO_PROXY\"";
    sandbox.0.set_network(NetworkPolicy::Full).await.unwrap();
    sandbox
        .0
        .set_network(NetworkPolicy::Egress { proxy })
        .await
        .unwrap();
    assert_eq!(
        stdout_of(&sandbox, "ls /sys/class/net | grep -vc '^lo$'")
            .await
            .trim(),
        "1",
        "the sandbox network is left for the egress one"
    );
    assert_eq!(
        stdout_of(&sandbox, variables).await.trim(),
        format!("http://{proxy} http://{proxy} localhost,127.0.0.1,::1")
    );
    let address = sandbox
        .0
        .egress_address()
        .await
        .unwrap()
        .expect("an address");
    assert_eq!(
        stdout_of(&sandbox, "hostname -i").await.trim(),
        address.to_string()
    );

    sandbox.0.set_network(NetworkPolicy::None).await.unwrap();
    assert_eq!(sandbox.0.egress_address().await.unwrap(), None);
    assert_eq!(stdout_of(&sandbox, variables).await.trim(), "");
}

/// A stand-in for a service on the host, on all of its addresses: answers "hi" to whoever
/// connects, until it is dropped.
struct HostService {
    port: u16,
    serving: tokio::task::JoinHandle<()>,
}

impl HostService {
    async fn start(port: u16) -> Self {
        let listener = tokio::net::TcpListener::bind(("0.0.0.0", port))
            .await
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let serving = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let _ = tokio::io::AsyncWriteExt::write_all(&mut stream, b"hi\n").await;
            }
        });
        HostService { port, serving }
    }
}

impl Drop for HostService {
    fn drop(&mut self) {
        self.serving.abort();
    }
}

/// Whether the sandbox gets an answer from `port` on the host's address on its network. A
/// dropped connection hangs, so each try is given a few seconds.
async fn reaches(sandbox: &Guard, gateway: std::net::IpAddr, port: u16) -> bool {
    let knock = format!("timeout 5 bash -c 'exec 3<>/dev/tcp/{gateway}/{port} && head -c2 <&3'");
    run(sandbox, &knock).await.stdout == b"hi"
}

/// The fence on the egress network: a sandbox there reaches the proxy's port on the host and
/// no other host service, and a port an earlier proxy had is closed again once that proxy
/// has gone, whatever listens there later.
#[tokio::test]
async fn the_fence_lets_egress_sandboxes_reach_only_the_proxy_on_the_host() {
    let Some(docker) = engine().await else { return };
    let gateway = berth_sandbox::ensure_egress_network(&docker).await.unwrap();
    let image = berth_sandbox::default_image();
    let proxy = HostService::start(0).await;
    let other = HostService::start(0).await;
    let fence = |port: u16| {
        let (docker, image) = (docker.clone(), image.clone());
        async move {
            let proxy = std::net::SocketAddr::new(gateway, port);
            berth_sandbox::fence_egress_network(&docker, &image, proxy)
                .await
                .unwrap()
        }
    };
    fence(proxy.port).await;
    let sandbox = sandbox_with(&docker, Limits::default()).await;
    let on_egress = NetworkPolicy::Egress {
        proxy: std::net::SocketAddr::new(gateway, proxy.port),
    };
    sandbox.0.set_network(on_egress).await.unwrap();
    assert!(reaches(&sandbox, gateway, proxy.port).await, "the proxy");
    assert!(
        !reaches(&sandbox, gateway, other.port).await,
        "another service"
    );

    // The proxy goes, another runner's starts, and something else takes the old port.
    let old_port = proxy.port;
    drop(proxy);
    let next = HostService::start(0).await;
    fence(next.port).await;
    let squatter = HostService::start(old_port).await;
    assert!(reaches(&sandbox, gateway, next.port).await, "the new proxy");
    assert!(
        !reaches(&sandbox, gateway, squatter.port).await,
        "a service on the port a gone proxy had"
    );
}

/// With `network: full` a task reaches out, but never another task's container: one
/// listens, the other cannot connect to it, while the listener itself can.
#[tokio::test]
async fn tasks_on_the_network_cannot_reach_each_other() {
    let Some(docker) = engine().await else { return };
    let listener = sandbox_with(&docker, Limits::default()).await;
    let other = sandbox_with(&docker, Limits::default()).await;
    for sandbox in [&listener, &other] {
        sandbox.0.set_network(NetworkPolicy::Full).await.unwrap();
    }
    let serve = "nohup perl -MIO::Socket::INET -e '$s = IO::Socket::INET->new(LocalPort => 8080, \
                 Listen => 5, ReuseAddr => 1) or die; while ($c = $s->accept) { print $c \"hello\\n\"; \
                 close $c }' >/dev/null 2>&1 &";
    run(&listener, serve).await;
    let address = stdout_of(&listener, "hostname -i").await.trim().to_string();
    let knock = format!("for i in 1 2 3 4 5; do timeout 2 bash -c 'cat < /dev/tcp/{address}/8080' && exit 0; sleep 1; done; exit 1");
    let own = run(&listener, &knock).await;
    assert_eq!(own.exit_code, Some(0), "the listener answers: {own:?}");
    assert_eq!(String::from_utf8_lossy(&own.stdout).trim(), "hello");
    let across = run(&other, &knock.replace("1 2 3 4 5", "1")).await;
    assert_ne!(
        across.exit_code,
        Some(0),
        "another task reached it: {across:?}"
    );
}

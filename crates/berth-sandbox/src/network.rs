//! The Docker networks of sandboxes, each shared and kept rather than made per task: that
//! stays within Docker's small pool of bridge subnets and leaves nothing behind when a runner
//! crashes. `berth-sandboxes` is for when a sandbox may reach out (the setup phase, tasks with
//! `network: full`); `berth-egress` is internal, its only way out Berth's egress proxy on its
//! gateway. On both, inter-container traffic is off: a task never reaches another's container.

use std::collections::HashMap;
use std::net::IpAddr;

use bollard::models::NetworkCreateRequest;
use bollard::Docker;

use crate::{engine_error, SandboxError};

/// The network's name on the engine.
pub const SANDBOX_NETWORK: &str = "berth-sandboxes";

/// Creates the sandbox network if it is missing.
pub async fn ensure_sandbox_network(docker: &Docker) -> Result<(), SandboxError> {
    let request = NetworkCreateRequest {
        name: SANDBOX_NETWORK.to_string(),
        driver: Some("bridge".to_string()),
        options: Some(HashMap::from([(
            "com.docker.network.bridge.enable_icc".to_string(),
            "false".to_string(),
        )])),
        labels: Some(HashMap::from([(
            "berth.network".to_string(),
            "sandboxes".to_string(),
        )])),
        ..Default::default()
    };
    let network = ensure_network(docker, request).await?;
    check_isolated(&network, SANDBOX_NETWORK)
}

/// The network `request` names, made if it is missing. Engines before Docker 25 let two
/// racing creators each make a network of the same name, after which every container start on
/// it fails as ambiguous: creations in this process go one at a time, and duplicates another
/// process made are removed, every racer keeping the oldest.
async fn ensure_network(
    docker: &Docker,
    request: NetworkCreateRequest,
) -> Result<bollard::models::Network, SandboxError> {
    static CREATING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let name = request.name.clone();
    if let Some(network) = inspect(docker, &name).await? {
        return Ok(network);
    }
    let _creating = CREATING.lock().await;
    match docker.create_network(request).await {
        Ok(_) => {}
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 409, ..
        }) => {}
        Err(err) => return Err(engine_error(err)),
    }
    keep_one(docker, &name).await?;
    inspect(docker, &name)
        .await?
        .ok_or_else(|| SandboxError::Other(format!("the Docker network {name} vanished")))
}

/// Refuses a network of that name made by someone else with containers able to talk.
fn check_isolated(network: &bollard::models::Network, name: &str) -> Result<(), SandboxError> {
    let icc = network
        .options
        .as_ref()
        .and_then(|options| options.get("com.docker.network.bridge.enable_icc"));
    match icc.map(String::as_str) {
        Some("false") => Ok(()),
        _ => Err(SandboxError::Other(format!(
            "the Docker network {name} lets containers reach each other; remove it \
             (docker network rm {name}) and Berth makes it again with \
             inter-container traffic off"
        ))),
    }
}

/// Where the sandbox network meets the host: the bridge's gateway (the host's own address on
/// it, where a service for sandboxes listens) and the network's subnet (where sandboxes'
/// requests come from).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SandboxNetworkAddresses {
    pub gateway: std::net::IpAddr,
    /// In CIDR form, such as `172.18.0.0/16`.
    pub subnet: String,
}

/// The sandbox network's gateway and subnet, made first if it is missing.
pub async fn sandbox_network_addresses(
    docker: &Docker,
) -> Result<SandboxNetworkAddresses, SandboxError> {
    ensure_sandbox_network(docker).await?;
    let network = inspect(docker, SANDBOX_NETWORK).await?.ok_or_else(|| {
        SandboxError::Other(format!("the Docker network {SANDBOX_NETWORK} vanished"))
    })?;
    let configs = network
        .ipam
        .and_then(|ipam| ipam.config)
        .unwrap_or_default();
    configs
        .into_iter()
        .find_map(|config| {
            let gateway = config.gateway?.parse().ok()?;
            Some(SandboxNetworkAddresses {
                gateway,
                subnet: config.subnet?,
            })
        })
        .ok_or_else(|| {
            SandboxError::Other(format!(
                "the Docker network {SANDBOX_NETWORK} has no gateway address"
            ))
        })
}

/// The network of sandboxes whose traffic must pass Berth's egress proxy: internal (Docker
/// gives it no route out), with inter-container traffic off. Its gateway is an address of the
/// host, so a listener bound there is the one thing its containers can reach. Shared by every
/// task for the same reason as [`SANDBOX_NETWORK`]; each runner's proxy binds its own port.
pub const EGRESS_NETWORK: &str = "berth-egress";
/// The host's interface of the egress network.
pub const EGRESS_BRIDGE: &str = "berth-egress0";

/// Creates the egress network if it is missing and returns its gateway: the host's address on
/// it, where a proxy for its containers listens.
pub async fn ensure_egress_network(docker: &Docker) -> Result<IpAddr, SandboxError> {
    let request = NetworkCreateRequest {
        name: EGRESS_NETWORK.to_string(),
        driver: Some("bridge".to_string()),
        internal: Some(true),
        options: Some(HashMap::from([
            (
                "com.docker.network.bridge.enable_icc".to_string(),
                "false".to_string(),
            ),
            // A name to write host firewall rules against (see docs/egress.md).
            (
                "com.docker.network.bridge.name".to_string(),
                EGRESS_BRIDGE.to_string(),
            ),
        ])),
        labels: Some(HashMap::from([(
            "berth.network".to_string(),
            "egress".to_string(),
        )])),
        ..Default::default()
    };
    let network = ensure_network(docker, request).await?;
    check_isolated(&network, EGRESS_NETWORK)?;
    if network.internal != Some(true) {
        return Err(SandboxError::Other(format!(
            "the Docker network {EGRESS_NETWORK} is not internal, so its containers could go \
             around the egress proxy; remove it (docker network rm {EGRESS_NETWORK}) and Berth \
             makes it again"
        )));
    }
    gateway_of(&network)
}

/// What the fence's helper runs, as root in the host's network namespace, with the gateway,
/// the proxy's port and the bridge as `$1`..`$3`. Idempotent: a chain of Berth's own, jumped
/// to from `INPUT` for packets from the bridge, accepts the proxy's port on the gateway and
/// drops the rest. A port accepted earlier stays only while something listens on it (another
/// runner's proxy on the same host); a port left by a proxy that has gone is closed, so that
/// a service later listening there is not opened to sandboxes. The nf_tables variant is tried
/// first, the legacy one if the kernel has no nf_tables; IPv6 (link-local addresses reach the
/// host too) is dropped whole where the host has it.
const FENCE_SCRIPT: &str = r#"gw=$1 port=$2 bridge=$3
listening() {
    hex=$(printf ':%04X' "$1")
    awk -v port="$hex" '$4 == "0A" && substr($2, length($2) - 4) == port { found = 1 }
        END { exit !found }' /proc/net/tcp /proc/net/tcp6 2>/dev/null
}
fence() {
    $1 -w -N BERTH-EGRESS 2>/dev/null
    $1 -w -C BERTH-EGRESS -d "$gw" -p tcp --dport "$port" -j ACCEPT 2>/dev/null ||
        $1 -w -I BERTH-EGRESS -d "$gw" -p tcp --dport "$port" -j ACCEPT || return 1
    $1 -w -C BERTH-EGRESS -j DROP 2>/dev/null || $1 -w -A BERTH-EGRESS -j DROP || return 1
    $1 -w -C INPUT -i "$bridge" -j BERTH-EGRESS 2>/dev/null ||
        $1 -w -I INPUT -i "$bridge" -j BERTH-EGRESS || return 1
    for old in $($1 -w -S BERTH-EGRESS | sed -n 's/.*--dport \([0-9]*\) -j ACCEPT.*/\1/p'); do
        [ "$old" = "$port" ] || listening "$old" ||
            $1 -w -D BERTH-EGRESS -d "$gw" -p tcp --dport "$old" -j ACCEPT 2>/dev/null
    done
    return 0
}
fence iptables || fence iptables-legacy || exit 1
[ -e /proc/net/if_inet6 ] || exit 0
drop6() {
    $1 -w -C INPUT -i "$bridge" -j DROP 2>/dev/null || $1 -w -I INPUT -i "$bridge" -j DROP
}
drop6 ip6tables || drop6 ip6tables-legacy"#;

/// Fences the egress network on the host: its containers reach the host only at `proxy`.
/// Docker keeps an internal network's containers from being forwarded anywhere, but not from
/// the host itself, where any service listening on all addresses would answer them. The rules
/// are written by a short-lived root container of `image` (which needs `iptables`) in the
/// host's network namespace with `NET_ADMIN`: the runner needs no root of its own, only the
/// engine, which can grant it.
pub async fn fence_egress_network(
    docker: &Docker,
    image: &str,
    proxy: std::net::SocketAddr,
) -> Result<(), SandboxError> {
    use bollard::models::{ContainerCreateBody, HostConfig};
    let body = ContainerCreateBody {
        image: Some(image.to_string()),
        user: Some("0:0".into()),
        entrypoint: Some(vec!["/bin/sh".into(), "-c".into()]),
        cmd: Some(vec![
            FENCE_SCRIPT.into(),
            "fence".into(),
            proxy.ip().to_string(),
            proxy.port().to_string(),
            EGRESS_BRIDGE.into(),
        ]),
        labels: Some(HashMap::from([(
            "berth.network".to_string(),
            "egress-fence".to_string(),
        )])),
        host_config: Some(HostConfig {
            network_mode: Some("host".into()),
            cap_drop: Some(vec!["ALL".into()]),
            cap_add: Some(vec!["NET_ADMIN".into(), "NET_RAW".into()]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let ran = match crate::docker::run_to_end(docker, body).await {
        Err(SandboxError::ImageMissing(_)) => {
            return Err(SandboxError::Other(format!(
                "the egress network is fenced on the host with iptables from the image \
                 {image}, which is not on this machine; `berth image build` makes it"
            )))
        }
        ran => ran?,
    };
    match ran.exit_code {
        0 => Ok(()),
        code => Err(SandboxError::Other(format!(
            "could not fence the egress network on this host (iptables in {image} exited \
             with {code}: {}); without it a sandbox on {EGRESS_NETWORK} could reach services \
             on the host",
            ran.output.trim()
        ))),
    }
}

/// The network's IPv4 gateway, as the engine assigned it.
fn gateway_of(network: &bollard::models::Network) -> Result<IpAddr, SandboxError> {
    network
        .ipam
        .as_ref()
        .and_then(|ipam| ipam.config.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|config| config.gateway.as_deref()?.parse::<IpAddr>().ok())
        .find(IpAddr::is_ipv4)
        .ok_or_else(|| {
            SandboxError::Other(format!(
                "the Docker network {} has no IPv4 gateway",
                network.name.as_deref().unwrap_or(EGRESS_NETWORK)
            ))
        })
}

/// Removes all but the oldest network named `name`: every racer keeps the same one.
async fn keep_one(docker: &Docker, name: &str) -> Result<(), SandboxError> {
    let filters = HashMap::from([("name".to_string(), vec![name.to_string()])]);
    let options = bollard::query_parameters::ListNetworksOptionsBuilder::default()
        .filters(&filters)
        .build();
    let mut named: Vec<_> = (docker.list_networks(Some(options)).await)
        .map_err(engine_error)?
        .into_iter()
        // The filter matches names that contain `name`.
        .filter(|network| network.name.as_deref() == Some(name))
        .filter_map(|network| Some((network.created.clone()?, network.id?)))
        .collect();
    named.sort();
    for (_, id) in named.iter().skip(1) {
        // One in use stays; the oldest is the one everyone joins from now on.
        let _ = docker.remove_network(id).await;
    }
    Ok(())
}

async fn inspect(
    docker: &Docker,
    name: &str,
) -> Result<Option<bollard::models::Network>, SandboxError> {
    let options = None::<bollard::query_parameters::InspectNetworkOptions>;
    match docker.inspect_network(name, options.clone()).await {
        Ok(network) => Ok(Some(network)),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(None),
        // Duplicates left by a race in another process: keep one and look again.
        Err(bollard::errors::Error::DockerResponseServerError { message, .. })
            if message.contains("ambiguous") =>
        {
            keep_one(docker, name).await?;
            let network = docker.inspect_network(name, options).await;
            network.map(Some).map_err(engine_error)
        }
        Err(err) => Err(engine_error(err)),
    }
}

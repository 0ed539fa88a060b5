//! Egress control for tasks with `network: allowlist`: the sandbox sits on an internal Docker
//! network whose only way out is this proxy, which lets through only the allowed domains and
//! records every request as an `egress` event of the task.

mod proxy;
mod rules;

pub use proxy::{Admit, EgressProxy, EgressRecord, Resolver};
pub use rules::{check, narrow, parse_rules, DomainEntry, DomainRule};

use std::net::SocketAddr;
use std::sync::Arc;

use crate::attempt::EgressSettings;

/// Makes the egress network if it is missing, starts the proxy on its gateway, with the
/// server's rules, and fences the network on the host so that the proxy is the one thing on
/// the host its containers reach. The fence's helper runs the default sandbox image.
pub async fn start(
    docker: &bollard::Docker,
    settings: &crate::Settings,
) -> anyhow::Result<EgressSettings> {
    let rules = settings.egress_rules().map_err(anyhow::Error::msg)?;
    let gateway = berth_sandbox::ensure_egress_network(docker).await?;
    let resolver = Resolver {
        pinned: settings.egress_pinned_hosts.clone().into_iter().collect(),
    };
    let proxy = EgressProxy::start(
        SocketAddr::new(gateway, settings.egress_proxy_port),
        resolver,
    )
    .await
    .map_err(|err| anyhow::anyhow!("listening on {gateway}: {err}"))?;
    let image = berth_sandbox::default_image();
    berth_sandbox::fence_egress_network(docker, &image, proxy.addr()).await?;
    tracing::info!(address = %proxy.addr(), "egress proxy listening");
    Ok(EgressSettings {
        proxy: Arc::new(proxy),
        rules,
    })
}

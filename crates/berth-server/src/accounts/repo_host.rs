//! Keeps tasks from making the server fetch from its own network: a repository host that is
//! an IP literal, or a name resolving to a loopback, private, link-local or unique-local
//! address, is refused unless that exact IP literal is listed in `git_allowed_hosts`. The
//! addresses returned are the ones checked, so a runner that connects to exactly those leaves
//! no gap for DNS rebinding.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use url::{Host, Url};

use crate::repo_url::{self, AllowedHost};

/// The host and port a clone of `repo_url` connects to.
fn host_and_port(repo_url: &str) -> Result<(Host<String>, u16), String> {
    let repo_url = repo_url.trim();
    let url = if repo_url.contains("://") {
        Url::parse(repo_url)
    } else {
        // `git@host:owner/repo`
        let (authority, path) = repo_url.split_once(':').ok_or("repo_url is not a URL")?;
        Url::parse(&format!("ssh://{authority}/{path}"))
    }
    .map_err(|err| format!("repo_url is not a URL: {err}"))?;
    let host = url.host().ok_or("repo_url has no host")?.to_owned();
    let port = url
        .port_or_known_default()
        .or_else(|| (url.scheme() == "ssh").then_some(22))
        .ok_or("repo_url has no port")?;
    Ok((host, port))
}

/// Addresses a repository must never come from unless listed by IP.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => internal_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => internal_v4(v4),
            None => internal_v6(v6),
        },
    }
}

fn internal_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // shared address space (carrier NAT)
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240
}

fn internal_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00 // unique local
        || (first & 0xffc0) == 0xfe80 // link local
        || (first & 0xffc0) == 0xfec0 // site local (deprecated)
}

/// The part that needs no DNS, run when a task is created: the allow-list, and IP literals and
/// `localhost` names refused unless listed exactly as an IP.
pub fn check_syntax(repo_url: &str, allowed: &[AllowedHost]) -> Result<(), String> {
    repo_url::check(repo_url, allowed)?;
    let (host, _) = host_and_port(repo_url)?;
    match host {
        Host::Domain(name) => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            if name == "localhost" || name.ends_with(".localhost") {
                return Err(format!("git host {name} is this machine; refused"));
            }
            Ok(())
        }
        // An IP literal has passed the allow-list only if it is listed exactly.
        Host::Ipv4(_) | Host::Ipv6(_) => Ok(()),
    }
}

/// Checks `repo_url` and resolves its host, refusing internal addresses (see the module
/// comment). A runner should connect only to the addresses returned.
pub async fn resolve_repo_host(
    repo_url: &str,
    allowed: &[AllowedHost],
) -> Result<Vec<SocketAddr>, String> {
    repo_url::check(repo_url, allowed)?;
    let (host, port) = host_and_port(repo_url)?;
    let name = match host {
        Host::Ipv4(ip) => return Ok(vec![SocketAddr::new(ip.into(), port)]),
        Host::Ipv6(ip) => return Ok(vec![SocketAddr::new(ip.into(), port)]),
        Host::Domain(name) => name,
    };
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), port))
        .await
        .map_err(|err| format!("git host {name} does not resolve: {err}"))?
        .collect();
    if addrs.is_empty() {
        return Err(format!("git host {name} has no addresses"));
    }
    if let Some(bad) = addrs.iter().find(|addr| is_internal(addr.ip())) {
        return Err(format!(
            "git host {name} resolves to {}, an internal address; list the address itself in \
             git_allowed_hosts to allow it",
            bad.ip()
        ));
    }
    Ok(addrs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_ranges() {
        for ip in [
            "127.0.0.1",
            "10.0.0.1",
            "172.16.3.4",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(is_internal(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["140.82.112.3", "2606:4700::1111"] {
            assert!(!is_internal(ip.parse().unwrap()), "{ip}");
        }
    }
}

//! Keeps tasks from making the server fetch from its own network: a repository host that is
//! an IP literal, or a name resolving to a loopback, private, link-local or unique-local
//! address, is refused unless that exact IP literal is listed in `git_allowed_hosts`. The
//! addresses returned are the ones checked, so a runner that connects to exactly those leaves
//! no gap for DNS rebinding.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::allowed::{self, AllowedHost};
use crate::repo_url::{RepoHost, RepoUrl};

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

/// The part that needs no DNS, run when a task is created: the URL read strictly, its host
/// and port on the allow-list, and `localhost` names refused (an IP literal has passed the
/// allow-list only if it is listed exactly). The URL returned is the one to store and use.
pub fn check_repo_url(repo_url: &str, allowed: &[AllowedHost]) -> Result<RepoUrl, String> {
    let url = RepoUrl::parse(repo_url)?;
    allowed::check(&url, allowed)?;
    if let RepoHost::Name(name) = url.host() {
        if name == "localhost" || name.ends_with(".localhost") {
            return Err(format!("git host {name} is this machine; refused"));
        }
    }
    Ok(url)
}

/// Checks `repo_url` and resolves its host, refusing internal addresses (see the module
/// comment); `localhost` names are left to DNS, which knows them better than a rule on their
/// spelling. A runner should connect only to the addresses returned.
pub async fn resolve_repo_host(
    repo_url: &str,
    allowed: &[AllowedHost],
) -> Result<Vec<SocketAddr>, String> {
    let url = RepoUrl::parse(repo_url)?;
    allowed::check(&url, allowed)?;
    let port = url.port();
    let name = match url.host() {
        RepoHost::V4(ip) => return Ok(vec![SocketAddr::new((*ip).into(), port)]),
        RepoHost::V6(ip) => return Ok(vec![SocketAddr::new((*ip).into(), port)]),
        RepoHost::Name(name) => name,
    };
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), port))
        .await
        .map_err(|_| format!("git host {name} does not resolve"))?
        .collect();
    if addrs.is_empty() {
        return Err(format!("git host {name} has no addresses"));
    }
    // The address itself is not named: it is the server's network, not the user's business.
    if addrs.iter().any(|addr| is_internal(addr.ip())) {
        return Err(format!(
            "git host {name} resolves to an internal address; the server's operator can list \
             the address itself in git_allowed_hosts to allow it"
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

//! Where outgoing webhooks may go: the same strict reading of the URL as a repository's, and
//! the same refusal of the server's own network. An https URL on a public host is taken; plain
//! http, or an internal address, only for a host the operator listed in
//! `webhook_allowed_hosts` (an internal address by its IP literal, as for git hosts).

use std::net::SocketAddr;

use crate::allowed::{self, AllowedHost};
use crate::repo_host::is_internal;
use crate::repo_url::{RepoHost, RepoUrl, Scheme};

/// The part that needs no DNS, run when an endpoint is registered: the URL read strictly, an
/// https URL (or a listed http one), no `localhost` name and no internal IP literal unless
/// listed. The URL returned is the one to store and use.
pub fn check_webhook_url(url: &str, listed: &[AllowedHost]) -> Result<RepoUrl, String> {
    check_outgoing(RepoUrl::parse(url)?, listed, "webhook")
}

/// The checks of [`check_webhook_url`] on a URL already read, for anything Berth sends out
/// (`what`: a webhook, a push endpoint).
pub(crate) fn check_outgoing(
    parsed: RepoUrl,
    listed: &[AllowedHost],
    what: &str,
) -> Result<RepoUrl, String> {
    let is_listed = allowed::check(&parsed, listed).is_ok();
    match parsed.scheme() {
        Scheme::Https => {}
        Scheme::Http if is_listed => {}
        Scheme::Http => {
            return Err(format!(
                "plain http:// is not allowed for a {what} to {}; use https://",
                parsed.host()
            ))
        }
        Scheme::Ssh => return Err(format!("a {what} URL is https://")),
    }
    let internal = || {
        format!(
            "the {what}'s host is an internal address; the server's operator can list it in \
             webhook_allowed_hosts to allow it"
        )
    };
    match parsed.host() {
        RepoHost::Name(name) if name == "localhost" || name.ends_with(".localhost") => {
            Err(format!("{what} host {name} is this machine; refused"))
        }
        RepoHost::V4(ip) if !is_listed && is_internal((*ip).into()) => Err(internal()),
        RepoHost::V6(ip) if !is_listed && is_internal((*ip).into()) => Err(internal()),
        _ => Ok(parsed),
    }
}

/// Checks `url` again and resolves its host, refusing a name that resolves to an internal
/// address (whatever is listed: only IP literals open the server's network). The sender
/// connects only to the addresses returned.
pub async fn resolve_webhook_host(
    url: &str,
    listed: &[AllowedHost],
) -> Result<(RepoUrl, Vec<SocketAddr>), String> {
    let parsed = check_webhook_url(url, listed)?;
    let addrs = resolve_outgoing(&parsed, "webhook").await?;
    Ok((parsed, addrs))
}

/// The addresses of a checked URL's host: its IP literal, or what its name resolves to when
/// none of that is internal.
pub(crate) async fn resolve_outgoing(
    parsed: &RepoUrl,
    what: &str,
) -> Result<Vec<SocketAddr>, String> {
    let port = parsed.port();
    let name = match parsed.host() {
        RepoHost::V4(ip) => return Ok(vec![SocketAddr::new((*ip).into(), port)]),
        RepoHost::V6(ip) => return Ok(vec![SocketAddr::new((*ip).into(), port)]),
        RepoHost::Name(name) => name.clone(),
    };
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), port))
        .await
        .map_err(|_| format!("{what} host {name} does not resolve"))?
        .collect();
    if addrs.is_empty() || addrs.iter().any(|addr| is_internal(addr.ip())) {
        return Err(format!(
            "{what} host {name} resolves to an internal address, or to none; refused"
        ));
    }
    Ok(addrs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed() -> Vec<AllowedHost> {
        vec![AllowedHost::parse("http://127.0.0.1:9000").unwrap()]
    }

    #[test]
    fn public_https_and_listed_hosts_pass_the_rest_is_refused() {
        for url in [
            "https://hooks.slack.com/services/T0/B0/xyz",
            "https://example.com:8443/berth",
            "http://127.0.0.1:9000/hook",
        ] {
            assert!(check_webhook_url(url, &listed()).is_ok(), "{url}");
        }
        for url in [
            "http://example.com/hook",
            "https://127.0.0.1/hook",
            "https://10.0.0.7/hook",
            "https://169.254.169.254/latest",
            "https://[::1]/hook",
            "https://localhost/hook",
            "http://127.0.0.1:9001/hook",
            "https://example.com/hook?token=1",
            "https://user:pw@example.com/hook",
            "ssh://git@example.com/hook",
        ] {
            assert!(check_webhook_url(url, &listed()).is_err(), "{url}");
        }
    }

    #[tokio::test]
    async fn a_name_that_resolves_inside_is_refused() {
        let refused = resolve_webhook_host("https://localhost.localdomain/hook", &[]).await;
        assert!(refused.is_err());
        let (_, addrs) = resolve_webhook_host("http://127.0.0.1:9000/hook", &listed())
            .await
            .unwrap();
        assert_eq!(addrs, ["127.0.0.1:9000".parse().unwrap()]);
    }
}

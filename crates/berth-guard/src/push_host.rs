//! Where Web Push messages may go: the push service endpoint a browser hands over. Its scheme,
//! host and port are read as strictly as a webhook's and refused on the server's own network
//! alike; its path and query, which push services fill with long opaque tokens, are taken as
//! they are, in printable ASCII.

use std::fmt;
use std::net::SocketAddr;

use crate::allowed::AllowedHost;
use crate::repo_url::{RepoHost, RepoUrl};
use crate::webhook_host::{check_outgoing, resolve_outgoing};

/// The longest endpoint accepted (push services' are a few hundred characters).
const MAX_LEN: usize = 2048;

/// A push endpoint that passed the checks; `Display` gives the URL to store and post to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushEndpoint {
    /// Scheme, host and port, read as a webhook URL's (with a stand-in path).
    site: RepoUrl,
    /// The path and query, starting with `/`.
    rest: String,
}

impl PushEndpoint {
    /// `scheme://host[:port]`: the `aud` of the VAPID token (RFC 8292).
    pub fn origin(&self) -> String {
        self.site.origin()
    }

    pub fn host(&self) -> &RepoHost {
        self.site.host()
    }
}

impl fmt::Display for PushEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.origin(), self.rest)
    }
}

/// The part that needs no DNS, run when a browser subscribes: an https URL (or a listed http
/// one) on a public host, or an internal one only by its IP literal listed in
/// `webhook_allowed_hosts`.
pub fn check_push_endpoint(url: &str, listed: &[AllowedHost]) -> Result<PushEndpoint, String> {
    if url.len() > MAX_LEN {
        return Err(format!("the endpoint is longer than {MAX_LEN} characters"));
    }
    let (scheme, after) = url
        .split_once("://")
        .ok_or("the endpoint is not a URL (https://…)")?;
    let slash = after.find('/').ok_or("the endpoint has no path")?;
    let (authority, rest) = after.split_at(slash);
    if let Some(c) = rest
        .chars()
        .find(|&c| !c.is_ascii_graphic() || c == '\\' || c == '#')
    {
        return Err(format!(
            "the endpoint's path may hold only printable ASCII, without \\ or # (found {c:?})"
        ));
    }
    let site = RepoUrl::parse(&format!("{scheme}://{authority}/push"))
        .map_err(|err| format!("the endpoint's address: {err}"))?;
    let site = check_outgoing(site, listed, "push endpoint")?;
    Ok(PushEndpoint {
        site,
        rest: rest.to_string(),
    })
}

/// Checks `url` again and resolves its host, refusing a name that resolves to an internal
/// address; the sender connects only to the addresses returned.
pub async fn resolve_push_host(
    url: &str,
    listed: &[AllowedHost],
) -> Result<(PushEndpoint, Vec<SocketAddr>), String> {
    let endpoint = check_push_endpoint(url, listed)?;
    let addrs = resolve_outgoing(&endpoint.site, "push endpoint").await?;
    Ok((endpoint, addrs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed() -> Vec<AllowedHost> {
        vec![AllowedHost::parse("http://127.0.0.1:9000").unwrap()]
    }

    #[test]
    fn push_services_endpoints_pass_as_written() {
        for url in [
            "https://fcm.googleapis.com/fcm/send/eKClHsXFm9E:APA91bH2x3gNOMv4dF1lQfCgIfOe-_x",
            "https://updates.push.services.mozilla.com/wpush/v2/gAAAAABk_-x=",
            "https://web.push.apple.com/QGuQyavXutnMH",
            "https://wns2-par02p.notify.windows.com/w/?token=BQYAAAB%2fx",
            "http://127.0.0.1:9000/push/abc",
        ] {
            let endpoint = check_push_endpoint(url, &listed()).unwrap();
            assert_eq!(endpoint.to_string(), url);
        }
        let endpoint = check_push_endpoint("https://Push.Example.com/a", &[]).unwrap();
        assert_eq!(endpoint.origin(), "https://push.example.com");
        let endpoint = check_push_endpoint("http://127.0.0.1:9000/p", &listed()).unwrap();
        assert_eq!(endpoint.origin(), "http://127.0.0.1:9000");
    }

    #[test]
    fn the_servers_own_network_and_odd_urls_are_refused() {
        for url in [
            "http://push.example.com/p",
            "https://127.0.0.1/p",
            "https://10.0.0.7/p",
            "https://169.254.169.254/latest",
            "https://[::1]/p",
            "https://localhost/p",
            "http://127.0.0.1:9001/p",
            "https://user:pw@push.example.com/p",
            "https://push.example.com",
            "https://push.example.com/p q",
            "https://push.example.com/p#x",
            "https://push.example.com/p\\q",
            "https://push.example.com\\@evil.example/p",
            "https://2130706433/p",
            "ftp://push.example.com/p",
            "push.example.com/p",
        ] {
            assert!(check_push_endpoint(url, &listed()).is_err(), "{url}");
        }
    }

    #[tokio::test]
    async fn a_name_that_resolves_inside_is_refused() {
        let refused = resolve_push_host("https://localhost.localdomain/p", &[]).await;
        assert!(refused.is_err());
        let (_, addrs) = resolve_push_host("http://127.0.0.1:9000/p", &listed())
            .await
            .unwrap();
        assert_eq!(addrs, ["127.0.0.1:9000".parse().unwrap()]);
    }
}

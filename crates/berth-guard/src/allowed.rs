//! The server's list of git hosts (`git_allowed_hosts`), matched against the parts of a
//! strictly read repository URL; and the repository a URL names on the GitHub host.

use crate::repo_url::{parse_host_port, RepoHost, RepoUrl, Scheme};

/// One entry of `git_allowed_hosts`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllowedHost {
    host: RepoHost,
    /// `None` matches the scheme's default port only.
    port: Option<u16>,
    /// Listed as `http://host:port`: plain HTTP is allowed for it.
    allow_http: bool,
}

impl AllowedHost {
    /// `host`, `host:port` or `http://host:port`, with the host read as strictly as in a
    /// repository URL.
    pub fn parse(entry: &str) -> Result<Self, String> {
        let expected = || "expected host, host:port or http://host:port".to_string();
        let (allow_http, rest) = match entry.strip_prefix("http://") {
            Some(rest) => (true, rest),
            None => (false, entry),
        };
        if rest.is_empty() || !rest.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(expected());
        }
        let (host, port) = parse_host_port(rest).map_err(|_| expected())?;
        Ok(Self {
            host,
            port,
            allow_http,
        })
    }

    fn matches(&self, url: &RepoUrl) -> bool {
        self.host == *url.host() && self.port == url.explicit_port()
    }
}

/// Refuses a URL whose host and port are not listed, or that uses plain HTTP on a host not
/// listed as `http://host:port`.
pub(crate) fn check(url: &RepoUrl, allowed: &[AllowedHost]) -> Result<(), String> {
    let Some(entry) = allowed.iter().find(|entry| entry.matches(url)) else {
        let host_port = match url.explicit_port() {
            Some(port) => format!("{}:{port}", url.host()),
            None => url.host().to_string(),
        };
        return Err(format!(
            "git host {host_port} is not allowed on this server (allowed: {})",
            describe(allowed)
        ));
    };
    if url.scheme() == Scheme::Http && !entry.allow_http {
        let host = url.host();
        return Err(format!(
            "plain http:// is not allowed for {host}; use https://, or list it as http://{host} \
             in git_allowed_hosts"
        ));
    }
    Ok(())
}

fn describe(allowed: &[AllowedHost]) -> String {
    let names: Vec<String> = allowed
        .iter()
        .map(|entry| match entry.port {
            Some(port) => format!("{}:{port}", entry.host),
            None => entry.host.to_string(),
        })
        .collect();
    names.join(", ")
}

/// `owner/name` of a repository on the GitHub host (`web_url`, such as
/// `https://github.com`), from its https URL.
pub fn repository_on(web_url: &str, repo_url: &str) -> Option<String> {
    // `web_url` is the server's own configuration, so the `url` crate reads it as meant; its
    // origin is serialised as `RepoUrl::origin` writes one (lower-case host, no default port).
    let web = url::Url::parse(web_url)
        .ok()?
        .origin()
        .ascii_serialization();
    let repo = RepoUrl::parse(repo_url).ok()?;
    if repo.scheme() == Scheme::Ssh || repo.origin() != web {
        return None;
    }
    let path = repo.path().trim_start_matches('/');
    let path = path.strip_suffix(".git").unwrap_or(path);
    match path.split_once('/') {
        Some((owner, name)) if !name.contains('/') && !name.is_empty() => {
            Some(format!("{owner}/{name}"))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed() -> Vec<AllowedHost> {
        [
            "github.com",
            "git.example.com:8443",
            "http://127.0.0.1:9418",
            "[2001:db8::7]",
        ]
        .into_iter()
        .map(|entry| AllowedHost::parse(entry).unwrap())
        .collect()
    }

    fn checked(url: &str) -> Result<(), String> {
        check(&RepoUrl::parse(url)?, &allowed())
    }

    #[test]
    fn listed_hosts_and_ports_pass() {
        for url in [
            "https://github.com/owner/repo",
            "ssh://git@github.com/owner/repo.git",
            "git@github.com:owner/repo.git",
            "https://git.example.com:8443/team/project",
            "ssh://git@git.example.com:8443/team/project",
            "http://127.0.0.1:9418/repo.git",
            "ssh://git@127.0.0.1:9418/repo.git",
            "https://[2001:db8::7]/o/r",
            "HTTPS://GitHub.COM/owner/repo",
        ] {
            assert_eq!(checked(url), Ok(()), "{url}");
        }
    }

    #[test]
    fn other_hosts_ports_and_plain_http_are_refused() {
        for (url, says) in [
            (
                "https://gitlab.com/o/r",
                "git host gitlab.com is not allowed",
            ),
            ("https://github.com:8443/o/r", "git host github.com:8443"),
            (
                "https://git.example.com/team/p",
                "git host git.example.com is",
            ),
            ("http://github.com/o/r", "plain http:// is not allowed"),
            ("https://127.0.0.1/o/r", "git host 127.0.0.1 is not allowed"),
            ("http://127.0.0.1:9419/o/r", "git host 127.0.0.1:9419"),
            ("https://[2001:db8::8]/o/r", "git host [2001:db8::8] is not"),
        ] {
            let err = checked(url).unwrap_err();
            assert!(err.contains(says), "{url}: {err}");
        }
    }

    #[test]
    fn allowed_host_entries_are_read_strictly() {
        for entry in [
            "github.com",
            "GitHub.com",
            "http://localhost:3000",
            "[::1]:8080",
            "10.0.0.5",
        ] {
            assert!(AllowedHost::parse(entry).is_ok(), "{entry}");
        }
        assert_eq!(
            AllowedHost::parse("GitHub.com"),
            AllowedHost::parse("github.com")
        );
        for entry in [
            "",
            "github.com/owner",
            "user@github.com",
            "https://github.com",
            "http://",
            "github.com:",
            "github.com.",
            "127.1",
            "git hub.com",
            "github.com\\@evil",
            "-oProxyCommand=x",
        ] {
            assert!(AllowedHost::parse(entry).is_err(), "{entry}");
        }
    }

    #[test]
    fn repositories_on_the_github_host_are_recognised() {
        let github = "https://github.com";
        for (url, repository) in [
            ("https://github.com/acme/widgets.git", Some("acme/widgets")),
            ("https://github.com/acme/widgets", Some("acme/widgets")),
            ("https://GitHub.com/acme/widgets", Some("acme/widgets")),
            ("https://gitlab.com/acme/widgets", None),
            ("https://github.com/acme/widgets/extra", None),
            ("https://github.com/acme", None),
            ("git@github.com:acme/widgets.git", None),
            ("https://github.com:8443/acme/widgets", None),
            ("https://github.com\\@evil.com/acme/widgets", None),
        ] {
            assert_eq!(repository_on(github, url).as_deref(), repository, "{url}");
        }
        assert_eq!(
            repository_on("http://127.0.0.1:3000", "http://127.0.0.1:3000/a/b.git").as_deref(),
            Some("a/b")
        );
    }
}

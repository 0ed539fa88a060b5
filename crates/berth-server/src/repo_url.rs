//! Checks that a repository URL names a git host the server allows, in a form git can clone
//! without surprises: no local paths, no credentials in the URL, no option-like names.

use url::Url;

/// One entry of `git_allowed_hosts`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllowedHost {
    host: String,
    /// `None` matches the scheme's default port only.
    port: Option<u16>,
    /// Listed as `http://host:port`: plain HTTP is allowed for it.
    allow_http: bool,
}

impl AllowedHost {
    pub fn parse(entry: &str) -> Result<Self, String> {
        let (allow_http, rest) = match entry.strip_prefix("http://") {
            Some(rest) => (true, rest),
            None => (false, entry),
        };
        let url = Url::parse(&format!("ssh://{rest}"))
            .map_err(|_| "expected host, host:port or http://host:port".to_string())?;
        let host = url.host_str().filter(|host| !host.is_empty());
        let plain = url.path().is_empty() && url.username().is_empty() && url.password().is_none();
        match host {
            Some(host) if plain => Ok(Self {
                host: host.to_ascii_lowercase(),
                port: url.port(),
                allow_http,
            }),
            _ => Err("expected host, host:port or http://host:port".to_string()),
        }
    }

    fn matches(&self, host: &str, port: Option<u16>) -> bool {
        self.host == host.to_ascii_lowercase() && self.port == port
    }
}

/// Returns `Ok(())` for a URL tasks may use, or a message saying what is wrong.
pub fn check(repo_url: &str, allowed: &[AllowedHost]) -> Result<(), String> {
    let repo_url = repo_url.trim();
    if repo_url.is_empty() {
        return Err("repo_url is empty".into());
    }
    if repo_url
        .chars()
        .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err("repo_url must not contain spaces or control characters".into());
    }
    // Checked on the text as given: URL parsing would quietly resolve the dots away.
    if repo_url
        .split(['/', ':'])
        .any(|part| part == ".." || part == ".")
    {
        return Err("repo_url must not contain . or .. path segments".into());
    }
    let url = match scp_like(repo_url) {
        Some(url) => url,
        None => Url::parse(repo_url).map_err(|err| format!("repo_url is not a URL: {err}"))?,
    };
    let scheme = url.scheme();
    if !matches!(scheme, "https" | "http" | "ssh") {
        return Err(format!(
            "repo_url scheme {scheme:?} is not allowed: use https://, ssh:// or git@host:path"
        ));
    }
    if url.password().is_some() || (scheme != "ssh" && !url.username().is_empty()) {
        return Err("repo_url must not carry credentials; Berth supplies them itself".into());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("repo_url must not have a query or fragment".into());
    }
    let host = url.host_str().unwrap_or_default();
    if host.is_empty() || host.starts_with('-') || url.username().starts_with('-') {
        return Err("repo_url has no usable host".into());
    }
    let path = url.path().trim_start_matches('/');
    if path.is_empty() || path.starts_with('-') {
        return Err("repo_url must name a repository path such as owner/repo".into());
    }
    let Some(entry) = allowed.iter().find(|entry| entry.matches(host, url.port())) else {
        let host_port = match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_string(),
        };
        return Err(format!(
            "git host {host_port} is not allowed on this server (allowed: {})",
            describe(allowed)
        ));
    };
    if scheme == "http" && !entry.allow_http {
        return Err(format!(
            "plain http:// is not allowed for {host}; use https://, or list it as http://{host} \
             in git_allowed_hosts"
        ));
    }
    Ok(())
}

/// `git@host:owner/repo` as an `ssh://` URL; `None` for anything else.
fn scp_like(text: &str) -> Option<Url> {
    if text.contains("://") {
        return None;
    }
    let (authority, path) = text.split_once(':')?;
    let (user, host) = authority.split_once('@')?;
    if user.is_empty() || host.is_empty() || path.starts_with('/') {
        return None;
    }
    Url::parse(&format!("ssh://{user}@{host}/{path}")).ok()
}

fn describe(allowed: &[AllowedHost]) -> String {
    let names: Vec<String> = allowed
        .iter()
        .map(|entry| match entry.port {
            Some(port) => format!("{}:{port}", entry.host),
            None => entry.host.clone(),
        })
        .collect();
    names.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed() -> Vec<AllowedHost> {
        [
            "github.com",
            "git.example.com:8443",
            "http://127.0.0.1:9418",
        ]
        .into_iter()
        .map(|entry| AllowedHost::parse(entry).unwrap())
        .collect()
    }

    #[test]
    fn accepts_the_usual_forms() {
        for url in [
            "https://github.com/owner/repo",
            "https://github.com/owner/repo.git",
            "ssh://git@github.com/owner/repo.git",
            "git@github.com:owner/repo.git",
            "https://git.example.com:8443/team/project",
            "http://127.0.0.1:9418/repo.git",
        ] {
            assert_eq!(check(url, &allowed()), Ok(()), "{url}");
        }
    }

    #[test]
    fn refuses_what_could_reach_elsewhere() {
        for url in [
            "file:///etc/passwd",
            "/srv/repo",
            "https://gitlab.com/owner/repo",
            "https://user:secret@github.com/owner/repo",
            "https://token@github.com/owner/repo",
            "http://github.com/owner/repo",
            "https://github.com/",
            "ssh://-oProxyCommand=touch%20x/repo",
            "https://github.com/owner/repo?x=1",
            "https://git.example.com/team/project",
            "ext::sh -c touch% /tmp/pwned",
            "https://github.com/../../etc",
            "",
        ] {
            assert!(check(url, &allowed()).is_err(), "{url} should be refused");
        }
    }

    #[test]
    fn allowed_host_entries_are_checked() {
        assert!(AllowedHost::parse("github.com").is_ok());
        assert!(AllowedHost::parse("http://localhost:3000").is_ok());
        assert!(AllowedHost::parse("github.com/owner").is_err());
        assert!(AllowedHost::parse("").is_err());
    }
}

//! A repository URL read strictly, in one normalised form that git, curl and ssh all read the
//! same way. Whatever is checked is read from the parts found here, and the normalised text
//! is the only string handed on: a URL that a laxer reader (git, curl, the WHATWG `url` crate)
//! could take to mean another host, port or user is refused instead of interpreted.
//!
//! Accepted: `https://host[:port]/path`, `http://host[:port]/path`,
//! `ssh://[user@]host[:port]/path` and `user@host:path` (scp form, taken as
//! `ssh://user@host/path`); the input must be exactly the normalised form or its scp form, up
//! to the case of the scheme and host. The `url` crate is not used: it reads `\` as `/`, IDNA
//! maps and percent-decodes hosts, and takes `127.1` for an address — all lax where git is not.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

/// The longest repository URL accepted.
const MAX_LEN: usize = 2048;

/// How a repository is reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    Https,
    Http,
    Ssh,
}

impl Scheme {
    fn parse(text: &str) -> Option<Self> {
        match text.to_ascii_lowercase().as_str() {
            "https" => Some(Self::Https),
            "http" => Some(Self::Http),
            "ssh" => Some(Self::Ssh),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Https => "https",
            Self::Http => "http",
            Self::Ssh => "ssh",
        }
    }

    pub fn default_port(self) -> u16 {
        match self {
            Self::Https => 443,
            Self::Http => 80,
            Self::Ssh => 22,
        }
    }
}

/// A repository's host: a DNS name (lower case, no trailing dot) or an IP literal.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum RepoHost {
    Name(String),
    V4(Ipv4Addr),
    V6(Ipv6Addr),
}

impl fmt::Display for RepoHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Name(name) => f.write_str(name),
            Self::V4(ip) => write!(f, "{ip}"),
            Self::V6(ip) => write!(f, "[{ip}]"),
        }
    }
}

/// A repository URL that passed the strict reading; `Display` gives its normalised form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepoUrl {
    scheme: Scheme,
    /// Only for ssh.
    user: Option<String>,
    host: RepoHost,
    /// `None` for the scheme's default port, which the normalised form leaves out.
    port: Option<u16>,
    /// Starts with `/`.
    path: String,
}

impl RepoUrl {
    /// Reads `text` strictly (see the module comment), or says what to change.
    pub fn parse(text: &str) -> Result<Self, String> {
        check_characters(text)?;
        let url = Self::parse_parts(text)?;
        let normal = url.to_string();
        // The normalised form must read back as the same parts; if it did not, the parts are
        // not what the text means to every reader.
        if Self::parse_parts(&normal).as_ref() != Ok(&url) {
            return Err("repo_url is not in a form Berth can check".into());
        }
        // The user name and path were taken verbatim, so this compares the rest up to case.
        let plain = text.eq_ignore_ascii_case(&normal)
            || url
                .scp_form()
                .is_some_and(|scp| text.eq_ignore_ascii_case(&scp));
        if !plain {
            return Err(format!(
                "repo_url is not written plainly; write it as {normal}"
            ));
        }
        Ok(url)
    }

    fn parse_parts(text: &str) -> Result<Self, String> {
        match text.split_once("://") {
            Some((scheme, rest)) => Self::parse_url(scheme, rest),
            None => Self::parse_scp(text),
        }
    }

    fn parse_url(scheme: &str, rest: &str) -> Result<Self, String> {
        let scheme = Scheme::parse(scheme)
            .ok_or_else(|| format!("repo_url scheme {scheme:?} is not allowed: use {FORMS}"))?;
        let (authority, path) = match rest.find('/') {
            Some(slash) => rest.split_at(slash),
            None => (rest, ""),
        };
        let (user, host_port) = match authority.split_once('@') {
            Some((user, host_port)) => (Some(user), host_port),
            None => (None, authority),
        };
        if user.is_some() && scheme != Scheme::Ssh {
            return Err(CREDENTIALS.into());
        }
        let user = user.map(check_user).transpose()?;
        let (host, port) = parse_host_port(host_port)?;
        Ok(Self {
            scheme,
            user,
            host,
            port: port.filter(|&port| port != scheme.default_port()),
            path: check_path(path)?,
        })
    }

    /// `user@host:path`, which git reads as ssh.
    fn parse_scp(text: &str) -> Result<Self, String> {
        let Some((user, rest)) = text.split_once('@') else {
            return Err(format!("repo_url is not a URL: use {FORMS}"));
        };
        let user = check_user(user)?;
        let (host, path) = match rest.strip_prefix('[') {
            Some(v6) => {
                let (inside, after) = v6.split_once(']').ok_or(ODD_IPV6)?;
                let path = after.strip_prefix(':').ok_or(ODD_IPV6)?;
                (parse_host(&format!("[{inside}]"))?, path)
            }
            None => {
                let (host, path) = rest
                    .split_once(':')
                    .ok_or_else(|| format!("repo_url is not a URL: use {FORMS}"))?;
                (parse_host(host)?, path)
            }
        };
        Ok(Self {
            scheme: Scheme::Ssh,
            user: Some(user),
            host,
            port: None,
            path: check_path(&format!("/{path}"))?,
        })
    }

    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    pub fn host(&self) -> &RepoHost {
        &self.host
    }

    /// The port as written, `None` for the scheme's default.
    pub fn explicit_port(&self) -> Option<u16> {
        self.port
    }

    /// The port a connection goes to.
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(self.scheme.default_port())
    }

    /// The path on the host, starting with `/`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// `scheme://host[:port]`, as git matches `http.<url>.*` settings against it.
    pub fn origin(&self) -> String {
        match self.port {
            Some(port) => format!("{}://{}:{port}", self.scheme.as_str(), self.host),
            None => format!("{}://{}", self.scheme.as_str(), self.host),
        }
    }

    /// `user@host:path`, for an ssh URL on the default port with a user name.
    fn scp_form(&self) -> Option<String> {
        let user = self.user.as_ref()?;
        (self.scheme == Scheme::Ssh && self.port.is_none())
            .then(|| format!("{user}@{}:{}", self.host, &self.path[1..]))
    }
}

impl fmt::Display for RepoUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://", self.scheme.as_str())?;
        if let Some(user) = &self.user {
            write!(f, "{user}@")?;
        }
        write!(f, "{}", self.host)?;
        if let Some(port) = self.port {
            write!(f, ":{port}")?;
        }
        f.write_str(&self.path)
    }
}

const FORMS: &str = "https://host/owner/repo, ssh://git@host/owner/repo or git@host:owner/repo";
const CREDENTIALS: &str =
    "repo_url must not carry credentials or a user name; Berth supplies them itself \
     (only ssh:// and git@host:… take a user name)";
const ODD_IPV6: &str = "repo_url's host is not an IPv6 address in brackets, such as [2001:db8::1] \
     (zone IDs are not accepted)";

/// Refuses what no part of a plain URL holds, before anything is read from it.
fn check_characters(text: &str) -> Result<(), String> {
    if text.is_empty() {
        return Err("repo_url is empty".into());
    }
    if text.len() > MAX_LEN {
        return Err(format!("repo_url is longer than {MAX_LEN} characters"));
    }
    for c in text.chars() {
        let refusal = match c {
            c if c.is_whitespace() || c.is_control() => {
                "repo_url must not contain spaces or control characters"
            }
            c if !c.is_ascii() => {
                "repo_url must be plain ASCII: write an international host name in its xn-- \
                 form"
            }
            '\\' => "repo_url must not contain backslashes (\\)",
            '%' => "repo_url must not contain percent-encoding (%): write each character itself",
            '?' | '#' => "repo_url must not have a query (?) or a fragment (#)",
            _ => continue,
        };
        return Err(refusal.into());
    }
    Ok(())
}

/// An ssh user name: letters, digits, `-`, `.` and `_`, not starting like an option.
fn check_user(user: &str) -> Result<String, String> {
    if user.contains(':') {
        return Err(CREDENTIALS.into());
    }
    let plain = user
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'));
    let starts_well = user
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    if !plain || !starts_well || user.len() > 64 {
        return Err(format!(
            "repo_url's user name {user:?} must be letters, digits, -, . and _ (such as git), \
             starting with a letter or digit"
        ));
    }
    Ok(user.to_string())
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`.
pub(crate) fn parse_host_port(text: &str) -> Result<(RepoHost, Option<u16>), String> {
    let (host, port) = match text.strip_prefix('[') {
        Some(v6) => {
            let close = v6.find(']').ok_or(ODD_IPV6)? + 1;
            let (host, after) = text.split_at(close + 1);
            match after {
                "" => (host, None),
                after => (host, Some(after.strip_prefix(':').ok_or(ODD_IPV6)?)),
            }
        }
        None => match text.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (text, None),
        },
    };
    Ok((parse_host(host)?, port.map(parse_port).transpose()?))
}

fn parse_port(text: &str) -> Result<u16, String> {
    let digits = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    match text.parse::<u16>() {
        Ok(port) if digits && port != 0 && !text.starts_with('0') => Ok(port),
        _ => Err(format!(
            "repo_url's port {text:?} is not a port number (1 to 65535, no leading zeros)"
        )),
    }
}

/// A DNS name of letters, digits and hyphens, a dotted-quad IPv4 address or a bracketed IPv6
/// address, each written the one way that reads back the same.
fn parse_host(host: &str) -> Result<RepoHost, String> {
    if host.is_empty() {
        return Err("repo_url has no host".into());
    }
    if let Some(inside) = host.strip_prefix('[') {
        let ip: Ipv6Addr = inside
            .strip_suffix(']')
            .and_then(|ip| ip.parse().ok())
            .ok_or(ODD_IPV6)?;
        return Ok(RepoHost::V6(ip));
    }
    if !host
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.'))
    {
        return Err(format!(
            "repo_url's host {host:?} must be a name of letters, digits, - and ., or an IP address"
        ));
    }
    if host.ends_with('.') {
        return Err(format!("repo_url's host {host:?} must not end with a dot"));
    }
    let labels: Vec<&str> = host.split('.').collect();
    let odd_label = |label: &&str| {
        label.is_empty() || label.len() > 63 || label.starts_with('-') || label.ends_with('-')
    };
    if host.len() > 253 || labels.iter().any(odd_label) {
        return Err(format!(
            "repo_url's host {host:?} is not a DNS name (empty parts, a part over 63 characters, \
             or a part starting or ending with -)"
        ));
    }
    // Top-level domains start with a letter; a host whose last part starts with a digit is an
    // address, and the only spelling of one that every reader agrees on is a.b.c.d.
    if labels
        .last()
        .is_some_and(|tld| tld.starts_with(|c: char| c.is_ascii_digit()))
    {
        return match host.parse::<Ipv4Addr>() {
            Ok(ip) if ip.to_string() == host => Ok(RepoHost::V4(ip)),
            _ => Err(format!(
                "repo_url's host {host:?} is not an IPv4 address written as four decimal numbers \
                 (a.b.c.d, no leading zeros)"
            )),
        };
    }
    Ok(RepoHost::Name(host.to_ascii_lowercase()))
}

/// A path of `/`-separated segments of letters, digits, `-`, `.`, `_` and `~`.
fn check_path(path: &str) -> Result<String, String> {
    let Some(segments) = path.strip_prefix('/').filter(|rest| !rest.is_empty()) else {
        return Err("repo_url must name a repository path such as owner/repo".into());
    };
    for segment in segments.split('/') {
        if segment.is_empty() {
            return Err("repo_url's path has an empty part (// or a / at the end)".into());
        }
        if segment == "." || segment == ".." {
            return Err("repo_url must not contain . or .. path segments".into());
        }
        if segment.starts_with('-') {
            return Err(
                "repo_url's path must not have parts starting with - (git could read them as \
                 options)"
                    .into(),
            );
        }
        if let Some(c) = segment
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~')))
        {
            return Err(format!(
                "repo_url's path may hold only letters, digits and - . _ ~ (found {c:?})"
            ));
        }
    }
    Ok(path.to_string())
}

#[cfg(test)]
mod tests;

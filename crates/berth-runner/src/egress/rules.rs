//! Which names a sandbox on the egress network may reach: the server's list
//! (`egress_allowed_domains`), optionally narrowed per task, matched against the host a request
//! names. A name is a domain, never an address: a rule for an IP literal is refused.

use serde::{Deserialize, Serialize};

/// One entry of `egress_allowed_domains`, as written in the configuration: a bare domain, or
/// a table with the HTTP methods allowed on it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum DomainEntry {
    /// `"pypi.org"` or `"*.pythonhosted.org"`: any method.
    Domain(String),
    /// `{ domain = "api.github.com", methods = ["GET", "HEAD"] }`.
    WithMethods {
        domain: String,
        methods: Vec<String>,
    },
}

/// A parsed rule: a name, or every name under a suffix, and the methods allowed on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DomainRule {
    /// Lower case, no trailing dot.
    name: String,
    /// Written `*.name`: names under `name`, not `name` itself.
    subdomains: bool,
    /// Upper case; `None` allows every method.
    methods: Option<Vec<String>>,
}

impl DomainRule {
    /// Reads one entry strictly; `Err` says what is wrong with it.
    pub fn parse(entry: &DomainEntry) -> Result<Self, String> {
        let (domain, methods) = match entry {
            DomainEntry::Domain(domain) => (domain, None),
            DomainEntry::WithMethods { domain, methods } => (domain, Some(methods)),
        };
        let (subdomains, name) = match domain.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, domain.as_str()),
        };
        let name = name.to_ascii_lowercase();
        if !is_domain(&name) {
            return Err(format!(
                "egress domain {domain:?} must be a domain name such as pypi.org or \
                 *.pythonhosted.org (no scheme, port, path or IP address)"
            ));
        }
        let methods = match methods {
            None => None,
            Some(methods) if methods.is_empty() => {
                return Err(format!("egress domain {domain:?} lists no methods"))
            }
            Some(methods) => Some(
                methods
                    .iter()
                    .map(
                        |method| match hyper::Method::from_bytes(method.as_bytes()) {
                            Ok(_) if !method.is_empty() => Ok(method.to_ascii_uppercase()),
                            _ => Err(format!("{method:?} is not an HTTP method")),
                        },
                    )
                    .collect::<Result<_, _>>()?,
            ),
        };
        Ok(Self {
            name,
            subdomains,
            methods,
        })
    }

    /// Whether the rule names `host` (lower case, no trailing dot).
    fn covers_name(&self, host: &str) -> bool {
        match self.subdomains {
            false => host == self.name,
            true => host
                .strip_suffix(&self.name)
                .is_some_and(|head| head.ends_with('.') && head.len() > 1),
        }
    }

    /// Whether every name `other` names is one this rule names too.
    fn covers_rule(&self, other: &DomainRule) -> bool {
        match (self.subdomains, other.subdomains) {
            (false, true) => false,
            (_, false) => self.covers_name(&other.name),
            (true, true) => other.name == self.name || self.covers_name(&other.name),
        }
    }
}

impl std::fmt::Display for DomainRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let star = if self.subdomains { "*." } else { "" };
        write!(f, "{star}{}", self.name)
    }
}

/// Parses the server's list; `Err` names the first bad entry.
pub fn parse_rules(entries: &[DomainEntry]) -> Result<Vec<DomainRule>, String> {
    entries.iter().map(DomainRule::parse).collect()
}

/// Whether `method` on `host` is allowed; `Err` is the reason it is not. HTTPS arrives as a
/// `CONNECT` whose own requests the proxy cannot see, so a rule that lists methods allows
/// HTTPS only if it lists `CONNECT` too.
pub fn check(rules: &[DomainRule], host: &str, method: &str) -> Result<(), String> {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let matching: Vec<&DomainRule> = rules.iter().filter(|r| r.covers_name(&host)).collect();
    if matching.is_empty() {
        return Err(format!("{host} is not an allowed domain"));
    }
    let allowed = matching.iter().any(|rule| match &rule.methods {
        None => true,
        Some(methods) => methods.iter().any(|m| m == method),
    });
    match allowed {
        true => Ok(()),
        false => Err(format!("{method} is not allowed on {host}")),
    }
}

/// The rules a task gets when it asks for `asked` (say, from its repository's environment):
/// each asked domain that the server's rules cover, with the covering rule's methods. A task
/// may ask for fewer domains than the server allows, never more: `Err` lists those it may not
/// have.
pub fn narrow(server: &[DomainRule], asked: &[DomainEntry]) -> Result<Vec<DomainRule>, String> {
    let mut kept = Vec::new();
    let mut refused = Vec::new();
    for entry in asked {
        let wanted = DomainRule::parse(entry)?;
        match server.iter().find(|rule| rule.covers_rule(&wanted)) {
            Some(rule) => kept.push(DomainRule {
                methods: narrower_methods(&rule.methods, &wanted.methods),
                ..wanted
            }),
            None => refused.push(wanted.to_string()),
        }
    }
    match refused.is_empty() {
        true => Ok(kept),
        false => Err(format!(
            "egress domains not allowed on this server: {} (ask the operator to add them to \
             egress_allowed_domains)",
            refused.join(", ")
        )),
    }
}

fn narrower_methods(
    server: &Option<Vec<String>>,
    asked: &Option<Vec<String>>,
) -> Option<Vec<String>> {
    match (server, asked) {
        (None, asked) => asked.clone(),
        (server, None) => server.clone(),
        (Some(server), Some(asked)) => Some(
            asked
                .iter()
                .filter(|m| server.contains(m))
                .cloned()
                .collect(),
        ),
    }
}

/// A DNS name of letters, digits and hyphens in dot-separated labels, with at least two labels
/// and a last label that is not all digits (so no IPv4 address passes).
fn is_domain(name: &str) -> bool {
    let labels: Vec<&str> = name.split('.').collect();
    let label_ok = |label: &&str| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    name.len() <= 253
        && labels.len() >= 2
        && labels.iter().all(label_ok)
        && !labels
            .last()
            .is_some_and(|last| last.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn domain(name: &str) -> DomainEntry {
        DomainEntry::Domain(name.into())
    }

    fn rules() -> Vec<DomainRule> {
        parse_rules(&[
            domain("pypi.org"),
            domain("*.pythonhosted.org"),
            DomainEntry::WithMethods {
                domain: "api.example.com".into(),
                methods: vec!["get".into(), "HEAD".into()],
            },
        ])
        .unwrap()
    }

    #[test]
    fn names_and_subdomains_match_exactly() {
        let rules = rules();
        for (host, method) in [
            ("pypi.org", "CONNECT"),
            ("PyPI.org.", "GET"),
            ("files.pythonhosted.org", "CONNECT"),
            ("a.b.pythonhosted.org", "POST"),
            ("api.example.com", "GET"),
        ] {
            assert_eq!(check(&rules, host, method), Ok(()), "{host} {method}");
        }
        for (host, method, says) in [
            ("evilpypi.org", "GET", "not an allowed domain"),
            ("pypi.org.evil.com", "GET", "not an allowed domain"),
            ("pythonhosted.org", "GET", "not an allowed domain"),
            ("xpythonhosted.org", "GET", "not an allowed domain"),
            ("api.example.com", "POST", "POST is not allowed"),
            ("api.example.com", "CONNECT", "CONNECT is not allowed"),
        ] {
            let err = check(&rules, host, method).unwrap_err();
            assert!(err.contains(says), "{host} {method}: {err}");
        }
    }

    #[test]
    fn bad_entries_are_refused_with_the_reason() {
        for bad in [
            "",
            "pypi",
            "https://pypi.org",
            "pypi.org:443",
            "pypi.org/simple",
            "10.0.0.1",
            "*.",
            "*",
            "-a.org",
            "a..org",
        ] {
            let err = DomainRule::parse(&domain(bad)).unwrap_err();
            assert!(err.contains("must be a domain name"), "{bad}: {err}");
        }
        let no_methods = DomainEntry::WithMethods {
            domain: "a.org".into(),
            methods: vec![],
        };
        assert!(DomainRule::parse(&no_methods).is_err());
        let bad_method = DomainEntry::WithMethods {
            domain: "a.org".into(),
            methods: vec!["G T".into()],
        };
        assert!(DomainRule::parse(&bad_method).is_err());
    }

    #[test]
    fn a_task_narrows_but_never_widens() {
        let server = rules();
        let kept = narrow(
            &server,
            &[
                domain("files.pythonhosted.org"),
                domain("*.cdn.pythonhosted.org"),
                DomainEntry::WithMethods {
                    domain: "api.example.com".into(),
                    methods: vec!["GET".into(), "POST".into()],
                },
            ],
        )
        .unwrap();
        assert_eq!(check(&kept, "files.pythonhosted.org", "GET"), Ok(()));
        assert_eq!(check(&kept, "x.cdn.pythonhosted.org", "GET"), Ok(()));
        assert!(check(&kept, "pypi.org", "GET").is_err(), "not asked for");
        assert!(check(&kept, "other.pythonhosted.org", "GET").is_err());
        assert!(
            check(&kept, "api.example.com", "POST").is_err(),
            "server says GET"
        );
        assert_eq!(check(&kept, "api.example.com", "GET"), Ok(()));

        for wider in ["*.pypi.org", "npmjs.org", "pythonhosted.org"] {
            let err = narrow(&server, &[domain(wider)]).unwrap_err();
            assert!(err.contains(wider), "{wider}: {err}");
        }
        assert_eq!(narrow(&server, &[]).unwrap(), vec![]);
    }
}

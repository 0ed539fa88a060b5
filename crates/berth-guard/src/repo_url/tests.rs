use super::*;

fn normal(text: &str) -> Result<String, String> {
    RepoUrl::parse(text).map(|url| url.to_string())
}

#[test]
fn plain_urls_read_as_their_parts() {
    let url = RepoUrl::parse("ssh://git@git.example.com:2222/team/~me/repo.git").unwrap();
    assert_eq!(url.scheme(), Scheme::Ssh);
    assert_eq!(url.user(), Some("git"));
    assert_eq!(url.host(), &RepoHost::Name("git.example.com".into()));
    assert_eq!(url.port(), 2222);
    assert_eq!(url.path(), "/team/~me/repo.git");
    assert_eq!(url.origin(), "ssh://git.example.com:2222");

    let url = RepoUrl::parse("https://[2001:db8::1]/o/r").unwrap();
    assert_eq!(url.host(), &RepoHost::V6("2001:db8::1".parse().unwrap()));
    assert_eq!((url.port(), url.explicit_port()), (443, None));
    assert_eq!(url.origin(), "https://[2001:db8::1]");
}

#[test]
fn the_normalised_form_is_the_input_up_to_case_or_the_scp_form() {
    for (text, expected) in [
        (
            "https://github.com/owner/repo",
            "https://github.com/owner/repo",
        ),
        (
            "https://github.com/owner/repo.git",
            "https://github.com/owner/repo.git",
        ),
        (
            "HTTPS://GitHub.COM/Owner/Repo",
            "https://github.com/Owner/Repo",
        ),
        (
            "http://127.0.0.1:9418/repo.git",
            "http://127.0.0.1:9418/repo.git",
        ),
        (
            "ssh://git@github.com/o/r.git",
            "ssh://git@github.com/o/r.git",
        ),
        ("ssh://github.com/o/r.git", "ssh://github.com/o/r.git"),
        (
            "git@github.com:owner/repo.git",
            "ssh://git@github.com/owner/repo.git",
        ),
        (
            "git@GitHub.com:owner/repo.git",
            "ssh://git@github.com/owner/repo.git",
        ),
        ("git@[2001:db8::1]:o/r", "ssh://git@[2001:db8::1]/o/r"),
        ("git@host:22/o/r", "ssh://git@host/22/o/r"),
        (
            "https://[::ffff:127.0.0.1]:8443/o/r",
            "https://[::ffff:127.0.0.1]:8443/o/r",
        ),
        (
            "https://xn--bcher-kva.example/o/r",
            "https://xn--bcher-kva.example/o/r",
        ),
        (
            "https://1.2.3.example.com/o/r",
            "https://1.2.3.example.com/o/r",
        ),
    ] {
        assert_eq!(normal(text).as_deref(), Ok(expected), "{text}");
    }
}

/// Each entry: a URL, and the words its refusal must contain.
const REFUSED: &[(&str, &str)] = &[
    ("", "empty"),
    // Read differently by the WHATWG parser (`\` is `/`) and by git and curl (user name).
    (
        "http://127.0.0.1:9418\\@127.0.0.2:9/repo.git",
        "backslashes",
    ),
    ("https://github.com\\@10.0.0.5:8443/x.git", "backslashes"),
    ("https://github.com\\.evil.com/o/r", "backslashes"),
    // `@`, `?` and `#` tricks.
    ("https://github.com@evil.com/o/r", "credentials"),
    ("https://github.com:443@evil.com/o/r", "credentials"),
    ("https://user:secret@github.com/o/r", "credentials"),
    ("https://token@github.com/o/r", "credentials"),
    ("ssh://git:secret@github.com/o/r", "credentials"),
    (
        "ssh://git@evil.com@github.com/o/r",
        "host \"evil.com@github.com\"",
    ),
    ("https://evil.com#@github.com/o/r", "fragment"),
    ("https://evil.com?@github.com/o/r", "query"),
    ("https://github.com/o/r?x=1", "query"),
    ("https://github.com/o/r#main", "fragment"),
    ("git@github.com:o/r@evil", "found '@'"),
    // Percent-encoding anywhere.
    ("https://git%68ub.com/o/r", "percent-encoding"),
    ("https://%67%69%74@github.com/o/r", "percent-encoding"),
    ("ssh://g%69t@github.com/o/r", "percent-encoding"),
    ("https://github.com/o/%2e%2e/r", "percent-encoding"),
    ("https://[fe80::1%25eth0]/o/r", "percent-encoding"),
    // IPv6 forms.
    ("https://[fe80::1%eth0]/o/r", "percent-encoding"),
    ("https://[::1/o/r", "IPv6"),
    ("https://[v1.x]/o/r", "IPv6"),
    ("https://[::1]x/o/r", "IPv6"),
    (
        "https://[0:0:0:0:0:0:0:1]/o/r",
        "write it as https://[::1]/o/r",
    ),
    (
        "https://[::FFFF:7F00:1]/o/r",
        "write it as https://[::ffff:127.0.0.1]/o/r",
    ),
    ("https://::1/o/r", "no host"),
    // Unicode and IDNA.
    ("https://gïthub.com/o/r", "ASCII"),
    ("https://github\u{3002}com/o/r", "ASCII"),
    ("https://ｇithub.com/o/r", "ASCII"),
    ("https://github.com/ö/r", "ASCII"),
    // Addresses in forms only some readers take.
    ("https://127.1/o/r", "four decimal numbers"),
    ("https://2130706433/o/r", "four decimal numbers"),
    ("https://0x7f.0.0.1/o/r", "four decimal numbers"),
    ("https://127.000.000.001/o/r", "four decimal numbers"),
    ("https://127.0.0.1.2/o/r", "four decimal numbers"),
    ("https://1e100/o/r", "four decimal numbers"),
    // Odd hosts and ports.
    ("https://github.com./o/r", "end with a dot"),
    ("https://127.0.0.1./o/r", "end with a dot"),
    ("https://github..com/o/r", "not a DNS name"),
    ("https://-github.com/o/r", "not a DNS name"),
    ("https://github-.com/o/r", "not a DNS name"),
    ("https://git_hub.com/o/r", "letters, digits, - and ."),
    ("https:///o/r", "no host"),
    ("https://:443/o/r", "no host"),
    ("https://github.com:/o/r", "port \"\""),
    ("https://github.com:0/o/r", "port \"0\""),
    ("https://github.com:08443/o/r", "port \"08443\""),
    ("https://github.com:65536/o/r", "port \"65536\""),
    ("https://github.com:+443/o/r", "port \"+443\""),
    (
        "https://github.com:443/o/r",
        "write it as https://github.com/o/r",
    ),
    (
        "ssh://git@github.com:22/o/r",
        "write it as ssh://git@github.com/o/r",
    ),
    ("https://github.com:8443:1/o/r", "port \"8443:1\""),
    // Option-like names.
    ("ssh://-oProxyCommand=touch%20x/repo", "percent-encoding"),
    ("ssh://-oProxyCommand=id/repo", "letters, digits, - and ."),
    ("ssh://-oProxyCommand/repo", "not a DNS name"),
    ("ssh://-oProxyCommand=id@github.com/repo", "user name"),
    ("-oProxyCommand=id@github.com:o/r", "user name"),
    ("git@-oProxyCommand=id:o/r", "letters, digits, - and ."),
    ("https://github.com/-o/r", "starting with -"),
    ("git@github.com:-o/r", "starting with -"),
    // Paths.
    ("https://github.com", "repository path"),
    ("https://github.com/", "repository path"),
    ("https://github.com/../../etc", ". or .."),
    ("https://github.com/o/./r", ". or .."),
    ("https://github.com//o/r", "empty part"),
    ("https://github.com/o/r/", "empty part"),
    ("git@github.com:/srv/r", "empty part"),
    ("git@github.com:", "repository path"),
    ("https://github.com/o/r:x", "found ':'"),
    ("https://github.com/o/r'x", "found '\\''"),
    ("https://github.com/o/$(id)", "found '$'"),
    // scp forms with extra colons, and other schemes and shapes.
    ("git@github.com:22:o/r", "found ':'"),
    ("git@github.com:o:r", "found ':'"),
    ("git@[::1]:22:o/r", "found ':'"),
    ("git@[::1]/o/r", "IPv6"),
    ("github.com:o/r", "not a URL"),
    ("/srv/repo", "not a URL"),
    ("./repo", "not a URL"),
    ("file:///etc/passwd", "scheme \"file\" is not allowed"),
    ("git://github.com/o/r", "scheme \"git\" is not allowed"),
    ("ext::sh -c touch% /tmp/pwned", "spaces"),
    ("ext::sh", "not a URL"),
    ("git@host:foo://x/y", "scheme \"git@host:foo\""),
    ("https:/github.com/o/r", "not a URL"),
    // Whitespace and control characters.
    (" https://github.com/o/r", "spaces"),
    ("https://github.com/o/r\n", "control"),
    ("https://github.com/o/r\t", "spaces"),
    ("https://github.com\u{0}@evil.com/o/r", "control"),
    ("https://github.com/o/r\u{7f}", "control"),
    ("https://github.com\u{a0}/o/r", "spaces"),
    ("https://github.com\u{200b}/o/r", "ASCII"),
];

#[test]
fn what_a_laxer_reader_could_take_elsewhere_is_refused() {
    for (text, says) in REFUSED {
        let err = RepoUrl::parse(text).expect_err(text);
        assert!(err.contains(says), "{text:?}: {err}");
    }
    let long = format!("https://github.com/o/{}", "r".repeat(MAX_LEN));
    assert!(RepoUrl::parse(&long).unwrap_err().contains("longer than"));
    let label = "a".repeat(64);
    assert!(RepoUrl::parse(&format!("https://{label}.com/o/r")).is_err());
}

/// A small deterministic generator (xorshift), so that the property below needs no crate.
struct Shuffle(u64);

impl Shuffle {
    fn next(&mut self, below: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % below as u64) as usize
    }
}

/// URL-shaped strings, each part picked from plain and tricky choices, and strings glued
/// from loose pieces.
fn candidates() -> Vec<String> {
    const PARTS: [&[&str]; 6] = [
        &[
            "https://", "http://", "ssh://", "HTTPS://", "", "ftp://", "https:/",
        ],
        &["", "", "git@", "Git.user_1@", "a:b@", "@", "-o@", "%67@"],
        &[
            "github.com",
            "GitHub.com",
            "127.0.0.1",
            "[::1]",
            "[::ffff:1.2.3.4]",
            "[2001:DB8::1]",
            "x-1.example",
            "127.1",
            "a..b",
            "xn--bcher-kva.example",
            "10.0.0.5",
            "ä.com",
            "h\\@x",
            "a.b.",
            "[fe80::1%25lo]",
            "0x7f.1",
            "",
        ],
        &[
            "", "", ":22", ":443", ":80", ":8443", ":0", ":", ":65535", ":99999",
        ],
        &["/", "/", ":", "//", "\\", "?", "#"],
        &[
            "o/r",
            "o/r.git",
            "~u/r",
            "-o",
            "o/../r",
            "a_b/c-d.e",
            "o/r/",
            "%2e",
            "o:r",
            "r",
        ],
    ];
    const PIECES: &[&str] = &[
        "https://",
        "http://",
        "ssh://",
        "git@",
        "@",
        ":",
        "/",
        "//",
        ".",
        "..",
        "-",
        "[",
        "]",
        "::1",
        "127.0.0.1",
        "10.0.0.5",
        "github.com",
        "GitHub.com",
        "x",
        "0",
        "22",
        "443",
        "8443",
        "\\",
        "%2e",
        "?",
        "#",
        "~",
        "_",
        "o/r",
        ".git",
        "[::ffff:1.2.3.4]",
        "ä",
        " ",
    ];
    let mut shuffle = Shuffle(0x9e37_79b9_7f4a_7c15);
    let mut out = Vec::new();
    for _ in 0..40_000 {
        let shaped: String = PARTS
            .iter()
            .map(|choices| choices[shuffle.next(choices.len())])
            .collect();
        out.push(shaped);
        let mut glued = String::new();
        for _ in 0..1 + shuffle.next(8) {
            glued.push_str(PIECES[shuffle.next(PIECES.len())]);
        }
        out.push(glued);
    }
    out
}

#[test]
fn every_accepted_url_reads_back_the_same_and_as_the_url_crate_reads_it() {
    let mut accepted = 0;
    for text in candidates() {
        let Ok(url) = RepoUrl::parse(&text) else {
            continue;
        };
        accepted += 1;
        let normal = url.to_string();
        assert_eq!(RepoUrl::parse(&normal).as_ref(), Ok(&url), "{text}");
        // A second, independent reader of the normalised form finds the same parts. (The
        // `url` crate is lax on what it accepts, but a plain URL it reads as RFC 3986 does.)
        let other = url::Url::parse(&normal).unwrap_or_else(|err| panic!("{normal}: {err}"));
        assert_eq!(other.scheme(), url.scheme().as_str(), "{normal}");
        assert_eq!(other.username(), url.user().unwrap_or(""), "{normal}");
        assert_eq!(other.password(), None, "{normal}");
        let host = match other.host() {
            Some(url::Host::Domain(name)) => RepoHost::Name(name.to_string()),
            Some(url::Host::Ipv4(ip)) => RepoHost::V4(ip),
            Some(url::Host::Ipv6(ip)) => RepoHost::V6(ip),
            // ssh is not a special scheme to the WHATWG reader: its hosts stay text.
            None => panic!("{normal}: no host"),
        };
        let host = match (host, url.scheme()) {
            (RepoHost::Name(name), Scheme::Ssh) => parse_host(&name).unwrap(),
            (host, _) => host,
        };
        assert_eq!(&host, url.host(), "{normal}");
        let port = other.port_or_known_default().unwrap_or(22);
        assert_eq!(port, url.port(), "{normal}");
        assert_eq!(other.path(), url.path(), "{normal}");
        assert_eq!((other.query(), other.fragment()), (None, None), "{normal}");
    }
    assert!(accepted > 300, "only {accepted} candidates parsed");
}

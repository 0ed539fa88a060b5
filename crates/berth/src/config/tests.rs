//! The configuration as a whole: its keys against the user reference, checks that span parts,
//! and reading a file.

use std::collections::BTreeSet;

use berth_proto::Secret;

use super::*;

/// The keys in the first column of docs/configuration.md's table.
fn documented_keys() -> BTreeSet<String> {
    let page = include_str!("../../../../docs/configuration.md");
    page.lines()
        .skip_while(|line| !line.starts_with("| key |"))
        .skip(2)
        .take_while(|line| line.starts_with('|'))
        .filter_map(|row| row.split('|').nth(1))
        .flat_map(|cell| cell.split('`').skip(1).step_by(2))
        .map(str::to_string)
        .collect()
}

#[test]
fn the_reference_lists_every_key_and_no_other() {
    let documented = documented_keys();
    let keys: BTreeSet<String> = Config::keys().into_iter().collect();
    let undocumented: Vec<_> = keys.difference(&documented).collect();
    let unknown: Vec<_> = documented.difference(&keys).collect();
    assert!(
        undocumented.is_empty(),
        "settings missing from docs/configuration.md: {undocumented:?}"
    );
    assert!(
        unknown.is_empty(),
        "docs/configuration.md lists keys no part has: {unknown:?}"
    );
}

#[test]
fn every_key_belongs_to_one_part() {
    fn count<T: Serialize + Default>() -> usize {
        match serde_json::to_value(T::default()).unwrap() {
            serde_json::Value::Object(table) => table.len(),
            _ => 0,
        }
    }
    let parts = count::<Common>()
        + count::<berth_server::Settings>()
        + count::<berth_runner::Settings>()
        + count::<berth_agent::Settings>()
        + count::<berth_sandbox::Settings>()
        + count::<berth_fly::Settings>()
        + count::<sealing::Settings>()
        + count::<Operations>();
    assert_eq!(parts, Config::keys().len(), "two parts claim the same key");
}

#[test]
fn secrets_never_show_in_debug() {
    let secrets = [
        "postgres://berth:pw-1@db/berth",
        "sk-ant-2",
        "sk-openai-3",
        "ghp_4",
        "oauth-5",
        "a2V5LTY=",
        "k0:b2xkLTc=",
        "mask-8",
        "vapid-9",
        "fo1_fly-10",
    ];
    let secret = |i: usize| Some(Secret::new(secrets[i]));
    let mut config = Config::default();
    config.common.database_url = secret(0);
    config.agent.anthropic_api_key = secret(1);
    config.agent.openai_api_key = secret(2);
    config.common.github_token = secret(3);
    config.server.github_client_secret = secret(4);
    config.sealing.encryption_key = secret(5);
    config.sealing.encryption_old_keys = secret(6);
    config.common.redact_secrets = vec![Secret::new(secrets[7])];
    config.server.web_push_vapid_key = secret(8);
    config.fly.fly_api_token = secret(9);
    let printed = format!("{config:?} {config:#?}");
    for secret in secrets {
        assert!(!printed.contains(secret), "{secret} printed: {printed}");
    }
}

#[test]
fn sign_in_without_a_key_is_refused_with_how_to_make_one() {
    let mut config = Config::default();
    config.server.github_client_id = Some("id".into());
    let err = config.validate().unwrap_err().to_string();
    assert!(err.contains("encryption_key"), "{err}");
    assert!(err.contains("openssl rand -base64 32"), "{err}");
    config.sealing.encryption_key = Some(Secret::new("bm90IDMyIGJ5dGVz"));
    let err = config.validate().unwrap_err().to_string();
    assert!(err.contains("must be 32 bytes"), "{err}");
}

#[test]
fn shared_settings_are_checked() {
    let mut config = Config::default();
    config.common.git_allowed_hosts.clear();
    assert!(config
        .validate()
        .unwrap_err()
        .to_string()
        .contains("git_allowed_hosts"));
    let mut config = Config::default();
    config.common.github_api_url = "api.github.com".into();
    assert!(config
        .validate()
        .unwrap_err()
        .to_string()
        .contains("github_api_url"));
    let mut config = Config::default();
    config.common.database_url = Some(Secret::new("mysql://db/berth"));
    assert!(config
        .validate()
        .unwrap_err()
        .to_string()
        .contains("postgres://"));
}

/// Loads `berth.toml` with this text. `BERTH_*` variables of the test run that are settings
/// would change the result, and there are none.
fn load(text: &str) -> Result<Config, ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("berth.toml");
    std::fs::write(&path, text).unwrap();
    Config::load(Some(&path), &Overrides::default())
}

#[test]
fn a_file_sets_each_part() {
    let config = load(
        r#"
        git_allowed_hosts = "github.com, git.example.com:8443"
        max_attempts = 5
        runner_capacity = 4
        agent_model = "claude-haiku-4-5"
        sandbox_cpus = 2
        encryption_key_id = "k9"

        [prices.local-model]
        input = 0.0
        output = 0.0
        cache_write = 0.0
        cache_read = 0.0
        "#,
    )
    .unwrap();
    assert_eq!(
        config.common.git_allowed_hosts,
        ["github.com", "git.example.com:8443"]
    );
    assert_eq!(config.server.max_attempts, 5);
    assert_eq!(config.runner.runner_capacity, 4);
    assert_eq!(config.agent.agent_model, "claude-haiku-4-5");
    assert!(config.agent.prices.contains_key("local-model"));
    assert_eq!(config.sandbox.sandbox_cpus, 2.0);
    assert_eq!(config.sealing.encryption_key_id, "k9");
}

#[test]
fn unknown_keys_and_wrong_types_are_named() {
    let err = load("runner_capactiy = 4\n").unwrap_err().to_string();
    assert!(err.contains("unknown setting \"runner_capactiy\""), "{err}");
    assert!(err.contains("did you mean \"runner_capacity\""), "{err}");
    let err = load("no_such_thing_at_all = 1\n").unwrap_err().to_string();
    assert!(err.contains("docs/configuration.md"), "{err}");
    let err = load("runner_capacity = \"many\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("runner_capacity"), "{err}");
    let err = load("listen = [\n").unwrap_err().to_string();
    assert!(err.contains("berth.toml"), "{err}");
}

#[test]
fn the_fly_backend_is_chosen_in_the_file_and_needs_its_token() {
    let err = load("sandbox_backend = \"fly\"\nfly_app = \"sbx\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("fly_api_token"), "{err}");
    let config =
        load("sandbox_backend = \"fly\"\nfly_app = \"sbx\"\nfly_api_token = \"fo1_x\"\n").unwrap();
    assert_eq!(config.fly.sandbox_backend, berth_fly::Backend::Fly);
    assert_eq!(config.fly.fly_api_url, berth_fly::DEFAULT_API_URL);
    let err = load("sandbox_backend = \"podman\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("podman") && err.contains("fly"), "{err}");
}

//! `berth doctor`: checks what a node needs before it can run tasks, one line each, and says
//! how to fix what fails. Exits 1 when something failed. It reads the same settings as
//! `berth server`, and opens (and so migrates) the database as the server would.

use std::time::Duration;

use berth_agent::AgentProvider;

use crate::config::Config;

/// One check's answer: what was found, or what is wrong and how to fix it.
enum Finding {
    Ok(String),
    Fail { problem: String, fix: String },
}

fn fail(problem: impl Into<String>, fix: impl Into<String>) -> Finding {
    Finding::Fail {
        problem: problem.into(),
        fix: fix.into(),
    }
}

/// Runs every check on `config` (or reports why the configuration did not load) and prints
/// them; `true` when all passed.
pub async fn run(config: anyhow::Result<Config>) -> bool {
    let config = match config {
        Ok(config) => {
            report("configuration", Finding::Ok("loaded and valid".into()));
            config
        }
        Err(err) => {
            let fix = "correct the setting named above (docs/configuration.md lists them all)";
            report("configuration", fail(format!("{err:#}"), fix));
            return false;
        }
    };
    let sandboxes = match config.fly.sandbox_backend {
        berth_fly::Backend::Docker => ("docker", docker(&config).await),
        berth_fly::Backend::Fly => ("fly", fly(&config).await),
    };
    let checks = [
        sandboxes,
        ("database", database(&config).await),
        ("encryption keys", keys(&config)),
        ("github", github(&config).await),
        ("model", model(&config).await),
    ];
    let mut healthy = true;
    for (name, finding) in checks {
        healthy &= matches!(finding, Finding::Ok(_));
        report(name, finding);
    }
    healthy
}

fn report(name: &str, finding: Finding) {
    match finding {
        Finding::Ok(detail) => println!("ok    {name}: {detail}"),
        Finding::Fail { problem, fix } => {
            println!("FAIL  {name}: {problem}");
            println!("      fix: {fix}");
        }
    }
}

/// The engine answers, and the sandbox image is there and has git and bash.
async fn docker(config: &Config) -> Finding {
    let docker = match berth_sandbox::connect().await {
        Ok(docker) => docker,
        Err(err) => {
            return fail(
                err.to_string(),
                "start Docker; point DOCKER_HOST at its socket if it is not \
                 unix:///var/run/docker.sock; the user running berth needs access to it (the \
                 docker group, or the socket mounted into Berth's container)",
            )
        }
    };
    let (image, fix) = match &config.sandbox.sandbox_image {
        Some(image) => (
            image.clone(),
            "build or load that image, or unset sandbox_image",
        ),
        None => (berth_sandbox::default_image(), "run `berth image build`"),
    };
    match berth_sandbox::check_image(&docker, &image).await {
        Ok(()) => Finding::Ok(format!(
            "engine answers; sandbox image {image} has git and bash"
        )),
        Err(err) => fail(format!("sandbox image {image}: {err}"), fix),
    }
}

/// The Machines API answers for the app with the token (listing its machines proves both).
async fn fly(config: &Config) -> Finding {
    let (Some(app), Some(token)) = (&config.fly.fly_app, &config.fly.fly_api_token) else {
        return fail(
            "fly_app or fly_api_token is not set",
            "set both (see docs/fly.md)",
        );
    };
    let client = berth_fly::MachinesClient::new(&config.fly.fly_api_url, app, token.clone());
    match client.list().await {
        Ok(machines) => Finding::Ok(format!(
            "the Machines API answers for app {app} ({} machines)",
            machines.len()
        )),
        Err(err) => fail(
            err.to_string(),
            "check fly_api_url, that fly_app exists (`fly apps create`), and that \
             fly_api_token may manage it (`fly tokens create deploy -a <app>`)",
        ),
    }
}

async fn database(config: &Config) -> Finding {
    match crate::config::open_store(&config.common).await {
        Ok(store) => {
            let answer = store.ping().await;
            let backend = store.backend();
            store.close().await;
            match answer {
                Ok(()) => Finding::Ok(format!("{backend:?} opens, is migrated and answers")),
                Err(err) => fail(format!("{err}"), "check the database server and its logs"),
            }
        }
        Err(err) => fail(
            format!("{err:#}"),
            "SQLite: data_dir must be writable by this user; PostgreSQL: check database_url, \
             that the server is reachable, and sslmode/sslrootcert (docs/operations.md)",
        ),
    }
}

fn keys(config: &Config) -> Finding {
    match config.sealing.keyring() {
        Ok(Some(keyring)) => Finding::Ok(format!("sealing key {} is set", keyring.current_id())),
        Ok(None) => Finding::Ok("encryption_key is unset: GitHub sign-in stays off".into()),
        Err(err) => fail(
            err,
            "make a key with `openssl rand -base64 32` and set encryption_key",
        ),
    }
}

/// The GitHub API answers, and the configured token and App key are accepted.
async fn github(config: &Config) -> Finding {
    let common = &config.common;
    let http = client();
    let mut request = http.get(&common.github_api_url);
    if let Some(token) = &common.github_token {
        request = http
            .get(format!(
                "{}/user",
                common.github_api_url.trim_end_matches('/')
            ))
            .bearer_auth(token.expose());
    }
    let answer = match request.header("user-agent", "berth-doctor").send().await {
        Ok(answer) => answer,
        Err(err) => {
            return fail(
                format!("cannot reach {}: {err}", common.github_api_url),
                "check github_api_url (GitHub Enterprise: https://HOST/api/v3) and this \
                 machine's network and proxy",
            )
        }
    };
    if common.github_token.is_some() && answer.status().as_u16() == 401 {
        return fail(
            "github_token was refused (401)",
            "make a new token on GitHub and set github_token",
        );
    }
    let app = match common.github_app() {
        Ok(Some(_)) => ", GitHub App key readable",
        Ok(None) => "",
        Err(err) => {
            return fail(
                err,
                "set github_app_private_key to the App's PEM or its path",
            )
        }
    };
    Finding::Ok(format!("{} answers{app}", common.github_api_url))
}

/// The model API the agent uses has a key (when it needs one) and answers.
async fn model(config: &Config) -> Finding {
    if config.runner.runner_command.is_some() {
        return Finding::Ok("runner_command is set: tasks run it, not the agent".into());
    }
    let agent = &config.agent;
    let (url, has_key) = match agent.agent_provider {
        AgentProvider::Anthropic => (&agent.anthropic_base_url, agent.anthropic_api_key.is_some()),
        AgentProvider::Openai => (&agent.openai_base_url, true),
    };
    if !has_key {
        return fail(
            "anthropic_api_key is not set: the agent cannot call the model",
            "set ANTHROPIC_API_KEY (or anthropic_api_key in berth.toml), or agent_provider = \
             \"openai\" with openai_base_url for a local model",
        );
    }
    match client().get(url).send().await {
        Ok(_) => Finding::Ok(format!("{url} answers; model {}", agent.agent_model)),
        Err(err) => fail(
            format!("cannot reach {url}: {err}"),
            "check anthropic_base_url / openai_base_url and this machine's network",
        ),
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("an HTTP client builds")
}

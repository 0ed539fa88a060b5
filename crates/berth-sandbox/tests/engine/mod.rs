//! The real Docker engine for tests, with the default image built once per test run. Without
//! an engine the tests fail on CI (CI is set) and are skipped with a message elsewhere.

use berth_sandbox::Docker;
use tokio::sync::OnceCell;

static IMAGE: OnceCell<()> = OnceCell::const_new();

pub async fn engine() -> Option<Docker> {
    let docker = match berth_sandbox::connect().await {
        Ok(docker) => docker,
        Err(err) if std::env::var_os("CI").is_some() => {
            panic!("the Docker engine is needed: {err}")
        }
        Err(err) => {
            eprintln!("skipped: no Docker engine ({err})");
            return None;
        }
    };
    IMAGE
        .get_or_init(|| async {
            let mut progress = |line: &str| eprintln!("{line}");
            berth_sandbox::ensure_default_image(&docker, &mut progress)
                .await
                .expect("the image builds");
        })
        .await;
    Some(docker)
}

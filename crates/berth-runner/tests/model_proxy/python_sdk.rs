//! The proxy's HTTP contract with the official `anthropic` Python SDK as its client: a plain
//! message, a streamed one, a dead token and a spent budget, each as the SDK understands it.
//! `scripts/test` installs the SDK (`scripts/install-anthropic-sdk`) and names its python in
//! `BERTH_ANTHROPIC_PYTHON`; under CI a missing SDK fails the test.

use berth_proto::Budget;
use berth_testkit::anthropic::Reply;
use berth_testkit::FakeAnthropic;
use serde_json::Value;

use super::{loopback_reach, start_proxy, Attempt, REAL_KEY};

fn sdk_python() -> Option<String> {
    match std::env::var("BERTH_ANTHROPIC_PYTHON") {
        Ok(python) if !python.is_empty() => Some(python),
        _ if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("BERTH_ANTHROPIC_PYTHON is not set; run the tests with scripts/test")
        }
        _ => {
            eprintln!("skipped: BERTH_ANTHROPIC_PYTHON is not set (scripts/install-anthropic-sdk)");
            None
        }
    }
}

#[tokio::test]
async fn the_official_python_sdk_speaks_to_the_proxy_as_to_the_api() {
    let Some(python) = sdk_python() else {
        return;
    };
    let fake = FakeAnthropic::start(REAL_KEY).await;
    fake.push([Reply::message("Hello!"), Reply::text("Hello, slowly.")]);
    let budget = Budget {
        max_turns: Some(2),
        ..Budget::default()
    };
    let attempt = Attempt::start(budget).await;
    let (proxy, url) = start_proxy(&fake, "http://127.0.0.1:9/v1", loopback_reach()).await;
    let pass = proxy.admit(attempt.admission());
    let dead = proxy.admit(attempt.admission()).token().to_string();

    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/model_proxy/sdk_client.py"
    );
    let token = pass.token().to_string();
    let ran = tokio::process::Command::new(python)
        .args([script, &url, &token, &dead])
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&ran.stderr);
    assert!(ran.status.success(), "the SDK's script failed: {stderr}");
    let report: Value = serde_json::from_slice(&ran.stdout).unwrap();

    assert_eq!(report["create"]["text"], "Hello!");
    assert_eq!(report["create"]["input_tokens"], 100);
    assert_eq!(report["stream"]["text"], "Hello, slowly.");
    assert_eq!(report["stream"]["output_tokens"], 30);
    assert_eq!(report["dead_token"]["status"], 401);
    assert_eq!(report["dead_token"]["type"], "authentication_error");
    assert_eq!(report["over_budget"]["status"], 402);
    assert_eq!(report["over_budget"]["type"], "billing_error");
    let message = report["over_budget"]["message"].as_str().unwrap();
    assert!(
        message.contains("budget of 2 model turns is spent"),
        "{message}"
    );
    for headers in fake.headers() {
        assert_eq!(headers["x-api-key"], REAL_KEY);
    }
    assert_eq!(fake.requests().len(), 2);
}

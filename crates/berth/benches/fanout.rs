//! Stream fan-out: 1,000 WebSocket subscribers on one task — the time from an event being
//! written to its arrival at each subscriber (p50/p99/max), and events per second delivered —
//! and the resident memory of a `berth server` process holding 10,000 idle subscriptions of
//! one task, which then all receive the task's end when it is cancelled.
//!
//! `cargo bench -p berth --bench fanout` (loopback only; stops by itself).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_guard::AllowedHost;
use berth_proto::{CreateTask, EventKind, StreamFrame, TaskStatus};
use berth_server::{AppState, SandboxCeiling, Settings, Shared};
use berth_store::{ClaimLimits, Fence, TaskEnd};
use futures::StreamExt;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const SUBSCRIBERS: usize = 1_000;
const PACED_EVENTS: usize = 100;
const BURST_EVENTS: usize = 1_000;
const IDLE_CONNECTIONS: usize = 10_000;

fn main() {
    raise_fd_limit();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(latency_and_throughput());
    runtime.block_on(idle_memory());
}

fn raise_fd_limit() {
    let (_, hard) = rlimit::Resource::NOFILE.get().unwrap();
    rlimit::Resource::NOFILE.set(hard, hard).unwrap();
}

/// What `berth server` hands the API on its defaults; the bench needs no more.
fn shared() -> Shared {
    Shared {
        git_allowed_hosts: vec![AllowedHost::parse("github.com").unwrap()],
        github_web_url: "https://github.com".into(),
        github_api_url: "https://api.github.com".into(),
        server_github_token: false,
        keyring: None,
        sandbox_ceiling: SandboxCeiling {
            memory_mb: 2048,
            cpus: 1.0,
            pids: 512,
        },
        github_app: None,
    }
}

async fn latency_and_throughput() {
    let dir = tempfile::tempdir().unwrap();
    let store = berth_store::open_sqlite(dir.path()).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let state = AppState::new(store.clone(), Settings::default(), shared());
    let streams = state.streams.clone();
    tokio::spawn(berth_server::serve(listener, state, std::future::pending()));
    let user = store.upsert_user("bench").await.unwrap();
    let token = berth_server::auth::issue_token(store.as_ref(), user.id, "bench")
        .await
        .unwrap()
        .token;
    let new = berth_store::NewTask {
        owner_id: user.id,
        request: CreateTask::new("https://github.com/o/r", "fan out"),
        max_attempts: 3,
        idempotency: None,
        github: None,
    };
    store.create_task(new).await.unwrap();
    let limits = ClaimLimits {
        node_id: "bench".into(),
        lease_ms: 3_600_000,
        node_capacity: 1,
        per_user_limit: 1,
    };
    let task = store.claim_next_task(&limits).await.unwrap().unwrap();
    let fence = Fence {
        task_id: task.id,
        attempt: task.attempt,
    };

    // Each subscriber records when each sequence number arrived.
    let url = format!("ws://{address}/v1/tasks/{}/stream?after=2", task.id);
    let mut subscribers = Vec::new();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel(SUBSCRIBERS);
    for _ in 0..SUBSCRIBERS {
        let (url, token, ready) = (url.clone(), token.clone(), ready_tx.clone());
        subscribers.push(tokio::spawn(async move {
            let mut request = url.into_client_request().unwrap();
            request
                .headers_mut()
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
            let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
            let mut arrivals = HashMap::new();
            while let Some(Ok(message)) = socket.next().await {
                let Message::Text(text) = message else {
                    continue;
                };
                match serde_json::from_str::<StreamFrame>(&text).unwrap() {
                    StreamFrame::Subscribed { .. } => ready.send(()).await.unwrap(),
                    StreamFrame::Event { event } => {
                        arrivals.insert(event.seq, Instant::now());
                    }
                    StreamFrame::End { .. } => break,
                    _ => {}
                }
            }
            arrivals
        }));
    }
    for _ in 0..SUBSCRIBERS {
        ready_rx.recv().await.unwrap();
    }
    // Each subscriber reads what it missed once as it joins; let those reads finish.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let reads_before = streams.reads();

    let mut written = HashMap::new();
    for i in 0..PACED_EVENTS {
        let at = Instant::now();
        let seq = store
            .append_event(
                fence,
                EventKind::AssistantText,
                serde_json::json!({"text": i}),
            )
            .await
            .unwrap();
        written.insert(seq, at);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let burst_start = Instant::now();
    let mut last_seq = 0;
    for i in 0..BURST_EVENTS {
        last_seq = store
            .append_event(
                fence,
                EventKind::AssistantText,
                serde_json::json!({"text": i}),
            )
            .await
            .unwrap();
    }
    let writing = burst_start.elapsed();
    let end = TaskEnd {
        status: TaskStatus::Succeeded,
        reason: None,
        diff: None,
        branch: None,
        pull_request_url: None,
    };
    store.finish_task(fence, end).await.unwrap();

    let mut latencies = Vec::new();
    let mut burst_done = Vec::new();
    for subscriber in subscribers {
        let arrivals = subscriber.await.unwrap();
        for (seq, at) in &written {
            latencies.push(arrivals[seq].duration_since(*at));
        }
        burst_done.push(arrivals[&last_seq].duration_since(burst_start));
    }
    latencies.sort();
    burst_done.sort();
    let delivered = (SUBSCRIBERS * BURST_EVENTS) as f64 / burst_done.last().unwrap().as_secs_f64();
    println!("fan-out to {SUBSCRIBERS} WebSocket subscribers of one task (server in this process, SQLite):");
    println!(
        "  write -> arrival, {PACED_EVENTS} paced events: p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms",
        ms(pct(&latencies, 50)),
        ms(pct(&latencies, 99)),
        ms(*latencies.last().unwrap())
    );
    println!(
        "  burst of {BURST_EVENTS} events: written in {:.0} ms ({:.0} events/s), all at every subscriber in {:.0} ms",
        ms(writing),
        BURST_EVENTS as f64 / writing.as_secs_f64(),
        ms(*burst_done.last().unwrap())
    );
    println!(
        "  delivered: {:.0} event-frames/s across subscribers ({:.0} events/s per subscriber)",
        delivered,
        delivered / SUBSCRIBERS as f64
    );
    let reads = streams.reads();
    println!(
        "  database reads for {} events: {} by the task's hub, {} by subscribers catching up",
        PACED_EVENTS + BURST_EVENTS + 1,
        reads.hubs - reads_before.hubs,
        reads.catching_up - reads_before.catching_up
    );
}

async fn idle_memory() {
    let dir = tempfile::tempdir().unwrap();
    let berth = env!("CARGO_BIN_EXE_berth");
    let token = std::process::Command::new(berth)
        .args(["token", "create", "--user", "bench", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let token = String::from_utf8(token.stdout).unwrap().trim().to_string();
    let mut server = tokio::process::Command::new(berth)
        .args([
            "server",
            "--no-runner",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir.path())
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines =
        tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(server.stdout.take().unwrap()));
    let base = loop {
        let line = lines.next_line().await.unwrap().unwrap();
        if let Some(url) = line.strip_prefix("berth listening on ") {
            break url.to_string();
        }
    };
    let pid = server.id().unwrap();
    let client = berth_client::Client::new(&base, Some(token.clone())).unwrap();
    let (task, _) = client
        .create_task(&CreateTask::new("https://github.com/o/r", "idle"), None)
        .await
        .unwrap();
    let before = rss_kib(pid);

    let url = format!(
        "{}/v1/tasks/{}/stream",
        base.replace("http://", "ws://"),
        task.id
    );
    let sockets = Arc::new(tokio::sync::Mutex::new(Vec::new()));
    let mut opening = Vec::new();
    for chunk in 0..(IDLE_CONNECTIONS / 500) {
        for _ in 0..500 {
            let (url, token, sockets) = (url.clone(), token.clone(), sockets.clone());
            opening.push(tokio::spawn(async move {
                let mut request = url.into_client_request().unwrap();
                request
                    .headers_mut()
                    .insert("authorization", format!("Bearer {token}").parse().unwrap());
                let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
                // Subscribed, then the queued task's one event: then it is idle.
                for _ in 0..2 {
                    socket.next().await.unwrap().unwrap();
                }
                sockets.lock().await.push(socket);
            }));
        }
        futures::future::join_all(opening.drain(..)).await;
        if chunk == 0 {
            eprintln!("opening {IDLE_CONNECTIONS} idle subscriptions…");
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_kib(pid);
    println!("idle subscriptions held by a `berth server` process (release build):");
    println!(
        "  RSS before {} KiB, with {IDLE_CONNECTIONS} idle WebSocket subscriptions {} KiB",
        before, after
    );
    println!(
        "  {:.1} KiB per idle subscription",
        (after - before) as f64 / IDLE_CONNECTIONS as f64
    );

    // All of them still work: cancelling the task reaches every one as its last event.
    let sockets = std::mem::take(&mut *sockets.lock().await);
    let cancelled_at = Instant::now();
    client.cancel_task(task.id).await.unwrap();
    let readers = sockets.into_iter().map(|mut socket| {
        tokio::spawn(async move {
            loop {
                match socket.next().await {
                    Some(Ok(Message::Text(text))) => {
                        if let StreamFrame::End { .. } = serde_json::from_str(&text).unwrap() {
                            return Ok(Instant::now());
                        }
                    }
                    Some(Ok(Message::Close(frame))) => {
                        return Err(frame.map_or("closed without a code".to_string(), |f| {
                            format!("closed with {} {}", u16::from(f.code), f.reason)
                        }))
                    }
                    Some(Ok(_)) => {}
                    Some(Err(err)) => return Err(format!("failed: {err}")),
                    None => return Err("ended without a close".to_string()),
                }
            }
        })
    });
    let mut arrivals = Vec::new();
    let mut other_ends = std::collections::BTreeMap::<String, usize>::new();
    for ended in futures::future::join_all(readers).await {
        match ended.unwrap() {
            Ok(at) => arrivals.push(at.duration_since(cancelled_at)),
            Err(how) => *other_ends.entry(how).or_default() += 1,
        }
    }
    for (how, count) in &other_ends {
        println!("  {count} streams did not get their end frame: {how}");
    }
    arrivals.sort();
    println!(
        "  a cancel reached {} of {IDLE_CONNECTIONS} as their end: p50 {:.0} ms  p99 {:.0} ms  max {:.0} ms",
        arrivals.len(),
        ms(pct(&arrivals, 50)),
        ms(pct(&arrivals, 99)),
        ms(*arrivals.last().unwrap())
    );
    let _ = server.kill().await;
}

fn rss_kib(pid: u32) -> i64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|line| line.starts_with("VmRSS:"))
        .unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn pct(sorted: &[Duration], p: usize) -> Duration {
    sorted[((sorted.len() * p).div_ceil(100)).clamp(1, sorted.len()) - 1]
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

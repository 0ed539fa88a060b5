//! What concerns the database itself: which one it is, that it answers, and the wake-ups it
//! gives runners and streams.

use std::time::Duration;

use berth_proto::EventKind;
use berth_store::EventNotice;
use tokio::sync::broadcast;

use crate::support::*;

on_both_backends!(
    says_which_database_it_is_and_answers,
    creating_or_requeuing_a_task_wakes_runners,
    subscribers_hear_of_every_appended_event,
    another_node_hears_of_work_and_events,
    an_installation_keeps_its_id_and_another_has_its_own,
    a_database_a_newer_berth_migrated_is_refused,
);

async fn a_database_a_newer_berth_migrated_is_refused(backend: Backend) {
    let db = Db::new(backend).await;
    db.open().await.close().await;
    db.migrate_from_the_future(9999).await;
    let opened = match &db.url() {
        None => berth_store::open_sqlite(&db.data_dir()).await,
        Some(url) => berth_store::open_url(url).await,
    };
    match opened {
        Err(berth_store::StoreError::NewerSchema { found, known }) => {
            assert_eq!(found, 9999);
            assert!((12..9999).contains(&known), "{known}");
        }
        Err(other) => panic!("refused, but not as a newer schema: {other}"),
        Ok(_) => panic!("a database from a newer Berth was opened"),
    }
}

/// The id labels what Berth makes in Docker: every node of one database shares it, it
/// survives a restart, and another database has a different one.
async fn an_installation_keeps_its_id_and_another_has_its_own(backend: Backend) {
    let db = Db::new(backend.clone()).await;
    let first = db.open().await;
    let id = first.installation_id().to_string();
    assert!(
        id.len() >= 16 && id.chars().all(|c| c.is_ascii_hexdigit()),
        "{id}"
    );
    let second = db.open().await;
    assert_eq!(
        second.installation_id(),
        id,
        "one database, one installation"
    );
    first.close().await;
    second.close().await;
    assert_eq!(
        db.open().await.installation_id(),
        id,
        "kept across restarts"
    );
    let other = Db::new(backend).await;
    assert_ne!(other.open().await.installation_id(), id);
}

async fn says_which_database_it_is_and_answers(backend: Backend) {
    let expected = match backend {
        Backend::Sqlite => berth_store::Backend::Sqlite,
        Backend::Postgres(_) => berth_store::Backend::Postgres,
    };
    let db = Db::new(backend).await;
    let store = db.open().await;
    assert_eq!(store.backend(), expected);
    store.ping().await.unwrap();
    store.close().await;
    assert!(
        store.ping().await.is_err(),
        "a closed store does not answer"
    );
}

async fn creating_or_requeuing_a_task_wakes_runners(backend: Backend) {
    let db = Db::new(backend).await;
    let store = db.open().await;
    let alice = user(store.as_ref(), "alice").await;
    let mut work = store.work_signal();
    work.mark_unchanged();

    enqueue(store.as_ref(), alice, "one").await;
    assert!(work.has_changed().unwrap(), "a new task wakes runners");
    work.mark_unchanged();

    let (_, fence) = claim(store.as_ref(), &roomy("a")).await;
    store.release_task(fence, "drain", None).await.unwrap();
    assert!(work.has_changed().unwrap(), "a requeued task wakes runners");
}

async fn subscribers_hear_of_every_appended_event(backend: Backend) {
    let db = Db::new(backend).await;
    let store = db.open().await;
    let alice = user(store.as_ref(), "alice").await;
    let created = enqueue(store.as_ref(), alice, "one").await;
    let mut notices = store.subscribe_events();
    let (_, fence) = claim(store.as_ref(), &roomy("a")).await;
    let seq = store
        .append_event(
            fence,
            EventKind::AssistantText,
            serde_json::json!({"text": "hi"}),
        )
        .await
        .unwrap();
    // The claim's status event and the appended one. On PostgreSQL a store may hear of its
    // own events twice (here and through NOTIFY): notices are hints, not a log.
    let mut unheard = vec![seq - 1, seq];
    while !unheard.is_empty() {
        let notice = next_notice(&mut notices).await;
        assert_eq!((notice.task_id, notice.owner_id), (created.id, alice));
        unheard.retain(|&seq| seq != notice.seq);
    }
}

/// On PostgreSQL a store on another node hears of new work and new events too; on SQLite
/// there is no other node, and this holds within the one process.
async fn another_node_hears_of_work_and_events(backend: Backend) {
    let db = Db::new(backend).await;
    let stores = db.machines(2).await;
    let (here, there) = (&stores[0], &stores[1]);
    let alice = user(here.as_ref(), "alice").await;
    let mut work = there.work_signal();
    let mut notices = there.subscribe_events();
    let created = enqueue(here.as_ref(), alice, "one").await;
    tokio::time::timeout(Duration::from_secs(30), work.changed())
        .await
        .expect("the other node is woken")
        .unwrap();
    let notice = next_notice(&mut notices).await;
    assert_eq!((notice.task_id, notice.seq), (created.id, 1));
}

/// The next notice about a task, skipping resync hints.
async fn next_notice(notices: &mut broadcast::Receiver<EventNotice>) -> EventNotice {
    loop {
        let notice = tokio::time::timeout(Duration::from_secs(30), notices.recv())
            .await
            .expect("a notice")
            .unwrap();
        if notice != EventNotice::RESYNC {
            return notice;
        }
    }
}

/// No commit copies the WAL back into the database file (that copy syncs the file, and the
/// commit that crossed SQLite's line waited for it): a connection of the store's own does it
/// in the background, well before SQLite would have (1,000 pages), while the store is open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_pages_reach_the_database_file_in_the_background_on_sqlite() {
    let db = Db::new(Backend::Sqlite).await;
    let store = db.open().await;
    let file = db.data_dir().join("berth.db");
    let before = std::fs::metadata(&file).unwrap().len();
    let alice = user(store.as_ref(), "alice").await;
    let prompt = "x".repeat(8 * 1024);
    for _ in 0..100 {
        enqueue(store.as_ref(), alice, &prompt).await;
    }
    let grown = || async { std::fs::metadata(&file).unwrap().len() >= before + 800 * 1024 };
    berth_testkit::eventually(Duration::from_secs(30), "the pages are copied back", grown).await;
}

/// On PostgreSQL every task's change of status updates its owner's `queue_users` row; the
/// store vacuums that table itself, every second, rather than leave the dead versions to
/// autovacuum, which comes at most once a minute and by then had slowed the queue to a third.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_counts_are_vacuumed_while_the_store_is_open_on_postgres() {
    let Some(backend) = Backend::postgres() else {
        return;
    };
    let db = Db::new(backend).await;
    let store = db.open().await;
    let alice = user(store.as_ref(), "alice").await;
    for n in 0..20 {
        enqueue(store.as_ref(), alice, &format!("task {n}")).await;
        let (_, fence) = claim(store.as_ref(), &roomy("node")).await;
        store
            .finish_task(fence, ended(berth_proto::TaskStatus::Succeeded))
            .await
            .unwrap();
    }
    let url = db.url().expect("a PostgreSQL database");
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let vacuums = || async {
        let count: i64 = sqlx::query_scalar(
            "SELECT vacuum_count FROM pg_stat_user_tables WHERE relname = 'queue_users'",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        count
    };
    let after_the_writes = vacuums().await;
    let again = || async { vacuums().await > after_the_writes };
    let limit = Duration::from_secs(30);
    berth_testkit::eventually(limit, "queue_users is vacuumed again", again).await;
}

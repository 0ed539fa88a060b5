//! The web app in real headless chromium (berth-testkit's DevTools client), on a phone's
//! screen: signing in, the task list, a task followed live, replies, cancelling, the diff, a
//! server restart under an open task view, notifications, and how its files are served.

mod accessibility;
mod measure;
mod merge;
mod notify;
mod session;
mod tasks;

pub(crate) use berth_testkit::chromium::text;
use berth_testkit::chromium::Chromium;

/// Sets a form field's value as typing would (an `input` event follows).
async fn fill(chromium: &mut Chromium, tab: &str, selector: &str, value: &str) {
    chromium.fill(tab, selector, value).await;
}

/// Clicks the element, once it is there.
async fn click(chromium: &mut Chromium, tab: &str, selector: &str) {
    chromium.click(tab, selector).await;
}

/// Signs in on the sign-in form with `token`.
async fn sign_in(chromium: &mut Chromium, tab: &str, token: &str) {
    chromium
        .wait_for(
            tab,
            "document.querySelector('#token-form') ? 'form' : ''",
            "form",
        )
        .await;
    fill(chromium, tab, "#token", token).await;
    click(chromium, tab, "#token-form button").await;
}

//! The Server-Sent Events transport, for clients that cannot speak WebSocket (curl, scripts):
//! `event:` is the frame type, `id:` the sequence number (or cursor), `data:` the frame.

use std::convert::Infallible;
use std::time::Duration;

use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use tokio::sync::{mpsc, oneshot};

use super::frame::Frame;
use crate::measure::OpenStream;

/// Comment lines at this interval keep proxies with 60 s idle timeouts from cutting in.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

pub fn respond(
    frames: mpsc::Receiver<Frame>,
    close: oneshot::Receiver<(u16, String)>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let open = OpenStream::new("sse");
    let start = (frames, Some(close), open);
    let stream = futures::stream::unfold(start, |(mut frames, close, open)| async move {
        match frames.recv().await {
            Some(frame) => Some((Ok(to_event(&frame)), (frames, close, open))),
            None => {
                // Say why the stream ends when it was not the task's end.
                let (code, reason) = close?.await.ok()?;
                if code == 1000 {
                    return None;
                }
                let data = serde_json::json!({ "type": "closed", "code": code, "reason": reason });
                let event = Event::default().event("closed").data(data.to_string());
                Some((Ok(event), (frames, None, open)))
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
}

fn to_event(frame: &Frame) -> Event {
    let event = Event::default()
        .event(frame.kind())
        .data(frame.json().as_str());
    match frame.id() {
        Some(id) => event.id(id),
        None => event,
    }
}

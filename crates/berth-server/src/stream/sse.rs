//! The Server-Sent Events transport, for clients that cannot speak WebSocket (curl, scripts):
//! `event:` is the frame type, `id:` the sequence number (or cursor), `data:` the frame.

use std::convert::Infallible;
use std::time::Duration;

use axum::response::sse::{Event, KeepAlive, Sse};
use berth_proto::StreamFrame;
use futures::Stream;
use tokio::sync::{mpsc, oneshot};

/// Comment lines at this interval keep proxies with 60 s idle timeouts from cutting in.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

pub fn respond(
    frames: mpsc::Receiver<StreamFrame>,
    close: oneshot::Receiver<(u16, String)>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let stream = futures::stream::unfold((frames, Some(close)), |(mut frames, close)| async move {
        match frames.recv().await {
            Some(frame) => Some((Ok(to_event(&frame)), (frames, close))),
            None => {
                // Say why the stream ends when it was not the task's end.
                let (code, reason) = close?.await.ok()?;
                if code == 1000 {
                    return None;
                }
                let data = serde_json::json!({ "type": "closed", "code": code, "reason": reason });
                let event = Event::default().event("closed").data(data.to_string());
                Some((Ok(event), (frames, None)))
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
}

fn to_event(frame: &StreamFrame) -> Event {
    let data = serde_json::to_string(frame).expect("frames serialise");
    let event = Event::default().data(data);
    match frame {
        StreamFrame::Subscribed { .. } => event.event("subscribed"),
        StreamFrame::Event { event: logged } => event.event("event").id(logged.seq.to_string()),
        StreamFrame::Task { cursor, .. } => event.event("task").id(cursor.clone()),
        StreamFrame::End { .. } => event.event("end"),
    }
}

//! A frame made ready to send once and shared by every connection it goes to: a hub hands
//! the same event to a thousand subscribers without serialising it a thousand times.

use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;
use berth_proto::StreamFrame;

#[derive(Clone, Debug)]
pub struct Frame {
    /// The frame's `type`: SSE's `event:`.
    pub kind: &'static str,
    /// SSE's `id:`, where a client resumes after this frame (a sequence number or a cursor).
    pub id: Option<Arc<str>>,
    /// The frame as JSON: a WebSocket text message, SSE's `data:`.
    pub json: Utf8Bytes,
}

impl Frame {
    pub fn new(frame: &StreamFrame) -> Self {
        let (kind, id) = match frame {
            StreamFrame::Subscribed { .. } => ("subscribed", None),
            StreamFrame::Event { event } => ("event", Some(event.seq.to_string().into())),
            StreamFrame::Task { cursor, .. } => ("task", Some(cursor.as_str().into())),
            StreamFrame::End { .. } => ("end", None),
            StreamFrame::TextDelta { .. } => ("text_delta", None),
        };
        let json = serde_json::to_string(frame).expect("frames serialise");
        Frame {
            kind,
            id,
            json: json.into(),
        }
    }
}

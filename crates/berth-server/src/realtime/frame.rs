//! A frame made ready to send once and shared by every connection it goes to: a hub hands
//! the same event to a thousand subscribers without serialising it a thousand times.

use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;
use berth_proto::StreamFrame;

/// Cheap to clone, and one pointer wide: every subscriber's queue holds frames, and a queue's
/// first block of slots is allocated with it, so the size of a frame is paid per open stream.
#[derive(Clone, Debug)]
pub struct Frame(Arc<Ready>);

#[derive(Debug)]
struct Ready {
    kind: &'static str,
    id: Option<Box<str>>,
    json: Utf8Bytes,
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
        Frame(Arc::new(Ready {
            kind,
            id,
            json: json.into(),
        }))
    }

    /// The frame's `type`: SSE's `event:`.
    pub fn kind(&self) -> &'static str {
        self.0.kind
    }

    /// SSE's `id:`, where a client resumes after this frame (a sequence number or a cursor).
    pub fn id(&self) -> Option<&str> {
        self.0.id.as_deref()
    }

    /// The frame as JSON: a WebSocket text message, SSE's `data:`.
    pub fn json(&self) -> &Utf8Bytes {
        &self.0.json
    }
}

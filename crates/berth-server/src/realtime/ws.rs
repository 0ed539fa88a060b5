//! The WebSocket transport: frames out as JSON text messages, pings in, and close codes that
//! tell the client whether to resume.

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use berth_proto::close_code;
use futures::{SinkExt, StreamExt};
use tokio::sync::{mpsc, oneshot};

use super::frame::Frame;

/// Time a client has to answer a ping.
const PONG_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a client has to answer the close frame before its connection is dropped anyway.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Sends frames from `frames` until the producer ends (`close` says how) or the client leaves.
pub async fn pump(
    socket: WebSocket,
    mut frames: mpsc::Receiver<Frame>,
    close: oneshot::Receiver<(u16, String)>,
    ping_every: Duration,
    stall: Duration,
) {
    let _open = crate::measure::OpenStream::new("websocket");
    let (mut sink, mut incoming) = socket.split();
    let mut ping = tokio::time::interval(ping_every);
    ping.tick().await;
    let mut awaiting_pong: Option<tokio::time::Instant> = None;
    tokio::pin!(close);
    let mut closing = None;
    loop {
        tokio::select! {
            biased;
            reason = &mut close, if closing.is_none() => {
                let (code, reason) = reason.unwrap_or((1000, "done".into()));
                if code != 1000 {
                    // Resume codes and refusals go out at once; the client re-reads the rest.
                    let frame = CloseFrame { code, reason: reason.into() };
                    close_with(&mut sink, &mut incoming, frame, stall).await;
                    return;
                }
                // The task ended: send what was queued, then the close frame.
                closing = Some((code, reason));
                frames.close();
            }
            frame = frames.recv() => match frame {
                Some(frame) => {
                    if !send(&mut sink, Message::Text(frame.json().clone()), stall).await {
                        return;
                    }
                }
                None => {
                    // The producer's frames end before it says why (its outbox goes first):
                    // wait for the reason rather than take the end for the task's.
                    let (code, reason) = match closing.take() {
                        Some(closing) => closing,
                        None => (&mut close).await.unwrap_or((1000, "done".into())),
                    };
                    let frame = CloseFrame { code, reason: reason.into() };
                    close_with(&mut sink, &mut incoming, frame, stall).await;
                    return;
                }
            },
            message = incoming.next() => match message {
                Some(Ok(Message::Pong(_))) => awaiting_pong = None,
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                Some(Ok(_)) => {}
            },
            _ = ping.tick() => {
                if awaiting_pong.is_some_and(|since| since.elapsed() > PONG_TIMEOUT) {
                    let frame = CloseFrame { code: close_code::NO_PONG, reason: "no pong; resume".into() };
                    close_with(&mut sink, &mut incoming, frame, stall).await;
                    return;
                }
                if awaiting_pong.is_none() {
                    awaiting_pong = Some(tokio::time::Instant::now());
                }
                if !send(&mut sink, Message::Ping(Vec::new().into()), stall).await {
                    return;
                }
            }
        }
    }
}

/// Sends the close frame, then reads until the client answers it (or leaves, or takes too
/// long) before the connection is dropped. Dropping it at once would reset it if anything the
/// client sent meanwhile (a pong, say) were still unread, and a reset makes the client's
/// system throw away what it had received but not yet read: the last frames and the close.
async fn close_with<S, I>(sink: &mut S, incoming: &mut I, frame: CloseFrame, stall: Duration)
where
    S: futures::Sink<Message> + Unpin,
    I: futures::Stream<Item = Result<Message, axum::Error>> + Unpin,
{
    if !send(sink, Message::Close(Some(frame)), stall).await {
        return;
    }
    let answered = async {
        while let Some(Ok(message)) = incoming.next().await {
            if let Message::Close(_) = message {
                return;
            }
        }
    };
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, answered).await;
}

/// Sends one message. A client that takes a message for much longer than the producer may
/// stall is not reading at all: it is dropped without a close frame it could not read anyway.
/// The margin lets a client that pauses and comes back still receive the "resume" close.
async fn send<S>(sink: &mut S, message: Message, stall: Duration) -> bool
where
    S: futures::Sink<Message> + Unpin,
{
    matches!(
        tokio::time::timeout(stall * 4, sink.send(message)).await,
        Ok(Ok(()))
    )
}

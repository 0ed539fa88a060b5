//! Following a task over WebSocket, resuming by itself after a dropped connection from the
//! last sequence number received, so a caller sees every event once whatever the network does.

use std::time::Duration;

use berth_proto::{close_code, StreamFrame, TaskId};
use futures::StreamExt;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use crate::{Client, ClientError};

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// What ended a stream for good.
#[derive(Debug, thiserror::Error)]
pub enum StreamEnd {
    #[error("the server refused the stream (close code {code}): {reason}")]
    Refused { code: u16, reason: String },
    #[error("{0}")]
    Client(#[from] ClientError),
}

/// One task's frames; reconnects and resumes on its own.
pub struct TaskStream {
    client: Client,
    task_id: TaskId,
    last_seq: i64,
    socket: Option<Socket>,
    reconnects: u32,
    ended: bool,
}

impl TaskStream {
    pub fn last_seq(&self) -> i64 {
        self.last_seq
    }

    /// The next frame; `None` after the `end` frame. Connection losses are hidden: the
    /// stream reconnects (with backoff) and asks for the events after the last one seen.
    pub async fn next(&mut self) -> Option<Result<StreamFrame, StreamEnd>> {
        while !self.ended {
            if self.socket.is_none() {
                if let Err(err) = self.connect().await {
                    return Some(Err(err));
                }
            }
            let socket = self.socket.as_mut().expect("connected");
            match socket.next().await {
                Some(Ok(Message::Text(text))) => {
                    self.reconnects = 0;
                    let Ok(frame) = serde_json::from_str::<StreamFrame>(&text) else {
                        continue;
                    };
                    match &frame {
                        StreamFrame::Event { event } if event.seq <= self.last_seq => continue,
                        StreamFrame::Event { event } => self.last_seq = event.seq,
                        StreamFrame::End { .. } => self.ended = true,
                        _ => {}
                    }
                    return Some(Ok(frame));
                }
                Some(Ok(Message::Close(Some(frame)))) => {
                    let code = u16::from(frame.code);
                    if code != 1000 && !close_code::should_resume(code) && code != 1011 {
                        self.ended = true;
                        return Some(Err(StreamEnd::Refused {
                            code,
                            reason: frame.reason.to_string(),
                        }));
                    }
                    self.socket = None;
                }
                Some(Ok(Message::Close(None))) | Some(Err(_)) | None => self.socket = None,
                Some(Ok(_)) => {}
            }
        }
        None
    }

    async fn connect(&mut self) -> Result<(), StreamEnd> {
        if self.reconnects > 0 {
            let wait = Duration::from_millis(250 * 2u64.pow(self.reconnects.min(7)))
                .min(Duration::from_secs(30));
            tokio::time::sleep(wait).await;
        }
        self.reconnects += 1;
        let mut url = self
            .client
            .base_url()
            .join(&format!("/v1/tasks/{}/stream", self.task_id))
            .map_err(ClientError::from)?;
        url.set_scheme(if url.scheme() == "https" { "wss" } else { "ws" })
            .ok();
        url.set_query(Some(&format!("after={}", self.last_seq)));
        let mut request = url
            .as_str()
            .into_client_request()
            .map_err(|err| StreamEnd::Refused {
                code: 0,
                reason: err.to_string(),
            })?;
        if let Some(token) = self.client.token() {
            let value = format!("Bearer {token}")
                .parse()
                .expect("a token is a header value");
            request.headers_mut().insert("authorization", value);
        }
        match tokio_tungstenite::connect_async(request).await {
            Ok((socket, _)) => self.socket = Some(socket),
            Err(err) if self.reconnects > 20 => {
                return Err(StreamEnd::Refused {
                    code: 0,
                    reason: format!("cannot connect: {err}"),
                })
            }
            Err(_) => {}
        }
        Ok(())
    }
}

impl Client {
    /// Follows a task's events after `after`, live, resuming by itself after dropped
    /// connections.
    pub fn follow_task(&self, task_id: TaskId, after: i64) -> TaskStream {
        TaskStream {
            client: self.clone(),
            task_id,
            last_seq: after,
            socket: None,
            reconnects: 0,
            ended: false,
        }
    }
}

//! Following a task over WebSocket, resuming by itself after a dropped connection from the
//! last sequence number received, so a caller sees every event once whatever the network does.
//! A server that restarts, crashes or cannot be reached is waited for with backoff; the
//! caller hears of it, so that a person watching knows why nothing happens.

use std::time::Duration;

use berth_proto::{close_code, StreamFrame, TaskId};
use futures::StreamExt;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};

use crate::{Client, ClientError};

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The longest wait between two tries to reach the server.
const MAX_BACKOFF: Duration = Duration::from_secs(15);
/// How long the server may stay out of reach before following gives up.
const GIVE_UP_AFTER: Duration = Duration::from_secs(10 * 60);

/// What ended a stream for good.
#[derive(Debug, thiserror::Error)]
pub enum StreamEnd {
    #[error("the server refused the stream (close code {code}): {reason}")]
    Refused { code: u16, reason: String },
    #[error("the server has been out of reach for {} minutes: {reason}", .waited.as_secs() / 60)]
    Unreachable { waited: Duration, reason: String },
    #[error("{0}")]
    Client(#[from] ClientError),
}

/// What following a task yields: its frames in order, and word when the connection is lost.
#[derive(Clone, Debug, PartialEq)]
pub enum Followed {
    Frame(StreamFrame),
    /// The server could not be reached (it may be restarting); the next try is in
    /// `retry_in`. Frames resume, with nothing missed, once it answers again.
    Waiting {
        reason: String,
        retry_in: Duration,
    },
}

/// One task's frames; reconnects and resumes on its own.
pub struct TaskStream {
    client: Client,
    task_id: TaskId,
    last_seq: i64,
    socket: Option<Socket>,
    /// Failed tries to connect since the last frame, and when the first of them failed.
    failures: u32,
    out_of_reach_since: Option<tokio::time::Instant>,
    ended: bool,
}

impl TaskStream {
    pub fn last_seq(&self) -> i64 {
        self.last_seq
    }

    /// The next frame, or word that the server is being waited for; `None` after the `end`
    /// frame. Dropped connections are resumed after the last event seen, so every event
    /// arrives exactly once.
    pub async fn next(&mut self) -> Option<Result<Followed, StreamEnd>> {
        while !self.ended {
            let Some(socket) = self.socket.as_mut() else {
                match self.connect().await {
                    Ok(()) => continue,
                    Err(Retry::Never(end)) => {
                        self.ended = true;
                        return Some(Err(end));
                    }
                    Err(Retry::After(waiting)) => return Some(Ok(waiting)),
                }
            };
            match socket.next().await {
                Some(Ok(Message::Text(text))) => {
                    self.failures = 0;
                    self.out_of_reach_since = None;
                    let Ok(frame) = serde_json::from_str::<StreamFrame>(&text) else {
                        continue;
                    };
                    match &frame {
                        StreamFrame::Event { event } if event.seq <= self.last_seq => continue,
                        StreamFrame::Event { event } => self.last_seq = event.seq,
                        StreamFrame::End { .. } => self.ended = true,
                        _ => {}
                    }
                    return Some(Ok(Followed::Frame(frame)));
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

    /// Opens the socket, asking for the events after the last one seen. The first try after
    /// a drop is at once; after a failure the caller is told how long the next try waits,
    /// and the wait is taken before that try.
    async fn connect(&mut self) -> Result<(), Retry> {
        if self.failures > 0 {
            tokio::time::sleep(backoff(self.failures)).await;
        }
        let request = self.request().map_err(Retry::Never)?;
        let reason = match tokio_tungstenite::connect_async(request).await {
            Ok((socket, _)) => {
                self.socket = Some(socket);
                return Ok(());
            }
            Err(tungstenite::Error::Http(response)) if refused_for_good(response.status()) => {
                let status = response.status();
                let body = response.body().as_deref().unwrap_or_default();
                return Err(Retry::Never(StreamEnd::Refused {
                    code: status.as_u16(),
                    reason: crate::error_message(body).unwrap_or_else(|| status.to_string()),
                }));
            }
            Err(err) => crate::root_cause(&err),
        };
        self.failures += 1;
        let since = *self
            .out_of_reach_since
            .get_or_insert_with(tokio::time::Instant::now);
        if since.elapsed() >= GIVE_UP_AFTER {
            return Err(Retry::Never(StreamEnd::Unreachable {
                waited: since.elapsed(),
                reason,
            }));
        }
        Err(Retry::After(Followed::Waiting {
            reason,
            retry_in: backoff(self.failures),
        }))
    }

    fn request(&self) -> Result<tungstenite::handshake::client::Request, StreamEnd> {
        let mut url = self
            .client
            .base_url()
            .join(&format!("/v1/tasks/{}/stream", self.task_id))
            .map_err(ClientError::from)?;
        let scheme = if url.scheme() == "https" { "wss" } else { "ws" };
        url.set_scheme(scheme).ok();
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
                .map_err(|_| StreamEnd::Refused {
                    code: 0,
                    reason: "the token holds characters a header cannot carry".to_string(),
                })?;
            request.headers_mut().insert("authorization", value);
        }
        Ok(request)
    }
}

/// Why a try to connect did not give a socket.
enum Retry {
    /// Try again; the caller is told so.
    After(Followed),
    /// Trying again cannot help (bad credentials, no such task, given up).
    Never(StreamEnd),
}

/// Answers to the WebSocket handshake that another try would only repeat.
fn refused_for_good(status: reqwest::StatusCode) -> bool {
    status.is_client_error() && status != reqwest::StatusCode::TOO_MANY_REQUESTS
}

/// 0.5 s, doubling, at most [`MAX_BACKOFF`].
fn backoff(failures: u32) -> Duration {
    (Duration::from_millis(250) * 2u32.pow(failures.min(7))).min(MAX_BACKOFF)
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
            failures: 0,
            out_of_reach_since: None,
            ended: false,
        }
    }
}

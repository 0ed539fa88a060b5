//! Keeps a long conversation inside the model's context window. When a request would fill
//! most of the window, the oldest tool results are replaced by a short note — in one large
//! step, so that the prompt cache is broken rarely — until what is left fits in well under
//! half of it. Only what is sent changes: the stored transcript keeps everything.

use std::borrow::Cow;

use crate::model::{Block, Message};

/// What stands in for a tool result that was cleared.
pub const CLEARED: &str = "[Berth removed this older output to keep the conversation within \
                           the model's context window. Run the command or view the file again \
                           if you need it.]";

/// Tokens the tool definitions (and what the API adds for them) take, roughly.
const TOOLS_TOKENS: u64 = 2_000;

/// A guess of the tokens `bytes` of JSON hold, on the safe side: a token is about four
/// bytes of English or code, three of JSON with its escapes.
fn tokens_in(bytes: usize) -> u64 {
    bytes as u64 / 3 + 1
}

fn estimate(message: &Message) -> u64 {
    tokens_in(serde_json::to_vec(message).map_or(0, |json| json.len()))
}

/// `message` with the content of its tool results replaced by [`CLEARED`].
fn cleared(message: &Message) -> Message {
    let content = message
        .content
        .iter()
        .map(|block| match block {
            Block::ToolResult {
                tool_use_id,
                is_error,
                ..
            } => Block::ToolResult {
                tool_use_id: tool_use_id.clone(),
                content: CLEARED.to_string(),
                is_error: *is_error,
            },
            other => other.clone(),
        })
        .collect();
    Message {
        role: message.role,
        content,
    }
}

/// Decides, turn after turn, how much of the conversation's past is sent whole.
#[derive(Debug)]
pub struct ContextWindow {
    tokens: u64,
    /// Messages before this index are sent with their tool results cleared. It only moves
    /// forward, so what was sent once stays the same and the cache keeps working.
    cut: usize,
    /// The estimated size of each message seen so far, whole and cleared: a conversation
    /// only grows, so each message is measured once.
    sizes: Vec<(u64, u64)>,
}

impl ContextWindow {
    pub fn new(tokens: u64) -> Self {
        Self {
            tokens,
            cut: 0,
            sizes: Vec::new(),
        }
    }

    /// How many messages, from the first, are sent with their tool results cleared.
    pub fn cleared(&self) -> usize {
        self.cut
    }

    /// The messages to send, given the system prompt: all of them as they are while they
    /// fit in three quarters of the window; else with the oldest tool results cleared, so
    /// that the rest fits in two fifths of it. The newest message is always sent whole.
    pub fn fit<'m>(&mut self, system: &str, messages: &'m [Message]) -> Cow<'m, [Message]> {
        let fixed = tokens_in(system.len()) + TOOLS_TOKENS;
        self.sizes.truncate(messages.len());
        for message in &messages[self.sizes.len()..] {
            let sizes = (estimate(message), estimate(&cleared(message)));
            self.sizes.push(sizes);
        }
        let (before, after) = self.sizes.split_at(self.cut.min(self.sizes.len()));
        let total = fixed
            + before.iter().map(|(_, cleared)| cleared).sum::<u64>()
            + after.iter().map(|(whole, _)| whole).sum::<u64>();
        if total > self.tokens / 4 * 3 {
            let target = self.tokens / 5 * 2;
            let mut sent = total;
            while self.cut + 1 < messages.len() && sent > target {
                let (whole, cleared) = self.sizes[self.cut];
                sent = sent - whole + cleared;
                self.cut += 1;
            }
        }
        if self.cut == 0 {
            return Cow::Borrowed(messages);
        }
        let cut = self.cut.min(messages.len());
        let mut sent: Vec<Message> = messages[..cut].iter().map(cleared).collect();
        sent.extend_from_slice(&messages[cut..]);
        Cow::Owned(sent)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::model::Role;

    /// A conversation of `turns` commands, each with `output` bytes of result.
    fn conversation(turns: usize, output: usize) -> Vec<Message> {
        let mut messages = vec![Message::user_text("Fix the tests")];
        for n in 0..turns {
            messages.push(Message {
                role: Role::Assistant,
                content: vec![Block::ToolUse {
                    id: format!("toolu_{n}"),
                    name: "bash".into(),
                    input: json!({"command": "cargo test"}),
                }],
            });
            messages.push(Message {
                role: Role::User,
                content: vec![Block::ToolResult {
                    tool_use_id: format!("toolu_{n}"),
                    content: "x".repeat(output),
                    is_error: false,
                }],
            });
        }
        messages
    }

    fn size(messages: &[Message]) -> u64 {
        messages.iter().map(estimate).sum()
    }

    #[test]
    fn a_conversation_that_fits_is_sent_as_it_is() {
        let messages = conversation(10, 1_000);
        let mut window = ContextWindow::new(200_000);
        assert!(matches!(window.fit("sys", &messages), Cow::Borrowed(_)));
        assert_eq!(window.cleared(), 0);
    }

    #[test]
    fn old_results_are_cleared_in_one_step_and_the_cut_stays_put() {
        // 30 results of about 1,000 tokens each in a window of 20,000.
        let mut messages = conversation(30, 3_000);
        let mut window = ContextWindow::new(20_000);
        let sent = window.fit("sys", &messages).into_owned();
        assert_eq!(sent.len(), messages.len());
        assert!(size(&sent) + TOOLS_TOKENS <= 8_000, "under two fifths");
        let cut = window.cleared();
        assert!(cut > 0);
        // The prompt and every tool call are still there, in order; only old results went.
        assert_eq!(sent[0], messages[0]);
        for (i, (sent, kept)) in sent.iter().zip(&messages).enumerate() {
            match (&sent.content[0], &kept.content[0]) {
                (Block::ToolResult { content, .. }, _) if i < cut => assert_eq!(content, CLEARED),
                _ => assert_eq!(sent, kept),
            }
        }

        // A few more turns fit again without moving the cut: the sent prefix is unchanged.
        messages.extend(conversation(3, 3_000).into_iter().skip(1));
        let next = window.fit("sys", &messages).into_owned();
        assert_eq!(window.cleared(), cut);
        assert_eq!(next[..sent.len()], sent[..]);
    }

    #[test]
    fn the_newest_message_is_sent_whole_even_when_it_alone_is_too_big() {
        let messages = conversation(2, 90_000);
        let mut window = ContextWindow::new(20_000);
        let sent = window.fit("sys", &messages);
        assert_eq!(window.cleared(), messages.len() - 1);
        assert_eq!(sent.last(), messages.last());
    }
}

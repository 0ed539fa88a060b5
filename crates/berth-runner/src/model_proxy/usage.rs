//! Token counts read from a model's answers as they pass through the proxy: the Anthropic
//! Messages API (`usage` in a JSON body, or in `message_start` and `message_delta` events) and
//! the OpenAI-compatible chat API (`usage` in the body or in the last streamed chunk).

use serde_json::Value;

/// Tokens of one model request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TokenCounts {
    pub input: u64,
    pub output: u64,
    pub cache_write: u64,
    pub cache_read: u64,
}

impl TokenCounts {
    pub fn total(&self) -> u64 {
        self.input + self.output + self.cache_write + self.cache_read
    }
}

/// The API a request speaks, which decides where its usage is found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Anthropic,
    OpenAi,
}

/// Usage gathered from one answer, a JSON body or a stream's events in order.
#[derive(Debug, Default)]
pub struct UsageReader {
    counts: TokenCounts,
    /// The model the answer names, when it names one.
    pub model: Option<String>,
    seen: bool,
}

impl UsageReader {
    /// What was read, if the answer said anything about usage.
    pub fn counts(&self) -> Option<TokenCounts> {
        self.seen.then_some(self.counts)
    }

    /// Reads a whole JSON answer.
    pub fn read_body(&mut self, dialect: Dialect, body: &[u8]) {
        if let Ok(value) = serde_json::from_slice::<Value>(body) {
            self.read_object(dialect, &value);
        }
    }

    /// Reads one server-sent event's data.
    pub fn read_event(&mut self, dialect: Dialect, data: &str) {
        let Ok(value) = serde_json::from_str::<Value>(data) else {
            return;
        };
        match dialect {
            // `message_start` holds the message with its first usage; `message_delta` holds
            // the usage so far (output tokens, and on newer models the input counts too).
            Dialect::Anthropic => match value["type"].as_str() {
                Some("message_start") => self.read_object(dialect, &value["message"]),
                Some("message_delta") => self.merge_anthropic(&value["usage"]),
                _ => {}
            },
            Dialect::OpenAi => self.read_object(dialect, &value),
        }
    }

    fn read_object(&mut self, dialect: Dialect, value: &Value) {
        if let Some(model) = value["model"].as_str() {
            self.model = Some(model.to_string());
        }
        match dialect {
            Dialect::Anthropic => self.merge_anthropic(&value["usage"]),
            Dialect::OpenAi => self.merge_openai(&value["usage"]),
        }
    }

    fn merge_anthropic(&mut self, usage: &Value) {
        if !usage.is_object() {
            return;
        }
        self.seen = true;
        let fields = [
            ("input_tokens", &mut self.counts.input),
            ("output_tokens", &mut self.counts.output),
            ("cache_creation_input_tokens", &mut self.counts.cache_write),
            ("cache_read_input_tokens", &mut self.counts.cache_read),
        ];
        for (name, count) in fields {
            if let Some(value) = usage[name].as_u64() {
                *count = value;
            }
        }
    }

    /// OpenAI counts cached prompt tokens inside `prompt_tokens`; they are split out here so
    /// that they are priced as cache reads.
    fn merge_openai(&mut self, usage: &Value) {
        if !usage.is_object() {
            return;
        }
        self.seen = true;
        let prompt = usage["prompt_tokens"].as_u64().unwrap_or(0);
        let cached = usage["prompt_tokens_details"]["cached_tokens"]
            .as_u64()
            .unwrap_or(0)
            .min(prompt);
        self.counts = TokenCounts {
            input: prompt - cached,
            output: usage["completion_tokens"].as_u64().unwrap_or(0),
            cache_write: 0,
            cache_read: cached,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anthropic_streams_add_the_delta_to_the_start() {
        let mut reader = UsageReader::default();
        reader.read_event(Dialect::Anthropic, r#"{"type":"message_start","message":{"model":"claude-sonnet-4-5","usage":{"input_tokens":100,"output_tokens":1,"cache_creation_input_tokens":20,"cache_read_input_tokens":50}}}"#);
        reader.read_event(Dialect::Anthropic, r#"{"type":"ping"}"#);
        reader.read_event(
            Dialect::Anthropic,
            r#"{"type":"message_delta","usage":{"output_tokens":30}}"#,
        );
        let counts = reader.counts().unwrap();
        assert_eq!(
            counts,
            TokenCounts {
                input: 100,
                output: 30,
                cache_write: 20,
                cache_read: 50
            }
        );
        assert_eq!(reader.model.as_deref(), Some("claude-sonnet-4-5"));
    }

    #[test]
    fn openai_cached_tokens_are_cache_reads() {
        let mut reader = UsageReader::default();
        reader.read_event(
            Dialect::OpenAi,
            r#"{"choices":[{"delta":{"content":"hi"}}]}"#,
        );
        assert_eq!(reader.counts(), None);
        reader.read_body(
            Dialect::OpenAi,
            br#"{"model":"gpt-x","usage":{"prompt_tokens":50,"completion_tokens":7,"prompt_tokens_details":{"cached_tokens":40}}}"#,
        );
        let counts = reader.counts().unwrap();
        assert_eq!(
            (counts.input, counts.cache_read, counts.output),
            (10, 40, 7)
        );
    }

    #[test]
    fn answers_without_usage_count_nothing() {
        let mut reader = UsageReader::default();
        reader.read_body(Dialect::Anthropic, b"not json");
        reader.read_body(Dialect::Anthropic, br#"{"type":"error"}"#);
        assert_eq!(reader.counts(), None);
    }
}

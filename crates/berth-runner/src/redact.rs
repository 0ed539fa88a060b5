//! Keeps secrets out of everything a task stores or streams: the model API key, GitHub
//! tokens and secrets the server names. Output arrives in chunks, so [`StreamRedactor`] holds
//! back just enough bytes to catch a secret split across two of them.

use serde_json::Value;

pub const MASK: &str = "[REDACTED]";

/// Secrets shorter than this are not masked: masking "a" would garble every message.
const MIN_SECRET: usize = 6;

#[derive(Clone, Debug, Default)]
pub struct Redactor {
    /// Longest first, so a secret that contains another is masked whole.
    secrets: Vec<Vec<u8>>,
}

impl Redactor {
    pub fn new<S: AsRef<str>>(secrets: impl IntoIterator<Item = S>) -> Self {
        let mut secrets: Vec<Vec<u8>> = secrets
            .into_iter()
            .map(|secret| secret.as_ref().trim().as_bytes().to_vec())
            .filter(|secret| secret.len() >= MIN_SECRET)
            .collect();
        secrets.sort_by_key(|secret| std::cmp::Reverse(secret.len()));
        secrets.dedup();
        Self { secrets }
    }

    /// This redactor with more secrets (a task owner's token, say).
    pub fn with<S: AsRef<str>>(&self, more: impl IntoIterator<Item = S>) -> Self {
        let all: Vec<String> = self
            .secrets
            .iter()
            .map(|secret| String::from_utf8_lossy(secret).into_owned())
            .chain(more.into_iter().map(|s| s.as_ref().to_string()))
            .collect();
        Redactor::new(all)
    }

    fn longest(&self) -> usize {
        self.secrets.first().map_or(0, Vec::len)
    }

    pub fn text(&self, text: &str) -> String {
        if self.secrets.is_empty() {
            return text.to_string();
        }
        String::from_utf8_lossy(&self.bytes(text.as_bytes())).into_owned()
    }

    /// Every string in a JSON value, keys included.
    pub fn json(&self, value: &Value) -> Value {
        match value {
            Value::String(text) => Value::String(self.text(text)),
            Value::Array(items) => Value::Array(items.iter().map(|v| self.json(v)).collect()),
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(key, v)| (self.text(key), self.json(v)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }

    pub fn bytes(&self, input: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(input.len());
        let mut at = 0;
        while at < input.len() {
            match self.match_at(input, at) {
                Some(len) => {
                    out.extend_from_slice(MASK.as_bytes());
                    at += len;
                }
                None => {
                    out.push(input[at]);
                    at += 1;
                }
            }
        }
        out
    }

    /// Whether `tail` is the beginning of some secret.
    fn could_start(&self, tail: &[u8]) -> bool {
        self.secrets.iter().any(|secret| secret.starts_with(tail))
    }

    /// The length of a secret starting at `at`, if one does.
    fn match_at(&self, input: &[u8], at: usize) -> Option<usize> {
        self.secrets
            .iter()
            .find(|secret| input[at..].starts_with(secret))
            .map(Vec::len)
    }
}

/// Redacts a stream of chunks. Bytes that could be the start of a secret are held until the
/// next chunk shows whether they are; [`StreamRedactor::finish`] releases the rest.
pub struct StreamRedactor {
    redactor: Redactor,
    held: Vec<u8>,
}

impl StreamRedactor {
    pub fn new(redactor: Redactor) -> Self {
        Self {
            redactor,
            held: Vec::new(),
        }
    }

    /// Takes a chunk; returns the text now safe to pass on (maybe empty).
    pub fn push(&mut self, chunk: &[u8]) -> String {
        self.held.extend_from_slice(chunk);
        // Hold back only a tail that could be the start of a secret; a secret starting
        // before that is wholly inside what is held, so it is masked now.
        let keep = self.redactor.longest().saturating_sub(1);
        let mut cut = self.held.len();
        for start in self.held.len().saturating_sub(keep)..self.held.len() {
            if self.redactor.could_start(&self.held[start..]) {
                cut = start;
                break;
            }
        }
        let mut at = 0;
        while at < cut {
            match self.redactor.match_at(&self.held, at) {
                Some(len) => {
                    at += len;
                    cut = cut.max(at);
                }
                None => at += 1,
            }
        }
        // Never split a UTF-8 character between two pieces of output.
        let cut = utf8_boundary(&self.held, cut);
        let ready: Vec<u8> = self.held.drain(..cut).collect();
        String::from_utf8_lossy(&self.redactor.bytes(&ready)).into_owned()
    }

    /// Everything still held.
    pub fn finish(&mut self) -> String {
        let rest = std::mem::take(&mut self.held);
        String::from_utf8_lossy(&self.redactor.bytes(&rest)).into_owned()
    }
}

/// `at`, or earlier if the bytes before it end in the middle of a UTF-8 character, so that
/// output cut there never splits one.
fn utf8_boundary(bytes: &[u8], at: usize) -> usize {
    match std::str::from_utf8(&bytes[..at]) {
        Err(err) if err.error_len().is_none() => err.valid_up_to(),
        _ => at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_secrets_in_text_and_json() {
        let redactor = Redactor::new(["sk-ant-secret-1", "ghp_token", "short"]);
        assert_eq!(
            redactor.text("key=sk-ant-secret-1 and ghp_token, short stays"),
            "key=[REDACTED] and [REDACTED], short stays"
        );
        let value = serde_json::json!({"a": ["x ghp_token y"], "ghp_token": 1});
        assert_eq!(
            redactor.json(&value),
            serde_json::json!({"a": ["x [REDACTED] y"], "[REDACTED]": 1})
        );
    }

    #[test]
    fn a_secret_split_across_chunks_is_masked_at_every_split_point() {
        let redactor = Redactor::new(["sk-ant-api03-abcdef"]);
        let text = "before sk-ant-api03-abcdef after é sk-ant-api03-abcdef";
        for split in 0..=text.len() {
            for second in split..=text.len() {
                let bytes = text.as_bytes();
                let mut stream = StreamRedactor::new(redactor.clone());
                let mut out = stream.push(&bytes[..split]);
                out += &stream.push(&bytes[split..second]);
                out += &stream.push(&bytes[second..]);
                out += &stream.finish();
                assert_eq!(
                    out, "before [REDACTED] after é [REDACTED]",
                    "split at {split}/{second}"
                );
            }
        }
    }

    #[test]
    fn with_no_secrets_only_an_unfinished_character_is_held_back() {
        let mut text = StreamRedactor::new(Redactor::default());
        assert_eq!(text.push(b"a\xf0\x9f"), "a");
        assert_eq!(text.push(b"\x98\x80b"), "\u{1f600}b");
        assert_eq!(text.push(b"\xffc"), "\u{fffd}c");
        assert_eq!(text.finish(), "");
    }

    #[test]
    fn output_flows_without_waiting_when_no_secret_could_start() {
        let mut stream = StreamRedactor::new(Redactor::new(["0123456789"]));
        assert_eq!(stream.push(b"ordinary output\n"), "ordinary output\n");
        assert_eq!(stream.push(b"count 0123"), "count ");
        assert_eq!(stream.push(b"456789!"), "[REDACTED]!");
    }
}

//! Output kept per command, bounded: the head and the tail are kept and the cut is marked, so
//! a command that prints gigabytes costs a fixed amount of memory.

use std::collections::VecDeque;

/// Collects up to `limit` bytes: the first half as it comes, the last half as a ring.
#[derive(Debug)]
pub struct BoundedOutput {
    limit: usize,
    head: Vec<u8>,
    tail: VecDeque<u8>,
    total: u64,
}

impl BoundedOutput {
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            head: Vec::new(),
            tail: VecDeque::new(),
            total: 0,
        }
    }

    pub fn push(&mut self, mut bytes: &[u8]) {
        self.total += bytes.len() as u64;
        let head_room = (self.limit / 2).saturating_sub(self.head.len());
        let taken = head_room.min(bytes.len());
        self.head.extend_from_slice(&bytes[..taken]);
        bytes = &bytes[taken..];
        let tail_limit = self.limit - self.limit / 2;
        if bytes.len() >= tail_limit {
            self.tail.clear();
            self.tail.extend(&bytes[bytes.len() - tail_limit..]);
        } else {
            self.tail.extend(bytes);
            let excess = self.tail.len().saturating_sub(tail_limit);
            self.tail.drain(..excess);
        }
    }

    /// Bytes seen in all, kept or not.
    pub fn total(&self) -> u64 {
        self.total
    }

    pub fn was_cut(&self) -> bool {
        self.total > (self.head.len() + self.tail.len()) as u64
    }

    /// What was kept; a cut is marked `[... N bytes cut ...]` on a line of its own.
    pub fn into_bytes(self) -> Vec<u8> {
        let kept = (self.head.len() + self.tail.len()) as u64;
        let mut out = self.head;
        if self.total > kept {
            out.extend_from_slice(
                format!("\n[... {} bytes cut ...]\n", self.total - kept).as_bytes(),
            );
        }
        out.extend(self.tail);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_everything_under_the_limit() {
        let mut out = BoundedOutput::new(10);
        out.push(b"abc");
        out.push(b"def");
        assert!(!out.was_cut());
        assert_eq!(out.into_bytes(), b"abcdef");
    }

    #[test]
    fn keeps_head_and_tail_and_marks_the_cut() {
        let mut out = BoundedOutput::new(10);
        for chunk in [&b"01234"[..], b"56789", b"abcdefghij", b"KLMNO"] {
            out.push(chunk);
        }
        assert_eq!(out.total(), 25);
        assert_eq!(
            String::from_utf8(out.into_bytes()).unwrap(),
            "01234\n[... 15 bytes cut ...]\nKLMNO"
        );
    }
}

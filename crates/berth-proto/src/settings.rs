//! What the settings of every part are written with: secrets that never print, and lists that
//! an environment variable gives as one comma-separated string. Here because every part that
//! has settings already reaches this crate.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

/// A value that must never be printed: `Debug` shows `[redacted]`, and only [`Secret::expose`]
/// gives the value.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// For `#[serde(deserialize_with)]`: accepts a list, or one string of comma-separated items as
/// an environment variable gives; items are trimmed and empty ones dropped.
pub fn comma_separated<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    let items = match OneOrMany::deserialize(deserializer)? {
        OneOrMany::One(text) => text.split(',').map(str::to_string).collect(),
        OneOrMany::Many(items) => items,
    };
    Ok(items
        .into_iter()
        .map(|item| item.trim().to_string())
        .filter(|item| !item.is_empty())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_do_not_print() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret:?}"), "[redacted]");
        assert_eq!(secret.expose(), "hunter2");
    }

    #[test]
    fn lists_come_whole_or_comma_separated() {
        #[derive(Deserialize)]
        struct Hosts {
            #[serde(deserialize_with = "comma_separated")]
            hosts: Vec<String>,
        }
        let parse = |json: &str| serde_json::from_str::<Hosts>(json).unwrap().hosts;
        assert_eq!(parse(r#"{"hosts": "a, b,,c "}"#), ["a", "b", "c"]);
        assert_eq!(parse(r#"{"hosts": ["a", " b "]}"#), ["a", "b"]);
    }
}

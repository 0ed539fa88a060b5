//! Reading the configuration in layers, later ones winning: the defaults, `berth.toml` (or the
//! `--config` file), the Anthropic SDKs' own variables, `BERTH_*` environment variables, then
//! the command-line flags; then validation. Each part is read by itself rather than through
//! serde's `flatten`, which would lose the key and source of a value of the wrong type and let
//! unknown keys through; unknown keys are refused here, against [`Config::keys`].

use std::path::{Path, PathBuf};

use berth_proto::Secret;
use figment::providers::{Env, Format, Serialized, Toml};
use figment::value::{Dict, Map};
use figment::{Figment, Metadata, Profile, Provider};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{Config, ConfigError};

/// Values given on the command line; they win over every other layer.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_url: Option<Secret>,
}

/// So that a bad flag is reported as coming from the command line.
impl Provider for Overrides {
    fn metadata(&self) -> Metadata {
        Metadata::named("command-line flags")
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Serialized::defaults(self).data()
    }
}

impl Config {
    /// Reads every layer. `file` is the `--config` path; without it `./berth.toml` is read
    /// when it exists.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Self, ConfigError> {
        let keys = Config::keys();
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        // The Anthropic SDKs' variables, below Berth's file and BERTH_* variables.
        let anthropic = Env::raw().only(&["ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL"]);
        let mut figment = Figment::from(Serialized::defaults(Config::default())).merge(anthropic);
        if let Some(path) = file_to_read(file)? {
            refuse_unknown_keys(&path, &keys)?;
            figment = figment.merge(Toml::file_exact(path));
        }
        let figment = figment
            .merge(Env::prefixed("BERTH_").only(&keys))
            .merge(overrides);
        let config = Config {
            common: part(&figment)?,
            server: part(&figment)?,
            runner: part(&figment)?,
            agent: part(&figment)?,
            sandbox: part(&figment)?,
            fly: part(&figment)?,
            sealing: part(&figment)?,
            operations: part(&figment)?,
        };
        config.validate()?;
        Ok(config)
    }
}

/// The file named with `--config`, which must exist, or else `./berth.toml` if it does.
fn file_to_read(file: Option<&Path>) -> Result<Option<PathBuf>, ConfigError> {
    match file {
        Some(path) if !path.exists() => Err(ConfigError::File {
            path: path.to_owned(),
            message: "no such file".to_string(),
        }),
        Some(path) => Ok(Some(path.to_owned())),
        None if Path::new("berth.toml").exists() => Ok(Some(PathBuf::from("berth.toml"))),
        None => Ok(None),
    }
}

/// A misspelt key would otherwise be ignored and its setting silently left at the default.
fn refuse_unknown_keys(path: &Path, keys: &[&str]) -> Result<(), ConfigError> {
    let error = |message: String| ConfigError::File {
        path: path.to_owned(),
        message,
    };
    let table: Dict = Figment::from(Toml::file_exact(path))
        .extract()
        .map_err(|err| error(err.to_string()))?;
    match table.keys().find(|key| !keys.contains(&key.as_str())) {
        None => Ok(()),
        Some(key) => Err(error(match closest(key, keys) {
            Some(near) => format!("unknown setting {key:?}; did you mean {near:?}?"),
            None => format!("unknown setting {key:?}; docs/configuration.md lists every setting"),
        })),
    }
}

/// One part's settings out of the merged layers.
fn part<T: DeserializeOwned>(figment: &Figment) -> Result<T, ConfigError> {
    figment
        .extract()
        .map_err(|err| ConfigError::Invalid(err.to_string()))
}

/// The known key a typo most likely meant: at most three edits away.
fn closest<'a>(key: &str, keys: &[&'a str]) -> Option<&'a str> {
    keys.iter()
        .map(|known| (edit_distance(key, known), *known))
        .filter(|(distance, _)| *distance <= 3)
        .min()
        .map(|(_, known)| known)
}

/// Levenshtein distance: insertions, deletions and substitutions of one character.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, from) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &to) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (diagonal + usize::from(from != to))
                .min(row[j] + 1)
                .min(above + 1);
            diagonal = above;
        }
    }
    row[b.len()]
}

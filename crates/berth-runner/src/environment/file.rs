//! `.berth/environment.toml`: what a repository says about the environment its tasks need.
//! It is read from the host's clone before any sandbox starts, and only ever narrows what the
//! server allows (see [`super::resolve`]).

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

/// Where a repository declares its environment, relative to its root.
pub const ENVIRONMENT_FILE: &str = ".berth/environment.toml";

/// The file as written. Unknown keys are refused, so a typo is an error and not a silent no-op.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvironmentFile {
    /// The base image; it must be in the server's allow-list.
    pub image: Option<String>,
    /// A bash script run once, with the network, whose result is kept as an image.
    pub setup: Option<String>,
    /// Files (lockfiles, say) whose contents decide when the setup must run again.
    #[serde(default)]
    pub inputs: Vec<String>,
    /// Non-secret variables, seen by the setup and by every command of the task.
    #[serde(default)]
    pub variables: BTreeMap<String, String>,
    #[serde(default)]
    pub network: NetworkSection,
    #[serde(default)]
    pub resources: ResourcesSection,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkSection {
    /// Domains the task's work may reach (enforced by the egress proxy, within what the
    /// server allows).
    #[serde(default)]
    pub allow: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourcesSection {
    pub memory_mb: Option<u64>,
    pub cpus: Option<f64>,
    pub pids: Option<i64>,
}

/// What was read from a repository's root: the file's exact bytes (they enter the cache key)
/// and what they say.
#[derive(Clone, Debug, PartialEq)]
pub struct Declared {
    pub raw: Vec<u8>,
    pub file: EnvironmentFile,
}

/// Reads the repository's environment file; `Ok(None)` when it has none. `Err` is a message
/// for the task's owner saying what is wrong with it.
pub fn read(repo: &Path) -> Result<Option<Declared>, String> {
    let path = repo.join(ENVIRONMENT_FILE);
    // A symbolic link could point anywhere on the runner's host.
    match std::fs::symlink_metadata(&path) {
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(format!("{ENVIRONMENT_FILE} cannot be read: {err}")),
        Ok(meta) if !meta.is_file() => {
            return Err(format!("{ENVIRONMENT_FILE} must be a regular file"))
        }
        Ok(_) => {}
    }
    let raw = std::fs::read(&path).map_err(|err| format!("{ENVIRONMENT_FILE}: {err}"))?;
    let text =
        std::str::from_utf8(&raw).map_err(|_| format!("{ENVIRONMENT_FILE} is not UTF-8 text"))?;
    let file: EnvironmentFile =
        toml::from_str(text).map_err(|err| format!("{ENVIRONMENT_FILE} is not valid: {err}"))?;
    for name in file.variables.keys() {
        if !valid_variable(name) {
            return Err(format!(
                "{ENVIRONMENT_FILE}: variable {name:?} must be letters, digits and '_', \
                 not starting with a digit"
            ));
        }
    }
    for input in &file.inputs {
        input_path(repo, input)?;
    }
    Ok(Some(Declared { raw, file }))
}

/// The host path of a declared input, refused when it would leave the repository.
pub fn input_path(repo: &Path, input: &str) -> Result<std::path::PathBuf, String> {
    let relative = Path::new(input);
    let inside = relative
        .components()
        .all(|part| matches!(part, std::path::Component::Normal(_)));
    if input.is_empty() || !inside {
        return Err(format!(
            "{ENVIRONMENT_FILE}: input {input:?} must be a path inside the repository"
        ));
    }
    Ok(repo.join(relative))
}

fn valid_variable(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join(".berth")).unwrap();
        std::fs::write(dir.path().join(ENVIRONMENT_FILE), text).unwrap();
        dir
    }

    #[test]
    fn a_full_file_is_read() {
        let dir = write(
            r#"
image = "berth-sandbox:1"
setup = "npm ci"
inputs = ["package-lock.json"]
[variables]
NODE_ENV = "test"
[network]
allow = ["registry.npmjs.org"]
[resources]
memory_mb = 1024
cpus = 0.5
"#,
        );
        let declared = read(dir.path()).unwrap().unwrap();
        let file = declared.file;
        assert_eq!(file.image.as_deref(), Some("berth-sandbox:1"));
        assert_eq!(file.setup.as_deref(), Some("npm ci"));
        assert_eq!(file.inputs, ["package-lock.json"]);
        assert_eq!(file.variables["NODE_ENV"], "test");
        assert_eq!(file.network.allow, ["registry.npmjs.org"]);
        assert_eq!(file.resources.memory_mb, Some(1024));
        assert_eq!(file.resources.cpus, Some(0.5));
        assert_eq!(file.resources.pids, None);
    }

    #[test]
    fn no_file_is_no_environment() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()).unwrap(), None);
    }

    #[test]
    fn mistakes_are_named() {
        let unknown = read(write("setpu = \"make\"\n").path()).unwrap_err();
        assert!(unknown.contains("setpu"), "{unknown}");
        let variable = read(write("[variables]\n\"A-B\" = \"1\"\n").path()).unwrap_err();
        assert!(variable.contains("A-B"), "{variable}");
        let escape = read(write("inputs = [\"../secret\"]\n").path()).unwrap_err();
        assert!(escape.contains("inside the repository"), "{escape}");
        let absolute = read(write("inputs = [\"/etc/passwd\"]\n").path()).unwrap_err();
        assert!(absolute.contains("inside the repository"), "{absolute}");
    }
}

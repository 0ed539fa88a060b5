//! The environment a task runs in: the repository's file narrowed by the server's rules. The
//! server decides what may be used (base images, domains, the most resources); the repository
//! picks within that, and asking for more is refused or capped, never granted.

use std::collections::BTreeMap;
use std::path::Path;

use berth_sandbox::Limits;
use sha2::{Digest, Sha256};

use super::file::{input_path, Declared, ENVIRONMENT_FILE};

/// The server's side of environments.
#[derive(Clone, Debug, PartialEq)]
pub struct EnvironmentRules {
    /// Base images a repository may name besides the server's own sandbox image.
    pub images: Vec<String>,
    /// Domains a repository may allow; `*` allows any, `example.com` allows it and its
    /// subdomains.
    pub domains: Vec<String>,
    /// Most bytes the cached environment images of this runner may take; beyond it the least
    /// recently used are removed.
    pub cache_bytes: u64,
}

impl Default for EnvironmentRules {
    fn default() -> Self {
        Self {
            images: Vec::new(),
            domains: vec!["*".into()],
            cache_bytes: 20 << 30,
        }
    }
}

/// A task's environment, decided.
#[derive(Clone, Debug, PartialEq)]
pub struct Environment {
    /// The image the setup starts from.
    pub base_image: String,
    /// The setup script: the repository's, or else the server's for its URL.
    pub setup: Option<String>,
    pub variables: BTreeMap<String, String>,
    /// Domains the work phase may reach, for the network policy (the egress proxy).
    pub network_allow: Vec<String>,
    /// The sandbox's limits: the task's and the repository's wishes under the server's cap.
    pub limits: Limits,
    /// What the cache key is made of, besides the base image's id.
    fingerprint: Vec<u8>,
}

/// Decides the environment of a task whose repository declared one. `server_image` is the
/// server's sandbox image, `server_setup` the server's setup command for the repository's
/// URL, `limits` what the task may have before the file is read.
pub fn resolve(
    declared: &Declared,
    repo: &Path,
    rules: &EnvironmentRules,
    server_image: &str,
    server_setup: Option<&str>,
    limits: Limits,
) -> Result<Environment, String> {
    let file = &declared.file;
    let base_image = file
        .image
        .clone()
        .unwrap_or_else(|| server_image.to_string());
    if base_image != server_image && !rules.images.contains(&base_image) {
        return Err(format!(
            "{ENVIRONMENT_FILE} asks for base image {base_image:?}, which this server does not \
             allow; allowed: {:?} (the server's setting environment_images)",
            allowed_images(rules, server_image)
        ));
    }
    if let Some(domain) = file
        .network
        .allow
        .iter()
        .find(|d| !domain_allowed(rules, d))
    {
        return Err(format!(
            "{ENVIRONMENT_FILE} allows the domain {domain:?}, which this server does not \
             (the server's setting environment_domains: {:?})",
            rules.domains
        ));
    }
    let asked = &file.resources;
    let wanted = Limits {
        memory_bytes: asked.memory_mb.map_or(limits.memory_bytes, |mb| mb << 20),
        cpus: asked.cpus.unwrap_or(limits.cpus),
        pids: asked.pids.unwrap_or(limits.pids),
    };
    let setup = file.setup.clone().or(server_setup.map(str::to_string));
    let fingerprint = fingerprint(declared, repo, setup.as_deref())?;
    Ok(Environment {
        base_image,
        setup,
        variables: file.variables.clone(),
        network_allow: file.network.allow.clone(),
        limits: wanted.clamp_to(limits),
        fingerprint,
    })
}

impl Environment {
    /// The cache key: the repository, the environment file, the contents of its inputs, the
    /// setup script and the base image's id. Anything else that changes leaves the prepared
    /// image in use. The repository is part of it because the image holds what the setup
    /// made from the repository's files: another repository with the same file must not get it.
    pub fn cache_key(&self, repo_url: &str, base_image_id: &str) -> String {
        let mut hash = Sha256::new();
        hash.update(&self.fingerprint);
        hash.update((repo_url.len() as u64).to_le_bytes());
        hash.update(repo_url.as_bytes());
        hash.update(base_image_id.as_bytes());
        let digest = hash.finalize();
        digest.iter().map(|byte| format!("{byte:02x}")).collect()
    }
}

fn allowed_images(rules: &EnvironmentRules, server_image: &str) -> Vec<String> {
    std::iter::once(server_image.to_string())
        .chain(rules.images.iter().cloned())
        .collect()
}

fn domain_allowed(rules: &EnvironmentRules, domain: &str) -> bool {
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    rules.domains.iter().any(|allowed| {
        let allowed = allowed.trim_end_matches('.').to_ascii_lowercase();
        allowed == "*" || domain == allowed || domain.ends_with(&format!(".{allowed}"))
    })
}

/// Length-prefixed parts, so that moving bytes from one part to the next changes the key.
fn fingerprint(declared: &Declared, repo: &Path, setup: Option<&str>) -> Result<Vec<u8>, String> {
    let mut parts = Vec::new();
    let mut add = |bytes: &[u8]| {
        parts.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
        parts.extend_from_slice(bytes);
    };
    add(b"berth-environment-1");
    add(&declared.raw);
    add(setup.unwrap_or_default().as_bytes());
    for input in &declared.file.inputs {
        let path = input_path(repo, input)?;
        let contents = match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_file() => std::fs::read(&path)
                .map_err(|err| format!("{ENVIRONMENT_FILE}: input {input:?}: {err}"))?,
            Ok(_) => {
                return Err(format!(
                    "{ENVIRONMENT_FILE}: input {input:?} must be a regular file"
                ))
            }
            // A lockfile not made yet is a state like any other.
            Err(_) => b"\0missing".to_vec(),
        };
        add(input.as_bytes());
        add(&contents);
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::super::file::EnvironmentFile;
    use super::*;

    const SERVER_IMAGE: &str = "berth-sandbox:1";

    fn declared(file: EnvironmentFile) -> Declared {
        Declared {
            raw: format!("{file:?}").into_bytes(),
            file,
        }
    }

    fn server_limits() -> Limits {
        Limits {
            memory_bytes: 1 << 30,
            cpus: 1.0,
            pids: 256,
        }
    }

    fn resolved(file: EnvironmentFile, rules: &EnvironmentRules) -> Result<Environment, String> {
        let repo = tempfile::tempdir().unwrap();
        resolve(
            &declared(file),
            repo.path(),
            rules,
            SERVER_IMAGE,
            None,
            server_limits(),
        )
    }

    #[test]
    fn a_base_image_outside_the_allow_list_is_refused() {
        let file = EnvironmentFile {
            image: Some("evil:latest".into()),
            ..Default::default()
        };
        let err = resolved(file.clone(), &EnvironmentRules::default()).unwrap_err();
        assert!(
            err.contains("evil:latest") && err.contains("environment_images"),
            "{err}"
        );
        let rules = EnvironmentRules {
            images: vec!["evil:latest".into()],
            ..Default::default()
        };
        assert_eq!(resolved(file, &rules).unwrap().base_image, "evil:latest");
    }

    #[test]
    fn resources_are_capped_at_the_servers() {
        let mut file = EnvironmentFile::default();
        file.resources.memory_mb = Some(64 << 10);
        file.resources.cpus = Some(0.5);
        let limits = resolved(file, &EnvironmentRules::default()).unwrap().limits;
        assert_eq!(limits.memory_bytes, 1 << 30, "capped");
        assert_eq!(limits.cpus, 0.5, "narrowed");
        assert_eq!(limits.pids, 256, "the server's when not asked");
    }

    #[test]
    fn domains_must_be_within_the_servers() {
        let rules = EnvironmentRules {
            domains: vec!["crates.io".into()],
            ..Default::default()
        };
        let mut file = EnvironmentFile::default();
        file.network.allow = vec!["static.crates.io".into(), "crates.io".into()];
        let env = resolved(file.clone(), &rules).unwrap();
        assert_eq!(env.network_allow, ["static.crates.io", "crates.io"]);
        file.network.allow.push("evilcrates.io".into());
        let err = resolved(file, &rules).unwrap_err();
        assert!(err.contains("evilcrates.io"), "{err}");
    }

    #[test]
    fn the_key_follows_the_inputs_and_the_base_image() {
        let repo = tempfile::tempdir().unwrap();
        std::fs::write(repo.path().join("Cargo.lock"), "v1").unwrap();
        let file = EnvironmentFile {
            setup: Some("cargo fetch".into()),
            inputs: vec!["Cargo.lock".into()],
            ..Default::default()
        };
        let rules = EnvironmentRules::default();
        let key_of = |repo: &Path, url: &str, image_id: &str| {
            resolve(
                &declared(file.clone()),
                repo,
                &rules,
                SERVER_IMAGE,
                None,
                server_limits(),
            )
            .unwrap()
            .cache_key(url, image_id)
        };
        let key = |repo: &Path, image_id: &str| key_of(repo, "http://git.test/a.git", image_id);
        let first = key(repo.path(), "sha256:a");
        let elsewhere = key_of(repo.path(), "http://git.test/b.git", "sha256:a");
        assert_ne!(first, elsewhere, "another repository");
        assert_eq!(first, key(repo.path(), "sha256:a"), "stable");
        assert_ne!(first, key(repo.path(), "sha256:b"), "another base image");
        std::fs::write(repo.path().join("Cargo.lock"), "v2").unwrap();
        assert_ne!(first, key(repo.path(), "sha256:a"), "another lockfile");
    }
}

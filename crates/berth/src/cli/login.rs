//! Where the command line keeps the server's address and the token: the user's config
//! directory, readable by the user alone. `BERTH_SERVER` and `BERTH_TOKEN` override it.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use anyhow::Context;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
pub struct Login {
    pub server: String,
    pub token: String,
}

/// `$XDG_CONFIG_HOME/berth/login.toml`, else `~/.config/berth/login.toml`.
pub fn path() -> anyhow::Result<PathBuf> {
    let base = match std::env::var_os("XDG_CONFIG_HOME").filter(|dir| !dir.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").context("HOME is not set")?).join(".config"),
    };
    Ok(base.join("berth").join("login.toml"))
}

pub fn save(login: &Login) -> anyhow::Result<PathBuf> {
    let path = path()?;
    std::fs::create_dir_all(path.parent().expect("a parent"))?;
    let text = toml::to_string(login)?;
    // Created with mode 0600 from the start: the token is never readable by others.
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    // An existing file keeps its mode when opened: set it, in case it was ever wider.
    file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    file.write_all(text.as_bytes())?;
    Ok(path)
}

/// The server and token to use: the environment, else the saved login.
pub fn load() -> anyhow::Result<Login> {
    let saved = path()
        .ok()
        .and_then(|path| std::fs::read_to_string(path).ok());
    let saved: Option<Login> = saved.and_then(|text| toml::from_str(&text).ok());
    let server = std::env::var("BERTH_SERVER")
        .ok()
        .or_else(|| saved.as_ref().map(|l| l.server.clone()));
    let token = std::env::var("BERTH_TOKEN")
        .ok()
        .or_else(|| saved.as_ref().map(|l| l.token.clone()));
    match (server, token) {
        (Some(server), Some(token)) => Ok(Login { server, token }),
        _ => anyhow::bail!(
            "not logged in: run `berth login --server URL` (or set BERTH_SERVER and BERTH_TOKEN)"
        ),
    }
}

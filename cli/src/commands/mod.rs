//! One module per command.

pub mod backup;
pub mod check;
pub mod demo;
pub mod diff;
pub mod dump;
pub mod forget;
pub mod index;
pub mod init;
pub mod key;
pub mod ls;
pub mod prune;
pub mod repair;
pub mod restore;
pub mod snapshots;
pub mod state;
pub mod stats;

use std::path::{Path, PathBuf};

use anyhow::anyhow;
use cairn_store::repo::{Mode, Repo};
use zeroize::Zeroizing;

/// Options every command takes.
pub struct Global {
    pub repo: Option<PathBuf>,
    pub password_file: Option<PathBuf>,
    pub quiet: bool,
    pub config: Option<PathBuf>,
}

impl Global {
    /// The repository path, or a clear error.
    pub fn repo_path(&self) -> anyhow::Result<&Path> {
        self.repo.as_deref().ok_or_else(|| {
            anyhow!(
                "no repository given: pass -r/--repo DIR, set CAIRN_REPO, or name it as \
                 `repository` in the service file (--config)"
            )
        })
    }

    /// Takes the repository and password file from the service file for what the command
    /// line and the environment leave open, so every command works on the repository the
    /// state commands use: the one named with --config or CAIRN_CONFIG, else the default
    /// one if it exists.
    pub fn with_service_file(mut self) -> anyhow::Result<Self> {
        if self.repo.is_some() {
            return Ok(self);
        }
        let path = match &self.config {
            Some(p) => p.clone(),
            None => PathBuf::from(state::DEFAULT_CONFIG),
        };
        if self.config.is_none() && !path.exists() {
            return Ok(self);
        }
        let file = cairn_store::servicefile::ServiceFile::load(&path)?;
        self.repo = file.repository.clone();
        if self.password_file.is_none() {
            self.password_file = file.password_file.clone();
        }
        Ok(self)
    }

    /// The password.
    pub fn password(&self) -> anyhow::Result<Zeroizing<Vec<u8>>> {
        crate::password::get(self.password_file.as_deref())
    }

    /// Opens the repository.
    pub fn open(&self, mode: Mode) -> anyhow::Result<Repo> {
        let path = self.repo_path()?;
        if !path.join("config").exists() {
            return Err(cairn_store::Error::NoRepository(path.to_path_buf()).into());
        }
        let pw = self.password()?;
        Ok(Repo::open(path, &pw, mode)?)
    }
}

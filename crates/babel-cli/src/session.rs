//! The home directory: where `babel login` keeps the session between runs.
//! The file holds the token, so it is written readable by the owner only.

use std::path::PathBuf;

use anyhow::Context;
use babel_proto::SessionInfo;
use serde::{Deserialize, Serialize};

/// A saved session and the server it belongs to.
#[derive(Debug, Serialize, Deserialize)]
pub struct Saved {
    /// `host:port`.
    pub server: String,
    /// The session.
    pub info: SessionInfo,
}

/// The home directory.
#[derive(Debug)]
pub struct Home {
    dir: PathBuf,
}

impl Home {
    /// `dir`, or `babel` under the platform's config directory.
    pub fn new(dir: Option<PathBuf>) -> anyhow::Result<Home> {
        let dir = match dir {
            Some(d) => d,
            None => dirs::config_dir().context("no config directory: pass --home")?.join("babel"),
        };
        Ok(Home { dir })
    }

    /// The directory itself (the known-servers file lives here too).
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    fn file(&self) -> PathBuf {
        self.dir.join("session.json")
    }

    /// The saved session, if any.
    pub fn load(&self) -> anyhow::Result<Option<Saved>> {
        match std::fs::read(self.file()) {
            Ok(b) => {
                Ok(Some(serde_json::from_slice(&b).with_context(|| format!("{} is damaged", self.file().display()))?))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", self.file().display())),
        }
    }

    /// Saves a session.
    pub fn save(&self, server: &str, info: &SessionInfo) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.dir).with_context(|| format!("cannot create {}", self.dir.display()))?;
        let saved = Saved { server: server.to_owned(), info: info.clone() };
        let tmp = self.dir.join("session.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(&saved)?)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
        }
        std::fs::rename(&tmp, self.file()).with_context(|| format!("cannot write {}", self.file().display()))?;
        Ok(())
    }

    /// Forgets the session.
    pub fn forget(&self) -> anyhow::Result<()> {
        match std::fs::remove_file(self.file()) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

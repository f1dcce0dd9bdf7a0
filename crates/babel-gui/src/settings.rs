//! What the application remembers between runs, in its home directory
//! (`babel-gui` under the platform's config directory, or `--home DIR`):
//! `settings.toml` (devices, audio, the last server and email) and
//! `session.json` (the signed-in session; it holds the token, so it is
//! written readable by the owner only).
//!
//! Not here: anything shown on screen (see `model`).

use std::path::{Path, PathBuf};

use babel_proto::SessionInfo;
use serde::{Deserialize, Serialize};

/// The server a fresh installation offers.
pub const DEFAULT_SERVER: &str = "127.0.0.1:7447";

/// Bitrates offered in the settings, bits/s.
pub const BITRATES: [u32; 5] = [12_000, 16_000, 24_000, 32_000, 48_000];

/// A settings or session file problem.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// There is no config directory and no `--home` was given.
    #[error("no configuration directory on this system: start with --home DIR")]
    NoHome,
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file is damaged.
    #[error("{path} is damaged: {msg}")]
    Damaged {
        /// The file.
        path: PathBuf,
        /// Why.
        msg: String,
    },
}

/// Audio and sign-in preferences.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// The server last used (`host:port` or `tls://host:port`, or a
    /// cluster's nodes as a comma-separated list of them).
    pub server: String,
    /// A certificate authority to trust alone for `tls://` servers (a PEM
    /// file: a cluster's `ca.pem` from `scripts/cluster-ca.sh`), with no
    /// trust on first use; empty: system roots, then first use.
    pub tls_ca: String,
    /// The email last signed in with.
    pub email: String,
    /// Microphone by name (`None`: the system default).
    pub input_device: Option<String>,
    /// Loudspeaker by name (`None`: the system default).
    pub output_device: Option<String>,
    /// Noise suppression on the microphone.
    pub noise_suppression: bool,
    /// Echo cancellation (turn off with a headset if you like).
    pub echo_cancellation: bool,
    /// Automatic microphone level.
    pub auto_gain: bool,
    /// Opus bitrate, bits/s.
    pub bitrate: u32,
    /// Frame length, 10 or 20 ms.
    pub frame_ms: u32,
    /// Microphone volume, 0..=2 (1: unchanged).
    pub input_gain: f32,
    /// Loudspeaker volume, 0..=2 (1: unchanged).
    pub output_gain: f32,
    /// Never show my address to the others in a call: voice goes through
    /// the server's relay only (from the next call).
    pub relay_only: bool,
    /// The status last chosen (`available`, `away`, `dnd`, `invisible`)
    /// by the account in `email`: the server keeps it but has no route to
    /// read it back, so the window shows what it last set.
    pub status: String,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            server: DEFAULT_SERVER.into(),
            tls_ca: String::new(),
            email: String::new(),
            input_device: None,
            output_device: None,
            noise_suppression: true,
            echo_cancellation: true,
            auto_gain: true,
            bitrate: babel_media::codec::DEFAULT_BITRATE,
            frame_ms: 20,
            input_gain: 1.0,
            output_gain: 1.0,
            relay_only: false,
            status: String::new(),
        }
    }
}

impl Settings {
    /// How `tls://` servers are trusted, with first-use fingerprints kept in
    /// `dir`: [`Settings::tls_ca`] alone when it is set.
    pub fn tls_options(&self, dir: &Path) -> Result<babel_client::TlsOptions, String> {
        let opts = babel_client::TlsOptions::in_dir(dir);
        match self.tls_ca.trim() {
            "" => Ok(opts),
            file => babel_client::tls::read_authority(Path::new(file))
                .map(|roots| opts.with_authority(roots))
                .map_err(|e| e.to_string()),
        }
    }

    /// Brings values from an edited or old file into range.
    pub fn sanitized(mut self) -> Self {
        self.frame_ms = if self.frame_ms < 20 { 10 } else { 20 };
        self.bitrate = self.bitrate.clamp(6_000, 128_000);
        self.input_gain = if self.input_gain.is_finite() { self.input_gain.clamp(0.0, 2.0) } else { 1.0 };
        self.output_gain = if self.output_gain.is_finite() { self.output_gain.clamp(0.0, 2.0) } else { 1.0 };
        self
    }

    /// The engine's configuration for these settings.
    pub fn media_config(&self) -> babel_media::engine::MediaConfig {
        use babel_media::codec::FrameMs;
        babel_media::engine::MediaConfig {
            frame: if self.frame_ms < 20 { FrameMs::Ten } else { FrameMs::Twenty },
            bitrate: self.bitrate,
            noise_suppression: self.noise_suppression,
            echo_cancellation: self.echo_cancellation,
            auto_gain: self.auto_gain,
            ..babel_media::engine::MediaConfig::default()
        }
    }
}

/// A saved session and the server it belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedSession {
    /// The server.
    pub server: String,
    /// The session.
    pub info: SessionInfo,
}

/// The application's home directory.
#[derive(Debug, Clone)]
pub struct Home {
    dir: PathBuf,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> SettingsError + '_ {
    move |source| SettingsError::Io { path: path.to_owned(), source }
}

impl Home {
    /// `dir`, or `babel-gui` under the platform's config directory.
    pub fn new(dir: Option<PathBuf>) -> Result<Home, SettingsError> {
        let dir = match dir {
            Some(d) => d,
            None => dirs::config_dir().ok_or(SettingsError::NoHome)?.join("babel-gui"),
        };
        Ok(Home { dir })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn read(&self, name: &str) -> Result<Option<String>, SettingsError> {
        let path = self.dir.join(name);
        match std::fs::read_to_string(&path) {
            Ok(s) => Ok(Some(s)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    /// Writes through a temporary file so a crash never leaves half a file.
    fn write(&self, name: &str, text: &str, private: bool) -> Result<(), SettingsError> {
        std::fs::create_dir_all(&self.dir).map_err(io_err(&self.dir))?;
        let tmp = self.dir.join(format!("{name}.tmp"));
        std::fs::write(&tmp, text).map_err(io_err(&tmp))?;
        #[cfg(unix)]
        if private {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).map_err(io_err(&tmp))?;
        }
        #[cfg(not(unix))]
        let _ = private;
        let path = self.dir.join(name);
        std::fs::rename(&tmp, &path).map_err(io_err(&path))
    }

    /// The settings; the defaults when there is no file yet.
    pub fn load_settings(&self) -> Result<Settings, SettingsError> {
        match self.read("settings.toml")? {
            None => Ok(Settings::default()),
            Some(text) => toml::from_str::<Settings>(&text)
                .map(Settings::sanitized)
                .map_err(|e| SettingsError::Damaged { path: self.dir.join("settings.toml"), msg: e.to_string() }),
        }
    }

    /// Saves the settings.
    pub fn save_settings(&self, s: &Settings) -> Result<(), SettingsError> {
        let text = toml::to_string_pretty(s)
            .map_err(|e| SettingsError::Damaged { path: self.dir.join("settings.toml"), msg: e.to_string() })?;
        self.write("settings.toml", &text, false)
    }

    /// The saved session, if any.
    pub fn load_session(&self) -> Result<Option<SavedSession>, SettingsError> {
        match self.read("session.json")? {
            None => Ok(None),
            Some(text) => serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| SettingsError::Damaged { path: self.dir.join("session.json"), msg: e.to_string() }),
        }
    }

    /// Saves a session.
    pub fn save_session(&self, s: &SavedSession) -> Result<(), SettingsError> {
        let text = serde_json::to_string_pretty(s)
            .map_err(|e| SettingsError::Damaged { path: self.dir.join("session.json"), msg: e.to_string() })?;
        self.write("session.json", &text, true)
    }

    /// Forgets the session (signing out).
    pub fn forget_session(&self) -> Result<(), SettingsError> {
        let path = self.dir.join("session.json");
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(&path)(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use babel_proto::{Secret, UserId};

    use super::*;

    #[test]
    fn settings_round_trip_and_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::new(Some(dir.path().join("h"))).unwrap();
        assert_eq!(home.load_settings().unwrap(), Settings::default());
        let s = Settings {
            server: "tls://babel.example:7447".into(),
            email: "ann@example.org".into(),
            input_device: Some("USB mic".into()),
            noise_suppression: false,
            bitrate: 16_000,
            frame_ms: 10,
            output_gain: 0.5,
            relay_only: true,
            ..Settings::default()
        };
        home.save_settings(&s).unwrap();
        assert_eq!(home.load_settings().unwrap(), s);
    }

    #[test]
    fn a_cluster_authority_is_trusted_alone() {
        let dir = tempfile::tempdir().unwrap();
        let plain = Settings::default().tls_options(dir.path()).unwrap();
        assert!(plain.trust_on_first_use && plain.extra_roots.is_empty());
        let missing = Settings { tls_ca: "/nonexistent/ca.pem".into(), ..Settings::default() };
        let err = missing.tls_options(dir.path()).unwrap_err();
        assert!(err.contains("/nonexistent/ca.pem") && err.contains("certificate authority"), "{err}");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = params.self_signed(&rcgen::KeyPair::generate().unwrap()).unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        let file = dir.path().join("ca.pem").to_str().unwrap().to_owned();
        let s = Settings { tls_ca: format!(" {file} "), ..Settings::default() };
        let opts = s.tls_options(dir.path()).unwrap();
        assert!(!opts.trust_on_first_use && !opts.system_roots);
        assert_eq!(opts.extra_roots, vec![ca.der().clone()]);
        // Kept in settings.toml.
        let home = Home::new(Some(dir.path().join("h"))).unwrap();
        home.save_settings(&s).unwrap();
        assert_eq!(home.load_settings().unwrap().tls_ca, s.tls_ca);
    }

    #[test]
    fn out_of_range_values_are_brought_back() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::new(Some(dir.path().to_owned())).unwrap();
        std::fs::write(dir.path().join("settings.toml"), "frame_ms = 7\nbitrate = 1\ninput_gain = 9.0\n").unwrap();
        let s = home.load_settings().unwrap();
        assert_eq!((s.frame_ms, s.bitrate, s.input_gain), (10, 6_000, 2.0));
        assert_eq!(s.server, DEFAULT_SERVER, "missing keys take their defaults");
        std::fs::write(dir.path().join("settings.toml"), "frame_ms = \"x\"").unwrap();
        assert!(home.load_settings().unwrap_err().to_string().contains("damaged"));
    }

    #[test]
    fn session_is_private_and_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::new(Some(dir.path().to_owned())).unwrap();
        assert_eq!(home.load_session().unwrap(), None);
        let saved = SavedSession {
            server: "127.0.0.1:1".into(),
            info: SessionInfo { id: UserId(3), name: "Ann".into(), email: "ann@x.org".into(), token: Secret::new("t") },
        };
        home.save_session(&saved).unwrap();
        assert_eq!(home.load_session().unwrap(), Some(saved));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("session.json")).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        home.forget_session().unwrap();
        home.forget_session().unwrap();
        assert_eq!(home.load_session().unwrap(), None);
    }
}

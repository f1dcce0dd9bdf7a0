//! What the harness needs from outside Rust, and a check that it is there.
//! Nothing here installs anything: `scripts/setup.sh` (run by
//! `scripts/test.sh`) installs it all, idempotently, on a fresh Debian or
//! Ubuntu machine. A check that finds something missing fails with an error
//! that names it and says to run that script, so a test never skips
//! silently and never races another for the package manager's lock.
//!
//! * a speech synthesiser to make the speech recording: festival with the
//!   CMU ARCTIC "slt" HTS voice (`festival`, `festvox-us-slt-hts`), or
//!   `espeak-ng`;
//! * real voices ([`super::voices`]): `ffmpeg` and Debian's
//!   `asterisk-core-sounds-{en,fr,es,it}-g722` prompts;
//! * a TrueType font for the plot's labels (`fonts-dejavu-core`);
//! * PESQ: the `pesq` package from PyPI (ITU-T P.862 with the P.862.2
//!   wideband mode) and numpy, in a virtual environment of its own under
//!   `~/.cache/babel/pesq-venv` (or `$BABEL_PESQ_VENV`), which
//!   `scripts/setup.sh` builds.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The pesq version `scripts/setup.sh` installs (the scores of a version
/// are what BENCHMARKS.md records).
pub const PESQ_VERSION: &str = "0.0.4";

/// The font the plot uses.
pub const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

/// Something the harness needs that this machine does not have.
#[derive(Debug, thiserror::Error)]
#[error(
    "{what} is missing (Debian package {package}): run scripts/setup.sh, which installs everything the tests and benchmarks need"
)]
pub struct Missing {
    /// What is missing, as a person would look for it.
    pub what: String,
    /// The Debian package that provides it.
    pub package: &'static str,
}

fn missing(what: impl Into<String>, package: &'static str) -> Missing {
    Missing { what: what.into(), package }
}

/// The PESQ scorer the harness runs in its virtual environment: reads a
/// JSON list of `{"ref": path, "deg": path}` (16 kHz mono WAV) on stdin,
/// prints one JSON list of `{"mos": x}` or `{"error": why}`.
pub const PESQ_SCRIPT: &str = r#"
import json, sys, wave
import numpy as np
from pesq import pesq

def load(path):
    with wave.open(path, "rb") as w:
        if w.getframerate() != 16000 or w.getnchannels() != 1 or w.getsampwidth() != 2:
            raise ValueError(path + ": want 16 kHz mono 16-bit")
        return np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).astype(np.float64)

out = []
for job in json.load(sys.stdin):
    try:
        out.append({"mos": float(pesq(16000, load(job["ref"]), load(job["deg"]), "wb"))})
    except Exception as e:
        out.append({"error": str(e)})
print(json.dumps(out))
"#;

/// Whether `cmd` is an executable file in one of `path`'s directories.
fn have_on(path: &OsStr, cmd: &str) -> bool {
    std::env::split_paths(path).any(|dir| {
        let f = dir.join(cmd);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            f.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        }
        #[cfg(not(unix))]
        f.is_file()
    })
}

fn have(cmd: &str) -> bool {
    have_on(&std::env::var_os("PATH").unwrap_or_default(), cmd)
}

/// Where the festival voice the harness uses lives.
pub const FESTIVAL_VOICE: &str = "/usr/share/festival/voices/us/cmu_us_slt_arctic_hts";

fn festival_on(path: &OsStr, voice: &Path) -> Result<(), Missing> {
    if !have_on(path, "text2wave") {
        return Err(missing("festival's text2wave", "festival"));
    }
    if !voice.exists() {
        return Err(missing(format!("festival's CMU ARCTIC slt voice ({})", voice.display()), "festvox-us-slt-hts"));
    }
    Ok(())
}

/// Checks that festival and its voice are there.
pub fn require_festival() -> Result<(), Missing> {
    festival_on(&std::env::var_os("PATH").unwrap_or_default(), Path::new(FESTIVAL_VOICE))
}

/// Checks that `espeak-ng` is there.
pub fn require_espeak() -> Result<(), Missing> {
    if have("espeak-ng") { Ok(()) } else { Err(missing("espeak-ng", "espeak-ng")) }
}

/// Checks that the plot's font is there; answers its path.
pub fn require_font() -> Result<&'static str, Missing> {
    if Path::new(FONT).exists() { Ok(FONT) } else { Err(missing(format!("the font {FONT}"), "fonts-dejavu-core")) }
}

/// Where the PESQ virtual environment lives.
pub fn venv_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("BABEL_PESQ_VENV") {
        return PathBuf::from(p);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    cache.join("babel").join("pesq-venv")
}

fn python_ok(python: &Path) -> bool {
    Command::new(python)
        .args([
            "-c",
            &format!("import numpy, pesq, importlib.metadata as m; assert m.version('pesq') == '{PESQ_VERSION}'"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn pesq_in(dir: &Path) -> Result<PathBuf, Missing> {
    let python = dir.join("bin").join("python");
    if python_ok(&python) {
        Ok(python)
    } else {
        Err(missing(format!("PESQ {PESQ_VERSION} (a Python virtual environment in {})", dir.display()), "python3-venv"))
    }
}

/// Checks that the PESQ virtual environment works; answers its python.
pub fn require_pesq() -> Result<PathBuf, Missing> {
    pesq_in(&venv_dir())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_tool_is_named_and_nothing_is_installed() {
        // A PATH whose only programs are an apt-get and a sudo that leave a
        // mark if anyone runs them.
        let dir = tempfile::tempdir().unwrap();
        let mark = dir.path().join("ran");
        for prog in ["apt-get", "sudo"] {
            let f = dir.path().join(prog);
            std::fs::write(&f, format!("#!/bin/sh\necho {prog} >> {}\n", mark.display())).unwrap();
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o755)).unwrap();
            }
        }
        assert!(have_on(dir.path().as_os_str(), "apt-get"), "the fake is found");
        let e = festival_on(dir.path().as_os_str(), Path::new("/nonexistent/voice")).unwrap_err().to_string();
        assert!(e.contains("text2wave") && e.contains("festival") && e.contains("scripts/setup.sh"), "{e}");
        let e = pesq_in(&dir.path().join("no-venv")).unwrap_err().to_string();
        assert!(e.contains("PESQ") && e.contains("scripts/setup.sh"), "{e}");
        assert!(!mark.exists(), "something ran {}", std::fs::read_to_string(&mark).unwrap_or_default());
    }
}

//! What the harness needs from outside Rust, installed when missing, so
//! that it runs with one command on a fresh Debian or Ubuntu machine:
//!
//! * a speech synthesiser to make the speech recording: festival with the
//!   CMU ARCTIC "slt" HTS voice (`festival`, `festvox-us-slt-hts`), or
//!   `espeak-ng`;
//! * a TrueType font for the plot's labels (`fonts-dejavu-core`);
//! * PESQ: the `pesq` package from PyPI (ITU-T P.862 with the P.862.2
//!   wideband mode) and numpy, in a virtual environment of its own under
//!   `~/.cache/babel/pesq-venv` (or `$BABEL_PESQ_VENV`), built with
//!   `python3 -m venv` (Debian: `python3-venv`; `python3-dev` for the C
//!   extension pesq compiles).
//!
//! Debian packages go in with `apt-get` (through `sudo` when not root),
//! only when the command or file is missing.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

/// The pesq version the harness installs (the scores of a version are
/// what BENCHMARKS.md records).
pub const PESQ_VERSION: &str = "0.0.4";

/// The font the plot uses.
pub const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

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

fn have(cmd: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {cmd}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Installs Debian packages with apt-get (non-interactively).
pub fn apt_install(packages: &[&str]) -> anyhow::Result<()> {
    if packages.is_empty() {
        return Ok(());
    }
    eprintln!("babel-quality: installing {} (apt-get)", packages.join(" "));
    let run = |args: &[&str]| -> anyhow::Result<()> {
        let mut cmd = if is_root() {
            Command::new("apt-get")
        } else {
            let mut c = Command::new("sudo");
            c.arg("apt-get");
            c
        };
        let status = cmd
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status()
            .context("cannot run apt-get")?;
        if !status.success() {
            bail!("apt-get {} failed ({status})", args.join(" "));
        }
        Ok(())
    };
    run(&["update", "-qq"])?;
    let mut args = vec!["install", "-y", "-qq"];
    args.extend_from_slice(packages);
    run(&args)
}

/// Where the festival voice the harness uses lives.
pub const FESTIVAL_VOICE: &str = "/usr/share/festival/voices/us/cmu_us_slt_arctic_hts";

/// Makes sure festival and its voice are there.
pub fn ensure_festival() -> anyhow::Result<()> {
    let mut missing = Vec::new();
    if !have("text2wave") {
        missing.push("festival");
    }
    if !Path::new(FESTIVAL_VOICE).exists() {
        missing.push("festvox-us-slt-hts");
    }
    apt_install(&missing)
}

/// Makes sure `espeak-ng` is there.
pub fn ensure_espeak() -> anyhow::Result<()> {
    if !have("espeak-ng") {
        apt_install(&["espeak-ng"])?;
    }
    Ok(())
}

/// Makes sure the plot's font is there; answers its path.
pub fn ensure_font() -> anyhow::Result<&'static str> {
    if !Path::new(FONT).exists() {
        apt_install(&["fonts-dejavu-core"])?;
    }
    Ok(FONT)
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

/// Makes sure the PESQ virtual environment works; answers its python.
pub fn ensure_pesq() -> anyhow::Result<PathBuf> {
    let dir = venv_dir();
    let python = dir.join("bin").join("python");
    if python_ok(&python) {
        return Ok(python);
    }
    if !have("python3") {
        apt_install(&["python3"])?;
    }
    // A venv with pip: python3-venv on Debian. pesq compiles a C extension:
    // a compiler and Python's headers.
    let venv_works = Command::new("python3")
        .args(["-c", "import venv, ensurepip"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let headers = Command::new("python3")
        .args(["-c", "import sysconfig, os, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()['include'], 'Python.h')))"])
        .status()
        .is_ok_and(|s| s.success());
    let mut missing = Vec::new();
    if !venv_works {
        missing.push("python3-venv");
    }
    if !headers {
        missing.push("python3-dev");
    }
    if !have("cc") {
        missing.push("gcc");
    }
    apt_install(&missing)?;
    eprintln!("babel-quality: setting up PESQ in {} (pip install pesq=={PESQ_VERSION} numpy)", dir.display());
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let status = Command::new("python3")
        .args(["-m", "venv", "--clear"])
        .arg(&dir)
        .stdin(Stdio::null())
        .status()
        .context("cannot run python3 -m venv")?;
    if !status.success() {
        bail!("python3 -m venv {} failed ({status})", dir.display());
    }
    let pip = dir.join("bin").join("pip");
    // numpy first: pesq's build needs it.
    let pesq = format!("pesq=={PESQ_VERSION}");
    for pkgs in [["numpy"], [pesq.as_str()]] {
        let status = Command::new(&pip)
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .args(pkgs)
            .stdin(Stdio::null())
            .status()
            .context("cannot run pip")?;
        if !status.success() {
            bail!("pip install {} failed ({status})", pkgs.join(" "));
        }
    }
    if !python_ok(&python) {
        bail!("PESQ does not import in {} after installing it", dir.display());
    }
    Ok(python)
}

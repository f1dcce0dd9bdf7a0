//! What the tests of the real `babel` share: a server on 127.0.0.1, the
//! binary run with a home of its own, and a voice to send.

use std::path::Path;
use std::process::{Command, Stdio};

pub mod env;

use babel_server::auth::PasswordCost;
use babel_server::{Config, RunningServer};

/// A test server's configuration: 127.0.0.1 on any port, its database in
/// `dir`, and passwords cheap to hash.
#[allow(dead_code)]
pub fn config(dir: &Path) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        db: dir.join("babel.db"),
        password: PasswordCost { memory_kib: 256, iterations: 1 },
        durability: babel_server::store::sqlite::Durability::Normal,
        ..Config::default()
    }
}

/// A server started with [`config`].
#[allow(dead_code)]
pub async fn server(dir: &Path) -> RunningServer {
    RunningServer::start(&config(dir)).await.unwrap()
}

/// `babel --server SERVER --home HOME` (this build's binary), its stdin,
/// stdout and stderr piped; the caller adds the arguments.
#[allow(dead_code)]
pub fn babel(server: &str, home: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_babel"));
    cmd.args(["--server", server, "--home"]).arg(home);
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd
}

#[allow(dead_code)]
pub fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> tokio::task::JoinHandle<T> {
    tokio::task::spawn_blocking(f)
}

/// 16 kHz mono 16-bit.
#[allow(dead_code)]
pub fn hound_spec() -> hound::WavSpec {
    hound::WavSpec { channels: 1, sample_rate: 16_000, bits_per_sample: 16, sample_format: hound::SampleFormat::Int }
}

/// `secs` of a voice-like sound (a 140 Hz tone and its harmonics, in
/// syllables) to `path`.
#[allow(dead_code)]
pub fn write_voice(path: &Path, secs: f32) {
    let mut w = hound::WavWriter::create(path, hound_spec()).unwrap();
    for i in 0..(16_000.0 * secs) as usize {
        let t = i as f32 / 16_000.0;
        let env = (std::f32::consts::PI * (t * 4.0).fract()).sin();
        let s: f32 = (1..5).map(|h| (2.0 * std::f32::consts::PI * 140.0 * h as f32 * t).sin() / h as f32).sum();
        w.write_sample((0.25 * env * s * 32767.0) as i16).unwrap();
    }
    w.finalize().unwrap();
}

//! Keeps the ALSA library's own complaints (`ALSA lib confmisc.c:767:…`)
//! off the user's terminal.
//!
//! alsa-lib writes them straight to the process's stderr while cpal probes
//! devices (on a machine without a sound card, on every probe), and neither
//! cpal nor the `alsa` crate cpal uses offers a safe way to set its error
//! handler. So, for the commands that touch audio devices, stderr (fd 2)
//! becomes a pipe and a thread copies everything to the real stderr except
//! lines that start with `ALSA lib `. Babel's own messages, the status line
//! and logs pass unchanged and at once. Dropping the guard puts the real
//! stderr back and waits until everything written so far is copied.

use std::io::{Read, Write};
use std::os::fd::OwnedFd;

/// ALSA's prefix for its error lines.
const PATTERN: &[u8] = b"ALSA lib ";

/// Drops ALSA's lines from a byte stream written in arbitrary pieces.
#[derive(Debug, Default)]
pub struct AlsaFilter {
    /// Bytes that may be the start of the pattern, held back until known.
    held: Vec<u8>,
    /// Inside an ALSA line: dropping until its end.
    dropping: bool,
}

impl AlsaFilter {
    /// Feeds bytes; answers the ones to pass on.
    pub fn feed(&mut self, input: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(input.len());
        let mut data = std::mem::take(&mut self.held);
        data.extend_from_slice(input);
        let mut i = 0;
        while i < data.len() {
            if self.dropping {
                match data[i..].iter().position(|&b| b == b'\n') {
                    Some(n) => {
                        i += n + 1;
                        self.dropping = false;
                    }
                    None => return out,
                }
                continue;
            }
            let rest = &data[i..];
            if rest.starts_with(PATTERN) {
                self.dropping = true;
                i += PATTERN.len();
                continue;
            }
            if rest.len() < PATTERN.len() && PATTERN.starts_with(rest) {
                self.held = rest.to_vec();
                return out;
            }
            out.push(data[i]);
            i += 1;
        }
        out
    }

    /// What is still held back when the stream ends.
    pub fn finish(&mut self) -> Vec<u8> {
        if self.dropping { Vec::new() } else { std::mem::take(&mut self.held) }
    }
}

/// While alive, stderr goes through an [`AlsaFilter`].
#[derive(Debug)]
pub struct StderrFilter {
    real: OwnedFd,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl StderrFilter {
    /// Puts the filter in place; `None` (stderr unchanged) if the system
    /// refuses any step.
    pub fn install() -> Option<StderrFilter> {
        let real = nix::unistd::dup(std::io::stderr()).ok()?;
        let mut out = std::fs::File::from(real.try_clone().ok()?);
        let (reader, writer) = nix::unistd::pipe().ok()?;
        let mut reader = std::fs::File::from(reader);
        let thread = std::thread::Builder::new()
            .name("babel-stderr".into())
            .spawn(move || {
                let mut filter = AlsaFilter::default();
                let mut buf = [0u8; 4096];
                loop {
                    match reader.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            let pass = filter.feed(&buf[..n]);
                            if !pass.is_empty() {
                                let _ = out.write_all(&pass);
                                let _ = out.flush();
                            }
                        }
                    }
                }
                let _ = out.write_all(&filter.finish());
            })
            .ok()?;
        if nix::unistd::dup2_stderr(&writer).is_err() {
            drop(writer);
            let _ = thread.join();
            return None;
        }
        drop(writer);
        Some(StderrFilter { real, thread: Some(thread) })
    }
}

impl Drop for StderrFilter {
    fn drop(&mut self) {
        // fd 2 back to the terminal closes the pipe's last writer (children
        // that inherited it aside), so the copying thread sees its end.
        let _ = std::io::stderr().flush();
        if nix::unistd::dup2_stderr(&self.real).is_ok() {
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(pieces: &[&[u8]]) -> String {
        let mut f = AlsaFilter::default();
        let mut out = Vec::new();
        for p in pieces {
            out.extend(f.feed(p));
        }
        out.extend(f.finish());
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn alsa_lines_go_and_everything_else_stays() {
        let alsa = b"ALSA lib confmisc.c:767:(parse_card) cannot find card '0'\n";
        let mut all = Vec::new();
        all.extend_from_slice(b"babel: no speaker\n");
        all.extend_from_slice(alsa);
        all.extend_from_slice(b"\r\x1b[K00:01  code 123 456");
        all.extend_from_slice(alsa);
        all.extend_from_slice(b"ALSA is fine to mention\n");
        let want = "babel: no speaker\n\r\x1b[K00:01  code 123 456ALSA is fine to mention\n";
        assert_eq!(run(&[&all]), want);
        // Byte by byte (alsa-lib writes its prefix, message and new line
        // separately), the same.
        let bytes: Vec<&[u8]> = all.chunks(1).collect();
        assert_eq!(run(&bytes), want);
        // ALSA's pieces as it writes them.
        assert_eq!(
            run(&[b"ALSA lib pcm.c:2666:(snd_pcm_open_noupdate) ", b"Unknown PCM default", b"\n", b"ok\n"]),
            "ok\n"
        );
        // Something that only looks like the start is passed on at the end.
        assert_eq!(run(&[b"AL"]), "AL");
    }
}

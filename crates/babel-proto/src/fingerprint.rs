//! Certificate fingerprints: how a TLS server's identity is printed by the
//! server, pinned by clients and compared.
//!
//! The fingerprint is the SHA-256 of the certificate's DER bytes, written as
//! `SHA256:` and 32 upper-case hex bytes joined by colons, the same digits
//! `openssl x509 -noout -fingerprint -sha256` prints, so an operator can check
//! one independently.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};

/// The SHA-256 fingerprint of a certificate.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    /// The fingerprint of a DER-encoded certificate.
    pub fn of_der(der: &[u8]) -> Fingerprint {
        Fingerprint(Sha256::digest(der).into())
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SHA256:")?;
        for (i, b) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{b:02X}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A fingerprint that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a SHA-256 fingerprint (expected 64 hex digits, colons allowed, optionally after `SHA256:`): {0:?}")]
pub struct BadFingerprint(pub String);

impl FromStr for Fingerprint {
    type Err = BadFingerprint;

    /// Reads `SHA256:AB:CD:…`, `sha256 Fingerprint=AB:CD:…` (openssl's
    /// output), or 64 bare hex digits; case and colons do not matter.
    fn from_str(s: &str) -> Result<Fingerprint, BadFingerprint> {
        let bad = || BadFingerprint(s.to_owned());
        let t = s.trim();
        let lower = t.to_ascii_lowercase();
        let rest =
            ["sha256 fingerprint=", "sha256:", "sha256="].iter().find_map(|p| lower.strip_prefix(p)).unwrap_or(&lower);
        let hex: Vec<u8> = rest.bytes().filter(|&b| b != b':').collect();
        if hex.len() != 64 {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        for (i, pair) in hex.chunks_exact(2).enumerate() {
            let digit = |c: u8| (c as char).to_digit(16).ok_or_else(bad);
            out[i] = u8::try_from(digit(pair[0])? * 16 + digit(pair[1])?).map_err(|_| bad())?;
        }
        Ok(Fingerprint(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_parse_round_trip() {
        let fp = Fingerprint::of_der(b"certificate");
        let s = fp.to_string();
        assert!(s.starts_with("SHA256:"));
        assert_eq!(s.len(), 7 + 32 * 3 - 1);
        assert_eq!(s.parse::<Fingerprint>().unwrap(), fp);
        assert_eq!(s.to_lowercase().parse::<Fingerprint>().unwrap(), fp);
        let bare: String = s[7..].chars().filter(|&c| c != ':').collect();
        assert_eq!(bare.parse::<Fingerprint>().unwrap(), fp);
        let openssl = format!("sha256 Fingerprint={}", &s[7..]);
        assert_eq!(openssl.parse::<Fingerprint>().unwrap(), fp);
    }

    #[test]
    fn known_digest() {
        // SHA-256 of the empty string.
        let fp = Fingerprint::of_der(b"");
        assert!(fp.to_string().starts_with("SHA256:E3:B0:C4:42:98:FC"));
    }

    #[test]
    fn rejects_garbage() {
        for s in ["", "SHA256:", "zz", &"A".repeat(63), &"G".repeat(64), &"A".repeat(66), "SHA256:ÄÄ"] {
            assert!(s.parse::<Fingerprint>().is_err(), "{s:?}");
        }
    }
}

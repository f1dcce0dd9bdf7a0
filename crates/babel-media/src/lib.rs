//! Babel's voice pipeline.
//!
//! Built so far, pure and tested on their own:
//! * [`keys`]: end-to-end key agreement for a call (X25519, HKDF-SHA256),
//!   the short authentication string, per-sender voice keys.
//! * [`packet`]: the voice datagram, sealed with ChaCha20-Poly1305, and the
//!   replay window.
//! * [`jitter`]: the adaptive jitter buffer (time passed in), deciding per
//!   frame between playing, FEC recovery, concealment and silence.
//!
//! Still to come here: audio devices, Opus, processing, transports.

pub mod audio;
pub mod codec;
pub mod device;
pub mod engine;
pub mod jitter;
pub mod keys;
pub mod packet;
pub mod process;

//! A thin, safe wrapper over the parts of libopus 1.5+ that the `opus`
//! crate does not reach: **DRED** (Deep REDundancy: each packet carries a
//! low-rate neural coding of up to a second of the speech before it, which
//! the receiver turns back into audio for frames it lost) and the **deep
//! PLC** (neural concealment, on at decoder complexity 5 and above).
//!
//! It exists to measure DRED against Babel's copies (issue #16 item 3,
//! BENCHMARKS.md), not to ship: the code is compiled only with the cargo
//! feature `dred`, which builds the bundled libopus with CMake `OPUS_DRED`
//! (about half an hour of one core). Without the feature this crate is
//! empty, so the default build, CI and the rest of the workspace never
//! build the neural models.
//!
//! This is the only crate of the workspace that allows `unsafe` (the
//! workspace forbids it): every `unsafe` block calls one libopus function
//! and says why the call is sound. The API is safe: the states are owned
//! (created in `new`, destroyed in `Drop`), every buffer handed to C is a
//! Rust slice whose length is passed with it, and every size that C reads
//! is checked here first.

#![cfg_attr(not(feature = "dred"), allow(unused))]

#[cfg(feature = "dred")]
mod ffi;

#[cfg(feature = "dred")]
pub use ffi::{Decoder, DredReader, Encoder, has_lbrr, version};

/// The sample rate everything here runs at (Babel's engine's).
pub const SAMPLE_RATE: u32 = 48_000;

/// A libopus failure, or input this wrapper refused before C saw it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// libopus answered this error code.
    #[error("libopus: {message} ({code})")]
    Opus {
        /// The code (negative).
        code: i32,
        /// `opus_strerror`'s text.
        message: String,
    },
    /// The input cannot be handed to libopus (a frame of the wrong length,
    /// an offset outside what the redundancy covers, a packet too long).
    #[error("{0}")]
    Input(String),
}

/// Whether `n` samples at 48 kHz are a frame length Opus codes (2.5, 5,
/// 10, 20, 40 or 60 ms).
pub fn is_frame_length(n: usize) -> bool {
    matches!(n, 120 | 240 | 480 | 960 | 1920 | 2880)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_opus_frame_lengths_are_frames() {
        assert!(is_frame_length(960) && is_frame_length(480) && is_frame_length(120));
        assert!(!is_frame_length(0) && !is_frame_length(959) && !is_frame_length(5760));
    }
}

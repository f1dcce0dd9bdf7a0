//! A call's media as a pure state machine (sans IO), and the types around it.
//!
//! [`CallCore`] holds everything a call's media is, apart from its input and
//! output: the peers and their keys, a jitter buffer and a decoder per peer,
//! the encoder, the rate controller, the path choice, the reports and the
//! redundancy packer. It never touches a socket, a device or a clock: the
//! driver ([`crate::engine`]) hands it what arrived (`handle_datagram`,
//! `handle_channel_frame`), each captured frame (`handle_capture`) and every
//! command (`handle_command`), always with the time, and takes out what to
//! send (`poll_transmit`) and what to play (`poll_playout`). The same core
//! runs in simulated time in the tests (`tests/sim.rs`, over `babel-netem`).
//!
//! Paths, best first: **direct UDP** to the peer's candidates, **the
//! server's UDP relay**, **the call channel** (`/send` through the server).
//! Twice a second each side sends each peer a report
//! ([`babel_proto::voice::Report`]), sealed like voice, saying what arrived
//! on which path (and loss, jitter, timing for the RTT). Voice to a peer goes
//! on the best path that peer's last reports confirm. At the start, and
//! whenever the confirmed path stops being confirmed, voice goes on every
//! path at once; the same sealed datagrams travel on each and the replay
//! window drops the copies, so there is no gap while paths are found. Both
//! sides send direct from the start, so simple NATs open. While on a worse
//! path the better ones are probed four times a second with real voice, and
//! the call moves back as soon as they are confirmed again. The loss the
//! peers report sets the encoder's FEC and, from 1 % (until 10 s after the
//! last such report), adds copies of earlier frames to each voice datagram,
//! as far back as the loss pattern the peer reports needs (short offsets for
//! random loss, longer ones for bursts: [`pattern::copy_offsets`]); the
//! receiver's jitter buffer waits as long as the farthest copy it gets.
//! A relay-only call never sends directly, so the others never see this
//! side's address: relay and call channel only. The relay client BINDs,
//! answers the relay's challenge with a CONFIRM carrying its cookie, and
//! numbers its DATA for the relay's replay window. With two or more peers
//! (a group call) voice is sealed once under a random group key, which goes
//! to each peer in a key hand-over ([`babel_proto::voice::KeyHandover`])
//! under the two-party key towards it.
//!
//! **Noise suppression, gain control and echo cancellation live in the
//! core.** They are pure computations on samples (no device), and the echo
//! canceller must see exactly the frame that is played ([`CallCore::poll_playout`])
//! next to the frame that is captured ([`CallCore::handle_capture`]); both
//! pass through the core, so pairing them here needs no second channel
//! between the driver and the core, and the commands that steer them (mute,
//! gains, noise suppression) arrive with every other command. What they do
//! is kept out of the simulated tests by configuration (noise suppression
//! off; a test input does not hear the room, so no echo canceller runs).

use std::net::SocketAddr;
use std::time::Duration;

use babel_proto::UserId;

use crate::codec::{DEFAULT_BITRATE, FrameMs};
use crate::keys::KeyError;

mod core;
pub mod pattern;
mod peer;

pub use self::core::{CallCore, CoreSetup, Transmit};

pub use babel_proto::voice::{KIND_KEY, KIND_REPORT};

/// How often a report goes out (and so how fast a broken path is noticed).
pub const REPORT_EVERY: Duration = Duration::from_millis(500);
/// The farthest back a copy of a frame may ride (frames): the sender keeps
/// this many of its last packets. Where copies go within that follows the
/// loss pattern the receiver reports ([`pattern::copy_offsets`]).
pub const MAX_COPY_OFFSET: u8 = 8;
/// How long copies keep going after the last report of loss (1 % or more).
const COPIES_LINGER: Duration = Duration::from_secs(10);
/// How often a better path is probed.
const PROBE_EVERY: Duration = Duration::from_millis(250);

/// The loss the encoder's in-band FEC is told to protect against, percent,
/// for a loss the far end reports in permille: a little more than that.
pub fn expected_loss_pct(reported_permille: u16) -> u8 {
    u8::try_from((reported_permille / 10).saturating_add(5).min(40)).unwrap_or(40)
}

/// Which way voice goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Path {
    /// Straight to the peer over UDP.
    Direct,
    /// Through the server's UDP relay.
    Relay,
    /// Through the server's call channel (TCP).
    Channel,
}

impl Path {
    /// A short name for status lines.
    pub fn as_str(self) -> &'static str {
        match self {
            Path::Direct => "direct",
            Path::Relay => "relay",
            Path::Channel => "channel",
        }
    }
}

/// Settings of the media engine.
#[derive(Debug, Clone)]
pub struct MediaConfig {
    /// Frame length.
    pub frame: FrameMs,
    /// Opus bitrate, bits/s.
    pub bitrate: u32,
    /// In-band FEC.
    pub fec: bool,
    /// While the peer reports loss, send copies of earlier frames in each
    /// voice datagram ([`pattern::copy_offsets`]).
    pub redundancy: bool,
    /// Adaptive jitter buffer (off: the naive receiver, kept for
    /// comparisons: a fixed one-frame buffer that plays what is there at
    /// each frame's turn, conceals what is not, drops what comes later and
    /// never uses FEC).
    pub adaptive_jitter: bool,
    /// Noise suppression on the microphone.
    pub noise_suppression: bool,
    /// Acoustic echo cancellation (what the loudspeaker plays is removed
    /// from the microphone), when the input is a microphone
    /// ([`AudioInput::hears_the_room`](crate::audio::AudioInput::hears_the_room)).
    pub echo_cancellation: bool,
    /// Automatic gain control on the microphone.
    pub auto_gain: bool,
    /// Lower the bitrate in steps when the path is congested, and raise it
    /// again (never above `bitrate`) once it is not.
    pub adapt_bitrate: bool,
    /// Keep playing this long after the input ended (let the far end finish).
    pub tail: Duration,
    /// End the call when nothing arrived from the peer for this long.
    pub peer_timeout: Duration,
}

impl Default for MediaConfig {
    fn default() -> Self {
        Self {
            frame: FrameMs::Twenty,
            bitrate: DEFAULT_BITRATE,
            fec: true,
            redundancy: true,
            adaptive_jitter: true,
            noise_suppression: true,
            echo_cancellation: true,
            auto_gain: true,
            adapt_bitrate: true,
            tail: Duration::from_millis(500),
            peer_timeout: Duration::from_secs(15),
        }
    }
}

/// Where the server's relay is and my grant for it.
#[derive(Debug, Clone, Copy)]
pub struct RelayInfo {
    /// The relay's UDP address.
    pub addr: SocketAddr,
    /// My handle.
    pub handle: u32,
    /// My key.
    pub key: [u8; 16],
}

/// Another participant, as call set-up told me of them.
#[derive(Debug, Clone)]
pub struct PeerSetup {
    /// Their user id.
    pub user: UserId,
    /// Their public key (`key` field).
    pub key: String,
    /// Their UDP candidates.
    pub candidates: Vec<SocketAddr>,
}

/// Live figures about one other participant.
#[derive(Debug, Clone, Default)]
pub struct PeerStats {
    /// Who.
    pub user: Option<UserId>,
    /// The path my voice reaches them on.
    pub path: Option<Path>,
    /// Round-trip time, ms.
    pub rtt_ms: Option<u32>,
    /// Loss they measure on what I send, percent.
    pub loss_pct: f32,
    /// Loss I measure on what they send, percent.
    pub rx_loss_pct: f32,
    /// Jitter I measure on what they send, ms.
    pub jitter_ms: u64,
    /// Their voice level, dBFS (who is speaking).
    pub level_db: f32,
}

/// Live figures of a call.
#[derive(Debug, Clone, Default)]
pub struct CallStats {
    /// The path voice goes out on now (the worst one in use, in a group).
    pub path: Option<Path>,
    /// Every change of `path`, with the call time it happened at.
    pub path_history: Vec<(Duration, Path)>,
    /// Round-trip time, ms (the longest, in a group).
    pub rtt_ms: Option<u32>,
    /// Loss the peers measure on what I send, percent (the worst).
    pub loss_pct: f32,
    /// Loss I measure on what I receive, percent (the worst).
    pub rx_loss_pct: f32,
    /// Jitter I measure, ms (the worst).
    pub jitter_ms: u64,
    /// Jitter-buffer delay now, ms (the longest).
    pub jitter_delay_ms: u64,
    /// Opus bitrate, bits/s.
    pub bitrate: u32,
    /// Frames concealed so far (all peers).
    pub concealed: u64,
    /// Frames rebuilt from FEC so far (all peers).
    pub fec_recovered: u64,
    /// Lost frames filled in from copies in later datagrams (all peers).
    pub from_copies: u64,
    /// Frames the jitter buffers skipped to cut their delay (all peers).
    pub skipped: u64,
    /// Silent frames the jitter buffers added in pauses to deepen (all peers).
    pub stretched: u64,
    /// Voice frames sent.
    pub sent: u64,
    /// Where my copies of earlier frames go now, frames back (empty: no
    /// copies), from the loss pattern the peers report.
    pub copy_offsets: Vec<u8>,
    /// Frames that could not be sealed, so never went out (voice, reports,
    /// key hand-overs): 0 unless something is wrong with this side.
    pub seal_failures: u64,
    /// Packets from peers the decoder refused (each played as a gap).
    pub decode_failures: u64,
    /// Datagrams and channel frames dropped because they did not open under
    /// any participant's key, or were of no known kind: a stranger's,
    /// damaged ones, and in a group call the reports and key hand-overs
    /// the relay and the call channel bring from one participant to
    /// another (they reach everyone; only their addressee can open them).
    pub rejected: u64,
    /// Voice frames received (all peers, all paths, copies dropped).
    pub received: u64,
    /// Microphone level, dBFS.
    pub input_level_db: f32,
    /// Loudspeaker level, dBFS.
    pub output_level_db: f32,
    /// The echo canceller's estimate of how much echo it removes, dB.
    pub erle_db: Option<f32>,
    /// The code people compare: one for the whole call, from the key
    /// exchange, changed at every join and leave.
    pub sas: String,
    /// Per participant.
    pub peers: Vec<PeerStats>,
}

/// Why a call's media stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndCause {
    /// The input ran out (a file was sent).
    InputEnded,
    /// Asked to stop (hang-up).
    Stopped,
    /// Nothing arrived from any peer for `peer_timeout`.
    PeerVanished,
}

/// An engine failure.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// Keys could not be agreed.
    #[error(transparent)]
    Keys(#[from] KeyError),
    /// The codec failed.
    #[error(transparent)]
    Codec(#[from] crate::codec::CodecError),
    /// The output could not be finished (e.g. a WAV file not written).
    #[error(transparent)]
    Audio(#[from] crate::audio::AudioError),
}

/// Commands a running call takes.
#[derive(Debug, Clone)]
pub enum Control {
    /// Mute or unmute the microphone.
    Mute(bool),
    /// Input gain (linear).
    InputGain(f32),
    /// Output gain (linear).
    OutputGain(f32),
    /// Noise suppression on or off.
    NoiseSuppression(bool),
    /// A new bitrate step.
    Bitrate(u32),
    /// Someone joined (`/participant_joined`, or `/call_accepted` in a group).
    AddPeer(PeerSetup),
    /// Someone left (`/participant_left`).
    RemovePeer(UserId),
    /// A peer's addresses changed (`/call_candidates`).
    Candidates(UserId, Vec<SocketAddr>),
    /// The call's code changed (someone joined or left).
    Code(String),
    /// The relay moved (`/call_relay`: another server node adopted the
    /// call): bind to this one and relay through it from now on.
    Relay(RelayInfo),
}

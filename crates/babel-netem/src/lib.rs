//! Bad networks on purpose, reproducibly: the network models behind every
//! simulated call and every impairing proxy.
//!
//! `tc netem` is not available on the machines Babel is built on, so this
//! brings its own. The models are pure state machines with time passed in
//! (a `Duration` since the start of the run); nothing here has a clock, a
//! socket or a thread, so the same code serves simulated-time tests (the
//! call cores of `babel-media`'s `tests/sim.rs`) and the real-time proxies
//! of `babel-tools` (`netsim::proxy`, the `babel-netsim` binary, the
//! quality harness).
//!
//! * [`link`]: one direction of a datagram path: random and bursty
//!   (Gilbert-Elliott) loss, delay, jitter, reordering, duplication and a
//!   bandwidth cap with a drop-tail queue.
//! * [`stream`]: a TCP connection: delay, stalls, a bandwidth cap, cuts.
//! * [`rng`]: the seeded generator behind every random choice.
//!
//! Every model counts what it did. This crate is on the bottom floor: it
//! depends on no other Babel crate.

pub mod link;
pub mod rng;
pub mod stream;

pub use link::{GilbertElliott, Impairment, Link, LinkCounters, Verdict};
pub use rng::Rng;
pub use stream::{Direction, StreamCounters, StreamImpairment, StreamLink};

//! The network simulator: bad networks on purpose, reproducibly.
//!
//! `tc netem` is not available on the machines Babel is built on, so this
//! brings its own. The models are pure state machines with time passed in
//! (the same code serves in-process tests and the proxies):
//!
//! * [`link`]: one direction of a datagram path: random and bursty
//!   (Gilbert-Elliott) loss, delay, jitter, reordering, duplication and a
//!   bandwidth cap with a drop-tail queue.
//! * [`stream`]: a TCP connection: delay, stalls, a bandwidth cap, cuts.
//! * [`rng`]: the seeded generator behind every random choice.
//!
//! [`proxy`] runs them between real sockets (the `babel-netsim` binary and
//! the quality harness use it). Every model counts what it did.

pub mod link;
pub mod proxy;
pub mod rng;
pub mod stream;

pub use link::{GilbertElliott, Impairment, Link, LinkCounters, Verdict};
pub use rng::Rng;
pub use stream::{Direction, StreamCounters, StreamImpairment, StreamLink};

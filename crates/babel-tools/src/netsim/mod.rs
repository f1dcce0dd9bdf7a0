//! The network simulator: bad networks on purpose, reproducibly.
//!
//! The models (datagram [`link`]s, TCP [`stream`]s, the seeded [`rng`])
//! are pure state machines in the bottom-floor `babel-netem` crate, so the
//! media engine's simulated-time tests use them too; they are re-exported
//! here. [`proxy`] runs them between real sockets (the `babel-netsim`
//! binary and the quality harness use it).

pub mod proxy;

pub use babel_netem::{Direction, GilbertElliott, Impairment, Link, LinkCounters, Rng, StreamCounters};
pub use babel_netem::{StreamImpairment, StreamLink, Verdict, link, rng, stream};

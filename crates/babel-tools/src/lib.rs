//! Load generation, benchmarks and test tools for Babel.
//!
//! The binaries are thin front ends:
//!
//! * `babel-load` sets up accounts once ([`setup`]), starts or finds a server
//!   and a ceiling ([`child`]), runs the measurements ([`mod@bench`]) and prints
//!   a table or JSON ([`report`]).
//! * `babel-ceiling` ([`ceiling`]) answers every request frame with a fixed
//!   response and does nothing else: the best a Babel-shaped server could do
//!   on this machine, to compare the real server with.
//!
//! * `babel-netsim` ([`netsim`]) is the network impairment proxy (UDP and
//!   TCP) over sans-IO impairment models that tests use in process too.
//! * `babel-quality` ([`quality`]) scores voice quality with PESQ through
//!   the real server, two clients and the proxy, and measures latency.
//!
//! * `babel-flood` ([`flood`]) plays cheap resource attacks (call-channel
//!   floods, silent connections) against a server child and reports what
//!   they cost it.
//!
//! The pure parts (send schedules, percentiles, frame prefixes, contact
//! pairing) live in [`schedule`], [`stats`], [`net`] and [`setup`] and are
//! unit-tested. Every loop here is bounded in count and time.

pub mod bench;
pub mod ceiling;
pub mod child;
pub mod fault;
pub mod flood;
pub mod net;
pub mod netsim;
pub mod quality;
pub mod relay_bench;
pub mod report;
pub mod schedule;
pub mod setup;
pub mod soak;
pub mod stats;
pub mod turn_bench;
pub mod udp_forward;
pub mod udp_load;

/// Raises the soft file-descriptor limit as far as the hard limit allows and
/// answers the limit now in force.
pub fn raise_fd_limit() -> std::io::Result<u64> {
    rlimit::increase_nofile_limit(u64::MAX)
}

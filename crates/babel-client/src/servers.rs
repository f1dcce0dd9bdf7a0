//! A list of servers: the nodes of one cluster, tried in turn.
//!
//! Written `a:7447,b:7447,tls://c:7448` (the `--server` flag, the
//! `BABEL_SERVER` variable and the GUI's server field all take it): each
//! entry is a [`ServerAddr`], plain or `tls://`, so one list may mix them.
//! A single address is a list of one, so every place that took one address
//! takes a list unchanged.
//!
//! Which node is tried first is not decided here: [`crate::Endpoint`]
//! remembers the node that last worked and starts from it.

use std::fmt;
use std::str::FromStr;

use crate::tls::{BadAddr, ServerAddr};

/// One or more server addresses, in the order they are tried (duplicates
/// removed, never empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerList(Vec<ServerAddr>);

impl ServerList {
    /// A list of one.
    pub fn one(addr: ServerAddr) -> ServerList {
        ServerList(vec![addr])
    }

    /// The addresses, in order.
    pub fn addrs(&self) -> &[ServerAddr] {
        &self.0
    }

    /// How many there are (at least one).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always `false`: a list has at least one address.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The address at `i` (wrapping around).
    pub fn get(&self, i: usize) -> &ServerAddr {
        &self.0[i % self.0.len()]
    }
}

impl FromStr for ServerList {
    type Err = BadAddr;

    /// Reads `addr[,addr…]`; spaces around the commas are allowed, an empty
    /// entry is not.
    fn from_str(s: &str) -> Result<ServerList, BadAddr> {
        // The whole text is named for an empty entry; a bad one names itself.
        let mut list: Vec<ServerAddr> = Vec::new();
        for entry in s.split(',') {
            if entry.trim().is_empty() {
                return Err(BadAddr(s.to_owned()));
            }
            let addr: ServerAddr = entry.parse()?;
            if !list.contains(&addr) {
                list.push(addr);
            }
        }
        Ok(ServerList(list))
    }
}

impl From<ServerAddr> for ServerList {
    fn from(addr: ServerAddr) -> Self {
        ServerList::one(addr)
    }
}

impl fmt::Display for ServerList {
    /// The same form it is read from: `a:7447,tls://b:7448`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, a) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{a}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_read_and_print_back() {
        let l: ServerList = "a:7447,b:7447".parse().unwrap();
        assert_eq!(l.addrs().iter().map(ToString::to_string).collect::<Vec<_>>(), ["a:7447", "b:7447"]);
        assert_eq!(l.to_string(), "a:7447,b:7447");
        // tls:// per entry, default ports per scheme, spaces around commas.
        let m: ServerList = " tls://a , b:1,[::1]:9 ,tls://[::2]".parse().unwrap();
        assert_eq!(m.to_string(), "tls://a:7448,b:1,[::1]:9,tls://[::2]:7448");
        assert!(m.get(0).tls && !m.get(1).tls && m.get(3).tls);
        assert_eq!(m.get(5), m.get(1), "indexes wrap around");
        // One address is a list of one; a repeated one is kept once.
        assert_eq!("h:1".parse::<ServerList>().unwrap(), ServerList::one("h:1".parse().unwrap()));
        assert_eq!("h:1,h:2,h:1".parse::<ServerList>().unwrap().to_string(), "h:1,h:2");
        assert_eq!("h:1,tls://h:1".parse::<ServerList>().unwrap().len(), 2, "plain and TLS are two entries");
    }

    #[test]
    fn bad_lists_are_refused_whole() {
        for bad in ["", ",", "a:1,", ",a:1", "a:1,,b:2", "a:1,b:port", "a:1,http://b:2", "a:1;b:2"] {
            assert!(bad.parse::<ServerList>().is_err(), "{bad:?}");
        }
    }
}

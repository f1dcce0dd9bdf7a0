//! One node or three (issue #18 item 3): a scenario written once, run on
//! one node on SQLite and on a cluster of three nodes on PostgreSQL and
//! NATS (the engines of [`super::cluster`]), where the test spreads its
//! users over the nodes by [`Nodes::addr`].

use std::net::SocketAddr;

use babel_server::RunningServer;

use super::cluster::World;

/// Where a test's users live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topology {
    /// One node on SQLite, alone (the embedded default).
    OneNode,
    /// Three nodes of one cluster on PostgreSQL and NATS.
    ThreeNodes,
}

/// Makes two tests of each scenario `async fn name(t: Topology)` in this
/// file: `one_node::name` and `three_nodes::name`.
macro_rules! in_both_topologies {
    ($($name:ident),* $(,)?) => {
        mod one_node {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name($crate::common::topology::Topology::OneNode).await
                }
            )*
        }
        mod three_nodes {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name($crate::common::topology::Topology::ThreeNodes).await
                }
            )*
        }
    };
}

/// A test's server: one node, or the three nodes of a cluster.
pub struct Nodes {
    pub topology: Topology,
    nodes: Vec<RunningServer>,
    _world: Option<World>,
    _dir: Option<tempfile::TempDir>,
}

impl Nodes {
    pub async fn start(topology: Topology) -> Nodes {
        match topology {
            Topology::OneNode => {
                let (server, dir) = super::start().await;
                Nodes { topology, nodes: vec![server], _world: None, _dir: Some(dir) }
            }
            Topology::ThreeNodes => {
                let world = World::new();
                // The first alone (it makes the schema's tables), then the others.
                let first = world.node("n1").await;
                let (second, third) = tokio::join!(world.node("n2"), world.node("n3"));
                Nodes { topology, nodes: vec![first, second, third], _world: Some(world), _dir: None }
            }
        }
    }

    /// The address of node `i`, counted round: on one node always its own,
    /// on three, `0`, `1` and `2` are three different nodes.
    pub fn addr(&self, i: usize) -> SocketAddr {
        self.nodes[i % self.nodes.len()].addr()
    }

    pub async fn shutdown(self) {
        for node in self.nodes {
            node.shutdown().await;
        }
    }
}

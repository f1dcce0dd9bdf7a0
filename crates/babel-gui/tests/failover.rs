//! The window given a cluster's nodes in its server field (`a,b`): it
//! signs in on the first, keeps the whole list, and when that node stops
//! says so and comes back through the other by itself. Two real servers
//! on one PostgreSQL schema.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;

use babel_gui::settings::Home;
use babel_server::store::pg::scratch_for_tests;
use common::*;

#[test]
fn a_two_node_server_field_signs_in_and_moves_to_the_other_node() {
    let rt = runtime();
    let schema = scratch_for_tests().unwrap_or_else(|e| panic!("{e}"));
    let config = babel_server::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        db: PathBuf::from(schema.url()),
        password: babel_server::auth::PasswordCost { memory_kib: 256, iterations: 1 },
        ..babel_server::Config::default()
    };
    let a = rt.block_on(babel_server::RunningServer::start(&config)).unwrap();
    let b = rt.block_on(babel_server::RunningServer::start(&config)).unwrap();
    let list = format!("{},{}", a.addr(), b.addr());
    // Ben is on the second node and stays there.
    let mut ben = rt.block_on(account(&b.addr().to_string(), "ben@test.babel", "Ben"));
    let mut ann = rt.block_on(account(&list, "ann@test.babel", "Ann"));
    rt.block_on(async {
        ben.add_contact("ann@test.babel").await.unwrap();
        ann.accept_contact(ben.user_id().unwrap()).await.unwrap();
    });
    drop(ann);
    let _ben_events = rt.block_on(ben.events()).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let mut h = harness(app(dir.path(), &list));
    sign_in(&mut h, "ann@test.babel", PASSWORD);
    // (Online or not: without the NATS bus the first node does not know
    // who is on the second.)
    wait_for(&mut h, "ben@test.babel");
    let home = Home::new(Some(dir.path().to_owned())).unwrap();
    assert_eq!(home.load_session().unwrap().expect("a saved session").server, list, "the whole list is kept");

    // The first node stops: the window is back through the second at once
    // (and says so), where Ben is seen online and sees Ann online.
    rt.block_on(a.shutdown());
    wait_for(&mut h, "Reconnected to the server");
    wait_gone(&mut h, "Connection lost");
    wait_for(&mut h, "online · ben@test.babel");
    let ann_id = h.state().model.me.as_ref().map(|u| u.id).expect("signed in");
    let seen = rt.block_on(ben.contacts()).unwrap();
    assert_eq!(seen.iter().find(|e| e.user.id == ann_id).unwrap().status, babel_proto::Presence::Online);
    drop(h);
    rt.block_on(b.shutdown());
}

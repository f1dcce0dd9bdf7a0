//! `babel whoami` counts contacts who chose `away` or `dnd` as online (they
//! are connected; the status only says how reachable they are).
#![allow(clippy::unwrap_used)]

mod common;

use babel_proto::ChosenStatus;
use common::blocking;
use serde_json::Value;

fn whoami_json(server: String, home: std::path::PathBuf) -> Value {
    let mut cmd = common::babel(&server, &home);
    let out = cmd.args(["--json", "whoami"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contacts_away_or_dnd_count_as_online() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::server(dir.path()).await;
    let addr = server.addr().to_string();
    let home = dir.path().join("ann");
    let mut ann = babel_client::Client::connect(addr.clone()).await.unwrap();
    ann.create("ann@example.org", "password123", None).await.unwrap();
    let (a, h) = (addr.clone(), home.clone());
    let out = blocking(move || {
        let mut cmd = common::babel(&a, &h);
        cmd.args(["login", "ann@example.org"]);
        let mut child = cmd.spawn().unwrap();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), b"password123\n").unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    // Ben and Cy stay connected (their clients live), away and dnd.
    let mut friends = Vec::new();
    for (email, status) in [("ben@example.org", ChosenStatus::Away), ("cy@example.org", ChosenStatus::Dnd)] {
        let mut c = babel_client::Client::connect(addr.clone()).await.unwrap();
        c.create(email, "password123", None).await.unwrap();
        ann.add_contact(email).await.unwrap();
        c.accept_contact(ann.user_id().unwrap()).await.unwrap();
        c.set_status(status).await.unwrap();
        friends.push(c);
    }
    let v = blocking(move || whoami_json(addr, home)).await.unwrap();
    assert_eq!((v["contacts"].as_u64(), v["contacts_online"].as_u64()), (Some(2), Some(2)), "{v}");
    drop(friends);
}

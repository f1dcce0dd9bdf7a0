//! The real window (egui, through egui_kittest's AccessKit tree) against a
//! real server on loopback, with synthetic audio: signing in and its
//! errors, contacts, calls both ways, settings. Waits are generous and
//! poll for what a person would see; nothing asserts on timing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use babel_call::setup::Prepared;
use babel_client::Event;
use babel_gui::App;
use babel_gui::demo::Scene;
use babel_gui::demo::{LocalServer, answering_machine};
use babel_gui::launch::Launch;
use babel_gui::model::{CallPhase, NoticeKind, Phase};
use babel_gui::settings::{Home, SavedSession, Settings};
use babel_proto::{EndReason, Secret, ServerEvent, SessionInfo, UserId};
use egui_kittest::Harness;
use egui_kittest::kittest::{NodeT, Queryable};

mod common;

use common::*;

#[test]
fn sign_in_errors_are_said_in_words_and_the_session_is_remembered() {
    let rt = runtime();
    let local = rt.block_on(LocalServer::start(true)).unwrap();
    let _ann = rt.block_on(account(&local.addr, "ann@test.babel", "Ann"));
    let dir = tempfile::tempdir().unwrap();

    // A server nobody listens on.
    let mut h = harness(app(dir.path(), "127.0.0.1:1"));
    sign_in(&mut h, "ann@test.babel", PASSWORD);
    wait_for(&mut h, "Cannot reach the server at 127.0.0.1:1");
    drop(h);

    let mut h = harness(app(dir.path(), &local.addr));
    // The form sits under the centred title: its fields too (the labels
    // on their left, about 70 px).
    h.run_steps(3);
    let field = h.get_by_label("Email").rect();
    let middle = 1100.0 / 2.0;
    assert!((field.center().x - 35.0 - middle).abs() < 40.0, "the form is not centred: field {field:?}");
    // Wrong password.
    sign_in(&mut h, "ann@test.babel", "not-the-password");
    wait_for(&mut h, "Wrong email or password.");
    // An email that is taken.
    click(&mut h, "New here? Create an account");
    type_into(&mut h, "Name", "Another Ann");
    type_into(&mut h, "Password", "x");
    click(&mut h, "Create account");
    wait_for(&mut h, "already exists");
    assert_eq!(h.state().model.phase, Phase::SignedOut);
    // The right password (the form kept the email; the password is retyped).
    click(&mut h, "I have an account: sign in");
    h.state_mut().model.form.password.clear();
    type_into(&mut h, "Password", PASSWORD);
    click(&mut h, "Sign in");
    wait_for(&mut h, "Contacts");
    wait_for(&mut h, "ann@test.babel");
    drop(h);

    // The next start takes up the saved session: no password asked.
    let home = Home::new(Some(dir.path().to_owned())).unwrap();
    let saved = home.load_session().unwrap().expect("a saved session");
    assert_eq!(saved.server, local.addr);
    assert_eq!(home.load_settings().unwrap().email, "ann@test.babel");
    let mut a = app(dir.path(), "");
    let first = a.model.resume(saved);
    a.send(first);
    let mut h = harness(a);
    wait_for(&mut h, "Sign out");
    // Signing out forgets it.
    click(&mut h, "Sign out");
    wait_for(&mut h, "Sign in");
    let deadline = Instant::now() + TIMEOUT;
    while home.load_session().unwrap().is_some() {
        assert!(Instant::now() < deadline, "the session was not forgotten");
        std::thread::sleep(Duration::from_millis(40));
    }
}

#[test]
fn register_add_accept_call_hang_up_and_remove() {
    let rt = runtime();
    let local = rt.block_on(LocalServer::start(true)).unwrap();
    let mut ben = rt.block_on(account(&local.addr, "ben@test.babel", "Ben"));
    let mut cleo = rt.block_on(account(&local.addr, "cleo@test.babel", "Cleo"));
    let dir = tempfile::tempdir().unwrap();
    let mut h = harness(app(dir.path(), &local.addr));

    // Register Ann through the window.
    click(&mut h, "New here? Create an account");
    type_into(&mut h, "Name", "Ann");
    sign_in_register(&mut h, "ann@test.babel");
    wait_for(&mut h, "No contacts yet");
    let ann_id = h.state().model.me.as_ref().unwrap().id;

    // A mistyped address: the error is said and the box keeps the text
    // to correct.
    type_into(&mut h, "Add by email", "bne@test.babel");
    click(&mut h, "Add");
    wait_until(&mut h, "the refusal said", |m| m.notices.iter().any(|n| n.kind == NoticeKind::Error));
    assert_eq!(h.get_by_label("Add by email").value().as_deref(), Some("bne@test.babel"));
    h.state_mut().model.add_email.clear();

    // Ann adds Ben; Ben accepts (and answers calls from then on). Her
    // request can be withdrawn while it waits, not "removed".
    type_into(&mut h, "Add by email", "ben@test.babel");
    click(&mut h, "Add");
    wait_for(&mut h, "Contact request sent to ben@test.babel.");
    wait_for(&mut h, "request sent");
    assert_eq!(h.get_by_label("Add by email").value().as_deref(), Some(""), "sent: the box is cleared");
    wait_for(&mut h, "Cancel request to Ben");
    assert!(h.query_by_label("Remove Ben").is_none());
    rt.block_on(async {
        ben.accept_contact(ann_id).await.unwrap();
    });
    rt.spawn(answering_machine(ben));

    // Cleo asks Ann; Ann accepts in the window; the request and its notice go.
    rt.block_on(cleo.add_contact("ann@test.babel")).unwrap();
    let cleo_events = rt.block_on(cleo.events()).unwrap();
    wait_for(&mut h, "Accept Cleo");
    wait_for(&mut h, "Cleo <cleo@test.babel> wants to add you");
    click(&mut h, "Accept Cleo");
    wait_for(&mut h, "Call Cleo");
    wait_gone(&mut h, "Accept Cleo");
    wait_gone(&mut h, "wants to add you");

    // A call to Ben: he answers, voice flows, the code and figures show.
    wait_until(&mut h, "Ben online", |m| {
        m.contacts.iter().any(|c| c.user.name == "Ben" && c.presence == babel_proto::Presence::Online)
    });
    click(&mut h, "Call Ben");
    wait_for(&mut h, "Security code:");
    wait_for(&mut h, "Hang up");
    wait_until(&mut h, "voice both ways", |m| {
        m.call.as_ref().is_some_and(|c| c.phase == CallPhase::Active && !c.stats.sas.is_empty() && c.history.len() > 4)
    });
    {
        let call = h.state().model.call.clone().unwrap();
        assert_eq!(call.participants.len(), 1);
        assert_eq!(call.participants[0].name, "Ben");
        assert_eq!(call.stats.sas.chars().filter(char::is_ascii_digit).count(), 6);
    }
    click(&mut h, "Mute");
    wait_for(&mut h, "Unmute");
    click(&mut h, "Hang up");
    wait_for(&mut h, "Call with Ben ended: you hung up");

    // Removing Cleo asks first.
    click(&mut h, "Remove Cleo");
    wait_for(&mut h, "Remove contact");
    click(&mut h, "Cancel");
    wait_gone(&mut h, "Remove contact");
    click(&mut h, "Remove Cleo");
    click(&mut h, "Remove");
    wait_gone(&mut h, "Call Cleo");
    drop(cleo_events);
}

#[test]
fn incoming_calls_ring_and_are_answered_or_declined() {
    let rt = runtime();
    let local = rt.block_on(LocalServer::start(true)).unwrap();
    let mut ben = rt.block_on(account(&local.addr, "ben@test.babel", "Ben"));
    let mut ann = rt.block_on(account(&local.addr, "ann@test.babel", "Ann"));
    rt.block_on(async {
        ben.add_contact("ann@test.babel").await.unwrap();
        ann.accept_contact(ben.user_id().unwrap()).await.unwrap();
    });
    let ann_id = ann.user_id().unwrap();
    drop(ann);
    let mut ben_events = rt.block_on(ben.events()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut h = harness(app(dir.path(), &local.addr));
    sign_in(&mut h, "ann@test.babel", PASSWORD);
    wait_for(&mut h, "Call Ben");
    // Wait until Ann is online for Ben (her event stream is open).
    rt.block_on(async {
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            let online = ben
                .contacts()
                .await
                .unwrap()
                .iter()
                .any(|c| c.user.id == ann_id && c.status == babel_proto::Presence::Online);
            if online {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "Ann never came online");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });

    // Ben calls; Ann declines.
    let prepared = rt.block_on(Prepared::new(&local.addr)).unwrap();
    let started = rt.block_on(ben.call(ann_id, prepared.call_media())).unwrap();
    wait_for(&mut h, "Ben is calling");
    // It cannot be missed: a modal over the dimmed window, which takes no
    // click until the call is answered or declined.
    click(&mut h, "Remove Ben");
    assert_eq!(h.state().model.confirm_remove, None, "the window behind a ringing call took a click");
    // And it stands beside the contact list, not over it.
    let (accept, list) = (h.get_by_label("Accept").rect(), h.get_by_label("Remove Ben").rect());
    assert!(accept.left() > list.right(), "the ringing call covers the contact list: {accept:?} {list:?}");
    click(&mut h, "Decline");
    wait_gone(&mut h, "Ben is calling");
    rt.block_on(async {
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            match tokio::time::timeout_at(deadline, ben_events.next()).await.expect("no end of the declined call") {
                Some(Ok(Event::Server(ServerEvent::CallEnded(c, r)))) if c == started.call_id => {
                    assert_eq!(r, EndReason::Declined);
                    break;
                }
                Some(_) => {}
                None => panic!("Ben's events ended"),
            }
        }
    });

    // Ben calls again; Ann accepts; Ben hangs up.
    let prepared = rt.block_on(Prepared::new(&local.addr)).unwrap();
    let mut agreement = babel_proto::agree::CallerAgreement::new(ben.user_id().unwrap(), &prepared.keys);
    let started = rt.block_on(ben.call(ann_id, prepared.call_media())).unwrap();
    wait_for(&mut h, "Ben is calling");
    click(&mut h, "Accept");
    // Ann's answer brings her key; Ben reveals his, and her voice starts.
    rt.block_on(async {
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            match tokio::time::timeout_at(deadline, ben_events.next()).await.expect("no answer") {
                Some(Ok(Event::Server(ServerEvent::CallAccepted(j)))) if j.call_id == started.call_id => {
                    agreement.on_accepted(started.call_id, j.peer.user.id, j.peer.media.key.as_deref()).unwrap();
                    break;
                }
                Some(_) => {}
                None => panic!("Ben's events ended"),
            }
        }
        ben.call_key(started.call_id, agreement.reveal().unwrap()).await.unwrap();
    });
    wait_for(&mut h, "Security code:");
    wait_until(&mut h, "the call on", |m| m.call.as_ref().is_some_and(|c| c.phase == CallPhase::Active));
    rt.block_on(ben.hangup(started.call_id)).unwrap();
    wait_for(&mut h, "Call with Ben ended: Ben hung up");

    // Ben calls once more and reveals a key other than the one he committed
    // to: Ann's side ends the call and says why; no voice starts.
    let prepared = rt.block_on(Prepared::new(&local.addr)).unwrap();
    let started = rt.block_on(ben.call(ann_id, prepared.call_media())).unwrap();
    wait_for(&mut h, "Ben is calling");
    click(&mut h, "Accept");
    rt.block_on(async {
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            match tokio::time::timeout_at(deadline, ben_events.next()).await.expect("no answer") {
                Some(Ok(Event::Server(ServerEvent::CallAccepted(j)))) if j.call_id == started.call_id => break,
                Some(_) => {}
                None => panic!("Ben's events ended"),
            }
        }
        let other = babel_proto::keys::CallKeys::generate().unwrap();
        ben.call_key(started.call_id, other.public_b64()).await.unwrap();
        loop {
            match tokio::time::timeout_at(deadline, ben_events.next()).await.expect("Ann did not hang up") {
                Some(Ok(Event::Server(ServerEvent::CallEnded(c, r)))) if c == started.call_id => {
                    assert_eq!(r, EndReason::Hangup);
                    break;
                }
                Some(_) => {}
                None => panic!("Ben's events ended"),
            }
        }
    });
    wait_for(&mut h, "does not match its commitment");
    assert!(h.state().model.call.is_none(), "no call goes on");
}

#[test]
fn settings_are_saved_between_runs() {
    let rt = runtime();
    let local = rt.block_on(LocalServer::start(true)).unwrap();
    let _ann = rt.block_on(account(&local.addr, "ann@test.babel", "Ann"));
    let dir = tempfile::tempdir().unwrap();
    let mut h = harness(app(dir.path(), &local.addr));
    sign_in(&mut h, "ann@test.babel", PASSWORD);
    wait_for(&mut h, "Sign out");
    click(&mut h, "Settings");
    wait_for(&mut h, "Check microphone");
    click(&mut h, "Noise suppression");
    click(&mut h, "Echo cancellation");
    click(&mut h, "10 ms (lower latency)");
    click(&mut h, "Check microphone");
    wait_until(&mut h, "a microphone level", |m| m.mic_level.is_some_and(|l| l > -60.0));
    click(&mut h, "Stop check");
    click(&mut h, "Play test tone");
    wait_gone(&mut h, "Stop check");
    click(&mut h, "Save");
    wait_for(&mut h, "Settings saved.");
    let s = Home::new(Some(dir.path().to_owned())).unwrap().load_settings().unwrap();
    assert!(!s.noise_suppression);
    assert!(!s.echo_cancellation);
    assert!(s.auto_gain);
    assert_eq!(s.frame_ms, 10);
    assert_eq!(s.server, local.addr);
}

#[test]
fn group_calls_show_who_is_in_and_who_speaks() {
    let rt = runtime();
    let local = rt.block_on(LocalServer::start(true)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut h = harness(app(dir.path(), &local.addr));
    click(&mut h, "New here? Create an account");
    type_into(&mut h, "Name", "Ann");
    sign_in_register(&mut h, "ann@test.babel");
    wait_for(&mut h, "No contacts yet");
    // Ben and Cleo are Ann's contacts and answer every call.
    for (email, name) in [("ben@test.babel", "Ben"), ("cleo@test.babel", "Cleo")] {
        let mut c = rt.block_on(account(&local.addr, email, name));
        rt.block_on(async {
            c.add_contact("ann@test.babel").await.unwrap();
        });
        wait_for(&mut h, &format!("Accept {name}"));
        click(&mut h, &format!("Accept {name}"));
        rt.spawn(answering_machine(c));
    }
    wait_until(&mut h, "both online", |m| {
        m.contacts.iter().filter(|c| c.presence == babel_proto::Presence::Online).count() == 2
    });
    click(&mut h, "Call Ben");
    wait_until(&mut h, "the call on", |m| m.call.as_ref().is_some_and(|c| c.phase == CallPhase::Active));
    click(&mut h, "Invite…");
    wait_for(&mut h, "Invite Cleo");
    click(&mut h, "Invite Cleo");
    wait_for(&mut h, "Ben, Cleo");
    // Both talk (a synthesized voice): each shows as speaking at some point.
    wait_until(&mut h, "Ben and Cleo heard", |m| {
        m.call.as_ref().is_some_and(|c| c.participants.len() == 2 && c.participants.iter().all(|p| p.speaking()))
    });
    wait_for(&mut h, "speaking");
    click(&mut h, "Hang up");
    wait_for(&mut h, "Call with Ben, Cleo ended: you hung up");
}

#[test]
fn requests_are_declined_and_the_list_is_searched() {
    let rt = runtime();
    let local = rt.block_on(LocalServer::start(true)).unwrap();
    let mut ann = rt.block_on(account(&local.addr, "ann@test.babel", "Ann"));
    let mut ben = rt.block_on(account(&local.addr, "ben@test.babel", "Ben"));
    let mut cleo = rt.block_on(account(&local.addr, "cleo@test.babel", "Cleo"));
    let mut gus = rt.block_on(account(&local.addr, "gus@test.babel", "Gus"));
    rt.block_on(async {
        for c in [&mut ben, &mut cleo] {
            c.add_contact("ann@test.babel").await.unwrap();
            ann.accept_contact(c.user_id().unwrap()).await.unwrap();
        }
        gus.add_contact("ann@test.babel").await.unwrap();
    });
    drop(ann);
    let dir = tempfile::tempdir().unwrap();
    let mut h = harness(app(dir.path(), &local.addr));
    sign_in(&mut h, "ann@test.babel", PASSWORD);
    wait_for(&mut h, "Decline Gus");
    click(&mut h, "Decline Gus");
    wait_gone(&mut h, "Accept Gus");
    // The row goes as the click is made; the server's answer follows.
    let declined = rt.block_on(async {
        for _ in 0..100 {
            if gus.contacts().await.unwrap().is_empty() {
                return true;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        false
    });
    assert!(declined, "Gus is not Ann's contact");
    wait_for(&mut h, "Remove Ben");
    wait_for(&mut h, "Remove Cleo");
    type_into(&mut h, "Search", "CLE");
    wait_gone(&mut h, "Remove Ben");
    wait_for(&mut h, "Remove Cleo");
    type_into(&mut h, "Search", "zzz");
    wait_for(&mut h, "Nobody matches the search.");
}

#[test]
fn signs_in_over_tls_and_refuses_a_changed_certificate() {
    let rt = runtime();
    let db = tempfile::tempdir().unwrap();
    let config = babel_server::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        tls_listen: Some("127.0.0.1:0".parse().unwrap()),
        db: db.path().join("babel.db"),
        password: babel_server::auth::PasswordCost { memory_kib: 256, iterations: 1 },
        durability: babel_server::store::sqlite::Durability::Normal,
        ..babel_server::Config::default()
    };
    let server = rt.block_on(babel_server::RunningServer::start(&config)).unwrap();
    let tls = format!("tls://{}", server.tls_addr().unwrap());
    let fp = server.tls().unwrap().fingerprint;
    let _ann = rt.block_on(account(&server.addr().to_string(), "tia@test.babel", "Tia"));
    let dir = tempfile::tempdir().unwrap();

    // First use: trusted and recorded in the home folder.
    let mut h = harness(app(dir.path(), &tls));
    sign_in(&mut h, "tia@test.babel", PASSWORD);
    wait_for(&mut h, "Sign out");
    let known = std::fs::read_to_string(dir.path().join("known_servers")).unwrap();
    assert!(known.contains(&fp.to_string()), "{known}");
    drop(h);

    // The server's certificate "changes": refused, and said so.
    let other = tempfile::tempdir().unwrap();
    let line = format!("{} {}\n", server.tls_addr().unwrap(), babel_proto::Fingerprint([7; 32]));
    std::fs::write(other.path().join("known_servers"), line).unwrap();
    let mut h = harness(app(other.path(), &tls));
    sign_in(&mut h, "tia@test.babel", PASSWORD);
    wait_for(&mut h, "certificate changed");
    assert_eq!(h.state().model.phase, Phase::SignedOut);
}

#[test]
fn a_pending_request_is_withdrawn() {
    let rt = runtime();
    let local = rt.block_on(LocalServer::start(true)).unwrap();
    let _ann = rt.block_on(account(&local.addr, "ann@test.babel", "Ann"));
    let mut dan = rt.block_on(account(&local.addr, "dan@test.babel", "Dan"));
    let dir = tempfile::tempdir().unwrap();
    let mut h = harness(app(dir.path(), &local.addr));
    sign_in(&mut h, "ann@test.babel", PASSWORD);
    wait_for(&mut h, "No contacts yet");
    type_into(&mut h, "Add by email", "dan@test.babel");
    click(&mut h, "Add");
    wait_for(&mut h, "Cancel request to Dan");
    click(&mut h, "Cancel request to Dan");
    wait_gone(&mut h, "Cancel request to Dan");
    let withdrawn = rt.block_on(async {
        for _ in 0..100 {
            if dan.contact_requests().await.unwrap().is_empty() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    });
    assert!(withdrawn, "Dan still has Ann's request");
}

#[test]
fn a_lost_server_is_shown_and_the_window_recovers() {
    let rt = runtime();
    let db = tempfile::tempdir().unwrap();
    let mut config = babel_server::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        db: db.path().join("babel.db"),
        password: babel_server::auth::PasswordCost { memory_kib: 256, iterations: 1 },
        durability: babel_server::store::sqlite::Durability::Normal,
        ..babel_server::Config::default()
    };
    let server = rt.block_on(babel_server::RunningServer::start(&config)).unwrap();
    let addr = server.addr();
    let mut ben = rt.block_on(account(&addr.to_string(), "ben@test.babel", "Ben"));
    let mut ann = rt.block_on(account(&addr.to_string(), "ann@test.babel", "Ann"));
    rt.block_on(async {
        ben.add_contact("ann@test.babel").await.unwrap();
        ann.accept_contact(ben.user_id().unwrap()).await.unwrap();
    });
    drop(ann);
    // Ben is online through his event stream, which reconnects by itself.
    let _ben_events = rt.block_on(ben.events()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut h = harness(app(dir.path(), &addr.to_string()));
    sign_in(&mut h, "ann@test.babel", PASSWORD);
    wait_for(&mut h, "online · ben@test.babel");
    let enabled = |h: &Harness<'_, App>, label: &str| !h.get_by_label(label).accesskit_node().is_disabled();
    assert!(enabled(&h, "Call Ben") && enabled(&h, "Add"));

    // The server stops: said at once, presence unknown, calling and adding off.
    rt.block_on(server.shutdown());
    let stopped = Instant::now();
    wait_for(&mut h, "Connection lost, reconnecting");
    eprintln!("the banner showed {:?} after the server stopped", stopped.elapsed());
    wait_for(&mut h, "status unknown · ben@test.babel");
    assert!(h.query_by_label_contains("online · ben@test.babel").is_none());
    assert!(!enabled(&h, "Call Ben"), "calling with no server");
    assert!(!enabled(&h, "Add"), "adding with no server");

    // The same server comes back on the same port: the window recovers.
    config.listen = addr;
    config.udp_listen = Some("127.0.0.1:0".parse().unwrap());
    let server = rt.block_on(babel_server::RunningServer::start(&config)).unwrap();
    wait_gone(&mut h, "Connection lost");
    wait_for(&mut h, "online · ben@test.babel");
    wait_until(&mut h, "Call Ben enabled", |_| true);
    assert!(enabled(&h, "Call Ben") && enabled(&h, "Add"));
    drop(h);
    rt.block_on(server.shutdown());
}

#[test]
fn the_demo_never_touches_the_real_home() {
    let real = tempfile::tempdir().unwrap();
    let home = Home::new(Some(real.path().to_owned())).unwrap();
    let mine = Settings { server: "babel.example:7447".into(), email: "me@example.org".into(), ..Settings::default() };
    home.save_settings(&mine).unwrap();
    let session = SavedSession {
        server: "babel.example:7447".into(),
        info: SessionInfo {
            id: UserId(42),
            name: "Me".into(),
            email: "me@example.org".into(),
            token: Secret::new("my-real-token"),
        },
    };
    home.save_session(&session).unwrap();
    let files = || {
        ["settings.toml", "session.json"].map(|f| std::fs::read(real.path().join(f)).expect("the file is still there"))
    };
    let before = files();

    // `babel-gui --home REAL --demo-call`, as the program starts it.
    let launch = Launch {
        home: Some(real.path().to_owned()),
        synthetic_audio: true,
        demo: Some(Scene::Call),
        ..Launch::default()
    };
    let (app, world) = babel_gui::launch::launch(launch).unwrap();
    let world = world.expect("a demo world");
    let mut h = harness(app);
    wait_for(&mut h, "ann@demo.babel");
    wait_for(&mut h, "Sign out");
    // The demo signed in and saved its session: in a home of its own.
    let demo_home = world.home.path().to_owned();
    assert_ne!(demo_home, real.path());
    let saved = Home::new(Some(demo_home)).unwrap().load_session().unwrap().expect("the demo's session");
    assert_eq!(saved.info.email, "ann@demo.babel");
    drop(h);
    assert_eq!(files(), before, "the demo changed the real settings or session");
    drop(world);
}

#[test]
fn the_demos_of_the_screenshots_show_what_they_promise() {
    for (scene, shown) in [
        (Scene::Incoming, "Ben is calling"),
        (Scene::LostConnection, "Connection lost, reconnecting"),
        (Scene::Conversation, "14:00 it is."),
        (Scene::Conversation, "Messages with Cleo, 2 unread"),
    ] {
        let launch = Launch { synthetic_audio: true, demo: Some(scene), ..Launch::default() };
        let (app, world) = babel_gui::launch::launch(launch).unwrap();
        let mut h = harness(app);
        wait_for(&mut h, shown);
        drop(h);
        drop(world);
    }
}

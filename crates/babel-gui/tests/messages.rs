//! Issue 17 in the window, against a real server on loopback: messages
//! (live both ways, unread counts, read marks, scroll back), the call
//! history (a missed call, called back), the account page (rename,
//! password, sessions, deleting), the status chooser, blocking, and a
//! session ended from elsewhere. Waits poll for what a person would see.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use babel_call::setup::Prepared;
use babel_client::{Client, Event, EventStream};
use babel_gui::App;
use babel_gui::demo::{LocalServer, answering_machine};
use babel_gui::model::{CallPhase, Phase};
use babel_gui::social::{PAGE, Page as View};
use babel_proto::{ChosenStatus, Page, Presence, ServerEvent, UserId};
use egui_kittest::Harness;
use egui_kittest::kittest::{NodeT, Queryable};

mod common;

use common::*;

/// Ann (at the window) and Ben (a client), contacts.
fn pair(rt: &tokio::runtime::Runtime, local: &LocalServer) -> (Client, Client) {
    let mut ben = rt.block_on(account(&local.addr, "ben@test.babel", "Ben"));
    let mut ann = rt.block_on(account(&local.addr, "ann@test.babel", "Ann"));
    rt.block_on(async {
        ben.add_contact("ann@test.babel").await.unwrap();
        ann.accept_contact(ben.user_id().unwrap()).await.unwrap();
    });
    (ann, ben)
}

/// The next event on `events` that `pick` takes, within the timeout.
fn next_matching<T>(
    rt: &tokio::runtime::Runtime,
    events: &mut EventStream,
    what: &str,
    mut pick: impl FnMut(ServerEvent) -> Option<T>,
) -> T {
    rt.block_on(async {
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            let e = tokio::time::timeout_at(deadline, events.next()).await;
            match e.unwrap_or_else(|_| panic!("no {what} within {TIMEOUT:?}")) {
                Some(Ok(Event::Server(ev))) => {
                    if let Some(t) = pick(ev) {
                        return t;
                    }
                }
                Some(_) => {}
                None => panic!("the events ended before {what}"),
            }
        }
    })
}

/// Waits until Ann's window is online for Ben.
fn wait_online(rt: &tokio::runtime::Runtime, ben: &mut Client, ann: UserId) {
    rt.block_on(async {
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            let list = ben.contacts().await.unwrap();
            if list.iter().any(|c| c.user.id == ann && c.status == Presence::Online) {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "Ann never came online");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
}

fn press_enter(h: &mut Harness<'_, App>) {
    h.key_press(eframe::egui::Key::Enter);
    h.run_steps(3);
}

#[test]
fn messages_wait_for_an_offline_reader_arrive_live_and_are_marked_read() {
    let rt = runtime();
    let local = rt.block_on(LocalServer::start(true)).unwrap();
    let (ann, mut ben) = pair(&rt, &local);
    let ann_id = ann.user_id().unwrap();
    drop(ann);
    // Ann is offline: Ben's messages wait for her.
    rt.block_on(async {
        ben.send_message(ann_id, "hello from Ben", Some("b1")).await.unwrap();
        ben.send_message(ann_id, "are you there?", Some("b2")).await.unwrap();
    });
    let mut ben_events = rt.block_on(ben.events()).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let mut h = harness(app(dir.path(), &local.addr));
    sign_in(&mut h, "ann@test.babel", PASSWORD);
    // The count is on the contact list.
    wait_for(&mut h, "Messages with Ben, 2 unread");
    click(&mut h, "Messages with Ben, 2 unread");
    wait_for(&mut h, "hello from Ben");
    wait_for(&mut h, "are you there?");
    wait_for(&mut h, "Messages with Ben");
    assert!(h.query_by_label_contains("unread").is_none(), "opened: nothing unread");
    // Ben learns she read them.
    next_matching(&rt, &mut ben_events, "Ann's read mark", |e| match e {
        ServerEvent::MessagesRead(r) if r.contact_id == ann_id => Some(()),
        _ => None,
    });

    // Ann writes; Enter sends; Ben gets it live.
    type_into(&mut h, "Message to Ben", "hi Ben!");
    press_enter(&mut h);
    let got = next_matching(&rt, &mut ben_events, "Ann's message", |e| match e {
        ServerEvent::Message(m) if m.message.from == ann_id => Some(m.message),
        _ => None,
    });
    assert_eq!(got.text, "hi Ben!");
    assert_eq!(h.get_by_label("Message to Ben").value().as_deref(), Some(""), "sent: the line is empty");
    wait_for(&mut h, "· sent");
    // Ben reads it: Ann's message shows it.
    rt.block_on(ben.mark_read(ann_id, got.message_id)).unwrap();
    wait_for(&mut h, "· read");

    // Ben writes while the conversation is open: it shows, not as unread.
    rt.block_on(ben.send_message(ann_id, "good to see you", None)).unwrap();
    wait_for(&mut h, "good to see you");
    assert_eq!(h.state().model.unread(ben.user_id().unwrap()), 0);

    // The window loses the focus: a message to the open conversation
    // counts as unread (and goes to the desktop's notifications) until the
    // window has the focus back, when it is marked read.
    h.input_mut().focused = false;
    h.run_steps(2);
    rt.block_on(ben.send_message(ann_id, "while you were away", None)).unwrap();
    wait_for(&mut h, "Messages with Ben, 1 unread");
    wait_for(&mut h, "while you were away");
    h.input_mut().focused = true;
    wait_gone(&mut h, "1 unread");
    let ben_id = ben.user_id().unwrap();
    let newest = h.state().model.chat(ben_id).unwrap().messages.last().map(|m| m.id).unwrap();
    next_matching(&rt, &mut ben_events, "the read mark on focus", |e| match e {
        ServerEvent::MessagesRead(r) if r.contact_id == ann_id && r.message_id.0 == newest => Some(()),
        _ => None,
    });

    // The conversation closed (the call page): a new one counts.
    h.state_mut().model.social.page = View::Home;
    rt.block_on(ben.send_message(ann_id, "one more", None)).unwrap();
    wait_for(&mut h, "Messages with Ben, 1 unread");
}

#[test]
fn scrolling_to_the_top_loads_older_messages() {
    let rt = runtime();
    let local = rt.block_on(LocalServer::start(true)).unwrap();
    let (mut ann, mut ben) = pair(&rt, &local);
    let (ann_id, ben_id) = (ann.user_id().unwrap(), ben.user_id().unwrap());
    // More than a page, from both sides (Ann's from another device).
    let total = PAGE as usize + 6;
    rt.block_on(async {
        for i in 1..=total {
            let text = format!("message number {i}");
            if i % 2 == 0 {
                ann.send_message(ben_id, &text, None).await.unwrap();
            } else {
                ben.send_message(ann_id, &text, None).await.unwrap();
            }
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let mut h = harness(app(dir.path(), &local.addr));
    sign_in(&mut h, "ann@test.babel", PASSWORD);
    wait_for(&mut h, "Messages with Ben, 28 unread");
    click(&mut h, "Messages with Ben, 28 unread");
    wait_for(&mut h, &format!("message number {total}"));
    h.run_steps(5);
    // The newest page only: the first message is not loaded yet.
    let loaded = |h: &Harness<'_, App>| h.state().model.chat(ben_id).map_or(0, |c| c.messages.len());
    assert_eq!(loaded(&h), PAGE as usize, "only the newest page before scrolling");
    assert!(h.query_by_label("message number 1").is_none());
    // Scroll up, as a person does, until the older page came.
    let deadline = Instant::now() + TIMEOUT;
    while loaded(&h) < total {
        // The mouse wheel over the conversation, upwards.
        let over = h.get_by_label("Message to Ben").rect().center() - eframe::egui::vec2(0.0, 120.0);
        h.input_mut().events.push(eframe::egui::Event::PointerMoved(over));
        h.input_mut().events.push(eframe::egui::Event::MouseWheel {
            unit: eframe::egui::MouseWheelUnit::Point,
            delta: eframe::egui::vec2(0.0, 400.0),
            modifiers: eframe::egui::Modifiers::default(),
        });
        h.run_steps(3);
        assert!(Instant::now() < deadline, "scrolling up loaded no older messages: {} of {total}", loaded(&h));
        std::thread::sleep(Duration::from_millis(20));
    }
    wait_for(&mut h, "message number 1");
    wait_for(&mut h, "This is the start of your conversation with Ben.");
    let ids: Vec<i64> = h.state().model.chat(ben_id).unwrap().messages.iter().map(|m| m.id).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "in order, no duplicates: {ids:?}");
    // The page asked for is the one, not every message at once.
    let page = rt.block_on(ann.messages(Some(ben_id), Page::Latest, 100)).unwrap();
    assert_eq!(page.len(), total);
}

#[test]
fn a_missed_call_is_in_the_history_and_called_back() {
    let rt = runtime();
    let local = rt.block_on(LocalServer::start(true)).unwrap();
    let (ann, mut ben) = pair(&rt, &local);
    let ann_id = ann.user_id().unwrap();
    drop(ann);
    let dir = tempfile::tempdir().unwrap();
    let mut h = harness(app(dir.path(), &local.addr));
    sign_in(&mut h, "ann@test.babel", PASSWORD);
    wait_for(&mut h, "Call Ben");
    wait_online(&rt, &mut ben, ann_id);
    // Ben rings and gives up before Ann answers.
    let prepared = rt.block_on(Prepared::new(&local.addr)).unwrap();
    let started = rt.block_on(ben.call(ann_id, prepared.call_media())).unwrap();
    wait_for(&mut h, "Ben is calling");
    rt.block_on(ben.hangup(started.call_id)).unwrap();
    wait_gone(&mut h, "Ben is calling");
    // Ben answers calls from now on.
    rt.spawn(answering_machine(ben));

    click(&mut h, "Call history");
    wait_for(&mut h, "Missed call from Ben");
    wait_until(&mut h, "the history loaded", |m| m.social.history.entries.iter().any(|e| e.missed()));
    click(&mut h, "Call back Ben");
    wait_until(&mut h, "the call back on", |m| m.call.as_ref().is_some_and(|c| c.phase == CallPhase::Active));
    wait_for(&mut h, "Security code:");
    click(&mut h, "Hang up");
    wait_for(&mut h, "Call with Ben ended");
    // The call back is in the history too, as an outgoing call.
    click(&mut h, "Call history");
    wait_for(&mut h, "Outgoing to Ben");
}

#[test]
fn the_account_page_renames_changes_the_password_and_ends_sessions() {
    let rt = runtime();
    let local = rt.block_on(LocalServer::start(true)).unwrap();
    let phone = rt.block_on(account(&local.addr, "ann@test.babel", "Ann"));
    let mut phone_events = rt.block_on(phone.events()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut h = harness(app(dir.path(), &local.addr));
    sign_in(&mut h, "ann@test.babel", PASSWORD);
    wait_for(&mut h, "Sign out");
    click(&mut h, "Account");
    wait_for(&mut h, "This window");
    // Rename.
    h.state_mut().model.social.account.name.clear();
    type_into(&mut h, "Your name", "Annie");
    click(&mut h, "Save name");
    wait_for(&mut h, "Annie <ann@test.babel>");

    // A wrong current password is said on the page, and signs nobody out.
    type_into(&mut h, "Current password", "not-it");
    type_into(&mut h, "New password", "a-new-password");
    type_into(&mut h, "New password again", "a-new-password");
    click(&mut h, "Change password");
    wait_until(&mut h, "the refusal said", |m| m.social.account.error.is_some());
    assert_eq!(h.state().model.phase, Phase::Main);

    // The other session ("From 127.0.0.1") is ended from here.
    wait_for(&mut h, "End session from 127.0.0.1");
    click_contains(&mut h, "End session from 127.0.0.1");
    next_matching(&rt, &mut phone_events, "the phone's session end", |e| match e {
        ServerEvent::SessionEnded(s) => Some(s),
        _ => None,
    });
    wait_gone(&mut h, "End session from");

    // The right password changes it.
    h.state_mut().model.social.account.password.clear();
    type_into(&mut h, "Current password", PASSWORD);
    click(&mut h, "Change password");
    wait_for(&mut h, "Password changed.");
    let relogin = rt.block_on(async {
        let mut c = Client::connect(local.addr.clone()).await.unwrap();
        c.login("ann@test.babel", "a-new-password").await.map(|_| c)
    });
    let mut phone = relogin.expect("the new password works");

    // Changed again elsewhere: this window's session ends, and it says why.
    rt.block_on(phone.change_password("a-new-password", "third-password")).unwrap();
    wait_until(&mut h, "signed out", |m| m.phase == Phase::SignedOut);
    wait_for(&mut h, "Your password was changed on another device");

    // Signing in again (the form kept the email), and deleting the account
    // with its password.
    assert_eq!(h.get_by_label("Email").value().as_deref(), Some("ann@test.babel"));
    type_into(&mut h, "Password", "third-password");
    click(&mut h, "Sign in");
    wait_for(&mut h, "Sign out");
    click(&mut h, "Account");
    wait_for(&mut h, "This window");
    type_into(&mut h, "Password to delete", "third-password");
    click(&mut h, "Delete account");
    wait_for(&mut h, "Delete for good");
    click(&mut h, "Delete for good");
    wait_for(&mut h, "Your account was deleted.");
    assert_eq!(h.state().model.phase, Phase::SignedOut);
    let gone = rt.block_on(async {
        let mut c = Client::connect(local.addr.clone()).await.unwrap();
        c.login("ann@test.babel", "third-password").await
    });
    assert!(gone.is_err(), "the account is gone");
}

#[test]
fn the_status_chooser_away_and_dnd_contacts_and_blocking() {
    let rt = runtime();
    let local = rt.block_on(LocalServer::start(true)).unwrap();
    let (ann, mut ben) = pair(&rt, &local);
    let ann_id = ann.user_id().unwrap();
    drop(ann);
    let dir = tempfile::tempdir().unwrap();
    let mut h = harness(app(dir.path(), &local.addr));
    sign_in(&mut h, "ann@test.babel", PASSWORD);
    wait_for(&mut h, "Call Ben");
    wait_online(&rt, &mut ben, ann_id);

    // Ann chooses "do not disturb": Ben sees it.
    click(&mut h, "My status: Available");
    click(&mut h, "Do not disturb");
    wait_for(&mut h, "My status: Do not disturb");
    rt.block_on(async {
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            let list = ben.contacts().await.unwrap();
            if list.iter().any(|c| c.user.id == ann_id && c.status == Presence::Dnd) {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "Ben never saw Ann's dnd: {list:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    // Ben goes away, then "do not disturb": Ann's list says so.
    // Away people can be called; "do not disturb" ones cannot.
    let enabled = |h: &Harness<'_, App>, label: &str| !h.get_by_label(label).accesskit_node().is_disabled();
    rt.block_on(ben.set_status(ChosenStatus::Away)).unwrap();
    wait_for(&mut h, "away · ben@test.babel");
    assert!(enabled(&h, "Call Ben"));
    rt.block_on(ben.set_status(ChosenStatus::Dnd)).unwrap();
    wait_for(&mut h, "do not disturb · ben@test.babel");
    h.run_steps(2);
    assert!(!enabled(&h, "Call Ben"));

    // Block Ben from his menu: asked first, then he is gone and listed.
    click(&mut h, "More for Ben");
    click(&mut h, "Block Ben");
    wait_for(&mut h, "Confirm block Ben");
    click(&mut h, "Confirm block Ben");
    wait_gone(&mut h, "Call Ben");
    click(&mut h, "Account");
    // (The sessions load beside the blocked list: once both are in, the
    // buttons stay where they are.)
    wait_for(&mut h, "This window");
    wait_for(&mut h, "Unblock Ben");
    click(&mut h, "Unblock Ben");
    wait_for(&mut h, "You have blocked nobody.");
}

#[test]
fn a_refused_message_says_why_and_is_sent_again_with_retry() {
    let rt = runtime();
    let local = rt.block_on(LocalServer::start(true)).unwrap();
    let (ann, mut ben) = pair(&rt, &local);
    let ann_id = ann.user_id().unwrap();
    drop(ann);
    let mut ben_events = rt.block_on(ben.events()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut h = harness(app(dir.path(), &local.addr));
    sign_in(&mut h, "ann@test.babel", PASSWORD);
    wait_for(&mut h, "Messages with Ben");
    click(&mut h, "Messages with Ben");
    wait_for(&mut h, "This is the start of your conversation with Ben.");
    // Ben removes Ann meanwhile: her message is refused, and says why.
    rt.block_on(ben.remove_contact(babel_proto::ContactRef::Id(ann_id))).unwrap();
    let ben_id = ben.user_id().unwrap();
    wait_until(&mut h, "Ben no longer a contact", |m| m.contact(ben_id).is_none());
    type_into(&mut h, "Message to Ben", "still friends?");
    press_enter(&mut h);
    wait_for(&mut h, "not sent:");
    wait_for(&mut h, "Retry: still friends?");
    // Contacts again: Retry sends it (once).
    rt.block_on(ben.add_contact("ann@test.babel")).unwrap();
    wait_for(&mut h, "Accept Ben");
    click(&mut h, "Accept Ben");
    wait_until(&mut h, "Ben a contact again", |m| m.contact(ben_id).is_some());
    click(&mut h, "Retry: still friends?");
    let got = next_matching(&rt, &mut ben_events, "the retried message", |e| match e {
        ServerEvent::Message(m) if m.message.from == ann_id => Some(m.message),
        _ => None,
    });
    assert_eq!(got.text, "still friends?");
    wait_gone(&mut h, "not sent:");
    wait_for(&mut h, "· sent");
}

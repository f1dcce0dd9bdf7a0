//! The key exchange as a client meets it: `/incoming_call`, `/call_accepted`
//! and `/call_key` events with arbitrary data, parsed and fed to the pure
//! state machines of `babel_proto::agree`.
//!
//! Input layout (see `fuzz/gen_corpus.py`): byte 0 picks the event
//! (`b % 6`: `/incoming_call`, `/call_accepted`, `/call_key`,
//! `/participant_joined`, `/call_nonce`, `/participant_left`), the rest is
//! the event's data section.
//!
//! Checks: no panic; a callee accepts a reveal only of the key committed to
//! (alice's, from user 1); a caller accepts one answer only, with a key of
//! 32 bytes; a ringing call without a 32-byte commitment is refused; a
//! group member takes a newcomer only with a commitment, and its code stays
//! six digits whatever nonces and leaves come.
#![no_main]

use babel_proto::agree::{AgreeError, CalleeAgreement, CallerAgreement, GroupAgreement};
use babel_proto::keys::{CallKeys, decode32};
use babel_proto::{CallId, RawRequest, ServerEvent, UserId};
use libfuzzer_sys::fuzz_target;

const EVENTS: [&str; 6] =
    ["/incoming_call", "/call_accepted", "/call_key", "/participant_joined", "/call_nonce", "/participant_left"];

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else { return };
    let name = EVENTS[usize::from(sel) % EVENTS.len()];
    let Ok(ev) = ServerEvent::parse(&RawRequest::new(Vec::new(), name, rest.to_vec())) else { return };
    let alice = CallKeys::from_secret([1; 32]);
    let bob = CallKeys::from_secret([2; 32]);
    let (ann, ben, call) = (UserId(1), UserId(2), CallId(5));
    let mut caller = CallerAgreement::new(ann, &alice);
    match ev {
        ServerEvent::IncomingCall(c) => {
            let commit = c.media.key_commit.as_deref();
            match CalleeAgreement::on_incoming(c.call_id, c.caller.id, commit, ben, &bob) {
                Ok(a) => {
                    assert!(commit.is_some_and(|k| decode32(k).is_ok()));
                    assert_eq!(a.key(), bob.public_b64());
                }
                Err(e) => assert_eq!(e, AgreeError::NoCommitment),
            }
        }
        ServerEvent::CallAccepted(j) => {
            let key = j.peer.media.key.as_deref();
            let first = caller.on_accepted(call, j.peer.user.id, key);
            assert_eq!(first.is_ok(), key.is_some_and(|k| decode32(k).is_ok()));
            assert_eq!(caller.reveal(), Some(alice.public_b64()));
            assert_eq!(caller.on_accepted(call, j.peer.user.id, key), Err(AgreeError::Twice));
        }
        ServerEvent::CallKey(k) => {
            let mut callee = CalleeAgreement::on_incoming(call, ann, Some(&caller.key_commit()), ben, &bob)
                .expect("a real commitment");
            match callee.on_reveal(k.id, &k.key) {
                Ok(agreed) => {
                    assert_eq!(k.id, ann);
                    assert_eq!(decode32(&k.key).ok(), Some(alice.public_bytes()));
                    assert_eq!(agreed.peer_key, alice.public_b64());
                }
                Err(_) => {
                    assert!(k.id != ann || decode32(&k.key).ok() != Some(alice.public_bytes()));
                }
            }
            assert_eq!(callee.on_reveal(k.id, &k.key).unwrap_err(), AgreeError::Twice);
        }
        ServerEvent::ParticipantJoined(j) => {
            let mut group = member_of_two(&mut caller, &bob, call);
            let commit = j.peer.media.key_commit.as_deref();
            match group.on_joining(j.peer.user.id, commit, j.epoch.map_or(1, |e| e.0)) {
                Ok(nonce) => {
                    assert!(commit.is_some_and(|k| decode32(k).is_ok()));
                    assert!(group.is_pending());
                    assert!(!nonce.is_empty());
                }
                Err(e) => assert!(matches!(e, AgreeError::NoCommitment | AgreeError::Twice), "{e:?}"),
            }
        }
        ServerEvent::CallNonce(n) => {
            let mut group = member_of_two(&mut caller, &bob, call);
            let before = group.code().to_owned();
            group.on_nonce(n.id, &n.nonce);
            assert_eq!(group.code(), before, "a nonce alone changes nothing shown");
        }
        ServerEvent::ParticipantLeft(_, id, epoch) => {
            let mut group = member_of_two(&mut caller, &bob, call);
            let code = group.on_left(id, epoch.0).to_owned();
            assert_eq!(code.len(), 7, "{code}");
        }
        _ => {}
    }
});

/// Ann's group state after an honest two-party exchange with Bob.
fn member_of_two(caller: &mut CallerAgreement, bob: &CallKeys, call: CallId) -> GroupAgreement {
    let agreed = caller.on_accepted(call, UserId(2), Some(&bob.public_b64())).expect("bob's key");
    GroupAgreement::two_party(call, UserId(1), UserId(1), UserId(2), &agreed)
}

//! End-to-end keys for a call, agreed between the participants; the server
//! only carries public keys.
//!
//! * Each participant makes an X25519 key pair per call ([`CallKeys`]). The
//!   caller first sends only a commitment to its public key
//!   ([`commitment`], the `key_commit` field of `/call`), the callee answers
//!   with its public key, and only then does the caller reveal its own
//!   (`/call_key`); [`crate::agree`] is that exchange as a state machine.
//! * The code two people read to each other is a hash of the whole
//!   exchange ([`sas_transcript`], [`group_transcript`]) reduced to six
//!   digits ([`code_number`], [`format_code`]): if someone in the middle
//!   swapped keys, the two codes differ, and because the caller was bound
//!   to its key before it saw the callee's, nobody can search for keys that
//!   make them equal.
//! * Each pair of participants derives a [`Pairwise`] secret from their
//!   Diffie-Hellman result and both public keys (HKDF-SHA256).
//! * Each sender encrypts its voice once, under its own [`SenderKey`]. In a
//!   two-party call both sides derive the other's sender key from the
//!   pairwise secret; in a group call a sender's key is random and handed to
//!   each participant sealed under their pairwise secret (as SFrame does).
//!
//! Pure: randomness comes in as bytes or from the OS, no clock, no IO.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::ChaCha20Poly1305;
use chacha20poly1305::aead::KeyInit;
use hkdf::Hkdf;
use sha2::{Digest, Sha256};
use x25519_dalek::{PublicKey, StaticSecret};

use crate::call::CallId;
use crate::types::UserId;

/// Domain separation of the key commitment.
pub const COMMIT_LABEL: &[u8] = b"babel v2 commit";
/// Domain separation of the two-party code's transcript.
pub const SAS_LABEL: &[u8] = b"babel v2 sas";
/// Domain separation of a group call's per-epoch code.
pub const GROUP_LABEL: &[u8] = b"babel v2 group";
/// The shipped code: six decimal digits.
pub const CODE_MODULUS: u32 = 1_000_000;
/// Bytes of a group nonce.
pub const NONCE_LEN: usize = 16;

/// `SHA-256("babel v2 commit" || public key)`: what `key_commit` carries
/// (in base64), binding its sender to a key it has not shown yet.
pub fn commitment(public: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(COMMIT_LABEL);
    h.update(public);
    h.finalize().into()
}

/// A 32-byte value (a public key, a commitment) from its base64 text.
pub fn decode32(b64: &str) -> Result<[u8; 32], KeyError> {
    STANDARD.decode(b64.trim()).ok().and_then(|v| v.try_into().ok()).ok_or(KeyError::BadPublicKey)
}

/// Base64 of 32 bytes, as keys and commitments travel.
pub fn encode32(b: &[u8; 32]) -> String {
    STANDARD.encode(b)
}

/// The transcript hash of a two-party call's key exchange:
///
/// `SHA-256("babel v2 sas" || call_id u64 || caller_id i64 || callee_id i64
///  || key_commit[32] || caller_key[32] || callee_key[32])`, integers
/// big-endian. Every part after the label is fixed-width, so no length
/// prefixes are needed for the encoding to be unambiguous.
pub fn sas_transcript(
    call: CallId,
    caller: UserId,
    callee: UserId,
    commit: &[u8; 32],
    caller_key: &[u8; 32],
    callee_key: &[u8; 32],
) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(SAS_LABEL);
    h.update(call.0.to_be_bytes());
    h.update(caller.0.to_be_bytes());
    h.update(callee.0.to_be_bytes());
    h.update(commit);
    h.update(caller_key);
    h.update(callee_key);
    h.finalize().into()
}

/// One participant of a group epoch: who, their public key, and the nonce
/// they sent for the latest join they answered (empty if none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpochMember {
    /// The user.
    pub id: UserId,
    /// Their public key for this call.
    pub key: [u8; 32],
    /// Their latest nonce (0 or [`NONCE_LEN`] bytes).
    pub nonce: Vec<u8>,
}

/// The transcript hash of a group call's epoch:
///
/// `SHA-256("babel v2 group" || call_id u64 || epoch u32 || count u32 ||
///  for each member, in ascending id order: id i64 || key[32] ||
///  nonce_len u8 || nonce)`, integers big-endian. The list and each nonce
/// are length-prefixed; everything else is fixed-width.
pub fn group_transcript(call: CallId, epoch: u32, members: &[EpochMember]) -> [u8; 32] {
    let mut sorted: Vec<&EpochMember> = members.iter().collect();
    sorted.sort_by_key(|m| m.id);
    let mut h = Sha256::new();
    h.update(GROUP_LABEL);
    h.update(call.0.to_be_bytes());
    h.update(epoch.to_be_bytes());
    h.update((sorted.len() as u32).to_be_bytes());
    for m in sorted {
        h.update(m.id.0.to_be_bytes());
        h.update(m.key);
        // Nonces are made here (16 bytes) or refused when longer than 255.
        h.update([m.nonce.len().min(255) as u8]);
        h.update(&m.nonce[..m.nonce.len().min(255)]);
    }
    h.finalize().into()
}

/// The code's number: the transcript's first four bytes, big-endian,
/// modulo `modulus` ([`CODE_MODULUS`] in every program; tests use smaller
/// ones to count an attacker's wins).
pub fn code_number(transcript: &[u8; 32], modulus: u32) -> u32 {
    u32::from_be_bytes([transcript[0], transcript[1], transcript[2], transcript[3]]) % modulus.max(1)
}

/// The six-digit code as people read it: `123 456`.
pub fn format_code(transcript: &[u8; 32]) -> String {
    let n = code_number(transcript, CODE_MODULUS);
    format!("{:03} {:03}", n / 1000, n % 1000)
}

/// A fresh group nonce.
pub fn fresh_nonce() -> Result<[u8; NONCE_LEN], KeyError> {
    random()
}

/// A key that could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Not 32 bytes of base64.
    #[error("the peer's public key is not 32 bytes of base64")]
    BadPublicKey,
    /// The peer's public key gives an all-zero shared secret (a low-order
    /// point): refused, it would make the "secret" known to anyone.
    #[error("the peer's public key is not acceptable")]
    WeakPublicKey,
    /// The OS random number generator failed.
    #[error("no randomness available")]
    NoRandomness,
}

fn random<const N: usize>() -> Result<[u8; N], KeyError> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|_| KeyError::NoRandomness)?;
    Ok(b)
}

/// My key pair for one call.
pub struct CallKeys {
    secret: StaticSecret,
    public: PublicKey,
}

impl std::fmt::Debug for CallKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallKeys").field("public", &self.public_b64()).finish_non_exhaustive()
    }
}

impl CallKeys {
    /// A fresh key pair from the OS random generator.
    pub fn generate() -> Result<CallKeys, KeyError> {
        Ok(CallKeys::from_secret(random()?))
    }

    /// A key pair from given secret bytes (tests).
    pub fn from_secret(bytes: [u8; 32]) -> CallKeys {
        let secret = StaticSecret::from(bytes);
        let public = PublicKey::from(&secret);
        CallKeys { secret, public }
    }

    /// My public key, as the `key` field carries it.
    pub fn public_b64(&self) -> String {
        STANDARD.encode(self.public.as_bytes())
    }

    /// My public key's bytes.
    pub fn public_bytes(&self) -> [u8; 32] {
        *self.public.as_bytes()
    }

    /// The commitment to my public key, as `key_commit` carries it.
    pub fn commit_b64(&self) -> String {
        encode32(&commitment(self.public.as_bytes()))
    }

    /// The secret shared with the owner of `peer` (their `key` field).
    pub fn pairwise(&self, peer: &str) -> Result<Pairwise, KeyError> {
        let raw: [u8; 32] =
            STANDARD.decode(peer.trim()).ok().and_then(|v| v.try_into().ok()).ok_or(KeyError::BadPublicKey)?;
        let theirs = PublicKey::from(raw);
        let shared = self.secret.diffie_hellman(&theirs);
        if !shared.was_contributory() {
            return Err(KeyError::WeakPublicKey);
        }
        // Both sides must feed the same transcript: the public keys in order.
        let (lo, hi) = if self.public.as_bytes() <= theirs.as_bytes() {
            (self.public.as_bytes(), theirs.as_bytes())
        } else {
            (theirs.as_bytes(), self.public.as_bytes())
        };
        let mut transcript = Vec::with_capacity(64);
        transcript.extend_from_slice(lo);
        transcript.extend_from_slice(hi);
        let hk = Hkdf::<Sha256>::new(Some(b"babel v1 pairwise"), shared.as_bytes());
        let mut okm = [0u8; 32];
        hk.expand(&transcript, &mut okm).map_err(|_| KeyError::BadPublicKey)?;
        Ok(Pairwise { secret: okm, mine: *self.public.as_bytes(), theirs: raw })
    }
}

/// The secret two participants share.
pub struct Pairwise {
    secret: [u8; 32],
    mine: [u8; 32],
    theirs: [u8; 32],
}

impl std::fmt::Debug for Pairwise {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pairwise(<secret>)")
    }
}

fn expand(secret: &[u8; 32], info: &[&[u8]], out: &mut [u8]) {
    let hk = Hkdf::<Sha256>::from_prk(secret).unwrap_or_else(|_| Hkdf::<Sha256>::new(None, secret));
    // Lengths used here (≤ 44 bytes) are always within HKDF's limit.
    let _ = hk.expand_multi_info(info, out);
}

impl Pairwise {
    /// The sender key I use towards this peer in a two-party call.
    pub fn my_sender_key(&self) -> SenderKey {
        self.sender_key_of(&self.mine)
    }

    /// The sender key the peer uses towards me in a two-party call.
    pub fn their_sender_key(&self) -> SenderKey {
        self.sender_key_of(&self.theirs)
    }

    fn sender_key_of(&self, public: &[u8; 32]) -> SenderKey {
        let mut okm = [0u8; 36];
        expand(&self.secret, &[b"babel sender", public], &mut okm);
        let mut key = [0u8; 32];
        key.copy_from_slice(&okm[..32]);
        let id = u32::from_be_bytes([okm[32], okm[33], okm[34], okm[35]]);
        SenderKey::from_parts(id, key)
    }
}

/// One sender's voice key, with its id (carried in every datagram so a
/// receiver knows which key opens it) and the nonce salt derived from it.
#[derive(Clone, PartialEq, Eq)]
pub struct SenderKey {
    /// The key's id.
    pub id: u32,
    key: [u8; 32],
    salt: [u8; 12],
}

impl std::fmt::Debug for SenderKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SenderKey").field("id", &self.id).finish_non_exhaustive()
    }
}

impl SenderKey {
    /// A random sender key (group calls).
    pub fn generate() -> Result<SenderKey, KeyError> {
        let id: [u8; 4] = random()?;
        Ok(SenderKey::from_parts(u32::from_be_bytes(id), random()?))
    }

    /// A key from its parts.
    pub fn from_parts(id: u32, key: [u8; 32]) -> SenderKey {
        let mut salt = [0u8; 12];
        expand(&key, &[b"babel salt"], &mut salt);
        SenderKey { id, key, salt }
    }

    /// The raw key, to hand over to a peer inside a sealed frame.
    pub fn key_bytes(&self) -> &[u8; 32] {
        &self.key
    }

    pub(crate) fn cipher(&self) -> ChaCha20Poly1305 {
        ChaCha20Poly1305::new(&self.key.into())
    }

    /// The AEAD nonce for a sequence number: the salt with the sequence
    /// XORed into its last bytes (unique per key as long as `seq` is).
    pub(crate) fn nonce(&self, seq: u32) -> [u8; 12] {
        let mut n = self.salt;
        for (b, s) in n[8..].iter_mut().zip(seq.to_be_bytes()) {
            *b ^= s;
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (CallKeys, CallKeys) {
        (CallKeys::from_secret([1; 32]), CallKeys::from_secret([2; 32]))
    }

    #[test]
    fn both_sides_agree() {
        let (a, b) = pair();
        let ab = a.pairwise(&b.public_b64()).unwrap();
        let ba = b.pairwise(&a.public_b64()).unwrap();
        assert_eq!(ab.my_sender_key(), ba.their_sender_key());
        assert_eq!(ab.their_sender_key(), ba.my_sender_key());
        assert_ne!(ab.my_sender_key(), ab.their_sender_key(), "each direction has its own key");
    }

    #[test]
    fn a_man_in_the_middle_shows_in_the_code() {
        let (a, b) = pair();
        let m = CallKeys::from_secret([3; 32]);
        let (call, ann, ben) = (CallId(5), UserId(1), UserId(2));
        let honest =
            sas_transcript(call, ann, ben, &commitment(&a.public_bytes()), &a.public_bytes(), &b.public_bytes());
        // The server hands a M's key as b's, and b M's key (committed) as a's.
        let a_view =
            sas_transcript(call, ann, ben, &commitment(&a.public_bytes()), &a.public_bytes(), &m.public_bytes());
        let b_view =
            sas_transcript(call, ann, ben, &commitment(&m.public_bytes()), &m.public_bytes(), &b.public_bytes());
        assert_ne!(format_code(&a_view), format_code(&b_view));
        assert_ne!(honest, a_view);
        let code = format_code(&honest);
        assert_eq!(code.len(), 7);
        assert!(code.chars().enumerate().all(|(i, c)| if i == 3 { c == ' ' } else { c.is_ascii_digit() }));
        // M can talk to each, but a's key for b differs from b's for a.
        let (am, bm) = (a.pairwise(&m.public_b64()).unwrap(), b.pairwise(&m.public_b64()).unwrap());
        assert_ne!(am.my_sender_key(), bm.their_sender_key());
    }

    #[test]
    fn every_part_of_the_transcript_counts() {
        let (a, b) = pair();
        let (pa, pb) = (a.public_bytes(), b.public_bytes());
        let c = commitment(&pa);
        let base = sas_transcript(CallId(5), UserId(1), UserId(2), &c, &pa, &pb);
        assert_ne!(base, sas_transcript(CallId(6), UserId(1), UserId(2), &c, &pa, &pb));
        assert_ne!(base, sas_transcript(CallId(5), UserId(2), UserId(1), &c, &pa, &pb));
        assert_ne!(base, sas_transcript(CallId(5), UserId(1), UserId(2), &[0; 32], &pa, &pb));
        assert_ne!(base, sas_transcript(CallId(5), UserId(1), UserId(2), &c, &pb, &pa));
        let m = |id, key: [u8; 32], nonce: &[u8]| EpochMember { id: UserId(id), key, nonce: nonce.to_vec() };
        let g = group_transcript(CallId(5), 1, &[m(1, pa, &[]), m(2, pb, &[7; 16])]);
        assert_eq!(g, group_transcript(CallId(5), 1, &[m(2, pb, &[7; 16]), m(1, pa, &[])]), "order does not matter");
        assert_ne!(g, group_transcript(CallId(5), 2, &[m(1, pa, &[]), m(2, pb, &[7; 16])]), "the epoch counts");
        assert_ne!(g, group_transcript(CallId(5), 1, &[m(1, pa, &[]), m(2, pb, &[8; 16])]), "nonces count");
        assert_ne!(g, group_transcript(CallId(5), 1, &[m(1, pa, &[7; 16]), m(2, pb, &[])]), "whose nonce counts");
        let mut t = [0u8; 32];
        (t[2], t[3]) = (1, 0x2c);
        assert_eq!(code_number(&t, 1000), 300);
        assert_eq!(code_number(&base, 256), u32::from(base[3]));
    }

    #[test]
    fn commitments_bind_the_key() {
        let (a, b) = pair();
        assert_eq!(decode32(&a.commit_b64()).unwrap(), commitment(&a.public_bytes()));
        assert_ne!(commitment(&a.public_bytes()), commitment(&b.public_bytes()));
        assert_eq!(decode32(&a.public_b64()).unwrap(), a.public_bytes());
        assert!(decode32("short").is_err());
    }

    #[test]
    fn bad_and_weak_public_keys_are_refused() {
        let (a, _) = pair();
        assert_eq!(a.pairwise("not base64!").unwrap_err(), KeyError::BadPublicKey);
        assert_eq!(a.pairwise(&STANDARD.encode([1u8; 31])).unwrap_err(), KeyError::BadPublicKey);
        // The identity point gives an all-zero shared secret.
        assert_eq!(a.pairwise(&STANDARD.encode([0u8; 32])).unwrap_err(), KeyError::WeakPublicKey);
    }

    #[test]
    fn a_group_key_handed_over_opens_only_for_its_addressee() {
        use crate::voice::{KIND_KEY, KeyHandover, PacketError, VoiceFrame, open, seal};
        let (a, b) = pair();
        let ab = a.pairwise(&b.public_b64()).unwrap();
        let ba = b.pairwise(&a.public_b64()).unwrap();
        let group = SenderKey::generate().unwrap();
        let frame = VoiceFrame {
            kind: KIND_KEY,
            seq: 3,
            timestamp: 0,
            packets: vec![KeyHandover::of(&group).encode()],
            offsets: Vec::new(),
        };
        let sealed = seal(&ab.my_sender_key(), &frame).unwrap();
        let opened = open(&ba.their_sender_key(), &sealed).unwrap();
        assert_eq!(KeyHandover::decode(&opened.packets[0]).unwrap().sender_key(), group);
        let c = CallKeys::from_secret([4; 32]);
        let ca = c.pairwise(&a.public_b64()).unwrap();
        let not_b = SenderKey::from_parts(ab.my_sender_key().id, *ca.their_sender_key().key_bytes());
        assert_eq!(open(&not_b, &sealed), Err(PacketError::Forged), "only b can open it");
        let mut tampered = sealed.clone();
        tampered[20] ^= 1;
        assert!(open(&ba.their_sender_key(), &tampered).is_err());
    }

    #[test]
    fn nonces_differ_per_sequence() {
        let k = SenderKey::from_parts(1, [9; 32]);
        assert_ne!(k.nonce(1), k.nonce(2));
        assert_eq!(k.nonce(7), k.nonce(7));
    }
}

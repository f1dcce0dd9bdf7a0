//! When two account addresses are the same address, or too alike to tell
//! apart on a screen; and which display names are acceptable.
//!
//! Pure and IO-free. An email given to `/create`, `/login`, `/logout`,
//! `/add_contact` or `/remove_contact` goes through [`canonical_email`]:
//!
//! 1. Invisible, format, bidirectional-control, control, private-use and
//!    unassigned characters are refused (they are how `ann@x.org` and
//!    `ann\u{200B}@x.org` look the same but differ).
//! 2. NFKC, full Unicode case folding, NFKC again: full-width `ａｎｎ`, `ANN`
//!    and `ann` are one address.
//! 3. The domain goes through IDNA (UTS #46, transitional processing off,
//!    STD3 rules, hyphen and DNS-length checks); it is kept in its Unicode
//!    form (U-labels), so `xn--bcher-kva.example` and `bücher.example` are
//!    one domain, and answers show `bücher.example`.
//!
//! The result's UTS #39 confusable skeleton ([`skeleton_of`]), case folded,
//! is what the store keeps unique, so `аnn@x.org` (Cyrillic `а`) cannot be
//! registered next to `ann@x.org`.
//!
//! Display names ([`display_name`]) are NFKC-normalised and refused when they
//! hold the same invisible or direction-changing characters; they keep their
//! case (they are shown, not compared) and need not be unique.
//!
//! The Unicode tables are ICU4X's (normalisation, case folding, properties,
//! shared with the `idna` crate) and `unicode-security`'s confusables: an
//! upgrade that changes them can change a skeleton, so a stored skeleton is
//! recomputed by a migration when that matters (see `store::sqlite`).

use std::fmt::Write as _;

use icu_casemap::CaseMapper;
use icu_normalizer::ComposingNormalizerBorrowed;
use icu_properties::props::{BidiControl, DefaultIgnorableCodePoint, GeneralCategory};
use icu_properties::{CodePointMapData, CodePointSetData};
use idna::uts46::{AsciiDenyList, DnsLength, Hyphens, Uts46};

/// Longest address, in UTF-8 bytes (RFC 5321's path limit).
pub const MAX_EMAIL: usize = 254;
/// Longest local part, in UTF-8 bytes.
pub const MAX_LOCAL: usize = 64;
/// Longest display name, in characters.
pub const MAX_NAME: usize = 64;

/// An address in the form accounts are stored and compared in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanonicalEmail {
    /// `local@domain`, NFKC and case folded, the domain in U-labels.
    pub email: String,
    /// Its case-folded UTS #39 skeleton: equal skeletons look alike.
    pub skeleton: String,
}

/// Why an email or a name is refused. The messages are for a person and
/// never echo an invisible or direction-changing character as it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// Holds a character that hides or reorders text.
    #[error("{what} contains {kind} ({code}), which is not allowed")]
    HiddenCharacter {
        /// "the email" or "the name".
        what: &'static str,
        /// What sort of character.
        kind: &'static str,
        /// Its code point, `U+202E`.
        code: String,
    },
    /// Not shaped like an address.
    #[error("`{0}` is not a valid email address")]
    NotAnEmail(String),
    /// The domain is not a valid (internationalised) domain name.
    #[error("`{0}` is not a valid email address: its domain is not a valid domain name")]
    BadDomain(String),
    /// Too long, or empty.
    #[error("the name must be 1 to {MAX_NAME} characters")]
    NameLength,
}

/// What sort of forbidden character `c` is, if it is one. Spaces are
/// judged by the caller (a name may hold them, an email may not).
fn forbidden_kind(c: char) -> Option<&'static str> {
    if BIDI.contains(c) {
        return Some("a bidirectional control character");
    }
    if IGNORABLE.contains(c) {
        return Some("an invisible character");
    }
    match GC.get(c) {
        GeneralCategory::Format => Some("an invisible formatting character"),
        GeneralCategory::Control => Some("a control character"),
        GeneralCategory::LineSeparator | GeneralCategory::ParagraphSeparator => Some("a line break"),
        GeneralCategory::PrivateUse => Some("a private-use character"),
        GeneralCategory::Unassigned | GeneralCategory::Surrogate => Some("an unassigned character"),
        _ => None,
    }
}

const BIDI: icu_properties::CodePointSetDataBorrowed<'static> = CodePointSetData::new::<BidiControl>();
const IGNORABLE: icu_properties::CodePointSetDataBorrowed<'static> =
    CodePointSetData::new::<DefaultIgnorableCodePoint>();
const GC: icu_properties::CodePointMapDataBorrowed<'static, GeneralCategory> = CodePointMapData::new();
const NFKC: ComposingNormalizerBorrowed<'static> = ComposingNormalizerBorrowed::new_nfkc();

fn check_chars(what: &'static str, s: &str) -> Result<(), IdentityError> {
    for c in s.chars() {
        if let Some(kind) = forbidden_kind(c) {
            return Err(IdentityError::HiddenCharacter { what, kind, code: format!("U+{:04X}", c as u32) });
        }
    }
    Ok(())
}

/// `s` with every forbidden character written as `<U+XXXX>`, safe to show.
pub fn shown(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if forbidden_kind(c).is_some() || c.is_whitespace() && c != ' ' {
            let _ = write!(out, "<U+{:04X}>", c as u32);
        } else {
            out.push(c);
        }
    }
    out
}

/// NFKC, full case folding, NFKC (folding can undo composition).
fn fold(s: &str) -> String {
    let once = NFKC.normalize(s);
    let folded = CaseMapper::new().fold_string(&once);
    NFKC.normalize(&folded).into_owned()
}

/// The case-folded UTS #39 skeleton of `s`: two strings that look alike
/// (`ann` in Latin and in Cyrillic, `rn` and `m`, `0` and `o`) have the same.
pub fn skeleton_of(s: &str) -> String {
    let skeleton: String = unicode_security::skeleton(s).collect();
    fold(&skeleton)
}

/// The form the previous schema stored (trimmed, lowercase), which
/// migrated accounts still log in with.
pub fn legacy_form(raw: &str) -> String {
    raw.trim().to_lowercase()
}

/// Checks an email and brings it to its canonical form (module docs).
pub fn canonical_email(raw: &str) -> Result<CanonicalEmail, IdentityError> {
    let trimmed = raw.trim();
    check_chars("the email", trimmed)?;
    let email = fold(trimmed);
    check_chars("the email", &email)?;
    let bad = || IdentityError::NotAnEmail(shown(trimmed));
    if email.chars().any(char::is_whitespace) {
        return Err(bad());
    }
    let (local, domain) = email.split_once('@').ok_or_else(bad)?;
    if local.is_empty() || local.len() > MAX_LOCAL || domain.contains('@') {
        return Err(bad());
    }
    let uts46 = Uts46::new();
    let ascii = uts46
        .to_ascii(domain.as_bytes(), AsciiDenyList::STD3, Hyphens::Check, DnsLength::Verify)
        .map_err(|_| IdentityError::BadDomain(shown(trimmed)))?;
    if !ascii.contains('.') {
        return Err(bad());
    }
    let (unicode, ok) = uts46.to_unicode(ascii.as_bytes(), AsciiDenyList::STD3, Hyphens::Check);
    if ok.is_err() {
        return Err(IdentityError::BadDomain(shown(trimmed)));
    }
    // An A-label can spell what folding changes (a final sigma, ς, which
    // folds to σ): fold the decoded form too, and check that, so the
    // canonical form is a fixed point.
    let folded = fold(&unicode);
    let unicode = if folded == unicode {
        unicode.into_owned()
    } else {
        let ascii = uts46
            .to_ascii(folded.as_bytes(), AsciiDenyList::STD3, Hyphens::Check, DnsLength::Verify)
            .map_err(|_| IdentityError::BadDomain(shown(trimmed)))?;
        let (again, ok) = uts46.to_unicode(ascii.as_bytes(), AsciiDenyList::STD3, Hyphens::Check);
        if ok.is_err() || fold(&again) != again {
            return Err(IdentityError::BadDomain(shown(trimmed)));
        }
        again.into_owned()
    };
    // A-labels can spell what a U-label may not: judge the decoded form too.
    check_chars("the email", &unicode)?;
    let email = format!("{local}@{unicode}");
    if email.len() > MAX_EMAIL {
        return Err(bad());
    }
    let skeleton = skeleton_of(&email);
    Ok(CanonicalEmail { email, skeleton })
}

/// What the migration makes of an address stored by the previous schema:
/// its canonical form once the characters now refused are dropped, or
/// `None` when even that is not a valid address.
pub fn migrated_email(stored: &str) -> Option<CanonicalEmail> {
    let kept: String = stored.chars().filter(|&c| forbidden_kind(c).is_none()).collect();
    canonical_email(&kept).ok()
}

/// What the migration makes of a display name stored by the previous
/// schema: the refused characters dropped, then as [`display_name`] makes
/// it (the local part of `email` if nothing is left); too long a name is cut.
pub fn migrated_name(stored: &str, email: &str) -> String {
    let kept: String = stored.chars().filter(|&c| forbidden_kind(c).is_none()).collect();
    let cut: String = NFKC.normalize(kept.trim()).chars().take(MAX_NAME).collect();
    display_name(Some(&cut), email).unwrap_or_else(|_| email.split('@').next().unwrap_or(email).to_owned())
}

/// A display name: the given one (trimmed, NFKC) or else the email's local
/// part. Spaces are fine; hidden and direction-changing characters are not.
pub fn display_name(given: Option<&str>, email: &str) -> Result<String, IdentityError> {
    let name = match given.map(str::trim) {
        Some(n) if !n.is_empty() => {
            check_chars("the name", n)?;
            let n = NFKC.normalize(n).into_owned();
            check_chars("the name", &n)?;
            n
        }
        _ => email.split('@').next().unwrap_or(email).to_owned(),
    };
    if name.chars().count() > MAX_NAME || name.trim().is_empty() {
        return Err(IdentityError::NameLength);
    }
    Ok(name)
}

#[cfg(test)]
mod tests {

    /// Found by the fuzzer: an A-label that decodes to a final sigma (ς)
    /// gave a canonical form that canonicalised again to σ.
    #[test]
    fn a_punycode_final_sigma_is_folded_to_a_fixed_point() {
        let c = canonical_email("x@xn--xxampl.or-atrue").unwrap();
        assert_eq!(c.email, "x@μσϊχ.or-atrue");
        assert_eq!(canonical_email(&c.email), Ok(c));
    }
    use super::*;

    fn canon(s: &str) -> String {
        canonical_email(s).unwrap_or_else(|e| panic!("{s:?}: {e}")).email
    }

    #[test]
    fn case_width_and_whitespace_fold_together() {
        assert_eq!(canon("  Ann.Lee@Example.ORG "), "ann.lee@example.org");
        assert_eq!(canon("ａｎｎ@ｅｘａｍｐｌｅ.ｏｒｇ"), "ann@example.org");
        assert_eq!(canon("STRASSE@x.org"), canon("straße@x.org"), "full folding, not lowercase");
        assert_eq!(canon("ÉMILE@x.org"), "émile@x.org");
        assert_eq!(canon("E\u{301}MILE@x.org"), "émile@x.org", "decomposed input composes");
    }

    #[test]
    fn hidden_characters_are_refused_by_name() {
        for (c, kind) in [
            ('\u{200B}', "invisible"),
            ('\u{2060}', "invisible"),
            ('\u{202E}', "bidirectional"),
            ('\u{00AD}', "invisible"),
            ('\u{200D}', "invisible"),
            ('\u{FEFF}', "invisible"),
            ('\u{E000}', "private-use"),
            ('\u{7}', "control"),
        ] {
            let e = canonical_email(&format!("an{c}n@example.org")).unwrap_err();
            let msg = e.to_string();
            assert!(msg.contains(kind), "{c:?}: {msg}");
            assert!(msg.contains(&format!("U+{:04X}", c as u32)), "{msg}");
            assert!(!msg.contains(c), "the message must not carry the character itself: {msg:?}");
        }
        assert_eq!(canonical_email("a b@x.org"), Err(IdentityError::NotAnEmail("a b@x.org".into())));
    }

    #[test]
    fn shapes_are_checked() {
        for bad in ["", "ann", "@x.org", "ann@", "ann@x", "a@b@c.org", "a@-x.org", "a@x..org", "a@x.org.", "a@x_y.org"]
        {
            assert!(canonical_email(bad).is_err(), "{bad}");
        }
        assert!(canonical_email(&format!("{}@x.org", "a".repeat(65))).is_err());
        assert!(canonical_email(&format!("a@{}.org", "b".repeat(64))).is_err(), "DNS label over 63");
    }

    #[test]
    fn domains_are_idna_and_answered_in_u_labels() {
        assert_eq!(canon("ann@bücher.example"), "ann@bücher.example");
        assert_eq!(canon("ann@xn--bcher-kva.example"), "ann@bücher.example");
        assert_eq!(canon("ann@XN--BCHER-KVA.example"), "ann@bücher.example");
        assert_eq!(canon("ann@BÜCHER.example"), "ann@bücher.example");
        // Punycode that decodes to something IDNA refuses.
        assert!(canonical_email("ann@xn--a.example").is_err());
    }

    #[test]
    fn look_alikes_share_a_skeleton() {
        let real = canonical_email("ann@example.org").unwrap().skeleton;
        for fake in ["аnn@example.org", "ann@exаmple.org", "ANN@EXAMPLE.ORG"] {
            assert_eq!(canonical_email(fake).unwrap().skeleton, real, "{fake}");
        }
        assert_ne!(canon("аnn@example.org"), canon("ann@example.org"), "different addresses");
        assert_eq!(skeleton_of("rnodern"), skeleton_of("modern"));
        assert_eq!(skeleton_of("b0b"), skeleton_of("bob"));
        assert_ne!(skeleton_of("ann"), skeleton_of("anne"));
    }

    #[test]
    fn numbered_addresses_do_not_collide() {
        // Load generators and tests number their accounts: digits must not
        // fold into each other (only into letters: 0 → o, 1 → l).
        let mut seen = std::collections::HashSet::new();
        for i in 0..5_000 {
            assert!(seen.insert(canonical_email(&format!("load-{i}@example.org")).unwrap().skeleton), "{i}");
        }
    }

    #[test]
    fn migration_drops_what_is_now_refused() {
        assert_eq!(migrated_email("an\u{200B}n@example.org").unwrap().email, "ann@example.org");
        assert_eq!(migrated_email("ａｎｎ@example.org").unwrap().email, "ann@example.org");
        assert_eq!(migrated_email("ann@ex--ample.org"), None, "hyphens in 3rd and 4th place");
    }

    #[test]
    fn names() {
        assert_eq!(display_name(None, "ann@x.org").unwrap(), "ann");
        assert_eq!(display_name(Some("  "), "ann@x.org").unwrap(), "ann");
        assert_eq!(display_name(Some(" Ann \"Lee\" "), "ann@x.org").unwrap(), "Ann \"Lee\"");
        assert_eq!(display_name(Some("Ａｎｎ Lee"), "a@x.org").unwrap(), "Ann Lee", "NFKC, case kept");
        assert!(display_name(Some(&"x".repeat(65)), "a@x.org").is_err());
        assert!(display_name(Some("a\u{7}"), "a@x.org").is_err());
        let e = display_name(Some("ann\u{202E}gnp.exe"), "a@x.org").unwrap_err().to_string();
        assert!(e.contains("bidirectional") && e.contains("U+202E"), "{e}");
        assert!(display_name(Some("an\u{200B}n"), "a@x.org").is_err());
    }

    /// Characters that make normalisation, folding and IDNA work: ASCII,
    /// full width, Cyrillic, combining marks, ligatures, ß/İ/ς, hidden ones.
    fn tricky() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let chars = prop::sample::select(vec![
            'a', 'n', 'x', 'O', '0', '1', 'l', 'I', '@', '@', '.', '.', '-', '_', '+', ' ', 'ａ', 'Ａ', '＠', '．',
            '\u{0430}', '\u{0410}', '\u{0301}', '\u{0308}', 'é', 'ü', 'ß', 'ẞ', '\u{0130}', 'ς', 'Σ', 'ﬁ', '㎏',
            '\u{200B}', '\u{200D}', '\u{00AD}', '\u{202E}', '\u{FEFF}', 'ℌ', '①', '\u{3002}', 'ｘ', 'ǅ',
        ]);
        let piece = prop_oneof![
            4 => prop::collection::vec(chars, 0..6).prop_map(|v| v.into_iter().collect::<String>()),
            1 => Just("xn--".to_owned()),
            1 => Just("xn--bcher-kva".to_owned()),
            1 => Just("@example.org".to_owned()),
        ];
        prop::collection::vec(piece, 1..6).prop_map(|v| v.concat())
    }

    proptest::proptest! {
        /// A canonical address is a fixed point (the store compares stored
        /// addresses with canonical forms of new input), holds nothing
        /// refused, and nothing panics on the way.
        #[test]
        fn canonical_is_idempotent_and_clean(raw in tricky()) {
            let _ = migrated_email(&raw);
            let _ = display_name(Some(&raw), "a@x.org");
            if let Ok(c) = canonical_email(&raw) {
                proptest::prop_assert_eq!(canonical_email(&c.email), Ok(c.clone()), "from {:?}", raw);
                proptest::prop_assert!(c.email.chars().all(|ch| forbidden_kind(ch).is_none() && !ch.is_whitespace()));
                proptest::prop_assert_eq!(&migrated_email(&c.email), &Some(c.clone()));
                proptest::prop_assert_eq!(skeleton_of(&c.email), c.skeleton);
            }
        }
    }

    #[test]
    fn migrated_names_lose_what_is_now_refused() {
        assert_eq!(migrated_name("ann\u{202E}gnp.exe", "ann@x.org"), "anngnp.exe");
        assert_eq!(migrated_name("\u{200B}", "ann@x.org"), "ann");
        assert_eq!(migrated_name("Ａｎｎ", "ann@x.org"), "Ann");
        assert_eq!(migrated_name("Ann Lee", "ann@x.org"), "Ann Lee");
        assert_eq!(migrated_name(&"㎏".repeat(40), "ann@x.org").chars().count(), MAX_NAME, "cut after NFKC grew it");
    }

    #[test]
    fn shown_escapes_hidden_characters() {
        assert_eq!(shown("ann\u{202E}gnp.exe"), "ann<U+202E>gnp.exe");
        assert_eq!(shown("a b"), "a b");
    }
}

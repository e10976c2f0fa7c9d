use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use proptest::prelude::*;

use super::{KeySpecError, OpenError, SecretKeys};

/// Standard base64 of `len` bytes all equal to `byte`: a fixed, recognisable test key.
fn key_b64(byte: u8, len: usize) -> String {
    STANDARD.encode(vec![byte; len])
}

fn ring(spec: &str) -> SecretKeys {
    match SecretKeys::parse(spec) {
        Ok(keys) => keys,
        Err(e) => panic!("spec {spec:?} should parse: {e}"),
    }
}

/// The spec item `id:<32 bytes of byte>`.
fn item(id: &str, byte: u8) -> String {
    format!("{id}:{}", key_b64(byte, 32))
}

/// The base64url payload of a sealed text.
fn payload(sealed: &str) -> &str {
    sealed
        .rsplit_once(':')
        .expect("sealed text has a payload")
        .1
}

#[test]
fn round_trip() {
    let keys = ring(&item("a", 1));
    let sealed = keys.seal(b"whsec_abc", b"webhook-1");
    assert!(sealed.starts_with("v1:a:"), "{sealed}");
    assert!(!sealed.contains("whsec_abc"));
    assert_eq!(keys.open(&sealed, b"webhook-1"), Ok(b"whsec_abc".to_vec()));
    assert_eq!(keys.current_id(), "a");
    assert!(keys.is_current(&sealed));
    // An empty secret and an empty context are fine too.
    assert_eq!(keys.open(&keys.seal(b"", b""), b""), Ok(Vec::new()));
}

#[test]
fn rotation_reseals_and_retires_the_old_key() {
    let old = ring(&item("a", 1));
    let sealed_a = old.seal(b"secret", b"row-7");

    let rotating = ring(&format!("{},{}", item("b", 2), item("a", 1)));
    assert_eq!(rotating.current_id(), "b");
    assert_eq!(rotating.open(&sealed_a, b"row-7"), Ok(b"secret".to_vec()));
    assert!(!rotating.is_current(&sealed_a));

    let resealed = rotating.seal(&rotating.open(&sealed_a, b"row-7").unwrap(), b"row-7");
    assert!(resealed.starts_with("v1:b:"), "{resealed}");
    assert!(rotating.is_current(&resealed));

    let rotated = ring(&item("b", 2));
    assert_eq!(rotated.open(&resealed, b"row-7"), Ok(b"secret".to_vec()));
    assert_eq!(
        rotated.open(&sealed_a, b"row-7"),
        Err(OpenError::UnknownKey("a".into()))
    );
    assert!(rotated
        .open(&sealed_a, b"row-7")
        .unwrap_err()
        .to_string()
        .contains("`a`"));
}

#[test]
fn wrong_context_fails() {
    let keys = ring(&item("a", 1));
    let sealed = keys.seal(b"secret", b"row-1");
    assert_eq!(keys.open(&sealed, b"row-2"), Err(OpenError::Failed));
    assert_eq!(keys.open(&sealed, b""), Err(OpenError::Failed));
}

#[test]
fn another_key_under_the_same_id_fails() {
    let sealed = ring(&item("a", 1)).seal(b"secret", b"row-1");
    assert_eq!(
        ring(&item("a", 9)).open(&sealed, b"row-1"),
        Err(OpenError::Failed)
    );
}

#[test]
fn tampered_payload_fails() {
    let keys = ring(&item("a", 1));
    let sealed = keys.seal(b"a webhook signing secret", b"row-1");
    let prefix = "v1:a:";
    let text = payload(&sealed);

    // Any character of the base64 text replaced by another base64url character.
    for (i, c) in text.char_indices() {
        let other = if c == 'A' { 'B' } else { 'A' };
        let tampered = format!("{prefix}{}{other}{}", &text[..i], &text[i + 1..]);
        let opened = keys.open(&tampered, b"row-1");
        assert!(
            matches!(opened, Err(OpenError::Failed | OpenError::Malformed)),
            "char {i}: {opened:?}"
        );
    }

    // Any bit of any byte of the decoded payload flipped, the text re-encoded canonically.
    let bytes = URL_SAFE_NO_PAD.decode(text).unwrap();
    for i in 0..bytes.len() {
        for bit in 0..8 {
            let mut flipped = bytes.clone();
            flipped[i] ^= 1 << bit;
            let tampered = format!("{prefix}{}", URL_SAFE_NO_PAD.encode(&flipped));
            assert_eq!(
                keys.open(&tampered, b"row-1"),
                Err(OpenError::Failed),
                "byte {i} bit {bit}"
            );
        }
    }
}

#[test]
fn garbage_is_malformed_or_fails() {
    let keys = ring(&item("a", 1));
    let sealed = keys.seal(b"secret", b"ctx");
    let short = URL_SAFE_NO_PAD.encode([0_u8; 27]); // a nonce and less than a tag
    let bare = URL_SAFE_NO_PAD.encode([0_u8; 28]); // a nonce and a tag, forged
    let malformed = [
        String::new(),
        "v1".into(),
        "v1:".into(),
        "v1:a".into(),
        "v1:a:".into(),
        "v2:a:xx".into(),
        "v1:a:!!!not base64!!!".into(),
        "v1:a:AAAA=".into(),
        "v1:a:A".into(),
        format!("v1:a:{short}"),
        format!("v1::{bare}"),
        format!("v1:A:{bare}"),
        format!("v1:{}:{bare}", "x".repeat(33)),
        format!("v2{}", &sealed[2..]),
        format!(" {sealed}"),
        format!("{sealed}\n"),
        format!("{sealed}:"),
        "v1:a:é".into(),
    ];
    for text in &malformed {
        assert_eq!(
            keys.open(text, b"ctx"),
            Err(OpenError::Malformed),
            "{text:?}"
        );
        assert!(
            !keys.is_current(text) || text.starts_with("v1:a:"),
            "{text:?}"
        );
    }
    assert_eq!(
        keys.open(&format!("v1:a:{bare}"), b"ctx"),
        Err(OpenError::Failed)
    );
    assert_eq!(
        keys.open(&format!("v1:z:{bare}"), b"ctx"),
        Err(OpenError::UnknownKey("z".into()))
    );
}

#[test]
fn seals_of_the_same_plaintext_differ() {
    let keys = ring(&item("a", 1));
    let first = keys.seal(b"secret", b"ctx");
    let second = keys.seal(b"secret", b"ctx");
    assert_ne!(first, second);
    // The nonces themselves differ, not just the ciphertexts.
    let nonce = |s: &str| URL_SAFE_NO_PAD.decode(payload(s)).unwrap()[..12].to_vec();
    assert_ne!(nonce(&first), nonce(&second));
}

#[test]
fn parse_accepts_whitespace_empty_items_and_unpadded_keys() {
    let unpadded = format!("old_key-2:{}", STANDARD_NO_PAD.encode([3_u8; 32]));
    let keys = ring(&format!(" ,{} , ,\n{unpadded},", item("new", 2)));
    assert_eq!(keys.current_id(), "new");
    let old = ring(&unpadded).seal(b"x", b"");
    assert_eq!(keys.open(&old, b""), Ok(b"x".to_vec()));
    assert_eq!(ring(&item(&"z".repeat(32), 1)).current_id(), "z".repeat(32));
}

#[test]
fn parse_rejects_empty_spec() {
    for spec in ["", "   ", ",", " , ,\n"] {
        assert!(
            matches!(SecretKeys::parse(spec), Err(KeySpecError::Empty)),
            "{spec:?}"
        );
    }
}

#[test]
fn parse_rejects_bad_id() {
    let key = key_b64(1, 32);
    for id in ["", "A", "a.b", "a b", "é", &"x".repeat(33)] {
        let spec = format!("{},{id}:{key}", item("ok", 2));
        assert!(
            matches!(
                SecretKeys::parse(&spec),
                Err(KeySpecError::BadId { item: 2 })
            ),
            "{id:?}"
        );
    }
    // A key alone, without an id.
    assert!(matches!(
        SecretKeys::parse(&key),
        Err(KeySpecError::MissingSeparator { item: 1 })
    ));
}

#[test]
fn parse_rejects_duplicate_id() {
    let spec = format!("{},{},{}", item("a", 1), item("b", 2), item("a", 3));
    match SecretKeys::parse(&spec) {
        Err(KeySpecError::DuplicateId { item: 3, id }) => assert_eq!(id, "a"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn parse_rejects_wrong_key_length() {
    for (len, unpadded) in [0, 1, 2, 16, 31, 33, 64]
        .into_iter()
        .flat_map(|n| [(n, false), (n, true)])
    {
        let key = key_b64(7, len);
        let spec = format!(
            "k:{}",
            if unpadded {
                key.trim_end_matches('=')
            } else {
                &key
            }
        );
        match SecretKeys::parse(&spec) {
            Err(KeySpecError::WrongLength {
                item: 1,
                id,
                len: got,
            }) => {
                assert_eq!((id.as_str(), got), ("k", len));
            }
            other => panic!("{len} bytes: {other:?}"),
        }
    }
}

#[test]
fn parse_rejects_non_base64() {
    let url_safe = URL_SAFE_NO_PAD.encode([0xfb_u8; 32]); // has `-` / `_`, not standard
    for key in ["not base64!", "AAAA====", url_safe.as_str(), "AAA A"] {
        let spec = format!("a:{key}");
        assert!(
            matches!(
                SecretKeys::parse(&spec),
                Err(KeySpecError::NotBase64 { item: 1, .. })
            ),
            "{key:?}"
        );
    }
}

#[test]
fn errors_do_not_echo_key_material() {
    let key = key_b64(0x5a, 33);
    let reversed = format!("{key}:a"); // key and id swapped
    for spec in [
        format!("a:{key}"),
        reversed,
        format!("a:{key}!"),
        key.clone(),
    ] {
        let e = SecretKeys::parse(&spec).unwrap_err();
        for text in [e.to_string(), format!("{e:?}")] {
            assert!(!text.contains(&key[..8]), "{text}");
        }
    }
}

#[test]
fn debug_shows_ids_not_keys() {
    let (key_a, key_b) = (key_b64(1, 32), key_b64(2, 32));
    let keys = ring(&format!("b:{key_b},a:{key_a}"));
    let debug = format!("{keys:?}");
    assert!(
        debug.contains("\"b\"") && debug.contains("\"a\""),
        "{debug}"
    );
    for key in [&key_a, &key_b] {
        assert!(!debug.contains(key.trim_end_matches('=')), "{debug}");
    }
    assert!(!format!("{keys:#?}").contains(key_a.trim_end_matches('=')));
}

#[test]
fn generate_spec_parses_and_differs() {
    let (first, second) = (SecretKeys::generate_spec(), SecretKeys::generate_spec());
    for spec in [&first, &second] {
        let keys = ring(spec);
        let (id, key) = spec.split_once(':').unwrap();
        assert_eq!(keys.current_id(), id);
        assert!(id.len() == 9 && id.starts_with('k'), "{id}");
        assert!(
            id[1..]
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
            "{id}"
        );
        assert_eq!(STANDARD.decode(key).unwrap().len(), 32);
        assert_eq!(keys.open(&keys.seal(b"x", b"y"), b"y"), Ok(b"x".to_vec()));
    }
    assert_ne!(
        first.split_once(':').unwrap().1,
        second.split_once(':').unwrap().1
    );
}

#[test]
fn secret_keys_can_be_shared_between_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<SecretKeys>();
}

proptest! {
    #[test]
    fn open_never_panics(text in ".*", tail in "[A-Za-z0-9_-]{0,80}") {
        let keys = ring(&format!("{},{}", item("a", 1), item("b", 2)));
        let _ = keys.open(&text, b"ctx");
        let _ = keys.is_current(&text);
        let forged = format!("v1:a:{tail}");
        prop_assert!(keys.open(&forged, b"ctx").is_err());
    }

    #[test]
    fn arbitrary_plaintext_and_context_round_trip(
        plaintext in proptest::collection::vec(any::<u8>(), 0..512),
        context in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let keys = ring(&item("a", 1));
        let sealed = keys.seal(&plaintext, &context);
        prop_assert!(sealed.is_ascii());
        prop_assert_eq!(keys.open(&sealed, &context), Ok(plaintext));
    }
}

//! Unit tests of the keyring (kept apart to keep `secrets.rs` short).

use super::*;

#[test]
fn round_trip_and_binding() {
    let sb = SecretBox::ephemeral();
    let c = sb.encrypt("a1", SecretField::ApiKey, "sk-secret").unwrap();
    assert!(c.starts_with(&format!("v1:{}:", sb.current_key_id())));
    assert!(!c.contains("sk-secret"));
    assert_eq!(
        sb.decrypt("a1", SecretField::ApiKey, &c).unwrap(),
        "sk-secret"
    );
    assert!(matches!(
        sb.decrypt("a2", SecretField::ApiKey, &c),
        Err(SecretError::Decrypt)
    ));
    assert!(matches!(
        sb.decrypt("a1", SecretField::Token, &c),
        Err(SecretError::Decrypt)
    ));
    let other = SecretBox::ephemeral();
    assert!(other.decrypt("a1", SecretField::ApiKey, &c).is_err());
}

#[test]
fn two_encryptions_differ() {
    let sb = SecretBox::ephemeral();
    let a = sb.encrypt("a1", SecretField::Token, "t").unwrap();
    let b = sb.encrypt("a1", SecretField::Token, "t").unwrap();
    assert_ne!(a, b);
}

#[test]
fn tampering_is_detected() {
    let sb = SecretBox::ephemeral();
    let c = sb.encrypt("a1", SecretField::Channels, "{}").unwrap();
    let (prefix, body) = c.rsplit_once(':').unwrap();
    let mut blob = B64.decode(body).unwrap();
    let last = blob.len() - 1;
    blob[last] ^= 1;
    let tampered = format!("{prefix}:{}", B64.encode(&blob));
    assert!(matches!(
        sb.decrypt("a1", SecretField::Channels, &tampered),
        Err(SecretError::Decrypt)
    ));
    // Claiming another key id changes the associated data too.
    let kid = sb.current_key_id();
    let swapped = c.replace(&kid, "kffffffff");
    assert!(sb.decrypt("a1", SecretField::Channels, &swapped).is_err());
    for bad in ["", "v1", "v1::", "v2:x:abc", "v1:k:!!!", "v1:k:AAAA"] {
        assert!(
            sb.decrypt("a1", SecretField::Channels, bad).is_err(),
            "{bad}"
        );
    }
}

#[test]
fn rotation_keeps_old_keys_and_persists() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("master.key");
    let sb = SecretBox::load_or_create(&path).unwrap();
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let old = sb.encrypt("a1", SecretField::Token, "zc_old").unwrap();
    let old_kid = sb.current_key_id();
    assert!(!sb.needs_rotation(&old));

    // Another process rotates: this one learns the new key on first sight.
    let other = SecretBox::load(&path).unwrap();
    let new_kid = other.rotate().unwrap();
    assert_ne!(new_kid, old_kid);
    let newer = other.encrypt("a1", SecretField::Token, "zc_new").unwrap();
    assert_eq!(
        sb.decrypt("a1", SecretField::Token, &newer).unwrap(),
        "zc_new"
    );
    assert_eq!(sb.current_key_id(), new_kid);

    assert!(other.needs_rotation(&old));
    assert_eq!(
        other.decrypt("a1", SecretField::Token, &old).unwrap(),
        "zc_old"
    );
    let reloaded = SecretBox::load_or_create(&path).unwrap();
    assert_eq!(reloaded.key_ids().len(), 2);
    assert_eq!(reloaded.current_key_id(), new_kid);
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
}

#[test]
fn debug_never_shows_keys() {
    let sb = SecretBox::ephemeral();
    let dbg = format!("{sb:?}");
    let ring = sb.read();
    let key_b64 = B64.encode(ring.keys[&ring.current].0);
    assert!(!dbg.contains(&key_b64));
    assert!(format!("{:?}", ring.keys[&ring.current]).contains("***"));
}

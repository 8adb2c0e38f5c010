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

#[test]
fn the_lock_is_exclusive_and_its_wait_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("master.key");
    let held = KeyringLock::acquire(&path, Duration::ZERO).unwrap();
    let start = Instant::now();
    let err = KeyringLock::acquire(&path, Duration::from_millis(200)).unwrap_err();
    assert!(start.elapsed() >= Duration::from_millis(200));
    assert!(matches!(err, SecretError::Locked { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains(&path.display().to_string()) && msg.contains("locked"),
        "{msg}"
    );
    drop(held);
    let again = KeyringLock::acquire(&path, Duration::ZERO).unwrap();
    assert_eq!(again.key_path(), path);
}

#[test]
fn a_rotation_waits_for_the_holder_and_keeps_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("master.key");
    let first = SecretBox::load_or_create(&path).unwrap().current_key_id();
    // Another writer holds the lock and is half-way through a rotation.
    let lock = KeyringLock::acquire(&path, Duration::ZERO).unwrap();
    let holder = SecretBox::load(&path).unwrap();
    let waiter = std::thread::spawn({
        let path = path.clone();
        move || SecretBox::load(&path).unwrap().rotate().unwrap()
    });
    std::thread::sleep(Duration::from_millis(300));
    assert!(!waiter.is_finished(), "the second rotation waits");
    assert_eq!(
        SecretBox::load(&path).unwrap().key_ids(),
        vec![first.clone()]
    );
    let theirs = holder.rotate_locked(&lock).unwrap();
    drop(lock);
    let ours = waiter.join().unwrap();
    let after = SecretBox::load(&path).unwrap();
    let mut expected = vec![first, theirs, ours.clone()];
    expected.sort();
    assert_eq!(after.key_ids(), expected, "no rotation's key is lost");
    assert_eq!(after.current_key_id(), ours);
}

#[test]
fn concurrent_rotations_keep_every_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("master.key");
    let first = SecretBox::load_or_create(&path).unwrap().current_key_id();
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(8));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (path, barrier) = (path.clone(), barrier.clone());
            std::thread::spawn(move || {
                let sb = SecretBox::load(&path).unwrap();
                barrier.wait();
                sb.rotate().unwrap()
            })
        })
        .collect();
    let mut expected: Vec<String> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    expected.push(first);
    expected.sort();
    assert_eq!(SecretBox::load(&path).unwrap().key_ids(), expected);
}

#[test]
fn concurrent_first_starts_share_one_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("master.key");
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(8));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (path, barrier) = (path.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                SecretBox::load_or_create(&path).unwrap().current_key_id()
            })
        })
        .collect();
    let ids: Vec<String> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
    assert_eq!(
        SecretBox::load(&path).unwrap().key_ids(),
        vec![ids[0].clone()]
    );
}

#[test]
fn writes_leave_only_the_keyring_and_its_lock_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("master.key");
    // A temporary file left by a crash is replaced, not an obstacle.
    std::fs::write(path.with_extension("key.tmp"), "torn").unwrap();
    let sb = SecretBox::load_or_create(&path).unwrap();
    sb.rotate().unwrap();
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["master.key", "master.key.lock"]);
    for name in names {
        let mode = std::fs::metadata(dir.path().join(&name))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{name}");
    }
}

#[test]
fn rotate_locked_refuses_the_lock_of_another_file() {
    let dir = tempfile::tempdir().unwrap();
    let sb = SecretBox::load_or_create(&dir.path().join("master.key")).unwrap();
    let other = KeyringLock::acquire(&dir.path().join("other.key"), Duration::ZERO).unwrap();
    assert!(matches!(
        sb.rotate_locked(&other),
        Err(SecretError::KeyFile(_))
    ));
    assert!(SecretBox::ephemeral().rotate_locked(&other).is_err());
    assert_eq!(sb.key_ids().len(), 1);
}

#[test]
fn token_hashes_are_keyed_stable_and_survive_rotation() {
    let sb = SecretBox::ephemeral();
    let token = "123456:ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let h = sb.token_hashes(token);
    assert_eq!(h.len(), 1);
    assert_eq!(h, sb.token_hashes(token), "deterministic");
    assert_eq!(h[0].len(), 64);
    assert!(h[0].chars().all(|c| c.is_ascii_hexdigit()));
    assert!(!h[0].contains(token));
    assert_ne!(h, sb.token_hashes("123456:other"));
    // Not a plain SHA-256 of the token: another installation's key differs.
    assert_ne!(h, SecretBox::ephemeral().token_hashes(token));
    assert_ne!(
        h[0],
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(token))
    );
    // A rotation adds the new key's hash and keeps the old one.
    sb.rotate().unwrap();
    let after = sb.token_hashes(token);
    assert_eq!(after.len(), 2);
    assert!(after.contains(&h[0]));
}

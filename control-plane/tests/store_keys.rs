//! `zcaas keys rotate` on a real store and keyring file: every secret is
//! re-encrypted with the new key, decrypts to the same plaintext, and the
//! old key stays in the keyring; a server holding the old keyring still
//! reads the new ciphertexts.

use zcaas::secrets::{SecretBox, SecretField};
use zcaas::store::agents;
use zcaas_test_support::store::{agent_row, fresh_store, user_row, FreshStore};

#[tokio::test]
async fn rotation_reencrypts_every_secret() {
    let FreshStore {
        config,
        db,
        sql,
        database: _database,
        dir: _dir,
    } = fresh_store().await;
    let server_box = SecretBox::load_or_create(&config.master_key_path()).unwrap();
    let old_key = server_box.current_key_id();

    let user_id = user_row(&db, "a@x.io").await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let id = uuid::Uuid::new_v4().to_string();
        let new = agents::NewAgent {
            id: id.clone(),
            encrypted_api_key: Some(
                server_box
                    .encrypt(&id, SecretField::ApiKey, &format!("sk-{i}"))
                    .unwrap(),
            ),
            encrypted_channels: (i != 1).then(|| {
                server_box
                    .encrypt(&id, SecretField::Channels, "{}")
                    .unwrap()
            }),
            ..agent_row(&user_id, &format!("a{i}"))
        };
        db.agents().insert_pending(&new, None).await.unwrap();
        let token = server_box
            .encrypt(&id, SecretField::Token, &format!("zc_{i}"))
            .unwrap();
        sqlx::query("UPDATE agents SET encrypted_token = $1 WHERE id = $2")
            .bind(token)
            .bind(&id)
            .execute(&sql)
            .await
            .unwrap();
        ids.push(id);
    }

    let report = zcaas::cli::rotate_keys(&config).await.unwrap();
    assert_eq!(report.reencrypted, 3 + 3 + 2);
    assert_eq!((report.changed_meanwhile, report.unreadable), (0, 0));
    assert_ne!(report.new_key_id, old_key);

    let after = SecretBox::load(&config.master_key_path()).unwrap();
    assert_eq!(after.current_key_id(), report.new_key_id);
    assert!(after.key_ids().contains(&old_key));
    for (i, row) in db
        .agents()
        .list_secrets()
        .await
        .unwrap()
        .into_iter()
        .enumerate()
    {
        let i = ids.iter().position(|id| *id == row.id).unwrap_or(i);
        for stored in [&row.encrypted_token, &row.encrypted_api_key] {
            let stored = stored.as_deref().unwrap();
            assert!(stored.starts_with(&format!("v1:{}:", report.new_key_id)));
            assert!(!after.needs_rotation(stored));
        }
        let token = row.encrypted_token.unwrap();
        assert_eq!(
            after.decrypt(&row.id, SecretField::Token, &token).unwrap(),
            format!("zc_{i}")
        );
        // The server's keyring learns the new key from the file on first sight.
        assert_eq!(
            server_box
                .decrypt(
                    &row.id,
                    SecretField::ApiKey,
                    &row.encrypted_api_key.unwrap()
                )
                .unwrap(),
            format!("sk-{i}")
        );
    }

    // A second rotation re-encrypts again; nothing is lost.
    let again = zcaas::cli::rotate_keys(&config).await.unwrap();
    assert_eq!(again.reencrypted, 8);
    assert_eq!(
        SecretBox::load(&config.master_key_path())
            .unwrap()
            .key_ids()
            .len(),
        3
    );
}

//! `zcaas keys rotate` as a process, beside other writers of the keyring: a
//! rotation waits for the key file's lock, starts from the keyring the holder
//! wrote, and afterwards every secret in the store decrypts with the keys in
//! the file. The test holds the lock itself to make the interleaving
//! deterministic: without the lock the rotations do not wait (the "waiting"
//! line never comes) and one of them loses the other's key.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use zcaas::config::Config;
use zcaas::secrets::{KeyringLock, SecretBox, SecretField};
use zcaas::store::{agents, Store};
use zcaas_test_support::store::{agent_row, fresh_store, user_row, FreshStore};

const ZCAAS: &str = env!("CARGO_BIN_EXE_zcaas");
/// Bound on every wait of these tests.
const WAIT: Duration = Duration::from_secs(30);
/// What a rotation logs when another writer holds the key file's lock.
const WAITING: &str = "waiting for the key file lock";
/// Agents seeded by [`seed`], each with a token and an API key, and channels
/// on all but one: the number of secrets a rotation moves.
const AGENTS: usize = 3;
const SECRETS: usize = 3 + 3 + 2;

/// A data directory with a store, a keyring and [`AGENTS`] agents whose
/// secrets are encrypted with the keyring's first key.
struct Seeded {
    _dir: tempfile::TempDir,
    config: Config,
    db: Store,
    _database: zcaas_test_support::store::TestDatabase,
    first_key: String,
    /// `(agent id, field, plaintext)` of every stored secret.
    plaintexts: Vec<(String, SecretField, String)>,
}

async fn seed() -> Seeded {
    let FreshStore {
        config,
        db,
        sql,
        database,
        dir,
    } = fresh_store().await;
    let keys = SecretBox::load_or_create(&config.master_key_path()).unwrap();
    let user_id = user_row(&db, "rotor@x.io").await;
    let mut plaintexts = Vec::new();
    for i in 0..AGENTS {
        let id = uuid::Uuid::new_v4().to_string();
        let (api_key, channels, token) = (
            format!("sk-{i}"),
            format!("{{\"n\":{i}}}"),
            format!("zc_{i}"),
        );
        let new = agents::NewAgent {
            id: id.clone(),
            encrypted_api_key: Some(keys.encrypt(&id, SecretField::ApiKey, &api_key).unwrap()),
            encrypted_channels: (i != 1)
                .then(|| keys.encrypt(&id, SecretField::Channels, &channels).unwrap()),
            ..agent_row(&user_id, &format!("a{i}"))
        };
        db.agents().insert_pending(&new, None).await.unwrap();
        sqlx::query("UPDATE agents SET encrypted_token = $1 WHERE id = $2")
            .bind(keys.encrypt(&id, SecretField::Token, &token).unwrap())
            .bind(&id)
            .execute(&sql)
            .await
            .unwrap();
        plaintexts.push((id.clone(), SecretField::Token, token));
        plaintexts.push((id.clone(), SecretField::ApiKey, api_key));
        if i != 1 {
            plaintexts.push((id, SecretField::Channels, channels));
        }
    }
    assert_eq!(plaintexts.len(), SECRETS);
    Seeded {
        _dir: dir,
        config,
        db,
        _database: database,
        first_key: keys.current_key_id(),
        plaintexts,
    }
}

impl Seeded {
    /// The stored ciphertext of `(agent, field)`.
    async fn stored(&self, agent_id: &str, field: SecretField) -> String {
        let row = self
            .db
            .agents()
            .list_secrets()
            .await
            .unwrap()
            .into_iter()
            .find(|r| r.id == agent_id)
            .unwrap();
        match field {
            SecretField::Token => row.encrypted_token,
            SecretField::ApiKey => row.encrypted_api_key,
            SecretField::Channels => row.encrypted_channels,
        }
        .unwrap()
    }

    /// Every secret decrypts, with a keyring freshly read from the file, to
    /// what was stored, and is under `key_id`.
    async fn assert_all_readable_under(&self, key_id: &str) {
        let keys = SecretBox::load(&self.config.master_key_path()).unwrap();
        for (id, field, plain) in &self.plaintexts {
            let stored = self.stored(id, *field).await;
            assert!(stored.starts_with(&format!("v1:{key_id}:")), "{stored}");
            assert_eq!(&keys.decrypt(id, *field, &stored).unwrap(), plain);
        }
    }
}

/// A `zcaas keys rotate` child on `config`'s data directory, with its stderr
/// lines forwarded to a channel.
struct Rotation {
    child: Child,
    stderr: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Rotation {
    fn start(config: &Config) -> Rotation {
        let mut cmd = Command::new(ZCAAS);
        for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("ZCAAS_")) {
            cmd.env_remove(key);
        }
        let mut child = cmd
            .args(["keys", "rotate"])
            .env("ZCAAS_DATA_DIR", &config.data_dir)
            .env("ZCAAS_DATABASE_URL", &config.database_url)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, stderr) = mpsc::channel();
        let pipe = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Rotation {
            child,
            stderr,
            seen: Vec::new(),
        }
    }

    /// Returns once the child logs that it waits for the lock; panics if it
    /// exits (or stays silent for [`WAIT`]) without saying so.
    fn wait_until_waiting(&mut self) {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) => {
                    let found = line.contains(WAITING);
                    self.seen.push(line);
                    if found {
                        return;
                    }
                }
                Err(_) => panic!(
                    "the rotation never waited for the key file lock; stderr: {:#?}",
                    self.seen
                ),
            }
        }
    }

    /// Waits (bounded) for the child to exit 0 and returns its report line.
    fn finish(mut self) -> String {
        let deadline = Instant::now() + WAIT;
        while self.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "the rotation did not finish");
            std::thread::sleep(Duration::from_millis(20));
        }
        let status = self.child.wait().unwrap();
        let mut stdout = String::new();
        if let Some(mut pipe) = self.child.stdout.take() {
            std::io::Read::read_to_string(&mut pipe, &mut stdout).unwrap();
        }
        self.seen.extend(self.stderr.try_iter());
        assert!(status.success(), "{status:?}: {:#?}", self.seen);
        stdout.trim().to_owned()
    }

    fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Rotation {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The new key id of a report line: `new key <id>: …`.
fn new_key(report: &str) -> String {
    report
        .strip_prefix("new key ")
        .and_then(|r| r.split_once(':'))
        .map(|(id, _)| id.to_owned())
        .unwrap_or_else(|| panic!("not a rotation report: {report}"))
}

/// Another writer (this test) holds the lock and rotates half-way: it adds a
/// key and moves one secret to it. The `zcaas keys rotate` started meanwhile
/// waits, without touching the file; once the lock is released it keeps that
/// key and moves every secret, the half-way one too, to its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_waits_for_the_lock_and_keeps_the_holders_key() {
    let s = seed().await;
    let key_path = s.config.master_key_path();
    let lock = KeyringLock::acquire(&key_path, Duration::ZERO).unwrap();

    let mut rotation = Rotation::start(&s.config);
    rotation.wait_until_waiting();
    std::thread::sleep(Duration::from_millis(200));
    assert!(rotation.is_running(), "it waits for the lock");
    let untouched = SecretBox::load(&key_path).unwrap();
    assert_eq!(untouched.key_ids(), vec![s.first_key.clone()]);

    let holder = SecretBox::load(&key_path).unwrap();
    let holders_key = holder.rotate_locked(&lock).unwrap();
    let (id, field, plain) = s.plaintexts[0].clone();
    let old = s.stored(&id, field).await;
    let moved = holder.encrypt(&id, field, &plain).unwrap();
    assert!(s
        .db
        .agents()
        .replace_secret(&id, field, &old, &moved)
        .await
        .unwrap());
    drop(lock);

    let report = rotation.finish();
    let rotations_key = new_key(&report);
    assert!(
        report.ends_with(&format!(
            "{SECRETS} secrets re-encrypted, 0 changed meanwhile, 0 unreadable"
        )),
        "{report}"
    );
    let keys = SecretBox::load(&key_path).unwrap();
    let mut expected = vec![s.first_key.clone(), holders_key, rotations_key.clone()];
    expected.sort();
    assert_eq!(keys.key_ids(), expected, "no key is lost");
    assert_eq!(keys.current_key_id(), rotations_key);
    s.assert_all_readable_under(&rotations_key).await;
}

/// Two `zcaas keys rotate` at once: both are held at the lock (the test's),
/// then released together so they race for it. Both succeed one after the
/// other; the file keeps the first key and both new ones, and every secret
/// is under the last rotation's key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_concurrent_rotations_lose_no_key() {
    let s = seed().await;
    let key_path = s.config.master_key_path();
    let gate = KeyringLock::acquire(&key_path, Duration::ZERO).unwrap();
    let mut a = Rotation::start(&s.config);
    let mut b = Rotation::start(&s.config);
    a.wait_until_waiting();
    b.wait_until_waiting();
    drop(gate);

    let (report_a, report_b) = (a.finish(), b.finish());
    for report in [&report_a, &report_b] {
        assert!(
            report.ends_with(&format!(
                "{SECRETS} secrets re-encrypted, 0 changed meanwhile, 0 unreadable"
            )),
            "each rotation moved every secret on its own: {report}"
        );
    }
    let keys = SecretBox::load(&key_path).unwrap();
    let mut expected = vec![s.first_key.clone(), new_key(&report_a), new_key(&report_b)];
    expected.sort();
    assert_eq!(keys.key_ids(), expected, "no key is lost");
    let last = keys.current_key_id();
    assert!(last == new_key(&report_a) || last == new_key(&report_b));
    s.assert_all_readable_under(&last).await;
}

//! The test database: the SQLite file a test's configuration names, or,
//! with `ZCAAS_TEST_STORE=postgres`, a fresh PostgreSQL database on the
//! server `ZCAAS_TEST_POSTGRES_URL` names (default
//! `postgres://zcaas:zcaas@127.0.0.1:5432/postgres`), created with a random
//! name under the test prefix `zcaas_t_` and dropped (with `FORCE`) when the
//! [`TestDatabase`] drops, even if the test panicked.

use zcaas::store::Backend;

/// The server the PostgreSQL tests use when `ZCAAS_TEST_POSTGRES_URL` is unset.
pub const DEFAULT_POSTGRES_URL: &str = "postgres://zcaas:zcaas@127.0.0.1:5432/postgres";

/// The backend the tests of this run use (`ZCAAS_TEST_STORE`).
pub fn test_backend() -> Backend {
    match std::env::var("ZCAAS_TEST_STORE").as_deref() {
        Ok("postgres") => Backend::Postgres,
        Ok("sqlite") | Ok("") | Err(_) => Backend::Sqlite,
        Ok(other) => panic!("ZCAAS_TEST_STORE={other}: expected sqlite or postgres"),
    }
}

/// The server URL of the PostgreSQL tests.
pub fn server_url() -> String {
    std::env::var("ZCAAS_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_POSTGRES_URL.to_owned())
}

/// One test's database; dropped with it.
pub struct TestDatabase {
    /// The URL to give the control plane.
    pub url: String,
    /// The PostgreSQL database's name, when it is one.
    pub name: Option<String>,
}

impl TestDatabase {
    /// The test's database for this run's backend: `sqlite_url` as it is,
    /// or a fresh PostgreSQL database.
    pub async fn create(sqlite_url: &str) -> TestDatabase {
        match test_backend() {
            Backend::Sqlite => TestDatabase {
                url: sqlite_url.to_owned(),
                name: None,
            },
            Backend::Postgres => Self::create_postgres().await,
        }
    }

    /// A fresh PostgreSQL database, whatever the run's backend (the HA
    /// tests need one).
    pub async fn create_postgres() -> TestDatabase {
        let server = server_url();
        let name = format!("zcaas_t_{}", uuid::Uuid::new_v4().simple());
        let mut conn = connect(&server).await;
        sqlx::Executor::execute(&mut conn, format!("CREATE DATABASE {name}").as_str())
            .await
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
        let url = match server.rsplit_once('/') {
            Some((base, _)) => format!("{base}/{name}"),
            None => panic!("ZCAAS_TEST_POSTGRES_URL={server}: no database path"),
        };
        TestDatabase {
            url,
            name: Some(name),
        }
    }
}

async fn connect(url: &str) -> sqlx::PgConnection {
    use sqlx::Connection;
    sqlx::PgConnection::connect(url).await.unwrap_or_else(|e| {
        panic!(
            "connecting to PostgreSQL at {} (is it running? .ci/run starts it): {e}",
            zcaas::app::redact_url(url)
        )
    })
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Some(name) = self.name.take() else { return };
        let server = server_url();
        // Drop runs inside or outside a runtime: use a thread of our own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            rt.block_on(async {
                let mut conn = connect(&server).await;
                let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                if let Err(e) = sqlx::Executor::execute(&mut conn, sql.as_str()).await {
                    eprintln!("{sql}: {e}");
                }
            });
        })
        .join();
    }
}

//! [`App`]: the gateway built from a [`Config`] on a bound listener.
//!
//! `main` binds the configured address, tests bind `127.0.0.1:0`; both then call
//! [`App::build`], read [`App::addr`] / [`App::pairing_code`], and end with [`App::shutdown`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::health::{Health, Status};
use crate::http::{self, AppState, Shared};
use crate::idempotency::IdempotencyCache;
use crate::lockout::Lockout;
use crate::memory::MemoryHandle;
use crate::metrics::Metrics;
use crate::pairing::{self, PairingGuard};
use crate::providers::Provider;
use crate::ratelimit::RateLimiter;
use crate::tokens::{self, PersistError, TokenStore};

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The listener has no local address.
    #[error("listener: {0}")]
    Listener(#[from] std::io::Error),
    /// `persist_tokens` is on and the state file is unreadable.
    #[error(transparent)]
    Tokens(#[from] PersistError),
}

/// A running gateway.
#[derive(Debug)]
pub struct App {
    addr: SocketAddr,
    state: AppState,
    stop: CancellationToken,
    server: JoinHandle<std::io::Result<()>>,
    channels: Vec<JoinHandle<()>>,
}

impl App {
    /// Starts serving on `listener` with the real clock.
    ///
    /// # Errors
    /// [`StartError`].
    pub async fn build(config: &Config, listener: TcpListener) -> Result<Self, StartError> {
        Self::build_with_clock(config, listener, Arc::new(SystemClock)).await
    }

    /// Starts serving on `listener`, timing lockouts, rate limits and idempotency on `clock`.
    ///
    /// # Errors
    /// [`StartError`].
    pub async fn build_with_clock(
        config: &Config,
        listener: TcpListener,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, StartError> {
        let addr = listener.local_addr()?;
        let gw = &config.gateway;
        let (persisted, state_file) = if gw.persist_tokens {
            let path = config.paths.token_state_file();
            (tokens::load_persisted(&path)?, Some(path))
        } else {
            (Vec::new(), None)
        };
        let store = TokenStore::new(&gw.paired_tokens, persisted, state_file);
        let pairing = PairingGuard::new(gw.require_pairing, store, Lockout::new(clock.clone()));

        let provider = Provider::new(config.provider.clone());
        let health = Health::new();
        health.register("gateway", Status::Ok);
        health.register(&format!("provider:{}", provider.name()), Status::Starting);
        let channels = config.channels.configured();
        for name in &channels {
            health.register(&format!("channel:{name}"), Status::Starting);
        }
        let metrics = Metrics::new(provider.name(), provider.model());

        let state: AppState = Arc::new(Shared {
            pairing,
            rate: RateLimiter::new(gw.webhook_rate_limit_per_minute, clock.clone()),
            idempotency: IdempotencyCache::new(clock),
            provider,
            memory: Arc::new(MemoryHandle::new(
                config.memory.backend,
                config.paths.workspace.clone(),
            )),
            health,
            metrics,
            workspace: config.paths.workspace.clone(),
            auto_save: config.memory.auto_save,
            channels,
        });

        let router = http::router(state.clone(), gw.request_timeout);
        let stop = CancellationToken::new();
        let channels = crate::channels::spawn(
            &config.channels,
            &crate::channels::ChannelContext::new(state.clone()),
            &stop,
        );
        let stopped = stop.clone();
        let server = tokio::spawn(async move {
            axum::serve(
                listener,
                router.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(async move { stopped.cancelled().await })
            .await
        });
        Ok(Self {
            addr,
            state,
            stop,
            server,
            channels,
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The unused pairing code, if any.
    pub fn pairing_code(&self) -> Option<String> {
        self.state.pairing.current_code()
    }

    /// The shared state (for tests and embedding).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// The human lines for stdout: where it listens, and the pairing banner when a code is
    /// waiting. Contains no secret other than the one-time code.
    pub fn startup_lines(&self) -> String {
        let st = &self.state;
        let mut out = format!(
            "agent-runtime {} gateway listening on http://{}\n  provider: {} · model: {} · memory: {}\n",
            env!("CARGO_PKG_VERSION"),
            self.addr,
            st.provider.name(),
            st.provider.model(),
            st.memory.backend().as_str(),
        );
        if let Some(code) = self.pairing_code() {
            out.push_str(&pairing::banner(&code));
        } else if !st.pairing.require_pairing() {
            out.push_str(
                "  Pairing disabled (require_pairing = false): /webhook accepts any caller.\n",
            );
        } else {
            out.push_str("  Already paired: held tokens are accepted; no pairing code printed.\n");
        }
        out
    }

    /// Opens the memory backend and builds the provider's HTTP client in the background, so
    /// the first message does not pay for it. Call after printing the banner.
    pub fn warm_up(&self) {
        let st = self.state.clone();
        tokio::task::spawn_blocking(move || {
            if let Err(e) = st.memory.get() {
                tracing::error!(error = %e, "memory backend unavailable");
                st.metrics.record_error("memory");
            }
            st.provider.warm_up();
        });
    }

    /// Stops accepting connections and waits up to `grace` for in-flight requests; past it the
    /// server task is aborted. Returns `true` when it finished within `grace`.
    pub async fn shutdown(self, grace: Duration) -> bool {
        self.stop.cancel();
        // The channel clients end at their next await on the token; none is waited for
        // past `grace` (an in-flight send is abandoned with the process).
        let channels = futures::future::join_all(self.channels);
        let _ = tokio::time::timeout(grace, channels).await;
        let mut server = self.server;
        match tokio::time::timeout(grace, &mut server).await {
            Ok(Ok(Ok(()))) => true,
            Ok(Ok(Err(e))) => {
                tracing::error!(error = %e, "server ended with an error");
                true
            }
            Ok(Err(_)) => true,
            Err(_) => {
                server.abort();
                false
            }
        }
    }
}

//! The effectful half of the reconciler: each [`super::plan::Step`] carried
//! out against Docker, the agent's gateway and the store. Every operation is
//! idempotent and adopts what already exists, so a pass interrupted anywhere
//! (a crash, a cancelled pass) is finished by the next one.

use std::future::Future;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use super::plan::{backoff, exit_reason};
use super::{ports, Context, Inner};
use crate::addressing::{agent_gateway_base, gateway_base};
use crate::config::{AgentAddress, OrchestratorKind};
// TOKEN_STORE_PATH: where a runtime may keep paired tokens apart from
// `config.toml` (our runtime's `persist_tokens` store); an agent with issued
// tokens gets it emptied with every injection (`render_seeded`).
use crate::agent_files::{self, SeededTokens, TOKEN_STORE_PATH};
use crate::gateway::{GatewayError, PairCode};
use crate::model::Agent;
use crate::orchestrator::{
    ContainerSpec, FileEntry, ObservedContainer, Ownership, AGENT_ID_LABEL, TRAEFIK_NETWORK_LABEL,
    TRAEFIK_SWARM_NETWORK_LABEL,
};
use crate::runtime_profile::{ProfileCache, RuntimeProfile};
use crate::secrets::SecretField;
use crate::status::{DesiredState, Status};

/// How long `docker stop` waits before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Interval between `/health` polls while starting.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Fault injection for the crash-safety tests: with `ZCAAS_CRASH_AT=<point>`
/// in its environment the process aborts at that point of the deploy, with no
/// cleanup, as a SIGKILL would leave it. Points, in deploy order:
/// `after-row`, `after-create`, `after-upload`, `after-start`, `after-code`,
/// `after-pair`. Unset (always, outside those tests) it does nothing.
pub fn crash_point(point: &str) {
    static AT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    if AT
        .get_or_init(|| std::env::var("ZCAAS_CRASH_AT").ok())
        .as_deref()
        == Some(point)
    {
        eprintln!("ZCAAS_CRASH_AT={point}: aborting");
        std::process::abort();
    }
}

/// Delay injection for tests that must act while a deploy is under way:
/// with `ZCAAS_PAUSE_AT=<point>:<milliseconds>` the deploy sleeps that long
/// at that point (the points of [`crash_point`]). Unset (always, outside
/// those tests) it does nothing.
pub async fn pause_point(point: &str) {
    static AT: std::sync::OnceLock<Option<(String, u64)>> = std::sync::OnceLock::new();
    let at = AT.get_or_init(|| {
        let value = std::env::var("ZCAAS_PAUSE_AT").ok()?;
        let (at, ms) = value.split_once(':')?;
        Some((at.to_owned(), ms.parse().ok()?))
    });
    if let Some((at, ms)) = at {
        if at == point {
            tracing::info!(point, ms, "ZCAAS_PAUSE_AT: pausing the deploy");
            tokio::time::sleep(Duration::from_millis(*ms)).await;
        }
    }
}

/// A pass was cancelled at one of its cancellation points (the agent is
/// being deleted, or the service is shutting down).
#[derive(Debug, thiserror::Error)]
#[error("reconcile pass cancelled")]
pub struct Cancelled;

/// Runs `fut` unless `cancel` fires first. These are the reconciler's only
/// cancellation points, and they are all waits (a deploy permit, a pairing
/// code, `/health`): a Docker call that creates or changes something always
/// runs to its end, so a cancelled pass never leaves a create in flight in
/// the daemon to finish after the agent's DELETE.
async fn until_cancelled<T>(
    cancel: &CancellationToken,
    fut: impl Future<Output = T>,
) -> Result<T, Cancelled> {
    tokio::select! {
        biased;
        _ = cancel.cancelled() => Err(Cancelled),
        out = fut => Ok(out),
    }
}

/// The container spec for `agent` on its agents' network, publishing host
/// port `port` (none in `network` address mode), driven as `profile` (pure).
pub fn container_spec(
    ctx: &Context,
    agent: &Agent,
    profile: RuntimeProfile,
    port: Option<u16>,
    spec_hash: &str,
) -> ContainerSpec {
    let mut labels = ctx.orchestrator.ownership_labels();
    labels.insert(AGENT_ID_LABEL.to_owned(), agent.id.clone());
    ContainerSpec {
        agent_id: agent.id.clone(),
        name: agent.container_name(),
        slug: agent.slug.clone(),
        image: agent.image.clone(),
        network: agent.network_or(&ctx.config.network).to_owned(),
        host_port: port,
        memory_bytes: agent.memory_limit_mb * 1024 * 1024,
        nano_cpus: agent.nano_cpus,
        command: profile.command(),
        env: profile.env(),
        volume: agent.volume_name(),
        host: format!("{}.{}", agent.slug, ctx.config.domain),
        traefik_entrypoint: ctx.config.traefik_entrypoint.clone(),
        traefik_cert_resolver: ctx.config.traefik_cert_resolver.clone(),
        public_paths: ctx.config.public_paths.clone(),
        spec_hash: spec_hash.to_owned(),
        labels,
    }
}

/// The spec hash a container of `agent` is labelled with: its files' and
/// limits' ([`agent_files::spec_hash_seeded`]) and its Traefik routing
/// (router rule with the public paths, entrypoint, certificate resolver),
/// so a changed allow-list — or a container from before the allow-list —
/// is drift, and the agent's next start recreates its container with the
/// new labels (the volume kept).
pub(crate) fn spec_hash(
    ctx: &Context,
    agent: &Agent,
    profile: RuntimeProfile,
    files: &[FileEntry],
    seeded: &SeededTokens,
) -> String {
    let base = agent_files::spec_hash_seeded(agent, profile, files, seeded);
    let routing = serde_json::json!({
        "files": base,
        "rule": crate::orchestrator::router_rule(
            &format!("{}.{}", agent.slug, ctx.config.domain),
            &ctx.config.public_paths,
        ),
        "entrypoint": ctx.config.traefik_entrypoint,
        "cert_resolver": ctx.config.traefik_cert_resolver,
    });
    hex::encode(Sha256::digest(routing.to_string().as_bytes()))
}

/// Writes a transition and publishes it; `Ok(false)` if the row was not in
/// `from` any more (someone else moved it, the pass re-plans).
pub async fn transition(
    ctx: &Context,
    agent: &Agent,
    from: Status,
    to: Status,
    reason: &str,
) -> anyhow::Result<bool> {
    match ctx
        .store
        .lifecycle()
        .transition(&agent.id, from, to, reason, None)
        .await?
    {
        Some(event) => {
            tracing::info!(agent_id = %agent.id, slug = %agent.slug, from = %from, to = %to, reason, "status transition");
            ctx.events.publish(event);
            Ok(true)
        }
        None => Ok(false),
    }
}

/// Makes sure the agent's image is in the local engine, building our runtime
/// image from its binary when it is the one missing (never pulled).
async fn ensure_image(inner: &Inner, image: &str) -> anyhow::Result<()> {
    let ctx = &inner.ctx;
    if ctx.orchestrator.image_exists(image).await? {
        return Ok(());
    }
    if image != ctx.config.runtime_image {
        bail!("image {image} is not present on the engine (images are never pulled)");
    }
    let _build = inner.image_build.lock().await;
    if !ctx.orchestrator.image_exists(image).await? {
        tracing::info!(image, binary = %ctx.config.agent_binary.display(), "building the agent runtime image");
        ctx.orchestrator
            .build_agent_image(image, &ctx.config.agent_binary)
            .await
            .with_context(|| format!("building image {image}"))?;
    }
    Ok(())
}

/// The runtime profile `image` is driven as: the forced one of the
/// `runtime_profile` setting, else read from the image's labels once per
/// image id ([`ProfileCache`]).
async fn runtime_profile(ctx: &Context, image: &str) -> anyhow::Result<RuntimeProfile> {
    if let Some(forced) = ctx.config.runtime_profile.forced() {
        return Ok(forced);
    }
    let info = ctx
        .orchestrator
        .image_labels(image)
        .await?
        .ok_or_else(|| anyhow!("image {image} vanished before its profile was read"))?;
    let (profile, fresh) = ProfileCache::global().get_or_detect(&info.id, &info.labels);
    if fresh {
        tracing::info!(image, image_id = %info.id, %profile, "runtime profile read from the image");
    }
    Ok(profile)
}

/// The files injected into `agent`'s data volume (config and persona) in
/// `profile`'s dialect, with its secrets decrypted, and the tokens seeded
/// into them. The config always requires pairing. It lists paired tokens
/// only when the owner issued tokens for the agent's public URL
/// ([`seeded_tokens`]: `issued`, from [`issued_hashes`]); otherwise none,
/// and the agent pairs with a code.
fn render_files(
    ctx: &Context,
    agent: &Agent,
    profile: RuntimeProfile,
    issued: Vec<String>,
) -> anyhow::Result<(Vec<FileEntry>, SeededTokens)> {
    let api_key = agent
        .encrypted_api_key
        .as_deref()
        .map(|c| ctx.secrets.decrypt(&agent.id, SecretField::ApiKey, c))
        .transpose()
        .context("decrypting the API key")?;
    let channels = agent
        .channels(&ctx.secrets)
        .context("decrypting channels")?
        .unwrap_or_default();
    let seeded = seeded_tokens(ctx, agent, issued);
    let files = agent_files::render_seeded(
        agent,
        api_key.as_deref(),
        &channels,
        profile.dialect(),
        &seeded,
    )?;
    Ok((files, seeded))
}

/// The digests of the tokens `agent`'s owner issued (`agent_tokens`), read
/// once per start or re-pair.
async fn issued_hashes(ctx: &Context, agent: &Agent) -> anyhow::Result<Vec<String>> {
    ctx.store
        .agent_tokens()
        .hashes(&agent.id)
        .await
        .context("reading the agent's issued tokens")
}

/// The tokens seeded into `agent`'s `paired_tokens`: the `issued` digests
/// and, with them, the digest of the control plane's own stored token (see
/// [`ensure_own_token`]). None without issued tokens.
fn seeded_tokens(ctx: &Context, agent: &Agent, issued: Vec<String>) -> SeededTokens {
    if issued.is_empty() {
        return SeededTokens::none();
    }
    let own = agent
        .encrypted_token
        .as_deref()
        .and_then(|c| ctx.secrets.decrypt(&agent.id, SecretField::Token, c).ok())
        .map(|token| hex::encode(Sha256::digest(token.as_bytes())));
    SeededTokens { issued, own }
}

/// A bearer token in the shape our runtime (and upstream) issue at `/pair`:
/// `zc_` + 64 hex digits from the OS CSPRNG (`agent-runtime/src/tokens.rs`
/// `generate_token`).
fn mint_token() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!("zc_{}", hex::encode(bytes))
}

/// The protocol trap of issued tokens: a runtime prints a pairing code only
/// while it holds no token, so an agent whose `paired_tokens` are seeded
/// with its owner's tokens prints none, and the control plane could never
/// pair with it again. So before the container starts, an agent with
/// issued tokens gets the control plane's own token seeded too: the stored
/// one if the control plane holds one it can decrypt, else a fresh one
/// minted and stored (encrypted) here. [`pair`] then finds that stored
/// token accepted (the "kept" branch) after every start. `issued` are the
/// agent's issued digests ([`issued_hashes`]). Returns `agent` with the
/// token it now stores.
async fn ensure_own_token(
    ctx: &Context,
    agent: &Agent,
    issued: &[String],
) -> anyhow::Result<Agent> {
    let held = agent.encrypted_token.as_deref().is_some_and(|c| {
        ctx.secrets
            .decrypt(&agent.id, SecretField::Token, c)
            .is_ok()
    });
    if held || issued.is_empty() {
        return Ok(agent.clone());
    }
    let encrypted = ctx
        .secrets
        .encrypt(&agent.id, SecretField::Token, &mint_token())?;
    ctx.store
        .lifecycle()
        .set_token(&agent.id, &encrypted)
        .await
        .context("storing the control plane's own token")?;
    tracing::info!(agent_id = %agent.id, slug = %agent.slug,
        "minted the control plane's own token (the agent has issued tokens and prints no code)");
    let mut agent = agent.clone();
    agent.encrypted_token = Some(encrypted);
    Ok(agent)
}

/// STARTING → RUNNING: create or adopt the container, inject config and
/// persona, start it, pair with the code printed since this start, wait for
/// `/health`. If the agent's configuration changed meanwhile (a PATCH during
/// the deploy: its `config_generation` moved), the agent stays STARTING and
/// the next step deploys the new configuration. Any error is returned for
/// [`fail`] to record; [`Cancelled`] when `cancel` fired at a wait.
pub(crate) async fn start(
    inner: &Inner,
    agent: &Agent,
    cancel: &CancellationToken,
) -> anyhow::Result<()> {
    let ctx = &inner.ctx;
    let mut phase = std::time::Instant::now();
    let _permit = until_cancelled(cancel, inner.deploy_permits.acquire())
        .await?
        .map_err(|_| anyhow!("shutting down"))?;
    ctx.metrics.deploy_phase("queue", &mut phase);
    // The agent's network (claimed at its first deploy), ensured.
    let agent = &super::networks::claim(ctx, &inner.attached, agent).await?;
    let network = agent.network_or(&ctx.config.network).to_owned();
    ensure_image(inner, &agent.image).await?;
    let profile = runtime_profile(ctx, &agent.image).await?;
    if ctx.config.orchestrator == OrchestratorKind::Swarm && profile != RuntimeProfile::Zcaas {
        // Swarm delivers files as read-only secrets; upstream ZeroClaw
        // rewrites its config.toml at start (PITFALLS.md) and would fail.
        bail!(
            "image {} runs the upstream ZeroClaw runtime ({profile:?}), which rewrites its \
             config.toml; with orchestrator = swarm the configuration is a read-only Swarm secret, \
             so only zcaas's agent-runtime image is supported there",
            agent.image
        );
    }

    let port = host_port(ctx, agent).await?;
    let agent = &Agent {
        container_port: port.map(i64::from),
        ..agent.clone()
    };
    // Before the files are rendered: they seed its digest.
    let issued = issued_hashes(ctx, agent).await?;
    let agent = &ensure_own_token(ctx, agent, &issued).await?;
    let (files, seeded) = render_files(ctx, agent, profile, issued)?;
    let hash = spec_hash(ctx, agent, profile, &files, &seeded);
    let spec = container_spec(ctx, agent, profile, port, &hash);

    let name = agent.container_name();
    // Whether the container we end up with runs: only an adopted one can (a
    // created container is never started by a restart policy, and passes of
    // one agent never overlap), so no second inspect is needed.
    let existing = match ctx.orchestrator.inspect(&name).await? {
        Some(c) if c.agent_id.as_deref() != Some(agent.id.as_str()) => {
            remove_orphan_holding_name(ctx, c, &name).await?
        }
        other => other,
    };
    let running = match existing {
        Some(c) if !ctx.orchestrator.is_owned(&c.labels) => {
            bail!("container name {name} is taken by another zcaas installation's container")
        }
        Some(c)
            if c.spec_hash.as_deref() == Some(hash.as_str())
                && c.host_port == port
                && on_network(&c, &network) =>
        {
            c.running
        }
        Some(c) => {
            // Drift: the spec changed (PATCH), the port moved (or the
            // address mode changed: a port published or not), or the
            // network differs. Recreate; the data volume, and so the
            // agent's memory, is kept.
            ctx.orchestrator.remove(&c.id).await?;
            false
        }
        None => false,
    };
    ctx.metrics.deploy_phase("prepare", &mut phase);
    // Creates, or adopts the matching workload and writes its files again
    // (a pass cut short after the create may not have written them).
    let container_id = ctx
        .orchestrator
        .create(&spec, &files)
        .await
        .context("creating the container with its config and persona")?;
    ctx.store
        .lifecycle()
        .set_container(&agent.id, &container_id, &hash)
        .await?;
    ctx.metrics.deploy_phase("create", &mut phase);
    crash_point("after-create");
    crash_point("after-upload");
    until_cancelled(cancel, pause_point("after-upload")).await?;

    let incarnation = if running {
        // Adopted a container started by an interrupted pass: restart it so
        // it reads the injected files and prints a fresh code.
        ctx.orchestrator
            .restart(&container_id, STOP_TIMEOUT)
            .await?
    } else {
        ctx.orchestrator
            .start(&container_id)
            .await
            .context("starting the container")?
    };
    crash_point("after-start");
    let endpoint = ctx
        .orchestrator
        .endpoint(&container_id)
        .await?
        .ok_or_else(|| anyhow!("container vanished after start"))?;
    let base = gateway_base(&ctx.config, port.map(i64::from), &network, Some(&endpoint))
        .ok_or_else(|| anyhow!("the container has no address on network {network}"))?;
    ctx.metrics.deploy_phase("start", &mut phase);
    let started_at = incarnation.started_at;
    let target = PairingTarget {
        container_id: &container_id,
        port: port.map(i64::from),
        network: &network,
        files: &files,
    };
    let base = until_cancelled(cancel, pair(inner, agent, &target, base, started_at)).await??;
    ctx.metrics.deploy_phase("pair", &mut phase);
    until_cancelled(cancel, wait_healthy(inner, &container_id, &base)).await??;
    ctx.metrics.deploy_phase("healthy", &mut phase);

    let reason = if agent.ever_running {
        "started and re-paired"
    } else {
        "deployed and paired"
    };
    match ctx
        .store
        .lifecycle()
        .transition_to_running(agent, reason)
        .await?
    {
        Some(event) => {
            tracing::info!(agent_id = %agent.id, slug = %agent.slug, from = %Status::Starting,
                to = %Status::Running, reason, "status transition");
            // `last_health_at` was stamped by the transition itself.
            ctx.events.publish(event);
        }
        // A PATCH accepted during this deploy moved the generation (the
        // files injected above are stale), or the status moved. Either way
        // the pass re-plans: for STARTING, the next step sees the new spec
        // hash, recreates the container (the volume is kept) and deploys the
        // new configuration.
        None => tracing::info!(agent_id = %agent.id, slug = %agent.slug,
            "configuration or status changed during the deploy; re-planning"),
    }
    Ok(())
}

/// The host port `agent`'s container publishes: in `host-port` mode the one
/// it holds, or one claimed now ([`ports::claim`]); in `network` mode none
/// (nothing is published, so no `docker-proxy` runs per agent), and a port
/// held from `host-port` days is released.
async fn host_port(ctx: &Context, agent: &Agent) -> anyhow::Result<Option<u16>> {
    match (ctx.config.agent_address, agent.container_port) {
        (AgentAddress::HostPort, Some(p)) => {
            Ok(Some(u16::try_from(p).context("stored port out of range")?))
        }
        (AgentAddress::HostPort, None) => Ok(Some(ports::claim(ctx, &agent.id).await?)),
        (AgentAddress::Network, None) => Ok(None),
        (AgentAddress::Network, Some(_)) => {
            // The container is recorded again once created or adopted.
            ctx.store
                .lifecycle()
                .release_port_and_container(&agent.id)
                .await?;
            Ok(None)
        }
    }
}

/// Whether the observed container was made for `network`: its Traefik
/// network label, which every agent container carries (containers from
/// before several networks carry the first one's name).
fn on_network(c: &ObservedContainer, network: &str) -> bool {
    c.labels
        .get(TRAEFIK_NETWORK_LABEL)
        .or_else(|| c.labels.get(TRAEFIK_SWARM_NETWORK_LABEL))
        .map(String::as_str)
        == Some(network)
}

/// The agent's container name is held by a container of another agent id.
/// If that is an orphan of this installation (its agent's row is gone, e.g.
/// a create that finished in the daemon after the agent's DELETE), it is
/// removed so that the slug is never blocked, and `Ok(None)` returned.
/// Anything else (another installation's, a legacy object, a live agent's)
/// is left alone and refused with a clear error.
async fn remove_orphan_holding_name(
    ctx: &Context,
    c: ObservedContainer,
    name: &str,
) -> anyhow::Result<Option<ObservedContainer>> {
    let orphan = match (ctx.orchestrator.ownership(&c.labels), c.agent_id.as_deref()) {
        (Ownership::Ours, Some(other)) => ctx.store.lifecycle().get(other).await?.is_none(),
        _ => false,
    };
    if !orphan {
        bail!("container name {name} is taken by a container that is not this agent's");
    }
    tracing::info!(container = %c.id, name, "removing an orphaned container holding this agent's name");
    ctx.orchestrator.remove(&c.id).await?;
    Ok(None)
}

/// The container a pairing is for: its id, the host port it publishes (for
/// host-port addressing), its agents' network (for network addressing) and
/// the files to inject again if its runtime has to be reset ([`pair`]).
pub(crate) struct PairingTarget<'a> {
    pub container_id: &'a str,
    pub port: Option<i64>,
    pub network: &'a str,
    pub files: &'a [FileEntry],
}

/// How the control plane came by a token for one start of the runtime, or
/// why it could not ([`obtain_token`]).
#[derive(Debug)]
enum Obtained {
    /// Paired with this start's code (from its logs, or from `/pair/code`
    /// when the logs missed it): a new token.
    Paired(String),
    /// The runtime kept its tokens across the restart and printed no code;
    /// `/api/status` accepts the stored one.
    Kept(String),
    /// The runtime does not enforce pairing (its own config says
    /// `require_pairing = false`, e.g. the stock image's baked config).
    PairingDisabled,
    /// The runtime is paired with tokens the control plane does not hold
    /// (the stored one is rejected or there is none), so it prints no code.
    ForeignTokens,
    /// No code within the pairing timeout from a runtime that runs, answers
    /// and rejects the stored token, but does not say why (it has no
    /// `/pair/code` for us): most likely tokens kept on its volume that the
    /// control plane does not hold.
    Silent,
}

/// Obtains a token for the container start at `started_at`, and stores it
/// (encrypted) with that start. Returns the gateway base to use from now on.
///
/// Each state the runtime can be in has its branch, all bounded by the
/// pairing timeout ([`obtain_token`]):
/// - a code in the logs since this start (or from `GET /pair/code`): paired
///   with it, the code sent once;
/// - no code because the runtime kept its tokens: the stored token is kept
///   once `/api/status` accepts it;
/// - no code and the stored token rejected (tokens the control plane does
///   not hold: `/pair/code` has no code although pairing is enforced, or —
///   for a runtime that does not answer `/pair/code` to us — it stays
///   silent for the whole pairing timeout), or pairing disabled by the
///   runtime's own config: the control plane's files (`require_pairing =
///   true`, no paired token) and an empty token store ([`reset_files`]) are
///   written into the volume again and the container restarted **once**;
///   if that start still cannot be paired, the error says which state the
///   runtime was in (the reconciler's [`fail`] records it in `lastError`).
///
/// Upstream's `POST /api/pairing/initiate` is not a way out here: it runs
/// `require_auth` first (0.6.9 `src/gateway/api_pairing.rs`), so it only
/// mints a code for a caller whose token the runtime already accepts — the
/// "kept" branch.
pub(crate) async fn pair(
    inner: &Inner,
    agent: &Agent,
    target: &PairingTarget<'_>,
    base: String,
    started_at: DateTime<Utc>,
) -> anyhow::Result<String> {
    let ctx = &inner.ctx;
    let stored = agent
        .encrypted_token
        .as_deref()
        .and_then(|c| ctx.secrets.decrypt(&agent.id, SecretField::Token, c).ok());
    let (mut base, mut started_at, mut reset) = (base, started_at, None);
    let token = loop {
        let obtained = obtain_token(
            ctx,
            target.container_id,
            &base,
            started_at,
            stored.as_deref(),
        )
        .await?;
        let why = match obtained {
            Obtained::Paired(token) | Obtained::Kept(token) => break token,
            Obtained::PairingDisabled => {
                "the runtime does not require pairing (its configuration says \
                 require_pairing = false)"
            }
            Obtained::ForeignTokens => {
                "the runtime is paired with tokens zcaas does not hold and prints no pairing code"
            }
            Obtained::Silent => {
                "the runtime printed no pairing code in time and rejects the stored token"
            }
        };
        if let Some(first) = reset {
            bail!(
                "{why}, still after zcaas wrote its configuration (require_pairing = true, \
                 no paired tokens) and restarted the agent once (first: {first})"
            );
        }
        tracing::warn!(agent_id = %agent.id, slug = %agent.slug, reason = why,
            "resetting the runtime's pairing: writing the configuration again and restarting once");
        reset = Some(why);
        ctx.orchestrator
            .write_files(target.container_id, &reset_files(target.files))
            .await
            .context("writing the configuration again")?;
        let incarnation = ctx
            .orchestrator
            .restart(target.container_id, STOP_TIMEOUT)
            .await
            .context("restarting the agent to reset its pairing")?;
        started_at = incarnation.started_at;
        let endpoint = ctx
            .orchestrator
            .endpoint(target.container_id)
            .await?
            .ok_or_else(|| anyhow!("container vanished after the restart"))?;
        base = gateway_base(&ctx.config, target.port, target.network, Some(&endpoint))
            .ok_or_else(|| anyhow!("the agent has no gateway address after the restart"))?;
    };
    crash_point("after-pair");
    let encrypted = ctx.secrets.encrypt(&agent.id, SecretField::Token, &token)?;
    ctx.store
        .lifecycle()
        .set_pairing(&agent.id, &encrypted, started_at)
        .await?;
    tracing::info!(agent_id = %agent.id, slug = %agent.slug, "paired");
    Ok(base)
}

/// The files a pairing reset writes: the agent's files and an empty token
/// store, so that no runtime comes back holding tokens the control plane
/// does not. (A file a runtime does not use is harmless.)
fn reset_files(files: &[FileEntry]) -> Vec<FileEntry> {
    let mut out: Vec<FileEntry> = files
        .iter()
        .filter(|f| f.path != TOKEN_STORE_PATH)
        .cloned()
        .collect();
    out.push(FileEntry {
        path: TOKEN_STORE_PATH.to_owned(),
        contents: b"# emptied by zcaas: pairing reset\n".to_vec(),
        mode: 0o600,
    });
    out
}

/// Finds out, within the pairing timeout, which state the runtime's start at
/// `started_at` is in, and pairs when there is a code. Two sources race: the
/// code in the logs since this start, and a probe of the gateway
/// ([`probe_gateway`]) every [`PROBE_INTERVAL`]. Only the winner acts, so a
/// code is sent once. Errors when neither decides in time (with why: the
/// container died, or no code came).
async fn obtain_token(
    ctx: &Context,
    container_id: &str,
    base: &str,
    started_at: DateTime<Utc>,
    stored: Option<&str>,
) -> anyhow::Result<Obtained> {
    let timeout = ctx.config.pairing_timeout;
    let logs = async {
        match super::pairing::wait_for_code(
            ctx.orchestrator.as_ref(),
            container_id,
            started_at,
            timeout,
        )
        .await?
        {
            Some(code) => Ok::<_, anyhow::Error>(Some(Found::Code(code))),
            None => Ok(None),
        }
    };
    let probe = async {
        loop {
            match probe_gateway(ctx, base, stored).await {
                Some(found) => return found,
                None => tokio::time::sleep(PROBE_INTERVAL).await,
            }
        }
    };
    let found = tokio::select! {
        found = logs => found?,
        found = tokio::time::timeout(timeout, probe) => found.ok(),
    };
    match found {
        Some(Found::Code(code)) => {
            crash_point("after-code");
            Ok(Obtained::Paired(pair_with_code(ctx, base, &code).await?))
        }
        Some(Found::State(state)) => Ok(state),
        None => {
            // Running, answering, enforcing pairing, and not taking the
            // stored token: worth one reset. Anything else (it died, it
            // does not answer) is reported as it is.
            let running =
                matches!(ctx.orchestrator.inspect(container_id).await, Ok(Some(c)) if c.running);
            let enforced = matches!(ctx.gateway.pairing_open(base).await, Ok(false));
            let rejected = match stored {
                Some(token) => matches!(ctx.gateway.token_valid(base, token).await, Ok(false)),
                None => true,
            };
            if running && enforced && rejected {
                Ok(Obtained::Silent)
            } else {
                bail!("{}", no_code_reason(ctx, container_id).await)
            }
        }
    }
}

/// How often [`obtain_token`] probes the gateway while no code is known.
const PROBE_INTERVAL: Duration = Duration::from_millis(300);

/// What a source of [`obtain_token`] found: a code to pair with (from the
/// logs, or handed out by `/pair/code`), or the runtime's state without one.
enum Found {
    Code(String),
    State(Obtained),
}

/// One look at the gateway, `None` while it decides nothing (not up yet,
/// unpaired with its code only in the logs, a route it does not answer):
/// 1. `/api/status` without credentials answers 200 → pairing is disabled;
/// 2. the stored token is accepted by `/api/status` → kept;
/// 3. `/pair/code` hands out a code → pair with it (the logs missed it);
/// 4. `/pair/code` has no code although pairing is enforced → the runtime
///    is paired with tokens we do not hold (our stored one was just
///    rejected, or there is none).
///
/// None of these counts towards upstream's failed-attempt lockout (only
/// `/pair` and bearer checks of `/webhook` do).
async fn probe_gateway(ctx: &Context, base: &str, stored: Option<&str>) -> Option<Found> {
    if ctx.gateway.pairing_open(base).await.ok()? {
        return Some(Found::State(Obtained::PairingDisabled));
    }
    if let Some(token) = stored {
        if ctx.gateway.token_valid(base, token).await.ok()? {
            return Some(Found::State(Obtained::Kept(token.to_owned())));
        }
    }
    match ctx.gateway.pair_code(base).await.ok()? {
        PairCode::Code(code) => Some(Found::Code(code)),
        PairCode::None => Some(Found::State(Obtained::ForeignTokens)),
        PairCode::Unavailable => None,
    }
}

/// `POST /pair` once with `code`. The gateway may print its banner a moment
/// before it accepts connections, so only "unreachable" is retried; a code is
/// never sent twice (upstream counts failures per peer IP, and every host
/// caller shares one IP behind port publishing).
async fn pair_with_code(ctx: &Context, base: &str, code: &str) -> anyhow::Result<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match ctx.gateway.pair(base, code).await {
            Ok(token) => return Ok(token),
            Err(GatewayError::Unreachable(_)) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(POLL_INTERVAL).await;
            }
            Err(e) => return Err(anyhow!(e).context("pairing")),
        }
    }
}

/// Why no pairing code came: the container died (exit code, OOM) or it
/// printed none in time.
async fn no_code_reason(ctx: &Context, container_id: &str) -> String {
    match ctx.orchestrator.inspect(container_id).await {
        Ok(Some(c)) if !c.running => exit_reason(&c),
        _ => format!(
            "no pairing code in the container's logs within {} s",
            ctx.config.pairing_timeout.as_secs()
        ),
    }
}

/// Polls `/health` until it answers 200, the container dies, or the health
/// timeout passes. A redirect or an oversize answer is hostile, not
/// transient: it fails at once, naming the cause.
async fn wait_healthy(inner: &Inner, container_id: &str, base: &str) -> anyhow::Result<()> {
    let ctx = &inner.ctx;
    let deadline = tokio::time::Instant::now() + ctx.config.health_timeout;
    loop {
        let last = match ctx.gateway.health(base).await {
            Ok(_) => return Ok(()),
            Err(e @ (GatewayError::Redirect { .. } | GatewayError::TooLarge { .. })) => {
                bail!("/health: {e}")
            }
            Err(e) => e,
        };
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "/health did not answer within {} s (last: {last})",
                ctx.config.health_timeout.as_secs()
            );
        }
        if let Some(c) = ctx.orchestrator.inspect(container_id).await? {
            if !c.running && c.state != "restarting" {
                bail!("{}", exit_reason(&c));
            }
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// STOPPING → STOPPED, then STOPPED → STARTING when the owner wants it
/// running (restart, reconfigure).
pub(crate) async fn stop(inner: &Inner, agent: &Agent) -> anyhow::Result<()> {
    let ctx = &inner.ctx;
    if let Some(c) = ctx.orchestrator.inspect(&agent.container_name()).await? {
        ctx.orchestrator
            .stop(&c.id, STOP_TIMEOUT)
            .await
            .context("stopping the container")?;
    }
    if transition(ctx, agent, Status::Stopping, Status::Stopped, "stopped").await?
        && agent.desired_state == DesiredState::Running
    {
        transition(
            ctx,
            agent,
            Status::Stopped,
            Status::Starting,
            "starting again",
        )
        .await?;
    }
    Ok(())
}

/// Stops a container that runs although its agent is STOPPED.
pub(crate) async fn enforce_stopped(inner: &Inner, agent: &Agent) -> anyhow::Result<()> {
    if let Some(c) = inner
        .ctx
        .orchestrator
        .inspect(&agent.container_name())
        .await?
    {
        inner.ctx.orchestrator.stop(&c.id, STOP_TIMEOUT).await?;
    }
    Ok(())
}

/// Re-pairs a RUNNING agent whose container started again (Docker's restart
/// policy, `docker restart`, a crash, a daemon restart).
pub(crate) async fn repair(
    inner: &Inner,
    agent: &Agent,
    reason: &str,
    cancel: &CancellationToken,
) -> anyhow::Result<()> {
    let ctx = &inner.ctx;
    let c = ctx
        .orchestrator
        .inspect(&agent.container_name())
        .await?
        .filter(|c| c.agent_id.as_deref() == Some(agent.id.as_str()))
        .ok_or_else(|| anyhow!("container vanished"))?;
    let base = agent_gateway_base(&ctx.config, agent, Some(&c.endpoint()))
        .ok_or_else(|| anyhow!("the agent has no gateway address"))?;
    let started_at = c
        .started_at
        .ok_or_else(|| anyhow!("container never started"))?;
    tracing::info!(agent_id = %agent.id, slug = %agent.slug, reason, "re-pairing");
    let profile = runtime_profile(ctx, &agent.image).await?;
    let issued = issued_hashes(ctx, agent).await?;
    let (files, _) = render_files(ctx, agent, profile, issued)?;
    let target = PairingTarget {
        container_id: &c.id,
        port: agent.container_port,
        network: agent.network_or(&ctx.config.network),
        files: &files,
    };
    let base = until_cancelled(cancel, pair(inner, agent, &target, base, started_at)).await??;
    until_cancelled(cancel, wait_healthy(inner, &c.id, &base)).await??;
    ctx.store
        .lifecycle()
        .set_healthy(&agent.id, Utc::now())
        .await?;
    Ok(())
}

/// Records a failure: removes the container (and, for an agent that never
/// ran, its volume), releases the port, stores the reason and moves the agent
/// to ERROR. Nothing of a failed deploy is left behind. While the retry budget
/// lasts and the owner wants the agent running, `next_attempt_at` schedules an
/// automatic retry with exponential backoff.
pub(crate) async fn fail(inner: &Inner, agent: &Agent, reason: &str) -> anyhow::Result<()> {
    let ctx = &inner.ctx;
    tracing::warn!(agent_id = %agent.id, slug = %agent.slug, reason, "agent failed");
    remove_container(ctx, agent).await?;
    if !agent.ever_running {
        // The deploy's own rollback: the volume it created for an agent that
        // never ran holds only the injected files (never a sweep).
        ctx.orchestrator
            .remove_agent_volume(&agent.volume_name(), &agent.id)
            .await?;
    }
    ctx.store
        .lifecycle()
        .release_port_and_container(&agent.id)
        .await?;
    let attempts = agent.attempts + 1;
    let budget = i64::from(ctx.config.retry_budget);
    let (next, reason) = if attempts < budget && agent.desired_state == DesiredState::Running {
        let delay = backoff(
            attempts,
            ctx.config.retry_backoff_base,
            ctx.config.retry_backoff_max,
        );
        let next = Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default();
        (
            Some(next),
            format!(
                "{reason} (attempt {attempts} of {budget}, retrying in {} ms)",
                delay.as_millis()
            ),
        )
    } else {
        (
            None,
            format!("{reason} (attempt {attempts} of {budget}, giving up)"),
        )
    };
    ctx.store
        .lifecycle()
        .set_error(&agent.id, &reason, attempts, next)
        .await?;
    transition(ctx, agent, agent.status, Status::Error, &reason).await?;
    Ok(())
}

/// Removes the agent's container, volume and row (its port goes with the row).
pub(crate) async fn delete(inner: &Inner, agent: &Agent) -> anyhow::Result<()> {
    let ctx = &inner.ctx;
    remove_container(ctx, agent).await?;
    ctx.orchestrator
        .remove_agent_volume(&agent.volume_name(), &agent.id)
        .await?;
    ctx.store.lifecycle().delete(&agent.id).await?;
    tracing::info!(agent_id = %agent.id, slug = %agent.slug, "agent deleted");
    Ok(())
}

/// Removes the agent's container by name and, if it differs, by stored id —
/// only when it carries this agent's id label.
async fn remove_container(ctx: &Context, agent: &Agent) -> anyhow::Result<()> {
    let mut targets = vec![agent.container_name()];
    targets.extend(agent.container_id.clone());
    for target in targets {
        if let Some(c) = ctx.orchestrator.inspect(&target).await? {
            if c.agent_id.as_deref() == Some(agent.id.as_str()) {
                ctx.orchestrator.remove(&c.id).await?;
            }
        }
    }
    Ok(())
}

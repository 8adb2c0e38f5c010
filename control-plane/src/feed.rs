//! The live event feed across replicas (PostgreSQL): every replica's
//! [`EventBus`] carries every replica's transitions, in id order.
//!
//! A transition is published by the replica that committed it
//! ([`EventBus::publish`] on a [`EventBus::relayed`] bus). One relay task per
//! replica ([`run`]) then:
//!
//! - announces it to the other replicas: `NOTIFY zcaas_events, '<id>'`;
//! - reads back from the database every event above the last one it
//!   delivered (`history().after(All, last, …)`), oldest first, and
//!   delivers them to this replica's subscribers.
//!
//! It reads back the same way on every notification from another replica,
//! after every (re)connection of its `LISTEN`, and every
//! [`SAFETY_NET`] in case a notification was lost. The store guarantees
//! that event ids become visible in increasing order, so "every event
//! above the last one delivered" never skips one: each replica's
//! subscribers see one gapless sequence in id order, whichever replica
//! made each transition (`api::events` keeps joining that feed to the
//! replayed history by id, as on one replica).

use std::time::Duration;

use futures::{FutureExt, StreamExt};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::events::EventBus;
use crate::store::history::Scope;
use crate::store::Store;

/// The notification channel of committed events (payload: an event id).
pub const EVENTS_CHANNEL: &str = "zcaas_events";
/// Interval of the read-back that does not wait for a notification.
pub const SAFETY_NET: Duration = Duration::from_secs(2);
/// Events read back per query.
const BATCH: u32 = 500;
/// Wait before listening again after the connection failed.
const RELISTEN: Duration = Duration::from_secs(1);

/// Relays events between `bus` (a [`EventBus::relayed`] bus, whose commits
/// arrive on `committed`) and the other replicas until `cancel` fires.
/// Starts after the newest event stored now: subscribers replay older ones
/// from the history.
pub async fn run(
    store: Store,
    bus: EventBus,
    mut committed: watch::Receiver<i64>,
    cancel: CancellationToken,
) {
    let mut last = loop {
        match store.history().last_id().await {
            Ok(id) => break id,
            Err(e) => tracing::warn!(error = %e, "event relay: reading the last event id failed"),
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(RELISTEN) => {}
        }
    };
    loop {
        let mut notes = match store.admin().listen(&[EVENTS_CHANNEL]).await {
            Ok(Some(notes)) => notes,
            // No other replica: local commits and the timer are all there is.
            Ok(None) => futures::stream::pending().boxed(),
            // Listen again later; meanwhile read back on the timer.
            Err(e) => {
                tracing::warn!(error = %e, "event relay: LISTEN failed; reading back on a timer");
                futures::stream::once(tokio::time::sleep(RELISTEN * 10))
                    .filter_map(|()| async { None })
                    .boxed()
            }
        };
        // Listening: whatever commits from now on is announced; read back
        // what committed before.
        catch_up(&store, &bus, &mut last).await;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                changed = committed.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let id = *committed.borrow_and_update();
                    catch_up(&store, &bus, &mut last).await;
                    if let Err(e) = store.admin().notify(EVENTS_CHANNEL, &id.to_string()).await {
                        tracing::warn!(error = %e, id, "event relay: NOTIFY failed; other replicas read it back on their timer");
                    }
                }
                note = notes.next() => match note {
                    Some(Ok(_)) => {
                        // One read back for a burst of notifications.
                        let mut ended = None;
                        while let Some(more) = notes.next().now_or_never() {
                            match more {
                                Some(Ok(_)) => {}
                                other => {
                                    ended = Some(other);
                                    break;
                                }
                            }
                        }
                        catch_up(&store, &bus, &mut last).await;
                        if ended.is_some() {
                            tracing::info!("event relay: LISTEN connection ended; listening again");
                            break;
                        }
                    }
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "event relay: LISTEN connection failed; listening again");
                        break;
                    }
                    None => {
                        tracing::info!("event relay: LISTEN connection ended; listening again");
                        break;
                    }
                },
                _ = tokio::time::sleep(SAFETY_NET) => catch_up(&store, &bus, &mut last).await,
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(RELISTEN) => {}
        }
    }
}

/// Delivers every stored event above `last`, oldest first, and moves `last`
/// to the newest delivered. A failed read is logged; the next trigger
/// reads again from the same point.
async fn catch_up(store: &Store, bus: &EventBus, last: &mut i64) {
    loop {
        match store.history().after(&Scope::All, *last, BATCH).await {
            Ok(events) => {
                let n = events.len();
                for event in events {
                    if event.id > *last {
                        *last = event.id;
                        bus.deliver(event);
                    }
                }
                if n < BATCH as usize {
                    return;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, after = *last, "event relay: reading events back failed");
                return;
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::model::{Plan, Role};
    use crate::status::Status;
    use crate::store::{agents, users};

    /// A store with one user and one PENDING agent; returns the agent id.
    async fn store_with_agent(dir: &std::path::Path) -> (Store, String) {
        let url = format!("sqlite://{}", dir.join("zcaas.db").display());
        let store = Store::open(&url).await.unwrap();
        let user = store
            .users()
            .create(&users::NewUser {
                email: "feed@example.test",
                password_hash: "x",
                role: Role::User,
                plan: Plan::Free,
            })
            .await
            .unwrap();
        let new = agents::NewAgent {
            id: "agent-feed".into(),
            user_id: user.id,
            name: "feed".into(),
            slug: "feed".into(),
            agent_name: "Agent".into(),
            user_name: None,
            timezone: "UTC".into(),
            communication_style: None,
            provider: "openai".into(),
            provider_url: None,
            model: "gpt-4o-mini".into(),
            temperature: 0.7,
            memory_backend: "sqlite".into(),
            auto_save: true,
            encrypted_api_key: None,
            encrypted_channels: None,
            subdomain: "feed.agents.test".into(),
            image: "zcaas/agent-runtime:latest".into(),
            memory_limit_mb: 256,
            nano_cpus: 500_000_000,
            channel_tokens: Vec::new(),
        };
        let (agent, _) = store.agents().insert_pending(&new, None).await.unwrap();
        (store, agent.id)
    }

    /// Events committed "elsewhere" (never published here) reach this
    /// replica's subscribers in id order: at once when a local commit
    /// triggers a read back, else by the safety net.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_relay_delivers_every_stored_event_in_id_order() {
        let dir = tempfile::tempdir().unwrap();
        let (store, id) = store_with_agent(dir.path()).await;
        let (bus, committed) = EventBus::relayed();
        let mut rx = bus.subscribe();
        let cancel = CancellationToken::new();
        let relay = tokio::spawn(run(store.clone(), bus.clone(), committed, cancel.clone()));
        // The relay starts after the newest stored event (the creation).
        tokio::time::sleep(Duration::from_millis(200)).await;

        let cycle = [
            (Status::Pending, Status::Starting),
            (Status::Starting, Status::Error),
            (Status::Error, Status::Pending),
            (Status::Pending, Status::Starting),
        ];
        let mut written = Vec::new();
        for (from, to) in cycle {
            let event = store
                .lifecycle()
                .transition(&id, from, to, "test", None)
                .await
                .unwrap()
                .unwrap();
            written.push(event);
        }
        // Only the last one is published here: the others committed on
        // "another replica".
        bus.publish(written.last().unwrap().clone());
        for want in &written {
            let got = tokio::time::timeout(Duration::from_secs(1), rx.recv())
                .await
                .expect("delivered at once")
                .unwrap();
            assert_eq!(got.id, want.id);
            assert_eq!((got.from, got.to), (want.from, want.to));
        }

        // Not published anywhere: the safety net reads it back.
        let late = store
            .lifecycle()
            .transition(&id, Status::Starting, Status::Error, "late", None)
            .await
            .unwrap()
            .unwrap();
        let got = tokio::time::timeout(SAFETY_NET + Duration::from_secs(1), rx.recv())
            .await
            .expect("delivered by the safety net")
            .unwrap();
        assert_eq!(got.id, late.id);
        // Published again (a duplicate announcement): not delivered twice.
        bus.publish(late);
        assert!(
            tokio::time::timeout(Duration::from_millis(300), rx.recv())
                .await
                .is_err(),
            "no duplicate"
        );
        cancel.cancel();
        relay.await.unwrap();
    }
}

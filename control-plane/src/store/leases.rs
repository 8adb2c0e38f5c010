//! `leases`: named leases with a holder and an expiry, timed by the
//! database's clock so replicas whose clocks differ still agree (the lease
//! pattern of Gray & Cheriton, "Leases", SOSP 1989; Kubernetes'
//! `coordination.k8s.io` Lease is the same idea).

use std::time::Duration;

/// Named leases.
#[async_trait::async_trait]
pub trait LeaseStore: Send + Sync {
    /// Takes lease `name` for `holder` for `ttl` from the database's now, or
    /// renews it if `holder` already holds it. Returns whether `holder`
    /// holds it afterwards: `false` while another holder's lease has not
    /// expired.
    ///
    /// Guarantee: at any instant of the database's clock at most one holder
    /// has an unexpired lease (one conditional upsert).
    async fn try_acquire(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, sqlx::Error>;

    /// Gives lease `name` up if `holder` holds it (a clean shutdown lets a
    /// standby take over at once instead of after the TTL).
    async fn release(&self, name: &str, holder: &str) -> Result<(), sqlx::Error>;

    /// The current holder of `name` and the seconds its lease has left, if
    /// it is held and unexpired.
    async fn holder(&self, name: &str) -> Result<Option<(String, f64)>, sqlx::Error>;
}

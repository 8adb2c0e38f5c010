//! The Slack client (being written: issue 12).

use tokio_util::sync::CancellationToken;

use super::ChannelContext;
use crate::config::channels::SlackConfig;

/// Runs the Slack client until `cancel` fires.
pub async fn run(config: SlackConfig, ctx: ChannelContext, cancel: CancellationToken) {
    let _ = (config, ctx);
    cancel.cancelled().await;
}

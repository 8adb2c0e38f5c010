//! The Discord client (being written: issue 12).

use tokio_util::sync::CancellationToken;

use super::ChannelContext;
use crate::config::channels::DiscordConfig;

/// Runs the Discord client until `cancel` fires.
pub async fn run(config: DiscordConfig, ctx: ChannelContext, cancel: CancellationToken) {
    let _ = (config, ctx);
    cancel.cancelled().await;
}

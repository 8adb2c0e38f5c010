//! The Telegram client (being written: issue 12).

use tokio_util::sync::CancellationToken;

use super::ChannelContext;
use crate::config::channels::TelegramConfig;

/// Runs the Telegram client until `cancel` fires.
pub async fn run(config: TelegramConfig, ctx: ChannelContext, cancel: CancellationToken) {
    let _ = (config, ctx);
    cancel.cancelled().await;
}

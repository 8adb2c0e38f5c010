//! One agent turn: persona + the conversation's recalled memory + the message → the provider
//! → the answer, stored in the conversation's memory with `auto_save`. `/webhook`
//! ([`crate::http::webhook`], conversation
//! [`WEBHOOK_CONVERSATION`](crate::memory::WEBHOOK_CONVERSATION)) and every channel client
//! ([`crate::channels`], one conversation per chat: `telegram:<chat id>`, …) run the same turn;
//! memory is kept per conversation, so no chat sees another's history (see [`crate::memory`]).

use std::time::Instant;

use crate::http::AppState;
use crate::memory::Recall;
use crate::persona;
use crate::providers::ChatRequest;

/// Why a turn produced no answer.
#[derive(Debug, thiserror::Error)]
pub enum TurnError {
    /// The provider failed (its error, already free of secrets, is in the `/health` component
    /// and the log; callers answer with a generic message).
    #[error("LLM request failed")]
    Provider,
    /// The preparation task panicked or was cancelled.
    #[error("the turn was interrupted")]
    Interrupted,
}

/// Builds the system prompt and `conversation`'s history (blocking file and SQLite reads).
fn prepare(st: &AppState, conversation: &str) -> (String, Vec<crate::memory::Turn>) {
    let sections = persona::load_sections(&st.workspace);
    let recall = match st.memory.get().and_then(|m| m.recall(conversation)) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "memory recall failed; answering without history");
            st.metrics.record_error("memory");
            Recall::default()
        }
    };
    let notes = recall
        .notes
        .as_deref()
        .map(|n| ("Recent conversation (memory/YYYY-MM-DD.md)", n));
    (persona::assemble(&sections, notes), recall.turns)
}

/// Runs one turn for `message` received in `conversation` (`webhook` for `/webhook`,
/// `<channel>:<chat>` for a channel) and returns the model's answer text. Only that
/// conversation's memory is recalled. Records the provider's metrics and `/health` component;
/// with `auto_save` the exchange is stored in the conversation's memory before returning.
///
/// # Errors
/// [`TurnError`].
pub async fn run(st: &AppState, conversation: &str, message: &str) -> Result<String, TurnError> {
    let _session = st.metrics.session();
    let st2 = st.clone();
    let conversation2 = conversation.to_owned();
    let (system, history) = tokio::task::spawn_blocking(move || prepare(&st2, &conversation2))
        .await
        .map_err(|_| TurnError::Interrupted)?;

    let started = Instant::now();
    let result = st
        .provider
        .chat(ChatRequest {
            system: &system,
            history: &history,
            message,
        })
        .await;
    let component = st.provider_component();
    let (provider, model) = (st.provider.name(), st.provider.model());
    match result {
        Ok(reply) => {
            st.metrics.record_llm(
                provider,
                model,
                true,
                started.elapsed(),
                (reply.input_tokens, reply.output_tokens),
            );
            st.health.mark_ok(&component);
            if st.auto_save {
                let st2 = st.clone();
                let (conversation, question, answer) = (
                    conversation.to_owned(),
                    message.to_owned(),
                    reply.text.clone(),
                );
                let saved = tokio::task::spawn_blocking(move || {
                    st2.memory
                        .get()
                        .and_then(|m| m.save(&conversation, &question, &answer))
                })
                .await;
                if let Ok(Err(e)) = saved {
                    tracing::warn!(error = %e, "memory save failed");
                    st.metrics.record_error("memory");
                }
            }
            Ok(reply.text)
        }
        Err(e) => {
            st.metrics
                .record_llm(provider, model, false, started.elapsed(), (None, None));
            st.health.mark_error(&component, &e.to_string());
            tracing::error!(provider, model, error = %e, "LLM request failed");
            Err(TurnError::Provider)
        }
    }
}

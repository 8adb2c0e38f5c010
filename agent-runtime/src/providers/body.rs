//! Reading a provider's reply body with a size cap.
//!
//! A broken or hostile provider (or a `custom:<url>` pointing somewhere odd) must not make the
//! gateway buffer an unbounded body. Every wire format reads its reply through
//! [`read_capped`]: a `Content-Length` above the cap fails before any byte is read, and a
//! chunked or lying body is read chunk by chunk and abandoned as soon as it passes the cap, so
//! at most [`MAX_REPLY_BYTES`] plus one network chunk are ever held. The connection is then
//! dropped, which tells the server to stop sending.

use super::ProviderError;

/// Largest provider reply body read, in bytes (1 MiB = 1 048 576). A model answer is a few
/// KiB of JSON; a reply over this becomes [`ProviderError::TooLarge`], the ordinary provider
/// failure (500 `{"error":"LLM request failed"}` on `/webhook`).
pub const MAX_REPLY_BYTES: usize = 1_048_576;

/// Reads the whole body of `resp`, at most `limit` bytes.
///
/// `on_error` turns a read failure (timeout, reset) into the caller's [`ProviderError`].
///
/// # Errors
/// [`ProviderError::TooLarge`] when the declared or actual length exceeds `limit` (nothing
/// past the offending chunk is read); `on_error(e)` when reading fails.
pub(super) async fn read_capped(
    mut resp: reqwest::Response,
    limit: usize,
    on_error: impl Fn(reqwest::Error) -> ProviderError,
) -> Result<Vec<u8>, ProviderError> {
    let declared = resp
        .content_length()
        .map(|n| usize::try_from(n).unwrap_or(usize::MAX));
    if declared.is_some_and(|n| n > limit) {
        return Err(ProviderError::TooLarge(limit));
    }
    let mut body = Vec::with_capacity(declared.unwrap_or(0));
    while let Some(chunk) = resp.chunk().await.map_err(&on_error)? {
        if chunk.len() > limit - body.len() {
            return Err(ProviderError::TooLarge(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A one-shot HTTP/1.1 server writing `head` then `body_len` bytes of `b' '` in 16 KiB
    /// writes; returns its URL and a task yielding how many body bytes it got out.
    async fn server(head: String, body_len: usize) -> (String, tokio::task::JoinHandle<usize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/", listener.local_addr().expect("addr"));
        let task = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.expect("accept");
            let mut buf = [0u8; 4096];
            let _ = sock.read(&mut buf).await;
            if sock.write_all(head.as_bytes()).await.is_err() {
                return 0;
            }
            let chunk = [b' '; 16 * 1024];
            let mut sent = 0;
            while sent < body_len {
                let n = chunk.len().min(body_len - sent);
                if sock.write_all(&chunk[..n]).await.is_err() {
                    break;
                }
                sent += n;
            }
            sent
        });
        (url, task)
    }

    fn transport(e: reqwest::Error) -> ProviderError {
        ProviderError::Transport(e.without_url().to_string())
    }

    #[tokio::test]
    async fn reads_a_body_up_to_the_cap() {
        let (url, task) = server(
            "HTTP/1.1 200 OK\r\ncontent-length: 1000\r\nconnection: close\r\n\r\n".into(),
            1000,
        )
        .await;
        let resp = reqwest::get(url).await.expect("get");
        let body = read_capped(resp, 1000, transport).await.expect("read");
        assert_eq!(body.len(), 1000);
        assert_eq!(task.await.expect("server"), 1000);
    }

    #[tokio::test]
    async fn a_declared_length_over_the_cap_is_refused_unread() {
        let (url, _task) = server(
            "HTTP/1.1 200 OK\r\ncontent-length: 5000000\r\nconnection: close\r\n\r\n".into(),
            0,
        )
        .await;
        let resp = reqwest::get(url).await.expect("get");
        assert_eq!(
            read_capped(resp, MAX_REPLY_BYTES, transport).await,
            Err(ProviderError::TooLarge(MAX_REPLY_BYTES))
        );
    }

    #[tokio::test]
    async fn an_undeclared_body_is_abandoned_past_the_cap() {
        // No Content-Length, no chunked encoding: the body runs until the server closes,
        // here after 64 MiB.
        let total = 64 * MAX_REPLY_BYTES;
        let (url, task) =
            server("HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n".into(), total).await;
        let resp = reqwest::get(url).await.expect("get");
        assert_eq!(
            read_capped(resp, MAX_REPLY_BYTES, transport).await,
            Err(ProviderError::TooLarge(MAX_REPLY_BYTES))
        );
        // The response was dropped, so the server's writes fail once the socket buffers
        // (a few MiB on loopback) are full: far less than the whole body left it.
        let sent = task.await.expect("server");
        assert!(sent < total / 4, "server sent {sent} of {total} bytes");
    }
}

//! `agent-runtime status`: GET the local `/health` — the image's `HEALTHCHECK` (a scratch
//! image has no curl).
//!
//! Plain blocking HTTP/1.1 over `std::net` (no runtime, no TLS): connect to the configured
//! port on loopback (an unspecified host such as `0.0.0.0` or `::` is probed on `127.0.0.1` /
//! `::1`), 2 s to connect, 3 s to read. Healthy = status 200 and a JSON body with
//! `"status":"ok"`.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::time::Duration;

use crate::config::Config;

/// Output format of `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Nothing printed; exit 0 when healthy, 1 otherwise.
    ExitCode,
    /// One human line.
    Text,
    /// The `/health` body as received.
    Json,
}

/// Where `status` connects for a gateway configured on `host:port`.
pub fn probe_addr(host: &str, port: u16) -> SocketAddr {
    let ip = match host.parse::<IpAddr>() {
        Ok(IpAddr::V4(v4)) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        Ok(IpAddr::V6(v6)) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        Ok(ip) => ip,
        Err(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
    };
    SocketAddr::new(ip, port)
}

/// Fetches `/health` from `addr`: `Ok(body)` when healthy, `Err(reason)` otherwise.
///
/// # Errors
/// A human reason (connection refused, non-200, status not ok).
pub fn check(addr: SocketAddr) -> Result<String, String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .map_err(|e| e.to_string())?;
    let req = format!("GET /health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(req.as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    let mut raw = Vec::new();
    stream
        .take(1 << 20)
        .read_to_end(&mut raw)
        .map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| "malformed HTTP response".to_owned())?;
    let status_line = head.lines().next().unwrap_or_default();
    if status_line.split_whitespace().nth(1) != Some("200") {
        return Err(format!("unhealthy: {status_line}"));
    }
    let json: serde_json::Value =
        serde_json::from_str(body.trim()).map_err(|_| "health body is not JSON".to_owned())?;
    if json.get("status").and_then(|s| s.as_str()) == Some("ok") {
        Ok(body.trim().to_owned())
    } else {
        Err("health status is not ok".into())
    }
}

/// Runs the command for `config`; returns the process exit code.
pub fn run(config: &Config, format: Format) -> u8 {
    let addr = probe_addr(&config.gateway.host, config.gateway.port);
    match (check(addr), format) {
        (Ok(_), Format::ExitCode) => 0,
        (Ok(_), Format::Text) => {
            println!("ok: gateway at {addr} is healthy");
            0
        }
        (Ok(body), Format::Json) => {
            println!("{body}");
            0
        }
        (Err(reason), Format::ExitCode) => {
            eprintln!("{reason}");
            1
        }
        (Err(reason), _) => {
            println!("unhealthy: {reason}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unspecified_hosts_are_probed_on_loopback() {
        assert_eq!(probe_addr("0.0.0.0", 1), "127.0.0.1:1".parse().expect("a"));
        assert_eq!(probe_addr("::", 1), "[::1]:1".parse().expect("a"));
        assert_eq!(
            probe_addr("localhost", 1),
            "127.0.0.1:1".parse().expect("a")
        );
        assert_eq!(
            probe_addr("127.0.0.2", 1),
            "127.0.0.2:1".parse().expect("a")
        );
    }

    #[test]
    fn refused_connection_is_unhealthy() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        drop(l);
        assert!(check(addr).is_err());
    }
}

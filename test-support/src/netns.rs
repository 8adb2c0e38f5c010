//! Reaching into another network namespace from the host, with no image,
//! no published port and no route: a listener on `127.0.0.1` in the
//! caller's namespace, and connections to the far side opened from a thread
//! that has entered the target namespace.
//!
//! Two facts make it work. A socket keeps the network namespace it was
//! created in, whatever thread later reads or writes it. And
//! `setns(fd, CLONE_NEWNET)` moves only the calling thread (threads it
//! spawns afterwards inherit its namespace). So each server here binds its
//! listener in the caller's namespace, then a dedicated accept thread
//! enters the target namespace (`/proc/<pid>/ns/net` of a container, or a
//! `/run/netns/<name>` bind mount); the threads it spawns per connection
//! open their upstream sockets in there.
//!
//! - [`HttpProxy`]: an HTTP forward proxy for IP-literal targets
//!   (absolute-form requests and `CONNECT`), e.g. for a reqwest client with
//!   `Proxy::http(proxy.url())` reaching overlay addresses of a swarm.
//! - [`TcpRelay`]: every connection to its address is relayed to one
//!   target in the namespace (a container's port, a Traefik's 443).
//!
//! Entering a namespace needs `CAP_SYS_ADMIN` (root). Dropping either
//! server stops its accept thread (a shutdown flag and a self-connect,
//! joined within [`JOIN_TIMEOUT`]) and shuts down the sockets of the
//! connections still open, so their copy threads end too and nothing keeps
//! the namespace alive afterwards.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context as _;

/// The most bytes of a request head the proxy reads.
pub const MAX_HEAD: usize = 64 * 1024;
/// How long a client may take to send its request head.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connection to the target may take to open.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long dropping a server waits for its accept thread.
pub const JOIN_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the accept thread may take to enter the namespace at start.
const ENTER_TIMEOUT: Duration = Duration::from_secs(5);

/// An HTTP forward proxy on `127.0.0.1:<port>` whose upstream connections
/// are opened inside a network namespace.
///
/// Accepted: absolute-form requests to an IP literal
/// (`GET http://10.214.1.7:42617/health HTTP/1.1`; port 80 by default),
/// forwarded in origin-form with `Connection: close` (any `Connection`,
/// `Proxy-Connection`, `Keep-Alive` and `Proxy-Authorization` header
/// dropped; `Host` added when missing), the bytes then copied both ways
/// until the upstream closes; and `CONNECT <ip>:<port>`, answered
/// `200 Connection established` and tunnelled. Anything else — a host
/// name (there is no DNS in the namespace), `https://` in absolute-form,
/// an origin-form request, a head over [`MAX_HEAD`] or slower than
/// [`HEAD_TIMEOUT`], a target that does not accept within
/// [`CONNECT_TIMEOUT`] — is answered `502 Bad Gateway` with a one-line
/// text body saying why.
pub struct HttpProxy {
    server: Server,
}

impl HttpProxy {
    /// Starts the proxy: the listener in the caller's namespace, upstream
    /// connections from inside `netns` (e.g. `/proc/<pid>/ns/net`).
    ///
    /// # Errors
    /// `netns` cannot be opened or entered (not root, not a network
    /// namespace), or no port on 127.0.0.1.
    pub fn start(netns: &Path) -> anyhow::Result<HttpProxy> {
        let server = Server::start(netns, "http proxy", Arc::new(proxy_connection))?;
        Ok(HttpProxy { server })
    }

    /// The address it listens on (`127.0.0.1:<port>`, caller's namespace).
    pub fn addr(&self) -> SocketAddr {
        self.server.addr
    }

    /// `http://127.0.0.1:<port>`, for `reqwest::Proxy::http`.
    pub fn url(&self) -> String {
        format!("http://{}", self.server.addr)
    }

    /// The namespace its upstream connections are opened in.
    pub fn netns(&self) -> &Path {
        &self.server.netns
    }
}

/// A TCP relay on `127.0.0.1:<port>`: each connection accepted is connected
/// to one target from inside a network namespace, and bytes are copied both
/// ways (half-closes passed on) until both sides have closed. A target that
/// does not accept within [`CONNECT_TIMEOUT`] gets the client's connection
/// closed.
pub struct TcpRelay {
    server: Server,
    target: SocketAddr,
}

impl TcpRelay {
    /// Starts the relay: the listener in the caller's namespace, connections
    /// to `target` from inside `netns`.
    ///
    /// # Errors
    /// As [`HttpProxy::start`].
    pub fn start(netns: &Path, target: SocketAddr) -> anyhow::Result<TcpRelay> {
        let handler: Handler =
            Arc::new(move |client, conns| relay_connection(client, target, conns));
        let server = Server::start(netns, &format!("tcp relay to {target}"), handler)?;
        Ok(TcpRelay { server, target })
    }

    /// The address it listens on (`127.0.0.1:<port>`, caller's namespace).
    pub fn addr(&self) -> SocketAddr {
        self.server.addr
    }

    /// Where its connections go, inside the namespace.
    pub fn target(&self) -> SocketAddr {
        self.target
    }

    /// The namespace its connections are opened in.
    pub fn netns(&self) -> &Path {
        &self.server.netns
    }
}

/// What a server does with one accepted connection (on its own thread,
/// inside the namespace).
type Handler = Arc<dyn Fn(TcpStream, &Conns) + Send + Sync>;

/// A listener in the caller's namespace and its accept thread inside
/// `netns`; stopped on drop.
struct Server {
    addr: SocketAddr,
    netns: PathBuf,
    conns: Conns,
    accept: Option<JoinHandle<()>>,
}

impl Server {
    fn start(netns: &Path, what: &str, handler: Handler) -> anyhow::Result<Server> {
        let ns = File::open(netns).with_context(|| format!("opening {}", netns.display()))?;
        let listener = TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let conns = Conns::default();
        let (ready_tx, ready_rx) = mpsc::channel();
        let accept = {
            let conns = conns.clone();
            std::thread::Builder::new()
                .name(format!("netns-{}", addr.port()))
                .spawn(move || {
                    let entered = enter(&ns);
                    drop(ns);
                    let ok = entered.is_ok();
                    let _ = ready_tx.send(entered);
                    if ok {
                        accept_loop(&listener, &conns, &handler);
                    }
                })
                .context("spawning the accept thread")?
        };
        let server = Server {
            addr,
            netns: netns.to_owned(),
            conns,
            accept: Some(accept),
        };
        match ready_rx.recv_timeout(ENTER_TIMEOUT) {
            Ok(Ok(())) => Ok(server),
            Ok(Err(e)) => Err(anyhow::Error::new(e).context(format!(
                "{what}: entering the network namespace {} (setns needs CAP_SYS_ADMIN)",
                netns.display()
            ))),
            Err(_) => anyhow::bail!(
                "{what}: the accept thread did not enter {} within {} s",
                netns.display(),
                ENTER_TIMEOUT.as_secs()
            ),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.conns.close_all();
        // Unblock `accept`: it sees the flag after this connection.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(handle) = self.accept.take() {
            let deadline = Instant::now() + JOIN_TIMEOUT;
            while !handle.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if handle.is_finished() {
                let _ = handle.join();
            } else {
                eprintln!(
                    "netns: the accept thread of 127.0.0.1:{} (into {}) did not stop within {} s",
                    self.addr.port(),
                    self.netns.display(),
                    JOIN_TIMEOUT.as_secs()
                );
            }
        }
    }
}

/// Moves the calling thread into the network namespace `ns`.
fn enter(ns: &File) -> io::Result<()> {
    // SAFETY: setns only reads the descriptor, which `ns` keeps open for the
    // duration of the call; it changes nothing but this thread's namespace.
    let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn accept_loop(listener: &TcpListener, conns: &Conns, handler: &Handler) {
    loop {
        let accepted = listener.accept();
        if conns.closing() {
            return;
        }
        match accepted {
            Ok((stream, _)) => {
                let (conns, handler) = (conns.clone(), handler.clone());
                // Spawned from this thread: inside the namespace.
                let spawned = std::thread::Builder::new()
                    .name("netns-conn".into())
                    .spawn(move || handler(stream, &conns));
                if let Err(e) = spawned {
                    eprintln!("netns: spawning a connection thread: {e}");
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // EMFILE and the like: wait a little rather than spin.
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// The sockets of the connections in flight, shut down when the server
/// stops (their copy threads then see end of file and return).
#[derive(Clone, Default)]
struct Conns {
    inner: Arc<ConnsInner>,
}

#[derive(Default)]
struct ConnsInner {
    closing: AtomicBool,
    next: AtomicU64,
    open: Mutex<HashMap<u64, Vec<TcpStream>>>,
}

impl Conns {
    fn closing(&self) -> bool {
        self.inner.closing.load(Ordering::SeqCst)
    }

    /// Registers `streams` (clones) until the guard drops; shuts them down
    /// at once when the server is already stopping.
    fn register(&self, streams: &[&TcpStream]) -> ConnGuard {
        let id = self.inner.next.fetch_add(1, Ordering::Relaxed);
        let clones: Vec<TcpStream> = streams.iter().filter_map(|s| s.try_clone().ok()).collect();
        let mut open = self.inner.open.lock().unwrap_or_else(|p| p.into_inner());
        if self.closing() {
            for s in &clones {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
        open.insert(id, clones);
        ConnGuard {
            conns: self.clone(),
            id,
        }
    }

    fn close_all(&self) {
        let open = self.inner.open.lock().unwrap_or_else(|p| p.into_inner());
        self.inner.closing.store(true, Ordering::SeqCst);
        for s in open.values().flatten() {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

struct ConnGuard {
    conns: Conns,
    id: u64,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        let mut open = self
            .conns
            .inner
            .open
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        open.remove(&self.id);
    }
}

/// How a tunnel ends.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// Pass each side's end of stream on as a half-close (TCP relay,
    /// `CONNECT`).
    HalfClose,
    /// The upstream's end of stream is the end of the exchange (a request
    /// sent with `Connection: close`): close both sides then.
    UpstreamDone,
}

fn relay_connection(client: TcpStream, target: SocketAddr, conns: &Conns) {
    let _guard = conns.register(&[&client]);
    match TcpStream::connect_timeout(&target, CONNECT_TIMEOUT) {
        Ok(upstream) => tunnel(client, upstream, Ending::HalfClose, conns),
        Err(_) => {
            let _ = client.shutdown(Shutdown::Both);
        }
    }
}

fn proxy_connection(mut client: TcpStream, conns: &Conns) {
    let _guard = conns.register(&[&client]);
    let _ = client.set_read_timeout(Some(HEAD_TIMEOUT));
    let (head, rest) = match read_head(&mut client) {
        Ok(read) => read,
        Err(why) => return bad_gateway(&mut client, &why),
    };
    let request = match parse_request(&head) {
        Ok(request) => request,
        Err(why) => return bad_gateway(&mut client, &why),
    };
    let _ = client.set_read_timeout(None);
    let target = request.target();
    let mut upstream = match TcpStream::connect_timeout(&target, CONNECT_TIMEOUT) {
        Ok(upstream) => upstream,
        Err(e) => return bad_gateway(&mut client, &format!("connecting to {target}: {e}")),
    };
    let ending = match &request {
        ProxyRequest::Connect { .. } => {
            if client
                .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                .is_err()
            {
                return;
            }
            Ending::HalfClose
        }
        ProxyRequest::Forward { head, .. } => {
            if upstream.write_all(head).is_err() {
                return bad_gateway(&mut client, &format!("sending the request to {target}"));
            }
            Ending::UpstreamDone
        }
    };
    if !rest.is_empty() && upstream.write_all(&rest).is_err() {
        return;
    }
    tunnel(client, upstream, ending, conns);
}

/// Answers `502 Bad Gateway` with `why` as a text body, and closes.
fn bad_gateway(client: &mut TcpStream, why: &str) {
    let body = format!("zcaas test proxy: {why}\n");
    let response = format!(
        "HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = client.write_all(response.as_bytes());
    let _ = client.shutdown(Shutdown::Both);
}

/// Copies bytes both ways until the tunnel ends (see [`Ending`]).
fn tunnel(client: TcpStream, upstream: TcpStream, ending: Ending, conns: &Conns) {
    let _guard = conns.register(&[&client, &upstream]);
    let (Ok(mut client_r), Ok(mut upstream_w)) = (client.try_clone(), upstream.try_clone()) else {
        return;
    };
    let outbound = std::thread::Builder::new()
        .name("netns-copy".into())
        .spawn(move || {
            let _ = io::copy(&mut client_r, &mut upstream_w);
            let _ = upstream_w.shutdown(Shutdown::Write);
        });
    let (mut upstream_r, mut client_w) = (&upstream, &client);
    let _ = io::copy(&mut upstream_r, &mut client_w);
    match ending {
        Ending::HalfClose => {
            let _ = client.shutdown(Shutdown::Write);
        }
        Ending::UpstreamDone => {
            let _ = client.shutdown(Shutdown::Both);
            let _ = upstream.shutdown(Shutdown::Both);
        }
    }
    if let Ok(outbound) = outbound {
        let _ = outbound.join();
    }
}

/// Reads up to the end of the request head (`\r\n\r\n`), at most
/// [`MAX_HEAD`] bytes; returns the head (terminator included) and the bytes
/// read past it.
fn read_head(client: &mut TcpStream) -> Result<(Vec<u8>, Vec<u8>), String> {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 8192];
    loop {
        let n = match client.read(&mut chunk) {
            Ok(0) => return Err("the client closed before the end of its request head".into()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(format!(
                    "no complete request head within {} s",
                    HEAD_TIMEOUT.as_secs()
                ))
            }
            Err(e) => return Err(format!("reading the request head: {e}")),
        };
        let searched_from = buf.len().saturating_sub(3);
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = find(&buf[searched_from..], b"\r\n\r\n") {
            let end = searched_from + i + 4;
            if end > MAX_HEAD {
                break;
            }
            let rest = buf.split_off(end);
            return Ok((buf, rest));
        }
        if buf.len() > MAX_HEAD {
            break;
        }
    }
    Err(format!("request head over {} KiB", MAX_HEAD / 1024))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A request the proxy serves, parsed from its head.
#[derive(Debug, PartialEq, Eq)]
pub enum ProxyRequest {
    /// `CONNECT <ip>:<port>`: tunnel to `target`.
    Connect { target: SocketAddr },
    /// An absolute-form request to `target`; `head` is the head to send
    /// upstream (origin-form request line, `Connection: close`).
    Forward { target: SocketAddr, head: Vec<u8> },
}

impl ProxyRequest {
    /// Where the request goes.
    pub fn target(&self) -> SocketAddr {
        match self {
            ProxyRequest::Connect { target } | ProxyRequest::Forward { target, .. } => *target,
        }
    }
}

/// Headers a proxy does not pass on (the proxy adds `Connection: close`).
const HOP_HEADERS: [&str; 4] = [
    "connection",
    "proxy-connection",
    "keep-alive",
    "proxy-authorization",
];

/// Parses a proxy request head (through its terminating empty line) and,
/// for absolute-form, rewrites it for the upstream. `Err` says why the
/// proxy refuses it (the body of its 502).
pub fn parse_request(head: &[u8]) -> Result<ProxyRequest, String> {
    let text = std::str::from_utf8(head).map_err(|_| "request head is not UTF-8".to_owned())?;
    let mut lines = text.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (Some(method), Some(uri), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(format!("malformed request line {request_line:?}"));
    };
    if method.is_empty() || !version.starts_with("HTTP/1.") {
        return Err(format!("malformed request line {request_line:?}"));
    }
    if method == "CONNECT" {
        let target: SocketAddr = uri
            .parse()
            .map_err(|_| format!("CONNECT needs <ip>:<port> (no DNS here), not {uri:?}"))?;
        return Ok(ProxyRequest::Connect { target });
    }
    let Some(after_scheme) = strip_prefix_ignore_case(uri, "http://") else {
        return Err(if strip_prefix_ignore_case(uri, "https://").is_some() {
            format!("{uri}: use CONNECT for https")
        } else {
            format!("{uri:?} is not an absolute http:// URL (not a proxy request)")
        });
    };
    let split = after_scheme
        .find(['/', '?', '#'])
        .unwrap_or(after_scheme.len());
    let (authority, tail) = after_scheme.split_at(split);
    let target = ip_authority(authority)?;
    let tail = tail.split('#').next().unwrap_or_default();
    let path = match tail.chars().next() {
        None => "/".to_owned(),
        Some('?') => format!("/{tail}"),
        Some(_) => tail.to_owned(),
    };
    let mut out = format!("{method} {path} {version}\r\n");
    let mut has_host = false;
    for line in lines.take_while(|l| !l.is_empty()) {
        let name = line.split(':').next().unwrap_or_default().trim();
        if HOP_HEADERS.iter().any(|h| name.eq_ignore_ascii_case(h)) {
            continue;
        }
        has_host |= name.eq_ignore_ascii_case("host");
        out.push_str(line);
        out.push_str("\r\n");
    }
    if !has_host {
        out.push_str(&format!("Host: {authority}\r\n"));
    }
    out.push_str("Connection: close\r\n\r\n");
    Ok(ProxyRequest::Forward {
        target,
        head: out.into_bytes(),
    })
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// `<ip>[:<port>]` (IPv6 in brackets), port 80 by default.
fn ip_authority(authority: &str) -> Result<SocketAddr, String> {
    if authority.contains('@') {
        return Err(format!("{authority:?}: no user information in proxy URLs"));
    }
    if let Ok(addr) = authority.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let bare = authority
        .strip_prefix('[')
        .and_then(|a| a.strip_suffix(']'))
        .map(|a| a.parse::<Ipv6Addr>().map(IpAddr::V6));
    let ip = match bare {
        Some(parsed) => parsed.ok(),
        None => authority.parse::<IpAddr>().ok().filter(|ip| ip.is_ipv4()),
    };
    ip.map(|ip| SocketAddr::new(ip, 80))
        .ok_or_else(|| format!("{authority:?} is not an IP literal (this proxy resolves no names)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forward(head: &str) -> (SocketAddr, String) {
        match parse_request(head.as_bytes()) {
            Ok(ProxyRequest::Forward { target, head }) => {
                (target, String::from_utf8(head).unwrap())
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn absolute_form_is_rewritten_to_origin_form_with_connection_close() {
        let (target, head) = forward(
            "GET http://10.214.1.7:42617/health?x=1 HTTP/1.1\r\nHost: 10.214.1.7:42617\r\n\
             Proxy-Connection: keep-alive\r\nconnection: keep-alive\r\nKeep-Alive: 5\r\n\
             Proxy-Authorization: Basic eA==\r\nAccept: */*\r\n\r\n",
        );
        assert_eq!(target, "10.214.1.7:42617".parse().unwrap());
        assert_eq!(
            head,
            "GET /health?x=1 HTTP/1.1\r\nHost: 10.214.1.7:42617\r\nAccept: */*\r\n\
             Connection: close\r\n\r\n"
        );
    }

    #[test]
    fn default_port_empty_path_query_and_missing_host() {
        let (target, head) = forward("POST http://10.0.0.2 HTTP/1.0\r\n\r\n");
        assert_eq!(target, "10.0.0.2:80".parse().unwrap());
        assert_eq!(
            head,
            "POST / HTTP/1.0\r\nHost: 10.0.0.2\r\nConnection: close\r\n\r\n"
        );
        let (_, head) = forward("GET HTTP://10.0.0.2:8080?q#frag HTTP/1.1\r\nHost: h\r\n\r\n");
        assert!(
            head.starts_with("GET /?q HTTP/1.1\r\nHost: h\r\n"),
            "{head}"
        );
        let (target, _) = forward("GET http://[fd00::1]:81/a HTTP/1.1\r\n\r\n");
        assert_eq!(target, "[fd00::1]:81".parse().unwrap());
        let (target, _) = forward("GET http://[fd00::1]/a HTTP/1.1\r\n\r\n");
        assert_eq!(target, "[fd00::1]:80".parse().unwrap());
    }

    #[test]
    fn connect_takes_an_ip_and_port() {
        assert_eq!(
            parse_request(b"CONNECT 10.214.1.7:443 HTTP/1.1\r\nHost: x\r\n\r\n"),
            Ok(ProxyRequest::Connect {
                target: "10.214.1.7:443".parse().unwrap()
            })
        );
        let err = parse_request(b"CONNECT example.com:443 HTTP/1.1\r\n\r\n").unwrap_err();
        assert!(err.contains("no DNS"), "{err}");
    }

    #[test]
    fn names_https_origin_form_and_garbage_are_refused() {
        for (head, why) in [
            (
                "GET http://provider:8080/v1 HTTP/1.1\r\n\r\n",
                "not an IP literal",
            ),
            (
                "GET http://10.0.0.1.5/ HTTP/1.1\r\n\r\n",
                "not an IP literal",
            ),
            ("GET http://fd00::1/ HTTP/1.1\r\n\r\n", "not an IP literal"),
            (
                "GET http://u@10.0.0.1/ HTTP/1.1\r\n\r\n",
                "user information",
            ),
            ("GET https://10.0.0.1/ HTTP/1.1\r\n\r\n", "use CONNECT"),
            ("GET /health HTTP/1.1\r\n\r\n", "not a proxy request"),
            ("GET http://10.0.0.1/\r\n\r\n", "malformed"),
            ("GET  http://10.0.0.1/ HTTP/1.1\r\n\r\n", "malformed"),
            ("GET http://10.0.0.1/ SPDY/3\r\n\r\n", "malformed"),
        ] {
            let err = parse_request(head.as_bytes()).unwrap_err();
            assert!(err.contains(why), "{head:?}: {err}");
        }
        assert!(parse_request(b"GET http://10.0.0.1/ HTTP/1.1\r\nX: \xff\r\n\r\n").is_err());
    }

    /// A one-shot HTTP server on 127.0.0.1 that answers every request with
    /// the request head it received (so tests see what the proxy sent).
    fn echo_server() -> (SocketAddr, JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let handle = std::thread::spawn(move || {
            for _ in 0..2 {
                let (mut s, _) = listener.accept().unwrap();
                let (head, _) = read_head(&mut s).unwrap();
                let body = String::from_utf8(head).unwrap();
                let reply = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                s.write_all(reply.as_bytes()).unwrap();
            }
        });
        (addr, handle)
    }

    fn exchange(proxy: SocketAddr, request: &str) -> String {
        let mut s = TcpStream::connect(proxy).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    /// The whole machinery inside this process's own namespace (entering
    /// it needs CAP_SYS_ADMIN: skipped otherwise). Creates nothing.
    #[test]
    fn proxy_and_relay_in_the_own_namespace() {
        let own = Path::new("/proc/thread-self/ns/net");
        let proxy = match HttpProxy::start(own) {
            Ok(proxy) => proxy,
            Err(e) => {
                eprintln!("SKIPPED proxy_and_relay_in_the_own_namespace: {e:#}");
                return;
            }
        };
        let (origin, server) = echo_server();
        let reply = exchange(
            proxy.addr(),
            &format!("GET http://{origin}/p HTTP/1.1\r\nHost: {origin}\r\nProxy-Connection: keep-alive\r\n\r\n"),
        );
        assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
        assert!(
            reply.ends_with(&format!(
                "GET /p HTTP/1.1\r\nHost: {origin}\r\nConnection: close\r\n\r\n"
            )),
            "{reply}"
        );
        let refused = exchange(proxy.addr(), "GET http://localhost/ HTTP/1.1\r\n\r\n");
        assert!(
            refused.starts_with("HTTP/1.1 502 Bad Gateway\r\n"),
            "{refused}"
        );
        assert!(refused.contains("not an IP literal"), "{refused}");

        let relay = TcpRelay::start(own, origin).unwrap();
        let reply = exchange(relay.addr(), "GET /r HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(
            reply.ends_with("GET /r HTTP/1.1\r\nHost: x\r\n\r\n"),
            "{reply}"
        );
        server.join().unwrap();

        let (proxy_addr, relay_addr) = (proxy.addr(), relay.addr());
        let t = Instant::now();
        drop(proxy);
        drop(relay);
        assert!(
            t.elapsed() < JOIN_TIMEOUT,
            "stopping took {:?}",
            t.elapsed()
        );
        for addr in [proxy_addr, relay_addr] {
            assert!(TcpStream::connect(addr).is_err(), "{addr} still listening");
        }
    }
}

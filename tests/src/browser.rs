//! A real browser for the dashboard tests: Debian's `chromium`, headless,
//! driven through `chromedriver` with the fantoccini WebDriver client.
//!
//! [`Browser::start`] starts a chromedriver of its own on a free loopback
//! port and opens one Chromium session with a fresh profile; dropping the
//! [`Browser`] ends the session (closing Chromium) and kills that
//! chromedriver, even when the test panics. Every wait has a timeout and
//! fails with what it last saw. Screenshots go to `tests/screenshots/`
//! (gitignored).
//!
//! The WebDriver client is built without TLS (see tests/Cargo.toml):
//! chromedriver speaks plain HTTP on 127.0.0.1.
//!
//! Needs `chromium` and `chromium-driver` (apt; `.ci/run` installs them).
//! `ZCAAS_CHROMIUM` and `ZCAAS_CHROMEDRIVER` override the binaries' paths.

use std::future::Future;
use std::io::{Read as _, Write as _};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use fantoccini::wd::TimeoutConfiguration;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

/// Default Chromium binary (Debian's package).
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// Default chromedriver binary (Debian's `chromium-driver`).
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// Desktop window size.
pub const DESKTOP: (u32, u32) = (1280, 1400);
/// Phone-width window size (a common phone viewport).
pub const PHONE: (u32, u32) = (390, 844);

/// Where screenshots are saved: `tests/screenshots/`.
pub fn screenshot_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("screenshots")
}

/// A headless Chromium session and the chromedriver serving it.
pub struct Browser {
    pub client: Client,
    driver: Child,
    port: u16,
    session: Option<String>,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session at [`DESKTOP`] size.
    /// Errors: a binary missing (with the apt command to install it),
    /// chromedriver not ready within 20 s, or the session refused.
    pub async fn start() -> anyhow::Result<Browser> {
        let chromium = std::env::var("ZCAAS_CHROMIUM").unwrap_or_else(|_| CHROMIUM.into());
        let chromedriver =
            std::env::var("ZCAAS_CHROMEDRIVER").unwrap_or_else(|_| CHROMEDRIVER.into());
        for bin in [&chromium, &chromedriver] {
            if !std::path::Path::new(bin).exists() {
                bail!(
                    "{bin} is missing: apt-get install -y chromium chromium-driver (.ci/run does)"
                );
            }
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let driver = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {chromedriver}"))?;
        let profile = tempfile::tempdir()?;
        let mut browser = Browser {
            client: connect_when_ready(port, &chromium, &profile).await?,
            driver,
            port,
            session: None,
            _profile: profile,
        };
        browser.session = browser.client.session_id().await?;
        // Bounded commands too: no page load or script may hang a test.
        browser
            .client
            .update_timeouts(TimeoutConfiguration::new(
                Some(Duration::from_secs(10)),
                Some(Duration::from_secs(30)),
                Some(Duration::ZERO),
            ))
            .await?;
        browser.resize(DESKTOP).await?;
        Ok(browser)
    }

    /// Ends the session (Chromium exits) and stops chromedriver.
    pub async fn close(mut self) {
        if let Some(_id) = self.session.take() {
            let _ = self.client.clone().close().await;
        }
        // `Drop` kills chromedriver.
    }

    /// Sets the window size (`(width, height)` in CSS pixels).
    pub async fn resize(&self, (w, h): (u32, u32)) -> anyhow::Result<()> {
        self.client.set_window_size(w, h).await?;
        Ok(())
    }

    /// Opens `url`.
    pub async fn goto(&self, url: &str) -> anyhow::Result<()> {
        self.client.goto(url).await?;
        Ok(())
    }

    /// Runs `script` (a function body; `arguments[i]` are `args`) in the page.
    pub async fn js(&self, script: &str, args: Vec<Value>) -> anyhow::Result<Value> {
        Ok(self.client.execute(script, args).await?)
    }

    /// Polls `probe` every 100 ms until it returns `Some`, or fails after
    /// `timeout` naming `what` and the last probe error.
    pub async fn wait<T, F, Fut>(
        &self,
        what: &str,
        timeout: Duration,
        mut probe: F,
    ) -> anyhow::Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = anyhow::Result<Option<T>>>,
    {
        let deadline = Instant::now() + timeout;
        let mut last = String::from("never true");
        loop {
            match probe().await {
                Ok(Some(v)) => return Ok(v),
                Ok(None) => {}
                Err(e) => last = format!("{e:#}"),
            }
            if Instant::now() > deadline {
                bail!("waited {timeout:?} for {what}; last: {last}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The text of the first element matching `css`, `None` if there is none.
    pub async fn text(&self, css: &str) -> anyhow::Result<Option<String>> {
        let found = self
            .js(
                "const e = document.querySelector(arguments[0]); return e ? e.textContent : null;",
                vec![json!(css)],
            )
            .await?;
        Ok(found.as_str().map(str::to_owned))
    }

    /// Waits until the first element matching `css` exists and its text
    /// contains `needle`; returns the text.
    pub async fn wait_text(
        &self,
        css: &str,
        needle: &str,
        timeout: Duration,
    ) -> anyhow::Result<String> {
        self.wait(&format!("{css} to contain {needle:?}"), timeout, || async {
            let text = self.text(css).await?;
            match text {
                Some(t) if t.contains(needle) => Ok(Some(t)),
                Some(t) => Err(anyhow::anyhow!("text is {:?}", truncate(&t))),
                None => Err(anyhow::anyhow!("no element")),
            }
        })
        .await
    }

    /// Waits until an element matching `css` is displayed.
    pub async fn wait_visible(&self, css: &str, timeout: Duration) -> anyhow::Result<()> {
        self.wait(&format!("{css} to be visible"), timeout, || async {
            let els = self.client.find_all(Locator::Css(css)).await?;
            for e in els {
                if e.is_displayed().await? {
                    return Ok(Some(()));
                }
            }
            Ok(None)
        })
        .await
    }

    /// Waits until the page's URL fragment starts with `prefix`; returns it.
    pub async fn wait_hash(&self, prefix: &str, timeout: Duration) -> anyhow::Result<String> {
        self.wait(
            &format!("location.hash to start with {prefix:?}"),
            timeout,
            || async {
                let hash = self.js("return location.hash;", vec![]).await?;
                let hash = hash.as_str().unwrap_or("").to_owned();
                if hash.starts_with(prefix) {
                    Ok(Some(hash))
                } else {
                    Err(anyhow::anyhow!("hash is {hash:?}"))
                }
            },
        )
        .await
    }

    /// Clicks the element matching `css` (waiting up to 10 s for it to be
    /// visible and enabled).
    pub async fn click(&self, css: &str) -> anyhow::Result<()> {
        let el = self
            .wait(
                &format!("{css} to be clickable"),
                Duration::from_secs(10),
                || async {
                    let el = self.client.find(Locator::Css(css)).await?;
                    Ok((el.is_displayed().await? && el.is_enabled().await?).then_some(el))
                },
            )
            .await?;
        el.click().await?;
        Ok(())
    }

    /// Replaces the value of the input matching `css` with `value` by typing.
    pub async fn fill(&self, css: &str, value: &str) -> anyhow::Result<()> {
        let el = self
            .client
            .find(Locator::Css(css))
            .await
            .with_context(|| css.to_owned())?;
        el.clear().await?;
        el.send_keys(value).await?;
        Ok(())
    }

    /// Picks the option with `value` in the select matching `css`.
    pub async fn select(&self, css: &str, value: &str) -> anyhow::Result<()> {
        let el = self
            .client
            .find(Locator::Css(css))
            .await
            .with_context(|| css.to_owned())?;
        el.select_by_value(value).await?;
        Ok(())
    }

    /// Whether the page is wider than the window (horizontal scrolling).
    pub async fn overflows_horizontally(&self) -> anyhow::Result<bool> {
        let v = self
            .js(
                "return document.documentElement.scrollWidth > window.innerWidth + 1;",
                vec![],
            )
            .await?;
        Ok(v.as_bool().unwrap_or(true))
    }

    /// Saves a PNG of the window as `tests/screenshots/<name>.png`.
    pub async fn screenshot(&self, name: &str) -> anyhow::Result<PathBuf> {
        let png = self.client.screenshot().await?;
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).with_context(|| path.display().to_string())?;
        Ok(path)
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // After a panic the async client cannot be awaited here: end the
        // session with one blocking request, so Chromium exits with it.
        if let Some(id) = self.session.take() {
            delete_session(self.port, &id);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// `DELETE /session/<id>` on chromedriver, blocking, best effort.
fn delete_session(port: u16, id: &str) {
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let req = format!(
        "DELETE /session/{id} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    if s.write_all(req.as_bytes()).is_ok() {
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink);
    }
}

/// Connects to chromedriver once it listens (20 s at most).
async fn connect_when_ready(
    port: u16,
    chromium: &str,
    profile: &tempfile::TempDir,
) -> anyhow::Result<Client> {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chromium,
            "args": [
                "--headless=new",
                // We run as root (CI containers): Chromium's sandbox needs a user namespace.
                "--no-sandbox",
                "--disable-dev-shm-usage",
                "--disable-gpu",
                "--no-first-run",
                "--disable-extensions",
                "--hide-scrollbars",
                format!("--window-size={},{}", DESKTOP.0, DESKTOP.1),
                format!("--user-data-dir={}", profile.path().display()),
            ],
        }),
    );
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        match ClientBuilder::new(connector)
            .capabilities(caps.clone())
            .connect(&url)
            .await
        {
            Ok(client) => return Ok(client),
            Err(e) if Instant::now() > deadline => {
                bail!("chromedriver on port {port} gave no session within 20 s: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

fn truncate(s: &str) -> String {
    if s.chars().count() <= 300 {
        return s.to_owned();
    }
    format!("{}…", s.chars().take(300).collect::<String>())
}

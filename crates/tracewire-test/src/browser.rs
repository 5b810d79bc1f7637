//! Headless Chromium driven over WebDriver, for tests that assert what a person sees.

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};

/// A headless Chromium session through a `chromedriver` this value started (on an
/// ephemeral port). Both are stopped when it is dropped.
///
/// Needs Debian's `chromium` and `chromium-driver` (`scripts/ensure-chromium` installs them);
/// their absence fails the test with a message saying so. `CHROMIUM` and `CHROMEDRIVER`
/// override the paths.
#[derive(Debug)]
pub struct Browser {
    client: Option<Client>,
    driver: Child,
}

fn find(var: &str, candidates: &[&str]) -> String {
    if let Ok(path) = std::env::var(var) {
        return path;
    }
    candidates
        .iter()
        .find(|p| Path::new(p).exists())
        .map(|p| (*p).to_owned())
        .unwrap_or_else(|| {
            panic!(
                "{} not found (looked for {candidates:?}, ${var} unset): run scripts/ensure-chromium \
                 (apt-get install -y chromium chromium-driver)",
                candidates[0]
            )
        })
}

impl Browser {
    /// Starts `chromedriver` and a headless Chromium session with a `width`×`height` window.
    pub async fn start(width: u32, height: u32) -> Self {
        let chromium = find(
            "CHROMIUM",
            &["/usr/bin/chromium", "/usr/bin/chromium-browser"],
        );
        let chromedriver = find("CHROMEDRIVER", &["/usr/bin/chromedriver"]);
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("an ephemeral port for chromedriver")
            .port();
        let driver = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group, so dropping the browser stops Chromium's processes too.
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {chromedriver}: {e}"));
        let mut browser = Self {
            client: None,
            driver,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "chromedriver did not listen on {port}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": chromium,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--hide-scrollbars", "--force-device-scale-factor=1",
                    format!("--window-size={width},{height}"),
                ],
            }),
        );
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .unwrap_or_else(|e| panic!("cannot start a headless Chromium session: {e}"));
        browser.client = Some(client);
        browser
    }

    fn client(&self) -> &Client {
        self.client.as_ref().expect("a session")
    }

    /// Loads `url` and waits for the page.
    pub async fn goto(&self, url: &str) {
        self.client()
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("cannot load {url}: {e}"));
    }

    /// The rendered text of every element matching `css`, in document order.
    pub async fn texts(&self, css: &str) -> Vec<String> {
        let mut out = Vec::new();
        for element in self
            .client()
            .find_all(Locator::Css(css))
            .await
            .expect("find")
        {
            out.push(element.text().await.expect("element text"));
        }
        out
    }

    /// The attribute `name` of every element matching `css`, in document order.
    pub async fn attributes(&self, css: &str, name: &str) -> Vec<Option<String>> {
        let mut out = Vec::new();
        for element in self
            .client()
            .find_all(Locator::Css(css))
            .await
            .expect("find")
        {
            out.push(element.attr(name).await.expect("element attribute"));
        }
        out
    }

    /// Clicks the first element matching `css`.
    pub async fn click(&self, css: &str) {
        self.client()
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css}: {e}"))
            .click()
            .await
            .expect("click");
    }

    /// A PNG of the viewport.
    pub async fn screenshot(&self) -> Vec<u8> {
        self.client().screenshot().await.expect("screenshot")
    }

    /// Ends the session and stops chromedriver.
    pub async fn close(mut self) {
        if let Some(client) = self.client.take() {
            // The session ends at once; fantoccini may keep waiting on chromedriver's idle
            // connection, so bound the wait (dropping then stops the processes).
            let _ = tokio::time::timeout(Duration::from_secs(5), client.close()).await;
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The whole group: chromedriver and the Chromium it started.
        let _ = Command::new("kill")
            .args(["-s", "KILL", "--", &format!("-{}", self.driver.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

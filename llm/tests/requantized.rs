//! The default SmolLM2 model requantized by llama.cpp's own quantizer to the
//! types users download — Q4_K_M, Q5_K_M, Q6_K and Q8_0 (with the Q5_0,
//! Q5_1 and Q8_0 tensors a `_M` mix puts where rows are not a multiple of
//! 256) — against llama.cpp's greedy runs on the same files
//! (`fixtures/smollm2_requantized_reference.json`, made by
//! `scripts/requantized-fixtures.py`).
//!
//! The files are made here with `llama-quantize` (from `KB_LLAMA_QUANTIZE`,
//! the `PATH`, or `scripts/llamacpp.sh`'s cache) and cached under kb's home;
//! each must have the recorded SHA-256. Without `llama-quantize` the tests
//! say they skipped, unless `KB_REQUIRE_LLAMACPP=1` (CI) makes that a
//! failure.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use kb_core::GenerateOptions;
use kb_core::models::{DEFAULT_LLM, ModelCache, kb_home};
use kb_llm::{GgufModel, LoadOptions};
use reference::{Margins, Step, same_bits_on_every_family, same_until_noise, teacher_forced};
use serde::Deserialize;
use sha2::{Digest, Sha256};

mod reference;

#[derive(Deserialize)]
struct Fixture {
    files: std::collections::BTreeMap<String, File>,
}

#[derive(Deserialize)]
struct File {
    sha256: String,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    prompt_ids: Vec<u32>,
    greedy_ids: Vec<u32>,
    /// llama.cpp's two most likely tokens per step, before EOS was banned
    /// (so the first may be an EOS it did not pick)…
    top2_ids: Vec<(u32, u32)>,
    /// …and their log-probabilities.
    top2_logprobs: Vec<(f32, f32)>,
}

impl Case {
    fn steps(&self) -> Vec<Step> {
        self.top2_ids
            .iter()
            .zip(&self.top2_logprobs)
            .map(|(&(top, _), (a, b))| Step { top, margin: a - b })
            .collect()
    }

    /// [`Case::steps`] where a banned EOS led: those margins say nothing
    /// about the tokens that competed, so they count as noise.
    fn free_steps(&self) -> Vec<Step> {
        let mut steps = self.steps();
        for (step, &token) in steps.iter_mut().zip(&self.greedy_ids) {
            if step.top != token {
                step.margin = 0.0;
            }
        }
        steps
    }
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        serde_json::from_str(include_str!("fixtures/smollm2_requantized_reference.json"))
            .expect("fixture parses")
    })
}

/// `llama-quantize`, where this machine has it.
fn llama_quantize() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("KB_LLAMA_QUANTIZE") {
        return Some(PathBuf::from(path));
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("llama-quantize"))
            .find(|p| p.is_file())
    });
    let reference = std::env::var_os("KB_REF")
        .map(PathBuf::from)
        .or_else(|| std::env::home_dir().map(|h| h.join(".cache/kb-ref")));
    on_path.or_else(|| {
        let reference = reference?;
        ["build-avx2", "build-native"]
            .iter()
            .map(|b| reference.join(b).join("bin/llama-quantize"))
            .find(|p| p.is_file())
    })
}

fn sha256(path: &Path) -> String {
    let bytes = std::fs::read(path).expect("read");
    Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The SmolLM2 file requantized to `kind`, made once; `None` (after saying
/// so) where `llama-quantize` is missing and not required.
fn requantized(kind: &str) -> Option<PathBuf> {
    static MAKING: Mutex<()> = Mutex::new(());
    let Some(quantize) = llama_quantize() else {
        assert!(
            std::env::var_os("KB_REQUIRE_LLAMACPP").is_none(),
            "KB_REQUIRE_LLAMACPP is set but llama-quantize was not found \
             (scripts/llamacpp.sh --avx2 llama-quantize builds it)"
        );
        eprintln!("skipped: llama-quantize not found (scripts/llamacpp.sh builds it)");
        return None;
    };
    let expected = &fixture().files[kind].sha256;
    let dir = kb_home().expect("kb home").join("requantized");
    let path = dir.join(format!("smollm2-135m-{}.gguf", kind.to_lowercase()));
    let _making = MAKING.lock().unwrap_or_else(|e| e.into_inner());
    if path.is_file() && sha256(&path) == *expected {
        return Some(path);
    }
    std::fs::create_dir_all(&dir).expect("create the cache");
    let source = ModelCache::from_env()
        .expect("model cache")
        .resolve(DEFAULT_LLM)
        .expect("the default chat model is installed (run `kb models fetch`)");
    let partial = path.with_extension("partial");
    let status = Command::new(&quantize)
        .arg("--allow-requantize")
        .arg(&source)
        .arg(&partial)
        .arg(kind)
        .output()
        .expect("run llama-quantize");
    assert!(
        status.status.success(),
        "llama-quantize failed: {}",
        String::from_utf8_lossy(&status.stderr)
    );
    let actual = sha256(&partial);
    assert_eq!(
        actual,
        *expected,
        "{} made another {kind} file than the one llama.cpp's greedy runs were recorded on",
        quantize.display()
    );
    std::fs::rename(&partial, &path).expect("install the file");
    Some(path)
}

fn load(path: &Path, options: LoadOptions) -> GgufModel {
    GgufModel::load(path, &options.threads(2)).expect("load the requantized model")
}

/// For each type: greedy ids follow llama.cpp's up to the first step inside
/// the noise; with llama.cpp's tokens forced, the margins stay close; the
/// weights take about the file's size.
#[test]
fn every_type_follows_llamacpp() {
    let mut problems = Vec::new();
    for kind in fixture().files.keys() {
        let Some(path) = requantized(kind) else {
            return;
        };
        let model = load(
            &path,
            LoadOptions::default().dense_prompt_weights(std::env::var("KB_EXP_DENSE").is_ok()),
        );
        let file = std::fs::metadata(&path).expect("file").len() as f64;
        let ratio = model.weights_size() as f64 / file;
        assert!(
            (0.9..1.15).contains(&ratio),
            "{kind}: weights take {ratio:.2}× the file"
        );
        let mut margins = Margins::default();
        for case in &fixture().files[kind].cases {
            let generation = model
                .generate(
                    &mut model.session(),
                    &case.prompt_ids,
                    &GenerateOptions::default().max_tokens(case.greedy_ids.len()),
                    |_| true,
                )
                .expect("generate");
            // llama.cpp ignored EOS: kb's run may end early, at an EOS
            // llama.cpp ranked first.
            problems.extend(same_until_noise(
                &generation.ids,
                &case.greedy_ids,
                &case.free_steps(),
                kind,
            ));
            let (m, _) = teacher_forced(
                &model,
                &case.prompt_ids,
                &case.greedy_ids,
                &case.steps(),
                &[],
            );
            margins.add(m);
        }
        margins.check(kind, 90);
    }
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}

/// The `_M` mix (Q5_0, Q4_K, Q6_K and Q8_0 tensors) on every kernel family:
/// the same logits, bit for bit.
#[test]
fn every_kernel_family_gives_the_same_numbers() {
    let Some(path) = requantized("Q4_K_M") else {
        return;
    };
    let case = &fixture().files["Q4_K_M"].cases[0];
    same_bits_on_every_family(
        |isa| load(&path, LoadOptions::default().kernels(isa)),
        &case.prompt_ids,
        &case.greedy_ids[..3],
    );
}

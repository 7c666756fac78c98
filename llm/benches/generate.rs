//! Prompt processing and decoding speed on a GGUF model, llama-bench style:
//! `pp512` runs 512 prompt tokens into an empty cache, `tg128` decodes 128
//! tokens one at a time from an empty cache. Prints tokens/s (median of the
//! repetitions) next to llama.cpp's medians measured on the same 2-core
//! machine with the same file (see docs/llm.md).
//!
//! ```text
//! cargo bench -p kb-llm --bench generate -- [--model PATH] [--threads N] [--reps N] [--dense]
//! ```

use std::path::PathBuf;
use std::time::Instant;

use kb_core::models::{DEFAULT_LLM, ModelCache};
use kb_llm::{GgufModel, LoadOptions};

/// llama.cpp b10605's `llama-bench` medians for SmolLM2-135M-Instruct Q4_1 on
/// the reference machine: (threads, pp512, tg128).
const LLAMA_CPP: &[(usize, f64, f64)] = &[(1, 236.7, 158.1), (2, 441.0, 167.4)];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mut model: Option<PathBuf> = None;
    let mut threads = 2;
    let mut reps = 5;
    let mut prompt_reps = None;
    let mut dense = false;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--model" => model = args.next().map(PathBuf::from),
            "--threads" => threads = args.next().ok_or("--threads N")?.parse()?,
            "--reps" => reps = args.next().ok_or("--reps N")?.parse()?,
            // For profiling decoding alone: `--prompt-reps 0`.
            "--prompt-reps" => prompt_reps = Some(args.next().ok_or("--prompt-reps N")?.parse()?),
            // f32 copies of the layer weights and f32 prompt arithmetic.
            "--dense" => dense = true,
            _ => {} // cargo passes --bench
        }
    }
    let path = match model {
        Some(p) => p,
        None => ModelCache::from_env()?.resolve(DEFAULT_LLM)?,
    };
    let started = Instant::now();
    let model = GgufModel::load(
        &path,
        &LoadOptions::default()
            .threads(threads)
            .dense_prompt_weights(dense),
    )?;
    println!(
        "model {} ({} MiB of weights in memory), loaded in {:.2} s, {threads} thread(s)",
        model.name(),
        model.weights_size() >> 20,
        started.elapsed().as_secs_f64()
    );
    // Deterministic "random" prompt ids from the ordinary vocabulary.
    let vocab = model.tokenizer().vocab_size() as u64;
    let mut state = 42u64;
    let prompt: Vec<u32> = (0..512)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (100 + (state >> 33) % (vocab - 100)) as u32
        })
        .collect();

    // Warm-up.
    let mut session = model.session();
    model.logits(&mut session, &prompt[..64])?;

    let mut pp = Vec::new();
    for _ in 0..prompt_reps.unwrap_or(reps) {
        let mut session = model.session();
        let t = Instant::now();
        model.logits(&mut session, &prompt)?;
        pp.push(512.0 / t.elapsed().as_secs_f64());
    }
    let mut tg = Vec::new();
    for _ in 0..reps {
        let mut session = model.session();
        let t = Instant::now();
        for &token in &prompt[..128] {
            model.decode_step(&mut session, token)?;
        }
        tg.push(128.0 / t.elapsed().as_secs_f64());
    }
    if pp.is_empty() {
        pp.push(f64::NAN);
    }
    let (pp, tg) = (median(&mut pp), median(&mut tg));
    println!("pp512 {pp:8.1} tok/s");
    println!("tg128 {tg:8.1} tok/s");
    if let Some((_, ref_pp, ref_tg)) = LLAMA_CPP.iter().find(|r| r.0 == threads) {
        println!(
            "vs llama.cpp ({threads} thread(s), same file, quiet machine): pp512 {:.2}x ({ref_pp}), tg128 {:.2}x ({ref_tg})",
            pp / ref_pp,
            tg / ref_tg
        );
    }
    Ok(())
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

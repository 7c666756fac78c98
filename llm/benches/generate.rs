//! Prompt processing and decoding speed on a GGUF model, llama-bench style,
//! with llama.cpp run on the same file in the same run:
//!
//! - `pp512`: 512 prompt tokens into an empty cache, tokens/s;
//! - `tg128`: 128 tokens decoded one at a time from an empty cache, tokens/s;
//! - kb's peak resident memory against the file's size;
//! - the machine's streaming-read bandwidth, and the decoding speed it
//!   allows (weights read once per token): decoding a large model cannot
//!   beat it.
//!
//! ```text
//! cargo bench -p kb-llm --bench generate -- [--model PATH] [--threads N] [--reps N]
//!     [--kernels avx512-vnni|avx2|scalar] [--dense] [--llama-bench PATH] [--json]
//! ```
//!
//! With `--llama-bench`, llama.cpp's `llama-bench` runs the same tests on the
//! same file with the same threads, its repetitions alternating with kb's,
//! and the ratios are printed; nothing is compared with numbers from another
//! run. `scripts/bench-llm.sh` runs this
//! over a set of models, kernel families and thread counts and prints the
//! table in `docs/llm.md`.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use kb_core::models::{DEFAULT_LLM, ModelCache};
use kb_llm::{GgufModel, Isa, LoadOptions};

struct Args {
    model: Option<PathBuf>,
    threads: usize,
    reps: usize,
    prompt_reps: Option<usize>,
    dense: bool,
    kernels: Option<Isa>,
    llama_bench: Option<PathBuf>,
    json: bool,
}

fn parse() -> Result<Args, Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mut parsed = Args {
        model: None,
        threads: 2,
        reps: 5,
        prompt_reps: None,
        dense: false,
        kernels: None,
        llama_bench: None,
        json: false,
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--model" => parsed.model = args.next().map(PathBuf::from),
            "--threads" => parsed.threads = args.next().ok_or("--threads N")?.parse()?,
            "--reps" => parsed.reps = args.next().ok_or("--reps N")?.parse()?,
            // For profiling decoding alone: `--prompt-reps 0`.
            "--prompt-reps" => {
                parsed.prompt_reps = Some(args.next().ok_or("--prompt-reps N")?.parse()?)
            }
            // f32 copies of the layer weights and f32 prompt arithmetic.
            "--dense" => parsed.dense = true,
            "--kernels" => {
                parsed.kernels = Some(Isa::resolve(&args.next().ok_or("--kernels FAMILY")?)?)
            }
            "--llama-bench" => parsed.llama_bench = args.next().map(PathBuf::from),
            "--json" => parsed.json = true,
            _ => {} // cargo passes --bench
        }
    }
    Ok(parsed)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse()?;
    let path = match &args.model {
        Some(p) => p.clone(),
        None => ModelCache::from_env()?.resolve(DEFAULT_LLM)?,
    };
    let file_size = std::fs::metadata(&path)?.len();
    let mut options = LoadOptions::default()
        .threads(args.threads)
        .dense_prompt_weights(args.dense);
    if let Some(isa) = args.kernels {
        options = options.kernels(isa);
    }
    let started = Instant::now();
    let model = GgufModel::load(&path, &options)?;
    let load = started.elapsed().as_secs_f64();
    let kernels = model
        .kernels()
        .map_or("device".to_string(), |k| k.to_string());
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

    // kb's repetitions alternate with llama-bench's (one each), so that a
    // machine whose speed drifts (other tenants, thermal limits) slows both
    // alike; each side's median is reported.
    let (mut pp, mut tg, mut ref_pp, mut ref_tg) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    // The largest key/value cache the run holds (the 512-token prompt's).
    let mut kv = 0usize;
    for rep in 0..args.reps {
        if rep < args.prompt_reps.unwrap_or(args.reps) {
            let mut session = model.session();
            let t = Instant::now();
            model.logits(&mut session, &prompt)?;
            pp.push(512.0 / t.elapsed().as_secs_f64());
            kv = kv.max(session.cache_bytes());
        }
        let mut session = model.session();
        let t = Instant::now();
        for &token in &prompt[..128] {
            model.decode_step(&mut session, token)?;
        }
        tg.push(128.0 / t.elapsed().as_secs_f64());
        if let Some(bin) = &args.llama_bench {
            let (p, g) = llama_bench(bin, &path, args.threads)?;
            ref_pp.push(p);
            ref_tg.push(g);
        }
    }
    let (pp, tg) = (median(&mut pp), median(&mut tg));
    let peak = peak_rss().unwrap_or(0);
    let weights = model.weights_size();
    drop(model);
    let bandwidth = streaming_read(args.threads);
    let ceiling = bandwidth / weights as f64;
    let reference = args
        .llama_bench
        .as_ref()
        .map(|_| (median(&mut ref_pp), median(&mut ref_tg)));

    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if args.json {
        let (ref_pp, ref_tg) = reference.unwrap_or((f64::NAN, f64::NAN));
        println!(
            "{{\"model\":{name:?},\"kernels\":{kernels:?},\"threads\":{},\"dense\":{},\"file_bytes\":{file_size},\"weights_bytes\":{weights},\"peak_rss_bytes\":{peak},\"kv_bytes\":{kv},\"load_s\":{load:.2},\"pp512\":{pp:.1},\"tg128\":{tg:.1},\"bandwidth_gbs\":{:.2},\"tg_ceiling\":{ceiling:.1},\"llama_pp512\":{},\"llama_tg128\":{}}}",
            args.threads,
            args.dense,
            bandwidth / 1e9,
            json_number(ref_pp),
            json_number(ref_tg),
        );
        return Ok(());
    }
    println!(
        "{name}: {:.0} MiB file, {:.0} MiB of weights in memory, peak RSS {:.0} MiB ({:.2}× the file; \
         {:.2}× the file + the {:.0} MiB key/value cache); loaded in {load:.2} s; kernels {kernels}, {} thread(s)",
        file_size as f64 / 1048576.0,
        weights as f64 / 1048576.0,
        peak as f64 / 1048576.0,
        peak as f64 / file_size as f64,
        peak as f64 / (file_size + kv as u64) as f64,
        kv as f64 / 1048576.0,
        args.threads
    );
    println!("pp512 {pp:8.1} tok/s");
    println!(
        "tg128 {tg:8.1} tok/s  (streaming reads at {:.1} GB/s allow {ceiling:.0} tok/s: {:.2} of it)",
        bandwidth / 1e9,
        tg / ceiling
    );
    if let Some((ref_pp, ref_tg)) = reference {
        println!(
            "llama.cpp, same file, same threads, this run: pp512 {ref_pp:.1} ({:.2}×), tg128 {ref_tg:.1} ({:.2}×)",
            pp / ref_pp,
            tg / ref_tg
        );
    }
    Ok(())
}

fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn json_number(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.1}")
    } else {
        "null".into()
    }
}

/// This process's peak resident memory (`VmHWM`), in bytes.
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Bytes per second `threads` threads read from a buffer far larger than
/// the caches (best of three passes), in huge pages where the system gives
/// them on request, as kb's packed weights are.
fn streaming_read(threads: usize) -> f64 {
    let size = 1usize << 30;
    let mut buffer: Vec<u64> = Vec::with_capacity(size / 8);
    #[cfg(target_os = "linux")]
    {
        // The whole 2 MiB pages inside the buffer.
        let start = (buffer.as_ptr() as usize).next_multiple_of(2 << 20);
        let end = (buffer.as_ptr() as usize + size) & !((2 << 20) - 1);
        if end > start {
            // SAFETY: advice on memory this process owns and has not touched.
            unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE) };
        }
    }
    buffer.extend((0..size / 8).map(|i| i as u64));
    let chunk = buffer.len().div_ceil(threads);
    let mut best = 0f64;
    for _ in 0..3 {
        let t = Instant::now();
        let total: u64 = std::thread::scope(|s| {
            let handles: Vec<_> = buffer
                .chunks(chunk)
                .map(|part| {
                    s.spawn(move || {
                        let mut lanes = [0u64; 8];
                        for eight in part.chunks_exact(8) {
                            for (l, v) in lanes.iter_mut().zip(eight) {
                                *l = l.wrapping_add(*v);
                            }
                        }
                        lanes.iter().fold(0u64, |a, b| a.wrapping_add(*b))
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or(0))
                .fold(0u64, u64::wrapping_add)
        });
        std::hint::black_box(total);
        best = best.max(size as f64 / t.elapsed().as_secs_f64());
    }
    best
}

/// `llama-bench`'s pp512 and tg128 (tokens/s) on `model`, one repetition.
fn llama_bench(
    bin: &std::path::Path,
    model: &std::path::Path,
    threads: usize,
) -> Result<(f64, f64), Box<dyn std::error::Error>> {
    let output = Command::new(bin)
        .arg("-m")
        .arg(model)
        .args(["-t", &threads.to_string(), "-p", "512", "-n", "128"])
        .args(["-r", "1", "-o", "json"])
        .output()?;
    if !output.status.success() {
        return Err(format!(
            "llama-bench failed: {}",
            String::from_utf8_lossy(&output.stderr)
        )
        .into());
    }
    let runs: Vec<serde_json::Value> = serde_json::from_slice(&output.stdout)?;
    let (mut pp, mut tg) = (f64::NAN, f64::NAN);
    for run in &runs {
        let field = |name: &str| run.get(name).and_then(serde_json::Value::as_f64);
        match (field("n_prompt"), field("n_gen"), field("avg_ts")) {
            (Some(p), Some(g), Some(speed)) if p > 0.0 && g == 0.0 => pp = speed,
            (Some(p), Some(g), Some(speed)) if p == 0.0 && g > 0.0 => tg = speed,
            _ => {}
        }
    }
    Ok((pp, tg))
}

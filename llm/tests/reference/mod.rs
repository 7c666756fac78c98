//! Comparing kb's engine with llama.cpp's recorded greedy runs.
//!
//! Two correct engines that both round activations to 8 bits do not give
//! the same logits: llama.cpp keeps keys and values in f16, accumulates
//! attention in f16 and adds its float sums in another order, and every
//! such difference moves some activation across a rounding boundary, after
//! which the two runs differ by quantization noise. llama.cpp differs from
//! itself that way: on the requantized SmolLM2 files its AVX-512 and AVX2
//! builds' log-probability margins between the top token and the next
//! differ by 0.13–0.18 on average and up to 0.81. kb's margins differ from
//! llama.cpp's by as much (0.13–0.19 on average, up to about 1.0). Where a
//! margin is below [`NOISE`], either token is a correct answer.
//!
//! The checks are therefore: kb's free-running greedy ids equal llama.cpp's
//! up to the first step inside the noise, and with llama.cpp's tokens
//! forced at every step kb's margins stay close to llama.cpp's and kb's top
//! token is llama.cpp's wherever llama.cpp's margin is above the noise.

#![allow(dead_code)]

use kb_llm::{GgufModel, Isa};

/// A margin below this (in log-probability) is within the noise between
/// two correct 8-bit engines.
pub(crate) const NOISE: f32 = 0.5;

/// Teacher-forced margin errors above these fail: the mean, and the worst
/// single step.
pub(crate) const MEAN_ERROR: f32 = 0.25;
pub(crate) const WORST_ERROR: f32 = 1.2;

/// llama.cpp at one generated step: its top token and the log-probability
/// margin to the next.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Step {
    pub(crate) top: u32,
    pub(crate) margin: f32,
}

/// `ours` equals `reference` up to the first step whose margin is within
/// [`NOISE`]; returns what is wrong otherwise.
pub(crate) fn same_until_noise(
    ours: &[u32],
    reference: &[u32],
    steps: &[Step],
    what: &str,
) -> Option<String> {
    let diverge = ours.iter().zip(reference).position(|(a, b)| a != b);
    match diverge {
        None if ours.len() == reference.len() => None,
        None => {
            // A shorter run is fine where it stopped at a noisy step.
            let stop = ours.len().min(reference.len());
            let noisy = steps.get(stop).is_some_and(|s| s.margin < NOISE);
            (!noisy).then(|| {
                format!(
                    "{what}: {} ids vs {} in the reference\nours {ours:?}\nref  {reference:?}",
                    ours.len(),
                    reference.len()
                )
            })
        }
        Some(step) => {
            let calm = steps[..=step].iter().all(|s| s.margin >= NOISE);
            eprintln!(
                "{what}: diverges at step {step} (llama.cpp's margin {})",
                steps[step].margin
            );
            calm.then(|| {
                format!(
                    "{what}: diverges at step {step}, where no step so far was within the noise \
                     (margin {})\nours {ours:?}\nref  {reference:?}",
                    steps[step].margin
                )
            })
        }
    }
}

/// How far kb's margins are from llama.cpp's with llama.cpp's tokens forced.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Margins {
    pub(crate) worst: f32,
    pub(crate) total: f32,
    pub(crate) count: usize,
    /// Steps where llama.cpp's margin is above the noise but kb's top token
    /// is another.
    pub(crate) wrong: usize,
}

impl Margins {
    /// Fails unless the errors are within the noise: mean and worst below
    /// [`MEAN_ERROR`] and [`WORST_ERROR`], no confident token lost, and at
    /// least `steps` steps compared.
    pub(crate) fn check(&self, what: &str, steps: usize) {
        eprintln!(
            "{what}: margin error mean {:.3}, worst {:.3} over {} steps; {} lost",
            self.mean(),
            self.worst,
            self.count,
            self.wrong
        );
        assert!(
            self.count >= steps,
            "{what}: only {} steps compared",
            self.count
        );
        assert!(
            self.mean() < MEAN_ERROR && self.worst < WORST_ERROR,
            "{what}: {self:?}"
        );
        assert_eq!(self.wrong, 0, "{what}: a confident llama.cpp token lost");
    }

    pub(crate) fn mean(&self) -> f32 {
        self.total / self.count.max(1) as f32
    }

    pub(crate) fn add(&mut self, other: Margins) {
        self.worst = self.worst.max(other.worst);
        self.total += other.total;
        self.count += other.count;
        self.wrong += other.wrong;
    }
}

/// Runs `prompt`, then feeds `reference` one token at a time, comparing
/// kb's margin between each reference token and its best other token with
/// llama.cpp's (steps whose recorded top token is not the reference, an
/// EOS llama.cpp was told to skip, are not compared; tokens in `banned`,
/// which llama.cpp was told never to pick, are not kb's either). Returns the
/// margins and kb's logits after the prompt.
pub(crate) fn teacher_forced(
    model: &GgufModel,
    prompt: &[u32],
    reference: &[u32],
    steps: &[Step],
    banned: &[u32],
) -> (Margins, Vec<f32>) {
    let mut session = model.session();
    let mut logits = model.logits(&mut session, prompt).expect("prompt");
    let first = logits.clone();
    let mut margins = Margins::default();
    for (&token, step) in reference.iter().zip(steps) {
        if step.top == token {
            for &t in banned {
                logits[t as usize] = f32::NEG_INFINITY;
            }
            let lp = log_softmax(&logits);
            let best_other = lp
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != token as usize)
                .map(|(_, v)| *v)
                .fold(f32::NEG_INFINITY, f32::max);
            let ours = lp[token as usize] - best_other;
            let error = (ours - step.margin).abs();
            margins.worst = margins.worst.max(error);
            margins.total += error;
            margins.count += 1;
            if ours < 0.0 && step.margin >= NOISE {
                margins.wrong += 1;
            }
        }
        logits = model.decode_step(&mut session, token).expect("decode");
    }
    (margins, first)
}

/// Loads the model with each kernel family this processor has (through
/// `load`), runs `prompt` and decodes `then` token by token, and asserts
/// that every family gives the scalar kernels' logits, bit for bit.
pub(crate) fn same_bits_on_every_family(
    load: impl Fn(Isa) -> GgufModel,
    prompt: &[u32],
    then: &[u32],
) {
    let run = |isa: Isa| {
        let model = load(isa);
        assert_eq!(model.kernels(), Some(isa));
        let mut session = model.session();
        let mut all = model.logits(&mut session, prompt).expect("prompt");
        for &token in then {
            all.extend(model.decode_step(&mut session, token).expect("decode"));
        }
        all
    };
    let reference = run(Isa::Scalar);
    for isa in Isa::supported() {
        let ours = run(isa);
        let same = ours.len() == reference.len()
            && ours
                .iter()
                .zip(&reference)
                .all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(same, "{isa} gives other logits than the scalar kernels");
    }
}

pub(crate) fn log_softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|v| f64::from(v - max).exp()).sum();
    let log = sum.ln() as f32;
    logits.iter().map(|v| v - max - log).collect()
}

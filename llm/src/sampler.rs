//! [`Sampler`]: picks the next token from the logits: penalties, then greedy
//! or temperature sampling with top-k, top-p and min-p, from a seedable RNG.

use kb_core::GenerateOptions;

/// How many of the latest tokens the repetition penalty looks at (as
/// llama.cpp's `repeat_last_n`).
pub const REPETITION_WINDOW: usize = 64;

/// Picks tokens according to a [`GenerateOptions`].
///
/// The order is llama.cpp's: repetition penalty (over the last
/// [`REPETITION_WINDOW`] tokens, prompt included), frequency and presence
/// penalties (over the generated tokens, OpenAI's definition), the
/// no-repeat-n-gram ban (generated tokens), then either greedy (temperature
/// 0) or top-k → temperature → top-p → min-p → a draw. The same seed gives the
/// same draws.
///
/// ```
/// use kb_core::GenerateOptions;
/// use kb_llm::Sampler;
///
/// let mut sampler = Sampler::new(&GenerateOptions::default());
/// let mut logits = vec![0.1, 2.0, -1.0];
/// assert_eq!(sampler.sample(&mut logits, &[], &[]), 1); // greedy
/// ```
#[derive(Debug, Clone)]
pub struct Sampler {
    options: GenerateOptions,
    rng: Rng,
    probs: Vec<(u32, f32)>,
}

impl Sampler {
    /// A sampler for `options`; without a seed it seeds from the clock.
    pub fn new(options: &GenerateOptions) -> Self {
        let seed = options.seed.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0x5eed)
        });
        Sampler {
            options: options.clone(),
            rng: Rng(seed),
            probs: Vec::new(),
        }
    }

    /// Applies the penalties of the options to `logits` in place. `context`
    /// is every token so far (prompt and generated); `generated` the
    /// generated ones.
    pub fn penalize(&self, logits: &mut [f32], context: &[u32], generated: &[u32]) {
        let o = &self.options;
        if o.repetition_penalty != 1.0 {
            let window = &context[context.len().saturating_sub(REPETITION_WINDOW)..];
            let mut seen: Vec<u32> = window.to_vec();
            seen.sort_unstable();
            seen.dedup();
            for t in seen {
                if let Some(l) = logits.get_mut(t as usize) {
                    *l = if *l > 0.0 {
                        *l / o.repetition_penalty
                    } else {
                        *l * o.repetition_penalty
                    };
                }
            }
        }
        if o.frequency_penalty != 0.0 || o.presence_penalty != 0.0 {
            let mut counts: Vec<u32> = generated.to_vec();
            counts.sort_unstable();
            for run in counts.chunk_by(|a, b| a == b) {
                if let Some(l) = logits.get_mut(run[0] as usize) {
                    *l -= run.len() as f32 * o.frequency_penalty + o.presence_penalty;
                }
            }
        }
        if let Some(n) = o.no_repeat_ngram_size
            && n >= 1
            && generated.len() + 1 >= n
        {
            let prefix = &generated[generated.len() + 1 - n..];
            for window in generated.windows(n) {
                if &window[..n - 1] == prefix
                    && let Some(l) = logits.get_mut(window[n - 1] as usize)
                {
                    *l = f32::NEG_INFINITY;
                }
            }
        }
    }

    /// Penalizes `logits` (see [`penalize`](Self::penalize)) and picks a token.
    pub fn sample(&mut self, logits: &mut [f32], context: &[u32], generated: &[u32]) -> u32 {
        self.penalize(logits, context, generated);
        let o = &self.options;
        if o.temperature <= 0.0 || o.top_k == Some(1) {
            return argmax(logits);
        }
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let inv_t = 1.0 / o.temperature;
        self.probs.clear();
        // Tokens e^-30 below the best cannot matter to any of the filters.
        let floor = max - 30.0 * o.temperature;
        self.probs.extend(
            logits
                .iter()
                .enumerate()
                .filter(|(_, l)| **l >= floor)
                .map(|(i, l)| (i as u32, (l - max) * inv_t)),
        );
        self.probs
            .sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        if let Some(k) = o.top_k {
            self.probs.truncate(k.max(1));
        }
        let mut total = 0.0;
        for p in &mut self.probs {
            p.1 = p.1.exp();
            total += p.1;
        }
        for p in &mut self.probs {
            p.1 /= total;
        }
        if let Some(top_p) = o.top_p {
            let mut cumulative = 0.0;
            let mut keep = self.probs.len();
            for (i, p) in self.probs.iter().enumerate() {
                cumulative += p.1;
                if cumulative >= top_p {
                    keep = i + 1;
                    break;
                }
            }
            self.probs.truncate(keep.max(1));
        }
        if let Some(min_p) = o.min_p {
            let best = self.probs.first().map_or(0.0, |p| p.1);
            let keep = self
                .probs
                .iter()
                .take_while(|p| p.1 >= min_p * best)
                .count();
            self.probs.truncate(keep.max(1));
        }
        let total: f32 = self.probs.iter().map(|p| p.1).sum();
        let mut draw = self.rng.next_f32() * total;
        for p in &self.probs {
            draw -= p.1;
            if draw <= 0.0 {
                return p.0;
            }
        }
        self.probs.last().map_or_else(|| argmax(logits), |p| p.0)
    }
}

/// The index of the largest value; the lowest index wins a tie.
pub fn argmax(values: &[f32]) -> u32 {
    let mut best = 0;
    for (i, v) in values.iter().enumerate() {
        if *v > values[best] {
            best = i;
        }
    }
    best as u32
}

/// `log softmax(values)`.
pub(crate) fn log_softmax(values: &[f32]) -> Vec<f32> {
    let max = values.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f32 = values.iter().map(|v| (v - max).exp()).sum();
    let log_sum = max + sum.ln();
    values.iter().map(|v| v - log_sum).collect()
}

/// SplitMix64: small, fast, and the same sequence on every platform.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn next_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logits() -> Vec<f32> {
        vec![1.0, 3.0, 2.5, 0.5, -1.0, 2.9]
    }

    #[test]
    fn greedy_and_penalties() {
        let mut s = Sampler::new(&GenerateOptions::default());
        assert_eq!(s.sample(&mut logits(), &[], &[]), 1);
        let mut s = Sampler::new(&GenerateOptions::default().repetition_penalty(2.0));
        // 3.0 / 2 = 1.5 < 2.9
        assert_eq!(s.sample(&mut logits(), &[1], &[]), 5);
        let mut s = Sampler::new(&GenerateOptions::default().presence_penalty(1.0));
        assert_eq!(s.sample(&mut logits(), &[1, 5], &[1, 5]), 2);
        let mut s = Sampler::new(&GenerateOptions::default().frequency_penalty(0.3));
        // 3.0 − 2·0.3 = 2.4 < 2.9 − 0.3 = 2.6 > 2.5
        assert_eq!(s.sample(&mut logits(), &[], &[1, 1, 5]), 5);
    }

    #[test]
    fn no_repeat_ngram_bans_the_completion() {
        let mut s = Sampler::new(&GenerateOptions::default().no_repeat_ngram_size(2));
        // "1 3" was generated; after a new "1", 3 is banned… but 3 is not the
        // best anyway, so ban the best instead: "1 1" then "1".
        assert_eq!(s.sample(&mut logits(), &[], &[1, 1]), 5);
        assert_eq!(s.sample(&mut logits(), &[], &[2, 1]), 1);
    }

    #[test]
    fn same_seed_same_draws_and_filters_hold() {
        let options = GenerateOptions::default().temperature(1.0).seed(42);
        let draw = |options: &GenerateOptions| {
            let mut s = Sampler::new(options);
            (0..50)
                .map(|_| s.sample(&mut logits(), &[], &[]))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(&options), draw(&options));
        assert_ne!(draw(&options), draw(&options.clone().seed(7)));
        assert!(
            draw(&options.clone().top_k(2))
                .iter()
                .all(|t| *t == 1 || *t == 5)
        );
        assert!(draw(&options.clone().top_p(0.01)).iter().all(|t| *t == 1));
        assert!(
            draw(&options.clone().min_p(0.9))
                .iter()
                .all(|t| *t == 1 || *t == 5)
        );
        let spread = draw(&options.clone().temperature(5.0));
        assert!(spread.iter().any(|t| *t != 1), "{spread:?}");
    }

    #[test]
    fn log_softmax_sums_to_one() {
        let lp = log_softmax(&logits());
        let total: f32 = lp.iter().map(|v| v.exp()).sum();
        assert!((total - 1.0).abs() < 1e-5);
    }
}

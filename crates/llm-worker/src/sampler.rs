//! Choosing the next token the way llama.cpp does: a repeat penalty over the recent
//! tokens, then top-k, top-p and min-p on the probabilities, then the temperature, then
//! a seeded draw. Settings a request leaves out come from the model's own GGUF
//! (`general.sampling.*`), else from llama.cpp's defaults.

use gguf::{Gguf, Value};
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};

/// How to sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplerSettings {
    /// Divides the logits; 0 is greedy (the most likely token).
    pub temperature: f64,
    /// Keep the k most likely tokens (0: all).
    pub top_k: usize,
    /// Keep the most likely tokens whose probabilities add up to this (1: all).
    pub top_p: f64,
    /// Keep tokens at least this fraction as likely as the most likely (0: all).
    pub min_p: f64,
    /// Makes the tokens of the last `repeat_last_n` less likely (1: off).
    pub repeat_penalty: f32,
    /// How many recent tokens, prompt included, the penalty looks at.
    pub repeat_last_n: usize,
}

impl Default for SamplerSettings {
    /// What llama.cpp users get without asking, with a mild repeat penalty.
    fn default() -> Self {
        Self {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.1,
            repeat_last_n: 64,
        }
    }
}

impl SamplerSettings {
    /// The defaults, with whatever the model's file recommends in its place.
    pub fn for_model(header: &Gguf) -> Self {
        let mut s = Self::default();
        let float = |key: &str| header.get(key).and_then(Value::as_f64);
        let count = |key: &str| {
            header
                .get(key)
                .and_then(Value::as_u64)
                .and_then(|n| usize::try_from(n).ok())
        };
        if let Some(v) = float("general.sampling.temp").filter(|v| (0.0..=2.0).contains(v)) {
            s.temperature = v;
        }
        if let Some(v) = count("general.sampling.top_k") {
            s.top_k = v;
        }
        if let Some(v) = float("general.sampling.top_p").filter(|v| *v > 0.0 && *v <= 1.0) {
            s.top_p = v;
        }
        if let Some(v) = float("general.sampling.min_p").filter(|v| (0.0..=1.0).contains(v)) {
            s.min_p = v;
        }
        if let Some(v) = float("general.sampling.penalty_repeat").filter(|v| *v > 0.0) {
            #[allow(clippy::cast_possible_truncation)]
            let v = v as f32;
            s.repeat_penalty = v;
        }
        if let Some(v) = count("general.sampling.penalty_last_n") {
            s.repeat_last_n = v;
        }
        s
    }
}

/// One generation's sampler: settings and a random source seeded once.
#[derive(Debug)]
pub struct Sampler {
    settings: SamplerSettings,
    rng: StdRng,
}

impl Sampler {
    /// A sampler whose draws repeat for the same seed.
    pub fn new(settings: SamplerSettings, seed: u64) -> Self {
        Self {
            settings,
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// The next token, given the logits over the vocabulary and the tokens so far.
    pub fn sample(&mut self, logits: &mut [f32], history: &[u32]) -> u32 {
        let s = self.settings;
        penalize(logits, history, s.repeat_penalty, s.repeat_last_n);
        if s.temperature <= 0.0 {
            return argmax(logits);
        }
        // The candidates, most likely first.
        let mut cand: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .filter(|(_, l)| l.is_finite())
            .map(|(i, &l)| (u32::try_from(i).unwrap_or(u32::MAX), l))
            .collect();
        if cand.is_empty() {
            return argmax(logits);
        }
        let by_logit = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1);
        if s.top_k > 0 && s.top_k < cand.len() {
            cand.select_nth_unstable_by(s.top_k - 1, by_logit);
            cand.truncate(s.top_k);
        }
        cand.sort_unstable_by(by_logit);
        if s.top_p < 1.0 {
            let probs = softmax(&cand, 1.0);
            let mut sum = 0.0;
            let keep = probs
                .iter()
                .position(|p| {
                    sum += p;
                    sum >= s.top_p
                })
                .map_or(cand.len(), |i| i + 1);
            cand.truncate(keep.max(1));
        }
        if s.min_p > 0.0 {
            let probs = softmax(&cand, 1.0);
            let floor = probs[0] * s.min_p;
            let keep = probs.iter().take_while(|p| **p >= floor).count();
            cand.truncate(keep.max(1));
        }
        let probs = softmax(&cand, s.temperature);
        let mut left: f64 = self.rng.random::<f64>();
        for (i, p) in probs.iter().enumerate() {
            left -= p;
            if left < 0.0 {
                return cand[i].0;
            }
        }
        cand[cand.len() - 1].0
    }
}

/// llama.cpp's repeat penalty: a recent token's positive logit is divided by the
/// penalty, a negative one multiplied, once however often the token occurred.
fn penalize(logits: &mut [f32], history: &[u32], penalty: f32, last_n: usize) {
    if (penalty - 1.0).abs() < f32::EPSILON || last_n == 0 {
        return;
    }
    let recent = &history[history.len().saturating_sub(last_n)..];
    let mut seen = std::collections::HashSet::with_capacity(recent.len());
    for &t in recent {
        let Some(l) = logits.get_mut(t as usize) else {
            continue;
        };
        if seen.insert(t) {
            *l = if *l > 0.0 { *l / penalty } else { *l * penalty };
        }
    }
}

fn argmax(logits: &[f32]) -> u32 {
    let best = logits
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map_or(0, |(i, _)| i);
    u32::try_from(best).unwrap_or(0)
}

/// Probabilities of the candidates (sorted most likely first) at `temperature`.
fn softmax(cand: &[(u32, f32)], temperature: f64) -> Vec<f64> {
    let max = f64::from(cand[0].1);
    let exps: Vec<f64> = cand
        .iter()
        .map(|(_, l)| ((f64::from(*l) - max) / temperature).exp())
        .collect();
    let sum: f64 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Gguf {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../gguf/tests/fixtures")
            .join(name);
        let bytes = fs_err::read(path).expect("the fixture");
        gguf::read_bytes(&bytes, &gguf::ReadOptions::full()).expect("a GGUF")
    }

    #[test]
    fn the_models_own_defaults_win_over_llama_cpps() {
        // written by llama.cpp's gguf package with general.sampling.*
        let s = SamplerSettings::for_model(&fixture("qwen2-q4_k_m.gguf"));
        assert_eq!(
            (s.top_k, s.min_p, s.repeat_penalty),
            (20, 0.0, 1.1),
            "{s:?}"
        );
        assert!((s.temperature - 0.6).abs() < 1e-6 && (s.top_p - 0.9).abs() < 1e-6);
        // a file that recommends nothing gets llama.cpp's defaults
        assert_eq!(
            SamplerSettings::for_model(&fixture("llama-q4_0.gguf")),
            SamplerSettings::default()
        );
    }

    fn settings() -> SamplerSettings {
        SamplerSettings {
            repeat_penalty: 1.0,
            ..SamplerSettings::default()
        }
    }

    #[test]
    fn greedy_takes_the_most_likely_token() {
        let mut s = Sampler::new(
            SamplerSettings {
                temperature: 0.0,
                ..settings()
            },
            1,
        );
        assert_eq!(s.sample(&mut [0.1, 3.0, -2.0, 2.9], &[]), 1);
    }

    #[test]
    fn the_repeat_penalty_can_change_the_choice() {
        let greedy = SamplerSettings {
            temperature: 0.0,
            repeat_penalty: 1.5,
            ..settings()
        };
        let mut s = Sampler::new(greedy, 1);
        // token 1 was just said: 3.0 / 1.5 = 2.0 < 2.9
        assert_eq!(s.sample(&mut [0.1, 3.0, -2.0, 2.9], &[1]), 3);
        // a negative logit is pushed further down
        let mut l = [-1.0f32, -1.2];
        penalize(&mut l, &[0], 1.5, 64);
        assert_eq!(l, [-1.5, -1.2]);
        // only the last n count
        let mut l = [3.0f32, 2.9];
        penalize(&mut l, &[0, 1, 1], 1.5, 2);
        assert_eq!(l, [3.0, 2.9 / 1.5]);
    }

    #[test]
    fn min_p_and_top_k_cut_the_unlikely_tail() {
        // token 0 dominates; min_p 0.05 leaves only it, whatever the seed
        for seed in 0..50 {
            let mut s = Sampler::new(settings(), seed);
            assert_eq!(s.sample(&mut [10.0, 0.0, 0.0, 0.0], &[]), 0);
        }
        let k1 = SamplerSettings {
            top_k: 1,
            min_p: 0.0,
            top_p: 1.0,
            ..settings()
        };
        for seed in 0..50 {
            let mut s = Sampler::new(k1, seed);
            assert_eq!(s.sample(&mut [1.0, 1.1, 0.9], &[]), 1);
        }
    }

    #[test]
    fn draws_follow_the_probabilities_and_repeat_for_a_seed() {
        let flat = SamplerSettings {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            ..settings()
        };
        let mut s = Sampler::new(flat, 7);
        let mut counts = [0u32; 2];
        // ln 3: token 1 is three times as likely as token 0
        for _ in 0..4000 {
            counts[s.sample(&mut [0.0, 3f32.ln()], &[]) as usize] += 1;
        }
        assert!((2800..3200).contains(&counts[1]), "{counts:?}");
        let draw = |seed| {
            let mut s = Sampler::new(flat, seed);
            (0..20)
                .map(|_| s.sample(&mut [0.0, 0.0, 0.0, 0.0], &[]))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(3), draw(3));
        assert_ne!(draw(3), draw(4));
    }
}

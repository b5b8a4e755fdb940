//! Loading a GGUF model into candle, and generating text from it.

use std::fs::File;
use std::io::{BufReader, Seek};
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::quantized::{GgmlDType, QTensor, gguf_file};
use candle_core::{DType, Device, Tensor};
use candle_transformers::models::{quantized_llama, quantized_qwen2, quantized_qwen3};
use gguf::{ReadOptions, Value};
use tokio_util::sync::CancellationToken;

use crate::sampler::{Sampler, SamplerSettings};
use crate::template::{CHATML, ChatTemplate};
use crate::tokenizer::{TokenizerError, Vocab};

/// The `general.architecture` values this worker can run.
pub const SUPPORTED_ARCHITECTURES: &[&str] = &["llama", "qwen2", "qwen3"];

/// Prompt tokens fed to the model per forward pass.
const PROMPT_CHUNK: usize = 512;

/// Why a model could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be opened or read.
    #[error("{path}: {source}")]
    Io {
        /// The model file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The file is not a valid GGUF (truncated, corrupt, hostile).
    #[error("{path}: not a valid GGUF model: {source}")]
    Format {
        /// The model file.
        path: PathBuf,
        /// What the reader found, with the offset.
        source: gguf::GgufError,
    },
    /// The architecture is not one this worker runs.
    #[error("{path}: architecture `{found}` is not supported (supported: {})", SUPPORTED_ARCHITECTURES.join(", "))]
    Unsupported {
        /// The model file.
        path: PathBuf,
        /// `general.architecture`, or `none`.
        found: String,
    },
    /// The vocabulary could not be built.
    #[error("{path}: {source}")]
    Tokenizer {
        /// The model file.
        path: PathBuf,
        /// Why.
        source: TokenizerError,
    },
    /// candle refused the weights, or the device could not be opened.
    #[error("{0}")]
    Candle(String),
}

/// One copy of the network with its own KV cache: one sequence at a time.
pub enum Weights {
    /// `llama` (and Mistral-style models, which GGUF calls llama).
    Llama(quantized_llama::ModelWeights),
    /// `qwen2`.
    Qwen2(quantized_qwen2::ModelWeights),
    /// `qwen3`.
    Qwen3(quantized_qwen3::ModelWeights),
}

impl std::fmt::Debug for Weights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self {
            Self::Llama(_) => "llama",
            Self::Qwen2(_) => "qwen2",
            Self::Qwen3(_) => "qwen3",
        };
        f.debug_tuple("Weights").field(&name).finish()
    }
}

impl Weights {
    /// A copy sharing the weight tensors, with an empty KV cache; `None` where candle's
    /// implementation cannot be copied (qwen2), which then loads the file again.
    fn share(&self) -> Option<Self> {
        let mut copy = match self {
            Self::Llama(m) => Self::Llama(m.clone()),
            Self::Qwen2(_) => return None,
            Self::Qwen3(m) => Self::Qwen3(m.clone()),
        };
        copy.clear();
        Some(copy)
    }

    /// Logits for the position after `tokens`, which start at position `pos`; position
    /// 0 starts a new sequence (the KV cache is dropped).
    fn forward(&mut self, tokens: &Tensor, pos: usize) -> candle_core::Result<Tensor> {
        if pos == 0 {
            self.clear();
        }
        match self {
            Self::Llama(m) => m.forward(tokens, pos),
            Self::Qwen2(m) => m.forward(tokens, pos),
            Self::Qwen3(m) => m.forward(tokens, pos),
        }
    }

    /// Drops the KV cache.
    pub fn clear(&mut self) {
        match self {
            Self::Llama(m) => m.clear_kv_cache(),
            Self::Qwen2(m) => m.clear_kv_cache(),
            Self::Qwen3(m) => m.clear_kv_cache(),
        }
    }
}

/// A loaded model: its weights (cloned per slot; the tensors are shared), vocabulary
/// and chat template.
#[derive(Debug)]
pub struct Model {
    /// The file's name, as `model` in responses.
    pub name: String,
    /// `general.architecture`.
    pub architecture: String,
    /// The vocabulary.
    pub vocab: Vocab,
    /// The chat template (the file's own, else ChatML).
    pub template: ChatTemplate,
    /// The most positions a sequence may use: the model's context, capped by what
    /// candle's implementation supports.
    pub max_positions: usize,
    /// The context the model's file says it was trained for.
    pub context_length: usize,
    /// How to sample when a request does not say: the file's recommendation, else
    /// llama.cpp's defaults.
    pub sampling: SamplerSettings,
    path: PathBuf,
    options: LoadOptions,
    first: std::sync::Mutex<Option<Weights>>,
    device: Device,
}

fn candle_err(path: &Path, e: impl std::fmt::Display) -> LoadError {
    LoadError::Candle(format!("{}: {e}", path.display()))
}

/// Opens the device: `0` on a CPU build; a CUDA ordinal with the `cuda` feature.
pub fn open_device(index: usize) -> Result<Device, LoadError> {
    #[cfg(feature = "cuda")]
    {
        Device::new_cuda(index).map_err(|e| LoadError::Candle(format!("CUDA device {index}: {e}")))
    }
    #[cfg(not(feature = "cuda"))]
    {
        if index == 0 {
            Ok(Device::Cpu)
        } else {
            Err(LoadError::Candle(format!(
                "device {index} does not exist: this is a CPU build, whose only device is 0"
            )))
        }
    }
}

impl Model {
    /// Reads and checks the file, builds the vocabulary and template, and loads the
    /// weights onto `device`.
    pub fn load(path: &Path, device: Device, options: &LoadOptions) -> Result<Self, LoadError> {
        let started = Instant::now();
        let io = |source| LoadError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        let mut reader = BufReader::new(file);
        // Our own reader first: it refuses truncated and hostile files with an offset,
        // before candle allocates anything.
        let format = |source| LoadError::Format {
            path: path.to_path_buf(),
            source,
        };
        let header = gguf::read(&mut reader, &ReadOptions::full()).map_err(format)?;
        header.check_file_size(len).map_err(format)?;

        let architecture = header
            .get("general.architecture")
            .and_then(Value::as_str)
            .unwrap_or("none")
            .to_string();
        if !SUPPORTED_ARCHITECTURES.contains(&architecture.as_str()) {
            return Err(LoadError::Unsupported {
                path: path.to_path_buf(),
                found: architecture,
            });
        }
        let vocab = Vocab::from_gguf(&header).map_err(|source| LoadError::Tokenizer {
            path: path.to_path_buf(),
            source,
        })?;
        let token_text =
            |id: Option<u32>| id.and_then(|id| vocab.token_text(id)).unwrap_or_default();
        let (bos, eos) = (token_text(vocab.bos), token_text(vocab.eos));
        let template = match header
            .get("tokenizer.chat_template")
            .and_then(Value::as_str)
        {
            Some(source) => ChatTemplate::new(source, &bos, &eos).or_else(|e| {
                tracing::warn!("the model's chat template does not compile ({e}); using ChatML");
                ChatTemplate::new(CHATML, &bos, &eos)
            }),
            None => ChatTemplate::new(CHATML, &bos, &eos),
        }
        .map_err(|e| LoadError::Candle(e.to_string()))?;

        let context = header
            .get(&format!("{architecture}.context_length"))
            .and_then(Value::as_u64)
            .and_then(|c| usize::try_from(c).ok())
            .unwrap_or(4096);
        let max_positions = match architecture.as_str() {
            "llama" => context.min(quantized_llama::MAX_SEQ_LEN),
            _ => context,
        };
        if max_positions < context {
            tracing::warn!(
                "the model's context is {context} tokens; this worker serves {max_positions} \
                 (the most candle's {architecture} implementation holds)"
            );
        }
        let sampling = SamplerSettings::for_model(&header);

        drop(reader);
        let weights = read_weights(path, &architecture, &device, options)?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        tracing::info!(
            model = %name,
            architecture,
            vocab = vocab.len(),
            max_positions,
            secs = started.elapsed().as_secs_f64(),
            "model loaded"
        );
        Ok(Self {
            name,
            architecture,
            vocab,
            template,
            max_positions,
            context_length: context,
            sampling,
            path: path.to_path_buf(),
            options: *options,
            first: std::sync::Mutex::new(Some(weights)),
            device,
        })
    }

    /// `n` copies of the network, one per slot, each with its own KV cache; the weight
    /// tensors are shared where candle allows it.
    pub fn slots(&self, n: usize) -> Result<Vec<Weights>, LoadError> {
        let first = self
            .first
            .lock()
            .ok()
            .and_then(|mut f| f.take())
            .ok_or_else(|| LoadError::Candle("the slots were already made".into()))?;
        let mut slots = Vec::with_capacity(n);
        for _ in 1..n {
            let copy = match first.share() {
                Some(copy) => copy,
                None => self.reload()?,
            };
            slots.push(copy);
        }
        slots.push(first);
        Ok(slots)
    }

    fn reload(&self) -> Result<Weights, LoadError> {
        read_weights(&self.path, &self.architecture, &self.device, &self.options)
    }
}

/// Loads the network from the file (converted where [`requantize`] says so).
fn read_weights(
    path: &Path,
    architecture: &str,
    device: &Device,
    options: &LoadOptions,
) -> Result<Weights, LoadError> {
    let file = File::open(path).map_err(|source| LoadError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut reader = BufReader::new(file);
    let content = gguf_file::Content::read(&mut reader).map_err(|e| candle_err(path, e))?;
    match requantize(&content, &mut reader, device, options).map_err(|e| candle_err(path, e))? {
        Some(mut converted) => {
            let content =
                gguf_file::Content::read(&mut converted).map_err(|e| candle_err(path, e))?;
            load_weights(architecture, content, &mut converted, device)
        }
        None => load_weights(architecture, content, &mut reader, device),
    }
    .map_err(|e| candle_err(path, e))
}

/// How a model is loaded.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoadOptions {
    /// Keep Q4_1, Q5_0 and Q5_1 weights as they are instead of converting them to Q8_0.
    pub keep_quantization: bool,
}

/// Types whose CPU dot products candle has no hand-written SIMD for.
const SLOW_ON_CPU: &[GgmlDType] = &[GgmlDType::Q4_1, GgmlDType::Q5_0, GgmlDType::Q5_1];

/// On the CPU, weights of a type in [`SLOW_ON_CPU`] are converted to Q8_0 (which has
/// AVX2 and NEON kernels) in an in-memory copy of the file; 8 bits per weight hold
/// a 4- or 5-bit weight and its block's scale and minimum with little loss. `None`
/// when there is nothing to convert, on a GPU, or when asked not to.
fn requantize(
    content: &gguf_file::Content,
    reader: &mut BufReader<File>,
    device: &Device,
    options: &LoadOptions,
) -> candle_core::Result<Option<std::io::Cursor<Vec<u8>>>> {
    let slow = content
        .tensor_infos
        .values()
        .any(|t| SLOW_ON_CPU.contains(&t.ggml_dtype));
    if options.keep_quantization || !device.is_cpu() || !slow {
        return Ok(None);
    }
    // While loading, the converted copy and the tensors read from it are both in
    // memory: skip the conversion where that does not fit.
    let converted: u64 = content
        .tensor_infos
        .values()
        .map(|t| t.shape.elem_count() as u64 / 32 * 34)
        .sum();
    if let Some(available) = available_memory()
        && converted.saturating_mul(2) > available
    {
        tracing::warn!(
            converted,
            available,
            "not converting the weights to Q8_0: not enough free memory"
        );
        return Ok(None);
    }
    let started = Instant::now();
    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort();
    let mut tensors = Vec::with_capacity(names.len());
    for name in names {
        let t = content.tensor(reader, name, &Device::Cpu)?;
        let block = GgmlDType::Q8_0.block_size();
        let converts = SLOW_ON_CPU.contains(&t.dtype())
            && t.shape().dims().last().is_some_and(|d| d % block == 0);
        let t = if converts {
            QTensor::quantize(&t.dequantize(&Device::Cpu)?, GgmlDType::Q8_0)?
        } else {
            t
        };
        tensors.push((name.as_str(), t));
    }
    // The copy is written with the default alignment.
    let metadata: Vec<(&str, &gguf_file::Value)> = content
        .metadata
        .iter()
        .filter(|(k, _)| k.as_str() != "general.alignment")
        .map(|(k, v)| (k.as_str(), v))
        .collect();
    let refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (*n, t)).collect();
    let mut out = std::io::Cursor::new(Vec::new());
    gguf_file::write(&mut out, &metadata, &refs)?;
    out.set_position(0);
    tracing::info!(
        secs = started.elapsed().as_secs_f64(),
        "converted Q4_1/Q5_0/Q5_1 weights to Q8_0 for the CPU (--keep-quantization keeps them)"
    );
    Ok(Some(out))
}

/// `MemAvailable` of `/proc/meminfo`, in bytes.
fn available_memory() -> Option<u64> {
    let meminfo = fs_err::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn load_weights<R: std::io::Read + Seek>(
    architecture: &str,
    content: gguf_file::Content,
    reader: &mut R,
    device: &Device,
) -> candle_core::Result<Weights> {
    // candle asserts on some malformed inputs; a panic here is a bad file, not a crash.
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match architecture {
        "llama" => {
            quantized_llama::ModelWeights::from_gguf(content, reader, device).map(Weights::Llama)
        }
        "qwen2" => {
            quantized_qwen2::ModelWeights::from_gguf(content, reader, device).map(Weights::Qwen2)
        }
        _ => quantized_qwen3::ModelWeights::from_gguf(content, reader, device).map(Weights::Qwen3),
    }));
    match result {
        Ok(weights) => weights,
        Err(_) => Err(candle_core::Error::Msg(
            "the weights do not match the architecture's layout".into(),
        )),
    }
}

/// How one generation samples and when it stops.
#[derive(Debug, Clone)]
pub struct GenerateParams {
    /// The most tokens to generate.
    pub max_tokens: usize,
    /// How to choose each token.
    pub sampler: SamplerSettings,
    /// The random seed.
    pub seed: u64,
    /// Texts that end the generation; they are not part of the output.
    pub stop: Vec<String>,
    /// Go on past end-of-generation tokens.
    pub ignore_eos: bool,
}

/// Why a generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// An end-of-generation token or a stop text.
    Stop,
    /// `max_tokens`, or the model's context is full.
    Length,
    /// The client went away, or the worker is shutting down.
    Cancelled,
}

impl Finish {
    /// OpenAI's `finish_reason`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Length => "length",
            Self::Cancelled => "cancelled",
        }
    }
}

/// What a generation did.
#[derive(Debug, Clone, Copy)]
pub struct Generated {
    /// Why it ended.
    pub finish: Finish,
    /// Tokens generated (the ending token included, as llama.cpp counts them).
    pub completion_tokens: usize,
    /// Seconds spent on the prompt.
    pub prompt_secs: f64,
    /// Seconds spent generating.
    pub generate_secs: f64,
}

/// Holds back text that may be the start of a stop string, and finds stop strings
/// that span tokens.
#[derive(Debug)]
pub struct StopMatcher {
    stops: Vec<String>,
    sent: usize,
}

impl StopMatcher {
    /// A matcher for these stop strings (empty ones are ignored).
    pub fn new(stops: &[String]) -> Self {
        Self {
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
            sent: 0,
        }
    }

    /// Given the whole text so far, returns the new text that is safe to send and
    /// whether a stop string was found (the text is then cut before it).
    pub fn advance<'t>(&mut self, text: &'t str, last: bool) -> (&'t str, bool) {
        let sent = floor_char_boundary(text, self.sent);
        // A stop string found anywhere after what was already sent ends the text there.
        let search_from =
            sent.saturating_sub(self.stops.iter().map(String::len).max().unwrap_or(0));
        let search_from = floor_char_boundary(text, search_from);
        let found = self
            .stops
            .iter()
            .filter_map(|s| {
                text[search_from..]
                    .find(s.as_str())
                    .map(|i| search_from + i)
            })
            .min();
        if let Some(end) = found {
            let end = end.max(sent);
            self.sent = end;
            return (&text[sent..end], true);
        }
        // Keep back the longest tail that could still grow into a stop string, and an
        // incomplete UTF-8 sequence the decoder shows as U+FFFD.
        let mut end = text.len();
        if !last {
            while text[..end].ends_with('\u{FFFD}') {
                end -= '\u{FFFD}'.len_utf8();
            }
            for stop in &self.stops {
                for (i, _) in stop.char_indices().skip(1) {
                    if text[..end].ends_with(&stop[..i]) {
                        end = end.min(text.len() - i);
                    }
                }
            }
        }
        let end = floor_char_boundary(text, end.max(sent));
        self.sent = end;
        (&text[sent..end], false)
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Runs the prompt through the network and generates until an end-of-generation
/// token, a stop string, `max_tokens`, the end of the context, or `cancel`. `emit`
/// gets the text as it becomes final; it returns false when nobody listens anymore.
///
/// It runs inside the device's context: on the CPU, candle's own thread pool stays
/// installed for the whole request instead of being entered at every kernel.
pub fn generate(
    model: &Model,
    weights: &mut Weights,
    prompt: &[u32],
    params: &GenerateParams,
    cancel: &CancellationToken,
    emit: impl FnMut(&str) -> bool + Send,
) -> candle_core::Result<Generated> {
    model
        .device
        .with_context(|| generate_in_context(model, weights, prompt, params, cancel, emit))
}

fn generate_in_context(
    model: &Model,
    weights: &mut Weights,
    prompt: &[u32],
    params: &GenerateParams,
    cancel: &CancellationToken,
    mut emit: impl FnMut(&str) -> bool,
) -> candle_core::Result<Generated> {
    let started = Instant::now();
    let mut sampler = Sampler::new(params.sampler, params.seed);
    let mut history: Vec<u32> = prompt.to_vec();

    let mut logits = None;
    for (i, chunk) in prompt.chunks(PROMPT_CHUNK).enumerate() {
        if cancel.is_cancelled() {
            return Ok(Generated {
                finish: Finish::Cancelled,
                completion_tokens: 0,
                prompt_secs: started.elapsed().as_secs_f64(),
                generate_secs: 0.0,
            });
        }
        let input = Tensor::new(chunk, &model.device)?.unsqueeze(0)?;
        logits = Some(weights.forward(&input, i * PROMPT_CHUNK)?);
    }
    let Some(mut logits) = logits else {
        return Err(candle_core::Error::Msg("empty prompt".into()));
    };
    let prompt_secs = started.elapsed().as_secs_f64();
    let generating = Instant::now();

    let mut stop = StopMatcher::new(&params.stop);
    let mut generated: Vec<u32> = Vec::new();
    let mut finish = Finish::Length;
    let decode = |ids: &[u32]| {
        model
            .vocab
            .decode(ids)
            .map_err(|e| candle_core::Error::Msg(e.to_string()))
    };
    while generated.len() < params.max_tokens {
        if cancel.is_cancelled() {
            finish = Finish::Cancelled;
            break;
        }
        let mut step = logits.squeeze(0)?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        let next = sampler.sample(&mut step, &history);
        history.push(next);
        generated.push(next);
        if !params.ignore_eos && model.vocab.is_end_of_generation(next) {
            finish = Finish::Stop;
            break;
        }
        let text = decode(&generated)?;
        let (fresh, stopped) = stop.advance(&text, false);
        if !fresh.is_empty() && !emit(fresh) {
            finish = Finish::Cancelled;
            break;
        }
        if stopped {
            finish = Finish::Stop;
            break;
        }
        let pos = prompt.len() + generated.len() - 1;
        if pos + 1 >= model.max_positions {
            break;
        }
        let input = Tensor::new(&[next], &model.device)?.unsqueeze(0)?;
        logits = weights.forward(&input, pos)?;
    }
    if finish != Finish::Cancelled {
        // What was held back (a partial stop string that never completed).
        let ids = if finish == Finish::Stop
            && generated
                .last()
                .is_some_and(|t| model.vocab.is_end_of_generation(*t))
        {
            &generated[..generated.len() - 1]
        } else {
            &generated[..]
        };
        let text = decode(ids)?;
        let (rest, _) = stop.advance(&text, true);
        if !rest.is_empty() {
            emit(rest);
        }
    }
    Ok(Generated {
        finish,
        completion_tokens: generated.len(),
        prompt_secs,
        generate_secs: generating.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], pieces: &[&str]) -> (String, bool) {
        let stops: Vec<String> = stops.iter().map(|s| s.to_string()).collect();
        let mut m = StopMatcher::new(&stops);
        let mut text = String::new();
        let mut out = String::new();
        for p in pieces {
            text.push_str(p);
            let (fresh, stopped) = m.advance(&text, false);
            out.push_str(fresh);
            if stopped {
                return (out, true);
            }
        }
        let (rest, stopped) = m.advance(&text, true);
        out.push_str(rest);
        (out, stopped)
    }

    #[test]
    fn a_stop_string_split_across_tokens_is_found_and_cut() {
        assert_eq!(
            run(&["\n\n"], &["Paris", ".", "\n", "\n", "Next"]),
            ("Paris.".into(), true)
        );
        assert_eq!(
            run(&["END"], &["ab", "cE", "N", "Dx"]),
            ("abc".into(), true)
        );
    }

    #[test]
    fn a_partial_match_that_does_not_complete_is_sent() {
        assert_eq!(run(&["END"], &["a", "EN", "x"]), ("aENx".into(), false));
        assert_eq!(run(&["END"], &["a", "EN"]), ("aEN".into(), false));
    }

    #[test]
    fn incomplete_utf8_is_held_back_until_complete() {
        let stops: Vec<String> = Vec::new();
        let mut m = StopMatcher::new(&stops);
        assert_eq!(m.advance("ab\u{FFFD}", false), ("ab", false));
        assert_eq!(m.advance("ab€", false), ("€", false));
    }

    #[test]
    fn no_stops_sends_everything() {
        assert_eq!(run(&[], &["a", "b"]), ("ab".into(), false));
    }
}

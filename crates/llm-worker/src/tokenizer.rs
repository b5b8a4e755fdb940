//! A tokenizer built from the GGUF's own `tokenizer.ggml.*` metadata, the way
//! llama.cpp reads it, so no `tokenizer.json` is needed beside the model.
//!
//! Two vocabularies exist in GGUF files:
//! - `gpt2`: byte-level BPE with ranked merges; the text is first split by the
//!   pre-tokenizer regexes named by `tokenizer.ggml.pre` (as llama.cpp's
//!   `llama-vocab.cpp` defines them), then each piece is byte-encoded and merged.
//! - `llama`: SentencePiece BPE: a space prefix, spaces as `▁`, merges ranked by
//!   the merged piece's score, unknown bytes as `<0xNN>` tokens.
//!
//! Tokens of type CONTROL (3) and USER_DEFINED (4) are matched whole in the text
//! before anything else, as llama.cpp does when it parses special tokens.

use ahash::AHashMap;
use gguf::{Gguf, Value};
use tokenizers::decoders::DecoderWrapper;
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::{
    NormalizerWrapper, Prepend, Replace, Sequence as NormalizerSequence,
};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence as PreTokenizerSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer};

/// Token types of `tokenizer.ggml.token_type`.
const TYPE_NORMAL: i64 = 1;
const TYPE_UNKNOWN: i64 = 2;
const TYPE_CONTROL: i64 = 3;
const TYPE_USER_DEFINED: i64 = 4;
const TYPE_BYTE: i64 = 6;

/// The tokenizer vocabularies this worker can build.
pub const SUPPORTED_TOKENIZERS: &[&str] = &["gpt2", "llama"];

const GPT2_REGEX: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
const LLAMA3_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The pre-tokenizer regexes for a `tokenizer.ggml.pre` value, applied in order;
/// `None` for a name this worker does not know.
fn pre_tokenizer_regexes(pre: &str) -> Option<&'static [&'static str]> {
    Some(match pre {
        "default" | "gpt-2" | "gpt2" | "phi-2" | "jina-es" | "jina-de" | "jina-v2-es"
        | "jina-v2-de" | "olmo" | "jais" | "trillion" => &[GPT2_REGEX],
        "starcoder" | "refact" | "command-r" | "smollm" | "codeshell" | "exaone" | "minerva-7b" => {
            &[r"\p{N}", GPT2_REGEX]
        }
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "pixtral" | "dbrx" | "smaug-bpe" => {
            &[LLAMA3_REGEX]
        }
        "qwen2" | "deepseek-r1-qwen" | "stablelm2" | "hunyuan" | "megrez" => &[QWEN2_REGEX],
        _ => return None,
    })
}

/// Why a tokenizer could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// A key the vocabulary needs is missing or has the wrong type.
    #[error("the GGUF has no usable `{0}`")]
    Missing(&'static str),
    /// `tokenizer.ggml.model` names a vocabulary this worker cannot build.
    #[error("tokenizer `{found}` is not supported (supported: {})", SUPPORTED_TOKENIZERS.join(", "))]
    Unsupported {
        /// The value of `tokenizer.ggml.model`.
        found: String,
    },
    /// The metadata is inconsistent (lengths differ, a merge is malformed, an id is out of range).
    #[error("bad tokenizer metadata: {0}")]
    Bad(String),
    /// The `tokenizers` crate refused the vocabulary.
    #[error("building the tokenizer: {0}")]
    Build(String),
}

/// The model's vocabulary: how to turn text into token ids and back, and which
/// tokens end a generation.
#[derive(Debug, Clone)]
pub struct Vocab {
    tokenizer: Tokenizer,
    /// `tokenizer.ggml.bos_token_id`.
    pub bos: Option<u32>,
    /// `tokenizer.ggml.eos_token_id`.
    pub eos: Option<u32>,
    /// Whether a BOS token goes before a prompt (`tokenizer.ggml.add_bos_token`).
    pub add_bos: bool,
    /// Every token that ends a generation (EOS, EOT and the end-of-turn markers the
    /// vocabulary has), as llama.cpp's end-of-generation set.
    pub end_of_generation: Vec<u32>,
    size: usize,
}

fn string_array<'a>(g: &'a Gguf, key: &'static str) -> Result<Vec<&'a str>, TokenizerError> {
    let array = g
        .get(key)
        .and_then(Value::as_array)
        .and_then(|a| a.values.as_ref())
        .ok_or(TokenizerError::Missing(key))?;
    array
        .iter()
        .map(|v| v.as_str().ok_or(TokenizerError::Missing(key)))
        .collect()
}

fn optional_array<'a>(g: &'a Gguf, key: &str) -> Option<&'a [Value]> {
    g.get(key)
        .and_then(Value::as_array)
        .and_then(|a| a.values.as_deref())
}

fn token_id(g: &Gguf, key: &str, size: usize) -> Result<Option<u32>, TokenizerError> {
    match g.get(key) {
        None => Ok(None),
        Some(v) => {
            // llama.cpp writes -1 (as u32::MAX) for "none".
            let id = v.as_u64().filter(|&id| id != u64::from(u32::MAX));
            match id {
                None => Ok(None),
                Some(id) if (id as usize) < size => Ok(u32::try_from(id).ok()),
                Some(id) => Err(TokenizerError::Bad(format!(
                    "{key} is {id}, the vocabulary has {size} tokens"
                ))),
            }
        }
    }
}

impl Vocab {
    /// Builds the vocabulary of a GGUF read with [`gguf::ReadOptions::full`].
    pub fn from_gguf(g: &Gguf) -> Result<Self, TokenizerError> {
        let model = g
            .get("tokenizer.ggml.model")
            .and_then(Value::as_str)
            .ok_or(TokenizerError::Missing("tokenizer.ggml.model"))?;
        let tokens = string_array(g, "tokenizer.ggml.tokens")?;
        let size = tokens.len();
        if size == 0 || u32::try_from(size).is_err() {
            return Err(TokenizerError::Bad(format!("{size} tokens")));
        }
        let types: Vec<i64> = match optional_array(g, "tokenizer.ggml.token_type") {
            Some(values) if values.len() == size => values
                .iter()
                .map(|v| v.as_f64().map_or(TYPE_NORMAL, |f| f as i64))
                .collect(),
            Some(values) => {
                return Err(TokenizerError::Bad(format!(
                    "{} token types for {size} tokens",
                    values.len()
                )));
            }
            None => vec![TYPE_NORMAL; size],
        };

        let mut tokenizer = match model {
            "gpt2" => gpt2_tokenizer(g, &tokens)?,
            "llama" => llama_tokenizer(g, &tokens, &types)?,
            other => {
                return Err(TokenizerError::Unsupported {
                    found: other.to_string(),
                });
            }
        };

        // Control and user-defined tokens are matched whole before the model sees the text.
        let specials: Vec<AddedToken> = tokens
            .iter()
            .zip(&types)
            .filter(|(_, t)| **t == TYPE_CONTROL)
            .map(|(s, _)| AddedToken::from(*s, true).normalized(false))
            .collect();
        let user: Vec<AddedToken> = tokens
            .iter()
            .zip(&types)
            .filter(|(s, t)| **t == TYPE_USER_DEFINED && !s.is_empty())
            .map(|(s, _)| AddedToken::from(*s, false).normalized(false))
            .collect();
        tokenizer
            .add_special_tokens(specials)
            .map_err(|e| TokenizerError::Build(e.to_string()))?;
        tokenizer
            .add_tokens(user)
            .map_err(|e| TokenizerError::Build(e.to_string()))?;

        let bos = token_id(g, "tokenizer.ggml.bos_token_id", size)?;
        let eos = token_id(g, "tokenizer.ggml.eos_token_id", size)?;
        let add_bos = g
            .get("tokenizer.ggml.add_bos_token")
            .map_or(model == "llama", |v| matches!(v, Value::Bool(true)));

        let mut end_of_generation = Vec::new();
        for key in [
            "tokenizer.ggml.eos_token_id",
            "tokenizer.ggml.eot_token_id",
            "tokenizer.ggml.eom_token_id",
        ] {
            if let Some(id) = token_id(g, key, size)? {
                end_of_generation.push(id);
            }
        }
        // The end-of-turn markers of the common chat formats, when the vocabulary has
        // them as control tokens (llama.cpp does the same when a file does not say).
        for marker in [
            "<|eot_id|>",
            "<|im_end|>",
            "<|end|>",
            "<end_of_turn>",
            "<|endoftext|>",
            "<|eom_id|>",
            "</s>",
        ] {
            if let Some(id) = tokens.iter().position(|t| *t == marker)
                && types[id] == TYPE_CONTROL
            {
                end_of_generation.push(id as u32);
            }
        }
        end_of_generation.sort_unstable();
        end_of_generation.dedup();

        Ok(Self {
            tokenizer,
            bos,
            eos,
            add_bos,
            end_of_generation,
            size,
        })
    }

    /// The number of tokens in the vocabulary.
    pub fn len(&self) -> usize {
        self.size
    }

    /// Whether the vocabulary is empty (never, once built).
    pub fn is_empty(&self) -> bool {
        self.size == 0
    }

    /// Turns text into token ids; special tokens written in the text are matched;
    /// with `add_bos`, the BOS token goes first when the model wants one and the text
    /// does not already start with it.
    pub fn encode(&self, text: &str, add_bos: bool) -> Result<Vec<u32>, TokenizerError> {
        let encoding = self
            .tokenizer
            .encode_fast(text, false)
            .map_err(|e| TokenizerError::Build(e.to_string()))?;
        let mut ids = encoding.get_ids().to_vec();
        if add_bos
            && self.add_bos
            && let Some(bos) = self.bos
            && ids.first() != Some(&bos)
        {
            ids.insert(0, bos);
        }
        Ok(ids)
    }

    /// Turns token ids into text; control tokens give no text.
    pub fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        self.tokenizer
            .decode(ids, true)
            .map_err(|e| TokenizerError::Build(e.to_string()))
    }

    /// The text of one token as the vocabulary stores it (`<|im_end|>`, `Ġthe`).
    pub fn token_text(&self, id: u32) -> Option<String> {
        self.tokenizer.id_to_token(id)
    }

    /// Whether the token ends a generation.
    pub fn is_end_of_generation(&self, id: u32) -> bool {
        self.end_of_generation.contains(&id)
    }
}

fn vocab_map(tokens: &[&str]) -> AHashMap<String, u32> {
    let mut map = AHashMap::with_capacity(tokens.len());
    for (id, token) in tokens.iter().enumerate() {
        // The first of two equal strings wins, as a lookup by text in llama.cpp does.
        map.entry((*token).to_string()).or_insert(id as u32);
    }
    map
}

fn gpt2_tokenizer(g: &Gguf, tokens: &[&str]) -> Result<Tokenizer, TokenizerError> {
    let merges = string_array(g, "tokenizer.ggml.merges")?
        .into_iter()
        .map(|m| {
            m.split_once(' ')
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .ok_or_else(|| TokenizerError::Bad(format!("merge {m:?} has no space")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let vocab = vocab_map(tokens);
    for (a, b) in &merges {
        if !vocab.contains_key(a.as_str()) || !vocab.contains_key(b.as_str()) {
            return Err(TokenizerError::Bad(format!(
                "merge {a:?} {b:?} names a token not in the vocabulary"
            )));
        }
    }
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .build()
        .map_err(|e| TokenizerError::Build(e.to_string()))?;

    let pre = g
        .get("tokenizer.ggml.pre")
        .and_then(Value::as_str)
        .unwrap_or("default");
    let regexes = pre_tokenizer_regexes(pre).unwrap_or_else(|| {
        tracing::warn!(pre, "unknown pre-tokenizer, using the GPT-2 one");
        &[GPT2_REGEX]
    });
    let mut steps = Vec::new();
    for regex in regexes {
        let split = Split::new(
            SplitPattern::Regex((*regex).to_string()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map_err(|e| TokenizerError::Build(e.to_string()))?;
        steps.push(PreTokenizerWrapper::Split(split));
    }
    steps.push(PreTokenizerWrapper::ByteLevel(ByteLevel::new(
        false, false, false,
    )));

    let mut tokenizer = Tokenizer::new(bpe);
    tokenizer.with_pre_tokenizer(Some(PreTokenizerSequence::new(steps)));
    tokenizer.with_decoder(Some(ByteLevelDecoder::default()));
    Ok(tokenizer)
}

fn llama_tokenizer(g: &Gguf, tokens: &[&str], types: &[i64]) -> Result<Tokenizer, TokenizerError> {
    let scores: Vec<f64> = match optional_array(g, "tokenizer.ggml.scores") {
        Some(values) if values.len() == tokens.len() => {
            values.iter().map(|v| v.as_f64().unwrap_or(0.0)).collect()
        }
        Some(values) => {
            return Err(TokenizerError::Bad(format!(
                "{} scores for {} tokens",
                values.len(),
                tokens.len()
            )));
        }
        None => return Err(TokenizerError::Missing("tokenizer.ggml.scores")),
    };
    let vocab = vocab_map(tokens);

    // SentencePiece BPE merges two pieces when their concatenation is a piece of the
    // vocabulary, the highest-scoring concatenation first (ties: the lower id).
    let mut merges: Vec<(f64, u32, String, String)> = Vec::new();
    for (id, piece) in tokens.iter().enumerate() {
        if types[id] != TYPE_NORMAL && types[id] != TYPE_USER_DEFINED {
            continue;
        }
        for (split, _) in piece.char_indices().skip(1) {
            let (left, right) = piece.split_at(split);
            if vocab.contains_key(left) && vocab.contains_key(right) {
                merges.push((scores[id], id as u32, left.to_string(), right.to_string()));
            }
        }
    }
    merges.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    let merges = merges.into_iter().map(|(_, _, l, r)| (l, r)).collect();

    let unknown = token_id(g, "tokenizer.ggml.unknown_token_id", tokens.len())?
        .or_else(|| {
            types
                .iter()
                .position(|t| *t == TYPE_UNKNOWN)
                .map(|i| i as u32)
        })
        .and_then(|id| tokens.get(id as usize));
    let has_bytes = types.contains(&TYPE_BYTE);
    let mut builder = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .byte_fallback(has_bytes)
        .fuse_unk(true);
    if let Some(unknown) = unknown {
        builder = builder.unk_token((*unknown).to_string());
    }
    let bpe = builder
        .build()
        .map_err(|e| TokenizerError::Build(e.to_string()))?;

    let add_space_prefix = g
        .get("tokenizer.ggml.add_space_prefix")
        .is_none_or(|v| matches!(v, Value::Bool(true)));
    let mut normalizers = Vec::new();
    if add_space_prefix {
        normalizers.push(NormalizerWrapper::Prepend(Prepend::new("▁".to_string())));
    }
    normalizers.push(NormalizerWrapper::Replace(
        Replace::new(" ", "▁").map_err(|e| TokenizerError::Build(e.to_string()))?,
    ));

    let mut tokenizer = Tokenizer::new(bpe);
    tokenizer
        .with_normalizer(Some(NormalizerSequence::new(normalizers)))
        .map_err(|e| TokenizerError::Build(e.to_string()))?;
    tokenizer.with_decoder(Some(DecoderSequence::new(vec![
        DecoderWrapper::Replace(
            Replace::new("▁", " ").map_err(|e| TokenizerError::Build(e.to_string()))?,
        ),
        DecoderWrapper::ByteFallback(ByteFallback::new()),
        DecoderWrapper::Fuse(Fuse::new()),
    ])));
    Ok(tokenizer)
}

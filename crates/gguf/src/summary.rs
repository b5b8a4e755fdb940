//! What a person or a catalog wants to know about a model, derived from its header.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::reader::{Gguf, TensorInfo};
use crate::types::file_type_name;
use crate::value::Value;

/// A model's vital facts, from its GGUF header.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// `general.architecture`, such as `llama` or `qwen2`.
    pub architecture: Option<String>,
    /// `general.name`.
    pub name: Option<String>,
    /// llama.cpp's name of the file type (`Q4_K_M`); when the file has no
    /// `general.file_type`, the ggml type holding most tensor bytes (`Q5_K`).
    pub quantization: Option<String>,
    /// `general.file_type` as stored.
    pub file_type: Option<u32>,
    /// The exact number of parameters: the sum of every tensor's elements.
    pub parameter_count: u64,
    /// `{arch}.context_length`: the context the model was trained for.
    pub context_length: Option<u64>,
    /// `{arch}.embedding_length`.
    pub embedding_length: Option<u64>,
    /// `{arch}.block_count`: the number of layers.
    pub block_count: Option<u64>,
    /// `{arch}.attention.head_count` (the largest, where it is given per layer).
    pub head_count: Option<u64>,
    /// `{arch}.attention.head_count_kv` (the largest, where it is given per layer).
    pub head_count_kv: Option<u64>,
    /// `{arch}.vocab_size`, else the length of `tokenizer.ggml.tokens`.
    pub vocab_size: Option<u64>,
    /// Whether `tokenizer.chat_template` is present.
    pub has_chat_template: bool,
    /// `tokenizer.ggml.model`, such as `llama` (SentencePiece) or `gpt2` (BPE).
    pub tokenizer_model: Option<String>,
    /// Bytes of tensor data: what the weights take in memory.
    pub tensor_data_size: u64,
    /// Bytes an f16 KV cache takes per token of context, over every layer; `None`
    /// when the header lacks the attention shape (or for a summary made before this
    /// was recorded).
    #[serde(default)]
    pub kv_cache_bytes_per_token: Option<u64>,
    /// `{arch}.pooling_type` as llama.cpp numbers it (1 mean, 2 cls, 3 last: an
    /// embedding model; 4 rank: a reranker); `None` for a model that pools nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pooling_type: Option<u32>,
    /// A multimodal projector's facts (`general.architecture` `clip`): what a
    /// language model needs to see images or hear sounds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub projector: Option<Projector>,
}

impl Projector {
    /// Whether it serves a language model `embedding_length` wide: it sees or hears,
    /// and its output is that wide (where both are known).
    pub fn fits(&self, embedding_length: Option<u64>) -> bool {
        (self.vision || self.audio)
            && self.image_fault().is_none()
            && match (self.projection_dim, embedding_length) {
                (Some(out), Some(width)) => out == width,
                _ => true,
            }
    }

    /// What is wrong with the image it says it takes, if anything: a patch of 0
    /// pixels or wider than the image, an image over [`Projector::IMAGE_SIZE_MAX`]
    /// pixels a side, or more than [`Projector::PATCHES_MAX`] patches a side (each
    /// a buffer the engine allocates).
    pub fn image_fault(&self) -> Option<String> {
        if !self.vision {
            return None;
        }
        let (image, patch) = (self.image_size?, self.patch_size?);
        if patch == 0 || patch > image {
            return Some(format!(
                "its patch of {patch} pixels does not fit its image of {image}"
            ));
        }
        if image > Self::IMAGE_SIZE_MAX {
            return Some(format!(
                "its image of {image} pixels a side is over {}",
                Self::IMAGE_SIZE_MAX
            ));
        }
        if image / patch > Self::PATCHES_MAX {
            return Some(format!(
                "its image of {image} pixels in patches of {patch} is {} patches a side, over {}",
                image / patch,
                Self::PATCHES_MAX
            ));
        }
        None
    }

    /// The widest image a projector may say it takes, in pixels (vision encoders
    /// take a few hundred to about a thousand).
    pub const IMAGE_SIZE_MAX: u64 = 8192;
    /// The most patches a side (vision encoders have a few dozen).
    pub const PATCHES_MAX: u64 = 512;
}

/// A multimodal projector (llama.cpp's `mmproj-*.gguf`), from its `clip.*` keys.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Projector {
    /// `clip.projector_type` (else `clip.vision.projector_type`), such as `mlp`,
    /// `gemma3` or `qwen2vl_merger`.
    pub projector_type: Option<String>,
    /// `clip.has_vision_encoder`: it sees images.
    pub vision: bool,
    /// `clip.has_audio_encoder`: it hears sounds.
    pub audio: bool,
    /// `clip.vision.image_size`, in pixels.
    pub image_size: Option<u64>,
    /// `clip.vision.patch_size`, in pixels.
    pub patch_size: Option<u64>,
    /// `clip.vision.projection_dim` (else `clip.audio.projection_dim`): the width of
    /// what it gives the language model, which must be the model's embedding length.
    pub projection_dim: Option<u64>,
}

impl Summary {
    /// Memory to run the model with `context_length` tokens of context, as
    /// [`Gguf::memory_estimate`] gives it.
    pub fn memory_estimate(&self, context_length: u64) -> MemoryEstimate {
        let kv_cache_bytes = self
            .kv_cache_bytes_per_token
            .map(|b| b.saturating_mul(context_length));
        MemoryEstimate {
            context_length,
            weights_bytes: self.tensor_data_size,
            kv_cache_bytes,
            total_bytes: self
                .tensor_data_size
                .saturating_add(kv_cache_bytes.unwrap_or(0)),
        }
    }
}

/// What running the model takes in memory, at one context length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryEstimate {
    /// The context length this estimate is for.
    pub context_length: u64,
    /// The weights, as stored.
    pub weights_bytes: u64,
    /// An f16 key and value cache for every layer; `None` when the header lacks the
    /// attention shape (layers, heads, embedding).
    pub kv_cache_bytes: Option<u64>,
    /// The sum of both.
    pub total_bytes: u64,
}

impl Gguf {
    fn arch_key(&self, suffix: &str) -> Option<&Value> {
        let arch = self.get("general.architecture")?.as_str()?;
        self.get(&format!("{arch}.{suffix}"))
    }

    fn arch_u64(&self, suffix: &str) -> Option<u64> {
        self.arch_key(suffix)?.as_u64()
    }

    /// A per-layer value: a scalar for every layer, or an array with one per layer.
    fn per_layer(&self, suffix: &str) -> Option<PerLayer> {
        match self.arch_key(suffix)? {
            Value::Array(a) => {
                let values = a.values.as_ref()?;
                values
                    .iter()
                    .map(Value::as_u64)
                    .collect::<Option<Vec<_>>>()
                    .map(PerLayer::Each)
            }
            v => v.as_u64().map(PerLayer::All),
        }
    }

    /// The model's summary.
    pub fn summary(&self) -> Summary {
        let string = |key: &str| self.get(key).and_then(Value::as_str).map(str::to_owned);
        let file_type = self
            .get("general.file_type")
            .and_then(Value::as_u64)
            .and_then(|v| u32::try_from(v).ok());
        let quantization = file_type
            .and_then(file_type_name)
            .map(str::to_owned)
            .or_else(|| dominant_type(&self.tensors));
        let vocab_size = self.arch_u64("vocab_size").or_else(|| {
            self.get("tokenizer.ggml.tokens")
                .and_then(Value::as_array)
                .map(|a| a.len)
        });
        Summary {
            architecture: string("general.architecture"),
            name: string("general.name"),
            quantization,
            file_type,
            parameter_count: self
                .tensors
                .iter()
                .fold(0u64, |acc, t| acc.saturating_add(t.n_elements)),
            context_length: self.arch_u64("context_length"),
            embedding_length: self.arch_u64("embedding_length"),
            block_count: self.arch_u64("block_count"),
            head_count: self.per_layer("attention.head_count").map(PerLayer::max),
            head_count_kv: self.per_layer("attention.head_count_kv").map(PerLayer::max),
            vocab_size,
            has_chat_template: self.get("tokenizer.chat_template").is_some(),
            tokenizer_model: string("tokenizer.ggml.model"),
            tensor_data_size: self.tensor_data_size(),
            kv_cache_bytes_per_token: self.kv_cache_bytes(1),
            pooling_type: self
                .arch_u64("pooling_type")
                .and_then(|v| u32::try_from(v).ok())
                .filter(|v| *v > 0),
            projector: self.projector(),
        }
    }

    /// A projector's facts, when the file is one (`clip`).
    fn projector(&self) -> Option<Projector> {
        if self.get("general.architecture").and_then(Value::as_str) != Some("clip") {
            return None;
        }
        let string = |key: &str| self.get(key).and_then(Value::as_str).map(str::to_owned);
        let flag = |key: &str| self.get(key).and_then(Value::as_bool).unwrap_or(false);
        let number = |key: &str| self.get(key).and_then(Value::as_u64);
        Some(Projector {
            projector_type: string("clip.projector_type")
                .or_else(|| string("clip.vision.projector_type")),
            vision: flag("clip.has_vision_encoder"),
            audio: flag("clip.has_audio_encoder"),
            image_size: number("clip.vision.image_size"),
            patch_size: number("clip.vision.patch_size"),
            projection_dim: number("clip.vision.projection_dim")
                .or_else(|| number("clip.audio.projection_dim")),
        })
    }

    /// Memory to run the model with `context_length` tokens of context: the weights
    /// plus an f16 KV cache (2 bytes × 2 (K and V) × layers × context × KV width).
    pub fn memory_estimate(&self, context_length: u64) -> MemoryEstimate {
        let weights_bytes = self.tensor_data_size();
        let kv_cache_bytes = self.kv_cache_bytes(context_length);
        MemoryEstimate {
            context_length,
            weights_bytes,
            kv_cache_bytes,
            total_bytes: weights_bytes.saturating_add(kv_cache_bytes.unwrap_or(0)),
        }
    }

    fn kv_cache_bytes(&self, ctx: u64) -> Option<u64> {
        let layers = self.arch_u64("block_count")?;
        let heads = self.per_layer("attention.head_count")?;
        let heads_kv = self
            .per_layer("attention.head_count_kv")
            .unwrap_or_else(|| heads.clone());
        let embd = self.arch_u64("embedding_length");
        let key_len = self.arch_u64("attention.key_length");
        let value_len = self.arch_u64("attention.value_length");
        let mut per_token: u64 = 0;
        for layer in 0..layers.min(1 << 16) {
            let h = heads.get(layer)?;
            let hkv = heads_kv.get(layer)?;
            let head_dim = || embd.and_then(|e| e.checked_div(h));
            let k = key_len.or_else(head_dim)?;
            let v = value_len.or_else(head_dim)?;
            per_token = per_token.saturating_add(hkv.saturating_mul(k.saturating_add(v)));
        }
        Some(per_token.saturating_mul(ctx).saturating_mul(2))
    }
}

/// The ggml type holding the most tensor bytes (ties go to the lower type id).
pub(crate) fn dominant_type<'a>(
    tensors: impl IntoIterator<Item = &'a TensorInfo>,
) -> Option<String> {
    let mut bytes: BTreeMap<u32, (u64, &str)> = BTreeMap::new();
    for t in tensors {
        let e = bytes
            .entry(t.ggml_type.id())
            .or_insert((0, t.ggml_type.name()));
        e.0 = e.0.saturating_add(t.n_bytes);
    }
    bytes
        .values()
        .fold(None::<(u64, &str)>, |best, &(b, name)| match best {
            Some((bb, _)) if bb >= b => best,
            _ => Some((b, name)),
        })
        .map(|(_, name)| name.to_owned())
}

#[derive(Debug, Clone)]
enum PerLayer {
    All(u64),
    Each(Vec<u64>),
}

impl PerLayer {
    fn get(&self, layer: u64) -> Option<u64> {
        match self {
            Self::All(v) => Some(*v),
            Self::Each(v) => usize::try_from(layer).ok().and_then(|i| v.get(i).copied()),
        }
    }

    fn max(self) -> u64 {
        match self {
            Self::All(v) => v,
            Self::Each(v) => v.into_iter().max().unwrap_or(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Projector;

    fn sees(image: u64, patch: u64) -> Projector {
        Projector {
            vision: true,
            image_size: Some(image),
            patch_size: Some(patch),
            projection_dim: Some(576),
            ..Projector::default()
        }
    }

    #[test]
    fn a_projector_fits_by_its_width_and_a_sane_image() {
        // LLaVA's 336 in patches of 14, Gemma 3's 896
        assert!(sees(336, 14).fits(Some(576)));
        assert!(sees(896, 14).fits(None));
        assert!(!sees(336, 14).fits(Some(2048)));
        for (image, patch, words) in [
            (336, 0, "patch of 0"),
            (14, 336, "does not fit"),
            (1 << 20, 14, "over 8192"),
            (8192, 1, "patches a side"),
        ] {
            let p = sees(image, patch);
            let fault = p.image_fault().unwrap_or_default();
            assert!(fault.contains(words), "{image}/{patch}: {fault:?}");
            assert!(!p.fits(Some(576)));
        }
        // an audio-only projector has no image to check
        let hears = Projector {
            audio: true,
            image_size: Some(0),
            patch_size: Some(0),
            ..Projector::default()
        };
        assert_eq!(hears.image_fault(), None);
        assert!(hears.fits(None));
    }
}

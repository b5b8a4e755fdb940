//! Models cut into shards, as llama.cpp's `gguf-split` and `gguf.GGUFWriter` write
//! them (`NAME-00001-of-00003.gguf`): which shard a header is, and the summary of the
//! whole model from every shard's header. The first shard holds the metadata; each
//! holds its own tensors and the `split.*` keys.

use crate::reader::Gguf;
use crate::summary::{Summary, dominant_type};
use crate::value::Value;

/// Where a header sits in a split model: its `split.*` keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Split {
    /// `split.no`: the shard's index, from 0.
    pub no: u64,
    /// `split.count`: the model's shards.
    pub count: u64,
    /// `split.tensors.count`: the whole model's tensors.
    pub tensors: Option<u64>,
}

/// Shards that are not one whole split model, in order.
#[derive(Debug, thiserror::Error)]
#[error("shard {shard} of {count}: {reason}")]
pub struct SplitError {
    /// The shard at fault, from 1.
    pub shard: usize,
    /// The shards given.
    pub count: usize,
    /// What is wrong with it.
    pub reason: String,
}

impl Gguf {
    /// The header's `split.*` keys; `None` for a model in one file.
    pub fn split(&self) -> Option<Split> {
        let key = |k: &str| self.get(k).and_then(Value::as_u64);
        Some(Split {
            no: key("split.no").unwrap_or(0),
            count: key("split.count")?,
            tensors: key("split.tensors.count"),
        })
    }
}

/// The summary of a model from its files' headers, in shard order: the first's
/// metadata, and the parameters, tensor data and (without `general.file_type`) the
/// dominant type over every shard. More than one header must be exactly the shards
/// of one split model; one header is summarized alone, a lone shard included.
pub fn summary_of_shards(shards: &[Gguf]) -> Result<Summary, SplitError> {
    let n = shards.len();
    let fail = |i: usize, reason: String| SplitError {
        shard: i + 1,
        count: n,
        reason,
    };
    let Some(first) = shards.first() else {
        return Err(fail(0, "no files given".into()));
    };
    let mut summary = first.summary();
    if n == 1 {
        return Ok(summary);
    }
    let mut tensors: u64 = 0;
    for (i, g) in shards.iter().enumerate() {
        let Some(s) = g.split() else {
            return Err(fail(
                i,
                "has no split.count: not a shard of a split model".into(),
            ));
        };
        if s.count != n as u64 {
            return Err(fail(i, format!("its split.count says {} shards", s.count)));
        }
        if s.no != i as u64 {
            return Err(fail(
                i,
                format!("its split.no says it is shard {}", s.no.saturating_add(1)),
            ));
        }
        tensors = tensors.saturating_add(g.tensors.len() as u64);
        if i > 0 {
            let part = g.summary();
            summary.parameter_count = summary.parameter_count.saturating_add(part.parameter_count);
            summary.tensor_data_size = summary
                .tensor_data_size
                .saturating_add(part.tensor_data_size);
        }
    }
    if let Some(expected) = first.split().and_then(|s| s.tensors)
        && expected != tensors
    {
        return Err(fail(
            0,
            format!("its split.tensors.count says {expected} tensors, the shards hold {tensors}"),
        ));
    }
    if summary.file_type.is_none() {
        summary.quantization = dominant_type(shards.iter().flat_map(|g| &g.tensors));
    }
    Ok(summary)
}

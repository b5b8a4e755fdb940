//! Summaries of the fixtures, derived by hand from what `make_fixtures.py` wrote.

use gguf::{MemoryEstimate, ReadOptions, Summary};

use crate::parse;

fn summary(name: &str) -> Summary {
    parse(name, &ReadOptions::default()).summary()
}

#[test]
fn llama_q4_0() {
    let s = summary("llama-q4_0.gguf");
    // token_embd 64x64, 2 layers of (2 norms of 64, q and o of 64x64, k and v of
    // 32x64, up and down of 128x64), output_norm 64
    let per_layer = 2 * 64 + 2 * 64 * 64 + 2 * 32 * 64 + 2 * 128 * 64;
    assert_eq!(
        s,
        Summary {
            architecture: Some("llama".into()),
            name: Some("Tiny Llama Test".into()),
            quantization: Some("Q4_0".into()),
            file_type: Some(2),
            parameter_count: 64 * 64 + 2 * per_layer + 64,
            context_length: Some(2048),
            embedding_length: Some(64),
            block_count: Some(2),
            head_count: Some(4),
            head_count_kv: Some(2),
            vocab_size: Some(64),
            has_chat_template: false,
            tokenizer_model: Some("llama".into()),
            tensor_data_size: s.tensor_data_size,
            // 2 layers × 2 kv heads × (16 + 16) of K and V, 2 bytes each
            kv_cache_bytes_per_token: Some(2 * 2 * 32 * 2),
            pooling_type: None,
            projector: None,
        }
    );
    // the summary's estimate is the header's
    let g = parse("llama-q4_0.gguf", &ReadOptions::default());
    assert_eq!(s.memory_estimate(2048), g.memory_estimate(2048));
}

#[test]
fn quantization_names() {
    let check = |name: &str, quant: &str, file_type: Option<u32>| {
        let s = summary(name);
        assert_eq!(s.quantization.as_deref(), Some(quant), "{name}");
        assert_eq!(s.file_type, file_type, "{name}");
    };
    check("qwen2-q4_k_m.gguf", "Q4_K_M", Some(15));
    check("phi3-f16-bigendian.gguf", "F16", Some(1));
    check("gemma-q8_0-align64.gguf", "Q8_0", Some(7));
    check("unicode.gguf", "F32", Some(0));
    check("per-layer-heads.gguf", "Q4_1", Some(3));
    // no general.file_type: the type with the most bytes
    check("no-file-type-q5_k.gguf", "Q5_K", None);
}

#[test]
fn other_fields() {
    let q = summary("qwen2-q4_k_m.gguf");
    assert!(q.has_chat_template);
    assert_eq!(q.tokenizer_model.as_deref(), Some("gpt2"));
    assert_eq!(q.context_length, Some(32768));
    assert_eq!(q.vocab_size, Some(48));
    let u = summary("unicode.gguf");
    assert_eq!(u.name.as_deref(), Some("Модель 模型 🦙"));
    let p = summary("per-layer-heads.gguf");
    assert_eq!((p.head_count, p.head_count_kv), (Some(8), Some(2)));
    let be = parse("phi3-f16-bigendian.gguf", &ReadOptions::default());
    assert!(be.big_endian);
    assert_eq!(be.summary().architecture.as_deref(), Some("phi3"));
    let aligned = parse("gemma-q8_0-align64.gguf", &ReadOptions::default());
    assert_eq!(aligned.alignment, 64);
    assert_eq!(aligned.tensor_data_offset % 64, 0);
}

#[test]
fn memory_estimates() {
    let g = parse("llama-q4_0.gguf", &ReadOptions::default());
    // head dim 64 / 4 = 16; per layer and token 2 KV heads x (16 + 16); 2 layers; f16
    let kv = 2 * 2 * (16 + 16) * 2048 * 2;
    assert_eq!(
        g.memory_estimate(2048),
        MemoryEstimate {
            context_length: 2048,
            weights_bytes: g.tensor_data_size(),
            kv_cache_bytes: Some(kv),
            total_bytes: g.tensor_data_size() + kv,
        }
    );
    // per-layer KV heads 1, 2, 2 with key and value length 16
    let p = parse("per-layer-heads.gguf", &ReadOptions::default());
    assert_eq!(
        p.memory_estimate(1000).kv_cache_bytes,
        Some((1 + 2 + 2) * 32 * 1000 * 2)
    );
    // v1 file: no head count, so no KV estimate, but the weights are known
    let v1 = parse("llama-f32-v1.gguf", &ReadOptions::default());
    let e = v1.memory_estimate(512);
    assert_eq!(
        (e.kv_cache_bytes, e.weights_bytes),
        (None, 32 * 3 * 4 + 32 * 4)
    );
}

#[test]
fn a_split_model_sums_its_shards() {
    let names: Vec<String> = (1..=3)
        .map(|i| format!("llama-q4_0-split-{i:05}-of-00003.gguf"))
        .collect();
    let shards: Vec<gguf::Gguf> = names
        .iter()
        .map(|n| parse(n, &ReadOptions::default()))
        .collect();
    for (i, g) in shards.iter().enumerate() {
        let split = g.split().unwrap();
        assert_eq!((split.no, split.count), (i as u64, 3));
        assert_eq!(split.tensors, Some(18));
    }
    // the writer cut llama-q4_0's model: the whole is the unsplit file's summary
    let whole = summary("llama-q4_0.gguf");
    assert_eq!(gguf::summary_of_shards(&shards).unwrap(), whole);
    // the first shard alone knows only its own tensors
    let first = gguf::summary_of_shards(&shards[..1]).unwrap();
    assert!(first.parameter_count < whole.parameter_count);
    assert_eq!(first.architecture, whole.architecture);

    let err = |set: Vec<gguf::Gguf>| gguf::summary_of_shards(&set).unwrap_err().to_string();
    let e = err(vec![
        shards[1].clone(),
        shards[0].clone(),
        shards[2].clone(),
    ]);
    assert!(e.contains("shard 1 of 3") && e.contains("split.no"), "{e}");
    let e = err(shards[..2].to_vec());
    assert!(e.contains("split.count says 3"), "{e}");
    let e = err(vec![
        parse("llama-q4_0.gguf", &ReadOptions::default()),
        shards[1].clone(),
        shards[2].clone(),
    ]);
    assert!(
        e.contains("shard 1 of 3") && e.contains("not a shard"),
        "{e}"
    );
    assert!(gguf::summary_of_shards(&[]).is_err());
}

#[test]
fn a_projector_says_what_it_sees_and_how_wide_its_output_is() {
    let s = summary("mmproj-tiny-mlp.gguf");
    assert_eq!(s.architecture.as_deref(), Some("clip"));
    assert_eq!(
        s.projector,
        Some(gguf::Projector {
            projector_type: Some("mlp".into()),
            vision: true,
            audio: false,
            image_size: Some(32),
            patch_size: Some(8),
            projection_dim: Some(576),
        })
    );
    // a language model is no projector
    assert_eq!(summary("llama-q4_0.gguf").projector, None);
}

//! Fills a home's catalog with synthetic available models, for benchmarks.
//!
//!     cargo run --release -p hive --example seed_catalog -- HOME COUNT

use anyhow::Context as _;
use artifact_catalog::{ArtifactStatus, Backend};
use model_catalog::{ModelCatalog, ModelEntry};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let home = std::path::PathBuf::from(args.next().context("usage: seed_catalog HOME COUNT")?);
    let count: usize = args
        .next()
        .context("usage: seed_catalog HOME COUNT")?
        .parse()?;
    let catalog = ModelCatalog::open(&home, Backend::Sqlite)?;
    let summary = gguf::Summary {
        architecture: Some("llama".into()),
        name: Some("Synthetic".into()),
        quantization: Some("Q4_K_M".into()),
        file_type: Some(15),
        parameter_count: 7_241_732_096,
        context_length: Some(32768),
        embedding_length: Some(4096),
        block_count: Some(32),
        head_count: Some(32),
        head_count_kv: Some(8),
        vocab_size: Some(32000),
        has_chat_template: true,
        tokenizer_model: Some("llama".into()),
        tensor_data_size: 4_368_438_272,
        kv_cache_bytes_per_token: Some(131_072),
        pooling_type: None,
        projector: None,
    };
    for i in 0..count {
        let id = format!("hf:org/model-{i:05}-GGUF/model-{i:05}.Q4_K_M.gguf");
        let path = catalog
            .model_dir(&id)?
            .join(format!("model-{i:05}.Q4_K_M.gguf"));
        let mut e = ModelEntry::new(
            &id,
            "huggingface",
            &format!("hf:org/model-{i:05}-GGUF"),
            &path,
        )
        .with_summary(summary.clone());
        e.size = 4_368_439_584;
        e.sha256 = Some(format!("{i:064x}"));
        e.verified = true;
        e.revision = Some(format!("{i:040x}"));
        e.source_url = Some(format!(
            "https://huggingface.co/org/model-{i:05}-GGUF/resolve/main/model.gguf"
        ));
        e.status = ArtifactStatus::Available;
        catalog.register(e)?;
    }
    println!("{} models in {}", catalog.len()?, home.display());
    Ok(())
}

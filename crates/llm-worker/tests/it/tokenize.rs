//! The vocabulary built from GGUF metadata.

use std::path::Path;

use llm_worker::tokenizer::Vocab;

fn vocab(path: &Path) -> Vocab {
    let bytes = fs_err::read(path).unwrap();
    let g = gguf::read(std::io::Cursor::new(bytes), &gguf::ReadOptions::full()).unwrap();
    Vocab::from_gguf(&g).unwrap()
}

#[test]
fn smollm2_encodes_as_its_own_tokenizer_does() {
    let Some(model) = crate::smollm2() else {
        return;
    };
    let v = vocab(&model);
    assert_eq!(v.len(), 49152);
    // The ids Hugging Face's tokenizer gives (no BOS: add_bos_token is false).
    assert_eq!(
        v.encode("The capital of France is", true).unwrap(),
        [504, 3575, 282, 4649, 314]
    );
    assert!(!v.add_bos);
    // Special tokens in the text are one token each; digits are split one by one.
    let ids = v.encode("<|im_start|>user\nHi<|im_end|>", true).unwrap();
    assert_eq!(ids.first(), Some(&1));
    assert_eq!(ids.last(), Some(&2));
    assert_eq!(v.encode("2024", false).unwrap().len(), 4);
    assert!(v.is_end_of_generation(2), "<|im_end|> ends a generation");
    for text in [
        "The capital of France is",
        "  leading spaces\n\nand\ttabs ",
        "naïve café, 東京, Привет 🦙🐝",
        "x = 12345 + 0.5; // code",
        "<|im_start|>assistant\n",
    ] {
        let back = v.decode(&v.encode(text, false).unwrap()).unwrap();
        // Control tokens give no text when decoded.
        let expected = text.replace("<|im_start|>", "");
        assert_eq!(back, expected, "round trip of {text:?}");
    }
}

#[test]
fn sentencepiece_vocabulary_from_a_gguf_writer_file() {
    // Written by llama.cpp's gguf package: a llama (SentencePiece) vocabulary with
    // byte tokens <0x00>..<0x0F>.
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../gguf/tests/fixtures/llama-q4_0.gguf");
    let v = vocab(&path);
    assert_eq!(v.len(), 64);
    assert!(
        v.add_bos,
        "llama vocabularies add BOS unless they say otherwise"
    );
    let ids = v.encode("\u{1}\u{2}", true).unwrap();
    // BOS, then the space prefix and the two bytes, each through byte fallback.
    assert_eq!(ids[0], 1);
    assert!(
        ids[1..].iter().all(|&id| (3..19).contains(&id) || id == 0),
        "{ids:?}"
    );
    assert!(v.is_end_of_generation(2));
}

#[test]
fn an_unsupported_vocabulary_is_refused_by_name() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../gguf/tests/fixtures/llama-q4_0.gguf");
    let bytes = fs_err::read(&path).unwrap();
    let mut g = gguf::read(std::io::Cursor::new(bytes), &gguf::ReadOptions::full()).unwrap();
    for (key, value) in &mut g.metadata {
        if key == "tokenizer.ggml.model" {
            *value = gguf::Value::String("bert".into());
        }
    }
    let err = Vocab::from_gguf(&g).unwrap_err().to_string();
    assert!(
        err.contains("`bert` is not supported") && err.contains("gpt2, llama"),
        "{err}"
    );
}

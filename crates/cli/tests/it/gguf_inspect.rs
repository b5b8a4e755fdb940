//! `rbee gguf inspect` on the fixtures written by llama.cpp's `gguf` package,
//! checked against what `gguf.GGUFReader` recorded about them.

use serde_json::Value as Json;

use crate::{gguf_fixtures, rbee};

fn inspect_json(path: &std::path::Path) -> Json {
    let out = rbee(&["gguf", "inspect", "--json", path.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn json_agrees_with_gguf_reader() {
    let mut checked = 0;
    for entry in fs_err::read_dir(gguf_fixtures()).unwrap() {
        let path = entry.unwrap().path();
        let reference_path = path.with_extension("reference.json");
        if path.extension().is_none_or(|e| e != "gguf") || !reference_path.exists() {
            continue;
        }
        let reference: Json =
            serde_json::from_slice(&fs_err::read(&reference_path).unwrap()).unwrap();
        let ours = inspect_json(&path);
        let name = path.display();
        for key in [
            "gguf_version",
            "tensor_count",
            "kv_count",
            "architecture",
            "name",
            "quantization",
            "file_type",
            "parameter_count",
            "context_length",
            "embedding_length",
            "block_count",
            "head_count",
            "head_count_kv",
            "vocab_size",
            "alignment",
            "tensor_data_offset",
            "metadata",
        ] {
            assert!(ours.get(key).is_some(), "{name}: no {key}");
        }
        let tensors = reference["tensors"].as_array().unwrap();
        let params: u64 = tensors
            .iter()
            .map(|t| t["n_elements"].as_u64().unwrap())
            .sum();
        assert_eq!(ours["parameter_count"], params, "{name}");
        assert_eq!(ours["tensor_count"], tensors.len(), "{name}");
        assert_eq!(ours["kv_count"], reference["kv_count"], "{name}");
        assert_eq!(ours["gguf_version"], reference["version"], "{name}");
        assert_eq!(ours["alignment"], reference["alignment"], "{name}");
        assert_eq!(
            ours["tensor_data_offset"], reference["data_offset"],
            "{name}"
        );
        let fields = &reference["fields"];
        assert_eq!(
            ours["architecture"], fields["general.architecture"]["value"],
            "{name}"
        );
        assert_eq!(ours["name"], fields["general.name"]["value"], "{name}");
        let file_type = &fields["general.file_type"]["value"];
        assert_eq!(
            &ours["file_type"],
            if file_type.is_null() {
                &Json::Null
            } else {
                file_type
            },
            "{name}"
        );

        // every key, with short values as they are and long arrays as type and length
        let metadata = ours["metadata"].as_object().unwrap();
        assert_eq!(metadata.len(), fields.as_object().unwrap().len(), "{name}");
        for (key, field) in fields.as_object().unwrap() {
            let shown = &metadata[key];
            let types = field["types"].as_array().unwrap();
            if types[0] == "ARRAY" && types.len() == 2 {
                let values = field["value"].as_array().unwrap();
                if values.len() > 16 {
                    assert_eq!(shown["len"], values.len(), "{name} {key}");
                    assert_eq!(
                        shown["type"],
                        types[1].as_str().unwrap().to_lowercase(),
                        "{name} {key}"
                    );
                } else {
                    assert_eq!(shown, &field["value"], "{name} {key}");
                }
            } else if types[0] != "ARRAY" && types[0] != "FLOAT32" {
                assert_eq!(shown, &field["value"], "{name} {key}");
            }
        }
        checked += 1;
    }
    assert!(checked >= 9);
}

#[test]
fn json_summary_values() {
    let j = inspect_json(&gguf_fixtures().join("qwen2-q4_k_m.gguf"));
    assert_eq!(j["quantization"], "Q4_K_M");
    assert_eq!(j["context_length"], 32768);
    assert_eq!(j["head_count_kv"], 2);
    assert_eq!(j["vocab_size"], 48);
    assert_eq!(j["metadata"]["tokenizer.ggml.tokens"]["type"], "string");
    let j = inspect_json(&gguf_fixtures().join("no-file-type-q5_k.gguf"));
    assert_eq!(j["quantization"], "Q5_K");
    assert_eq!(j["file_type"], Json::Null);
    let j = inspect_json(&gguf_fixtures().join("llama-f32-v1.gguf"));
    assert_eq!(j["gguf_version"], 1);
}

#[test]
fn readable_summary() {
    let out = rbee(&[
        "gguf",
        "inspect",
        gguf_fixtures().join("llama-q4_0.gguf").to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for expected in ["Tiny Llama Test", "llama", "Q4_0", "2048", "GGUF v3"] {
        assert!(text.contains(expected), "{expected:?} missing from\n{text}");
    }
}

#[test]
fn bad_files_exit_2_with_one_line() {
    let bad = gguf_fixtures().join("bad");
    let mut checked = 0;
    for entry in fs_err::read_dir(&bad).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "gguf") {
            continue;
        }
        for json in [false, true] {
            let mut args = vec!["gguf", "inspect", path.to_str().unwrap()];
            if json {
                args.push("--json");
            }
            let out = rbee(&args);
            assert_eq!(out.status.code(), Some(2), "{}", path.display());
            assert!(out.stdout.is_empty());
            let stderr = String::from_utf8(out.stderr).unwrap();
            assert_eq!(stderr.lines().count(), 1, "{stderr}");
            assert!(stderr.contains("offset"), "{stderr}");
            assert!(
                stderr.contains(path.file_name().unwrap().to_str().unwrap()),
                "{stderr}"
            );
        }
        checked += 1;
    }
    assert!(checked >= 20);
    let out = rbee(&["gguf", "inspect", "/no/such/file.gguf"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/no/such/file.gguf"));
}

//! Our reader agrees with `gguf.GGUFReader` on every fixture it can read.

use gguf::{ReadOptions, Value};
use serde_json::{Value as Json, json};

use crate::{fixtures, good_fixtures, parse};

/// Python's view of a value: its type list (`ARRAY`, then the element types down to
/// the innermost) and the values flattened, as `ReaderField.contents()` gives them.
fn python_view(v: &Value) -> (Vec<String>, Json) {
    let mut types = vec![v.value_type().name().to_uppercase()];
    let value = match v {
        Value::Array(a) => {
            let values = a.values.as_ref().expect("read with ReadOptions::full");
            let mut flat = Vec::new();
            let mut inner_types = vec![a.elem_type.name().to_uppercase()];
            for (i, e) in values.iter().enumerate() {
                let (t, j) = python_view(e);
                if i == 0 {
                    inner_types = t;
                }
                match j {
                    Json::Array(items) => flat.extend(items),
                    other => flat.push(other),
                }
            }
            types.extend(inner_types);
            Json::Array(flat)
        }
        Value::U8(x) => json!(x),
        Value::I8(x) => json!(x),
        Value::U16(x) => json!(x),
        Value::I16(x) => json!(x),
        Value::U32(x) => json!(x),
        Value::I32(x) => json!(x),
        Value::U64(x) => json!(x),
        Value::I64(x) => json!(x),
        Value::F32(x) => json!(f64::from(*x)),
        Value::F64(x) => json!(x),
        Value::Bool(x) => json!(x),
        Value::String(s) => json!(s),
    };
    (types, value)
}

#[test]
fn every_fixture_matches_gguf_reader() {
    let mut compared = 0;
    for name in good_fixtures() {
        let ref_path = fixtures().join(name.replace(".gguf", ".reference.json"));
        if !ref_path.exists() {
            // GGUFReader reads no v1 files; that fixture is checked in `v1_fixture`.
            assert!(name.contains("-v1"), "no reference for {name}");
            continue;
        }
        let reference: Json =
            serde_json::from_str(&fs_err::read_to_string(&ref_path).unwrap()).unwrap();
        let g = parse(&name, &ReadOptions::full());
        let ctx = |what: &str| format!("{name}: {what}");

        assert_eq!(json!(g.version), reference["version"], "{}", ctx("version"));
        assert_eq!(
            json!(g.big_endian),
            reference["big_endian"],
            "{}",
            ctx("endianness")
        );
        assert_eq!(
            json!(g.alignment),
            reference["alignment"],
            "{}",
            ctx("alignment")
        );
        assert_eq!(
            json!(g.tensor_data_offset),
            reference["data_offset"],
            "{}",
            ctx("data offset")
        );
        assert_eq!(
            json!(g.tensors.len()),
            reference["tensor_count"],
            "{}",
            ctx("tensor count")
        );
        assert_eq!(
            json!(g.metadata.len()),
            reference["kv_count"],
            "{}",
            ctx("kv count")
        );

        let fields = reference["fields"].as_object().unwrap();
        assert_eq!(fields.len(), g.metadata.len(), "{}", ctx("fields"));
        for (key, value) in &g.metadata {
            let expected = &fields[key.as_str()];
            let (types, flat) = python_view(value);
            assert_eq!(json!(types), expected["types"], "{}", ctx(key));
            assert_eq!(flat, expected["value"], "{}", ctx(key));
        }

        let tensors = reference["tensors"].as_array().unwrap();
        for (t, r) in g.tensors.iter().zip(tensors) {
            let ours = json!({
                "name": t.name,
                "type": t.ggml_type.name(),
                "type_id": t.ggml_type.id(),
                "dims": t.dims,
                "n_elements": t.n_elements,
                "n_bytes": t.n_bytes,
                "data_offset": g.tensor_data_offset + t.offset,
            });
            assert_eq!(&ours, r, "{}", ctx(&t.name));
        }
        compared += 1;
    }
    assert!(compared >= 9, "compared only {compared} fixtures");
}

#[test]
fn v1_fixture() {
    let g = parse("llama-f32-v1.gguf", &ReadOptions::full());
    assert_eq!(g.version, 1);
    assert_eq!(g.metadata.len(), 4);
    assert_eq!(
        g.get("general.name").and_then(Value::as_str),
        Some("GGUF v1 file")
    );
    assert_eq!(
        g.get("llama.context_length").and_then(Value::as_u64),
        Some(2048)
    );
    let tokens = g
        .get("tokenizer.ggml.tokens")
        .and_then(Value::as_array)
        .unwrap();
    assert_eq!(
        tokens.values.as_ref().unwrap()[2],
        Value::String("</s>".into())
    );
    assert_eq!(g.tensors.len(), 2);
    assert_eq!(g.tensors[0].dims, vec![32, 3]);
    assert_eq!(g.tensors[1].offset, 384);
    assert_eq!(g.tensor_data_offset % 32, 0);
    assert_eq!(g.summary().parameter_count, 32 * 3 + 32);
}

#[test]
fn large_arrays_are_skipped_unless_asked() {
    let name = "all-value-types.gguf";
    let skipped = parse(name, &ReadOptions::default());
    let full = parse(name, &ReadOptions::full());
    let long = |g: &gguf::Gguf| {
        g.get("test.array.long_u32")
            .and_then(Value::as_array)
            .cloned()
            .unwrap()
    };
    assert_eq!(long(&skipped).len, 40);
    assert!(
        long(&skipped).values.is_some(),
        "40 <= 64 is built by default"
    );
    let tiny = parse(name, &ReadOptions { max_array_len: 2 });
    assert_eq!(long(&tiny).values, None);
    assert_eq!(long(&tiny).len, 40);
    assert_eq!(long(&full).values.unwrap().len(), 40);
    // Skipping changes nothing else.
    assert_eq!(tiny.tensors, full.tensors);
    assert_eq!(tiny.tensor_data_offset, full.tensor_data_offset);
    assert_eq!(tiny.summary(), full.summary());
}

#[test]
fn reads_from_a_file_as_from_bytes() {
    for name in good_fixtures() {
        let file = std::fs::File::open(fixtures().join(&name)).unwrap();
        let from_file = gguf::read(file, &ReadOptions::default()).unwrap();
        let from_bytes = parse(&name, &ReadOptions::default());
        assert_eq!(from_file.metadata, from_bytes.metadata, "{name}");
        assert_eq!(from_file.tensors, from_bytes.tensors, "{name}");
    }
}

//! The numbers a request may hand an engine. llama.cpp's server reads its sampling
//! integers as 32-bit (and the seed as unsigned 32-bit); a value past that range is
//! not refused there, it crashes or wraps. So the one endpoint checks each before
//! any worker sees it, whatever the route family, and refuses with a 400 that names
//! the field.

use serde_json::Value;

/// The integer fields of a completion request, and the range each may take.
const INTEGERS: &[(&str, i64, i64)] = &[
    ("max_tokens", -1, i32::MAX as i64),
    ("max_completion_tokens", -1, i32::MAX as i64),
    ("n_predict", -1, i32::MAX as i64),
    ("top_k", -1, i32::MAX as i64),
    ("repeat_last_n", -1, i32::MAX as i64),
    ("seed", -1, u32::MAX as i64),
    ("n", 1, 128),
    ("n_probs", 0, 1024),
    ("top_logprobs", 0, 1024),
    ("min_keep", 0, i32::MAX as i64),
    ("n_keep", -1, i32::MAX as i64),
    ("n_indent", 0, i32::MAX as i64),
    ("mirostat", 0, 2),
    ("dry_allowed_length", 0, i32::MAX as i64),
    ("dry_penalty_last_n", -1, i32::MAX as i64),
];

/// The float fields: any finite number (a float's own range is llama.cpp's).
const FLOATS: &[&str] = &[
    "temperature",
    "top_p",
    "min_p",
    "typical_p",
    "repeat_penalty",
    "presence_penalty",
    "frequency_penalty",
    "mirostat_tau",
    "mirostat_eta",
    "dry_multiplier",
    "dry_base",
    "xtc_probability",
    "xtc_threshold",
];

/// Whether each sampling number in `body` is one the engine can take; the first
/// that is not, said for a person.
pub fn check_numbers(body: &Value) -> Result<(), String> {
    for &(name, min, max) in INTEGERS {
        let Some(v) = body.get(name).filter(|v| !v.is_null()) else {
            continue;
        };
        if !v.as_i64().is_some_and(|n| (min..=max).contains(&n)) {
            return Err(format!(
                "`{name}` must be a whole number from {min} to {max}, got {v}"
            ));
        }
    }
    for &name in FLOATS {
        let Some(v) = body.get(name).filter(|v| !v.is_null()) else {
            continue;
        };
        if !v.as_f64().is_some_and(f64::is_finite) || !v.is_number() {
            return Err(format!("`{name}` must be a number, got {v}"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_numbers;
    use serde_json::json;

    #[test]
    fn numbers_past_what_the_engine_reads_are_refused() {
        assert!(
            check_numbers(&json!({"max_tokens": 16, "seed": 4_294_967_295_u64, "top_k": -1}))
                .is_ok()
        );
        assert!(check_numbers(&json!({"temperature": 0.7, "presence_penalty": -4.2e19})).is_ok());
        for bad in [
            json!({"repeat_last_n": 11_115_725_699_367_595_044_u64}),
            json!({"max_tokens": 2_147_483_648_u64}),
            json!({"seed": 4_294_967_296_u64}),
            json!({"top_k": 1.5}),
            json!({"top_k": "3"}),
            json!({"temperature": "hot"}),
            json!({"n": 0}),
        ] {
            let why = check_numbers(&bad).err().unwrap_or_default();
            assert!(why.starts_with('`'), "{bad}: {why}");
        }
    }
}

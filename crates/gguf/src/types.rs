//! ggml tensor types and llama.cpp's file types (`general.file_type`).

use std::fmt;

/// A ggml tensor type, as stored in a tensor info.
///
/// Only the types a GGUF file may hold are known; the ids removed from ggml
/// (4, 5, 31 to 33, 36 to 38) are refused like any unknown id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GgmlType(u32);

/// (id, name, elements per block, bytes per block), from ggml's type traits.
const GGML_TYPES: &[(u32, &str, u64, u64)] = &[
    (0, "F32", 1, 4),
    (1, "F16", 1, 2),
    (2, "Q4_0", 32, 18),
    (3, "Q4_1", 32, 20),
    (6, "Q5_0", 32, 22),
    (7, "Q5_1", 32, 24),
    (8, "Q8_0", 32, 34),
    (9, "Q8_1", 32, 40),
    (10, "Q2_K", 256, 84),
    (11, "Q3_K", 256, 110),
    (12, "Q4_K", 256, 144),
    (13, "Q5_K", 256, 176),
    (14, "Q6_K", 256, 210),
    (15, "Q8_K", 256, 292),
    (16, "IQ2_XXS", 256, 66),
    (17, "IQ2_XS", 256, 74),
    (18, "IQ3_XXS", 256, 98),
    (19, "IQ1_S", 256, 50),
    (20, "IQ4_NL", 32, 18),
    (21, "IQ3_S", 256, 110),
    (22, "IQ2_S", 256, 82),
    (23, "IQ4_XS", 256, 136),
    (24, "I8", 1, 1),
    (25, "I16", 1, 2),
    (26, "I32", 1, 4),
    (27, "I64", 1, 8),
    (28, "F64", 1, 8),
    (29, "IQ1_M", 256, 56),
    (30, "BF16", 1, 2),
    (34, "TQ1_0", 256, 54),
    (35, "TQ2_0", 256, 66),
    (39, "MXFP4", 32, 17),
    (40, "NVFP4", 64, 36),
    (41, "Q1_0", 128, 18),
];

impl GgmlType {
    /// The type with this id, if ggml knows it.
    pub fn from_id(id: u32) -> Option<Self> {
        GGML_TYPES
            .iter()
            .any(|&(i, ..)| i == id)
            .then_some(GgmlType(id))
    }

    /// The numeric id stored in the file.
    pub fn id(self) -> u32 {
        self.0
    }

    fn entry(self) -> &'static (u32, &'static str, u64, u64) {
        // `from_id` is the only constructor, so the id is always in the table.
        GGML_TYPES
            .iter()
            .find(|&&(i, ..)| i == self.0)
            .unwrap_or(&GGML_TYPES[0])
    }

    /// ggml's name for the type, such as `Q4_K`.
    pub fn name(self) -> &'static str {
        self.entry().1
    }

    /// Elements per quantization block (1 for plain types).
    pub fn block_size(self) -> u64 {
        self.entry().2
    }

    /// Bytes per quantization block.
    pub fn block_bytes(self) -> u64 {
        self.entry().3
    }

    /// The largest id this reader knows, for error messages.
    pub fn max_known_id() -> u32 {
        GGML_TYPES.iter().map(|&(i, ..)| i).max().unwrap_or(0)
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// llama.cpp marks a file type it guessed rather than read with this bit.
const FILE_TYPE_GUESSED: u32 = 1024;

/// llama.cpp's `llama_ftype` names, as users see them in file names (`Q4_K_M`).
const FILE_TYPES: &[(u32, &str)] = &[
    (0, "F32"),
    (1, "F16"),
    (2, "Q4_0"),
    (3, "Q4_1"),
    (4, "Q4_1_SOME_F16"),
    (7, "Q8_0"),
    (8, "Q5_0"),
    (9, "Q5_1"),
    (10, "Q2_K"),
    (11, "Q3_K_S"),
    (12, "Q3_K_M"),
    (13, "Q3_K_L"),
    (14, "Q4_K_S"),
    (15, "Q4_K_M"),
    (16, "Q5_K_S"),
    (17, "Q5_K_M"),
    (18, "Q6_K"),
    (19, "IQ2_XXS"),
    (20, "IQ2_XS"),
    (21, "Q2_K_S"),
    (22, "IQ3_XS"),
    (23, "IQ3_XXS"),
    (24, "IQ1_S"),
    (25, "IQ4_NL"),
    (26, "IQ3_S"),
    (27, "IQ3_M"),
    (28, "IQ2_S"),
    (29, "IQ2_M"),
    (30, "IQ4_XS"),
    (31, "IQ1_M"),
    (32, "BF16"),
    (33, "Q4_0_4_4"),
    (34, "Q4_0_4_8"),
    (35, "Q4_0_8_8"),
    (36, "TQ1_0"),
    (37, "TQ2_0"),
    (38, "MXFP4_MOE"),
    (39, "NVFP4"),
    (40, "Q1_0"),
];

/// The quantization name of a `general.file_type` value, such as `Q4_K_M` for 15.
pub fn file_type_name(file_type: u32) -> Option<&'static str> {
    let ft = file_type & !FILE_TYPE_GUESSED;
    FILE_TYPES
        .iter()
        .find(|&&(id, _)| id == ft)
        .map(|&(_, name)| name)
}

/// Every quantization name a model file may carry in its name: llama.cpp's file
/// types (`Q4_K_M`) and ggml's tensor types (`Q4_K`, `BF16`).
pub fn quantization_names() -> impl Iterator<Item = &'static str> {
    FILE_TYPES
        .iter()
        .map(|&(_, n)| n)
        .chain(GGML_TYPES.iter().map(|&(_, n, ..)| n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_type_names() {
        let check = |ft, expected| assert_eq!(file_type_name(ft), expected, "{ft}");
        check(15, Some("Q4_K_M"));
        check(15 | FILE_TYPE_GUESSED, Some("Q4_K_M"));
        check(3, Some("Q4_1"));
        check(32, Some("BF16"));
        check(5, None);
        check(9999, None);
    }

    #[test]
    fn ggml_types() {
        assert_eq!(GgmlType::from_id(12).map(|t| t.name()), Some("Q4_K"));
        assert_eq!(GgmlType::from_id(12).map(|t| t.block_bytes()), Some(144));
        assert!(GgmlType::from_id(4).is_none());
        assert!(GgmlType::from_id(42).is_none());
        assert_eq!(GgmlType::max_known_id(), 41);
    }
}

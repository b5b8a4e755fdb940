//! The parser: header, metadata, tensor infos. Tensor data is never read.

use std::collections::HashSet;
use std::io::{BufReader, Cursor, Read, Seek, SeekFrom};

use crate::error::GgufError;
use crate::types::GgmlType;
use crate::value::{Array, Value, ValueType};

type Result<T, E = GgufError> = std::result::Result<T, E>;

/// The most tensors a file may declare.
pub const MAX_TENSORS: u64 = 1 << 20;
/// The most metadata pairs a file may declare.
pub const MAX_KV: u64 = 1 << 20;
/// The longest string, in bytes.
pub const MAX_STRING_LEN: u64 = 64 << 20;
/// The most elements of one array.
pub const MAX_ARRAY_LEN: u64 = 1 << 26;
/// How deep arrays may nest.
pub const MAX_DEPTH: u32 = 8;
/// ggml's limit on tensor dimensions.
pub const MAX_DIMS: u32 = 4;
/// The alignment of tensor data when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;

/// How much of the metadata to build.
#[derive(Debug, Clone)]
pub struct ReadOptions {
    /// Arrays with more elements than this are skipped over: their type and length
    /// are kept, their elements are not built. `u64::MAX` builds every array.
    pub max_array_len: u64,
}

impl Default for ReadOptions {
    /// Skips arrays of more than 64 elements (a vocabulary, its merges and scores).
    fn default() -> Self {
        Self { max_array_len: 64 }
    }
}

impl ReadOptions {
    /// Builds every array, the whole vocabulary included.
    pub fn full() -> Self {
        Self {
            max_array_len: u64::MAX,
        }
    }
}

/// One tensor's description. Its data starts at
/// [`Gguf::tensor_data_offset`] + `offset`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// The tensor's name, such as `blk.0.attn_q.weight`.
    pub name: String,
    /// The dimensions, innermost first, as stored (`ne[0]`, `ne[1]`, ...).
    pub dims: Vec<u64>,
    /// The ggml type of the data.
    pub ggml_type: GgmlType,
    /// The data's offset from the start of the tensor data section.
    pub offset: u64,
    /// The product of the dimensions.
    pub n_elements: u64,
    /// The size of the data in bytes.
    pub n_bytes: u64,
}

/// A parsed GGUF header: everything but the tensor data.
#[derive(Debug, Clone)]
pub struct Gguf {
    /// 1, 2 or 3.
    pub version: u32,
    /// Whether the file is big-endian.
    pub big_endian: bool,
    /// The metadata pairs, in file order.
    pub metadata: Vec<(String, Value)>,
    /// The tensor infos, in file order.
    pub tensors: Vec<TensorInfo>,
    /// The alignment of tensor data.
    pub alignment: u64,
    /// Where the tensor data section starts.
    pub tensor_data_offset: u64,
}

impl Gguf {
    /// The value of a metadata key.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// The size of the tensor data section: the furthest end of any tensor.
    pub fn tensor_data_size(&self) -> u64 {
        self.tensors
            .iter()
            .map(|t| t.offset.saturating_add(t.n_bytes))
            .max()
            .unwrap_or(0)
    }

    /// Checks that a file of `len` bytes holds every tensor's data.
    pub fn check_file_size(&self, len: u64) -> Result<()> {
        for t in &self.tensors {
            let end = self
                .tensor_data_offset
                .saturating_add(t.offset)
                .saturating_add(t.n_bytes);
            if end > len {
                return Err(GgufError::TruncatedData {
                    name: t.name.clone(),
                    end,
                    len,
                });
            }
        }
        Ok(())
    }
}

/// Reads a GGUF header from a reader positioned anywhere; reading starts at byte 0.
///
/// The reader's length bounds every count before anything is allocated. A prefix of
/// a larger file (the first megabytes of a download) reads as well as the whole
/// file, as long as it holds the header; when it does not, the error
/// [`is_truncation`](GgufError::is_truncation).
pub fn read<R: Read + Seek>(reader: R, options: &ReadOptions) -> Result<Gguf> {
    let mut inner = BufReader::with_capacity(64 * 1024, reader);
    let len = inner
        .seek(SeekFrom::End(0))
        .and_then(|len| inner.seek(SeekFrom::Start(0)).map(|_| len))
        .map_err(|source| GgufError::Io { offset: 0, source })?;
    Parser {
        src: Source {
            inner,
            pos: 0,
            len,
            big: false,
            v1: false,
        },
        options,
    }
    .parse()
}

/// Reads a GGUF header from bytes: a whole file or a prefix of one.
pub fn read_bytes(bytes: &[u8], options: &ReadOptions) -> Result<Gguf> {
    read(Cursor::new(bytes), options)
}

struct Source<R> {
    inner: BufReader<R>,
    pos: u64,
    len: u64,
    big: bool,
    v1: bool,
}

impl<R: Read + Seek> Source<R> {
    fn remaining(&self) -> u64 {
        self.len.saturating_sub(self.pos)
    }

    fn need(&self, needed: u64, what: impl FnOnce() -> String) -> Result<()> {
        if needed > self.remaining() {
            return Err(GgufError::UnexpectedEof {
                offset: self.pos,
                what: what(),
                needed,
                available: self.remaining(),
            });
        }
        Ok(())
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N]> {
        self.need(N as u64, || what.to_owned())?;
        let mut buf = [0u8; N];
        self.inner
            .read_exact(&mut buf)
            .map_err(|source| self.io_error(source))?;
        self.pos += N as u64;
        Ok(buf)
    }

    fn io_error(&self, source: std::io::Error) -> GgufError {
        GgufError::Io {
            offset: self.pos,
            source,
        }
    }

    fn u32(&mut self, what: &'static str) -> Result<u32> {
        let b = self.array::<4>(what)?;
        Ok(if self.big {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        })
    }

    fn u64(&mut self, what: &'static str) -> Result<u64> {
        let b = self.array::<8>(what)?;
        Ok(if self.big {
            u64::from_be_bytes(b)
        } else {
            u64::from_le_bytes(b)
        })
    }

    /// A count or length: 32 bits in GGUF v1, 64 bits after.
    fn count(&mut self, what: &'static str) -> Result<u64> {
        if self.v1 {
            self.u32(what).map(u64::from)
        } else {
            self.u64(what)
        }
    }

    fn count_size(&self) -> u64 {
        if self.v1 { 4 } else { 8 }
    }

    fn skip(&mut self, n: u64) -> Result<()> {
        self.need(n, || "a skipped value".to_owned())?;
        let rel = i64::try_from(n).map_err(|_| GgufError::TooLarge {
            offset: self.pos,
            what: "skip",
            value: n,
            limit: i64::MAX as u64,
        })?;
        self.inner
            .seek_relative(rel)
            .map_err(|source| self.io_error(source))?;
        self.pos += n;
        Ok(())
    }

    /// Reads a string's length and checks it against the limit and the bytes left.
    fn string_len(&mut self) -> Result<u64> {
        let at = self.pos;
        let len = self.count("string length")?;
        if len > MAX_STRING_LEN {
            return Err(GgufError::TooLarge {
                offset: at,
                what: "string length",
                value: len,
                limit: MAX_STRING_LEN,
            });
        }
        self.need(len, || format!("a string of {len} bytes"))?;
        Ok(len)
    }

    fn string_bytes(&mut self) -> Result<Vec<u8>> {
        let len = self.string_len()?;
        // The length is at most MAX_STRING_LEN and at most the bytes left.
        let mut buf = vec![0u8; len as usize];
        self.inner
            .read_exact(&mut buf)
            .map_err(|source| self.io_error(source))?;
        self.pos += len;
        Ok(buf)
    }

    fn utf8_string(&mut self, what: &'static str) -> Result<String> {
        let at = self.pos;
        String::from_utf8(self.string_bytes()?).map_err(|_| GgufError::BadUtf8 { offset: at, what })
    }

    fn skip_string(&mut self) -> Result<()> {
        let len = self.string_len()?;
        self.skip(len)
    }
}

struct Parser<'o, R> {
    src: Source<R>,
    options: &'o ReadOptions,
}

impl<R: Read + Seek> Parser<'_, R> {
    fn parse(mut self) -> Result<Gguf> {
        let magic = self.src.array::<4>("the magic")?;
        if &magic != b"GGUF" {
            return Err(GgufError::BadMagic {
                found: String::from_utf8_lossy(&magic).into_owned(),
            });
        }
        let raw = self.src.array::<4>("the version")?;
        let mut version = u32::from_le_bytes(raw);
        // A big-endian file's version reads as a multiple of 65536 in little-endian.
        if version & 0xFFFF == 0 {
            self.src.big = true;
            version = u32::from_be_bytes(raw);
        }
        if !(1..=3).contains(&version) {
            return Err(GgufError::UnsupportedVersion { version });
        }
        self.src.v1 = version == 1;

        let tensor_count = self.header_count("tensor count", MAX_TENSORS)?;
        let kv_count = self.header_count("kv count", MAX_KV)?;

        // The least a pair takes: key length, an empty key, a type, a one-byte value.
        let cs = self.src.count_size();
        self.check_room(kv_count, cs + 4 + 1, "key-value pairs")?;
        let mut metadata = Vec::with_capacity(capacity(kv_count));
        let mut keys = HashSet::with_capacity(capacity(kv_count));
        let mut alignment = DEFAULT_ALIGNMENT;
        for _ in 0..kv_count {
            let at = self.src.pos;
            let key = self.src.utf8_string("a metadata key")?;
            let type_at = self.src.pos;
            let vt = self.value_type()?;
            let value_at = self.src.pos;
            let value = self.value(vt, 0, true)?;
            if !keys.insert(key.clone()) {
                return Err(GgufError::DuplicateKey { offset: at, key });
            }
            if key == "general.alignment" {
                alignment = check_alignment(&value, value_at, type_at)?;
            }
            metadata.push((key, value));
        }

        // The least a tensor info takes: name length, ndims, type, offset.
        self.check_room(tensor_count, cs + 4 + 4 + 8, "tensor infos")?;
        let mut tensors = Vec::with_capacity(capacity(tensor_count));
        let mut names = HashSet::with_capacity(capacity(tensor_count));
        for _ in 0..tensor_count {
            let at = self.src.pos;
            let info = self.tensor_info(alignment)?;
            if !names.insert(info.name.clone()) {
                return Err(GgufError::DuplicateTensor {
                    offset: at,
                    name: info.name,
                });
            }
            tensors.push(info);
        }

        let tensor_data_offset = self.src.pos.next_multiple_of(alignment);
        for t in &tensors {
            if tensor_data_offset
                .checked_add(t.offset)
                .is_none_or(|start| start.checked_add(t.n_bytes).is_none())
            {
                return Err(GgufError::BadTensor {
                    offset: tensor_data_offset,
                    name: t.name.clone(),
                    reason: format!("data offset {} overflows", t.offset),
                });
            }
        }
        Ok(Gguf {
            version,
            big_endian: self.src.big,
            metadata,
            tensors,
            alignment,
            tensor_data_offset,
        })
    }

    fn header_count(&mut self, what: &'static str, limit: u64) -> Result<u64> {
        let at = self.src.pos;
        let n = self.src.count(what)?;
        if n > limit {
            return Err(GgufError::TooLarge {
                offset: at,
                what,
                value: n,
                limit,
            });
        }
        Ok(n)
    }

    /// Refuses a count whose smallest possible encoding is longer than the bytes left.
    fn check_room(&self, count: u64, min_each: u64, what: &'static str) -> Result<()> {
        let needed = count.saturating_mul(min_each);
        self.src.need(needed, || format!("{count} {what}"))
    }

    fn value_type(&mut self) -> Result<ValueType> {
        let at = self.src.pos;
        let id = self.src.u32("a value type")?;
        ValueType::from_id(id).ok_or(GgufError::BadValueType {
            offset: at,
            value: id,
        })
    }

    /// Reads (`build`) or skips a value of type `vt`. `None` when skipped.
    fn value(&mut self, vt: ValueType, depth: u32, build: bool) -> Result<Value> {
        let s = &mut self.src;
        let big = s.big;
        macro_rules! num {
            ($t:ty, $variant:ident) => {{
                let b = s.array::<{ std::mem::size_of::<$t>() }>(concat!("a ", stringify!($t)))?;
                Value::$variant(if big {
                    <$t>::from_be_bytes(b)
                } else {
                    <$t>::from_le_bytes(b)
                })
            }};
        }
        Ok(match vt {
            ValueType::U8 => num!(u8, U8),
            ValueType::I8 => num!(i8, I8),
            ValueType::U16 => num!(u16, U16),
            ValueType::I16 => num!(i16, I16),
            ValueType::U32 => num!(u32, U32),
            ValueType::I32 => num!(i32, I32),
            ValueType::F32 => num!(f32, F32),
            ValueType::U64 => num!(u64, U64),
            ValueType::I64 => num!(i64, I64),
            ValueType::F64 => num!(f64, F64),
            ValueType::Bool => Value::Bool(s.array::<1>("a bool")?[0] != 0),
            ValueType::String => {
                let bytes = s.string_bytes()?;
                Value::String(match String::from_utf8(bytes) {
                    Ok(s) => s,
                    Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
                })
            }
            ValueType::Array => Value::Array(self.array(depth, build)?),
        })
    }

    fn skip_value(&mut self, vt: ValueType, depth: u32) -> Result<()> {
        match vt {
            ValueType::String => self.src.skip_string(),
            ValueType::Array => self.array(depth, false).map(drop),
            fixed => self.src.skip(fixed.fixed_size().unwrap_or(0)),
        }
    }

    fn array(&mut self, depth: u32, build: bool) -> Result<Array> {
        let at = self.src.pos;
        if depth >= MAX_DEPTH {
            return Err(GgufError::TooDeep {
                offset: at,
                limit: MAX_DEPTH,
            });
        }
        let elem_type = self.value_type()?;
        let len_at = self.src.pos;
        let len = self.src.count("an array length")?;
        if len > MAX_ARRAY_LEN {
            return Err(GgufError::TooLarge {
                offset: len_at,
                what: "array length",
                value: len,
                limit: MAX_ARRAY_LEN,
            });
        }
        let min_each = match elem_type {
            ValueType::String => self.src.count_size(),
            ValueType::Array => 4 + self.src.count_size(),
            fixed => fixed.fixed_size().unwrap_or(1),
        };
        self.check_room(len, min_each, "array elements")?;

        if build && len <= self.options.max_array_len {
            let mut values = Vec::with_capacity(capacity(len));
            for _ in 0..len {
                values.push(self.value(elem_type, depth + 1, true)?);
            }
            return Ok(Array {
                elem_type,
                len,
                values: Some(values),
            });
        }
        match elem_type.fixed_size() {
            // check_room proved len * size bytes are there
            Some(size) => self.src.skip(len * size)?,
            None => {
                for _ in 0..len {
                    self.skip_value(elem_type, depth + 1)?;
                }
            }
        }
        Ok(Array {
            elem_type,
            len,
            values: None,
        })
    }

    fn tensor_info(&mut self, alignment: u64) -> Result<TensorInfo> {
        let at = self.src.pos;
        let name = self.src.utf8_string("a tensor name")?;
        let bad = |reason: String| GgufError::BadTensor {
            offset: at,
            name: name.clone(),
            reason,
        };
        let n_dims = self.src.u32("a dimension count")?;
        if n_dims > MAX_DIMS {
            return Err(bad(format!("{n_dims} dimensions, at most {MAX_DIMS}")));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            let d = self.src.count("a dimension")?;
            if d > i64::MAX as u64 {
                return Err(bad(format!(
                    "dimension {d} is over the limit of {}",
                    i64::MAX
                )));
            }
            dims.push(d);
        }
        let type_id = self.src.u32("a tensor type")?;
        let ggml_type = GgmlType::from_id(type_id).ok_or_else(|| {
            bad(format!(
                "unknown ggml type {type_id} (this reader knows types up to {})",
                GgmlType::max_known_id()
            ))
        })?;
        let offset = self.src.u64("a tensor offset")?;

        let n_elements = dims
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .filter(|&n| n <= i64::MAX as u64)
            .ok_or_else(|| bad(format!("the number of elements of {dims:?} overflows")))?;
        let block = ggml_type.block_size();
        let ne0 = dims.first().copied().unwrap_or(1);
        if ne0 % block != 0 {
            return Err(bad(format!(
                "first dimension {ne0} is not a multiple of the block size {block} of {ggml_type}"
            )));
        }
        let n_bytes = (n_elements / block)
            .checked_mul(ggml_type.block_bytes())
            .ok_or_else(|| bad(format!("the size of {dims:?} {ggml_type} overflows")))?;
        if offset % alignment != 0 {
            return Err(bad(format!(
                "data offset {offset} is not aligned to {alignment}"
            )));
        }
        if offset.checked_add(n_bytes).is_none() {
            return Err(bad(format!(
                "data offset {offset} plus {n_bytes} bytes overflows"
            )));
        }
        Ok(TensorInfo {
            name,
            dims,
            ggml_type,
            offset,
            n_elements,
            n_bytes,
        })
    }
}

fn check_alignment(value: &Value, offset: u64, type_offset: u64) -> Result<u64> {
    let Value::U32(a) = *value else {
        return Err(GgufError::BadAlignment {
            offset: type_offset,
            value: format!("of type {}", value.value_type()),
            reason: "it must be a uint32",
        });
    };
    if a == 0 || !a.is_power_of_two() {
        return Err(GgufError::BadAlignment {
            offset,
            value: a.to_string(),
            reason: "it must be a power of two",
        });
    }
    Ok(a.into())
}

/// The capacity to reserve for `n` parsed items: never more than a few thousand up
/// front, so a lying count costs nothing until its bytes are really read.
fn capacity(n: u64) -> usize {
    n.min(4096) as usize
}

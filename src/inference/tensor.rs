//! Tensors as requests carry them and models take them: a name, a shape and typed data, with
//! conversions from and to JSON values and little-endian bytes (KServe's binary extension).

use ort::session::SessionInputValue;
use ort::value::{DynValue, Tensor, TensorElementType, ValueType};
use serde_json::Value;

use super::model_config::DataType;

/// Typed tensor elements, flattened in row-major order.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    /// BOOL.
    Bool(Vec<bool>),
    /// UINT8.
    U8(Vec<u8>),
    /// INT8.
    I8(Vec<i8>),
    /// INT32.
    I32(Vec<i32>),
    /// INT64.
    I64(Vec<i64>),
    /// UINT32.
    U32(Vec<u32>),
    /// UINT64.
    U64(Vec<u64>),
    /// FP32.
    F32(Vec<f32>),
    /// FP64.
    F64(Vec<f64>),
}

/// A named tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedTensor {
    /// Tensor name.
    pub name: String,
    /// Shape.
    pub shape: Vec<i64>,
    /// Elements.
    pub data: TensorData,
}

/// Applies `$body` to the vector inside any variant, binding it as `$v`.
macro_rules! each {
    ($data:expr, $v:ident => $body:expr) => {
        match $data {
            TensorData::Bool($v) => $body,
            TensorData::U8($v) => $body,
            TensorData::I8($v) => $body,
            TensorData::I32($v) => $body,
            TensorData::I64($v) => $body,
            TensorData::U32($v) => $body,
            TensorData::U64($v) => $body,
            TensorData::F32($v) => $body,
            TensorData::F64($v) => $body,
        }
    };
}

/// The elements as a flat JSON array, written straight to the output (no intermediate values).
/// FP32 is written at its own precision, so each number reads back as the same `f32`;
/// non-finite numbers become `null`, as JSON has no form for them.
impl serde::Serialize for TensorData {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        each!(self, v => v.serialize(serializer))
    }
}

impl TensorData {
    /// The element type.
    pub fn data_type(&self) -> DataType {
        match self {
            TensorData::Bool(_) => DataType::Bool,
            TensorData::U8(_) => DataType::Uint8,
            TensorData::I8(_) => DataType::Int8,
            TensorData::I32(_) => DataType::Int32,
            TensorData::I64(_) => DataType::Int64,
            TensorData::U32(_) => DataType::Uint32,
            TensorData::U64(_) => DataType::Uint64,
            TensorData::F32(_) => DataType::Fp32,
            TensorData::F64(_) => DataType::Fp64,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        each!(self, v => v.len())
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reads JSON numbers (or booleans), flattening nested arrays.
    pub fn from_json(data_type: DataType, value: &Value) -> Result<TensorData, String> {
        let mut flat = Vec::new();
        flatten(value, &mut flat);
        let bad = |i: usize, what: &str| format!("element {i} is not {what}");
        macro_rules! ints {
            ($variant:ident, $t:ty) => {{
                let mut out = Vec::with_capacity(flat.len());
                for (i, v) in flat.iter().enumerate() {
                    let n = v
                        .as_i64()
                        .and_then(|n| <$t>::try_from(n).ok())
                        .or_else(|| v.as_u64().and_then(|n| <$t>::try_from(n).ok()))
                        .ok_or_else(|| bad(i, concat!("an integer that fits ", stringify!($t))))?;
                    out.push(n);
                }
                TensorData::$variant(out)
            }};
        }
        Ok(match data_type {
            DataType::Bool => TensorData::Bool(
                flat.iter()
                    .enumerate()
                    .map(|(i, v)| v.as_bool().ok_or_else(|| bad(i, "true or false")))
                    .collect::<Result<_, _>>()?,
            ),
            DataType::Uint8 => ints!(U8, u8),
            DataType::Int8 => ints!(I8, i8),
            DataType::Int32 => ints!(I32, i32),
            DataType::Int64 => ints!(I64, i64),
            DataType::Uint32 => ints!(U32, u32),
            DataType::Uint64 => ints!(U64, u64),
            DataType::Fp32 => TensorData::F32(
                flat.iter()
                    .enumerate()
                    .map(|(i, v)| {
                        v.as_f64()
                            .map(|f| f as f32)
                            .ok_or_else(|| bad(i, "a number"))
                    })
                    .collect::<Result<_, _>>()?,
            ),
            DataType::Fp64 => TensorData::F64(
                flat.iter()
                    .enumerate()
                    .map(|(i, v)| v.as_f64().ok_or_else(|| bad(i, "a number")))
                    .collect::<Result<_, _>>()?,
            ),
            other => return Err(unsupported(other)),
        })
    }

    /// Reads little-endian raw elements (the binary tensor extension).
    pub fn from_le_bytes(data_type: DataType, bytes: &[u8]) -> Result<TensorData, String> {
        fn chunks<const N: usize, T>(
            bytes: &[u8],
            f: impl Fn([u8; N]) -> T,
        ) -> Result<Vec<T>, String> {
            if !bytes.len().is_multiple_of(N) {
                return Err(format!(
                    "{} bytes is not a whole number of {N}-byte elements",
                    bytes.len()
                ));
            }
            Ok(bytes
                .chunks_exact(N)
                .map(|c| {
                    let mut a = [0u8; N];
                    a.copy_from_slice(c);
                    f(a)
                })
                .collect())
        }
        Ok(match data_type {
            DataType::Bool => TensorData::Bool(bytes.iter().map(|b| *b != 0).collect()),
            DataType::Uint8 => TensorData::U8(bytes.to_vec()),
            DataType::Int8 => TensorData::I8(bytes.iter().map(|b| *b as i8).collect()),
            DataType::Int32 => TensorData::I32(chunks(bytes, i32::from_le_bytes)?),
            DataType::Int64 => TensorData::I64(chunks(bytes, i64::from_le_bytes)?),
            DataType::Uint32 => TensorData::U32(chunks(bytes, u32::from_le_bytes)?),
            DataType::Uint64 => TensorData::U64(chunks(bytes, u64::from_le_bytes)?),
            DataType::Fp32 => TensorData::F32(chunks(bytes, f32::from_le_bytes)?),
            DataType::Fp64 => TensorData::F64(chunks(bytes, f64::from_le_bytes)?),
            other => return Err(unsupported(other)),
        })
    }

    /// The elements as little-endian bytes.
    pub fn to_le_bytes(&self) -> Vec<u8> {
        match self {
            TensorData::Bool(v) => v.iter().map(|b| u8::from(*b)).collect(),
            TensorData::U8(v) => v.clone(),
            TensorData::I8(v) => v.iter().map(|b| *b as u8).collect(),
            TensorData::I32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            TensorData::I64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            TensorData::U32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            TensorData::U64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            TensorData::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            TensorData::F64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        }
    }
}

fn unsupported(t: DataType) -> String {
    format!(
        "datatype {} is not supported yet; use BOOL, UINT8, INT8, INT32, INT64, UINT32, UINT64, FP32 or FP64",
        protocol_name(t)
    )
}

/// The KServe v2 name of a data type (`FP32`, `INT64`, `BYTES`, …).
pub fn protocol_name(t: DataType) -> &'static str {
    match t {
        DataType::Bool => "BOOL",
        DataType::Uint8 => "UINT8",
        DataType::Uint16 => "UINT16",
        DataType::Uint32 => "UINT32",
        DataType::Uint64 => "UINT64",
        DataType::Int8 => "INT8",
        DataType::Int16 => "INT16",
        DataType::Int32 => "INT32",
        DataType::Int64 => "INT64",
        DataType::Fp16 => "FP16",
        DataType::Fp32 => "FP32",
        DataType::Fp64 => "FP64",
        DataType::String => "BYTES",
        DataType::Bf16 => "BF16",
        DataType::Invalid => "INVALID",
    }
}

/// The data type of a KServe v2 name, if it is one.
pub fn from_protocol_name(name: &str) -> Option<DataType> {
    [
        DataType::Bool,
        DataType::Uint8,
        DataType::Uint16,
        DataType::Uint32,
        DataType::Uint64,
        DataType::Int8,
        DataType::Int16,
        DataType::Int32,
        DataType::Int64,
        DataType::Fp16,
        DataType::Fp32,
        DataType::Fp64,
        DataType::String,
        DataType::Bf16,
    ]
    .into_iter()
    .find(|t| protocol_name(*t) == name)
}

fn flatten<'a>(value: &'a Value, out: &mut Vec<&'a Value>) {
    match value {
        Value::Array(items) => items.iter().for_each(|v| flatten(v, out)),
        other => out.push(other),
    }
}

impl NamedTensor {
    /// The tensor as an ONNX Runtime input.
    pub fn to_ort(&self) -> Result<SessionInputValue<'static>, String> {
        let shape = self.shape.clone();
        let value: DynValue = each!(&self.data, v => Tensor::from_array((shape, v.clone()))
            .map_err(|e| format!("input {:?}: {e}", self.name))?
            .into_dyn());
        Ok(value.into())
    }

    /// Reads an ONNX Runtime output.
    pub fn from_ort(name: &str, value: &DynValue) -> Result<NamedTensor, String> {
        let ValueType::Tensor { ty, .. } = value.dtype() else {
            return Err(format!("output {name:?} is not a tensor"));
        };
        macro_rules! extract {
            ($t:ty, $variant:ident) => {{
                let (shape, data) = value
                    .try_extract_tensor::<$t>()
                    .map_err(|e| format!("output {name:?}: {e}"))?;
                (shape.to_vec(), TensorData::$variant(data.to_vec()))
            }};
        }
        let (shape, data) = match ty {
            TensorElementType::Bool => extract!(bool, Bool),
            TensorElementType::Uint8 => extract!(u8, U8),
            TensorElementType::Int8 => extract!(i8, I8),
            TensorElementType::Int32 => extract!(i32, I32),
            TensorElementType::Int64 => extract!(i64, I64),
            TensorElementType::Uint32 => extract!(u32, U32),
            TensorElementType::Uint64 => extract!(u64, U64),
            TensorElementType::Float32 => extract!(f32, F32),
            TensorElementType::Float64 => extract!(f64, F64),
            other => {
                return Err(format!(
                    "output {name:?} has element type {other:?}, which cannot be returned yet"
                ));
            }
        };
        Ok(NamedTensor {
            name: name.to_string(),
            shape,
            data,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_and_bytes_round_trip() {
        let v =
            TensorData::from_json(DataType::Int64, &serde_json::json!([[1, 2], [3, -4]])).unwrap();
        assert_eq!(v, TensorData::I64(vec![1, 2, 3, -4]));
        assert_eq!(
            TensorData::from_le_bytes(DataType::Int64, &v.to_le_bytes()).unwrap(),
            v
        );
        let f = TensorData::from_json(DataType::Fp32, &serde_json::json!([0.5, 1])).unwrap();
        assert_eq!(serde_json::to_string(&f).unwrap(), "[0.5,1.0]");
        let tenth = TensorData::F32(vec![0.1, f32::NAN]);
        assert_eq!(serde_json::to_string(&tenth).unwrap(), "[0.1,null]");
        assert!(
            TensorData::from_json(DataType::Int32, &serde_json::json!([1, "x"]))
                .unwrap_err()
                .contains("element 1")
        );
        assert!(TensorData::from_json(DataType::Uint8, &serde_json::json!([300])).is_err());
        assert!(
            TensorData::from_le_bytes(DataType::Fp32, &[0, 0, 0])
                .unwrap_err()
                .contains("3 bytes")
        );
        assert!(
            TensorData::from_json(DataType::String, &serde_json::json!(["a"]))
                .unwrap_err()
                .contains("BYTES")
        );
    }
}

//! One safetensors file: memory-mapped reading with conversion to f32, and writing f32 tensors.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};

use half::{bf16, f16};
use memmap2::Mmap;
use safetensors::tensor::{Dtype, Metadata, SafeTensorError, TensorInfo, View};
use safetensors::SafeTensors;

use crate::error::{Error, Result};
use crate::model::Param;

/// Bytes of the little-endian header length that starts every safetensors file.
const LEN_BYTES: usize = 8;

/// Writes f32 tensors under their own names (see [`save_tensors_renamed`]).
pub fn save_tensors(
    path: &Path,
    tensors: &[&Param<f32>],
    metadata: Option<HashMap<String, String>>,
) -> Result<()> {
    let named: Vec<(String, &Param<f32>)> = tensors.iter().map(|p| (p.name.clone(), *p)).collect();
    save_tensors_renamed(path, &named, metadata)
}

/// Writes f32 tensors under the given names, e.g. PEFT's `base_model.model.` prefix. The
/// metadata gets `"format": "pt"` unless it sets a format: transformers refuses safetensors files
/// without one.
pub fn save_tensors_renamed(
    path: &Path,
    tensors: &[(String, &Param<f32>)],
    metadata: Option<HashMap<String, String>>,
) -> Result<()> {
    check_writable(path, tensors)?;
    let mut metadata = metadata.unwrap_or_default();
    metadata
        .entry("format".into())
        .or_insert_with(|| "pt".into());
    let views = tensors.iter().map(|(name, p)| (name.as_str(), F32View(p)));
    let bytes = safetensors::serialize(views, Some(metadata)).map_err(|e| Error::BadFile {
        path: path.into(),
        message: format!("cannot serialise: {e}"),
    })?;
    crate::fs::write_atomic(path, &bytes)
}

/// A file with a name twice, or a shape that does not match the data, could only be read back
/// wrongly, so it is refused before anything is written.
fn check_writable(path: &Path, tensors: &[(String, &Param<f32>)]) -> Result<()> {
    let mut seen = HashSet::new();
    for (name, p) in tensors {
        let bad = |message: String| Error::BadTensor {
            path: path.into(),
            tensor: name.clone(),
            message,
        };
        if !seen.insert(name.as_str()) {
            return Err(bad("given twice".into()));
        }
        if p.numel() != p.data.len() {
            return Err(bad(format!(
                "shape {:?} but {} values",
                p.shape,
                p.data.len()
            )));
        }
    }
    Ok(())
}

/// An f32 tensor as the serialiser sees it: little-endian bytes whatever the host.
struct F32View<'a>(&'a Param<f32>);

impl View for F32View<'_> {
    fn dtype(&self) -> Dtype {
        Dtype::F32
    }

    fn shape(&self) -> &[usize] {
        &self.0.shape
    }

    fn data(&self) -> Cow<'_, [u8]> {
        self.0.data.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    fn data_len(&self) -> usize {
        self.0.data.len() * size_of::<f32>()
    }
}

/// Every tensor of a safetensors file, in file order, converted to f32.
pub fn load_tensors(path: &Path) -> Result<Vec<Param<f32>>> {
    let file = MappedFile::open(path)?;
    file.metadata
        .offset_keys()
        .into_iter()
        .map(|name| {
            let shape = file.readable_shape(&name)?;
            let mut p = Param::filled(name, shape, 0.0);
            file.read_into(&mut p)?;
            Ok(p)
        })
        .collect()
}

/// A memory-mapped safetensors file whose header has been checked: the tensors are read straight
/// from the page cache, so a model never needs its file's size in extra memory.
pub(crate) struct MappedFile {
    pub path: PathBuf,
    mmap: Mmap,
    data_start: usize,
    metadata: Metadata,
}

impl MappedFile {
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: the map is only read while this value lives. Another process truncating the
        // file meanwhile would fault; this crate's own writers never change a file in place
        // (`write_atomic` renames a new file over it), so they cannot.
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        let (header_len, metadata) =
            SafeTensors::read_metadata(&mmap).map_err(|e| explain(path, &mmap, e))?;
        Ok(MappedFile {
            path: path.into(),
            data_start: LEN_BYTES + header_len,
            mmap,
            metadata,
        })
    }

    pub fn contains(&self, name: &str) -> bool {
        self.metadata.info(name).is_some()
    }

    fn info(&self, name: &str) -> Result<&TensorInfo> {
        self.metadata
            .info(name)
            .ok_or_else(|| Error::MissingTensor {
                path: self.path.clone(),
                tensor: name.into(),
            })
    }

    /// The shape of tensor `name`, which must be of a dtype this crate reads: checked before any
    /// memory is set aside for it (a 4-bit tensor would take 8 times its bytes as f32).
    fn readable_shape(&self, name: &str) -> Result<Vec<usize>> {
        let info = self.info(name)?;
        readable(info.dtype).map_err(|message| Error::BadTensor {
            path: self.path.clone(),
            tensor: name.into(),
            message,
        })?;
        Ok(info.shape.clone())
    }

    /// The total size of the file in bytes.
    pub fn len(&self) -> usize {
        self.mmap.len()
    }

    /// Fills `param` with the tensor of the same name, which must have `param`'s shape.
    pub fn read_into(&self, param: &mut Param<f32>) -> Result<()> {
        let info = self.info(&param.name)?;
        let bad = |message: String| Error::BadTensor {
            path: self.path.clone(),
            tensor: param.name.clone(),
            message,
        };
        if info.shape != param.shape {
            return Err(bad(format!(
                "expected shape {:?}, got {:?}",
                param.shape, info.shape
            )));
        }
        let (start, end) = info.data_offsets;
        let bytes = &self.mmap[self.data_start + start..self.data_start + end];
        decode(info.dtype, bytes, &mut param.data).map_err(bad)
    }
}

/// Fails for a dtype [`decode`] does not read.
fn readable(dtype: Dtype) -> Result<(), String> {
    match dtype {
        Dtype::F32 | Dtype::BF16 | Dtype::F16 | Dtype::F64 => Ok(()),
        other => Err(format!(
            "unsupported dtype {other} (F32, BF16, F16 or F64 expected)"
        )),
    }
}

/// Converts little-endian values of a floating-point dtype to f32 (F64 rounds to nearest).
fn decode(dtype: Dtype, bytes: &[u8], out: &mut [f32]) -> Result<(), String> {
    readable(dtype)?;
    match dtype {
        Dtype::F32 => decode_with(bytes, out, f32::from_le_bytes),
        Dtype::BF16 => decode_with(bytes, out, |b| bf16::from_le_bytes(b).to_f32()),
        Dtype::F16 => decode_with(bytes, out, |b| f16::from_le_bytes(b).to_f32()),
        _ => decode_with(bytes, out, |b| f64::from_le_bytes(b) as f32),
    }
    Ok(())
}

fn decode_with<const N: usize>(bytes: &[u8], out: &mut [f32], f: impl Fn([u8; N]) -> f32) {
    // The header check guarantees the byte count matches the shape, which matches `out`.
    assert_eq!(
        bytes.len(),
        out.len() * N,
        "tensor size checked by the header"
    );
    for (o, chunk) in out.iter_mut().zip(bytes.chunks_exact(N)) {
        *o = f(chunk.try_into().expect("chunks_exact yields N bytes"));
    }
}

/// Turns the parser's verdict into a message about this file; for a truncated file it names the
/// first tensor whose data is cut off, which tells how much is missing.
fn explain(path: &Path, bytes: &[u8], err: SafeTensorError) -> Error {
    let bad_file = |message: String| Error::BadFile {
        path: path.into(),
        message,
    };
    match err {
        SafeTensorError::HeaderTooSmall | SafeTensorError::InvalidHeaderLength => {
            bad_file(format!(
                "truncated or not a safetensors file: it ends inside the header ({} bytes)",
                bytes.len()
            ))
        }
        SafeTensorError::MetadataIncompleteBuffer => cut_tensor(path, bytes).unwrap_or_else(|| {
            bad_file("corrupt safetensors file: bytes after the last tensor".into())
        }),
        other => bad_file(format!("invalid safetensors header: {other}")),
    }
}

/// The first tensor whose data lies past the end of a file with a valid header.
fn cut_tensor(path: &Path, bytes: &[u8]) -> Option<Error> {
    let header_len = u64::from_le_bytes(bytes[..LEN_BYTES].try_into().ok()?) as usize;
    let header = &bytes[LEN_BYTES..LEN_BYTES + header_len];
    let metadata: Metadata = serde_json::from_slice(header).ok()?;
    let available = bytes.len() - LEN_BYTES - header_len;
    let name = metadata.offset_keys().into_iter().find(|name| {
        metadata
            .info(name)
            .is_some_and(|i| i.data_offsets.1 > available)
    })?;
    Some(Error::BadTensor {
        path: path.into(),
        tensor: name,
        message: format!(
            "file truncated: {} bytes, the header describes {}",
            bytes.len(),
            LEN_BYTES + header_len + metadata.data_len()
        ),
    })
}

//! Reading and writing one safetensors file of f32 tensors.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use half::{bf16, f16};
use memmap2::Mmap;
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;

use crate::error::{Error, Result};
use crate::model::Param;

/// A tensor to write under a given name (which may differ from the parameter's own name, e.g.
/// PEFT's prefixed adapter names).
pub type NamedTensor<'a> = (String, &'a Param<f32>);

/// Writes `bytes` to a temporary file beside `path`, fsyncs it and renames it into place, so a
/// crash leaves either the old file or the new one, never a torn one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        Error::io(path, e)
    })
}

fn f32_bytes(data: &[f32]) -> Vec<u8> {
    data.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Writes the tensors as f32 to one safetensors file (atomically).
pub fn save_tensors(
    path: &Path,
    tensors: &[NamedTensor<'_>],
    metadata: Option<HashMap<String, String>>,
) -> Result<()> {
    let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = tensors
        .iter()
        .map(|(n, p)| (n.clone(), f32_bytes(&p.data), p.shape.clone()))
        .collect();
    let views = bytes
        .iter()
        .map(|(n, b, s)| {
            let view = TensorView::new(Dtype::F32, s.clone(), b).map_err(|e| Error::BadTensor {
                path: path.into(),
                tensor: n.clone(),
                message: format!("cannot serialise: {e}"),
            })?;
            Ok((n.as_str(), view))
        })
        .collect::<Result<Vec<_>>>()?;
    let out = safetensors::serialize(views, metadata).map_err(|e| Error::BadFile {
        path: path.into(),
        message: format!("cannot serialise: {e}"),
    })?;
    write_atomic(path, &out)
}

/// A memory-mapped safetensors file.
pub(crate) struct MappedFile {
    pub path: PathBuf,
    map: Mmap,
}

impl MappedFile {
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: mapped read-only; the bytes are parsed and copied out, never trusted as types.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        Ok(MappedFile {
            path: path.into(),
            map,
        })
    }

    pub fn parse(&self) -> Result<SafeTensors<'_>> {
        SafeTensors::deserialize(&self.map).map_err(|e| Error::BadFile {
            path: self.path.clone(),
            message: format!("not a valid safetensors file (truncated or corrupt?): {e}"),
        })
    }
}

/// Converts one stored tensor to f32, naming the file and tensor when its dtype is unsupported.
pub(crate) fn to_f32(path: &Path, name: &str, view: &TensorView<'_>) -> Result<Vec<f32>> {
    let data = view.data();
    let out = match view.dtype() {
        Dtype::F32 => data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::BF16 => data
            .chunks_exact(2)
            .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::F16 => data
            .chunks_exact(2)
            .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::F64 => data
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().expect("chunk of 8")) as f32)
            .collect(),
        other => {
            return Err(Error::BadTensor {
                path: path.into(),
                tensor: name.into(),
                message: format!("unsupported dtype {other:?}; expected F32, BF16, F16 or F64"),
            })
        }
    };
    Ok(out)
}

/// Every tensor of one file, converted to f32, in the file's order of names.
pub fn load_tensors(path: &Path) -> Result<Vec<Param<f32>>> {
    let file = MappedFile::open(path)?;
    let st = file.parse()?;
    let mut names: Vec<&str> = st.names();
    names.sort_unstable();
    names
        .into_iter()
        .map(|name| {
            let view = st.tensor(name).map_err(|e| Error::BadTensor {
                path: path.into(),
                tensor: name.into(),
                message: e.to_string(),
            })?;
            Ok(Param {
                name: name.into(),
                shape: view.shape().to_vec(),
                data: to_f32(path, name, &view)?,
            })
        })
        .collect()
}

//! Replacing some of a model's tensors by tensors read from a file (trained weights of a
//! checkpoint, LongLoRA's trainable embeddings and norms).

use std::collections::HashMap;
use std::path::Path;

use crate::error::{Error, Result};
use crate::model::{LlamaWeights, Param};

/// Overwrites the parameters of `weights` named by `tensors` (read from `path`). A name the model
/// does not have, or a shape that differs, is an error naming the tensor: silently dropping a
/// trained tensor would evaluate a different model than the one trained.
pub fn assign_tensors(
    weights: &mut LlamaWeights<Param<f32>>,
    tensors: Vec<Param<f32>>,
    path: &Path,
) -> Result<()> {
    let mut by_name: HashMap<String, &mut Param<f32>> = weights
        .params_mut()
        .into_iter()
        .map(|p| (p.name.clone(), p))
        .collect();
    for t in tensors {
        let Some(p) = by_name.get_mut(&t.name) else {
            return Err(Error::BadTensor {
                path: path.into(),
                tensor: t.name,
                message: "the model has no parameter of this name".into(),
            });
        };
        if p.shape != t.shape {
            return Err(Error::BadTensor {
                path: path.into(),
                tensor: t.name,
                message: format!("shape {:?}, the model's is {:?}", t.shape, p.shape),
            });
        }
        p.data = t.data;
    }
    Ok(())
}

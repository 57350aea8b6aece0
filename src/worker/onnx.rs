//! A real model: an ONNX file run by `tract` (pure Rust), behind the `onnx`
//! cargo feature.

use std::path::Path;

use tract_onnx::prelude::*;

use super::{Model, ModelError};

/// An ONNX model with one input of shape `[N, features]` (f32) whose chosen
/// output has shape `[N, k]` (f32).
pub struct OnnxModel {
    plan: std::sync::Arc<TypedRunnableModel>,
    name: String,
    version: String,
    sha256: String,
    output: String,
    features: usize,
}

impl std::fmt::Debug for OnnxModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnnxModel")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("output", &self.output)
            .field("features", &self.features)
            .finish_non_exhaustive()
    }
}

impl OnnxModel {
    /// Load `path`, taking rows of `features` values and returning the
    /// output tensor named `output` (for scikit-learn classifiers exported
    /// with `zipmap: False`, `"probabilities"`).
    ///
    /// # Errors
    /// A [`ModelError`] naming the file and what tract could not do.
    pub fn load(
        path: impl AsRef<Path>,
        features: usize,
        output: &str,
    ) -> Result<OnnxModel, ModelError> {
        let path = path.as_ref();
        let fail = |what: &str, e: &dyn std::fmt::Display| {
            ModelError::permanent(format!("{}: {what}: {e}", path.display()))
        };
        let bytes = std::fs::read(path).map_err(|e| fail("cannot read", &e))?;
        let mut model = tract_onnx::onnx()
            .model_for_read(&mut &bytes[..])
            .map_err(|e| fail("not a loadable ONNX model", &e))?;
        let n = model.symbols.sym("N");
        let fact = f32::fact(tract_onnx::tract_core::dims!(n, features as i64));
        model
            .set_input_fact(0, fact.into())
            .map_err(|e| fail("cannot set the input shape", &e))?;
        let plan = model
            .with_outputs_by_name([output])
            .and_then(|m| m.into_optimized())
            .and_then(|m| m.into_runnable())
            .map_err(|e| fail("cannot prepare the model", &e))?;
        let name = path
            .file_stem()
            .map_or_else(|| "model".to_string(), |s| s.to_string_lossy().into_owned());
        let sha256 = {
            use sha2::Digest;
            let digest = sha2::Sha256::digest(&bytes);
            digest.iter().map(|b| format!("{b:02x}")).collect()
        };
        Ok(OnnxModel {
            plan,
            name,
            sha256,
            version: format!("fnv64:{:016x}", fnv64(&bytes)),
            output: output.to_string(),
            features,
        })
    }

    /// Values per input row.
    pub fn features(&self) -> usize {
        self.features
    }
}

fn fnv64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl Model for OnnxModel {
    type Input = Vec<f32>;
    type Output = Vec<f32>;

    fn name(&self) -> &str {
        &self.name
    }

    fn version(&self) -> &str {
        &self.version
    }

    fn output_name(&self) -> &str {
        &self.output
    }

    fn sha256(&self) -> Option<&str> {
        Some(&self.sha256)
    }

    fn infer(&self, rows: &[Vec<f32>]) -> Result<Vec<Vec<f32>>, ModelError> {
        if let Some((i, r)) = rows
            .iter()
            .enumerate()
            .find(|(_, r)| r.len() != self.features)
        {
            return Err(ModelError::permanent(format!(
                "row {i} has {} values; the model takes {}",
                r.len(),
                self.features
            )));
        }
        let flat: Vec<f32> = rows.iter().flatten().copied().collect();
        let input = tract_ndarray::Array2::from_shape_vec((rows.len(), self.features), flat)
            .map_err(|e| ModelError::permanent(format!("cannot shape the batch: {e}")))?;
        let out = self
            .plan
            .run(tvec!(Tensor::from(input).into()))
            .map_err(|e| ModelError::permanent(format!("inference failed: {e}")))?;
        let view = out[0]
            .to_plain_array_view::<f32>()
            .map_err(|e| ModelError::permanent(format!("unexpected output type: {e}")))?;
        let k = view.len() / rows.len().max(1);
        let values = view.iter().copied().collect::<Vec<f32>>();
        Ok(values.chunks(k.max(1)).map(<[f32]>::to_vec).collect())
    }
}

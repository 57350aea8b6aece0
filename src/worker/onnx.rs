//! A real model: an ONNX file run by `tract` (pure Rust), behind the `onnx`
//! cargo feature. [`OnnxModel`] gives one output tensor per row;
//! [`OnnxOutputs`] gives several (one vector per output, each cast to
//! f32), for models that return, say, a label and its probabilities.

use std::path::Path;

use tract_onnx::prelude::*;

use super::{Batch, Model, ModelError, Outputs};

/// What both model types hold: the runnable plan of a file and its names.
struct Loaded {
    plan: std::sync::Arc<TypedRunnableModel>,
    name: String,
    version: String,
    sha256: String,
    features: usize,
}

impl Loaded {
    /// Load `path` with an input of `[N, features]` f32 and these outputs.
    fn load(path: &Path, features: usize, outputs: &[&str]) -> Result<Loaded, ModelError> {
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
            .with_outputs_by_name(outputs.iter().copied())
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
        Ok(Loaded {
            plan,
            name,
            sha256,
            // The outputs too: a service tells models apart by name,
            // version and row type, and one file read for another output
            // is another model (its jobs must not be computed by this one).
            version: format!("fnv64:{:016x}/{}", fnv64(&bytes), outputs.join(",")),
            features,
        })
    }

    /// Run the model on `rows`; each output as one f32 vector per row.
    fn run(&self, rows: &[Vec<f32>]) -> Result<Vec<Vec<Vec<f32>>>, ModelError> {
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
        Ok(self
            .run_flat(rows.len(), flat)?
            .into_iter()
            .map(|(k, values)| values.chunks(k.max(1)).map(<[f32]>::to_vec).collect())
            .collect())
    }

    /// Run the model on `rows` rows of `features` values, row after row in
    /// `flat`; each output as (values per row, every value row after row).
    fn run_flat(&self, rows: usize, flat: Vec<f32>) -> Result<Vec<(usize, Vec<f32>)>, ModelError> {
        let input = tract_ndarray::Array2::from_shape_vec((rows, self.features), flat)
            .map_err(|e| ModelError::permanent(format!("cannot shape the batch: {e}")))?;
        let out = self
            .plan
            .run(tvec!(Tensor::from(input).into()))
            .map_err(|e| ModelError::permanent(format!("inference failed: {e}")))?;
        out.iter()
            .map(|tensor| {
                let tensor = tensor
                    .cast_to::<f32>()
                    .map_err(|e| ModelError::permanent(format!("unexpected output type: {e}")))?;
                let view = tensor
                    .to_plain_array_view::<f32>()
                    .map_err(|e| ModelError::permanent(format!("unexpected output type: {e}")))?;
                let k = view.len() / rows.max(1);
                Ok((k, view.iter().copied().collect::<Vec<f32>>()))
            })
            .collect()
    }
}

fn fnv64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// An ONNX model with one input of shape `[N, features]` (f32) whose chosen
/// output has shape `[N, k]` (f32).
pub struct OnnxModel {
    loaded: Loaded,
    output: String,
}

impl std::fmt::Debug for OnnxModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnnxModel")
            .field("name", &self.loaded.name)
            .field("version", &self.loaded.version)
            .field("output", &self.output)
            .field("features", &self.loaded.features)
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
        Ok(OnnxModel {
            loaded: Loaded::load(path.as_ref(), features, &[output])?,
            output: output.to_string(),
        })
    }

    /// Values per input row.
    pub fn features(&self) -> usize {
        self.loaded.features
    }
}

impl Model for OnnxModel {
    type Input = Vec<f32>;
    type Output = Vec<f32>;

    fn name(&self) -> &str {
        &self.loaded.name
    }

    fn version(&self) -> &str {
        &self.loaded.version
    }

    fn output_name(&self) -> &str {
        &self.output
    }

    fn sha256(&self) -> Option<&str> {
        Some(&self.loaded.sha256)
    }

    fn infer(&self, rows: &[Vec<f32>]) -> Result<Vec<Vec<f32>>, ModelError> {
        let mut outputs = self.loaded.run(rows)?;
        outputs
            .pop()
            .ok_or_else(|| ModelError::permanent("the model gave no output"))
    }

    /// The batch as one tensor in, the output as one tensor out: no
    /// vector per row either way.
    fn infer_batch(&self, batch: &Batch<'_, Vec<f32>>) -> Result<Outputs<Vec<f32>>, ModelError> {
        let Some(t) = batch.tensor::<f32>() else {
            return Ok(Outputs::rows(self.infer(batch.rows()?)?));
        };
        if t.width() != self.loaded.features {
            return Err(ModelError::permanent(format!(
                "rows have {} values; the model takes {}",
                t.width(),
                self.loaded.features
            )));
        }
        let (k, values) = self
            .loaded
            .run_flat(t.rows(), t.as_slice().to_vec())?
            .pop()
            .ok_or_else(|| ModelError::permanent("the model gave no output"))?;
        Outputs::tensor(t.rows(), k, values)
    }
}

/// An ONNX model with one input of shape `[N, features]` (f32) and several
/// named outputs, each of shape `[N]` or `[N, k]` and any numeric type
/// (cast to f32): one vector per output per row, in the order named. In a
/// result table each output is a column `out.<name>`.
pub struct OnnxOutputs {
    loaded: Loaded,
    outputs: Vec<String>,
}

impl std::fmt::Debug for OnnxOutputs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnnxOutputs")
            .field("name", &self.loaded.name)
            .field("version", &self.loaded.version)
            .field("outputs", &self.outputs)
            .field("features", &self.loaded.features)
            .finish_non_exhaustive()
    }
}

impl OnnxOutputs {
    /// Load `path`, taking rows of `features` values and returning the
    /// output tensors named in `outputs` (for a scikit-learn classifier,
    /// `["label", "probabilities"]`).
    ///
    /// # Errors
    /// A [`ModelError`] naming the file and what tract could not do, or
    /// for an empty list of outputs.
    pub fn load(
        path: impl AsRef<Path>,
        features: usize,
        outputs: &[&str],
    ) -> Result<OnnxOutputs, ModelError> {
        if outputs.is_empty() {
            return Err(ModelError::permanent("name at least one output"));
        }
        Ok(OnnxOutputs {
            loaded: Loaded::load(path.as_ref(), features, outputs)?,
            outputs: outputs.iter().map(ToString::to_string).collect(),
        })
    }

    /// Values per input row.
    pub fn features(&self) -> usize {
        self.loaded.features
    }
}

impl Model for OnnxOutputs {
    type Input = Vec<f32>;
    type Output = Vec<Vec<f32>>;

    fn name(&self) -> &str {
        &self.loaded.name
    }

    fn version(&self) -> &str {
        &self.loaded.version
    }

    fn output_name(&self) -> &str {
        &self.outputs[0]
    }

    fn output_names(&self) -> Vec<String> {
        self.outputs.clone()
    }

    fn sha256(&self) -> Option<&str> {
        Some(&self.loaded.sha256)
    }

    fn infer(&self, rows: &[Vec<f32>]) -> Result<Vec<Vec<Vec<f32>>>, ModelError> {
        let per_output = self.loaded.run(rows)?;
        // Output-major to row-major: each row its vector of each output.
        let mut per_row: Vec<Vec<Vec<f32>>> = (0..rows.len())
            .map(|_| Vec::with_capacity(per_output.len()))
            .collect();
        for output in per_output {
            if output.len() != rows.len() {
                return Err(ModelError::permanent(format!(
                    "an output has {} rows for {} inputs",
                    output.len(),
                    rows.len()
                )));
            }
            for (row, values) in per_row.iter_mut().zip(output) {
                row.push(values);
            }
        }
        Ok(per_row)
    }
}

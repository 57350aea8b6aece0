//! The models a service has: each registered [`Model`] behind one
//! object-safe face ([`Erased`]) that takes encoded rows and gives encoded
//! outputs, so one pool serves models of different row types.
//!
//! Invariant: a model is found only by its full [`ModelKey`] (name,
//! version and input type), so a job is never given to a model of another
//! version or row type.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;

use super::job::ModelKey;
use super::rows::{run_block, RowBlock};
use super::{Model, ModelError};

/// A model that runs on encoded rows.
pub(crate) trait Erased: Send + Sync {
    fn key(&self) -> &ModelKey;

    /// The model file's SHA-256 (hex), empty when it has none.
    fn sha256(&self) -> &str;

    /// Decode `rows`, run the model, encode its outputs: one per row, in
    /// order. A row or output the codec refuses is a permanent failure.
    fn infer(&self, rows: &RowBlock) -> Result<RowBlock, ModelError>;
}

struct Typed<M: Model> {
    model: Arc<M>,
    key: ModelKey,
    sha256: String,
}

impl<M: Model> Erased for Typed<M> {
    fn key(&self) -> &ModelKey {
        &self.key
    }

    fn sha256(&self) -> &str {
        &self.sha256
    }

    fn infer(&self, rows: &RowBlock) -> Result<RowBlock, ModelError> {
        run_block(&*self.model, rows)
    }
}

/// The key jobs for `model` carry.
pub(crate) fn key_of<M: Model>(model: &M) -> ModelKey {
    ModelKey {
        name: model.name().to_string(),
        version: model.version().to_string(),
        input_type: type_hash(std::any::type_name::<M::Input>()),
    }
}

/// FNV-1a of a type's name: stable for one build of a program, and a guard
/// (not a proof) across builds, since type names are not a stable format.
fn type_hash(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The registered models, by key.
#[derive(Default)]
pub(crate) struct Registry {
    models: RwLock<HashMap<ModelKey, Arc<dyn Erased>>>,
}

impl Registry {
    /// Register `model` (again: the newer instance replaces the older).
    pub fn register<M: Model>(&self, model: Arc<M>) -> ModelKey {
        let key = key_of(&*model);
        let sha256 = model.sha256().unwrap_or_default().to_string();
        let typed: Arc<dyn Erased> = Arc::new(Typed {
            model,
            key: key.clone(),
            sha256,
        });
        self.models.write().insert(key.clone(), typed);
        key
    }

    pub fn get(&self, key: &ModelKey) -> Option<Arc<dyn Erased>> {
        self.models.read().get(key).cloned()
    }

    pub fn has(&self, key: &ModelKey) -> bool {
        self.models.read().contains_key(key)
    }

    pub fn keys(&self) -> Vec<ModelKey> {
        self.models.read().keys().cloned().collect()
    }
}

//! Loading the ONNX Runtime shared library once per process (`ort` with `load-dynamic`).

use std::{path::Path, sync::OnceLock};

use ort::environment::Environment;

use super::ModelError;

static ENVIRONMENT: OnceLock<Environment> = OnceLock::new();

/// Loads `libonnxruntime` from `path` (first call wins) and returns the process environment.
pub fn init_runtime(path: &Path) -> Result<Environment, ModelError> {
    if let Some(env) = ENVIRONMENT.get() {
        return Ok(env.clone());
    }
    if !path.is_file() {
        return Err(ModelError::RuntimeMissing {
            path: path.display().to_string(),
        });
    }
    let env = ort::init_from(path)
        .map_err(|e| ModelError::Runtime {
            path: path.display().to_string(),
            message: e.to_string(),
        })?
        .with_name("gatehouse")
        .build()
        .map_err(|e| ModelError::Runtime {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
    Ok(ENVIRONMENT.get_or_init(|| env).clone())
}

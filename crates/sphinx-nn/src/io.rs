//! Saving and loading models: the architecture as JSON, the parameters as safetensors.
//!
//! - Architecture file: `{"format": "sphinx-nn-model", "version": 1, "model": <ModelSpec>}`.
//! - Weights file: safetensors, `F32` little-endian, one `layers.<i>.weight`
//!   (`W` as [`crate::layers::ParamLayer::weight`] stores it) and one `layers.<i>.bias`
//!   per parameterized layer `i` (index in the layer list), nothing else.
//!
//! Loading checks the format tag and version, the architecture's consistency, that the
//! tensor set is exactly the expected one, every dtype and shape, and that all values
//! are finite; every failure is an [`NnError::ModelFile`] naming the file.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde::{Deserialize, Serialize};

use crate::error::{NnError, Result};
use crate::model::{Model, ModelSpec};

/// Format tag of the architecture file.
pub const FORMAT: &str = "sphinx-nn-model";
/// Current architecture-file version.
pub const VERSION: u32 = 1;
/// Largest architecture file read.
pub const MAX_ARCH_BYTES: u64 = 1 << 20;
/// Largest weights file read.
pub const MAX_WEIGHTS_BYTES: u64 = 1 << 32;
/// File names used by [`save_dir`] / [`load_dir`].
pub const ARCH_FILE: &str = "model.json";
/// See [`ARCH_FILE`].
pub const WEIGHTS_FILE: &str = "model.safetensors";

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ArchFile {
    format: String,
    version: u32,
    model: ModelSpec,
}

fn bad(path: &Path, reason: impl ToString) -> NnError {
    NnError::ModelFile {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> NnError + '_ {
    move |source| NnError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn read_limited(path: &Path, limit: u64) -> Result<Vec<u8>> {
    let len = std::fs::metadata(path).map_err(io_err(path))?.len();
    if len > limit {
        return Err(bad(
            path,
            format!("{len} bytes exceeds the {limit}-byte limit"),
        ));
    }
    std::fs::read(path).map_err(io_err(path))
}

/// The architecture JSON of a model.
///
/// # Errors
/// Never in practice (serialization of plain data); [`NnError::Architecture`] otherwise.
pub fn arch_to_json(spec: &ModelSpec) -> Result<String> {
    serde_json::to_string_pretty(&ArchFile {
        format: FORMAT.into(),
        version: VERSION,
        model: spec.clone(),
    })
    .map_err(|e| NnError::Architecture(e.to_string()))
}

/// Parses and validates an architecture JSON. `path` only labels errors.
///
/// # Errors
/// [`NnError::ModelFile`] for bad JSON, a wrong format tag or version, or an
/// inconsistent architecture.
pub fn arch_from_json(json: &[u8], path: &Path) -> Result<ModelSpec> {
    let arch: ArchFile = serde_json::from_slice(json).map_err(|e| bad(path, e))?;
    if arch.format != FORMAT {
        return Err(bad(
            path,
            format!("format `{}` is not `{FORMAT}`", arch.format),
        ));
    }
    if arch.version != VERSION {
        return Err(bad(
            path,
            format!(
                "version {} is not supported (expected {VERSION})",
                arch.version
            ),
        ));
    }
    arch.model.shapes().map_err(|e| bad(path, e))?;
    Ok(arch.model)
}

/// The model's parameters as a safetensors buffer.
///
/// # Errors
/// [`NnError::Architecture`] if safetensors rejects the data (not expected).
pub fn weights_to_bytes(model: &Model) -> Result<Vec<u8>> {
    let mut buffers: BTreeMap<String, (Vec<usize>, Vec<u8>)> = BTreeMap::new();
    for i in model.param_layer_indices() {
        let Some(p) = model.layers().get(i).and_then(|l| l.as_param()) else {
            continue;
        };
        let le = |it: &mut dyn Iterator<Item = &f32>| {
            it.flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>()
        };
        buffers.insert(
            format!("layers.{i}.weight"),
            (p.weight().shape().to_vec(), le(&mut p.weight().iter())),
        );
        buffers.insert(
            format!("layers.{i}.bias"),
            (p.bias().shape().to_vec(), le(&mut p.bias().iter())),
        );
    }
    let views = buffers
        .iter()
        .map(|(name, (shape, data))| {
            TensorView::new(Dtype::F32, shape.clone(), data).map(|v| (name.clone(), v))
        })
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| NnError::Architecture(e.to_string()))?;
    let meta = HashMap::from([("format".to_string(), FORMAT.to_string())]);
    safetensors::serialize(views, Some(meta)).map_err(|e| NnError::Architecture(e.to_string()))
}

/// Builds a model of architecture `spec` with parameters from a safetensors buffer.
/// `path` only labels errors.
///
/// # Errors
/// [`NnError::ModelFile`] for a malformed buffer, missing or unexpected tensors, a
/// wrong dtype or shape, or non-finite values.
pub fn weights_from_bytes(spec: ModelSpec, bytes: &[u8], path: &Path) -> Result<Model> {
    let st = SafeTensors::deserialize(bytes).map_err(|e| bad(path, e))?;
    let mut model = Model::zeros(spec).map_err(|e| bad(path, e))?;
    let indices = model.param_layer_indices();
    let expected: std::collections::BTreeSet<String> = indices
        .iter()
        .flat_map(|i| [format!("layers.{i}.weight"), format!("layers.{i}.bias")])
        .collect();
    let found: std::collections::BTreeSet<String> =
        st.names().into_iter().map(str::to_owned).collect();
    if let Some(extra) = found.difference(&expected).next() {
        return Err(bad(path, format!("unexpected tensor `{extra}`")));
    }
    if let Some(missing) = expected.difference(&found).next() {
        return Err(bad(path, format!("missing tensor `{missing}`")));
    }
    for i in indices {
        let Some(layer) = model.layers_mut().get_mut(i).and_then(|l| l.as_param_mut()) else {
            continue;
        };
        let w = read_tensor(
            &st,
            &format!("layers.{i}.weight"),
            layer.weight().shape(),
            path,
        )?;
        let b = read_tensor(&st, &format!("layers.{i}.bias"), layer.bias().shape(), path)?;
        for (d, s) in layer.weight_mut().iter_mut().zip(w) {
            *d = s;
        }
        for (d, s) in layer.bias_mut().iter_mut().zip(b) {
            *d = s;
        }
    }
    Ok(model)
}

fn read_tensor(st: &SafeTensors<'_>, name: &str, shape: &[usize], path: &Path) -> Result<Vec<f32>> {
    let t = st
        .tensor(name)
        .map_err(|e| bad(path, format!("{name}: {e}")))?;
    if t.dtype() != Dtype::F32 {
        return Err(bad(
            path,
            format!("{name}: dtype {:?}, expected F32", t.dtype()),
        ));
    }
    if t.shape() != shape {
        return Err(bad(
            path,
            format!("{name}: shape {:?}, expected {shape:?}", t.shape()),
        ));
    }
    let values: Vec<f32> = t
        .data()
        .chunks_exact(4)
        .filter_map(|c| c.try_into().ok())
        .map(f32::from_le_bytes)
        .collect();
    if let Some(pos) = values.iter().position(|v| !v.is_finite()) {
        return Err(bad(
            path,
            format!("{name}: non-finite value at index {pos}"),
        ));
    }
    Ok(values)
}

/// Writes the architecture JSON to `arch` and the weights to `weights`.
///
/// # Errors
/// [`NnError::Io`] if a file cannot be written.
pub fn save(model: &Model, arch: &Path, weights: &Path) -> Result<()> {
    std::fs::write(arch, arch_to_json(model.spec())?).map_err(io_err(arch))?;
    std::fs::write(weights, weights_to_bytes(model)?).map_err(io_err(weights))
}

/// Reads a model saved by [`save`].
///
/// # Errors
/// [`NnError::Io`] and [`NnError::ModelFile`] (see the module docs).
pub fn load(arch: &Path, weights: &Path) -> Result<Model> {
    let spec = arch_from_json(&read_limited(arch, MAX_ARCH_BYTES)?, arch)?;
    weights_from_bytes(spec, &read_limited(weights, MAX_WEIGHTS_BYTES)?, weights)
}

/// [`save`] to `dir/model.json` and `dir/model.safetensors` (creating `dir`).
///
/// # Errors
/// As [`save`].
pub fn save_dir(model: &Model, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let (a, w): (PathBuf, PathBuf) = (dir.join(ARCH_FILE), dir.join(WEIGHTS_FILE));
    save(model, &a, &w)
}

/// [`load`] from `dir/model.json` and `dir/model.safetensors`.
///
/// # Errors
/// As [`load`].
pub fn load_dir(dir: &Path) -> Result<Model> {
    load(&dir.join(ARCH_FILE), &dir.join(WEIGHTS_FILE))
}

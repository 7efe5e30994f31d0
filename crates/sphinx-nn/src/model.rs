//! A model: a sequence of layers, with forward and backward passes over a batch.

use ndarray::{Array1, Array2, ArrayView2, Axis};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use rand_distr::{Distribution, Normal, Uniform};
use serde::{Deserialize, Serialize};

use crate::data::Dataset;
use crate::error::{NnError, Result, shape_err};
use crate::layers::{Layer, LayerSpec, ParamGrads, ParamLayer, PerSampleGrads, Shape};
use crate::loss::{LossOutput, softmax_cross_entropy};

/// An architecture: the input shape and the layer sequence. This is what the JSON
/// architecture file holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// Shape of one input sample.
    pub input: Shape,
    /// Layers, first to last.
    pub layers: Vec<LayerSpec>,
}

impl ModelSpec {
    /// Shapes between layers: `shapes[i]` is layer `i`'s input, the last one the output.
    ///
    /// # Errors
    /// [`NnError::Architecture`] if a layer does not fit its input, the model is empty,
    /// or its output is not a flat vector.
    pub fn shapes(&self) -> Result<Vec<Shape>> {
        if self.layers.is_empty() || self.input.is_empty() {
            return Err(NnError::Architecture(
                "a model needs an input and at least one layer".into(),
            ));
        }
        if let (Some(first_param), Some(last_fixed)) = (
            self.layers.iter().position(LayerSpec::is_param),
            self.layers
                .iter()
                .rposition(|l| matches!(l, LayerSpec::Scattering { .. })),
        ) && last_fixed > first_param
        {
            return Err(NnError::Architecture(format!(
                "layer {last_fixed}: scattering has no backward pass, so it must come \
                 before every trainable layer"
            )));
        }
        let mut shapes = vec![self.input];
        let mut cur = self.input;
        for (i, l) in self.layers.iter().enumerate() {
            cur = l
                .output_shape(cur)
                .map_err(|e| NnError::Architecture(format!("layer {i}: {e}")))?;
            shapes.push(cur);
        }
        if !cur.is_flat() {
            return Err(NnError::Architecture(format!(
                "the output {cur} is not a flat vector of logits"
            )));
        }
        Ok(shapes)
    }
}

/// Intermediate values of a forward pass: `values[i]` is the input of layer `i`,
/// `values[n]` the logits.
#[derive(Debug, Clone)]
pub struct Trace {
    /// Layer inputs, then the output.
    pub values: Vec<Array2<f32>>,
}

impl Trace {
    /// The model's output (logits).
    ///
    /// # Errors
    /// [`NnError::Shape`] if the trace is empty.
    pub fn logits(&self) -> Result<ArrayView2<'_, f32>> {
        self.values
            .last()
            .map(|v| v.view())
            .ok_or_else(|| shape_err("Trace::logits", "a non-empty trace", "empty"))
    }
}

/// Gradients of every parameterized layer, in model order (see
/// [`Model::param_layer_indices`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Gradients {
    /// One entry per parameterized layer.
    pub layers: Vec<ParamGrads>,
}

impl Gradients {
    /// Zero gradients shaped like `model`'s parameters.
    pub fn zeros_like(model: &Model) -> Self {
        Self {
            layers: model.param_layers().map(ParamGrads::zeros_like).collect(),
        }
    }

    /// Squared L2 norm over all layers.
    pub fn sq_norm(&self) -> f64 {
        self.layers.iter().map(ParamGrads::sq_norm).sum()
    }

    /// Multiplies every entry by `factor`.
    pub fn scale(&mut self, factor: f32) {
        for g in &mut self.layers {
            g.weight *= factor;
            g.bias *= factor;
        }
    }

    /// Number of scalars.
    pub fn len(&self) -> usize {
        self.layers
            .iter()
            .map(|g| g.weight.len() + g.bias.len())
            .sum()
    }

    /// Whether there are no scalars.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// All entries as one vector: per layer, `W` row-major then `b`.
    pub fn to_flat(&self) -> Vec<f32> {
        let mut out = Vec::with_capacity(self.len());
        for g in &self.layers {
            out.extend(g.weight.iter());
            out.extend(g.bias.iter());
        }
        out
    }

    /// Overwrites the entries from a vector laid out as [`Self::to_flat`] does.
    ///
    /// # Errors
    /// [`NnError::Shape`] if `flat` does not have [`Self::len`] entries.
    pub fn copy_from_flat<T: Copy + Into<f64>>(&mut self, flat: &[T]) -> Result<()> {
        if flat.len() != self.len() {
            return Err(shape_err(
                "Gradients::copy_from_flat",
                self.len(),
                flat.len(),
            ));
        }
        let mut it = flat.iter();
        for g in &mut self.layers {
            for (dst, src) in g.weight.iter_mut().chain(g.bias.iter_mut()).zip(&mut it) {
                *dst = (*src).into() as f32;
            }
        }
        Ok(())
    }
}

/// The leading parameter-free layers of a model: a fixed map from inputs to features,
/// which training can apply to a dataset once instead of at every step.
#[derive(Debug, Clone)]
pub struct FeatureMap {
    input: Shape,
    output: Shape,
    layers: Vec<Layer>,
}

impl FeatureMap {
    /// Shape of one input sample.
    pub fn input_shape(&self) -> Shape {
        self.input
    }

    /// Shape of one feature vector.
    pub fn output_shape(&self) -> Shape {
        self.output
    }

    /// Whether the map has no layer (features are the inputs).
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }

    /// The layers.
    pub fn layers(&self) -> &[Layer] {
        &self.layers
    }

    /// Features of a batch `(B, input_dim)`.
    ///
    /// # Errors
    /// [`NnError::Shape`] if `input` does not have the input's number of columns.
    pub fn apply(&self, input: ArrayView2<'_, f32>) -> Result<Array2<f32>> {
        let mut cur = input.to_owned();
        for layer in &self.layers {
            cur = layer.forward(cur.view())?;
        }
        Ok(cur)
    }

    /// The dataset with every image replaced by its features, computed in batches of
    /// `batch` rows (bounding the memory of intermediate layers).
    ///
    /// # Errors
    /// [`NnError::Shape`] if the dataset's images do not have the input shape.
    pub fn apply_dataset(&self, data: &Dataset, batch: usize) -> Result<Dataset> {
        if data.shape != self.input {
            return Err(shape_err(
                "FeatureMap::apply_dataset",
                self.input,
                data.shape,
            ));
        }
        let mut images = Array2::zeros((data.len(), self.output.len()));
        for (src, mut dst) in data
            .images
            .axis_chunks_iter(Axis(0), batch.max(1))
            .zip(images.axis_chunks_iter_mut(Axis(0), batch.max(1)))
        {
            dst.assign(&self.apply(src)?);
        }
        Ok(Dataset {
            images,
            labels: data.labels.clone(),
            shape: self.output,
            num_classes: data.num_classes,
        })
    }
}

/// A sequential network: parameterized linear layers ([`ParamLayer`]) interleaved with
/// parameter-free ones ([`crate::layers::Nonlinear`]).
#[derive(Debug, Clone)]
pub struct Model {
    spec: ModelSpec,
    layers: Vec<Layer>,
}

impl Model {
    /// Builds a model and initializes it from `seed` (ChaCha20):
    /// - weights of layers followed by ReLU: Kaiming/He normal, `N(0, 2/fan_in)`;
    /// - all other weights (the output layer, layers followed by Square): Xavier/Glorot
    ///   uniform, `U(±√(6/(fan_in+fan_out)))`;
    /// - biases: zero.
    ///
    /// # Errors
    /// [`NnError::Architecture`] if the description is inconsistent.
    pub fn new(spec: ModelSpec, seed: u64) -> Result<Self> {
        let mut model = Self::zeros(spec)?;
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let n = model.layers.len();
        for i in 0..n {
            let relu_next = model.layers[i + 1..]
                .iter()
                .find(|l| !matches!(l, Layer::Flatten(_) | Layer::AvgPool2d(_)))
                .is_some_and(|l| matches!(l, Layer::Relu(_)));
            let receptive = match &model.layers[i] {
                Layer::Conv2d(c) => c.kernel() * c.kernel(),
                _ => 1,
            };
            let Some(layer) = model.layers[i].as_param_mut() else {
                continue;
            };
            let (rows, fan_in) = layer.weight().dim();
            let fan_out = rows * receptive;
            if relu_next {
                let std = (2.0 / fan_in as f64).sqrt();
                let normal =
                    Normal::new(0.0, std).map_err(|e| NnError::Architecture(e.to_string()))?;
                layer
                    .weight_mut()
                    .mapv_inplace(|_| normal.sample(&mut rng) as f32);
            } else {
                let a = (6.0 / (fan_in + fan_out) as f64).sqrt();
                let uni = Uniform::new_inclusive(-a, a)
                    .map_err(|e| NnError::Architecture(e.to_string()))?;
                layer
                    .weight_mut()
                    .mapv_inplace(|_| uni.sample(&mut rng) as f32);
            }
            layer.bias_mut().fill(0.0);
        }
        Ok(model)
    }

    /// Builds a model with all parameters zero (to be filled by [`crate::io`] or the
    /// caller).
    ///
    /// # Errors
    /// [`NnError::Architecture`] if the description is inconsistent.
    pub fn zeros(spec: ModelSpec) -> Result<Self> {
        let shapes = spec.shapes()?;
        let layers = spec
            .layers
            .iter()
            .zip(&shapes)
            .map(|(l, &s)| Layer::from_spec(l, s))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { spec, layers })
    }

    /// Splits the model into its fixed front (the layers before the first trainable one,
    /// see [`FeatureMap`]) and the rest, a model on the front's output. The parameters
    /// are moved, not re-initialized; [`Self::join`] undoes the split.
    ///
    /// # Errors
    /// [`NnError::Architecture`] if the model has no trainable layer.
    pub fn split_front(self) -> Result<(FeatureMap, Model)> {
        let first = self
            .layers
            .iter()
            .position(|l| l.as_param().is_some())
            .ok_or_else(|| NnError::Architecture("the model has no trainable layer".into()))?;
        let shapes = self.spec.shapes()?;
        let output = shapes.get(first).copied().unwrap_or(self.spec.input);
        let mut layers = self.layers;
        let head_layers = layers.split_off(first);
        let head_spec = ModelSpec {
            input: output,
            layers: self.spec.layers.get(first..).unwrap_or_default().to_vec(),
        };
        head_spec.shapes()?;
        Ok((
            FeatureMap {
                input: self.spec.input,
                output,
                layers,
            },
            Model {
                spec: head_spec,
                layers: head_layers,
            },
        ))
    }

    /// The model `head ∘ front` (the inverse of [`Self::split_front`]).
    ///
    /// # Errors
    /// [`NnError::Architecture`] if `head` does not take the front's output shape.
    pub fn join(front: FeatureMap, head: Model) -> Result<Model> {
        if head.spec.input != front.output {
            return Err(NnError::Architecture(format!(
                "the head takes {} inputs but the front produces {}",
                head.spec.input, front.output
            )));
        }
        let spec = ModelSpec {
            input: front.input,
            layers: front
                .layers
                .iter()
                .map(Layer::spec)
                .chain(head.spec.layers.iter().cloned())
                .collect(),
        };
        spec.shapes()?;
        let mut layers = front.layers;
        layers.extend(head.layers);
        Ok(Model { spec, layers })
    }

    /// The architecture.
    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    /// The layers.
    pub fn layers(&self) -> &[Layer] {
        &self.layers
    }

    /// Mutable layers (parameters may be changed, shapes must be kept).
    pub fn layers_mut(&mut self) -> &mut [Layer] {
        &mut self.layers
    }

    /// Indices (in [`Self::layers`]) of the parameterized layers.
    pub fn param_layer_indices(&self) -> Vec<usize> {
        self.layers
            .iter()
            .enumerate()
            .filter(|(_, l)| l.as_param().is_some())
            .map(|(i, _)| i)
            .collect()
    }

    /// The parameterized layers, in order.
    pub fn param_layers(&self) -> impl Iterator<Item = &dyn ParamLayer> {
        self.layers.iter().filter_map(Layer::as_param)
    }

    /// Number of trainable scalars.
    pub fn num_params(&self) -> usize {
        self.param_layers()
            .map(|l| l.weight().len() + l.bias().len())
            .sum()
    }

    /// Scalars per input sample.
    pub fn input_dim(&self) -> usize {
        self.spec.input.len()
    }

    /// Number of outputs (classes).
    pub fn num_classes(&self) -> usize {
        self.layers.last().map_or(0, Layer::out_dim)
    }

    /// Logits for a batch `(B, input_dim)`.
    ///
    /// # Errors
    /// [`NnError::Shape`] if `input` does not have `input_dim` columns.
    pub fn forward(&self, input: ArrayView2<'_, f32>) -> Result<Array2<f32>> {
        let mut cur: Option<Array2<f32>> = None;
        for layer in &self.layers {
            let next = layer.forward(cur.as_ref().map_or(input, |c| c.view()))?;
            cur = Some(next);
        }
        cur.ok_or_else(|| NnError::Architecture("empty model".into()))
    }

    /// Forward pass keeping every layer's input.
    ///
    /// # Errors
    /// As [`Self::forward`].
    pub fn forward_trace(&self, input: ArrayView2<'_, f32>) -> Result<Trace> {
        let mut values = Vec::with_capacity(self.layers.len() + 1);
        values.push(input.to_owned());
        for layer in &self.layers {
            let next = match values.last() {
                Some(v) => layer.forward(v.view())?,
                None => return Err(NnError::Architecture("empty trace".into())),
            };
            values.push(next);
        }
        Ok(Trace { values })
    }

    /// Back-propagates per-sample output gradients `grad_logits` `(B, classes)` and
    /// returns, for each parameterized layer in order, the gradient with respect to its
    /// output (`δ_l`, one row per sample). Weight gradients follow from
    /// `(trace.values[i], δ_l)` through [`ParamLayer`]; the first layer's input gradient
    /// is never formed.
    ///
    /// # Errors
    /// [`NnError::Shape`] if the trace or gradient do not fit the model.
    pub fn backward(
        &self,
        trace: &Trace,
        grad_logits: ArrayView2<'_, f32>,
    ) -> Result<Vec<Array2<f32>>> {
        if trace.values.len() != self.layers.len() + 1 {
            return Err(shape_err(
                "Model::backward",
                self.layers.len() + 1,
                trace.values.len(),
            ));
        }
        let mut deltas = Vec::new();
        let mut grad = grad_logits.to_owned();
        let first_param = self
            .layers
            .iter()
            .position(|l| l.as_param().is_some())
            .unwrap_or(0);
        for (i, layer) in self.layers.iter().enumerate().rev() {
            if i < first_param {
                break;
            }
            let input = trace.values[i].view();
            if let Some(p) = layer.as_param() {
                if grad.nrows() != input.nrows() || grad.ncols() != p.out_dim() {
                    return Err(shape_err(
                        "Model::backward",
                        format!("({}, {})", input.nrows(), p.out_dim()),
                        format!("{:?}", grad.shape()),
                    ));
                }
                let next = if i > first_param {
                    Some(p.backward_input(grad.view())?)
                } else {
                    None
                };
                deltas.push(std::mem::replace(&mut grad, next.unwrap_or_default()));
            } else if let Some(n) = layer.as_nonlinear() {
                grad = n.backward(input, grad.view())?;
            }
        }
        deltas.reverse();
        Ok(deltas)
    }

    /// Loss and gradients (summed over the batch) for `(input, labels)`.
    ///
    /// # Errors
    /// Shape and label errors as [`Self::forward`] and [`softmax_cross_entropy`].
    pub fn loss_and_grads(
        &self,
        input: ArrayView2<'_, f32>,
        labels: &[u8],
    ) -> Result<(LossOutput, Gradients)> {
        let trace = self.forward_trace(input)?;
        let loss = softmax_cross_entropy(trace.logits()?, labels)?;
        let deltas = self.backward(&trace, loss.grad.view())?;
        let grads = self.grads_from_deltas(&trace, &deltas)?;
        Ok((loss, Gradients { layers: grads }))
    }

    /// Summed weight gradients of every parameterized layer from a trace and the output
    /// gradients [`Self::backward`] returned.
    ///
    /// # Errors
    /// [`NnError::Shape`] if `deltas` does not match the model.
    pub fn grads_from_deltas(
        &self,
        trace: &Trace,
        deltas: &[Array2<f32>],
    ) -> Result<Vec<ParamGrads>> {
        let idx = self.param_layer_indices();
        if deltas.len() != idx.len() || trace.values.len() != self.layers.len() + 1 {
            return Err(shape_err(
                "Model::grads_from_deltas",
                idx.len(),
                deltas.len(),
            ));
        }
        idx.iter()
            .zip(deltas)
            .map(|(&i, d)| match self.layers[i].as_param() {
                Some(p) => p.grads(trace.values[i].view(), d.view()),
                None => Err(NnError::Architecture(
                    "index of a non-parameter layer".into(),
                )),
            })
            .collect()
    }

    /// Per-sample gradients of every parameterized layer (all materialized: meant for
    /// tests, inspection and the encrypted protocol's reference, not for training loops).
    ///
    /// # Errors
    /// As [`Self::loss_and_grads`].
    pub fn per_sample_grads(
        &self,
        input: ArrayView2<'_, f32>,
        labels: &[u8],
    ) -> Result<Vec<PerSampleGrads>> {
        let trace = self.forward_trace(input)?;
        let loss = softmax_cross_entropy(trace.logits()?, labels)?;
        let deltas = self.backward(&trace, loss.grad.view())?;
        self.param_layer_indices()
            .iter()
            .zip(&deltas)
            .map(|(&i, d)| match self.layers[i].as_param() {
                Some(p) => p.per_sample_grads(trace.values[i].view(), d.view()),
                None => Err(NnError::Architecture(
                    "index of a non-parameter layer".into(),
                )),
            })
            .collect()
    }

    /// Squared L2 norm of each sample's whole gradient (all layers jointly).
    ///
    /// # Errors
    /// [`NnError::Shape`] if `deltas` does not match the model.
    pub fn per_sample_sq_norms(
        &self,
        trace: &Trace,
        deltas: &[Array2<f32>],
    ) -> Result<Array1<f64>> {
        let idx = self.param_layer_indices();
        if deltas.len() != idx.len() || trace.values.len() != self.layers.len() + 1 {
            return Err(shape_err(
                "Model::per_sample_sq_norms",
                idx.len(),
                deltas.len(),
            ));
        }
        let mut total = Array1::zeros(trace.values[0].nrows());
        for (&i, d) in idx.iter().zip(deltas) {
            if let Some(p) = self.layers[i].as_param() {
                total += &p.per_sample_sq_norms(trace.values[i].view(), d.view())?;
            }
        }
        Ok(total)
    }

    /// Predicted class of each sample, evaluated in batches of `batch` rows.
    ///
    /// # Errors
    /// As [`Self::forward`].
    pub fn predict(&self, input: ArrayView2<'_, f32>, batch: usize) -> Result<Vec<usize>> {
        let mut out = Vec::with_capacity(input.nrows());
        for chunk in input.axis_chunks_iter(Axis(0), batch.max(1)) {
            let logits = self.forward(chunk)?;
            out.extend(logits.axis_iter(Axis(0)).map(|row| {
                row.iter()
                    .enumerate()
                    .fold((0, f32::NEG_INFINITY), |(bi, bv), (i, &v)| {
                        if v > bv { (i, v) } else { (bi, bv) }
                    })
                    .0
            }));
        }
        Ok(out)
    }

    /// Fraction of samples classified correctly.
    ///
    /// # Errors
    /// As [`Self::forward`]; [`NnError::Shape`] if `labels` has the wrong length.
    pub fn accuracy(&self, input: ArrayView2<'_, f32>, labels: &[u8], batch: usize) -> Result<f64> {
        if input.nrows() != labels.len() {
            return Err(shape_err("Model::accuracy", input.nrows(), labels.len()));
        }
        if labels.is_empty() {
            return Ok(0.0);
        }
        let pred = self.predict(input, batch)?;
        let hits = pred
            .iter()
            .zip(labels)
            .filter(|&(&p, &y)| p == usize::from(y))
            .count();
        Ok(hits as f64 / labels.len() as f64)
    }
}

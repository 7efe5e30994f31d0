//! The plaintext reference of exactly the protocol's DP-SGD semantics.
//!
//! It differs from `sphinx_nn::train::dp_sgd_step` where the protocol does: only the
//! weights are clipped and noised (each sample's W-gradient over all layers jointly), and
//! the biases, which never leave encryption, follow the un-noised gradient sum divided by
//! the expected batch size `q·N`. Same aggregator seed ⇒ same Poisson batches and the
//! same noise draws as an encrypted run.

use ndarray::{Array1, Array2, Axis};
use sphinx_dp::DpSgdAggregator;
use sphinx_nn::data::Dataset;
use sphinx_nn::loss::softmax_cross_entropy;
use sphinx_nn::model::{Model, ModelSpec};

use crate::error::{ProtocolError, Result};
use crate::update::WeightAverage;

/// What one reference step saw.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReferenceStep {
    /// Realized batch size.
    pub batch_size: usize,
    /// Sum of per-sample losses before the update.
    pub loss_sum: f64,
    /// Correct predictions before the update.
    pub correct: usize,
}

/// Plaintext DP-SGD with the protocol's semantics.
#[derive(Debug)]
pub struct ReferenceTrainer {
    model: Model,
    agg: DpSgdAggregator,
    learning_rate: f32,
    average: WeightAverage,
    /// `W̄`, one matrix per parameterized layer (kept only when averaging).
    averaged: Vec<Array2<f32>>,
}

impl ReferenceTrainer {
    /// A trainer for `spec` initialized as the server does: `W` from `init_seed`, every
    /// bias at `bias_init`.
    ///
    /// # Errors
    /// [`ProtocolError::Nn`] for a bad architecture, [`ProtocolError::UnsupportedModel`]
    /// if the aggregator's dimension is not the number of weights.
    pub fn new(
        spec: ModelSpec,
        init_seed: u64,
        bias_init: f32,
        aggregator: DpSgdAggregator,
        learning_rate: f32,
    ) -> Result<Self> {
        let mut model = Model::new(spec, init_seed)?;
        for layer in model.layers_mut() {
            if let Some(p) = layer.as_param_mut() {
                p.bias_mut().fill(bias_init);
            }
        }
        let weights: usize = model.param_layers().map(|p| p.weight().len()).sum();
        if aggregator.dim() != weights {
            return Err(ProtocolError::UnsupportedModel(format!(
                "aggregator dimension {} is not the model's {weights} weights",
                aggregator.dim()
            )));
        }
        Ok(Self {
            model,
            agg: aggregator,
            learning_rate,
            average: WeightAverage::NONE,
            averaged: Vec::new(),
        })
    }

    /// The same trainer keeping the server's average `W̄` of the weights
    /// ([`WeightAverage`]), from `W⁰`.
    ///
    /// # Errors
    /// [`ProtocolError::Malformed`] for a decay outside `[0, 1)`.
    pub fn with_weight_average(mut self, average: WeightAverage) -> Result<Self> {
        average.validate()?;
        self.average = average;
        self.averaged = if average.is_enabled() {
            self.weights()
        } else {
            Vec::new()
        };
        Ok(self)
    }

    fn weights(&self) -> Vec<Array2<f32>> {
        self.model
            .param_layers()
            .map(|p| p.weight().clone())
            .collect()
    }

    /// What the run exports: the current model with `W̄` in place of `W` when averaging
    /// (the biases are the current ones), else the current model.
    ///
    /// # Errors
    /// [`ProtocolError::UnsupportedModel`] if the model lost a parameterized layer.
    pub fn exported_model(&self) -> Result<Model> {
        let mut model = self.model.clone();
        if self.average.is_enabled() {
            let idx = model.param_layer_indices();
            for (&i, avg) in idx.iter().zip(&self.averaged) {
                let layer = model.layers_mut()[i]
                    .as_param_mut()
                    .ok_or_else(|| ProtocolError::UnsupportedModel("layer index".into()))?;
                layer.weight_mut().assign(avg);
            }
        }
        Ok(model)
    }

    /// The current model.
    #[must_use]
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// One step: Poisson batch, per-sample W-gradients clipped jointly and noised by the
    /// aggregator, bias gradient sum divided by `q·N`, SGD update, then the average `W̄`.
    ///
    /// # Errors
    /// Shape errors if `data` does not fit the model; aggregation errors.
    pub fn step(&mut self, data: &Dataset) -> Result<ReferenceStep> {
        let batch = self.agg.sample_batch();
        let expected = self.agg.expected_batch_size();
        let idx = self.model.param_layer_indices();
        let mut bias_sums: Vec<Array1<f32>> = self
            .model
            .param_layers()
            .map(|p| Array1::zeros(p.bias().len()))
            .collect();
        let mut stats = ReferenceStep {
            batch_size: batch.len(),
            loss_sum: 0.0,
            correct: 0,
        };
        let output = if batch.is_empty() {
            self.agg.begin_step().finish()
        } else {
            let (x, y) = data.batch(&batch)?;
            let trace = self.model.forward_trace(x.view())?;
            let loss = softmax_cross_entropy(trace.logits()?, &y)?;
            stats.loss_sum = loss.loss_sum;
            stats.correct = loss.correct;
            let deltas = self.model.backward(&trace, loss.grad.view())?;
            let mut per_layer = Vec::with_capacity(idx.len());
            for ((&i, d), sum) in idx.iter().zip(&deltas).zip(&mut bias_sums) {
                let layer = self.model.layers()[i]
                    .as_param()
                    .ok_or_else(|| ProtocolError::UnsupportedModel("layer index".into()))?;
                let g = layer.per_sample_grads(trace.values[i].view(), d.view())?;
                *sum = g.bias.sum_axis(Axis(0));
                per_layer.push(g.weight);
            }
            let mut step = self.agg.begin_step();
            for j in 0..batch.len() {
                let row: Vec<f32> = per_layer
                    .iter()
                    .flat_map(|w| w.index_axis(Axis(0), j).iter().copied().collect::<Vec<_>>())
                    .collect();
                step.add(&row)?;
            }
            step.finish()
        };
        let lr = self.learning_rate;
        let mut it = output.gradient.iter();
        for (&i, sum) in idx.iter().zip(&bias_sums) {
            let layer = self.model.layers_mut()[i]
                .as_param_mut()
                .ok_or_else(|| ProtocolError::UnsupportedModel("layer index".into()))?;
            for (w, g) in layer.weight_mut().iter_mut().zip(&mut it) {
                *w -= lr * g;
            }
            let scale = lr / expected as f32;
            for (b, s) in layer.bias_mut().iter_mut().zip(sum) {
                *b -= scale * s;
            }
        }
        if self.average.is_enabled() {
            let w = self.weights();
            self.average.update(&mut self.averaged, &w);
        }
        Ok(stats)
    }
}

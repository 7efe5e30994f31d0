//! Stochastic gradient descent.

use ndarray::{Array1, Array2};

use crate::error::{NnError, Result, shape_err};
use crate::model::{Gradients, Model};

/// SGD with optional (heavy-ball) momentum: `v ← μ·v + g`, `θ ← θ − η·v`.
#[derive(Debug, Clone)]
pub struct Sgd {
    lr: f32,
    momentum: f32,
    weight_decay: f32,
    velocity: Option<Vec<(Array2<f32>, Array1<f32>)>>,
}

impl Sgd {
    /// An optimizer with learning rate `lr > 0` and momentum `0 ≤ μ < 1` (0 disables it).
    ///
    /// # Errors
    /// [`NnError::Hyperparameter`] if either is out of range or not finite.
    pub fn new(lr: f32, momentum: f32) -> Result<Self> {
        if !(lr.is_finite() && lr > 0.0) {
            return Err(NnError::Hyperparameter {
                name: "learning rate",
                reason: format!("{lr} is not > 0"),
            });
        }
        if !(0.0..1.0).contains(&momentum) {
            return Err(NnError::Hyperparameter {
                name: "momentum",
                reason: format!("{momentum} is not in [0, 1)"),
            });
        }
        Ok(Self {
            lr,
            momentum,
            weight_decay: 0.0,
            velocity: None,
        })
    }

    /// Adds L2 weight decay `λ·W` to the gradient of every weight matrix (biases are
    /// not decayed).
    ///
    /// # Errors
    /// [`NnError::Hyperparameter`] if `lambda` is negative or not finite.
    pub fn with_weight_decay(mut self, lambda: f32) -> Result<Self> {
        if !(lambda.is_finite() && lambda >= 0.0) {
            return Err(NnError::Hyperparameter {
                name: "weight decay",
                reason: format!("{lambda} is not ≥ 0"),
            });
        }
        self.weight_decay = lambda;
        Ok(self)
    }

    /// Learning rate.
    pub fn lr(&self) -> f32 {
        self.lr
    }

    /// Changes the learning rate (for schedules).
    ///
    /// # Errors
    /// [`NnError::Hyperparameter`] if `lr` is not finite and positive.
    pub fn set_lr(&mut self, lr: f32) -> Result<()> {
        Self::new(lr, self.momentum)?;
        self.lr = lr;
        Ok(())
    }

    /// Momentum.
    pub fn momentum(&self) -> f32 {
        self.momentum
    }

    /// Applies one update with the (already averaged) gradient `grads`.
    ///
    /// # Errors
    /// [`NnError::Shape`] if `grads` does not match the model's parameters.
    pub fn step(&mut self, model: &mut Model, grads: &Gradients) -> Result<()> {
        let n = model.param_layers().count();
        if grads.layers.len() != n {
            return Err(shape_err("Sgd::step", n, grads.layers.len()));
        }
        for (layer, g) in model.param_layers().zip(&grads.layers) {
            if layer.weight().dim() != g.weight.dim() || layer.bias().len() != g.bias.len() {
                return Err(shape_err(
                    "Sgd::step",
                    format!("{:?}", layer.weight().dim()),
                    format!("{:?}", g.weight.dim()),
                ));
            }
        }
        let (lr, wd) = (self.lr, self.weight_decay);
        if self.momentum == 0.0 {
            for (layer, g) in model
                .layers_mut()
                .iter_mut()
                .filter_map(|l| l.as_param_mut())
                .zip(&grads.layers)
            {
                if wd > 0.0 {
                    let decay = layer.weight().to_owned();
                    layer.weight_mut().scaled_add(-lr * wd, &decay);
                }
                layer.weight_mut().scaled_add(-lr, &g.weight);
                layer.bias_mut().scaled_add(-lr, &g.bias);
            }
            return Ok(());
        }
        let mu = self.momentum;
        let velocity = self.velocity.get_or_insert_with(|| {
            grads
                .layers
                .iter()
                .map(|g| {
                    (
                        Array2::zeros(g.weight.raw_dim()),
                        Array1::zeros(g.bias.len()),
                    )
                })
                .collect()
        });
        for ((layer, g), (vw, vb)) in model
            .layers_mut()
            .iter_mut()
            .filter_map(|l| l.as_param_mut())
            .zip(&grads.layers)
            .zip(velocity.iter_mut())
        {
            vw.zip_mut_with(&g.weight, |v, &gi| *v = mu * *v + gi);
            if wd > 0.0 {
                vw.scaled_add(wd, layer.weight());
            }
            vb.zip_mut_with(&g.bias, |v, &gi| *v = mu * *v + gi);
            layer.weight_mut().scaled_add(-lr, vw);
            layer.bias_mut().scaled_add(-lr, vb);
        }
        Ok(())
    }
}

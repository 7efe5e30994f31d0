//! Gradients against finite differences, per-sample gradients against batch-size-1
//! runs, and the layer-level identities the encrypted protocol relies on.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ndarray::{Array2, Axis, s};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sphinx_nn::layers::{LayerSpec, ParamLayer, Shape};
use sphinx_nn::loss::softmax_cross_entropy;
use sphinx_nn::model::{Model, ModelSpec};

/// Exercises every layer type, stride 2 and padding included.
fn small_spec() -> ModelSpec {
    ModelSpec {
        input: Shape::image(2, 9, 9),
        layers: vec![
            LayerSpec::Conv2d {
                in_channels: 2,
                out_channels: 3,
                kernel: 3,
                stride: 2,
                padding: 1,
            },
            LayerSpec::Relu,
            LayerSpec::AvgPool2d {
                kernel: 2,
                stride: 1,
            },
            LayerSpec::Conv2d {
                in_channels: 3,
                out_channels: 4,
                kernel: 2,
                stride: 1,
                padding: 0,
            },
            LayerSpec::Square,
            LayerSpec::Flatten,
            LayerSpec::Linear {
                in_features: 4 * 3 * 3,
                out_features: 6,
            },
            LayerSpec::Relu,
            LayerSpec::Linear {
                in_features: 6,
                out_features: 5,
            },
        ],
    }
}

/// [`small_spec`] with every ReLU replaced by Square: finite differences need a smooth
/// loss (a ReLU kink within ε of a shared conv weight is common); ReLU's own backward is
/// checked by `relu_and_square_backward` and through the input-gradient test.
fn smooth_spec() -> ModelSpec {
    let mut spec = small_spec();
    for l in &mut spec.layers {
        if *l == LayerSpec::Relu {
            *l = LayerSpec::Square;
        }
    }
    spec
}

fn random_batch(model: &Model, n: usize, seed: u64) -> (Array2<f32>, Vec<u8>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let x = Array2::from_shape_fn((n, model.input_dim()), |_| rng.random_range(-1.0..1.0f32));
    let y = (0..n)
        .map(|_| rng.random_range(0..model.num_classes() as u8))
        .collect();
    (x, y)
}

fn loss(model: &Model, x: &Array2<f32>, y: &[u8]) -> f64 {
    softmax_cross_entropy(model.forward(x.view()).unwrap().view(), y)
        .unwrap()
        .loss_sum
}

#[test]
fn gradients_match_finite_differences() {
    let mut model = Model::new(smooth_spec(), 3).unwrap();
    let (x, y) = random_batch(&model, 4, 11);
    let (_, grads) = model.loss_and_grads(x.view(), &y).unwrap();
    let flat = grads.to_flat();
    let eps = 1e-2f32;
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    // Every bias entry and a random subset of weights, in every layer.
    let mut checked = 0;
    let mut offset = 0;
    let indices = model.param_layer_indices();
    for &li in &indices {
        let (wlen, blen) = {
            let p = model.layers()[li].as_param().unwrap();
            (p.weight().len(), p.bias().len())
        };
        let picks: Vec<usize> = (0..12)
            .map(|_| rng.random_range(0..wlen))
            .chain(wlen..wlen + blen)
            .collect();
        for k in picks {
            let bump = |model: &mut Model, d: f32| {
                let p = model.layers_mut()[li].as_param_mut().unwrap();
                if k < wlen {
                    let cols = p.weight().ncols();
                    p.weight_mut()[[k / cols, k % cols]] += d;
                } else {
                    p.bias_mut()[k - wlen] += d;
                }
            };
            bump(&mut model, eps);
            let up = loss(&model, &x, &y);
            bump(&mut model, -2.0 * eps);
            let down = loss(&model, &x, &y);
            bump(&mut model, eps);
            let numeric = (up - down) / (2.0 * f64::from(eps));
            let analytic = f64::from(flat[offset + k]);
            let tol = 2e-2 * numeric.abs().max(analytic.abs()) + 2e-3;
            assert!(
                (numeric - analytic).abs() <= tol,
                "layer {li} param {k}: numeric {numeric} analytic {analytic}"
            );
            checked += 1;
        }
        offset += wlen + blen;
    }
    assert!(checked > 50);
}

#[test]
fn input_gradient_matches_finite_differences() {
    // Back-propagation through every nonlinear layer, checked at the input of the
    // second convolution (the first layer's input gradient is never formed).
    let model = Model::new(small_spec(), 8).unwrap();
    let (x, y) = random_batch(&model, 2, 12);
    let trace = model.forward_trace(x.view()).unwrap();
    let l = softmax_cross_entropy(trace.logits().unwrap(), &y).unwrap();
    let deltas = model.backward(&trace, l.grad.view()).unwrap();
    // deltas[1] is the output gradient of layer 3 (conv 2); its input is trace.values[3].
    let conv2 = model.layers()[3].as_param().unwrap();
    let dx = conv2.backward_input(deltas[1].view()).unwrap();
    let tail = |h: &Array2<f32>| {
        let mut cur = h.clone();
        for layer in &model.layers()[3..] {
            cur = layer.forward(cur.view()).unwrap();
        }
        softmax_cross_entropy(cur.view(), &y).unwrap().loss_sum
    };
    let h = trace.values[3].clone();
    let eps = 1e-2;
    for j in [0, 5, 17, 30, 44] {
        let mut up = h.clone();
        up[[1, j]] += eps;
        let mut down = h.clone();
        down[[1, j]] -= eps;
        let numeric = (tail(&up) - tail(&down)) / (2.0 * f64::from(eps));
        let analytic = f64::from(dx[[1, j]]);
        assert!(
            (numeric - analytic).abs() <= 2e-2 * numeric.abs().max(analytic.abs()) + 2e-3,
            "{j}: {numeric} vs {analytic}"
        );
    }
}

#[test]
fn per_sample_gradients_equal_batch_size_one_runs() {
    let model = Model::new(small_spec(), 21).unwrap();
    let (x, y) = random_batch(&model, 5, 13);
    let per_sample = model.per_sample_grads(x.view(), &y).unwrap();
    let (_, batch) = model.loss_and_grads(x.view(), &y).unwrap();
    for i in 0..5 {
        let xi = x.slice(s![i..=i, ..]);
        let (_, single) = model.loss_and_grads(xi, &y[i..=i]).unwrap();
        for (layer, (ps, g)) in per_sample.iter().zip(&single.layers).enumerate() {
            let mine = ps.sample(i).unwrap();
            let diff = (&mine.weight - &g.weight)
                .mapv(f32::abs)
                .fold(0.0f32, |a, &b| a.max(b));
            let bdiff = (&mine.bias - &g.bias)
                .mapv(f32::abs)
                .fold(0.0f32, |a, &b| a.max(b));
            assert!(
                diff < 1e-5 && bdiff < 1e-5,
                "sample {i} layer {layer}: {diff} {bdiff}"
            );
        }
    }
    // The batch gradient is the sum of the per-sample ones.
    for (ps, g) in per_sample.iter().zip(&batch.layers) {
        let sum_w = ps.weight.sum_axis(Axis(0));
        let sum_b = ps.bias.sum_axis(Axis(0));
        assert!((&sum_w - &g.weight).iter().all(|d| d.abs() < 1e-4));
        assert!((&sum_b - &g.bias).iter().all(|d| d.abs() < 1e-4));
    }
    assert!(per_sample[0].sample(5).is_none());
}

#[test]
fn per_sample_norms_match_materialized_gradients() {
    let model = Model::new(small_spec(), 4).unwrap();
    let (x, y) = random_batch(&model, 6, 14);
    let trace = model.forward_trace(x.view()).unwrap();
    let l = softmax_cross_entropy(trace.logits().unwrap(), &y).unwrap();
    let deltas = model.backward(&trace, l.grad.view()).unwrap();
    let norms = model.per_sample_sq_norms(&trace, &deltas).unwrap();
    let flat = sphinx_nn::train::per_sample_flat_grads(&model, &trace, &deltas, 0..6).unwrap();
    let per_sample = model.per_sample_grads(x.view(), &y).unwrap();
    for i in 0..6 {
        let direct: f64 = per_sample
            .iter()
            .map(|p| p.sample(i).unwrap().sq_norm())
            .sum();
        let from_flat: f64 = flat.row(i).iter().map(|&v| f64::from(v).powi(2)).sum();
        assert!(
            (norms[i] - direct).abs() <= 1e-4 * direct.max(1e-6),
            "{} vs {direct}",
            norms[i]
        );
        assert!((from_flat - direct).abs() <= 1e-4 * direct.max(1e-6));
    }
}

#[test]
fn conv_is_w_times_im2col_plus_bias() {
    // The contract the encrypted protocol relies on: one sample's convolution output is
    // W · cols(a) + b, and its weight gradient is δ · cols(a)ᵀ.
    let model = Model::new(small_spec(), 9).unwrap();
    let (x, y) = random_batch(&model, 2, 15);
    let sphinx_nn::layers::Layer::Conv2d(conv) = &model.layers()[0] else {
        panic!("layer 0 is a conv")
    };
    let z = conv.forward(x.view()).unwrap();
    let cols = conv.im2col(x.row(1)).unwrap();
    let expect = conv.weight().dot(&cols) + conv.bias().view().insert_axis(Axis(1));
    let got = z
        .row(1)
        .to_owned()
        .into_shape_with_order(expect.raw_dim())
        .unwrap();
    assert!((&got - &expect).iter().all(|d| d.abs() < 1e-5));
    let g = Array2::from_shape_fn(z.raw_dim(), |(i, j)| ((i * 7 + j) % 5) as f32 - 2.0);
    let ps = conv.per_sample_grads(x.view(), g.view()).unwrap();
    let g1 = g
        .row(1)
        .to_owned()
        .into_shape_with_order((conv.out_channels(), cols.ncols()))
        .unwrap();
    let dw = g1.dot(&cols.t());
    assert!(
        (&ps.weight.index_axis(Axis(0), 1) - &dw)
            .iter()
            .all(|d| d.abs() < 1e-4)
    );
    let _ = y;
}

#[test]
fn shape_errors_are_reported() {
    let model = Model::new(small_spec(), 1).unwrap();
    let bad = Array2::<f32>::zeros((2, 7));
    assert!(matches!(
        model.forward(bad.view()),
        Err(sphinx_nn::NnError::Shape { .. })
    ));
    let x = Array2::<f32>::zeros((2, model.input_dim()));
    assert!(matches!(
        model.loss_and_grads(x.view(), &[0]),
        Err(sphinx_nn::NnError::Shape { .. })
    ));
    assert!(matches!(
        model.loss_and_grads(x.view(), &[0, 9]),
        Err(sphinx_nn::NnError::Label { label: 9, .. })
    ));
}

#[test]
fn relu_and_square_backward() {
    use sphinx_nn::layers::{Nonlinear, Relu, Square};
    let z = ndarray::arr2(&[[-1.5f32, 0.0, 2.0], [3.0, -0.1, 0.5]]);
    let g = ndarray::arr2(&[[1.0f32, 2.0, 3.0], [4.0, 5.0, 6.0]]);
    let relu = Relu::new(3);
    assert_eq!(
        relu.forward(z.view()).unwrap(),
        ndarray::arr2(&[[0.0, 0.0, 2.0], [3.0, 0.0, 0.5]])
    );
    assert_eq!(
        relu.backward(z.view(), g.view()).unwrap(),
        ndarray::arr2(&[[0.0, 0.0, 3.0], [4.0, 0.0, 6.0]])
    );
    assert_eq!(
        relu.derivative(z.view()).unwrap(),
        ndarray::arr2(&[[0.0, 0.0, 1.0], [1.0, 0.0, 1.0]])
    );
    let tanh = sphinx_nn::layers::Tanh::new(3);
    assert_eq!(tanh.forward(z.view()).unwrap(), z.mapv(f32::tanh));
    let eps = 1e-3f32;
    let numeric = (z.mapv(|v| (v + eps).tanh()) - z.mapv(|v| (v - eps).tanh())) / (2.0 * eps) * &g;
    let analytic = tanh.backward(z.view(), g.view()).unwrap();
    assert!(
        (&numeric - &analytic).iter().all(|d| d.abs() < 1e-2),
        "{numeric} {analytic}"
    );
    let sq = Square::new(3);
    assert_eq!(sq.forward(z.view()).unwrap(), z.mapv(|v| v * v));
    assert_eq!(sq.backward(z.view(), g.view()).unwrap(), &z * &g * 2.0);
}

#[test]
fn avg_pool_forward_and_backward() {
    use sphinx_nn::layers::{AvgPool2d, Nonlinear};
    let pool = AvgPool2d::new(Shape::image(1, 4, 4), 2, 2).unwrap();
    let x = Array2::from_shape_fn((1, 16), |(_, j)| j as f32);
    assert_eq!(
        pool.forward(x.view()).unwrap(),
        ndarray::arr2(&[[2.5, 4.5, 10.5, 12.5]])
    );
    let g = ndarray::arr2(&[[4.0f32, 8.0, 12.0, 16.0]]);
    let dx = pool.backward(x.view(), g.view()).unwrap();
    assert_eq!(
        dx.row(0).to_vec(),
        vec![
            1.0, 1.0, 2.0, 2.0, 1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 4.0, 4.0, 3.0, 3.0, 4.0, 4.0
        ]
    );
}

#[test]
fn crop_forward_backward_and_limits() {
    use sphinx_nn::layers::{Crop, Nonlinear};
    let crop = Crop::new(Shape::image(2, 4, 5), 1).unwrap();
    assert_eq!(crop.output_shape(), Shape::image(2, 2, 3));
    let x = Array2::from_shape_fn((1, 40), |(_, j)| j as f32);
    // Channel 0 rows 1–2, columns 1–3; channel 1 the same, 20 further on.
    assert_eq!(
        crop.forward(x.view()).unwrap().row(0).to_vec(),
        vec![
            6.0, 7.0, 8.0, 11.0, 12.0, 13.0, 26.0, 27.0, 28.0, 31.0, 32.0, 33.0
        ]
    );
    // The adjoint of a selection: the kept pixels get their gradient, the border zero.
    let g = Array2::from_shape_fn((1, 12), |(_, j)| (j + 1) as f32);
    let dx = crop.backward(x.view(), g.view()).unwrap();
    let y = crop.forward(x.view()).unwrap();
    let lhs: f32 = (&dx * &x).sum();
    let rhs: f32 = (&g * &y).sum();
    assert_eq!(lhs, rhs);
    assert_eq!(dx.iter().filter(|&&v| v != 0.0).count(), 12);
    assert_eq!(dx[[0, 6]], 1.0);
    assert_eq!(dx[[0, 33]], 12.0);
    // Nothing may remain empty, and a huge border must not overflow.
    assert!(Crop::new(Shape::image(1, 4, 5), 2).is_err());
    assert!(Crop::new(Shape::image(1, 4, 5), usize::MAX).is_err());
    assert_eq!(
        LayerSpec::Crop { border: 0 }
            .output_shape(Shape::image(1, 4, 5))
            .unwrap(),
        Shape::image(1, 4, 5)
    );
}

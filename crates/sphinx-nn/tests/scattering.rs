//! The scattering transform, group normalization, and splitting a model's fixed front.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ndarray::{Array2, s};
use sphinx_nn::NnError;
use sphinx_nn::data::Dataset;
use sphinx_nn::layers::{GroupNorm, LayerSpec, Nonlinear, Scattering, Shape};
use sphinx_nn::model::{Model, ModelSpec};
use sphinx_nn::presets::Preset;

const SIDE: usize = 28;

fn mnist_scattering() -> Scattering {
    Scattering::new(Shape::image(1, SIDE, SIDE), 2, 8).unwrap()
}

/// A smooth blob of width `w` centred at `(cy, cx)`.
fn blob(cy: f32, cx: f32, w: f32) -> Vec<f32> {
    let mut img = vec![0.0; SIDE * SIDE];
    for y in 0..SIDE {
        for x in 0..SIDE {
            let (dy, dx) = (y as f32 - cy, x as f32 - cx);
            img[y * SIDE + x] = (-(dy * dy + dx * dx) / (2.0 * w * w)).exp();
        }
    }
    img
}

/// A vertical bar with a notch: enough structure for every wavelet to respond.
fn pattern(oy: usize, ox: usize) -> Vec<f32> {
    let mut img = vec![0.0; SIDE * SIDE];
    for y in 0..8 {
        for x in 0..6 {
            if x < 2 || (y > 3 && x < 5) {
                img[(oy + y) * SIDE + ox + x] = 1.0;
            }
        }
    }
    img
}

fn run(sc: &Scattering, img: &[f32]) -> Array2<f32> {
    let x = Array2::from_shape_vec((1, img.len()), img.to_vec()).unwrap();
    sc.forward(x.view()).unwrap()
}

/// Channel `c`, output cell `(y, x)` of a `81×7×7` result.
fn at(out: &Array2<f32>, c: usize, y: usize, x: usize) -> f32 {
    out[[0, (c * 7 + y) * 7 + x]]
}

#[test]
fn shapes_and_channel_count() {
    let sc = mnist_scattering();
    assert_eq!(sc.output_shape(), Shape::image(81, 7, 7));
    let rgb = Scattering::new(Shape::image(3, 32, 32), 2, 8).unwrap();
    assert_eq!(rgb.output_shape(), Shape::image(243, 8, 8));
    let three = Scattering::new(Shape::image(1, 32, 32), 3, 4).unwrap();
    // 1 + J·L + L²·J(J−1)/2 = 1 + 12 + 48.
    assert_eq!(three.output_shape(), Shape::image(61, 4, 4));
    for (shape, j, l) in [
        (Shape::image(1, 30, 28), 2, 8),
        (Shape::image(1, 28, 28), 0, 8),
        (Shape::image(1, 28, 28), 2, 0),
        (Shape::image(1, 64, 64), 6, 8),
    ] {
        assert!(matches!(
            Scattering::new(shape, j, l),
            Err(NnError::Architecture(_))
        ));
    }
}

#[test]
fn dirac_gives_the_low_pass_filter() {
    // S0 of a unit impulse on an output-grid point is φ_J at 0: the peak of a unit-sum
    // Gaussian of width σ = 0.8·4 = 3.2, i.e. 1/(2πσ²) up to the discretization
    // (< 1e-4 relative for σ = 3.2).
    let sc = mnist_scattering();
    let mut img = vec![0.0; SIDE * SIDE];
    img[12 * SIDE + 12] = 1.0;
    let out = run(&sc, &img);
    let sigma = 3.2f32;
    let peak = 1.0 / (2.0 * std::f32::consts::PI * sigma * sigma);
    assert!((at(&out, 0, 3, 3) - peak).abs() < 1e-4 * peak * 10.0);
    // One cell (4 pixels) away: φ(4, 0) = peak·e^{−16/(2σ²)}.
    let next = peak * (-16.0 / (2.0 * sigma * sigma)).exp();
    assert!((at(&out, 0, 3, 4) - next).abs() < 1e-3 * peak);
    assert!((at(&out, 0, 4, 3) - next).abs() < 1e-3 * peak);
}

#[test]
fn constant_regions_have_no_wavelet_energy() {
    // Wavelets have zero mean: deep inside a constant region (far from the zero
    // padding) S0 is the constant and S1, S2 vanish.
    let sc = mnist_scattering();
    let out = run(&sc, &vec![0.5; SIDE * SIDE]);
    assert!((at(&out, 0, 3, 3) - 0.5).abs() < 1e-3);
    for c in 1..81 {
        assert!(at(&out, c, 3, 3).abs() < 0.02, "channel {c}");
    }
    // Near the border the zero padding is an edge, which the wavelets see.
    let edge: f32 = (1..17).map(|c| at(&out, c, 0, 0)).sum();
    assert!(edge > 0.1);
}

#[test]
fn outputs_are_finite_and_moduli_nonnegative() {
    let sc = mnist_scattering();
    let out = run(&sc, &pattern(9, 11));
    assert!(out.iter().all(|v| v.is_finite()));
    // S1 and S2 are averages of moduli; float rounding allows tiny negatives.
    assert!(out.slice(s![0, 49..]).iter().all(|&v| v > -1e-5));
    assert!(out.slice(s![0, 49..]).iter().any(|&v| v > 1e-3));
}

#[test]
fn shifts_by_the_output_stride_move_the_output_by_one_cell() {
    // Every step commutes with translations by multiples of 2^J = 4 on the padded
    // grid, so away from the borders the output shifts by exactly one cell.
    let sc = mnist_scattering();
    let a = run(&sc, &pattern(8, 8));
    let b = run(&sc, &pattern(12, 12));
    let mut worst = 0.0f32;
    let mut scale = 0.0f32;
    for c in 0..81 {
        for y in 0..6 {
            for x in 0..6 {
                worst = worst.max((at(&a, c, y, x) - at(&b, c, y + 1, x + 1)).abs());
                scale = scale.max(at(&a, c, y, x).abs());
            }
        }
    }
    assert!(worst < 1e-4 * scale.max(1e-3) + 1e-6, "{worst} vs {scale}");
}

#[test]
fn small_shifts_change_features_much_less_than_pixels() {
    // Stability to translations (the reason for the averaging): a 1-pixel shift of a
    // smooth object changes the pixels a lot and the scattering features little.
    let sc = mnist_scattering();
    let (p, q) = (blob(13.0, 13.0, 1.0), blob(13.0, 14.0, 1.0));
    let rel = |u: &[f32], v: &[f32]| {
        let d: f32 = u.iter().zip(v).map(|(a, b)| (a - b) * (a - b)).sum();
        let n: f32 = u.iter().map(|a| a * a).sum();
        (d / n).sqrt()
    };
    let (sp, sq) = (run(&sc, &p), run(&sc, &q));
    let pixels = rel(&p, &q);
    let features = rel(sp.as_slice().unwrap(), sq.as_slice().unwrap());
    assert!(pixels > 0.6, "{pixels}");
    eprintln!("relative change: pixels {pixels}, features {features}");
    assert!(features < 0.5 * pixels, "{features} vs {pixels}");
}

#[test]
fn batches_equal_single_samples_and_channels_are_independent() {
    let sc = Scattering::new(Shape::image(2, SIDE, SIDE), 2, 8).unwrap();
    let single = mnist_scattering();
    let (a, b) = (pattern(3, 4), blob(10.0, 17.0, 3.0));
    let both: Vec<f32> = a.iter().chain(&b).copied().collect();
    let swapped: Vec<f32> = b.iter().chain(&a).copied().collect();
    let x = Array2::from_shape_vec((2, both.len()), [both, swapped].concat()).unwrap();
    let out = sc.forward(x.view()).unwrap();
    let (ra, rb) = (run(&single, &a), run(&single, &b));
    let k = 81 * 49;
    assert_eq!(out.slice(s![0, ..k]), ra.row(0));
    assert_eq!(out.slice(s![0, k..]), rb.row(0));
    assert_eq!(out.slice(s![1, ..k]), rb.row(0));
    assert_eq!(out.slice(s![1, k..]), ra.row(0));
    assert!(matches!(
        sc.backward(x.view(), out.view()),
        Err(NnError::Architecture(_))
    ));
}

#[test]
fn group_norm_normalizes_each_group_and_its_gradient_matches_finite_differences() {
    let shape = Shape::image(6, 2, 2);
    let gn = GroupNorm::new(shape, 3).unwrap();
    let x = Array2::from_shape_fn((2, 24), |(i, j)| {
        ((i * 13 + j * 7) % 11) as f32 / 3.0 + j as f32 * 0.1
    });
    let y = gn.forward(x.view()).unwrap();
    for row in y.rows() {
        for g in row.as_slice().unwrap().chunks(8) {
            let mean: f32 = g.iter().sum::<f32>() / 8.0;
            let var: f32 = g.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / 8.0;
            assert!(mean.abs() < 1e-5 && (var - 1.0).abs() < 1e-3);
        }
    }
    // Loss Σ c·y with fixed weights c: compare backward with central differences (f64
    // would be cleaner; f32 with h = 1e-2 on O(1) inputs is accurate to ~1e-3).
    let c = Array2::from_shape_fn((2, 24), |(i, j)| ((i + 2 * j) % 5) as f32 - 2.0);
    let grad = gn.backward(x.view(), c.view()).unwrap();
    let loss = |x: &Array2<f32>| -> f64 {
        let y = gn.forward(x.view()).unwrap();
        y.iter().zip(&c).map(|(a, b)| f64::from(a * b)).sum()
    };
    let h = 1e-2f32;
    for i in 0..2 {
        for j in 0..24 {
            let (mut up, mut dn) = (x.clone(), x.clone());
            up[[i, j]] += h;
            dn[[i, j]] -= h;
            let fd = (loss(&up) - loss(&dn)) / (2.0 * f64::from(h));
            assert!(
                (fd - f64::from(grad[[i, j]])).abs() < 5e-3 * (1.0 + fd.abs()),
                "({i}, {j}): {fd} vs {}",
                grad[[i, j]]
            );
        }
    }
    assert!(GroupNorm::new(shape, 4).is_err());
    assert!(GroupNorm::new(shape, 0).is_err());
}

#[test]
fn scattering_must_precede_trainable_layers() {
    let spec = ModelSpec {
        input: Shape::image(1, 8, 8),
        layers: vec![
            LayerSpec::Conv2d {
                in_channels: 1,
                out_channels: 1,
                kernel: 1,
                stride: 1,
                padding: 0,
            },
            LayerSpec::Scattering {
                scales: 1,
                angles: 2,
            },
            LayerSpec::Flatten,
            LayerSpec::Linear {
                in_features: 48,
                out_features: 2,
            },
        ],
    };
    assert!(matches!(spec.shapes(), Err(NnError::Architecture(_))));
}

#[test]
fn split_front_then_join_is_the_same_model() {
    let model = Model::new(Preset::ScatternetLinear.spec(), 3).unwrap();
    let imgs: Vec<f32> = [pattern(5, 6), blob(14.0, 12.0, 4.0)].concat();
    let x = Array2::from_shape_vec((2, SIDE * SIDE), imgs).unwrap();
    let direct = model.forward(x.view()).unwrap();
    let (front, head) = model.clone().split_front().unwrap();
    assert_eq!(front.layers().len(), 3);
    assert_eq!(front.output_shape(), Shape::flat(3969));
    assert_eq!(head.num_params(), model.num_params());
    let data = Dataset {
        images: x.clone(),
        labels: vec![1, 7],
        shape: Shape::image(1, SIDE, SIDE),
        num_classes: 10,
    };
    let feats = front.apply_dataset(&data, 1).unwrap();
    assert_eq!(feats.shape, Shape::flat(3969));
    assert_eq!(feats.labels, data.labels);
    assert_eq!(head.forward(feats.images.view()).unwrap(), direct);
    let joined = Model::join(front, head).unwrap();
    assert_eq!(joined.spec(), model.spec());
    assert_eq!(joined.forward(x.view()).unwrap(), direct);
    // A model without a fixed front splits into an empty map and itself.
    let cnn = Model::new(Preset::SphinxMnistCnn.spec(), 1).unwrap();
    let (front, head) = cnn.split_front().unwrap();
    assert!(front.is_empty());
    assert_eq!(head.spec(), &Preset::SphinxMnistCnn.spec());
}

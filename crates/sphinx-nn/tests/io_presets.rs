//! Model presets, save/load round trips and malformed model files.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ndarray::Array2;
use sphinx_nn::NnError;
use sphinx_nn::io;
use sphinx_nn::layers::{LayerSpec, Shape};
use sphinx_nn::model::{Model, ModelSpec};
use sphinx_nn::presets::Preset;

#[test]
fn presets_build_with_documented_sizes() {
    // Parameter counts as in the table of the `presets` module docs.
    let expected = [
        ("sphinx-mnist-cnn", 33_542),
        ("sphinx-mnist-cnn-tanh", 33_542),
        ("sphinx-cifar10-cnn", 95_158),
        ("mlp-30", 23_860),
        ("mlp-100", 79_510),
        ("mlp-30-square", 23_860),
        ("mlp-100-square", 79_510),
        ("lenet5", 61_706),
        ("pool-mlp-30", 6_220),
        ("pool-mlp-40", 8_290),
        ("crop-pool-mlp-40", 4_450),
        ("scatternet-linear", 39_700),
    ];
    for (name, params) in expected {
        let preset: Preset = name.parse().unwrap();
        assert_eq!(preset.name(), name);
        let model = Model::new(preset.spec(), 0).unwrap();
        assert_eq!(model.num_params(), params, "{name}");
        assert_eq!(model.num_classes(), 10);
        let x = Array2::<f32>::zeros((2, model.input_dim()));
        assert_eq!(model.forward(x.view()).unwrap().dim(), (2, 10));
    }
    assert_eq!(Preset::ALL.len(), expected.len());
    assert!(matches!(
        "resnet".parse::<Preset>(),
        Err(NnError::UnknownPreset(_))
    ));
}

#[test]
fn sphinx_mnist_cnn_matches_the_paper() {
    let spec = Preset::SphinxMnistCnn.spec();
    let shapes = spec.shapes().unwrap();
    assert_eq!(spec.input, Shape::image(1, 28, 28));
    assert_eq!(
        shapes,
        vec![
            Shape::image(1, 28, 28),
            Shape::image(16, 24, 24),
            Shape::image(16, 24, 24),
            Shape::image(16, 12, 12),
            Shape::image(16, 8, 8),
            Shape::image(16, 8, 8),
            Shape::image(16, 4, 4),
            Shape::flat(256),
            Shape::flat(100),
            Shape::flat(100),
            Shape::flat(10),
        ]
    );
    assert!(matches!(
        spec.layers[0],
        LayerSpec::Conv2d {
            out_channels: 16,
            kernel: 5,
            stride: 1,
            padding: 0,
            ..
        }
    ));
}

#[test]
fn initialization_is_seeded_and_scaled() {
    let a = Model::new(Preset::SphinxMnistCnn.spec(), 42).unwrap();
    let b = Model::new(Preset::SphinxMnistCnn.spec(), 42).unwrap();
    let c = Model::new(Preset::SphinxMnistCnn.spec(), 43).unwrap();
    let w = |m: &Model, i: usize| m.param_layers().nth(i).unwrap().weight().clone();
    assert_eq!(w(&a, 0), w(&b, 0));
    assert_ne!(w(&a, 0), w(&c, 0));
    // Kaiming: the FC 256→100 layer (followed by ReLU) has std √(2/256) ≈ 0.088.
    let fc = w(&a, 2);
    let std = (fc.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>() / fc.len() as f64).sqrt();
    assert!((std - (2.0f64 / 256.0).sqrt()).abs() < 0.01, "{std}");
    // Biases start at zero.
    assert!(a.param_layers().all(|l| l.bias().iter().all(|&v| v == 0.0)));
}

#[test]
fn save_load_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    for preset in [
        Preset::SphinxMnistCnn,
        Preset::Mlp30Square,
        Preset::Lenet5,
        Preset::ScatternetLinear,
        Preset::CropPoolMlp40,
    ] {
        let model = Model::new(preset.spec(), 5).unwrap();
        let sub = dir.path().join(preset.name());
        io::save_dir(&model, &sub).unwrap();
        let back = io::load_dir(&sub).unwrap();
        assert_eq!(back.spec(), model.spec());
        for (p, q) in model.param_layers().zip(back.param_layers()) {
            assert_eq!(p.weight(), q.weight());
            assert_eq!(p.bias(), q.bias());
        }
        let x = Array2::from_shape_fn((3, model.input_dim()), |(i, j)| {
            ((i * 31 + j) % 17) as f32 / 17.0
        });
        assert_eq!(
            model.forward(x.view()).unwrap(),
            back.forward(x.view()).unwrap()
        );
    }
    let json = std::fs::read_to_string(dir.path().join("lenet5").join(io::ARCH_FILE)).unwrap();
    assert!(
        json.contains("\"format\": \"sphinx-nn-model\"") && json.contains("\"type\": \"conv2d\"")
    );
    let json =
        std::fs::read_to_string(dir.path().join("crop-pool-mlp-40").join(io::ARCH_FILE)).unwrap();
    assert!(json.contains("\"type\": \"crop\""), "{json}");
    assert!(json.contains("\"border\": 4"), "{json}");
}

fn expect_model_file_error(arch: &[u8], weights: &[u8], needle: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (a, w) = (dir.path().join("m.json"), dir.path().join("m.safetensors"));
    std::fs::write(&a, arch).unwrap();
    std::fs::write(&w, weights).unwrap();
    match io::load(&a, &w) {
        Err(NnError::ModelFile { reason, .. }) => {
            assert!(reason.contains(needle), "{reason} lacks {needle}")
        }
        other => panic!("expected a model-file error containing {needle}, got {other:?}"),
    }
}

#[test]
fn malformed_model_files_give_clear_errors() {
    let model = Model::new(Preset::Mlp30.spec(), 1).unwrap();
    let arch = io::arch_to_json(model.spec()).unwrap();
    let weights = io::weights_to_bytes(&model).unwrap();
    expect_model_file_error(b"{not json", &weights, "key must be a string");
    expect_model_file_error(
        arch.replace("sphinx-nn-model", "other").as_bytes(),
        &weights,
        "format `other`",
    );
    expect_model_file_error(
        arch.replace("\"version\": 1", "\"version\": 9").as_bytes(),
        &weights,
        "version 9",
    );
    expect_model_file_error(
        arch.replace("\"in_features\": 784", "\"in_features\": 785")
            .as_bytes(),
        &weights,
        "linear expects",
    );
    expect_model_file_error(arch.as_bytes(), &weights[..weights.len() - 10], "");
    expect_model_file_error(arch.as_bytes(), b"garbage", "");
    // Weights of another architecture: a tensor has the wrong shape.
    let other = io::weights_to_bytes(&Model::new(Preset::Mlp100.spec(), 1).unwrap()).unwrap();
    expect_model_file_error(arch.as_bytes(), &other, "shape");
    // Weights with an extra or a missing tensor.
    let spec = ModelSpec {
        input: Shape::flat(784),
        layers: vec![LayerSpec::Linear {
            in_features: 784,
            out_features: 10,
        }],
    };
    let small = io::weights_to_bytes(&Model::new(spec, 1).unwrap()).unwrap();
    expect_model_file_error(arch.as_bytes(), &small, "");
    // Non-finite values.
    let mut nan = model.clone();
    nan.layers_mut()[1].as_param_mut().unwrap().bias_mut()[0] = f32::NAN;
    expect_model_file_error(
        arch.as_bytes(),
        &io::weights_to_bytes(&nan).unwrap(),
        "non-finite",
    );
}

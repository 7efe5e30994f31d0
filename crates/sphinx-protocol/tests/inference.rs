//! Private inference: exactness against the plaintext model, one-time masks, stale
//! material and refresh, server snapshots, and the wire format of every message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::{tiny_cnn, tiny_mlp};
use ndarray::ArrayView2;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use sphinx_he::bfv::{BfvParameters, BfvParametersLiteral};
use sphinx_nn::data::bundled_mnist_sample;
use sphinx_nn::layers::Layer;
use sphinx_nn::model::{Model, ModelSpec};
use sphinx_protocol::ProtocolError;
use sphinx_protocol::inference::messages::{
    InferenceClientMessage, InferenceKind, InferenceServerMessage, decode_inference_setup,
};
use sphinx_protocol::inference::{
    FixedPoint, InferenceClient, InferenceServer, InferenceSession, biases_of,
    inference_parameters, model_with_weights,
};
use sphinx_protocol::messages::{ENVELOPE_LEN, MAGIC, PROTOCOL_VERSION};

/// INSECURE small ring (N = 1024) with the deployment's 37-bit p: fast tests.
fn toy_params() -> Arc<BfvParameters> {
    BfvParametersLiteral::insecure_for_tests(10, &[60, 60, 60], 37)
        .build()
        .unwrap()
}

fn session(spec: &ModelSpec, model: &Model) -> InferenceSession {
    session_with(spec, model, toy_params())
}

fn session_with(spec: &ModelSpec, model: &Model, params: Arc<BfvParameters>) -> InferenceSession {
    let (client, setup) = InferenceClient::new(
        params,
        spec.clone(),
        biases_of(model),
        FixedPoint::default(),
        ChaCha20Rng::seed_from_u64(1),
    )
    .unwrap();
    InferenceSession::new(client, setup, model, ChaCha20Rng::seed_from_u64(2)).unwrap()
}

fn argmax(v: &[f32]) -> usize {
    v.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, _)| i)
        .unwrap()
}

/// The same fixed-point arithmetic in the clear: quantize, exact integer layer, rescale.
fn fixed_point_forward(model: &Model, x: &[f32], fx: FixedPoint) -> Vec<f32> {
    let q = |v: f32, bits: u32| (f64::from(v) * f64::from(bits).exp2()).round() as i64;
    let (ab, wb) = (u32::from(fx.activation_bits), u32::from(fx.weight_bits));
    let mut a = x.to_vec();
    for layer in model.layers() {
        match layer {
            Layer::Linear(_) | Layer::Conv2d(_) => {
                let p = layer.as_param().unwrap();
                let plan = sphinx_protocol::plan::LayerPlan::of(layer).unwrap();
                let aq: Vec<i64> = a.iter().map(|&v| q(v, ab)).collect();
                let mut z = vec![0f32; plan.out_dim()];
                for o in 0..plan.units() {
                    for pos in 0..plan.positions() {
                        let mut acc = q(p.bias()[o], ab + wb);
                        for k in 0..plan.patch() {
                            if let Some(i) = plan.input_at(k, pos) {
                                acc += q(p.weight()[[o, k]], wb) * aq[i];
                            }
                        }
                        z[o * plan.positions() + pos] =
                            (acc as f64 * (-f64::from(ab + wb)).exp2()) as f32;
                    }
                }
                a = z;
            }
            _ => {
                let x = ArrayView2::from_shape((1, a.len()), &a).unwrap();
                a = layer.forward(x).unwrap().into_iter().collect();
            }
        }
    }
    a
}

fn check_exact(spec: ModelSpec, queries: usize) {
    let model = Model::new(spec.clone(), 11).unwrap();
    let test = bundled_mnist_sample().unwrap().test;
    let mut s = session(&spec, &model);
    s.preprocess(queries).unwrap();
    let plain = model
        .forward(test.images.slice(ndarray::s![..queries, ..]))
        .unwrap();
    for i in 0..queries {
        let x: Vec<f32> = test.images.row(i).to_vec();
        let private = s.query(&x).unwrap();
        assert_eq!(
            private,
            fixed_point_forward(&model, &x, FixedPoint::default()),
            "query {i}: the private path is the fixed-point model exactly"
        );
        let f: Vec<f32> = plain.row(i).to_vec();
        let err = private
            .iter()
            .zip(&f)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(err < 5e-3, "query {i}: logits off by {err}");
        let mut sorted = f.clone();
        sorted.sort_by(|a, b| b.total_cmp(a));
        if sorted[0] - sorted[1] > 2.0 * err {
            assert_eq!(argmax(&private), argmax(&f), "query {i}");
        }
    }
    assert_eq!(s.client().fresh_queries(), 0);
    assert_eq!(s.server().rounds(), 0, "a used-up round is dropped");
    assert!(matches!(
        s.query(test.images.row(0).as_slice().unwrap()),
        Err(ProtocolError::MasksExhausted)
    ));
}

#[test]
fn private_mlp_equals_the_fixed_point_model_and_tracks_the_float_one() {
    check_exact(tiny_mlp(), 12);
}

#[test]
fn private_cnn_equals_the_fixed_point_model_and_tracks_the_float_one() {
    check_exact(tiny_cnn(), 6);
}

#[test]
fn masks_are_used_once() {
    let spec = tiny_mlp();
    let model = Model::new(spec.clone(), 3).unwrap();
    let (mut client, setup) = InferenceClient::new(
        toy_params(),
        spec,
        biases_of(&model),
        FixedPoint::default(),
        ChaCha20Rng::seed_from_u64(5),
    )
    .unwrap();
    let InferenceClientMessage::Setup(setup) = setup else {
        panic!("setup")
    };
    let mut server = InferenceServer::new(&model, *setup, ChaCha20Rng::seed_from_u64(6)).unwrap();
    let mut up = vec![client.start_preprocessing(2).unwrap()];
    while !up.is_empty() || client.preprocessing() {
        for m in up.drain(..) {
            for r in server.handle(m).unwrap() {
                client.handle(r).unwrap();
            }
            while let Some(r) = server.poll().unwrap() {
                client.handle(r).unwrap();
            }
        }
        if let Some(m) = client.poll().unwrap() {
            up.push(m);
        }
    }
    let x = vec![0.5f32; 784];
    let first = client.start_query(&x).unwrap();
    let reply = server.handle(first.clone()).unwrap();
    // The server refuses the same (round, query, layer) twice.
    assert!(matches!(
        server.handle(first),
        Err(ProtocolError::MaskReused {
            query: 0,
            layer: 0,
            ..
        })
    ));
    // The client refuses a replayed reply once it moved on.
    let next = client.handle(reply[0].clone()).unwrap();
    assert_eq!(next.len(), 1);
    assert!(matches!(
        client.handle(reply[0].clone()),
        Err(ProtocolError::UnexpectedInference { .. })
    ));
    // The second query gets the next slot, never the first again.
    let InferenceClientMessage::OnlineInput(v) = client.start_query(&x).unwrap() else {
        panic!("online input")
    };
    assert_eq!(v.query, 1);
    assert!(matches!(
        client.start_query(&x),
        Err(ProtocolError::MasksExhausted)
    ));
}

#[test]
fn interrupted_preprocessing_is_completed_by_a_refresh() {
    let spec = tiny_mlp();
    let model = Model::new(spec.clone(), 13).unwrap();
    let (mut client, setup) = InferenceClient::new(
        toy_params(),
        spec,
        biases_of(&model),
        FixedPoint::default(),
        ChaCha20Rng::seed_from_u64(15),
    )
    .unwrap();
    let InferenceClientMessage::Setup(setup) = setup else {
        panic!("setup")
    };
    let mut server = InferenceServer::new(&model, *setup, ChaCha20Rng::seed_from_u64(16)).unwrap();
    let drive = |client: &mut InferenceClient, server: &mut InferenceServer, first, stop_after| {
        server.handle(first).unwrap();
        let mut sent = 0;
        while client.preprocessing() && sent < stop_after {
            if let Some(m) = client.poll().unwrap() {
                server.handle(m).unwrap();
                sent += 1;
            }
            while let Some(r) = server.poll().unwrap() {
                client.handle(r).unwrap();
            }
        }
    };
    for r in server
        .handle(InferenceClientMessage::StatusRequest)
        .unwrap()
    {
        client.handle(r).unwrap();
    }
    // Layer 0 (49 inputs: 2 chunks) completes, then the link drops.
    let start = client.start_preprocessing(2).unwrap();
    drive(&mut client, &mut server, start, 2);
    assert!(client.preprocessing());
    client.cancel_preprocessing();
    server.cancel_preprocessing();
    assert_eq!(client.fresh_queries(), 0);
    assert!(matches!(
        client.start_query(&[0.5; 784]),
        Err(ProtocolError::MasksExhausted)
    ));
    let refresh = client.start_refresh().unwrap().unwrap();
    let InferenceClientMessage::PreprocessStart(ref s) = refresh else {
        panic!("start")
    };
    assert_eq!(s.layers, vec![1], "only the missing layer");
    drive(&mut client, &mut server, refresh, usize::MAX);
    assert_eq!(client.fresh_queries(), 2);
}

fn perturb_layer(model: &mut Model, param_layer: usize) {
    let idx = model.param_layer_indices()[param_layer];
    let p = model.layers_mut()[idx].as_param_mut().unwrap();
    p.weight_mut().mapv_inplace(|w| w * 0.5 + 0.01);
}

#[test]
fn stale_material_is_detected_and_refresh_redoes_only_changed_layers() {
    let spec = tiny_mlp();
    let mut model = Model::new(spec.clone(), 4).unwrap();
    let mut s = session(&spec, &model);
    s.preprocess(3).unwrap();
    let x: Vec<f32> = bundled_mnist_sample().unwrap().test.images.row(1).to_vec();
    s.query(&x).unwrap();
    perturb_layer(&mut model, 1);
    assert_eq!(s.server_mut().update_model(&model).unwrap(), vec![1]);
    assert_eq!(s.server().model_version(), 2);
    assert_eq!(s.server().layer_versions(), vec![1, 2]);
    match s.query(&x) {
        Err(ProtocolError::StaleModel {
            layers,
            model_version,
            ..
        }) => {
            assert_eq!(layers, vec![1]);
            assert_eq!(model_version, 2);
        }
        other => panic!("expected a stale error, got {other:?}"),
    }
    let inputs_before = s.traffic().kind(InferenceKind::PreprocessInput);
    let outputs_before = s.traffic().kind(InferenceKind::PreprocessOutput);
    assert!(s.refresh().unwrap());
    let up = s.traffic().kind(InferenceKind::PreprocessInput).bytes - inputs_before.bytes;
    let down = s.traffic().kind(InferenceKind::PreprocessOutput).bytes - outputs_before.bytes;
    // Layer 1 only: 16 inputs up, 10 outputs down (layer 0 would be 49 and 16).
    let ct_up = inputs_before.bytes / 65; // 49 + 16 seeded ciphertexts in preprocessing
    assert!(
        up < ct_up * 17 && up > ct_up * 15,
        "refresh sent {up} bytes"
    );
    let ct_down = outputs_before.bytes / 26;
    assert!(
        down < ct_down * 11 && down > ct_down * 9,
        "refresh got {down} bytes"
    );
    assert_eq!(s.client().model_version(), Some(2));
    // Slot 1 was burned by the refused query; slot 2 serves the new model.
    let got = s.query(&x).unwrap();
    assert_eq!(got, fixed_point_forward(&model, &x, FixedPoint::default()));
    assert!(!s.refresh().unwrap(), "nothing left to refresh");
}

#[test]
fn server_snapshot_restores_rounds_and_detects_changed_weights() {
    let spec = tiny_mlp();
    let mut model = Model::new(spec.clone(), 8).unwrap();
    // The snapshot carries the setup, which (like the wire) accepts secure sets only.
    let params = inference_parameters().build().unwrap();
    let mut s = session_with(&spec, &model, params);
    s.preprocess(4).unwrap();
    let x = vec![0.25f32; 784];
    s.query(&x).unwrap();
    let bytes = s.server().snapshot().unwrap();
    assert!(
        InferenceServer::restore(
            &bytes,
            bytes.len() - 1,
            &model,
            ChaCha20Rng::seed_from_u64(9)
        )
        .is_err()
    );
    for cut in [0, 5, bytes.len() / 2, bytes.len() - 1] {
        assert!(
            InferenceServer::restore(
                &bytes[..cut],
                usize::MAX,
                &model,
                ChaCha20Rng::seed_from_u64(9)
            )
            .is_err()
        );
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(
        InferenceServer::restore(&longer, usize::MAX, &model, ChaCha20Rng::seed_from_u64(9))
            .is_err()
    );
    let restored =
        InferenceServer::restore(&bytes, bytes.len(), &model, ChaCha20Rng::seed_from_u64(9))
            .unwrap();
    assert_eq!(restored.snapshot().unwrap(), bytes);
    *s.server_mut() = restored;
    assert_eq!(
        s.query(&x).unwrap(),
        fixed_point_forward(&model, &x, FixedPoint::default())
    );
    // Restoring against changed weights bumps their version: material reads stale.
    perturb_layer(&mut model, 0);
    let restored =
        InferenceServer::restore(&bytes, bytes.len(), &model, ChaCha20Rng::seed_from_u64(9))
            .unwrap();
    assert_eq!(restored.layer_versions(), vec![2, 1]);
    *s.server_mut() = restored;
    assert!(matches!(s.query(&x), Err(ProtocolError::StaleModel { .. })));
    assert!(s.refresh().unwrap());
    assert_eq!(
        s.query(&x).unwrap(),
        fixed_point_forward(&model, &x, FixedPoint::default())
    );
}

#[test]
fn inference_serves_the_model_private_training_produced() {
    let spec = tiny_mlp();
    let (train, test) = common::data(64, 1);
    let cfg = common::dp_config(train.len(), 16.0, 1.0, 1.0);
    let (mut training, _) = common::pair(&spec, &train, cfg, 0.1, 3, 100.0);
    training.run_step().unwrap();
    // The server has the plaintext weights; the client decrypts the biases of the export.
    let server_model = model_with_weights(&spec, training.server().weights()).unwrap();
    let exported = training.export_model().unwrap();
    let (client, setup) = InferenceClient::new(
        toy_params(),
        spec.clone(),
        biases_of(&exported),
        FixedPoint::default(),
        ChaCha20Rng::seed_from_u64(21),
    )
    .unwrap();
    let mut s = InferenceSession::new(client, setup, &server_model, ChaCha20Rng::seed_from_u64(22))
        .unwrap();
    s.preprocess(2).unwrap();
    let x: Vec<f32> = test.images.row(0).to_vec();
    let fx = FixedPoint::default();
    assert_eq!(s.query(&x).unwrap(), fixed_point_forward(&exported, &x, fx));
    // Another training step: new W (the masks go stale) and new b (installed locally).
    training.run_step().unwrap();
    let new_model = model_with_weights(&spec, training.server().weights()).unwrap();
    assert_eq!(s.server_mut().update_model(&new_model).unwrap(), vec![0, 1]);
    let exported = training.export_model().unwrap();
    s.client_mut().set_biases(biases_of(&exported)).unwrap();
    assert!(s.refresh().unwrap());
    assert_eq!(s.query(&x).unwrap(), fixed_point_forward(&exported, &x, fx));
}

/// Every truncation, a flipped magic / version / reserved byte, a trailing byte and a
/// limit below the body size are refused.
fn check_rejections(bytes: &[u8], decode: impl Fn(&[u8], usize) -> sphinx_protocol::Result<()>) {
    assert!(decode(bytes, usize::MAX).is_ok());
    let step = (bytes.len() / 61).max(1);
    for cut in (0..bytes.len()).step_by(step) {
        assert!(
            decode(&bytes[..cut], usize::MAX).is_err(),
            "truncated at {cut}"
        );
    }
    for at in [0, 4, 7] {
        let mut b = bytes.to_vec();
        b[at] ^= 0x40;
        assert!(decode(&b, usize::MAX).is_err(), "byte {at} flipped");
    }
    let mut longer = bytes.to_vec();
    longer.push(0);
    assert!(decode(&longer, usize::MAX).is_err(), "trailing byte");
    if bytes.len() > ENVELOPE_LEN {
        assert!(
            decode(bytes, bytes.len() - ENVELOPE_LEN - 1).is_err(),
            "over the limit"
        );
    }
}

#[test]
fn every_inference_message_round_trips_with_its_exact_size() {
    let spec = tiny_mlp();
    let model = Model::new(spec.clone(), 2).unwrap();
    let params = toy_params();
    let (mut client, setup) = InferenceClient::new(
        params.clone(),
        spec,
        biases_of(&model),
        FixedPoint::default(),
        ChaCha20Rng::seed_from_u64(5),
    )
    .unwrap();
    let mut ups: Vec<InferenceClientMessage> = vec![setup.clone()];
    let InferenceClientMessage::Setup(s) = setup else {
        panic!()
    };
    let mut server = InferenceServer::new(&model, *s, ChaCha20Rng::seed_from_u64(6)).unwrap();
    let mut downs: Vec<InferenceServerMessage> = server
        .handle(InferenceClientMessage::StatusRequest)
        .unwrap();
    ups.push(InferenceClientMessage::StatusRequest);
    let start = client.start_preprocessing(2).unwrap();
    ups.push(start.clone());
    server.handle(start).unwrap();
    while client.preprocessing() {
        if let Some(m) = client.poll().unwrap() {
            ups.push(m.clone());
            server.handle(m).unwrap();
        }
        while let Some(r) = server.poll().unwrap() {
            downs.push(r.clone());
            client.handle(r).unwrap();
        }
    }
    let mut q = client.start_query(&[0.3; 784]).unwrap();
    loop {
        ups.push(q.clone());
        let r = server.handle(q).unwrap().remove(0);
        downs.push(r.clone());
        match client.handle(r).unwrap().pop() {
            Some(next) => q = next,
            None => break,
        }
    }
    // A stale refusal, after new weights.
    let mut changed = model.clone();
    perturb_layer(&mut changed, 0);
    server.update_model(&changed).unwrap();
    let q = client.start_query(&[0.3; 784]).unwrap();
    let stale = server.handle(q).unwrap().remove(0);
    assert_eq!(stale.kind(), InferenceKind::Stale);
    downs.push(stale);

    let mut kinds = std::collections::BTreeSet::new();
    for m in &ups {
        let bytes = m.encode(&params).unwrap();
        assert_eq!(bytes.len(), m.wire_len(&params).unwrap(), "{:?}", m.kind());
        assert_eq!(&bytes[..4], &MAGIC);
        assert_eq!(u16::from_le_bytes([bytes[4], bytes[5]]), PROTOCOL_VERSION);
        assert_eq!(bytes[6], m.kind() as u8);
        kinds.insert(m.kind());
        if let InferenceClientMessage::Setup(_) = m {
            // Toy parameters never pass the wire (the decoder knows secure levels only).
            assert!(decode_inference_setup(&bytes, usize::MAX).is_err());
            continue;
        }
        let back = InferenceClientMessage::decode(&params, &bytes, usize::MAX).unwrap();
        assert_eq!(back.encode(&params).unwrap(), bytes);
        check_rejections(&bytes, |b, l| {
            InferenceClientMessage::decode(&params, b, l).map(|_| ())
        });
        // A client message is not a server message.
        assert!(InferenceServerMessage::decode(&params, &bytes, usize::MAX).is_err());
    }
    for m in &downs {
        let bytes = m.encode(&params).unwrap();
        assert_eq!(bytes.len(), m.wire_len(&params).unwrap(), "{:?}", m.kind());
        kinds.insert(m.kind());
        let back = InferenceServerMessage::decode(&params, &bytes, usize::MAX).unwrap();
        assert_eq!(back.encode(&params).unwrap(), bytes);
        check_rejections(&bytes, |b, l| {
            InferenceServerMessage::decode(&params, b, l).map(|_| ())
        });
    }
    assert_eq!(kinds.len(), InferenceKind::ALL.len(), "{kinds:?}");
    // The setup of the deployment set round-trips.
    let real = inference_parameters().build().unwrap();
    let (_, setup) = InferenceClient::new(
        real.clone(),
        tiny_mlp(),
        biases_of(&model),
        FixedPoint::default(),
        ChaCha20Rng::seed_from_u64(7),
    )
    .unwrap();
    let bytes = setup.encode(&real).unwrap();
    assert_eq!(bytes.len(), setup.wire_len(&real).unwrap());
    let back = decode_inference_setup(&bytes, usize::MAX).unwrap();
    assert_eq!(back.params, inference_parameters());
    let again = InferenceClientMessage::Setup(Box::new(back))
        .encode(&real)
        .unwrap();
    assert_eq!(again, bytes);
    check_rejections(&bytes, |b, l| decode_inference_setup(b, l).map(|_| ()));
    // Online inputs of another session's p or a value ≥ p are refused.
    let online = ups
        .iter()
        .find(|m| m.kind() == InferenceKind::OnlineInput)
        .unwrap()
        .encode(&params)
        .unwrap();
    let mut bad = online.clone();
    let n = bad.len();
    bad[n - 1] = 0xff;
    bad[n - 2] = 0xff;
    assert!(InferenceClientMessage::decode(&params, &bad, usize::MAX).is_err());
    // Online bytes are bit-packed: 37 bits per value.
    let InferenceClientMessage::OnlineInput(v) =
        InferenceClientMessage::decode(&params, &online, usize::MAX).unwrap()
    else {
        panic!()
    };
    assert_eq!(
        online.len(),
        ENVELOPE_LEN + 18 + (v.values.len() * 37).div_ceil(8)
    );
}

#[test]
fn setups_with_insecure_or_foreign_material_are_refused() {
    let spec = tiny_mlp();
    let model = Model::new(spec.clone(), 2).unwrap();
    let params = inference_parameters().build().unwrap();
    let (_, setup) = InferenceClient::new(
        params.clone(),
        spec.clone(),
        biases_of(&model),
        FixedPoint::default(),
        ChaCha20Rng::seed_from_u64(5),
    )
    .unwrap();
    assert!(decode_inference_setup(&setup.encode(&params).unwrap(), usize::MAX).is_ok());
    let mut bytes = setup.encode(&params).unwrap();
    // The t-bits byte: a 60-bit p leaves no flooding budget in a 210-bit Q.
    let t_at = ENVELOPE_LEN + 2 + 4;
    bytes[t_at] = 60;
    assert!(decode_inference_setup(&bytes, usize::MAX).is_err());
    // Fixed point beyond p.
    let InferenceClientMessage::Setup(mut s) = setup else {
        panic!()
    };
    s.fixed = FixedPoint {
        activation_bits: 20,
        weight_bits: 20,
    };
    assert!(InferenceServer::new(&model, *s, ChaCha20Rng::seed_from_u64(1)).is_err());
    // Biases that do not match the model.
    assert!(
        InferenceClient::new(
            toy_params(),
            spec,
            vec![vec![0.0; 3]],
            FixedPoint::default(),
            ChaCha20Rng::seed_from_u64(5)
        )
        .is_err()
    );
}

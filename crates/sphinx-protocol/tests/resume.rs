//! Resuming after an interruption: the server's state between steps survives a
//! snapshot/restore round trip, and a rewound client redoes a step bit for bit.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::VecDeque;
use std::sync::Arc;

use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use sphinx_dp::DpSgdAggregator;
use sphinx_he::Parameters;
use sphinx_protocol::client::{Client, ClientConfig};
use sphinx_protocol::messages::{ClientMessage, Setup};
use sphinx_protocol::params::build_training_parameters;
use sphinx_protocol::server::Server;

fn new_client(spec: &sphinx_nn::model::ModelSpec) -> (Client, Setup, Arc<Parameters>) {
    let (train, _) = common::data(200, 0);
    let params = build_training_parameters().unwrap();
    let (client, setup) = Client::new(
        params.clone(),
        spec.clone(),
        train,
        DpSgdAggregator::seeded(
            common::weights_of(spec),
            common::dp_config(200, 8.0, 1.0, 1.0),
            5,
        )
        .unwrap(),
        ClientConfig {
            learning_rate: 0.1,
            init_seed: common::INIT_SEED,
            bias_init: common::BIAS_INIT,
            // Averaging on, so the snapshots carry W̄ too.
            weight_average: 0.5,
            budget: common::budget(50.0),
        },
        ChaCha20Rng::seed_from_u64(6),
    )
    .unwrap();
    let ClientMessage::Setup(setup) = setup else {
        panic!("not a setup")
    };
    (client, *setup, params)
}

/// Runs one step; returns the encoded client messages in order.
fn step(server: &mut Server, client: &mut Client, params: &Parameters) -> Vec<Vec<u8>> {
    let mut sent = Vec::new();
    let mut queue = VecDeque::from([client.start_step().unwrap()]);
    while let Some(msg) = queue.pop_front() {
        sent.push(msg.encode(params).unwrap());
        for reply in server.handle(msg).unwrap() {
            queue.extend(client.handle(reply).unwrap());
        }
        while let Some(reply) = server.poll().unwrap() {
            queue.extend(client.handle(reply).unwrap());
        }
    }
    sent
}

#[test]
fn a_rewound_step_is_redone_bit_for_bit() {
    let spec = common::tiny_mlp();
    let (mut client, setup, params) = new_client(&spec);
    let mut rng = ChaCha20Rng::seed_from_u64(9);
    let mut server = Server::new(setup.clone(), &mut rng).unwrap();
    step(&mut server, &mut client, &params);
    let committed = server.snapshot().unwrap();

    let mark = client.mark();
    assert_eq!(mark.step(), 1);
    let first = step(&mut server, &mut client, &params);
    let after_first = server.snapshot().unwrap();
    let epsilon_once = client.ledger().spent().unwrap().epsilon.get();

    // The server "crashed" before committing: it comes back at the committed state, the
    // client rewinds and redoes the step.
    let mut restored = Server::restore(setup, &committed, &mut rng).unwrap();
    assert_eq!(restored.step(), 1);
    client.rewind(mark);
    assert_eq!(client.step(), 1);
    let redo = step(&mut restored, &mut client, &params);
    // Same batch, same encryption seeds, same noise: every message, the noisy gradient
    // included, is identical, and so is the server's state afterwards.
    assert_eq!(first, redo);
    assert_eq!(restored.snapshot().unwrap(), after_first);
    // The ledger over-counts the repeated release rather than forgetting it.
    assert!(client.ledger().spent().unwrap().epsilon.get() > epsilon_once);
}

#[test]
fn snapshots_round_trip_and_refuse_corruption() {
    let spec = common::tiny_mlp();
    let (mut client, setup, params) = new_client(&spec);
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let mut server = Server::new(setup.clone(), &mut rng).unwrap();
    step(&mut server, &mut client, &params);
    let snap = server.snapshot().unwrap();
    let back = Server::restore(setup.clone(), &snap, &mut rng).unwrap();
    assert_eq!(back.step(), 1);
    assert_eq!(back.weights(), server.weights());
    assert_eq!(back.model_weights(), server.model_weights());
    assert_ne!(server.model_weights(), server.weights(), "W̄ is kept apart");
    assert_eq!(back.snapshot().unwrap(), snap);

    // Only between steps.
    let first = client.start_step().unwrap();
    server.handle(first).unwrap();
    assert!(!server.is_between_steps());
    assert!(server.snapshot().is_err());

    let restore =
        |bytes: &[u8]| Server::restore(setup.clone(), bytes, &mut ChaCha20Rng::seed_from_u64(1));
    assert!(restore(&snap[..snap.len() - 1]).is_err(), "truncated");
    let mut long = snap.clone();
    long.push(0);
    assert!(restore(&long).is_err(), "trailing byte");
    for (pos, value) in [(0, b'X'), (4, 9)] {
        let mut bad = snap.clone();
        bad[pos] = value;
        assert!(restore(&bad).is_err(), "magic / version at {pos}");
    }
    // Header 4 + 2 + 8 + 4 = 18, rows and columns 4 + 4: the first weight at 26.
    let mut nan = snap.clone();
    nan[26..30].copy_from_slice(&f32::NAN.to_le_bytes());
    assert!(restore(&nan).is_err(), "non-finite weight");
    let mut shape = snap.clone();
    shape[18] ^= 1;
    assert!(restore(&shape).is_err(), "weight shape");
    // A state of another architecture.
    let (_, other, _) = new_client(&common::tiny_cnn());
    assert!(Server::restore(other, &snap, &mut rng).is_err());
}

/// A state of format version 1 or 2 (one bias ciphertext per unit; version 1 without `W̄`),
/// written with known biases under the setup's public key.
fn old_state(server: &Server, setup: &Setup, version: u16, biases: &[Vec<f64>]) -> Vec<u8> {
    use sphinx_he::serialization::Serializable;
    let params = build_training_parameters().unwrap();
    let encoder = sphinx_he::Encoder::new(&params);
    let mut rng = ChaCha20Rng::seed_from_u64(4);
    let mut out = b"SPXS".to_vec();
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&server.step().to_le_bytes());
    out.extend_from_slice(&(server.weights().len() as u32).to_le_bytes());
    for (w, b) in server.weights().iter().zip(biases) {
        for d in [w.nrows(), w.ncols()] {
            out.extend_from_slice(&(d as u32).to_le_bytes());
        }
        out.extend(w.iter().flat_map(|v| v.to_le_bytes()));
        out.extend_from_slice(&(b.len() as u32).to_le_bytes());
        for &v in b {
            let pt = encoder
                .encode(&vec![v; params.slots()], params.scale(), 0)
                .unwrap();
            let bytes = setup
                .public_key
                .encrypt(&pt, &mut rng)
                .unwrap()
                .to_bytes(&params)
                .unwrap();
            out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
            out.extend_from_slice(&bytes);
        }
    }
    if version >= 2 {
        for a in server.model_weights() {
            out.extend(a.iter().flat_map(|v| v.to_le_bytes()));
        }
    }
    out
}

#[test]
fn states_of_earlier_versions_restore_with_their_biases_packed() {
    use sphinx_nn::layers::LayerSpec;
    // 15 hidden units: the last bias ciphertext of that layer holds one bias.
    let mut spec = common::tiny_mlp();
    for layer in &mut spec.layers {
        if let LayerSpec::Linear {
            in_features,
            out_features,
        } = layer
        {
            for d in [in_features, out_features] {
                if *d == 16 {
                    *d = 15;
                }
            }
        }
    }
    let (mut client, setup, params) = new_client(&spec);
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let mut server = Server::new(setup.clone(), &mut rng).unwrap();
    step(&mut server, &mut client, &params);
    // Distinct values per unit.
    let biases: Vec<Vec<f64>> = server
        .weights()
        .iter()
        .enumerate()
        .map(|(l, w)| {
            (0..w.nrows())
                .map(|o| 0.25 * l as f64 - 0.01 * o as f64)
                .collect()
        })
        .collect();
    assert!(biases.iter().any(|b| b.len() % 2 == 1));
    for version in [1u16, 2] {
        let bytes = old_state(&server, &setup, version, &biases);
        let mut old = Server::restore(setup.clone(), &bytes, &mut rng).unwrap();
        assert_eq!(old.step(), server.step());
        assert_eq!(old.weights(), server.weights());
        // Version 1 has no W̄: the average restarts at W.
        let averaged = if version == 1 {
            server.weights()
        } else {
            server.model_weights()
        };
        assert_eq!(old.model_weights(), averaged);
        let export = match old.handle(ClientMessage::ModelRequest).unwrap().pop() {
            Some(sphinx_protocol::messages::ServerMessage::ModelExport(e)) => e,
            other => panic!("{other:?}"),
        };
        for (b, want) in export.biases.iter().zip(&biases) {
            assert_eq!(b.len(), want.len().div_ceil(2), "packed two per ciphertext");
        }
        let model = client.assemble_model(&export).unwrap();
        for (layer, want) in model.param_layers().zip(&biases) {
            for (&got, &want) in layer.bias().iter().zip(want) {
                assert!(
                    (f64::from(got) - want).abs() < 1e-4,
                    "version {version}: {got} vs {want}"
                );
            }
        }
        // Saved again, the state is of the current version and round-trips.
        let again = old.snapshot().unwrap();
        assert_eq!(
            u16::from_le_bytes([again[4], again[5]]),
            sphinx_protocol::server::STATE_VERSION
        );
        let back = Server::restore(setup.clone(), &again, &mut rng).unwrap();
        assert_eq!(back.snapshot().unwrap(), again);
    }
}

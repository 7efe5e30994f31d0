//! Roles and messages: wire sizes, versions, the message sequence of a step, the server's
//! lack of secret material, and refusal at budget exhaustion.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::VecDeque;

use common::{data, dp_config, pair, tiny_mlp};
use sphinx_dp::{Delta, NoiseMultiplier, SampleRate, epsilon_for};
use sphinx_protocol::ProtocolError;
use sphinx_protocol::messages::{
    ClientMessage, Direction, ENVELOPE_LEN, MAGIC, MessageKind, OLDEST_SETUP_VERSION,
    PROTOCOL_VERSION, ServerMessage, decode_setup,
};
use sphinx_protocol::wire::{Request, Response};

/// Every truncation, a flipped magic, version or reserved byte, a trailing byte and a
/// limit below the body size are refused.
fn check_rejections(bytes: &[u8], decode: impl Fn(&[u8], usize) -> sphinx_protocol::Result<()>) {
    let big = usize::MAX;
    assert!(decode(bytes, big).is_ok());
    let step = (bytes.len() / 97).max(1);
    for cut in (0..bytes.len()).step_by(step) {
        assert!(decode(&bytes[..cut], big).is_err(), "truncated at {cut}");
    }
    for at in [0, 4, 7] {
        let mut b = bytes.to_vec();
        b[at] ^= 0x40;
        assert!(decode(&b, big).is_err(), "byte {at} flipped");
    }
    let mut longer = bytes.to_vec();
    longer.push(0);
    assert!(decode(&longer, big).is_err(), "trailing byte");
    assert!(
        decode(bytes, bytes.len() - ENVELOPE_LEN - 1).is_err(),
        "over the limit"
    );
}

/// Modules the server role is built from.
const SERVER_SIDE: [(&str, &str); 9] = [
    ("server.rs", include_str!("../src/server.rs")),
    ("server/state.rs", include_str!("../src/server/state.rs")),
    ("wire.rs", include_str!("../src/wire.rs")),
    ("messages.rs", include_str!("../src/messages.rs")),
    ("plan.rs", include_str!("../src/plan.rs")),
    ("accounting.rs", include_str!("../src/accounting.rs")),
    ("error.rs", include_str!("../src/error.rs")),
    (
        "inference/server.rs",
        include_str!("../src/inference/server.rs"),
    ),
    (
        "inference/messages.rs",
        include_str!("../src/inference/messages.rs"),
    ),
];

#[test]
fn server_side_cannot_name_a_secret_key() {
    for (name, src) in SERVER_SIDE {
        for forbidden in [
            "SecretKey",
            "secret_key",
            "expose_secret",
            "crate::client",
            "sphinx_he::*",
            "rlwe::*",
        ] {
            assert!(!src.contains(forbidden), "{name} mentions {forbidden}");
        }
    }
}

fn check_envelope(bytes: &[u8], kind: MessageKind) {
    assert_eq!(&bytes[..4], &MAGIC);
    assert_eq!(u16::from_le_bytes([bytes[4], bytes[5]]), PROTOCOL_VERSION);
    assert_eq!(bytes[6], kind as u8);
    let body = u64::from_le_bytes(bytes[8..16].try_into().unwrap());
    assert_eq!(body as usize + ENVELOPE_LEN, bytes.len());
}

#[test]
fn every_message_is_versioned_and_its_size_exact() {
    let (train, _) = data(64, 0);
    let spec = tiny_mlp();
    let params = sphinx_protocol::params::build_training_parameters().unwrap();
    let cfg = dp_config(train.len(), 16.0, 1.0, 1.0);
    // The session drives a step; here every message is encoded and checked by hand too.
    let (mut session, _) = pair(&spec, &train, cfg, 0.1, 3, 100.0);
    session.run_step().unwrap();
    let t = session.traffic().clone();
    let count = |k| t.kind(k).messages;
    assert_eq!(count(MessageKind::Setup), 1);
    assert_eq!(count(MessageKind::ForwardInput), 2);
    assert_eq!(count(MessageKind::ForwardOutput), 2);
    assert_eq!(count(MessageKind::BackwardDelta), 2);
    assert_eq!(count(MessageKind::BackwardOutput), 1);
    // Expected batch 16 gives slot blocks of 48, so R = 2048 / 48 = 42 replicas: one
    // gradient ciphertext per column of W (49 and 16), one chunk per layer.
    assert_eq!(count(MessageKind::WeightGradients), 2);
    assert_eq!(count(MessageKind::NoisyGradient), 1);
    let up: u64 = MessageKind::ALL
        .iter()
        .filter(|k| k.direction() == Direction::ClientToServer)
        .map(|&k| t.kind(k).bytes)
        .sum();
    assert_eq!(up, t.bytes(Direction::ClientToServer));
    assert!(t.bytes(Direction::ServerToClient) > t.kind(MessageKind::ForwardOutput).bytes);

    // By hand: a second client/server pair, each message encoded.
    let (client, setup) = {
        use rand::SeedableRng;
        sphinx_protocol::client::Client::new(
            params.clone(),
            spec.clone(),
            train.clone(),
            sphinx_dp::DpSgdAggregator::seeded(944, cfg, 5).unwrap(),
            sphinx_protocol::client::ClientConfig {
                learning_rate: 0.1,
                init_seed: 1,
                bias_init: 0.01,
                weight_average: 0.0,
                budget: common::budget(100.0),
            },
            rand_chacha::ChaCha20Rng::seed_from_u64(6),
        )
        .unwrap()
    };
    let mut client = client;
    let bytes = setup.encode(&params).unwrap();
    assert_eq!(bytes.len(), setup.wire_len(&params).unwrap());
    check_envelope(&bytes, MessageKind::Setup);
    let decoded = decode_setup(&bytes, bytes.len()).unwrap();
    let again = ClientMessage::Setup(Box::new(decoded))
        .encode(&params)
        .unwrap();
    assert_eq!(again, bytes, "setup round trip");
    check_rejections(&bytes, |b, limit| decode_setup(b, limit).map(|_| ()));
    // A server keeps the Setup of every stored model: one written under an older version
    // of the same layout still decodes; a newer one does not.
    let with_version = |b: &[u8], v: u16| {
        let mut b = b.to_vec();
        b[4..6].copy_from_slice(&v.to_le_bytes());
        b
    };
    assert!(decode_setup(&with_version(&bytes, OLDEST_SETUP_VERSION), bytes.len()).is_ok());
    assert!(decode_setup(&with_version(&bytes, PROTOCOL_VERSION + 1), bytes.len()).is_err());
    let ClientMessage::Setup(s) = setup else {
        panic!("setup first")
    };
    let mut server = {
        use rand::SeedableRng;
        sphinx_protocol::server::Server::new(*s, &mut rand_chacha::ChaCha20Rng::seed_from_u64(7))
            .unwrap()
    };
    let mut queue = VecDeque::from([client.start_step().unwrap()]);
    let mut seen = std::collections::BTreeSet::new();
    let check_server = |m: &ServerMessage| {
        let bytes = m.encode(&params).unwrap();
        assert_eq!(bytes.len(), m.wire_len(&params).unwrap());
        check_envelope(&bytes, m.kind());
        let back = ServerMessage::decode(&params, &bytes, bytes.len()).unwrap();
        assert_eq!(back.encode(&params).unwrap(), bytes, "round trip");
        // Decoding from shared bytes (results slice the frame) gives the same message and
        // refuses the same damage.
        let shared = bytes::Bytes::from(bytes.clone());
        let decode_shared = |b: &[u8], limit: usize| {
            ServerMessage::decode_shared(&params, &bytes::Bytes::copy_from_slice(b), limit)
        };
        let back_shared = ServerMessage::decode_shared(&params, &shared, bytes.len()).unwrap();
        assert_eq!(back_shared.encode(&params).unwrap(), bytes);
        assert!(decode_shared(&bytes[..bytes.len() - 1], bytes.len()).is_err());
        assert!(decode_shared(&[&bytes[..], &[0]].concat(), bytes.len() + 1).is_err());
        assert!(decode_shared(&bytes, bytes.len() - ENVELOPE_LEN - 1).is_err());
        // The frame built in place is the frame of the encoded message.
        let model = sphinx_protocol::wire::ModelId(9);
        let in_place = Response::training_frame(5, model, m, &params).unwrap();
        let message = bytes.clone();
        assert_eq!(
            in_place,
            Response::Training { model, message }.to_frame(5).unwrap()
        );
        // Step messages changed meaning in version 3 (results in pairs): a peer of
        // any other version is refused, not misread.
        for v in [PROTOCOL_VERSION - 1, PROTOCOL_VERSION + 1] {
            let mut old = bytes.clone();
            old[4..6].copy_from_slice(&v.to_le_bytes());
            assert!(ServerMessage::decode(&params, &old, old.len()).is_err());
        }
        // Level-0 results are compact as the server makes them: the decoded message is
        // exactly the one the in-process driver hands its client.
        match (m, &back) {
            (ServerMessage::ForwardOutput(a), ServerMessage::ForwardOutput(b))
            | (ServerMessage::BackwardOutput(a), ServerMessage::BackwardOutput(b)) => {
                assert_eq!(a, b);
            }
            (ServerMessage::WeightGradients(a), ServerMessage::WeightGradients(b)) => {
                assert_eq!(a, b);
            }
            _ => {}
        }
        if let Some(bits) = sphinx_protocol::messages::result_bits(m.kind()) {
            assert!(bits < 41, "smaller than q_0");
            // 2-part results at 34 bits: 4 + 28 + 10 + 2·4096·34/8 bytes each.
            let cts = match m {
                ServerMessage::ForwardOutput(b) | ServerMessage::BackwardOutput(b) => b.cts.len(),
                ServerMessage::WeightGradients(g) => g.cts.len(),
                _ => 0,
            };
            let per_ct = 4 + 28 + 10 + 2 * 4096 * bits as usize / 8;
            assert!(bytes.len() >= cts * per_ct && bytes.len() < cts * per_ct + 64);
        }
        assert!(ClientMessage::decode(&params, &bytes, bytes.len()).is_err());
        let bits = sphinx_protocol::messages::result_bits(m.kind());
        match m {
            ServerMessage::ForwardOutput(b) | ServerMessage::BackwardOutput(b) => {
                assert!(
                    b.cts
                        .iter()
                        .all(|c| c.size() == 2 && Some(c.bits()) == bits)
                );
            }
            ServerMessage::WeightGradients(g) => {
                // Relinearized products.
                assert!(
                    g.cts
                        .iter()
                        .all(|c| c.size() == 2 && Some(c.bits()) == bits)
                );
            }
            _ => {}
        }
        m.kind()
    };
    while let Some(m) = queue.pop_front() {
        let bytes = m.encode(&params).unwrap();
        assert_eq!(bytes.len(), m.wire_len(&params).unwrap());
        check_envelope(&bytes, m.kind());
        let back = ClientMessage::decode(&params, &bytes, bytes.len()).unwrap();
        assert_eq!(back.encode(&params).unwrap(), bytes, "round trip");
        let model = sphinx_protocol::wire::ModelId(9);
        let in_place = Request::train_frame(5, model, &m, &params).unwrap();
        let message = bytes.clone();
        assert_eq!(
            in_place,
            Request::Train { model, message }.to_frame(5).unwrap()
        );
        if matches!(m, ClientMessage::NoisyGradient(_)) {
            let p = params.clone();
            check_rejections(&bytes, move |b, limit| {
                ClientMessage::decode(&p, b, limit).map(|_| ())
            });
        }
        if let ClientMessage::ForwardInput(b) | ClientMessage::BackwardDelta(b) = &m {
            // Seeded uploads: c1 travels as a 32-byte seed.
            assert!(b.cts.iter().all(|c| c.seed().is_some()));
        }
        seen.insert(m.kind());
        for r in server.handle(m).unwrap() {
            seen.insert(check_server(&r));
            queue.extend(client.handle(r).unwrap());
        }
        while let Some(r) = server.poll().unwrap() {
            seen.insert(check_server(&r));
            queue.extend(client.handle(r).unwrap());
        }
    }
    let export = server.handle(ClientMessage::ModelRequest).unwrap();
    for m in &export {
        seen.insert(check_server(m));
    }
    assert_eq!(
        seen.len() + 2,
        MessageKind::ALL.len(),
        "all but setup and request"
    );
    assert_eq!(server.step(), 1);

    // Out-of-order messages are refused.
    let stale = ClientMessage::NoisyGradient(sphinx_protocol::messages::NoisyGradient {
        step: 0,
        gradient: vec![0.0; 944],
    });
    assert!(matches!(
        server.handle(stale),
        Err(ProtocolError::UnexpectedMessage { .. })
    ));
}

#[test]
fn a_step_beyond_the_budget_is_refused() {
    let (train, _) = data(64, 0);
    let spec = tiny_mlp();
    let (q, sigma) = (16.0 / 64.0, 1.0);
    let cfg = dp_config(train.len(), 16.0, sigma, 1.0);
    let two = epsilon_for(
        SampleRate::new(q).unwrap(),
        NoiseMultiplier::new(sigma).unwrap(),
        2,
        Delta::new(1e-5).unwrap(),
    )
    .unwrap()
    .epsilon
    .get();
    let (mut session, _) = pair(&spec, &train, cfg, 0.1, 8, two * (1.0 + 1e-9));
    let first = session.run_step().unwrap();
    let second = session.run_step().unwrap();
    assert!(first.epsilon < second.epsilon && second.epsilon <= two * (1.0 + 1e-9));
    let up_before = session.traffic().bytes(Direction::ClientToServer);
    let refused = session.run_step();
    assert!(matches!(
        refused,
        Err(ProtocolError::BudgetExhausted { .. })
    ));
    assert_eq!(session.client().step(), 2);
    assert_eq!(session.server().step(), 2);
    assert_eq!(session.client().ledger().accountant().steps(), 2);
    // Nothing was sent for the refused step.
    assert_eq!(
        session.traffic().bytes(Direction::ClientToServer),
        up_before
    );
}

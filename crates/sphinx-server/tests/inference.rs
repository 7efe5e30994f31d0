//! Private inference over loopback TLS against the in-process inference session.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::VecDeque;

use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use sphinx_nn::model::Model;
use sphinx_protocol::inference::messages::{InferenceClientMessage, InferenceServerMessage};
use sphinx_protocol::inference::{
    FixedPoint, InferenceClient, InferenceSession, biases_of, inference_parameters,
};
use sphinx_protocol::wire::{DEFAULT_MAX_FRAME, ErrorCode, ModelId, Request, Response};
use sphinx_server::testing::Connection;

/// Sends one inference message and every follow-up of the client role; `Err` carries the
/// server's error code.
fn exchange(
    conn: &mut Connection,
    model: ModelId,
    client: &mut InferenceClient,
    first: InferenceClientMessage,
) -> Result<(), ErrorCode> {
    let params = client.params().clone();
    let mut up = VecDeque::from([first]);
    loop {
        while let Some(msg) = up.pop_front() {
            let payload = msg.encode(&params).unwrap();
            let mut replies = conn
                .request(&Request::Inference { model, payload })
                .unwrap();
            match replies.pop().unwrap() {
                Response::InferenceDone { model: m } => assert_eq!(m, model),
                Response::Error { code, .. } => return Err(code),
                other => panic!("{other:?}"),
            }
            for r in replies {
                let Response::Inference { payload, .. } = r else {
                    panic!("{r:?}")
                };
                let reply =
                    InferenceServerMessage::decode(&params, &payload, DEFAULT_MAX_FRAME).unwrap();
                up.extend(client.handle(reply).unwrap());
            }
        }
        match client.poll().unwrap() {
            Some(m) => up.push_back(m),
            None => return Ok(()),
        }
    }
}

fn inference_client(model: &Model, seed: u64) -> (InferenceClient, InferenceClientMessage) {
    InferenceClient::new(
        inference_parameters().build().unwrap(),
        model.spec().clone(),
        biases_of(model),
        FixedPoint::default(),
        ChaCha20Rng::seed_from_u64(seed),
    )
    .unwrap()
}

fn inputs() -> Vec<Vec<f32>> {
    (0..3)
        .map(|i| {
            (0..4)
                .map(|j| ((i * 3 + j) % 5) as f32 / 4.0 - 0.3)
                .collect()
        })
        .collect()
}

fn query(
    conn: &mut Connection,
    model: ModelId,
    client: &mut InferenceClient,
    x: &[f32],
) -> Vec<f32> {
    let first = client.start_query(x).unwrap();
    exchange(conn, model, client, first).unwrap();
    client.take_result().unwrap().logits
}

#[test]
fn networked_inference_equals_the_in_process_session_and_refuses_bad_payloads() {
    let (server, _dir, accounts) = common::server();
    let (mut trainer, setup, params) = common::client(3);
    let mut conn = Connection::connect(server.addr(), server.fingerprint()).unwrap();
    conn.auth(&accounts[0].0, &accounts[0].1).unwrap();
    let model = conn.create_model(&setup, &params).unwrap();
    conn.train_step(model, &mut trainer, &params).unwrap();
    let trained = conn.export(model, &trainer, &params).unwrap();

    // In-process reference.
    let (client, setup) = inference_client(&trained, 1);
    let mut session =
        InferenceSession::new(client, setup, &trained, ChaCha20Rng::seed_from_u64(2)).unwrap();
    session.preprocess(inputs().len()).unwrap();
    let local: Vec<Vec<f32>> = inputs().iter().map(|x| session.query(x).unwrap()).collect();

    // Over TLS on the same connection (inference takes over the model's lease).
    let (mut client, setup) = inference_client(&trained, 1);
    let bad = Request::Inference {
        model,
        payload: vec![7; 40],
    };
    // Before the setup: refused, nothing kept.
    assert!(matches!(
        conn.request(&bad).unwrap().pop(),
        Some(Response::Error { .. })
    ));
    exchange(&mut conn, model, &mut client, setup).unwrap();
    exchange(
        &mut conn,
        model,
        &mut client,
        InferenceClientMessage::StatusRequest,
    )
    .unwrap();
    let start = client.start_preprocessing(inputs().len()).unwrap();
    exchange(&mut conn, model, &mut client, start).unwrap();
    let mut remote = Vec::new();
    for (i, x) in inputs().iter().enumerate() {
        remote.push(query(&mut conn, model, &mut client, x));
        if i == 0 {
            // Garbage and a truncated frame payload mid-session: refused, session intact.
            let resp = conn.request(&bad).unwrap();
            assert!(
                matches!(resp.last(), Some(Response::Error { .. })),
                "{resp:?}"
            );
            let mut truncated = InferenceClientMessage::StatusRequest
                .encode(client.params())
                .unwrap();
            truncated.push(0);
            let resp = conn
                .request(&Request::Inference {
                    model,
                    payload: truncated,
                })
                .unwrap();
            assert!(
                matches!(resp.last(), Some(Response::Error { .. })),
                "{resp:?}"
            );
        }
    }
    for (l, r) in local.iter().zip(&remote) {
        assert_eq!(l.len(), 3);
        let argmax = |v: &[f32]| {
            v.iter()
                .enumerate()
                .fold(
                    (0, f32::NEG_INFINITY),
                    |b, (i, &x)| if x > b.1 { (i, x) } else { b },
                )
                .0
        };
        assert_eq!(argmax(l), argmax(r));
        for (a, b) in l.iter().zip(r) {
            assert!((a - b).abs() < 1e-3, "{l:?} vs {r:?}");
        }
    }
    // Masks are used once.
    assert!(client.start_query(&inputs()[0]).is_err());

    // The preprocessing snapshot was persisted; another account sees no model.
    let mut other = Connection::connect(server.addr(), server.fingerprint()).unwrap();
    other.auth(&accounts[1].0, &accounts[1].1).unwrap();
    let (_, setup) = inference_client(&trained, 9);
    let resp = other
        .request(&Request::Inference {
            model,
            payload: setup.encode(client.params()).unwrap(),
        })
        .unwrap();
    assert!(
        matches!(
            resp.last(),
            Some(Response::Error {
                code: ErrorCode::NotFound,
                ..
            })
        ),
        "{resp:?}"
    );
    // The server still serves its owner.
    assert_eq!(conn.committed_step(model).unwrap(), 1);
    server.shutdown().unwrap();
}

#[test]
fn a_new_connection_resumes_the_persisted_inference_session() {
    let (server, _dir, accounts) = common::server();
    let (trainer, setup, params) = common::client(4);
    let mut conn = Connection::connect(server.addr(), server.fingerprint()).unwrap();
    conn.auth(&accounts[0].0, &accounts[0].1).unwrap();
    let model = conn.create_model(&setup, &params).unwrap();
    let trained = conn.export(model, &trainer, &params).unwrap();
    let (mut client, setup) = inference_client(&trained, 5);
    exchange(&mut conn, model, &mut client, setup).unwrap();
    exchange(
        &mut conn,
        model,
        &mut client,
        InferenceClientMessage::StatusRequest,
    )
    .unwrap();
    let start = client.start_preprocessing(2).unwrap();
    exchange(&mut conn, model, &mut client, start).unwrap();
    let first = query(&mut conn, model, &mut client, &inputs()[0]);
    drop(conn);

    // The old connection's lease goes when the server notices the close.
    let mut conn = Connection::connect(server.addr(), server.fingerprint()).unwrap();
    conn.auth(&accounts[0].0, &accounts[0].1).unwrap();
    // A status request needs no mask: it probes until the old lease is gone, and restores
    // the session from the stored snapshot.
    let mut resumed = false;
    for _ in 0..100 {
        match exchange(
            &mut conn,
            model,
            &mut client,
            InferenceClientMessage::StatusRequest,
        ) {
            Ok(()) => {
                resumed = true;
                break;
            }
            Err(ErrorCode::Busy) => std::thread::sleep(std::time::Duration::from_millis(20)),
            Err(code) => panic!("{code:?}"),
        }
    }
    assert!(resumed, "the lease was released");
    let second = query(&mut conn, model, &mut client, &inputs()[1]);
    let (reference, setup) = inference_client(&trained, 6);
    let mut session =
        InferenceSession::new(reference, setup, &trained, ChaCha20Rng::seed_from_u64(7)).unwrap();
    session.preprocess(2).unwrap();
    for (x, got) in inputs().iter().zip([&first, &second]) {
        let want = session.query(x).unwrap();
        for (a, b) in want.iter().zip(got) {
            assert!((a - b).abs() < 1e-3, "{want:?} vs {got:?}");
        }
    }
    assert_eq!(first.len(), 3);
    assert_eq!(second.len(), 3);
    server.shutdown().unwrap();
}

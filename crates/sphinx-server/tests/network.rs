//! The service over loopback TLS: training equals the in-process run, hostile frames are
//! refused while the server keeps serving, accounts are isolated.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::net::TcpStream;

use rand::SeedableRng;
use sphinx_protocol::session::Session;
use sphinx_protocol::wire::{self, ErrorCode, ModelId, Request, Response, Token};
use sphinx_server::ServerError;
use sphinx_server::testing::Connection;

fn code_of<T: std::fmt::Debug>(r: Result<T, ServerError>) -> ErrorCode {
    match r {
        Err(ServerError::Remote { code, .. }) => code,
        other => panic!("expected an error response, got {other:?}"),
    }
}

#[test]
fn networked_training_equals_the_in_process_session() {
    const STEPS: usize = 3;
    let (client, setup, _) = common::client(7);
    let mut session = Session::new(
        client,
        setup,
        &mut rand_chacha::ChaCha20Rng::seed_from_u64(5),
    )
    .unwrap();
    let local: Vec<_> = (0..STEPS).map(|_| session.run_step().unwrap()).collect();
    let local_model = session.export_model().unwrap();

    let (server, _dir, accounts) = common::server();
    let (mut client, setup, params) = common::client(7);
    let mut conn = Connection::connect(server.addr(), server.fingerprint()).unwrap();
    assert_eq!(
        conn.negotiated_suite(),
        Some(rustls::CipherSuite::TLS13_AES_128_GCM_SHA256)
    );
    conn.auth(&accounts[0].0, &accounts[0].1).unwrap();
    let model = conn.create_model(&setup, &params).unwrap();
    for (i, expected) in local.iter().enumerate() {
        let outcome = conn.train_step(model, &mut client, &params).unwrap();
        assert_eq!(outcome.step, i as u64);
        // Same seeds: same Poisson batches, same accounting.
        assert_eq!(outcome.batch_size, expected.batch_size);
        assert_eq!(outcome.epsilon, expected.epsilon);
        assert_eq!(conn.committed_step(model).unwrap(), i as u64 + 1);
    }
    let remote_model = conn.export(model, &client, &params).unwrap();
    // The only difference is the rounding of the two servers' encryption randomness,
    // ≈ 10⁻⁴ per value with compact results; a different batch or noise draw would move
    // entries by ≈ lr·σC/(qN) = 0.02.
    let (dw, db) = common::max_diff(&local_model, &remote_model);
    assert!(dw < 1e-3 && db < 1e-3, "ΔW {dw}, Δb {db}");
    assert_ne!(remote_model.layers().len(), 0);
    let listed = conn.call(&Request::ListModels).unwrap();
    let Response::Models { models } = listed else {
        panic!("{listed:?}")
    };
    assert_eq!(models.len(), 1);
    assert_eq!(models[0].committed_step, STEPS as u64);
    assert!(models[0].busy, "this connection holds the training lease");
    server.shutdown().unwrap();
}

#[test]
fn hostile_frames_are_refused_and_the_server_keeps_serving() {
    let (server, _dir, accounts) = common::server();
    let (addr, fp) = (server.addr(), server.fingerprint().to_owned());
    let (name, token) = accounts[0].clone();

    // Anything before authentication closes the connection.
    let mut c = Connection::connect(addr, &fp).unwrap();
    assert_eq!(
        code_of(c.call(&Request::ListModels)),
        ErrorCode::Unauthenticated
    );
    assert!(c.read_response().unwrap().is_none());

    // A wrong token closes it too.
    let mut c = Connection::connect(addr, &fp).unwrap();
    let wrong = Token::from_bytes([7; 32]);
    assert_eq!(code_of(c.auth(&name, &wrong)), ErrorCode::AuthFailed);
    assert!(c.read_response().unwrap().is_none());

    // Before authentication only 4 KiB frames are accepted: refused from the prefix alone.
    let mut c = Connection::connect(addr, &fp).unwrap();
    c.send_raw(&(wire::PRE_AUTH_MAX_FRAME as u32 + 1).to_le_bytes())
        .unwrap();
    let (_, resp) = c.read_response().unwrap().unwrap();
    assert!(matches!(
        resp,
        Response::Error {
            code: ErrorCode::FrameTooLarge,
            ..
        }
    ));
    assert!(c.read_response().unwrap().is_none());

    // Not TLS at all.
    let mut raw = TcpStream::connect(addr).unwrap();
    raw.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    drop(raw);

    let mut c = Connection::connect(addr, &fp).unwrap();
    c.auth(&name, &token).unwrap();
    // Malformed bodies within a well-formed length: answered, connection kept.
    let mut bad = Request::ListModels.to_frame(10).unwrap();
    bad[4..8].copy_from_slice(b"XXXX");
    c.send_raw(&bad).unwrap();
    let (_, resp) = c.read_response().unwrap().unwrap();
    assert!(matches!(
        resp,
        Response::Error {
            code: ErrorCode::Malformed,
            ..
        }
    ));
    let mut bad = Request::Status { model: ModelId(1) }.to_frame(11).unwrap();
    bad.push(0);
    let len = (bad.len() - 4) as u32;
    bad[..4].copy_from_slice(&len.to_le_bytes());
    c.send_raw(&bad).unwrap();
    let (seq, resp) = c.read_response().unwrap().unwrap();
    assert_eq!(seq, 11);
    assert!(matches!(
        resp,
        Response::Error {
            code: ErrorCode::Malformed,
            ..
        }
    ));
    // A training message that is not one.
    c.set_seq(20);
    let r = c.call(&Request::Train {
        model: ModelId(1),
        message: vec![1, 2, 3],
    });
    assert_eq!(code_of(r), ErrorCode::NotFound);
    // A replayed frame (same sequence number) is refused without being executed.
    let frame = Request::ListModels.to_frame(30).unwrap();
    c.send_raw(&frame).unwrap();
    assert!(matches!(
        c.read_response().unwrap().unwrap().1,
        Response::Models { .. }
    ));
    c.send_raw(&frame).unwrap();
    let (seq, resp) = c.read_response().unwrap().unwrap();
    assert_eq!(seq, 30);
    assert!(matches!(
        resp,
        Response::Error {
            code: ErrorCode::Replay,
            ..
        }
    ));
    c.set_seq(30);
    assert!(matches!(
        c.call(&Request::ListModels).unwrap(),
        Response::Models { .. }
    ));

    // Training: garbage and replayed training messages are refused; the step goes on.
    let (mut client, setup, params) = common::client(3);
    let model = c.create_model(&setup, &params).unwrap();
    let garbage = c.call(&Request::Train {
        model,
        message: b"SPXP garbage".to_vec(),
    });
    assert_eq!(code_of(garbage), ErrorCode::Malformed);
    let first = client.start_step().unwrap();
    let first_bytes = first.encode(&params).unwrap();
    let train = Request::Train {
        model,
        message: first_bytes.clone(),
    };
    let replies = c.request(&train).unwrap();
    assert!(matches!(replies[0], Response::Training { .. }));
    // The same message again (a new sequence number): the state machine refuses it.
    assert_eq!(code_of(c.call(&train)), ErrorCode::Protocol);
    // Finish the step from the first reply on.
    let Response::Training { message, .. } = &replies[0] else {
        unreachable!()
    };
    let reply =
        sphinx_protocol::messages::ServerMessage::decode(&params, message, 1 << 28).unwrap();
    let mut queue: std::collections::VecDeque<_> = client.handle(reply).unwrap().into();
    while let Some(msg) = queue.pop_front() {
        for resp in c
            .request(&Request::Train {
                model,
                message: msg.encode(&params).unwrap(),
            })
            .unwrap()
        {
            if let Response::Training { message, .. } = resp {
                let m =
                    sphinx_protocol::messages::ServerMessage::decode(&params, &message, 1 << 28)
                        .unwrap();
                queue.extend(client.handle(m).unwrap());
            }
        }
    }
    assert_eq!(c.committed_step(model).unwrap(), 1);
    // Replaying step 0's first message after the commit is refused as well.
    assert_eq!(code_of(c.call(&train)), ErrorCode::Protocol);

    // Oversized after authentication: refused from the prefix, connection closed.
    c.send_raw(&(wire::DEFAULT_MAX_FRAME as u32 + 1).to_le_bytes())
        .unwrap();
    let (_, resp) = c.read_response().unwrap().unwrap();
    assert!(matches!(
        resp,
        Response::Error {
            code: ErrorCode::FrameTooLarge,
            ..
        }
    ));

    // Truncated: a frame cut off by a closed connection.
    let mut c = Connection::connect(addr, &fp).unwrap();
    c.auth(&name, &token).unwrap();
    let frame = Request::Status { model }.to_frame(5).unwrap();
    c.send_raw(&frame[..frame.len() - 3]).unwrap();
    drop(c);

    // The server still serves, and the model is intact.
    let mut c = Connection::connect(addr, &fp).unwrap();
    c.auth(&name, &token).unwrap();
    assert_eq!(c.committed_step(model).unwrap(), 1);
    assert!(matches!(
        Connection::connect(addr, &"00".repeat(32)),
        Err(ServerError::Tls(_) | ServerError::Io(_))
    ));
    server.shutdown().unwrap();
}

#[test]
fn a_second_account_cannot_touch_the_first_accounts_model() {
    let (server, _dir, accounts) = common::server();
    let (addr, fp) = (server.addr(), server.fingerprint().to_owned());
    let mut a = Connection::connect(addr, &fp).unwrap();
    a.auth(&accounts[0].0, &accounts[0].1).unwrap();
    let (mut client, setup, params) = common::client(11);
    let model = a.create_model(&setup, &params).unwrap();
    a.train_step(model, &mut client, &params).unwrap();

    let mut b = Connection::connect(addr, &fp).unwrap();
    b.auth(&accounts[1].0, &accounts[1].1).unwrap();
    let (mut intruder, _, _) = common::client(11);
    let step = intruder.start_step().unwrap();
    for req in [
        Request::Status { model },
        Request::Export { model },
        Request::Delete { model },
        Request::Train {
            model,
            message: step.encode(&params).unwrap(),
        },
    ] {
        // Absent, not forbidden and not busy: b learns nothing about a's models.
        assert_eq!(code_of(b.call(&req)), ErrorCode::NotFound, "{req:?}");
    }
    let Response::Models { models } = b.call(&Request::ListModels).unwrap() else {
        panic!()
    };
    assert!(models.is_empty());

    // A second connection of the owner cannot train while the first holds the model.
    let mut a2 = Connection::connect(addr, &fp).unwrap();
    a2.auth(&accounts[0].0, &accounts[0].1).unwrap();
    let (mut other, _, _) = common::client(11);
    assert_eq!(
        code_of(a2.train_step(model, &mut other, &params)),
        ErrorCode::Busy
    );
    // The owner is unaffected; after its connection closes the model is free again.
    a.train_step(model, &mut client, &params).unwrap();
    assert_eq!(a.committed_step(model).unwrap(), 2);
    drop(a);
    // The server notices the closed connection asynchronously.
    let mut deleted = false;
    for _ in 0..100 {
        match a2.call(&Request::Delete { model }) {
            Ok(Response::Deleted { .. }) => {
                deleted = true;
                break;
            }
            Err(ServerError::Remote {
                code: ErrorCode::Busy,
                ..
            }) => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(deleted);
    assert_eq!(code_of(a2.committed_step(model)), ErrorCode::NotFound);
    server.shutdown().unwrap();
}

#[test]
fn connection_limits_idle_timeout_and_graceful_shutdown() {
    let limits = sphinx_server::Limits {
        max_connections: 1,
        idle_timeout: std::time::Duration::from_millis(300),
        ..sphinx_server::Limits::default()
    };
    let (server, _dir, accounts) = common::server_with(limits);
    let (addr, fp) = (server.addr(), server.fingerprint().to_owned());
    let mut first = Connection::connect(addr, &fp).unwrap();
    first.auth(&accounts[0].0, &accounts[0].1).unwrap();
    // One connection at a time: the second is told so and closed.
    let mut second = Connection::connect(addr, &fp).unwrap();
    let (_, resp) = second.read_response().unwrap().unwrap();
    assert!(matches!(
        resp,
        Response::Error {
            code: ErrorCode::TooManyConnections,
            ..
        }
    ));
    // An idle connection is closed, which frees its slot.
    std::thread::sleep(std::time::Duration::from_millis(600));
    assert!(first.read_response().unwrap().is_none());
    let mut third = Connection::connect(addr, &fp).unwrap();
    third.auth(&accounts[0].0, &accounts[0].1).unwrap();
    // Shutdown: a waiting connection is told and closed; the port stops accepting.
    let stopper = std::thread::spawn(move || server.shutdown());
    let (_, resp) = third.read_response().unwrap().unwrap();
    assert!(matches!(
        resp,
        Response::Error {
            code: ErrorCode::ShuttingDown,
            ..
        }
    ));
    stopper.join().unwrap().unwrap();
    assert!(Connection::connect(addr, &fp).is_err());
}

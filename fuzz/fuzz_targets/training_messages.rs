//! Feeds arbitrary bytes to the training-message decoders at the protocol's parameters,
//! including the compact level-0 results (`sphinx_he::serialization::compact`) that the
//! server sends, both as copies and as slices of shared bytes (what the client does). Nothing
//! may panic; a message that decodes must re-encode to itself.
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use sphinx_he::Parameters;
use sphinx_protocol::messages::{ClientMessage, ServerMessage};

fn params() -> &'static Arc<Parameters> {
    static PARAMS: OnceLock<Arc<Parameters>> = OnceLock::new();
    PARAMS.get_or_init(|| {
        sphinx_protocol::params::build_training_parameters().expect("the protocol parameters")
    })
}

fuzz_target!(|data: &[u8]| {
    let p = params();
    let copied = ServerMessage::decode(p, data, data.len());
    if let Ok(m) = &copied {
        assert_eq!(m.encode(p).expect("a decoded message encodes"), data);
    }
    // The client decodes its replies as slices of the received frame: same verdicts.
    let shared = ServerMessage::decode_shared(p, &bytes::Bytes::copy_from_slice(data), data.len());
    assert_eq!(copied.is_ok(), shared.is_ok());
    if let Ok(m) = shared {
        assert_eq!(m.encode(p).expect("a decoded message encodes"), data);
    }
    if let Ok(m) = ClientMessage::decode(p, data, data.len()) {
        assert_eq!(m.encode(p).expect("a decoded message encodes"), data);
    }
});

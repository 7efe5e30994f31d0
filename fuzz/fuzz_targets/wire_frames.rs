//! Feeds arbitrary bytes to the network frame decoders: as whole frame bodies, and as a
//! stream cut into chunks. Nothing may panic; a body that decodes must re-encode to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sphinx_protocol::wire::{FrameDecoder, Request, Response};

fn check_body(body: &[u8]) {
    if let Ok((seq, req)) = Request::from_body(body) {
        let again = req.to_frame(seq).expect("a decoded request encodes");
        assert_eq!(&again[4..], body);
    }
    if let Ok((seq, resp)) = Response::from_body(body) {
        let again = resp.to_frame(seq).expect("a decoded response encodes");
        assert_eq!(&again[4..], body);
    }
}

fuzz_target!(|data: &[u8]| {
    check_body(data);
    let Some((&chunk, stream)) = data.split_first() else {
        return;
    };
    let mut decoder = FrameDecoder::new(1 << 16);
    for piece in stream.chunks(usize::from(chunk).max(1)) {
        decoder.push(piece);
        loop {
            match decoder.next_frame() {
                Ok(Some(body)) => check_body(&body),
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
});

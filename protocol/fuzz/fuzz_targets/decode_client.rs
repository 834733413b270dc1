//! Any byte string given to the server's decoder gives a message or an error: never a
//! panic, never an allocation beyond the limits. A decoded frame must re-encode to a
//! message that decodes to the same frame.
#![no_main]

use coherency_protocol::scan::{decode_client, encode_client, ClientMsg};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(msg) = decode_client(data) {
        if let ClientMsg::Frame(frame) = &msg {
            let _ = frame.depth_metres().expect("a decoded frame converts to metres");
        }
        let again = decode_client(&encode_client(&msg)).expect("a decoded message re-decodes");
        assert_eq!(again, msg);
    }
});

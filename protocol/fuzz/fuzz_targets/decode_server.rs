//! Any byte string given to the client's decoder gives a message or an error, never a panic.
#![no_main]

use coherency_protocol::scan::decode_server;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = decode_server(data);
});

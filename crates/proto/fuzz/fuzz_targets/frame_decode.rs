//! Any bytes a peer can send as a request or response frame: the decoder
//! must return, and what it accepts must round-trip.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    cairn_proto::frame::check_decoder(data);
});

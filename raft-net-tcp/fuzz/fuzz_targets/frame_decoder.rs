//! Arbitrary bytes, split at arbitrary points, fed to the incremental `FrameDecoder`
//! and to the message decoder. Must never panic, and must yield the same frames (and
//! the same error, if any) as feeding the whole input at once.
//!
//! Input layout: byte 0 picks the maximum frame size, byte 1 seeds the split points,
//! the rest is the byte stream.

#![no_main]

use libfuzzer_sys::fuzz_target;
use raft::Message;
use raft_net_tcp::codec::FrameDecoder;

/// What a decoder produced: the payloads in order, then whether it stopped on an error.
#[derive(Debug, PartialEq)]
struct Outcome {
    frames: Vec<Vec<u8>>,
    error: Option<String>,
}

/// Takes every complete frame out of `d`, decoding each as a message. Returns false
/// once the decoder reported an error (the connection would be closed).
fn drain(d: &mut FrameDecoder, out: &mut Outcome) -> bool {
    loop {
        match d.next_frame() {
            Ok(Some(payload)) => {
                // The message decoder must not panic on any payload either.
                let _ = Message::decode(payload);
                out.frames.push(payload.to_vec());
            }
            Ok(None) => return true,
            Err(e) => {
                out.error = Some(e.to_string());
                return false;
            }
        }
    }
}

fn max_frame_size(b: u8) -> u32 {
    match b {
        0 => 0,
        255 => u32::MAX,
        254 => 16 << 20,
        b => u32::from(b) * 17,
    }
}

fuzz_target!(|data: &[u8]| {
    let [size, seed, stream @ ..] = data else { return };
    let max = max_frame_size(*size);

    // The whole stream at once.
    let mut whole = Outcome { frames: Vec::new(), error: None };
    let mut d = FrameDecoder::new(max);
    d.extend(stream);
    drain(&mut d, &mut whole);

    // The same stream in chunks of pseudo-random lengths (0 included).
    let mut split = Outcome { frames: Vec::new(), error: None };
    let mut d = FrameDecoder::new(max);
    let mut x = u32::from(*seed) | 0x100;
    let mut rest = stream;
    loop {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let n = (x as usize % 9).min(rest.len());
        let (chunk, tail) = rest.split_at(n);
        d.extend(chunk);
        if !drain(&mut d, &mut split) {
            break;
        }
        rest = tail;
        if rest.is_empty() {
            break;
        }
    }
    if split.error.is_none() {
        assert_eq!(d.buffered(), whole_buffered(max, stream), "leftover bytes differ");
    }
    assert_eq!(split, whole);

    // Every payload also goes through the message decoder via `next_message`.
    let mut d = FrameDecoder::new(max);
    d.extend(stream);
    while let Ok(Some(_)) = d.next_message() {}
});

/// The bytes a decoder fed the whole stream still holds after taking every frame.
fn whole_buffered(max: u32, stream: &[u8]) -> usize {
    let mut d = FrameDecoder::new(max);
    d.extend(stream);
    while let Ok(Some(_)) = d.next_frame() {}
    d.buffered()
}

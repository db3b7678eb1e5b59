//! Property tests of the wire codec: frames round-trip however the byte stream is
//! split, and the decoders never panic on arbitrary input.

use proptest::prelude::*;
use raft::{Message, MessageBody};
use raft_net_tcp::codec::{self, FrameDecoder, Hello, HELLO_LEN, REPLY_LEN};
use raft_net_tcp::FrameError;

const MAX: u32 = 4096;

/// Splits `bytes` at the given cut points (taken modulo the length).
fn chunks(bytes: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
    let mut points: Vec<usize> = cuts.iter().map(|c| if bytes.is_empty() { 0 } else { c % bytes.len() }).collect();
    points.push(0);
    points.push(bytes.len());
    points.sort_unstable();
    points.dedup();
    points.windows(2).map(|w| bytes[w[0]..w[1]].to_vec()).collect()
}

proptest! {
    #[test]
    fn frames_roundtrip_across_any_split(
        payloads in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 0..20),
        cuts in prop::collection::vec(any::<usize>(), 0..30),
    ) {
        let mut stream = Vec::new();
        for p in &payloads {
            codec::encode_payload(p, MAX, &mut stream).unwrap();
        }
        let mut d = FrameDecoder::new(MAX);
        let mut out = Vec::new();
        for c in chunks(&stream, &cuts) {
            d.extend(&c);
            while let Some(f) = d.next_frame().unwrap() {
                out.push(f.to_vec());
            }
        }
        prop_assert_eq!(out, payloads);
        prop_assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn messages_roundtrip_through_frames(
        from in any::<u64>(), to in any::<u64>(), term in any::<u64>(),
        commit in any::<u64>(), ctx in any::<u64>(),
    ) {
        let m = Message { from, to, term, body: MessageBody::Heartbeat { commit, ctx } };
        let mut stream = Vec::new();
        codec::encode_frame(&m, MAX, &mut stream).unwrap();
        let mut d = FrameDecoder::new(MAX);
        d.extend(&stream);
        prop_assert_eq!(d.next_message().unwrap(), Some(m));
        prop_assert_eq!(d.next_message().unwrap(), None);
    }

    #[test]
    fn decoder_never_panics_and_stays_bounded(
        bytes in prop::collection::vec(any::<u8>(), 0..2000),
        cuts in prop::collection::vec(any::<usize>(), 0..30),
    ) {
        let mut d = FrameDecoder::new(64);
        'outer: for c in chunks(&bytes, &cuts) {
            d.extend(&c);
            loop {
                match d.next_message() {
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(FrameError::TooLarge { len, max }) => {
                        prop_assert!(len > u64::from(max));
                        break 'outer;
                    }
                    Err(_) => break 'outer,
                }
            }
            // Never more than one incomplete frame (prefix + payload) is held.
            prop_assert!(d.buffered() < 4 + 64 + c.len());
        }
    }

    #[test]
    fn hello_roundtrips_and_decoding_never_panics(
        version in any::<u16>(), cluster_id in any::<u64>(), from in any::<u64>(), to in any::<u64>(),
        incarnation in any::<u64>(),
        garbage in prop::collection::vec(any::<u8>(), HELLO_LEN),
        reply in prop::array::uniform16(any::<u8>()),
    ) {
        let h = Hello { version, cluster_id, from, to, incarnation };
        prop_assert_eq!(Hello::decode(&h.encode()).unwrap(), h);
        let g: [u8; HELLO_LEN] = garbage.try_into().unwrap();
        let _ = Hello::decode(&g);
        let r: [u8; REPLY_LEN] = reply;
        if let Ok(inc) = codec::decode_reply(&r) {
            prop_assert_eq!(codec::decode_reply(&codec::encode_reply(codec::HelloStatus::Accepted, inc)).unwrap(), inc);
        }
    }
}

//! Arbitrary bytes decoded as a hello and as a reply. Must never panic; whatever
//! decodes must re-encode to the same fields.

#![no_main]

use libfuzzer_sys::fuzz_target;
use raft_net_tcp::codec::{self, Hello, HELLO_LEN, MAGIC, REPLY_LEN};
use raft_net_tcp::HandshakeError;

fuzz_target!(|data: &[u8]| {
    // The first 32 bytes (zero-padded) as a hello.
    let mut hello = [0u8; HELLO_LEN];
    for (i, b) in hello.iter_mut().enumerate() {
        *b = data.get(i).copied().unwrap_or(0);
    }
    match Hello::decode(&hello) {
        Ok(h) => {
            assert_eq!(hello[0..4], MAGIC);
            let again = h.encode();
            // Everything but the reserved bytes survives the round trip.
            assert_eq!(again[0..6], hello[0..6]);
            assert_eq!(again[8..], hello[8..]);
            assert_eq!(Hello::decode(&again).ok(), Some(h));
        }
        Err(HandshakeError::PeerSentTls) => assert!(codec::looks_like_tls(&hello)),
        Err(e) => {
            assert!(matches!(e, HandshakeError::BadMagic));
            assert_ne!(hello[0..4], MAGIC);
        }
    }

    // The next 16 bytes (or the first ones, for a short input) as a reply.
    let mut reply = [0u8; REPLY_LEN];
    for (i, b) in reply.iter_mut().enumerate() {
        *b = data.get(HELLO_LEN + i).or_else(|| data.get(i)).copied().unwrap_or(0);
    }
    match codec::decode_reply(&reply) {
        Ok(incarnation) => {
            assert_eq!(reply[6], 0);
            assert_eq!(reply[8..16], incarnation.to_be_bytes());
        }
        Err(HandshakeError::BadMagic) => assert_ne!(reply[0..4], MAGIC),
        Err(HandshakeError::PeerExpectsTls) => assert!(codec::looks_like_tls(&reply)),
        Err(HandshakeError::Refused(status)) => {
            assert_eq!(status as u8, reply[6]);
            assert!(matches!(
                codec::decode_reply(&codec::encode_reply(status, 0)),
                Err(HandshakeError::Refused(s)) if s == status
            ));
        }
        Err(HandshakeError::BadStatus(b)) => assert_eq!(b, reply[6]),
        Err(e) => panic!("unexpected reply error: {e}"),
    }
});

//! Decoding byte fields as views of the received buffer instead of copies.
//!
//! A message decoded with [`Message::decode_shared`](crate::message::Message::decode_shared)
//! keeps each command's bytes as a slice of the message's buffer (a reference count, no
//! allocation, no copy). The buffer lives as long as any entry decoded from it.
//!
//! serde's derived code cannot pass the buffer down to a field, so the buffer being
//! decoded is kept in a thread-local while the decoding runs; the byte fields read it in
//! [`bytes`]. Outside [`with_source`] (decoding from the log store, or
//! [`Message::decode`](crate::message::Message::decode)) they are copied as before.

use std::cell::RefCell;

use bytes::Bytes;
use serde::de::{Deserializer, SeqAccess, Visitor};

thread_local! {
    static SOURCE: RefCell<Option<Bytes>> = const { RefCell::new(None) };
}

/// Runs `decode` on `source`'s bytes with `source` as the buffer that byte fields may
/// refer to; the previous one (decodes do not nest, but a panic must not leave one
/// behind) is put back afterwards.
pub(crate) fn with_source<T>(source: &Bytes, decode: impl FnOnce(&[u8]) -> T) -> T {
    struct Restore(Option<Bytes>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let previous = self.0.take();
            SOURCE.with(|s| *s.borrow_mut() = previous);
        }
    }
    let _restore = Restore(SOURCE.with(|s| s.borrow_mut().replace(source.clone())));
    decode(source)
}

/// `part` as a slice of the current source buffer when it lies within it, else a copy.
fn share_or_copy(part: &[u8]) -> Bytes {
    SOURCE.with(|s| match &*s.borrow() {
        Some(source) if contains(source, part) && !part.is_empty() => source.slice_ref(part),
        _ => Bytes::copy_from_slice(part),
    })
}

fn contains(outer: &[u8], inner: &[u8]) -> bool {
    let (o, i) = (outer.as_ptr() as usize, inner.as_ptr() as usize);
    i >= o && i.checked_add(inner.len()).is_some_and(|end| end <= o + outer.len())
}

/// Deserializes a byte string as [`Bytes`], sharing the source buffer where possible
/// (for `#[serde(deserialize_with)]`).
pub(crate) fn bytes<'de, D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
    d.deserialize_bytes(BytesVisitor)
}

struct BytesVisitor;

impl<'de> Visitor<'de> for BytesVisitor {
    type Value = Bytes;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a byte string")
    }

    fn visit_borrowed_bytes<E: serde::de::Error>(self, v: &'de [u8]) -> Result<Bytes, E> {
        Ok(share_or_copy(v))
    }

    fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Bytes, E> {
        Ok(Bytes::copy_from_slice(v))
    }

    fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Bytes, E> {
        Ok(Bytes::from(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Bytes, A::Error> {
        let mut v = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(b) = seq.next_element::<u8>()? {
            v.push(b);
        }
        Ok(Bytes::from(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    struct Holder {
        #[serde(deserialize_with = "bytes")]
        one: Bytes,
        #[serde(deserialize_with = "bytes")]
        other: Bytes,
    }

    fn holder() -> Holder {
        Holder { one: Bytes::from(vec![7u8; 100]), other: Bytes::from_static(b"abc") }
    }

    #[test]
    fn fields_decoded_within_a_source_are_views_of_it() {
        let source = Bytes::from(postcard::to_allocvec(&holder()).unwrap());
        let range = source.as_ptr() as usize..source.as_ptr() as usize + source.len();
        let decoded: Holder = with_source(&source, |b| postcard::from_bytes(b).unwrap());
        assert_eq!(decoded, holder());
        assert!(range.contains(&(decoded.one.as_ptr() as usize)), "the field was copied");
        assert!(range.contains(&(decoded.other.as_ptr() as usize)), "the second field was copied");
        // The source is no longer current once the call returns.
        assert!(SOURCE.with(|s| s.borrow().is_none()));
    }

    #[test]
    fn fields_decoded_outside_a_source_are_copies() {
        let encoded = postcard::to_allocvec(&holder()).unwrap();
        let range = encoded.as_ptr() as usize..encoded.as_ptr() as usize + encoded.len();
        let decoded: Holder = postcard::from_bytes(&encoded).unwrap();
        assert_eq!(decoded, holder());
        assert!(!range.contains(&(decoded.one.as_ptr() as usize)));
        // Bytes from a different buffer than the current source are copied too.
        let other = Bytes::from_static(b"unrelated");
        let decoded: Holder = with_source(&other, |_| postcard::from_bytes(&encoded).unwrap());
        assert!(!range.contains(&(decoded.one.as_ptr() as usize)));
        assert_eq!(decoded, holder());
    }

    #[test]
    fn byte_fields_still_read_formats_that_write_them_as_sequences() {
        let json = serde_json::to_string(&holder()).unwrap();
        let decoded: Holder = serde_json::from_str(&json).unwrap();
        assert_eq!(decoded, holder());
    }
}

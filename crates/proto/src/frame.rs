//! Framing: a 4-byte big-endian length, then that many bytes of postcard.
//! The length is checked against [`MAX_FRAME`] before anything is read.

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::MAX_FRAME;

/// Length of the frame prefix.
pub const PREFIX_LEN: usize = 4;

/// A frame that cannot be sent or accepted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    /// The announced or encoded length exceeds the limit.
    #[error("frame of {len} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// The bytes are not a valid message of this protocol version.
    #[error("malformed frame: {0}")]
    Malformed(String),
}

/// Encodes `message` as one frame (prefix included).
pub fn encode_frame<T: Serialize>(message: &T) -> Result<Vec<u8>, FrameError> {
    let mut out = postcard::to_extend(message, vec![0u8; PREFIX_LEN])
        .map_err(|e| FrameError::Malformed(e.to_string()))?;
    let len = out.len() - PREFIX_LEN;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge {
            len,
            limit: MAX_FRAME,
        });
    }
    out[..PREFIX_LEN].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(out)
}

/// Reads a frame prefix: the payload length, if it is within the limit.
pub fn frame_len(prefix: [u8; PREFIX_LEN]) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(prefix) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge {
            len,
            limit: MAX_FRAME,
        });
    }
    Ok(len)
}

/// Decodes a frame's payload (without prefix). Trailing bytes are an error:
/// a frame holds exactly one message.
pub fn decode_frame<T: DeserializeOwned>(payload: &[u8]) -> Result<T, FrameError> {
    if payload.len() > MAX_FRAME {
        return Err(FrameError::TooLarge {
            len: payload.len(),
            limit: MAX_FRAME,
        });
    }
    let (message, rest) =
        postcard::take_from_bytes(payload).map_err(|e| FrameError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(FrameError::Malformed(format!(
            "{} bytes after the message",
            rest.len()
        )));
    }
    Ok(message)
}

/// Decodes a whole frame, prefix included (for fuzzing and tests).
pub fn decode_prefixed<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, FrameError> {
    let Some((prefix, payload)) = bytes.split_first_chunk::<PREFIX_LEN>() else {
        return Err(FrameError::Malformed(
            "shorter than its length prefix".into(),
        ));
    };
    let len = frame_len(*prefix)?;
    if payload.len() != len {
        return Err(FrameError::Malformed(format!(
            "prefix says {len} bytes, {} follow",
            payload.len()
        )));
    }
    decode_frame(payload)
}

/// The fuzzer's oracle, shared with the test that replays its corpus:
/// whatever `bytes` are, decoding them as a frame (or a frame's payload) of
/// any message type
/// returns instead of panicking, and whatever decodes re-encodes to a frame
/// that decodes to the same message.
///
/// # Panics
/// When that property is broken; that is the bug the fuzzer reports.
pub fn check_decoder(bytes: &[u8]) {
    fn check<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(
        decoded: Result<T, FrameError>,
    ) {
        if let Ok(message) = decoded {
            // Re-encoding is canonical, so never longer than what was decoded.
            let again = encode_frame(&message);
            assert!(again.is_ok(), "{message:?} decoded but does not re-encode");
            let again = again.unwrap_or_default();
            assert_eq!(decode_prefixed::<T>(&again).as_ref(), Ok(&message));
        }
    }
    // As a whole frame, and as a payload whose prefix was already checked
    // (so the fuzzer need not guess a matching length to reach postcard).
    check(decode_prefixed::<super::Request>(bytes));
    check(decode_prefixed::<super::Response>(bytes));
    check(decode_prefixed::<super::Hello>(bytes));
    check(decode_frame::<super::Request>(bytes));
    check(decode_frame::<super::Response>(bytes));
    check(decode_frame::<super::Hello>(bytes));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ErrorCode, OwnerId, Request, Response, ShardId};
    use proptest::prelude::*;

    fn request() -> impl Strategy<Value = Request> {
        let id = any::<[u8; 32]>().prop_map(ShardId);
        prop_oneof![
            Just(Request::Stat),
            (
                id.clone(),
                any::<u64>(),
                any::<[u8; 32]>().prop_map(OwnerId),
                any::<u64>()
            )
                .prop_map(|(id, len, owner, lease_expires)| Request::Put {
                    id,
                    len,
                    owner,
                    lease_expires
                }),
            (id.clone(), any::<Option<(u64, u64)>>())
                .prop_map(|(id, range)| Request::Get { id, range }),
            (
                id.clone(),
                prop::collection::vec(any::<(u64, u64)>(), 0..20)
            )
                .prop_map(|(id, ranges)| Request::Audit { id, ranges }),
            (id.clone(), any::<u64>())
                .prop_map(|(id, lease_expires)| Request::Renew { id, lease_expires }),
            (id, any::<u64>(), prop::collection::vec(any::<u8>(), 0..80)).prop_map(
                |(id, not_after, signature)| Request::Delete {
                    id,
                    not_after,
                    signature
                }
            ),
        ]
    }

    proptest! {
        #[test]
        fn requests_round_trip(request in request()) {
            let frame = encode_frame(&request).unwrap();
            prop_assert_eq!(decode_prefixed::<Request>(&frame).unwrap(), request);
        }

        #[test]
        fn responses_round_trip(message in ".{0,200}", lens in prop::collection::vec(any::<u64>(), 0..20)) {
            for response in [
                Response::Error { code: ErrorCode::NoSpace, message: message.clone() },
                Response::AuditProof { slice_lens: lens.clone() },
                Response::Stored { already: true },
            ] {
                let frame = encode_frame(&response).unwrap();
                prop_assert_eq!(decode_prefixed::<Response>(&frame).unwrap(), response);
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode_frame::<Request>(&bytes);
            let _ = decode_frame::<Response>(&bytes);
        }
    }

    #[test]
    fn oversized_frames_are_refused_before_reading() {
        assert_eq!(
            frame_len(((MAX_FRAME + 1) as u32).to_be_bytes()),
            Err(FrameError::TooLarge {
                len: MAX_FRAME + 1,
                limit: MAX_FRAME
            })
        );
        let huge = Response::Error {
            code: ErrorCode::Internal,
            message: "x".repeat(MAX_FRAME),
        };
        assert!(matches!(
            encode_frame(&huge),
            Err(FrameError::TooLarge { .. })
        ));
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let mut frame = encode_frame(&Request::Stat).unwrap();
        frame.push(0);
        let len = (frame.len() - 4) as u32;
        frame[..4].copy_from_slice(&len.to_be_bytes());
        assert!(matches!(
            decode_prefixed::<Request>(&frame),
            Err(FrameError::Malformed(_))
        ));
    }
}

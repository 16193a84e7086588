//! Server-to-client WebSocket frames (RFC 6455 §5.2), built once as bytes.
//!
//! A server's frames are unmasked, so one delta's frame is byte-for-byte the
//! same for every subscriber: the fan-out builds it once and hands every
//! connection the same `Bytes` (header and payload in one buffer, so one
//! write per subscriber).

use axum::body::Bytes;

const FIN: u8 = 0x80;
const OP_TEXT: u8 = 0x1;
const OP_CLOSE: u8 = 0x8;

/// A complete, unfragmented, unmasked text frame carrying `text`.
pub(crate) fn text(text: &str) -> Bytes {
    frame(OP_TEXT, &[text.as_bytes()])
}

/// A close frame with `code` and a short `reason` (at most 123 bytes are sent).
pub(crate) fn close(code: u16, reason: &str) -> Bytes {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    frame(OP_CLOSE, &[&code.to_be_bytes(), &reason.as_bytes()[..end]])
}

fn frame(opcode: u8, parts: &[&[u8]]) -> Bytes {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let mut out = Vec::with_capacity(len + 10);
    out.push(FIN | opcode);
    if len < 126 {
        out.push(len as u8);
    } else if let Ok(len) = u16::try_from(len) {
        out.push(126);
        out.extend_from_slice(&len.to_be_bytes());
    } else {
        out.push(127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    for p in parts {
        out.extend_from_slice(p);
    }
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;

    /// Parses `bytes` with tungstenite: (header, payload), and checks nothing is left.
    fn parse(bytes: &[u8]) -> (FrameHeader, Vec<u8>) {
        let mut cursor = std::io::Cursor::new(bytes);
        let (header, len) = FrameHeader::parse(&mut cursor).unwrap().unwrap();
        let start = cursor.position() as usize;
        assert_eq!(start as u64 + len, bytes.len() as u64, "one whole frame");
        (header, bytes[start..].to_vec())
    }

    proptest! {
        #[test]
        fn text_frames_read_back_with_tungstenite(s in ".{0,300}", pad in 0usize..70_000) {
            let text = format!("{s}{}", "x".repeat(pad));
            let (h, payload) = parse(&text_frame_bytes(&text));
            prop_assert!(h.is_final);
            prop_assert!(h.mask.is_none(), "server frames are unmasked");
            prop_assert_eq!(h.opcode, OpCode::Data(Data::Text));
            prop_assert_eq!(payload, text.into_bytes());
        }

        #[test]
        fn close_frames_carry_the_code_and_a_bounded_reason(code in 1000u16..5000, reason in ".{0,200}") {
            let (h, payload) = parse(&close(code, &reason));
            prop_assert!(h.opcode == OpCode::Control(tokio_tungstenite::tungstenite::protocol::frame::coding::Control::Close));
            prop_assert!(payload.len() <= 125, "control frames carry at most 125 bytes");
            prop_assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), code);
            prop_assert!(reason.as_bytes().starts_with(&payload[2..]));
            prop_assert!(std::str::from_utf8(&payload[2..]).is_ok());
        }
    }

    fn text_frame_bytes(s: &str) -> Bytes {
        text(s)
    }

    #[test]
    fn length_encodings_switch_at_126_and_65536() {
        assert_eq!(text(&"a".repeat(125))[1], 125);
        assert_eq!(text(&"a".repeat(126))[1], 126);
        assert_eq!(text(&"a".repeat(65_535))[1], 126);
        assert_eq!(text(&"a".repeat(65_536))[1], 127);
    }
}

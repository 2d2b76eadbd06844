//! Length-prefixed binary frames of the peer protocol.
//!
//! Every frame is `[u32 length][u64 request id][u8 direction][payload]`,
//! big-endian. The length is checked against [`MAX_FRAME`] before a single
//! payload byte is read, and the payload's buffer grows only with the bytes
//! that arrive, so a peer can never make a node allocate more than twice
//! what it actually sent, nor more than one bounded frame.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::{de::DeserializeOwned, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Largest frame a node accepts or sends: one value (≤ 1 MiB) with its
/// siblings, or one anti-entropy batch, fits with room to spare.
pub const MAX_FRAME: usize = 16 * 1024 * 1024;

/// What a frame's buffer starts at; it grows (doubling) as bytes arrive.
const FIRST_READ: usize = 64 * 1024;

/// Bytes after the length prefix that are not payload: id and direction.
const HEADER: usize = 8 + 1;
/// Bytes of a frame that are not payload.
pub const OVERHEAD: usize = 4 + HEADER;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Request,
    Response,
}

#[derive(Debug)]
pub struct Frame {
    pub id: u64,
    pub direction: Direction,
    pub payload: Bytes,
}

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {0} bytes exceeds the limit of {MAX_FRAME}")]
    TooLarge(usize),
    #[error("frame of {0} bytes is shorter than its header")]
    TooShort(usize),
    #[error("unknown frame direction byte {0}")]
    BadDirection(u8),
    #[error("unexpected frame: {0}")]
    Unexpected(&'static str),
    #[error("undecodable frame payload: {0}")]
    Payload(#[from] postcard::Error),
    #[error("peer connection: {0}")]
    Io(#[from] std::io::Error),
}

/// Serialises a message into a complete frame, ready to write.
pub fn encode<T: Serialize>(id: u64, direction: Direction, message: &T) -> Result<Bytes, FrameError> {
    let payload = postcard::to_allocvec(message)?;
    let length = HEADER + payload.len();
    if length > MAX_FRAME {
        return Err(FrameError::TooLarge(length));
    }
    let mut buf = BytesMut::with_capacity(4 + length);
    buf.put_u32(length as u32);
    buf.put_u64(id);
    buf.put_u8(match direction {
        Direction::Request => 0,
        Direction::Response => 1,
    });
    buf.put_slice(&payload);
    Ok(buf.freeze())
}

/// Reads one frame; `Ok(None)` on a clean end of stream between frames.
pub async fn read<R: AsyncRead + Unpin>(reader: &mut R) -> Result<Option<Frame>, FrameError> {
    match read_length(reader).await? {
        Some(length) => read_rest(reader, length).await.map(Some),
        None => Ok(None),
    }
}

/// Reads the next frame's length prefix and checks it; `Ok(None)` on a
/// clean end of stream between frames.
pub async fn read_length<R: AsyncRead + Unpin>(reader: &mut R) -> Result<Option<usize>, FrameError> {
    let length = match reader.read_u32().await {
        Ok(length) => length as usize,
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    if length > MAX_FRAME {
        return Err(FrameError::TooLarge(length));
    }
    if length < HEADER {
        return Err(FrameError::TooShort(length));
    }
    Ok(Some(length))
}

/// Reads the rest of a frame of `length` bytes. The buffer grows with the
/// bytes that actually arrive, so a length prefix alone — a peer that
/// declares 16 MiB and sends nothing more — costs next to nothing.
pub async fn read_rest<R: AsyncRead + Unpin>(reader: &mut R, length: usize) -> Result<Frame, FrameError> {
    let mut buf = Vec::with_capacity(length.min(FIRST_READ));
    let got = reader.take(length as u64).read_to_end(&mut buf).await?;
    if got < length {
        return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
    }
    let mut buf = Bytes::from(buf);
    let id = buf.get_u64();
    let direction = match buf.get_u8() {
        0 => Direction::Request,
        1 => Direction::Response,
        other => return Err(FrameError::BadDirection(other)),
    };
    Ok(Frame { id, direction, payload: buf })
}

/// Decodes a frame's payload; trailing bytes are an error, not ignored.
pub fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, FrameError> {
    let (message, rest) = postcard::take_from_bytes(payload)?;
    if !rest.is_empty() {
        return Err(FrameError::Payload(postcard::Error::DeserializeBadEncoding));
    }
    Ok(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn roundtrip() {
        let bytes = encode(42, Direction::Response, &("hello".to_string(), 7u32)).unwrap();
        let frame = read(&mut &bytes[..]).await.unwrap().unwrap();
        assert_eq!(frame.id, 42);
        assert_eq!(frame.direction, Direction::Response);
        let (s, n): (String, u32) = decode(&frame.payload).unwrap();
        assert_eq!((s.as_str(), n), ("hello", 7));
    }

    #[tokio::test]
    async fn rejects_oversized_length_before_reading_payload() {
        let bytes = (MAX_FRAME as u32 + 1).to_be_bytes();
        assert!(matches!(read(&mut &bytes[..]).await, Err(FrameError::TooLarge(_))));
    }

    #[tokio::test]
    async fn rejects_bad_direction_and_short_frames() {
        let mut bytes = encode(1, Direction::Request, &1u8).unwrap().to_vec();
        bytes[4 + 8] = 9;
        assert!(matches!(read(&mut &bytes[..]).await, Err(FrameError::BadDirection(9))));
        let short = 3u32.to_be_bytes();
        assert!(matches!(read(&mut &short[..]).await, Err(FrameError::TooShort(3))));
    }

    #[test]
    fn trailing_bytes_are_rejected() {
        let mut payload = postcard::to_allocvec(&5u8).unwrap();
        payload.push(0);
        assert!(decode::<u8>(&payload).is_err());
    }
}

//! Messages and framing (libvirt's `virnetprotocol.x`).
//!
//! A frame is a 4-byte big-endian length that counts itself, a 24-byte header and a payload.
//! The length is checked against libvirt's limit before any of the body is read or allocated.

use crate::remote_error::RemoteError;
use crate::xdr::{Decoder, Encoder, XdrDecode, XdrEncode, XdrError};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt};

/// The remote program (`REMOTE_PROGRAM`).
pub const REMOTE_PROGRAM: u32 = 0x2000_8086;
/// The remote program's version (`REMOTE_PROTOCOL_VERSION`).
pub const REMOTE_PROTOCOL_VERSION: u32 = 1;
/// The keepalive program (`KEEPALIVE_PROGRAM`, "keep" in ASCII).
pub const KEEPALIVE_PROGRAM: u32 = 0x6b65_6570;
/// The keepalive program's version.
pub const KEEPALIVE_PROTOCOL_VERSION: u32 = 1;
/// `KEEPALIVE_PROC_PING`.
pub const KEEPALIVE_PROC_PING: i32 = 1;
/// `KEEPALIVE_PROC_PONG`.
pub const KEEPALIVE_PROC_PONG: i32 = 2;

/// `VIR_NET_MESSAGE_MAX`: the largest header + payload (the length word is not counted).
pub const MESSAGE_MAX: usize = 16_777_216;
/// `VIR_NET_MESSAGE_HEADER_MAX`: the size of an encoded header.
pub const HEADER_LEN: usize = 24;
/// `VIR_NET_MESSAGE_PAYLOAD_MAX`.
pub const PAYLOAD_MAX: usize = MESSAGE_MAX - HEADER_LEN;
/// `VIR_NET_MESSAGE_LEN_MAX`: the size of the length word.
pub const LEN_WORD: usize = 4;
/// `VIR_NET_MESSAGE_LEGACY_PAYLOAD_MAX`: libvirt sends stream data in chunks of at most this.
pub const STREAM_CHUNK_MAX: usize = 262_144;

/// What went wrong reading or building a frame.
#[derive(Debug, Error)]
pub enum MessageError {
    /// The length word is smaller than a header.
    #[error("frame length {0} is smaller than the {min} bytes of length word and header", min = LEN_WORD + HEADER_LEN)]
    TooShort(u32),
    /// The length word is above libvirt's maximum message size.
    #[error("frame length {0} exceeds the maximum message size of {max} bytes", max = MESSAGE_MAX + LEN_WORD)]
    TooLong(u32),
    /// A payload that does not fit in one message.
    #[error("payload of {0} bytes exceeds the maximum of {PAYLOAD_MAX}")]
    PayloadTooLong(usize),
    /// The header holds an unknown message type.
    #[error("unknown message type {0}")]
    UnknownType(u32),
    /// The header holds an unknown message status.
    #[error("unknown message status {0}")]
    UnknownStatus(u32),
    /// The header could not be decoded.
    #[error("malformed message header")]
    Header(#[source] XdrError),
    /// The peer closed the connection in the middle of a frame.
    #[error("connection closed in the middle of a {0}-byte frame")]
    Truncated(usize),
    /// Reading from the connection failed.
    #[error("reading a frame failed")]
    Io(#[source] std::io::Error),
}

/// `virNetMessageType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    /// Client → server: a procedure call.
    Call = 0,
    /// Server → client: the reply to a call.
    Reply = 1,
    /// Either direction: an asynchronous message (events, keepalive).
    Message = 2,
    /// Either direction: stream data.
    Stream = 3,
    /// Client → server: a call that passes file descriptors.
    CallWithFds = 4,
    /// Server → client: a reply that passes file descriptors.
    ReplyWithFds = 5,
    /// Either direction: a hole in a sparse stream.
    StreamHole = 6,
}

impl TryFrom<u32> for MessageType {
    type Error = MessageError;
    fn try_from(v: u32) -> Result<Self, MessageError> {
        Ok(match v {
            0 => Self::Call,
            1 => Self::Reply,
            2 => Self::Message,
            3 => Self::Stream,
            4 => Self::CallWithFds,
            5 => Self::ReplyWithFds,
            6 => Self::StreamHole,
            other => return Err(MessageError::UnknownType(other)),
        })
    }
}

/// `virNetMessageStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageStatus {
    /// Success; for streams: end of stream.
    Ok = 0,
    /// Failure: a `remote_error` follows.
    Error = 1,
    /// Streams only: more data follows.
    Continue = 2,
}

impl TryFrom<u32> for MessageStatus {
    type Error = MessageError;
    fn try_from(v: u32) -> Result<Self, MessageError> {
        Ok(match v {
            0 => Self::Ok,
            1 => Self::Error,
            2 => Self::Continue,
            other => return Err(MessageError::UnknownStatus(other)),
        })
    }
}

/// `virNetMessageHeader`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Program number.
    pub prog: u32,
    /// Program version.
    pub vers: u32,
    /// Procedure number within the program.
    pub proc_: i32,
    /// Message type.
    pub msg_type: MessageType,
    /// Call serial (replies and streams repeat the call's serial).
    pub serial: u32,
    /// Message status.
    pub status: MessageStatus,
}

impl Header {
    /// A header of the remote program.
    pub fn remote(proc_: i32, msg_type: MessageType, serial: u32, status: MessageStatus) -> Self {
        Self {
            prog: REMOTE_PROGRAM,
            vers: REMOTE_PROTOCOL_VERSION,
            proc_,
            msg_type,
            serial,
            status,
        }
    }

    /// A keepalive PING or PONG (always type MESSAGE, serial 0).
    pub fn keepalive(proc_: i32) -> Self {
        Self {
            prog: KEEPALIVE_PROGRAM,
            vers: KEEPALIVE_PROTOCOL_VERSION,
            proc_,
            msg_type: MessageType::Message,
            serial: 0,
            status: MessageStatus::Ok,
        }
    }

    /// Decodes a header from the first 24 bytes of a message body.
    pub fn decode(dec: &mut Decoder<'_>) -> Result<Self, MessageError> {
        dec.set_field("virNetMessageHeader");
        let prog = dec.get_u32().map_err(MessageError::Header)?;
        let vers = dec.get_u32().map_err(MessageError::Header)?;
        let proc_ = dec.get_i32().map_err(MessageError::Header)?;
        let msg_type = MessageType::try_from(dec.get_u32().map_err(MessageError::Header)?)?;
        let serial = dec.get_u32().map_err(MessageError::Header)?;
        let status = MessageStatus::try_from(dec.get_u32().map_err(MessageError::Header)?)?;
        Ok(Self {
            prog,
            vers,
            proc_,
            msg_type,
            serial,
            status,
        })
    }

    fn encode(&self, enc: &mut Encoder) {
        enc.put_u32(self.prog);
        enc.put_u32(self.vers);
        enc.put_i32(self.proc_);
        enc.put_u32(self.msg_type as u32);
        enc.put_u32(self.serial);
        enc.put_u32(self.status as u32);
    }
}

/// One decoded message: its header and its raw payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The header.
    pub header: Header,
    /// The payload (procedure args, ret, event, stream data or `remote_error`).
    pub payload: Vec<u8>,
}

impl Message {
    /// Decodes a message from a frame body (everything after the length word).
    pub fn decode(body: &[u8]) -> Result<Self, MessageError> {
        let mut dec = Decoder::new(body);
        let header = Header::decode(&mut dec)?;
        Ok(Self {
            header,
            payload: dec.rest().to_vec(),
        })
    }

    /// [`Message::decode`] for a body already owned: the payload reuses its buffer, so a
    /// 16 MiB frame is not held twice.
    fn decode_owned(mut body: Vec<u8>) -> Result<Self, MessageError> {
        let header = Header::decode(&mut Decoder::new(&body))?;
        // A decoded header means `body` holds at least its HEADER_LEN bytes.
        body.drain(..HEADER_LEN);
        Ok(Self {
            header,
            payload: body,
        })
    }

    /// Decodes the payload as `T`, which must use all of it.
    pub fn payload_as<T: XdrDecode>(&self) -> Result<T, XdrError> {
        crate::xdr::from_bytes(&self.payload)
    }
}

/// Builds a complete frame (length word, header, payload).
pub fn encode_frame(header: &Header, payload: &[u8]) -> Result<Vec<u8>, MessageError> {
    if payload.len() > PAYLOAD_MAX {
        return Err(MessageError::PayloadTooLong(payload.len()));
    }
    let total = LEN_WORD + HEADER_LEN + payload.len();
    let mut enc = Encoder::with_buffer(Vec::with_capacity(total));
    // The bound above keeps `total` far below u32::MAX.
    enc.put_u32(total as u32);
    header.encode(&mut enc);
    let mut frame = enc.into_bytes();
    frame.extend_from_slice(payload);
    Ok(frame)
}

/// Builds a frame whose payload is `value`.
pub fn encode_frame_with<T: XdrEncode + ?Sized>(
    header: &Header,
    value: &T,
) -> Result<Vec<u8>, EncodeError> {
    let payload = crate::xdr::to_bytes(value)?;
    Ok(encode_frame(header, &payload)?)
}

/// Builds an error reply (type REPLY, status ERROR) to the call `proc_`/`serial`.
pub fn encode_error_reply(
    proc_: i32,
    serial: u32,
    err: &RemoteError,
) -> Result<Vec<u8>, EncodeError> {
    let header = Header::remote(proc_, MessageType::Reply, serial, MessageStatus::Error);
    encode_frame_with(&header, err)
}

/// Encoding a payload or framing it failed.
#[derive(Debug, Error)]
pub enum EncodeError {
    /// The payload could not be encoded.
    #[error("encoding the payload failed")]
    Xdr(#[from] XdrError),
    /// The payload does not fit in a frame.
    #[error("framing the payload failed")]
    Frame(#[from] MessageError),
}

/// Checks a length word and returns how many body bytes follow it.
pub fn body_len(length_word: [u8; 4]) -> Result<usize, MessageError> {
    let len = u32::from_be_bytes(length_word);
    let total = len as usize;
    if total < LEN_WORD + HEADER_LEN {
        return Err(MessageError::TooShort(len));
    }
    if total - LEN_WORD > MESSAGE_MAX {
        return Err(MessageError::TooLong(len));
    }
    Ok(total - LEN_WORD)
}

/// Reads one frame. Returns `Ok(None)` when the peer closed the connection between frames.
pub async fn read_message<R: AsyncRead + Unpin>(
    reader: &mut R,
) -> Result<Option<Message>, MessageError> {
    let mut word = [0u8; LEN_WORD];
    let mut got = 0;
    while got < LEN_WORD {
        match reader.read(&mut word[got..]).await {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(MessageError::Truncated(LEN_WORD)),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(MessageError::Io(e)),
        }
    }
    let len = body_len(word)?;
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            MessageError::Truncated(len + LEN_WORD)
        } else {
            MessageError::Io(e)
        }
    })?;
    Message::decode_owned(body).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn frame_layout_matches_libvirt() {
        // Arrange: the CONNECT_CLOSE reply libvirtd sent (captured): 28 bytes, empty payload.
        let header = Header::remote(2, MessageType::Reply, 9, MessageStatus::Ok);

        // Act
        let frame = encode_frame(&header, &[]).unwrap();

        // Assert
        assert_eq!(
            frame,
            [
                0, 0, 0, 28, 0x20, 0x00, 0x80, 0x86, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0,
                9, 0, 0, 0, 0
            ]
        );
    }

    #[test]
    fn length_word_is_checked_before_reading_the_body() {
        // Assert
        assert!(matches!(
            body_len((MESSAGE_MAX as u32 + 5).to_be_bytes()),
            Err(MessageError::TooLong(_))
        ));
        assert!(matches!(
            body_len(27u32.to_be_bytes()),
            Err(MessageError::TooShort(27))
        ));
        assert_eq!(body_len(28u32.to_be_bytes()).unwrap(), 24);
        assert_eq!(
            body_len((MESSAGE_MAX as u32 + 4).to_be_bytes()).unwrap(),
            MESSAGE_MAX
        );
    }

    #[tokio::test]
    async fn reads_frames_and_reports_clean_eof() {
        // Arrange
        let header = Header::keepalive(KEEPALIVE_PROC_PING);
        let mut bytes = encode_frame(&header, &[1, 2, 3, 4]).unwrap();
        bytes.extend(encode_frame(&header, &[]).unwrap());
        let mut reader = &bytes[..];

        // Act
        let first = read_message(&mut reader).await.unwrap().unwrap();
        let second = read_message(&mut reader).await.unwrap().unwrap();
        let end = read_message(&mut reader).await.unwrap();

        // Assert
        assert_eq!(first.header, header);
        assert_eq!(first.payload, vec![1, 2, 3, 4]);
        assert!(second.payload.is_empty());
        assert!(end.is_none());
    }

    #[tokio::test]
    async fn eof_inside_a_frame_is_an_error() {
        // Arrange
        let frame = encode_frame(&Header::keepalive(1), &[0; 8]).unwrap();
        let mut reader = &frame[..frame.len() - 3];

        // Act
        let err = read_message(&mut reader).await.unwrap_err();

        // Assert
        assert!(matches!(err, MessageError::Truncated(36)), "{err}");
    }

    #[tokio::test]
    async fn unknown_type_is_refused() {
        // Arrange
        let mut frame = encode_frame(&Header::keepalive(1), &[]).unwrap();
        frame[4 + 12..4 + 16].copy_from_slice(&9u32.to_be_bytes());
        let mut reader = &frame[..];

        // Act
        let err = read_message(&mut reader).await.unwrap_err();

        // Assert
        assert!(matches!(err, MessageError::UnknownType(9)));
    }

    proptest! {
        #[test]
        fn random_bodies_never_panic(body in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = Message::decode(&body);
        }

        #[test]
        fn headers_round_trip(proc_ in any::<i32>(), serial in any::<u32>(), t in 0u32..7, s in 0u32..3) {
            let header = Header {
                prog: REMOTE_PROGRAM,
                vers: 1,
                proc_,
                msg_type: MessageType::try_from(t).unwrap(),
                serial,
                status: MessageStatus::try_from(s).unwrap(),
            };
            let frame = encode_frame(&header, &[9, 9]).unwrap();
            let len = body_len(frame[..4].try_into().unwrap()).unwrap();
            prop_assert_eq!(len, frame.len() - 4);
            let msg = Message::decode(&frame[4..]).unwrap();
            prop_assert_eq!(msg.header, header);
            prop_assert_eq!(msg.payload, vec![9, 9]);
        }
    }
}

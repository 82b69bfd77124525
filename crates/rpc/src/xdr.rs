//! XDR (RFC 4506) as libvirt's rpcgen-generated code speaks it.
//!
//! Everything is big-endian and padded to 4 bytes. Note two rpcgen details that matter on the
//! wire: a C `char`/`short` (signed or not) is widened to a 4-byte XDR integer, so `char x[32]`
//! is 128 bytes and `char x<N>` is a count followed by N 4-byte words; only `opaque` packs bytes.
//!
//! Decoding never trusts a length: every count is checked against its protocol limit and
//! against the bytes that remain *before* anything is allocated, and errors name the field.

use thiserror::Error;

/// libvirt's `REMOTE_STRING_MAX`: the limit of every `remote_nonnull_string`.
pub const REMOTE_STRING_MAX: u32 = 4_194_304;

/// A 16-byte domain/network UUID (`remote_uuid`, fixed opaque).
pub type Uuid = [u8; 16];

/// What went wrong while encoding or decoding XDR.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum XdrError {
    /// The input ended inside a field.
    #[error("XDR field `{field}`: needs {needed} bytes but only {remaining} remain")]
    Truncated {
        /// The field being decoded.
        field: &'static str,
        /// Bytes the field needs.
        needed: usize,
        /// Bytes left in the input.
        remaining: usize,
    },
    /// A length or count is above the protocol limit of its field.
    #[error("XDR field `{field}`: length {len} exceeds the limit {max}")]
    TooLong {
        /// The field being encoded or decoded.
        field: &'static str,
        /// The length or element count found.
        len: usize,
        /// The limit the protocol sets for this field.
        max: u32,
    },
    /// A bool or optional-pointer discriminant that is neither 0 nor 1.
    #[error("XDR field `{field}`: value {value} is not a boolean (0 or 1)")]
    InvalidBool {
        /// The field being decoded.
        field: &'static str,
        /// The value found.
        value: u32,
    },
    /// A union discriminant with no arm.
    #[error("XDR field `{field}`: unknown union discriminant {value}")]
    UnknownDiscriminant {
        /// The field being decoded.
        field: &'static str,
        /// The discriminant found.
        value: i32,
    },
    /// A string that is not UTF-8.
    #[error("XDR field `{field}`: string is not valid UTF-8")]
    InvalidUtf8 {
        /// The field being decoded.
        field: &'static str,
    },
    /// Bytes left over after a complete value.
    #[error("{count} unexpected trailing bytes after `{what}`")]
    TrailingBytes {
        /// The type that was decoded.
        what: &'static str,
        /// How many bytes were left.
        count: usize,
    },
}

/// A value that can be written as XDR.
pub trait XdrEncode {
    /// Appends `self` to `enc`.
    fn encode(&self, enc: &mut Encoder) -> Result<(), XdrError>;
}

/// A value that can be read from XDR; types without a protocol limit of their own.
pub trait XdrDecode: Sized {
    /// Reads one value from `dec`.
    fn decode(dec: &mut Decoder<'_>) -> Result<Self, XdrError>;
}

/// Variable-length values whose limit is set by the field that holds them
/// (`string<N>`, `opaque<N>`, `T<N>`).
pub trait XdrBounded: Sized {
    /// Appends `self`, refusing a length above `max`.
    fn encode_bounded(&self, enc: &mut Encoder, max: u32) -> Result<(), XdrError>;
    /// Reads one value, refusing a length above `max`.
    fn decode_bounded(dec: &mut Decoder<'_>, max: u32) -> Result<Self, XdrError>;
}

/// Encodes a value into a fresh buffer.
pub fn to_bytes<T: XdrEncode + ?Sized>(value: &T) -> Result<Vec<u8>, XdrError> {
    let mut enc = Encoder::new();
    value.encode(&mut enc)?;
    Ok(enc.into_bytes())
}

/// Decodes a value that must use all of `bytes`.
pub fn from_bytes<T: XdrDecode>(bytes: &[u8]) -> Result<T, XdrError> {
    let mut dec = Decoder::new(bytes);
    let value = T::decode(&mut dec)?;
    dec.finish(std::any::type_name::<T>())?;
    Ok(value)
}

fn padding(len: usize) -> usize {
    (4 - len % 4) % 4
}

/// Appends XDR items to a byte buffer.
#[derive(Debug, Default)]
pub struct Encoder {
    buf: Vec<u8>,
    field: &'static str,
}

impl Encoder {
    /// An empty encoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// An encoder that appends to `buf` (e.g. after an already written header).
    pub fn with_buffer(buf: Vec<u8>) -> Self {
        Self { buf, field: "" }
    }

    /// The bytes written so far.
    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }

    /// Names the field written next, for error messages.
    pub fn set_field(&mut self, field: &'static str) {
        self.field = field;
    }

    /// Writes an unsigned 32-bit integer.
    pub fn put_u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    /// Writes a signed 32-bit integer.
    pub fn put_i32(&mut self, v: i32) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    /// Writes an unsigned hyper.
    pub fn put_u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    /// Writes a signed hyper.
    pub fn put_i64(&mut self, v: i64) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    /// Writes a bool as 0 or 1.
    pub fn put_bool(&mut self, v: bool) {
        self.put_u32(u32::from(v));
    }

    /// Writes an IEEE 754 double.
    pub fn put_f64(&mut self, v: f64) {
        self.buf.extend_from_slice(&v.to_bits().to_be_bytes());
    }

    /// Writes fixed-length opaque data (no length word), padded to 4 bytes.
    pub fn put_fixed_opaque(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
        self.buf
            .extend(std::iter::repeat_n(0, padding(bytes.len())));
    }

    /// Writes a length-prefixed count, refusing one above `max`.
    pub fn put_len(&mut self, len: usize, max: u32) -> Result<(), XdrError> {
        let too_long = XdrError::TooLong {
            field: self.field,
            len,
            max,
        };
        let len32 = u32::try_from(len).map_err(|_| too_long.clone())?;
        if len32 > max {
            return Err(too_long);
        }
        self.put_u32(len32);
        Ok(())
    }

    /// Writes variable-length opaque data of at most `max` bytes.
    pub fn put_opaque(&mut self, bytes: &[u8], max: u32) -> Result<(), XdrError> {
        self.put_len(bytes.len(), max)?;
        self.put_fixed_opaque(bytes);
        Ok(())
    }

    /// Writes a string of at most `max` bytes.
    pub fn put_string(&mut self, s: &str, max: u32) -> Result<(), XdrError> {
        self.put_opaque(s.as_bytes(), max)
    }
}

/// Reads XDR items from a byte slice.
#[derive(Debug)]
pub struct Decoder<'a> {
    buf: &'a [u8],
    pos: usize,
    field: &'static str,
}

impl<'a> Decoder<'a> {
    /// A decoder over `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Self {
            buf,
            pos: 0,
            field: "",
        }
    }

    /// Names the field read next, for error messages.
    pub fn set_field(&mut self, field: &'static str) {
        self.field = field;
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// The unread rest of the input.
    pub fn rest(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }

    /// Checks that the input was used up by a value of type `what`.
    pub fn finish(&self, what: &'static str) -> Result<(), XdrError> {
        match self.remaining() {
            0 => Ok(()),
            count => Err(XdrError::TrailingBytes { what, count }),
        }
    }

    fn take(&mut self, needed: usize) -> Result<&'a [u8], XdrError> {
        let remaining = self.remaining();
        if needed > remaining {
            return Err(XdrError::Truncated {
                field: self.field,
                needed,
                remaining,
            });
        }
        let bytes = &self.buf[self.pos..self.pos + needed];
        self.pos += needed;
        Ok(bytes)
    }

    fn take_array<const N: usize>(&mut self) -> Result<[u8; N], XdrError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    /// Reads an unsigned 32-bit integer.
    pub fn get_u32(&mut self) -> Result<u32, XdrError> {
        Ok(u32::from_be_bytes(self.take_array()?))
    }

    /// Reads a signed 32-bit integer.
    pub fn get_i32(&mut self) -> Result<i32, XdrError> {
        Ok(i32::from_be_bytes(self.take_array()?))
    }

    /// Reads an unsigned hyper.
    pub fn get_u64(&mut self) -> Result<u64, XdrError> {
        Ok(u64::from_be_bytes(self.take_array()?))
    }

    /// Reads a signed hyper.
    pub fn get_i64(&mut self) -> Result<i64, XdrError> {
        Ok(i64::from_be_bytes(self.take_array()?))
    }

    /// Reads an IEEE 754 double.
    pub fn get_f64(&mut self) -> Result<f64, XdrError> {
        Ok(f64::from_bits(u64::from_be_bytes(self.take_array()?)))
    }

    /// Reads a bool, refusing anything but 0 or 1.
    pub fn get_bool(&mut self) -> Result<bool, XdrError> {
        match self.get_u32()? {
            0 => Ok(false),
            1 => Ok(true),
            value => Err(XdrError::InvalidBool {
                field: self.field,
                value,
            }),
        }
    }

    /// Reads `len` bytes of opaque data plus their padding.
    pub fn get_fixed_opaque(&mut self, len: usize) -> Result<&'a [u8], XdrError> {
        let needed = len.checked_add(padding(len)).ok_or(XdrError::Truncated {
            field: self.field,
            needed: usize::MAX,
            remaining: self.remaining(),
        })?;
        let bytes = self.take(needed)?;
        Ok(&bytes[..len])
    }

    /// Reads a count, refusing one above `max` or one that claims more elements of at least
    /// `min_elem_size` bytes each than the input still holds.
    pub fn get_len(&mut self, max: u32, min_elem_size: usize) -> Result<usize, XdrError> {
        let len = self.get_u32()?;
        if len > max {
            return Err(XdrError::TooLong {
                field: self.field,
                len: len as usize,
                max,
            });
        }
        let len = len as usize;
        let needed = len.saturating_mul(min_elem_size);
        if needed > self.remaining() {
            return Err(XdrError::Truncated {
                field: self.field,
                needed,
                remaining: self.remaining(),
            });
        }
        Ok(len)
    }

    /// Reads variable-length opaque data of at most `max` bytes.
    pub fn get_opaque(&mut self, max: u32) -> Result<&'a [u8], XdrError> {
        let len = self.get_len(max, 1)?;
        self.get_fixed_opaque(len)
    }

    /// Reads a UTF-8 string of at most `max` bytes.
    pub fn get_string(&mut self, max: u32) -> Result<String, XdrError> {
        let bytes = self.get_opaque(max)?;
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|_| XdrError::InvalidUtf8 { field: self.field })
    }
}

macro_rules! xdr_int {
    ($ty:ty, $put:ident, $get:ident) => {
        impl XdrEncode for $ty {
            fn encode(&self, enc: &mut Encoder) -> Result<(), XdrError> {
                enc.$put(*self);
                Ok(())
            }
        }
        impl XdrDecode for $ty {
            fn decode(dec: &mut Decoder<'_>) -> Result<Self, XdrError> {
                dec.$get()
            }
        }
    };
}

xdr_int!(u32, put_u32, get_u32);
xdr_int!(i32, put_i32, get_i32);
xdr_int!(u64, put_u64, get_u64);
xdr_int!(i64, put_i64, get_i64);
xdr_int!(f64, put_f64, get_f64);
xdr_int!(bool, put_bool, get_bool);

/// rpcgen's `char`: one byte of value in a 4-byte XDR int.
impl XdrEncode for i8 {
    fn encode(&self, enc: &mut Encoder) -> Result<(), XdrError> {
        enc.put_i32(i32::from(*self));
        Ok(())
    }
}

impl XdrDecode for i8 {
    fn decode(dec: &mut Decoder<'_>) -> Result<Self, XdrError> {
        // xdr_char truncates the int to a char; do the same rather than reject the message.
        Ok(dec.get_i32()? as i8)
    }
}

/// rpcgen's `unsigned short`: widened to a 4-byte XDR int.
impl XdrEncode for u16 {
    fn encode(&self, enc: &mut Encoder) -> Result<(), XdrError> {
        enc.put_u32(u32::from(*self));
        Ok(())
    }
}

impl XdrDecode for u16 {
    fn decode(dec: &mut Decoder<'_>) -> Result<Self, XdrError> {
        // xdr_u_short refuses values that do not fit; so do we.
        let value = dec.get_u32()?;
        u16::try_from(value).map_err(|_| XdrError::TooLong {
            field: dec.field,
            len: value as usize,
            max: u32::from(u16::MAX),
        })
    }
}

/// A `void` body.
impl XdrEncode for () {
    fn encode(&self, _enc: &mut Encoder) -> Result<(), XdrError> {
        Ok(())
    }
}

impl XdrDecode for () {
    fn decode(_dec: &mut Decoder<'_>) -> Result<Self, XdrError> {
        Ok(())
    }
}

/// `remote_nonnull_string`: a string with libvirt's default limit.
impl XdrEncode for String {
    fn encode(&self, enc: &mut Encoder) -> Result<(), XdrError> {
        enc.put_string(self, REMOTE_STRING_MAX)
    }
}

impl XdrDecode for String {
    fn decode(dec: &mut Decoder<'_>) -> Result<Self, XdrError> {
        dec.get_string(REMOTE_STRING_MAX)
    }
}

impl XdrBounded for String {
    fn encode_bounded(&self, enc: &mut Encoder, max: u32) -> Result<(), XdrError> {
        enc.put_string(self, max)
    }
    fn decode_bounded(dec: &mut Decoder<'_>, max: u32) -> Result<Self, XdrError> {
        dec.get_string(max)
    }
}

/// `opaque x<N>`: packed bytes.
impl XdrBounded for Vec<u8> {
    fn encode_bounded(&self, enc: &mut Encoder, max: u32) -> Result<(), XdrError> {
        enc.put_opaque(self, max)
    }
    fn decode_bounded(dec: &mut Decoder<'_>, max: u32) -> Result<Self, XdrError> {
        Ok(dec.get_opaque(max)?.to_vec())
    }
}

/// `T x<N>`: a count and the elements. Every XDR item is at least 4 bytes, which bounds the
/// allocation by the input size.
impl<T: XdrEncode + XdrDecode> XdrBounded for Vec<T> {
    fn encode_bounded(&self, enc: &mut Encoder, max: u32) -> Result<(), XdrError> {
        enc.put_len(self.len(), max)?;
        self.iter().try_for_each(|item| item.encode(enc))
    }
    fn decode_bounded(dec: &mut Decoder<'_>, max: u32) -> Result<Self, XdrError> {
        let len = dec.get_len(max, 4)?;
        let mut items = Vec::with_capacity(len);
        for _ in 0..len {
            items.push(T::decode(dec)?);
        }
        Ok(items)
    }
}

/// `T *x`: an optional value (pointer) as a bool followed by the value.
impl<T: XdrEncode> XdrEncode for Option<T> {
    fn encode(&self, enc: &mut Encoder) -> Result<(), XdrError> {
        enc.put_bool(self.is_some());
        self.as_ref().map_or(Ok(()), |v| v.encode(enc))
    }
}

impl<T: XdrDecode> XdrDecode for Option<T> {
    fn decode(dec: &mut Decoder<'_>) -> Result<Self, XdrError> {
        if dec.get_bool()? {
            Ok(Some(T::decode(dec)?))
        } else {
            Ok(None)
        }
    }
}

/// `opaque x[N]` (e.g. the 16-byte UUID): packed bytes, padded.
impl<const N: usize> XdrEncode for [u8; N] {
    fn encode(&self, enc: &mut Encoder) -> Result<(), XdrError> {
        enc.put_fixed_opaque(self);
        Ok(())
    }
}

impl<const N: usize> XdrDecode for [u8; N] {
    fn decode(dec: &mut Decoder<'_>) -> Result<Self, XdrError> {
        let mut out = [0u8; N];
        out.copy_from_slice(dec.get_fixed_opaque(N)?);
        Ok(out)
    }
}

/// `T x[N]` for non-opaque `T` (e.g. `char model[32]`): N items, no count.
impl<T: XdrEncode + XdrDecode + Copy + Default, const N: usize> XdrEncode for [T; N] {
    fn encode(&self, enc: &mut Encoder) -> Result<(), XdrError> {
        self.iter().try_for_each(|item| item.encode(enc))
    }
}

impl<T: XdrEncode + XdrDecode + Copy + Default, const N: usize> XdrDecode for [T; N] {
    fn decode(dec: &mut Decoder<'_>) -> Result<Self, XdrError> {
        let mut out = [T::default(); N];
        for slot in &mut out {
            *slot = T::decode(dec)?;
        }
        Ok(out)
    }
}

/// Declares a struct whose fields are encoded in order, as rpcgen does.
///
/// A field of a variable-length type carries its protocol limit: `name: Vec<T> [max = N]`.
/// Fields without a limit use [`XdrEncode`]/[`XdrDecode`].
#[macro_export]
macro_rules! xdr_struct {
    ($(
        $(#[$meta:meta])*
        pub struct $name:ident {
            $( $(#[$fmeta:meta])* pub $field:ident : $ty:ty $([max = $max:expr])? ),* $(,)?
        }
    )*) => {$(
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Default)]
        pub struct $name {
            $( $(#[$fmeta])* pub $field: $ty, )*
        }

        impl $crate::xdr::XdrEncode for $name {
            #[allow(unused_variables, reason = "structs without fields encode nothing")]
            fn encode(&self, enc: &mut $crate::xdr::Encoder) -> Result<(), $crate::xdr::XdrError> {
                $(
                    enc.set_field(concat!(stringify!($name), ".", stringify!($field)));
                    $crate::xdr_struct!(@encode enc, self.$field, $ty $(, $max)?);
                )*
                Ok(())
            }
        }

        impl $crate::xdr::XdrDecode for $name {
            #[allow(unused_variables, reason = "structs without fields decode nothing")]
            fn decode(dec: &mut $crate::xdr::Decoder<'_>) -> Result<Self, $crate::xdr::XdrError> {
                Ok(Self {
                    $(
                        $field: {
                            dec.set_field(concat!(stringify!($name), ".", stringify!($field)));
                            $crate::xdr_struct!(@decode dec, $ty $(, $max)?)
                        },
                    )*
                })
            }
        }
    )*};
    (@encode $enc:ident, $value:expr, $ty:ty) => {
        $crate::xdr::XdrEncode::encode(&$value, $enc)?
    };
    (@encode $enc:ident, $value:expr, $ty:ty, $max:expr) => {
        $crate::xdr::XdrBounded::encode_bounded(&$value, $enc, $max)?
    };
    (@decode $dec:ident, $ty:ty) => {
        <$ty as $crate::xdr::XdrDecode>::decode($dec)?
    };
    (@decode $dec:ident, $ty:ty, $max:expr) => {
        <$ty as $crate::xdr::XdrBounded>::decode_bounded($dec, $max)?
    };
}

/// Decodes a hex dump of captured wire bytes, for tests.
#[cfg(test)]
pub(crate) fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    crate::xdr_struct! {
        /// A struct exercising every kind of field.
        pub struct Sample {
            pub name: String,
            pub uuid: Uuid,
            pub id: i32,
            pub maybe: Option<String>,
            pub tags: Vec<String> [max = 4],
            pub blob: Vec<u8> [max = 8],
            pub model: [i8; 3],
            pub big: u64,
            pub flag: bool,
        }
    }

    fn sample() -> Sample {
        Sample {
            name: "vm1".into(),
            uuid: [7; 16],
            id: -1,
            maybe: Some("x".into()),
            tags: vec!["a".into(), "bc".into()],
            blob: vec![1, 2, 3],
            model: [b'i' as i8, b'6' as i8, 0],
            big: 0x0102_0304_0506_0708,
            flag: true,
        }
    }

    #[test]
    fn encodes_with_big_endian_and_padding() {
        // Arrange
        let value = sample();

        // Act
        let bytes = to_bytes(&value).unwrap();

        // Assert: "vm1" is length 3 + 1 pad byte; the uuid is 16 packed bytes.
        assert_eq!(&bytes[..8], &[0, 0, 0, 3, b'v', b'm', b'1', 0]);
        assert_eq!(&bytes[8..24], &[7; 16]);
        assert_eq!(&bytes[24..28], &[0xff; 4]);
        assert_eq!(bytes.len() % 4, 0);
        assert_eq!(from_bytes::<Sample>(&bytes).unwrap(), value);
    }

    #[test]
    fn char_arrays_use_four_bytes_per_char() {
        // Arrange
        let model: [i8; 2] = [b'a' as i8, 0];

        // Act
        let bytes = to_bytes(&model).unwrap();

        // Assert
        assert_eq!(bytes, vec![0, 0, 0, b'a', 0, 0, 0, 0]);
    }

    #[test]
    fn count_above_limit_is_refused_naming_the_field() {
        // Arrange: five tags where the limit is four.
        let mut value = sample();
        value.tags = vec![String::new(); 5];

        // Act
        let err = to_bytes(&value).unwrap_err();

        // Assert
        assert_eq!(
            err,
            XdrError::TooLong {
                field: "Sample.tags",
                len: 5,
                max: 4
            }
        );
    }

    #[test]
    fn huge_count_is_refused_before_allocating() {
        // Arrange: a Vec<u32> claiming 1e9 elements with 4 bytes of input.
        let bytes = [0x3b, 0x9a, 0xca, 0x00, 0, 0, 0, 1];
        let mut dec = Decoder::new(&bytes);
        dec.set_field("ids");

        // Act
        let err = <Vec<u32> as XdrBounded>::decode_bounded(&mut dec, u32::MAX).unwrap_err();

        // Assert
        assert!(
            matches!(err, XdrError::Truncated { field: "ids", .. }),
            "{err}"
        );
    }

    #[test]
    fn string_longer_than_its_limit_is_refused() {
        // Arrange
        let bytes = to_bytes(&"hello".to_string()).unwrap();
        let mut dec = Decoder::new(&bytes);

        // Act
        let err = <String as XdrBounded>::decode_bounded(&mut dec, 4).unwrap_err();

        // Assert
        assert!(matches!(err, XdrError::TooLong { len: 5, max: 4, .. }));
    }

    #[test]
    fn bad_optional_discriminant_is_refused() {
        // Arrange
        let bytes = [0, 0, 0, 2];

        // Act
        let err = from_bytes::<Option<u32>>(&bytes).unwrap_err();

        // Assert
        assert!(matches!(err, XdrError::InvalidBool { value: 2, .. }));
    }

    #[test]
    fn trailing_bytes_are_refused() {
        // Act
        let err = from_bytes::<u32>(&[0, 0, 0, 1, 0, 0, 0, 0]).unwrap_err();

        // Assert
        assert!(matches!(err, XdrError::TrailingBytes { count: 4, .. }));
    }

    #[test]
    fn invalid_utf8_is_refused() {
        // Act
        let err = from_bytes::<String>(&[0, 0, 0, 1, 0xff, 0, 0, 0]).unwrap_err();

        // Assert
        assert!(matches!(err, XdrError::InvalidUtf8 { .. }));
    }

    fn arb_sample() -> impl Strategy<Value = Sample> {
        (
            ".{0,20}",
            any::<[u8; 16]>(),
            any::<i32>(),
            proptest::option::of(".{0,8}"),
            proptest::collection::vec(".{0,5}", 0..=4),
            proptest::collection::vec(any::<u8>(), 0..=8),
            any::<[i8; 3]>(),
            any::<u64>(),
            any::<bool>(),
        )
            .prop_map(
                |(name, uuid, id, maybe, tags, blob, model, big, flag)| Sample {
                    name,
                    uuid,
                    id,
                    maybe,
                    tags,
                    blob,
                    model,
                    big,
                    flag,
                },
            )
    }

    proptest! {
        #[test]
        fn structs_round_trip(value in arb_sample()) {
            let bytes = to_bytes(&value).unwrap();
            prop_assert_eq!(bytes.len() % 4, 0);
            prop_assert_eq!(from_bytes::<Sample>(&bytes).unwrap(), value);
        }

        #[test]
        fn primitives_round_trip(a in any::<i64>(), b in any::<u32>(), c in any::<f64>()) {
            let bytes = to_bytes(&(a, b, c)).unwrap();
            let back: (i64, u32, f64) = from_bytes(&bytes).unwrap();
            prop_assert_eq!(back.0, a);
            prop_assert_eq!(back.1, b);
            prop_assert_eq!(back.2.to_bits(), c.to_bits());
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = from_bytes::<Sample>(&bytes);
            let _ = from_bytes::<Option<String>>(&bytes);
        }
    }

    /// Tuples only serve the tests above.
    impl<A: XdrEncode, B: XdrEncode, C: XdrEncode> XdrEncode for (A, B, C) {
        fn encode(&self, enc: &mut Encoder) -> Result<(), XdrError> {
            self.0.encode(enc)?;
            self.1.encode(enc)?;
            self.2.encode(enc)
        }
    }

    impl<A: XdrDecode, B: XdrDecode, C: XdrDecode> XdrDecode for (A, B, C) {
        fn decode(dec: &mut Decoder<'_>) -> Result<Self, XdrError> {
            Ok((A::decode(dec)?, B::decode(dec)?, C::decode(dec)?))
        }
    }
}

//! The one base64 dialect federation speaks: Matrix's "Unpadded Base64" (Matrix specification,
//! Appendices, "Unpadded Base64"), used for keys, seeds and signatures.
//!
//! Output is always the standard RFC 4648 alphabet without `=` padding. Input is read leniently,
//! as the appendix asks ("implementations SHOULD accept input with or without padding characters
//! wherever possible"): padding is optional, and non-zero trailing bits in the last character are
//! accepted, because the spec's own test seed (`…XA1`) has them and Python's `unpaddedbase64`,
//! which produced it, never rejects them. Leniency is harmless here: what gets verified is always
//! the decoded bytes, never the encoded text.

use base64::Engine;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::{DecodePaddingMode, general_purpose};

/// Why a base64 value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Base64Error {
    /// The text is not standard-alphabet base64 (padded or not).
    #[error("invalid base64")]
    Invalid,
    /// The text decoded, but not to the number of bytes the value must have.
    #[error("expected {expected} bytes after base64 decoding, got {actual}")]
    WrongLength {
        /// The byte length the value must have.
        expected: usize,
        /// The byte length it decoded to.
        actual: usize,
    },
}

/// Decodes with or without padding and tolerates non-canonical trailing bits (see module docs).
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// Encodes bytes as unpadded standard base64.
pub fn encode(bytes: impl AsRef<[u8]>) -> String {
    general_purpose::STANDARD_NO_PAD.encode(bytes)
}

/// Decodes standard base64, padded or not.
pub fn decode(text: &str) -> Result<Vec<u8>, Base64Error> {
    LENIENT.decode(text).map_err(|_| Base64Error::Invalid)
}

/// Decodes standard base64 that must hold exactly `N` bytes (a key, a seed, a signature).
pub fn decode_array<const N: usize>(text: &str) -> Result<[u8; N], Base64Error> {
    let bytes = decode(text)?;
    let actual = bytes.len();
    bytes.try_into().map_err(|_| Base64Error::WrongLength {
        expected: N,
        actual,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The examples listed under "Unpadded Base64" in the spec's appendices.
    #[test]
    fn spec_examples() {
        let cases = [
            ("", ""),
            ("f", "Zg"),
            ("fo", "Zm8"),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg"),
            ("fooba", "Zm9vYmE"),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, encoded) in cases {
            assert_eq!(encode(plain), encoded);
            assert_eq!(decode(encoded).unwrap(), plain.as_bytes());
        }
    }

    #[test]
    fn accepts_padding_and_trailing_bits() {
        assert_eq!(decode("Zg==").unwrap(), b"f");
        assert_eq!(decode("Zm8=").unwrap(), b"fo");
        // "Zh" carries non-zero trailing bits; strict decoders refuse it.
        assert_eq!(decode("Zh").unwrap(), b"f");
        // So does the spec's own test seed, which is why the leniency is needed at all.
        let spec_seed = "YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1";
        assert!(general_purpose::STANDARD_NO_PAD.decode(spec_seed).is_err());
        assert_eq!(decode_array::<32>(spec_seed).unwrap().len(), 32);
    }

    #[test]
    fn rejects_garbage_and_wrong_lengths() {
        assert_eq!(decode("Z"), Err(Base64Error::Invalid));
        assert_eq!(decode("Zm9v!"), Err(Base64Error::Invalid));
        assert_eq!(
            decode("Zm-v"),
            Err(Base64Error::Invalid),
            "url-safe alphabet"
        );
        assert_eq!(
            decode_array::<4>("Zm9v"),
            Err(Base64Error::WrongLength {
                expected: 4,
                actual: 3
            })
        );
        assert_eq!(decode_array::<3>("Zm9v").unwrap(), *b"foo");
    }
}

//! One-time codes: parsing what the user typed, and formatting what a generator produced,
//! without touching the heap.

use core::fmt;

use subtle::ConstantTimeEq;
use zeroize::Zeroize;

use crate::algorithm::Digits;

/// A generated one-time code: its value and number of digits. A live code is a credential:
/// `Debug` is redacted, equality is constant-time, and the digits are wiped on drop.
/// [`Code::as_str`] and `Display` give the zero-padded digits.
#[derive(Clone)]
pub struct Code {
    text: [u8; 8],
    digits: Digits,
}

impl Code {
    pub(crate) fn new(value: u32, digits: Digits) -> Self {
        let mut text = [b'0'; 8];
        let len = usize::from(digits.get());
        let mut rest = value;
        for slot in text.iter_mut().take(len).rev() {
            // `rest % 10` is a single decimal digit.
            *slot = b'0' + (rest % 10) as u8;
            rest /= 10;
        }
        Self { text, digits }
    }

    /// The code as the user sees it: exactly `digits` ASCII digits, zero-padded.
    pub fn as_str(&self) -> &str {
        let len = usize::from(self.digits.get());
        let digits = self.text.get(..len).unwrap_or_default();
        // Only ASCII digits are ever written into `text`.
        core::str::from_utf8(digits).unwrap_or_default()
    }

    /// The numeric value (leading zeros dropped).
    pub fn value(&self) -> u32 {
        self.as_str()
            .bytes()
            .fold(0, |acc, b| acc * 10 + u32::from(b - b'0'))
    }

    /// The number of digits.
    pub fn digits(&self) -> Digits {
        self.digits
    }
}

/// Constant-time: comparing a typed code with a generated one leaks nothing.
impl PartialEq for Code {
    fn eq(&self, other: &Self) -> bool {
        (self.text.ct_eq(&other.text) & self.digits.get().ct_eq(&other.digits.get())).into()
    }
}

impl Eq for Code {}

impl Drop for Code {
    fn drop(&mut self) {
        self.text.zeroize();
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Code({} digits, [REDACTED])", self.digits)
    }
}

/// Parses a typed code: exactly `digits` ASCII digits, nothing else. Anything else is
/// refused here, before any HMAC is computed.
#[inline]
pub(crate) fn parse(code: &str, digits: Digits) -> Option<u32> {
    let bytes = code.as_bytes();
    if bytes.len() != usize::from(digits.get()) {
        return None;
    }
    let mut value = 0u32;
    for &b in bytes {
        if !b.is_ascii_digit() {
            return None;
        }
        value = value * 10 + u32::from(b - b'0');
    }
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_zero_padded() {
        assert_eq!(Code::new(42, Digits::SIX).as_str(), "000042");
        assert_eq!(Code::new(42, Digits::EIGHT).to_string(), "00000042");
        assert_eq!(Code::new(1_234_567, Digits::SEVEN).as_str(), "1234567");
        assert_eq!(Code::new(42, Digits::SIX).value(), 42);
    }

    #[test]
    fn debug_hides_the_code() {
        let shown = format!("{:?}", Code::new(123_456, Digits::SIX));
        assert!(!shown.contains("123456"), "{shown}");
    }

    #[test]
    fn only_exact_ascii_digits_parse() {
        assert_eq!(parse("000042", Digits::SIX), Some(42));
        assert_eq!(parse("99999999", Digits::EIGHT), Some(99_999_999));
        for bad in [
            "",
            "12345",
            "1234567",
            "12345a",
            " 12345",
            "123 456",
            "+12345",
            "-12345",
            "١٢٣٤٥٦",       // Arabic-Indic digits are not ASCII digits
            "１２３４５６", // nor are full-width ones
        ] {
            assert_eq!(parse(bad, Digits::SIX), None, "{bad:?}");
        }
    }
}

//! `otpauth://` URIs, the Key Uri Format that authenticator apps read from QR codes:
//!
//! ```text
//! otpauth://totp/ACME%20Co:alice%40example.com?secret=JBSWY3DPEHPK3PXP&issuer=ACME%20Co&algorithm=SHA1&digits=6&period=30
//! ```

use core::fmt;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use zeroize::Zeroizing;

use crate::algorithm::{Algorithm, Digits};
use crate::error::{ParamError, UriError};
use crate::hotp::{Hotp, HotpParams};
use crate::secret::Secret;
use crate::totp::{Totp, TotpParams};

/// Everything but RFC 3986's unreserved characters is percent-encoded, in the label and in
/// parameter values alike, so a `:` in an account name can never be read as the separator.
const ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Whether the URI describes a time-based or a counter-based generator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OtpKind {
    /// `otpauth://totp/…` with its period in seconds (default 30).
    Totp {
        /// The time step in seconds.
        period: u64,
    },
    /// `otpauth://hotp/…` with the counter of the next code (required).
    Hotp {
        /// The initial counter.
        counter: u64,
    },
}

/// A parsed or to-be-built `otpauth://` URI. `Debug` hides the secret; the URI text, which
/// contains it, comes out only through [`OtpAuthUri::to_uri`] and is wiped on drop.
#[derive(Clone, PartialEq, Eq)]
pub struct OtpAuthUri {
    /// TOTP or HOTP, with its period or counter.
    pub kind: OtpKind,
    /// The service the account belongs to, shown by apps above the code. Written both as
    /// the label prefix and as the `issuer` parameter, as apps expect.
    pub issuer: Option<String>,
    /// The account name, usually the user's email.
    pub account: String,
    /// The shared secret.
    pub secret: Secret,
    /// The HMAC algorithm (default SHA1).
    pub algorithm: Algorithm,
    /// The number of digits (default 6).
    pub digits: Digits,
}

impl fmt::Debug for OtpAuthUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OtpAuthUri")
            .field("kind", &self.kind)
            .field("issuer", &self.issuer)
            .field("account", &self.account)
            .field("secret", &self.secret)
            .field("algorithm", &self.algorithm)
            .field("digits", &self.digits)
            .finish()
    }
}

impl OtpAuthUri {
    /// The URI for a TOTP generator.
    pub fn for_totp(totp: &Totp, issuer: Option<&str>, account: &str) -> Self {
        let params = totp.params();
        Self {
            kind: OtpKind::Totp {
                period: params.period,
            },
            issuer: issuer.map(str::to_owned),
            account: account.to_owned(),
            secret: totp.secret().clone(),
            algorithm: params.algorithm,
            digits: params.digits,
        }
    }

    /// The URI for an HOTP generator whose next counter is `counter`.
    pub fn for_hotp(hotp: &Hotp, counter: u64, issuer: Option<&str>, account: &str) -> Self {
        let params = hotp.params();
        Self {
            kind: OtpKind::Hotp { counter },
            issuer: issuer.map(str::to_owned),
            account: account.to_owned(),
            secret: hotp.secret().clone(),
            algorithm: params.algorithm,
            digits: params.digits,
        }
    }

    /// The URI text: `otpauth://TYPE/ISSUER:ACCOUNT?secret=…&issuer=…&algorithm=…&digits=…`
    /// followed by `period` or `counter`. Every parameter is written out, defaults included,
    /// because some apps ignore what they do not see.
    ///
    /// Refuses ([`UriError::Label`]) what could not be read back as the same label: an empty
    /// account, an account that starts with a space (the Key Uri Format lets readers drop
    /// spaces after the separator), an empty issuer, and a colon in the account when there
    /// is no issuer (readers take the first colon, encoded or not, as the separator).
    pub fn to_uri(&self) -> Result<Zeroizing<String>, UriError> {
        use fmt::Write as _;

        self.check_label()?;
        let secret = self.secret.to_base32();
        let issuer_len = self.issuer.as_ref().map_or(0, String::len);
        // Sized up front (percent-encoding at most triples a byte), so the buffer is never
        // reallocated: a reallocation would leave an unwiped copy of the secret behind.
        let capacity = 128 + secret.len() + 3 * (2 * issuer_len + self.account.len());
        let mut out = String::with_capacity(capacity);
        let kind = match self.kind {
            OtpKind::Totp { .. } => "totp",
            OtpKind::Hotp { .. } => "hotp",
        };
        out.push_str("otpauth://");
        out.push_str(kind);
        out.push('/');
        if let Some(issuer) = &self.issuer {
            out.extend(utf8_percent_encode(issuer, ENCODE));
            out.push(':');
        }
        out.extend(utf8_percent_encode(&self.account, ENCODE));
        out.push_str("?secret=");
        out.push_str(&secret);
        if let Some(issuer) = &self.issuer {
            out.push_str("&issuer=");
            out.extend(utf8_percent_encode(issuer, ENCODE));
        }
        // Writing into a String cannot fail.
        let _ = write!(
            out,
            "&algorithm={}&digits={}",
            self.algorithm.as_str(),
            self.digits
        );
        let _ = match self.kind {
            OtpKind::Totp { period } => write!(out, "&period={period}"),
            OtpKind::Hotp { counter } => write!(out, "&counter={counter}"),
        };
        debug_assert_eq!(out.capacity(), capacity, "the URI buffer was reallocated");
        Ok(Zeroizing::new(out))
    }

    fn check_label(&self) -> Result<(), UriError> {
        if self.account.is_empty() {
            return Err(UriError::Label("the account name is empty"));
        }
        if self.account.starts_with(' ') {
            return Err(UriError::Label("the account name starts with a space"));
        }
        match &self.issuer {
            Some(issuer) if issuer.is_empty() => Err(UriError::Label("the issuer is empty")),
            None if self.account.contains(':') => Err(UriError::Label(
                "the account name contains ':' and there is no issuer",
            )),
            _ => Ok(()),
        }
    }

    /// Parses an `otpauth://` URI. The scheme and type are case-insensitive; unknown
    /// parameters (such as `image`) are ignored; every known one may appear at most once.
    /// The secret's length is not checked here but when a generator is built from it.
    pub fn parse(uri: &str) -> Result<Self, UriError> {
        let rest = strip_prefix_ignore_case(uri, "otpauth://").ok_or(UriError::Scheme)?;
        let type_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (kind, rest) = rest.split_at(type_end);
        let is_totp = if kind.eq_ignore_ascii_case("totp") {
            true
        } else if kind.eq_ignore_ascii_case("hotp") {
            false
        } else {
            return Err(UriError::Type);
        };
        let rest = rest
            .strip_prefix('/')
            .ok_or(UriError::Label("the label is missing"))?;
        let (label, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (label_issuer, account) = parse_label(label)?;

        let mut fields = Fields::default();
        for (index, pair) in query.split('&').enumerate().filter(|(_, p)| !p.is_empty()) {
            // Never echo a malformed pair: it could be a secret.
            let (name, value) = pair
                .split_once('=')
                .ok_or_else(|| UriError::Query(format!("number {}", index + 1)))?;
            // Names are matched ignoring ASCII case, as some generators capitalise them.
            let (slot, name) = match name.to_ascii_lowercase().as_str() {
                "secret" => (&mut fields.secret, "secret"),
                "issuer" => (&mut fields.issuer, "issuer"),
                "algorithm" => (&mut fields.algorithm, "algorithm"),
                "digits" => (&mut fields.digits, "digits"),
                "period" => (&mut fields.period, "period"),
                "counter" => (&mut fields.counter, "counter"),
                _ => continue,
            };
            let value = decode_query(value).ok_or_else(|| UriError::Query(name.to_owned()))?;
            if slot.replace(value).is_some() {
                return Err(UriError::Duplicate(name));
            }
        }

        let secret = fields.secret.ok_or(UriError::MissingSecret)?;
        let secret = Secret::from_base32(&secret).map_err(UriError::Secret)?;
        // An empty `issuer=` says nothing.
        let param_issuer = fields.issuer.filter(|issuer| !issuer.is_empty());
        let issuer = match (label_issuer, param_issuer) {
            (Some(label), Some(param)) if label != *param => {
                return Err(UriError::IssuerMismatch);
            }
            (Some(label), _) => Some(label),
            (None, param) => param.map(|p| p.to_string()),
        };
        let algorithm = match fields.algorithm {
            Some(a) => a.parse().map_err(|_: ParamError| UriError::Algorithm)?,
            None => Algorithm::Sha1,
        };
        let digits = match fields.digits {
            Some(d) => d
                .parse::<u8>()
                .ok()
                .and_then(|d| Digits::new(d).ok())
                .ok_or(UriError::Digits)?,
            None => Digits::SIX,
        };
        let kind = if is_totp {
            if fields.counter.is_some() {
                return Err(UriError::WrongTypeParameter("counter"));
            }
            let period = match fields.period {
                Some(p) => parse_number(&p)
                    .filter(|&p| p > 0)
                    .ok_or(UriError::Period)?,
                None => 30,
            };
            OtpKind::Totp { period }
        } else {
            if fields.period.is_some() {
                return Err(UriError::WrongTypeParameter("period"));
            }
            let counter = fields.counter.ok_or(UriError::Counter)?;
            OtpKind::Hotp {
                counter: parse_number(&counter).ok_or(UriError::Counter)?,
            }
        };
        Ok(Self {
            kind,
            issuer,
            account,
            secret,
            algorithm,
            digits,
        })
    }

    /// A TOTP generator with this URI's algorithm, digits and period, and `params`' other
    /// settings (T0, window, legacy secrets). Fails if this is an HOTP URI or a parameter is
    /// out of range.
    pub fn to_totp(&self, params: TotpParams) -> Option<Result<Totp, ParamError>> {
        let OtpKind::Totp { period } = self.kind else {
            return None;
        };
        Some(Totp::new(
            self.secret.clone(),
            TotpParams {
                algorithm: self.algorithm,
                digits: self.digits,
                period,
                ..params
            },
        ))
    }

    /// An HOTP generator with this URI's algorithm and digits and `params`' other settings,
    /// with the URI's counter. `None` if this is a TOTP URI.
    pub fn to_hotp(&self, params: HotpParams) -> Option<Result<(Hotp, u64), ParamError>> {
        let OtpKind::Hotp { counter } = self.kind else {
            return None;
        };
        Some(
            Hotp::new(
                self.secret.clone(),
                HotpParams {
                    algorithm: self.algorithm,
                    digits: self.digits,
                    ..params
                },
            )
            .map(|hotp| (hotp, counter)),
        )
    }
}

#[derive(Default)]
struct Fields {
    secret: Option<Zeroizing<String>>,
    issuer: Option<Zeroizing<String>>,
    algorithm: Option<Zeroizing<String>>,
    digits: Option<Zeroizing<String>>,
    period: Option<Zeroizing<String>>,
    counter: Option<Zeroizing<String>>,
}

/// The label is `ACCOUNT` or `ISSUER:ACCOUNT`, percent-encoded, and spaces after the colon
/// are dropped, as the Key Uri Format allows. The separator is the first literal `:`; a
/// label without one may encode it (`%3A`), and then the first encoded colon separates.
/// [`OtpAuthUri::to_uri`] writes a literal separator and encodes every colon inside the
/// issuer and the account, so what it builds parses back to the same parts.
fn parse_label(label: &str) -> Result<(Option<String>, String), UriError> {
    let decode = |part: &str| {
        percent_decode_str(part)
            .decode_utf8()
            .map(|d| d.into_owned())
            .map_err(|_| UriError::Label("not UTF-8 after percent-decoding"))
    };
    let split = label.split_once(':').or_else(|| {
        let at = label.to_ascii_lowercase().find("%3a")?;
        Some((label.get(..at)?, label.get(at + 3..)?))
    });
    let (issuer, account) = match split {
        Some((issuer, account)) => (Some(decode(issuer)?), decode(account)?),
        None => (None, decode(label)?),
    };
    let account = account.trim_start_matches(' ');
    if account.is_empty() {
        return Err(UriError::Label("the account name is empty"));
    }
    if issuer.as_deref() == Some("") {
        return Err(UriError::Label("the issuer before ':' is empty"));
    }
    Ok((issuer, account.to_owned()))
}

/// Percent-decodes a query value; `+` stands for a space, as in form encoding.
fn decode_query(value: &str) -> Option<Zeroizing<String>> {
    let spaced = Zeroizing::new(value.replace('+', " "));
    percent_decode_str(&spaced)
        .decode_utf8()
        .ok()
        .map(|v| Zeroizing::new(v.into_owned()))
}

/// A whole decimal number: ASCII digits only, no sign, no spaces.
fn parse_number(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| text.get(prefix.len()..))
        .flatten()
}

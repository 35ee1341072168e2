//! Sending SMS: AWS SNS in production, the log in development. The senders only deliver a
//! message; codes, limits and the pumping guard are decided before (see `sms_flow`).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sns::config::{Credentials, Region};
use aws_sdk_sns::types::MessageAttributeValue;

use crate::config::{SmsConfig, SmsSenderKind};

/// Why a message was not sent. Whatever the cause the caller answers UNAVAILABLE; whether
/// the message surely did not leave decides what is given back (see `sms_flow`).
#[derive(Debug, thiserror::Error)]
#[error("SMS not sent ({kind})")]
pub struct SendError {
    /// A short, secret-free description for the log: an error code like `Throttling`, or the
    /// kind of failure. Never the message or the number.
    pub kind: String,
    /// The message surely did not reach the provider, or the provider refused it. False when
    /// it may have been delivered (a timeout, a lost response).
    pub certainly_not_sent: bool,
}

/// Something that delivers a text message to a phone number (E.164).
#[tonic::async_trait]
pub trait SmsSender: Send + Sync + fmt::Debug {
    /// Sends `message` to `to`.
    async fn send(&self, to: &str, message: &str) -> Result<(), SendError>;

    /// The sender's name, for logs (`sns`, `log`).
    fn name(&self) -> &'static str;
}

/// AWS SNS: `Publish` to a phone number, SMS type Transactional, with the optional sender id;
/// timeouts and bounded retries from the configuration.
pub struct SnsSender {
    client: aws_sdk_sns::Client,
    sender_id: Option<String>,
}

impl fmt::Debug for SnsSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SnsSender")
            .field("sender_id", &self.sender_id)
            .finish_non_exhaustive()
    }
}

impl SnsSender {
    /// A client from the configuration: region, endpoint and credentials where set, the
    /// standard AWS chain otherwise.
    pub async fn new(config: &SmsConfig) -> Self {
        let timeout = Duration::from_millis(config.sns_timeout_ms);
        // HTTPS on rustls with ring, the provider the rest of Tollgate uses.
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .http_client(http)
            .timeout_config(
                aws_config::timeout::TimeoutConfig::builder()
                    .connect_timeout(timeout)
                    .operation_attempt_timeout(timeout)
                    .operation_timeout(timeout * config.sns_max_attempts)
                    .build(),
            )
            .retry_config(
                aws_config::retry::RetryConfig::standard()
                    .with_max_attempts(config.sns_max_attempts)
                    .with_initial_backoff(Duration::from_millis(100)),
            );
        if !config.sns_region.is_empty() {
            loader = loader.region(Region::new(config.sns_region.clone()));
        }
        if !config.sns_endpoint_url.is_empty() {
            loader = loader.endpoint_url(config.sns_endpoint_url.clone());
        }
        if !config.sns_access_key_id.is_empty() {
            loader = loader.credentials_provider(Credentials::new(
                config.sns_access_key_id.clone(),
                config.sns_secret_access_key.clone(),
                None,
                None,
                "tollgate-configuration",
            ));
        }
        let shared = loader.load().await;
        Self {
            client: aws_sdk_sns::Client::new(&shared),
            sender_id: (!config.sns_sender_id.is_empty()).then(|| config.sns_sender_id.clone()),
        }
    }
}

fn string_attribute(value: &str) -> Result<MessageAttributeValue, SendError> {
    MessageAttributeValue::builder()
        .data_type("String")
        .string_value(value)
        .build()
        .map_err(|_| SendError {
            kind: "BadMessageAttribute".to_owned(),
            certainly_not_sent: true,
        })
}

#[tonic::async_trait]
impl SmsSender for SnsSender {
    async fn send(&self, to: &str, message: &str) -> Result<(), SendError> {
        let mut publish = self
            .client
            .publish()
            .phone_number(to)
            .message(message)
            .message_attributes("AWS.SNS.SMS.SMSType", string_attribute("Transactional")?);
        if let Some(sender_id) = &self.sender_id {
            publish =
                publish.message_attributes("AWS.SNS.SMS.SenderID", string_attribute(sender_id)?);
        }
        use aws_sdk_sns::error::{ProvideErrorMetadata as _, SdkError};
        match publish.send().await {
            Ok(_) => Ok(()),
            // Only a code or a kind is kept: SNS messages can repeat the phone number.
            Err(e) => Err(match &e {
                SdkError::ServiceError(service) => SendError {
                    kind: service.err().code().unwrap_or("ServiceError").to_owned(),
                    certainly_not_sent: true,
                },
                SdkError::ConstructionFailure(_) => SendError {
                    kind: "ConstructionFailure".to_owned(),
                    certainly_not_sent: true,
                },
                SdkError::DispatchFailure(failure) => SendError {
                    kind: if failure.is_timeout() {
                        "DispatchTimeout"
                    } else if failure.is_io() {
                        "DispatchIo"
                    } else {
                        "DispatchFailure"
                    }
                    .to_owned(),
                    // Connecting failed: nothing reached SNS. A timeout may be mid-request.
                    certainly_not_sent: !failure.is_timeout(),
                },
                SdkError::TimeoutError(_) => SendError {
                    kind: "Timeout".to_owned(),
                    certainly_not_sent: false,
                },
                _ => SendError {
                    kind: "ResponseError".to_owned(),
                    certainly_not_sent: false,
                },
            }),
        }
    }

    fn name(&self) -> &'static str {
        "sns"
    }
}

/// Development only: writes each message, code included, to the log at WARN, loudly marked.
/// The configuration refuses it when `server.production` is on.
#[derive(Debug, Default)]
pub struct LogSender;

#[tonic::async_trait]
impl SmsSender for LogSender {
    async fn send(&self, to: &str, message: &str) -> Result<(), SendError> {
        tracing::warn!(
            to,
            message,
            "DEVELOPMENT SMS SENDER: this message was NOT sent; it is only logged (sms.sender = \"log\")"
        );
        Ok(())
    }

    fn name(&self) -> &'static str {
        "log"
    }
}

/// The sender the configuration names.
pub async fn from_config(config: &SmsConfig) -> Arc<dyn SmsSender> {
    match config.sender {
        SmsSenderKind::Log => {
            tracing::warn!(
                "sms.sender = \"log\": SMS codes are written to the log instead of being sent (development only)"
            );
            Arc::new(LogSender)
        }
        SmsSenderKind::Sns => Arc::new(SnsSender::new(config).await),
    }
}

/// Masks a phone number for display: its country prefix's first digit and its last two
/// digits, the rest hidden (`+1•••••••••00`).
pub fn mask(e164: &str) -> String {
    let digits: Vec<char> = e164.chars().filter(char::is_ascii_digit).collect();
    let keep_end = 2.min(digits.len());
    let mut out = String::from("+");
    for (i, digit) in digits.iter().enumerate() {
        if i == 0 || i >= digits.len() - keep_end {
            out.push(*digit);
        } else {
            out.push('•');
        }
    }
    out
}

/// Normalizes a phone number as people type it to E.164, with libphonenumber's rules (the
/// `phonenumber` crate): `+` (or `00`) then the country code and number, spaces, dots,
/// dashes, parentheses and a `(0)` trunk prefix allowed, letters refused. `None` unless it is
/// a valid number of its country.
pub fn normalize_phone(input: &str) -> Option<String> {
    let trimmed = input.trim();
    let international = if let Some(rest) = trimmed.strip_prefix("00") {
        format!("+{rest}")
    } else if trimmed.starts_with('+') {
        trimmed.to_owned()
    } else {
        return None;
    };
    // Letters are refused, although libphonenumber reads vanity numbers (1-800-FLOWERS): a
    // code must go to exactly the digits the user sees.
    if international.chars().count() > 32 || international.chars().any(char::is_alphabetic) {
        return None;
    }
    let number = phonenumber::parse(None, &international).ok()?;
    if !phonenumber::is_valid(&number) || number.extension().is_some() {
        return None;
    }
    Some(number.format().mode(phonenumber::Mode::E164).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phone_numbers_are_normalized_or_refused() {
        for (input, expected) in [
            ("+1 (415) 555-0100", Some("+14155550100")),
            ("0044 20 7946 0958", Some("+442079460958")),
            ("+44 (0)20 7946 0958", Some("+442079460958")),
            ("  +49.30.901820  ", Some("+4930901820")),
            ("415 555 0100", None),
            ("+14155550", None),
            ("+0123456789", None),
            ("+1415555010012345", None),
            ("+1 415 CALL NOW", None),
            ("+1 415 555 0100 ext. 12", None),
            ("+1234", None),
            ("", None),
        ] {
            assert_eq!(normalize_phone(input).as_deref(), expected, "{input:?}");
        }
    }

    #[test]
    fn masks_hide_all_but_the_ends() {
        assert_eq!(mask("+14155550100"), "+1••••••••00");
        assert!(!mask("+442079460958").contains("7946"));
    }
}

//! Sending SMS: AWS SNS in production, the log in development. The senders only deliver a
//! message; codes, limits and the pumping guard are decided before (see `service::sms`).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sns::config::{Credentials, Region};
use aws_sdk_sns::types::MessageAttributeValue;

use crate::config::{SmsConfig, SmsSenderKind};

/// Why a message was not sent. Whatever the cause (unreachable, throttled, refused), the
/// caller answers UNAVAILABLE: the code was not delivered and must not stay valid.
#[derive(Debug, thiserror::Error)]
#[error("SMS not sent: {0}")]
pub struct SendError(pub String);

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
        .map_err(|e| SendError(e.to_string()))
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
        match publish.send().await {
            Ok(_) => Ok(()),
            // The error's display names the service error (throttling, opt-out, …) or the
            // transport failure; never the message, which holds the code.
            Err(e) => Err(SendError(
                aws_sdk_sns::error::DisplayErrorContext(&e).to_string(),
            )),
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

/// Normalizes a phone number as people type it to E.164: `+` (or `00`) then the country code
/// and number; spaces, dots, dashes and parentheses are ignored. `None` when it is not one.
pub fn normalize_phone(input: &str) -> Option<String> {
    let trimmed = input.trim();
    let rest = if let Some(rest) = trimmed.strip_prefix('+') {
        rest
    } else {
        trimmed.strip_prefix("00")?
    };
    let mut digits = String::with_capacity(16);
    for c in rest.chars() {
        match c {
            '0'..='9' => digits.push(c),
            ' ' | '.' | '-' | '(' | ')' | '\u{a0}' => {}
            _ => return None,
        }
    }
    // E.164: a country code not starting with 0, at most 15 digits in all; real numbers have
    // at least 8.
    if !(8..=15).contains(&digits.len()) || digits.starts_with('0') {
        return None;
    }
    Some(format!("+{digits}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phone_numbers_are_normalized_or_refused() {
        for (input, expected) in [
            ("+1 (415) 555-0100", Some("+14155550100")),
            ("0044 20 7946 0958", Some("+442079460958")),
            ("  +49.30.901820  ", Some("+4930901820")),
            ("415 555 0100", None),
            ("+0123456789", None),
            ("+1415555010012345", None),
            ("+1 415 CALL NOW", None),
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

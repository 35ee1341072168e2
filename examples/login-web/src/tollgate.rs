//! Talking to Tollgate: the generated `tollgate.v1` clients, each call carrying the app's API
//! key (`x-api-key`), and the user's token as `authorization: Bearer` where an RPC acts for
//! the user. Tollgate's errors become messages a person can act on.

use std::time::{Duration, SystemTime};

use tollgate_proto::v1::ErrorReason;
use tollgate_proto::v1::authentication_service_client::AuthenticationServiceClient;
use tollgate_proto::v1::enrollment_service_client::EnrollmentServiceClient;
use tollgate_proto::v1::organization_service_client::OrganizationServiceClient;
use tollgate_proto::v1::session_service_client::SessionServiceClient;
use tollgate_proto::v1::user_service_client::UserServiceClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};
use tonic_types::StatusExt as _;

/// Adds the app's API key to every call. The value is marked sensitive: `Debug` prints
/// `Sensitive`, and HTTP/2 never puts it in its header compression table.
#[derive(Clone, Debug)]
pub(crate) struct ApiKey(Option<MetadataValue<Ascii>>);

impl tonic::service::Interceptor for ApiKey {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(key) = &self.0 {
            request.metadata_mut().insert("x-api-key", key.clone());
        }
        Ok(request)
    }
}

type Authed = InterceptedService<Channel, ApiKey>;

/// One client per Tollgate service, over one HTTP/2 connection.
#[derive(Clone, Debug)]
pub(crate) struct Clients {
    pub(crate) users: UserServiceClient<Authed>,
    pub(crate) organizations: OrganizationServiceClient<Authed>,
    pub(crate) authentication: AuthenticationServiceClient<Authed>,
    pub(crate) enrollment: EnrollmentServiceClient<Authed>,
    pub(crate) sessions: SessionServiceClient<Authed>,
}

impl Clients {
    /// Clients of the Tollgate at `address`; the connection is made at the first call.
    pub(crate) fn connect(
        address: &str,
        api_key: &str,
    ) -> Result<Self, Box<dyn std::error::Error>> {
        let channel = Endpoint::from_shared(address.to_owned())?
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(15))
            .connect_lazy();
        let key = if api_key.is_empty() {
            ApiKey(None)
        } else {
            let mut value: MetadataValue<Ascii> =
                api_key.parse().map_err(|_| "the API key is not ASCII")?;
            value.set_sensitive(true);
            ApiKey(Some(value))
        };
        let authed = InterceptedService::new(channel, key);
        Ok(Self {
            users: UserServiceClient::new(authed.clone()),
            organizations: OrganizationServiceClient::new(authed.clone()),
            authentication: AuthenticationServiceClient::new(authed.clone()),
            enrollment: EnrollmentServiceClient::new(authed.clone()),
            sessions: SessionServiceClient::new(authed),
        })
    }
}

/// A request acting for the user: their session (or enrollment token) as
/// `authorization: Bearer`.
pub(crate) fn bearer<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    if let Ok(mut value) = format!("Bearer {token}").parse::<MetadataValue<Ascii>>() {
        value.set_sensitive(true);
        request.metadata_mut().insert("authorization", value);
    }
    request
}

/// The reason of a Tollgate error: its `ErrorInfo.reason`, one of the contract's
/// `ErrorReason` values (`Unspecified` when it carries none this app's contract knows).
pub(crate) fn reason(status: &Status) -> ErrorReason {
    status
        .get_details_error_info()
        .and_then(|info| ErrorReason::from_str_name(&info.reason))
        .unwrap_or(ErrorReason::Unspecified)
}

/// Whether the user's session (or login step) is gone, so they must log in again.
pub(crate) fn session_over(status: &Status) -> bool {
    matches!(
        reason(status),
        ErrorReason::SessionInvalid
            | ErrorReason::ChallengeInvalid
            | ErrorReason::ChallengeExhausted
            | ErrorReason::UserTokenMissing
            | ErrorReason::UserTokenInvalid
    )
}

/// A Tollgate error as a sentence for the person at the browser: one for every reason of the
/// contract (the match has no catch-all, so a new reason does not compile until it has its
/// sentence). Lockouts and sending limits say when to try again (Tollgate's `RetryInfo`);
/// bad input names what to fix.
#[allow(
    deprecated,
    reason = "an older server may still send USER_UNAUTHENTICATED"
)]
pub(crate) fn human(status: &Status) -> String {
    use ErrorReason as R;
    let retry = status
        .get_details_retry_info()
        .and_then(|retry| retry.retry_delay)
        .map(|delay| in_words(delay.as_secs()));
    let wait = retry.clone().unwrap_or_else(|| "a while".to_owned());
    let text = match reason(status) {
        // A wrong password or code that started a lockout says so at once.
        R::InvalidCredentials => match retry {
            Some(wait) => {
                return format!(
                    "The email or password is not right. Too many failed attempts: try again in {wait}."
                );
            }
            None => "The email or password is not right.",
        },
        R::InvalidCode => match retry {
            Some(wait) => {
                return format!(
                    "That code is not right. Too many failed attempts: try again in {wait}."
                );
            }
            None => "That code is not right. Check it and try again.",
        },
        R::LockedOut => return format!("Too many failed attempts. Try again in {wait}."),
        R::ClientLockedOut => {
            return format!("Too many failed sign-ins from your network. Try again in {wait}.");
        }
        R::SmsNumberCooldown | R::SmsUserLimit | R::SmsOrganizationLimit => {
            return format!("No more codes can be sent for now. Try again in {wait}.");
        }
        R::CodeReplayed => "That code was used already. Use the next one your app or token shows.",
        R::ChallengeInvalid => "This login has expired. Please log in again.",
        R::ChallengeExhausted => "Too many wrong codes for this login. Please log in again.",
        R::SessionInvalid | R::UserTokenInvalid | R::UserTokenMissing | R::UserUnauthenticated => {
            "Your session has ended. Please log in again."
        }
        R::FactorsSuspended => {
            "Your second factors are suspended after too many wrong codes: use a recovery code, or ask an administrator."
        }
        R::SmsPumpingSuspected => "Text messages are paused for now. Use another method.",
        R::SmsUnavailable => "The text message could not be sent. Try again in a moment.",
        R::SmsCountryNotAllowed => "Codes are not sent to this country any more.",
        R::NoSmsFactor => "You have no phone for codes.",
        R::NoWebauthnFactor => "You have no passkey or security key.",
        R::NoFactor => "You have no second factor.",
        R::NoSuchFactor => "That factor is not one of yours any more.",
        R::StepUpRequired => {
            "Confirm it is you first: enter a current code under \"Confirm it's you\"."
        }
        R::ProofRequired => "Enter a current code or a recovery code to confirm.",
        R::MethodNotAllowed => "Your organization does not allow this kind of factor.",
        R::LastRequiredFactor => {
            "This is your last factor and your organization requires two-factor authentication: add another one first."
        }
        R::NotAMember => "You are not a member of that organization.",
        R::OrganizationRequired => {
            "You belong to several organizations: enter the one to log in to under \"Several organizations?\"."
        }
        R::SsoNotEnabled => "Single sign-on is off for this organization.",
        R::AccountDisabled => "This account is disabled.",
        R::PasswordConfirmationFailed => "The password is not right.",
        R::PasswordNotSet => "Set a password first: changes here are confirmed with it.",
        R::NotYourAccount => "That is not your account.",
        R::NotAnAdmin => "Only the organization's owners and admins can do that.",
        R::SessionOfAnotherOrganization => {
            "You are logged in to another organization: log in to this one to manage it."
        }
        R::CannotResetOwner => "Only an owner can reset an owner.",
        R::CannotResetSelf => "Reset your own factors from your account page.",
        R::AdministersElsewhere => {
            "This member administers another organization: only that one can reset them."
        }
        R::SessionRequired => "Log in first: this needs a session.",
        R::SsoExempts => "Two-factor authentication cannot be required while SSO logins skip it.",
        R::WebauthnRejected => "The passkey was not accepted. Try again.",
        R::WebauthnCloneSuspected => {
            "This passkey looks copied and was refused. Use another method and tell your administrator."
        }
        R::WebauthnNotConfigured => "Passkeys are not set up on this server.",
        R::ConcurrentChange | R::PolicyChanged => {
            "Someone changed this at the same time. Look at it again and retry."
        }
        R::DatabaseUnavailable | R::ClockSkew => {
            "The service is unavailable for a moment. Try again."
        }
        R::AlreadyExists => "That exists already.",
        R::NotFound => "Not found: it may have expired. Start again.",
        R::CallerUnauthenticated | R::InvalidApiKey | R::MissingScope => {
            "This site is not allowed to call the login service: tell its operator."
        }
        R::InvalidArgument | R::MalformedRequest | R::Internal | R::Unspecified => {
            return by_code(status);
        }
    };
    text.to_owned()
}

/// Errors without a reason the app knows, by their code.
fn by_code(status: &Status) -> String {
    match status.code() {
        Code::InvalidArgument => status.get_details_bad_request().map_or_else(
            || "Please check what you entered.".to_owned(),
            |bad| {
                bad.field_violations
                    .iter()
                    .map(|violation| format!("{}: {}", violation.field, violation.description))
                    .collect::<Vec<_>>()
                    .join("; ")
            },
        ),
        Code::AlreadyExists => "That exists already.".to_owned(),
        Code::NotFound => "Not found: it may have expired. Start again.".to_owned(),
        Code::Unavailable | Code::DeadlineExceeded => {
            "The service is unavailable for a moment. Try again.".to_owned()
        }
        Code::PermissionDenied => "You are not allowed to do that.".to_owned(),
        code => format!("Something went wrong ({code:?}). Try again."),
    }
}

fn in_words(secs: u64) -> String {
    match secs {
        0..=1 => "a second".to_owned(),
        2..=119 => format!("{secs} seconds"),
        _ => format!("{} minutes", secs.div_ceil(60)),
    }
}

/// A protobuf time as the page shows it (UTC, to the minute).
pub(crate) fn when(time: Option<&prost_types::Timestamp>) -> String {
    let Some(time) = time else {
        return "never".to_owned();
    };
    let Ok(secs) = u64::try_from(time.seconds) else {
        return "never".to_owned();
    };
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
    let text = humantime::format_rfc3339_seconds(at).to_string();
    // "2026-12-07T10:42:05Z" -> "2026-12-07 10:42 UTC"
    match (text.get(..10), text.get(11..16)) {
        (Some(day), Some(minute)) => format!("{day} {minute} UTC"),
        _ => text,
    }
}

//! What the app keeps in the browser, all of it in encrypted, authenticated cookies
//! (AES-GCM under the cookie key), HttpOnly (no script reads them), SameSite=Lax (not sent
//! with another site's form posts), Secure when the app is served over https:
//!
//! - the user's Tollgate session token, once they are logged in;
//! - the pending step of a login: the challenge token of the second-factor step, or the
//!   enrollment token when the organization requires a factor the user does not have yet;
//! - the CSRF token, which every form and script call sends back and the app compares;
//! - the device token of a browser the user asked to be remembered (`remember_device`),
//!   until Tollgate's expiry for it: the only cookie that outlives a logout, since it is
//!   what lets the next login skip the second factor.
//!
//! No token or code ever goes in a URL, so none reaches a log, a history or a referrer.

use std::convert::Infallible;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::response::{IntoResponseParts, ResponseParts};
use axum_extra::extract::PrivateCookieJar;
use axum_extra::extract::cookie::{Cookie, SameSite};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq as _;

use crate::App;

const SESSION: &str = "tollgate_session";
const STEP: &str = "tollgate_step";
const CSRF: &str = "tollgate_csrf";
const DEVICE: &str = "tollgate_device";

/// The pending step of a login, between `Authenticate` and a session.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "step")]
pub(crate) enum Step {
    /// `Authenticate` answered `second_factor_required`.
    SecondFactor {
        /// For `VerifySecondFactor`, `SendSmsCode` and `BeginWebAuthnVerification`.
        challenge_token: String,
        /// The `SecondFactorMethod`s the user can use.
        methods: Vec<i32>,
        /// Where the last SMS code went (masked), once one was sent.
        sms_sent_to: Option<String>,
    },
    /// `Authenticate` (or `VerifySecondFactor`) answered `enrollment_required`.
    Enrollment {
        /// The bearer token of the enrollment RPCs until a factor is confirmed.
        enrollment_token: String,
        /// The `FactorKind`s the organization allows.
        allowed_methods: Vec<i32>,
    },
}

/// The app's cookies of one request; returned with the response to set or remove them.
#[derive(Debug)]
pub(crate) struct Jar {
    cookies: PrivateCookieJar,
    secure: bool,
}

impl FromRequestParts<App> for Jar {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Infallible> {
        let cookies = PrivateCookieJar::from_request_parts(parts, app).await?;
        Ok(Self {
            cookies,
            secure: app.secure_cookies,
        })
    }
}

impl IntoResponseParts for Jar {
    type Error = Infallible;

    fn into_response_parts(self, parts: ResponseParts) -> Result<ResponseParts, Infallible> {
        self.cookies.into_response_parts(parts)
    }
}

impl Jar {
    fn cookie(&self, name: &'static str, value: String) -> Cookie<'static> {
        Cookie::build((name, value))
            .http_only(true)
            .same_site(SameSite::Lax)
            .secure(self.secure)
            .path("/")
            .build()
    }

    fn set(mut self, name: &'static str, value: String) -> Self {
        let cookie = self.cookie(name, value);
        self.cookies = self.cookies.add(cookie);
        self
    }

    fn unset(mut self, name: &'static str) -> Self {
        let cookie = self.cookie(name, String::new());
        self.cookies = self.cookies.remove(cookie);
        self
    }

    /// The user's Tollgate session token.
    pub(crate) fn session(&self) -> Option<String> {
        self.cookies
            .get(SESSION)
            .map(|cookie| cookie.value().to_owned())
    }

    /// Logged in: the session token kept, the login step over.
    pub(crate) fn logged_in(self, session_token: String) -> Self {
        self.set(SESSION, session_token).unset(STEP)
    }

    /// Logged out (or the session ended): both tokens forgotten.
    pub(crate) fn logged_out(self) -> Self {
        self.unset(SESSION).unset(STEP)
    }

    /// The device token of this browser, if the user asked to remember it.
    pub(crate) fn device(&self) -> Option<String> {
        self.cookies
            .get(DEVICE)
            .map(|cookie| cookie.value().to_owned())
    }

    /// This browser remembered: its device token kept until `expires` (Unix seconds), when
    /// Tollgate stops taking it anyway.
    pub(crate) fn remembering(mut self, token: String, expires: i64) -> Self {
        let mut cookie = self.cookie(DEVICE, token);
        if let Ok(at) = time::OffsetDateTime::from_unix_timestamp(expires) {
            cookie.set_expires(at);
        }
        self.cookies = self.cookies.add(cookie);
        self
    }

    /// The pending login step, if any.
    pub(crate) fn step(&self) -> Option<Step> {
        let cookie = self.cookies.get(STEP)?;
        serde_json::from_str(cookie.value()).ok()
    }

    /// A new pending login step (a new login replaces an old session in this browser).
    pub(crate) fn with_step(self, step: &Step) -> Self {
        match serde_json::to_string(step) {
            Ok(json) => self.unset(SESSION).set(STEP, json),
            Err(_) => self,
        }
    }

    /// The bearer token for the enrollment RPCs: the session, or else the enrollment token
    /// of a login that requires a factor.
    pub(crate) fn enrolling_credential(&self) -> Option<String> {
        self.session().or_else(|| match self.step()? {
            Step::Enrollment {
                enrollment_token, ..
            } => Some(enrollment_token),
            Step::SecondFactor { .. } => None,
        })
    }

    /// The CSRF token of this browser, made on its first page.
    pub(crate) fn csrf(self) -> (Self, String) {
        if let Some(cookie) = self.cookies.get(CSRF) {
            let token = cookie.value().to_owned();
            return (self, token);
        }
        let mut bytes = [0_u8; 32];
        if getrandom::fill(&mut bytes).is_err() {
            // No randomness: no token, so every form of this browser is refused.
            return (self, String::new());
        }
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        (self.set(CSRF, token.clone()), token)
    }

    /// Whether a form or script call carries this browser's CSRF token.
    pub(crate) fn csrf_ok(&self, sent: &str) -> bool {
        self.cookies.get(CSRF).is_some_and(|cookie| {
            !sent.is_empty() && bool::from(cookie.value().as_bytes().ct_eq(sent.as_bytes()))
        })
    }
}

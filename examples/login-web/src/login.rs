//! Signing up and logging in.
//!
//! A login is `Authenticate` (email and password), whose answer is one of three:
//! `authenticated` (a session: done), `second_factor_required` (a challenge token: the
//! second-factor page calls `VerifySecondFactor` with a code, after `SendSmsCode` for SMS, or
//! with a passkey's assertion after `BeginWebAuthnVerification`), or `enrollment_required`
//! (the organization requires a factor the user lacks: the enrollment page adds one with the
//! enrollment token, and its confirmation returns the session). Passwordless is
//! `BeginPasskeyLogin`, the browser's `navigator.credentials.get()`, then `Authenticate` with
//! the passkey.

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use serde::Deserialize;
use tollgate_proto::v1::{
    AuthenticateRequest, BeginPasskeyLoginRequest, BeginWebAuthnVerificationRequest,
    CreateOrganizationRequest, CreateUserRequest, PasskeyCredentials, PasswordCredentials,
    RevokeSessionRequest, SecondFactorMethod, SendSmsCodeRequest, VerifySecondFactorRequest,
    authenticate_response, verify_second_factor_response,
};
use tonic::Code;

use crate::App;
use crate::client::Client;
use crate::cookies::{Jar, Step};
use crate::tollgate::{human, session_over};
use crate::views::{
    Message, Reply, add_factor_forms, code_input, csrf_field, method_name, page, proof_input,
    respond,
};

/// A form that only carries the CSRF token.
#[derive(Debug, Deserialize)]
pub(crate) struct CsrfForm {
    pub(crate) csrf: String,
}

/// The CSRF token of a script call, and what the browser answered.
#[derive(Debug, Deserialize)]
pub(crate) struct ScriptCall {
    csrf: String,
    #[serde(default)]
    ceremony: String,
    #[serde(default)]
    response: String,
}

pub(crate) async fn signup_page(jar: Jar) -> Response {
    signup_form(jar, &Message::None)
}

fn signup_form(jar: Jar, message: &Message) -> Response {
    signup_form_for(jar, "", message)
}

/// The sign-up form, with the email the user typed kept.
fn signup_form_for(jar: Jar, email: &str, message: &Message) -> Response {
    let (jar, csrf) = jar.csrf();
    let body = html! {
        form method="post" action="/signup" {
            (csrf_field(&csrf))
            label for="email" { "Email" }
            input #email name="email" type="email" autocomplete="username" value=(email)
                required;
            label for="password" { "Password (at least 12 characters)" }
            input #password name="password" type="password" autocomplete="new-password"
                minlength="12" required;
            label for="organization" { "Organization name (optional: creates one you own)" }
            input #organization name="organization" type="text" autocomplete="organization";
            button type="submit" { "Sign up" }
        }
        p { "Have an account? " a href="/login" { "Log in" } }
    };
    (
        jar,
        respond(message, page("Sign up", &csrf, message, &body)),
    )
        .into_response()
}

#[derive(Debug, Deserialize)]
pub(crate) struct SignupForm {
    csrf: String,
    email: String,
    password: String,
    #[serde(default)]
    organization: String,
}

/// `CreateUser`, then `CreateOrganization` with the user as owner when a name is given, then
/// the login as on the login page.
pub(crate) async fn signup(
    State(app): State<App>,
    client: Client,
    jar: Jar,
    form: axum::Form<SignupForm>,
) -> Response {
    if !jar.csrf_ok(&form.csrf) {
        return signup_form(jar, &expired_form());
    }
    let mut tollgate = app.tollgate;
    let created = tollgate
        .users
        .create_user(CreateUserRequest {
            email: form.email.clone(),
            password: form.password.clone(),
        })
        .await;
    let user = match created.map(|reply| reply.into_inner().user) {
        Ok(Some(user)) => user,
        Ok(None) => {
            let text = "No user came back.".to_owned();
            return signup_form_for(jar, &form.email, &Message::Error(text));
        }
        Err(status) if status.code() == Code::AlreadyExists => {
            let text = "An account with this email exists already: log in instead.";
            return signup_form_for(jar, &form.email, &Message::Error(text.to_owned()));
        }
        Err(status) => {
            return signup_form_for(jar, &form.email, &Message::Error(human(&status)));
        }
    };
    let mut organization_id = String::new();
    let name = form.organization.trim();
    if !name.is_empty() {
        let request = CreateOrganizationRequest {
            name: name.to_owned(),
            owner_user_id: user.id,
        };
        match tollgate.organizations.create_organization(request).await {
            Ok(reply) => {
                organization_id = reply.into_inner().organization.unwrap_or_default().id;
            }
            Err(status) => {
                let text = format!(
                    "Your account was made, the organization not: {}",
                    human(&status)
                );
                return login_form_for(jar, &form.email, &Message::Error(text));
            }
        }
    }
    password_login(
        tollgate,
        jar,
        &form.email,
        &form.password,
        organization_id,
        client,
    )
    .await
}

pub(crate) async fn login_page(jar: Jar) -> Response {
    login_form(jar, &Message::None)
}

fn login_form(jar: Jar, message: &Message) -> Response {
    login_form_for(jar, "", message)
}

/// The login form, with the email the user typed kept.
fn login_form_for(jar: Jar, email: &str, message: &Message) -> Response {
    let several = matches!(message, Message::Error(text) if text.contains("several organizations"));
    let (jar, csrf) = jar.csrf();
    let body = html! {
        form method="post" action="/login" {
            (csrf_field(&csrf))
            label for="email" { "Email" }
            input #email name="email" type="email" autocomplete="username" value=(email)
                required;
            label for="password" { "Password" }
            input #password name="password" type="password" autocomplete="current-password"
                required;
            details open[several] {
                summary { "Several organizations?" }
                label for="organization" { "Organization id" }
                input #organization name="organization" type="text";
            }
            button type="submit" #log-in { "Log in" }
        }
        p { "or" }
        button type="button" #passkey-login data-begin="/login/passkey/begin"
            data-finish="/login/passkey/finish" { "Sign in with a passkey" }
        p { "New here? " a href="/signup" { "Sign up" } }
    };
    (jar, respond(message, page("Log in", &csrf, message, &body))).into_response()
}

#[derive(Debug, Deserialize)]
pub(crate) struct LoginForm {
    csrf: String,
    email: String,
    password: String,
    #[serde(default)]
    organization: String,
}

pub(crate) async fn login(
    State(app): State<App>,
    client: Client,
    jar: Jar,
    form: axum::Form<LoginForm>,
) -> Response {
    if !jar.csrf_ok(&form.csrf) {
        return login_form(jar, &expired_form());
    }
    let organization_id = form.organization.trim().to_owned();
    password_login(
        app.tollgate,
        jar,
        &form.email,
        &form.password,
        organization_id,
        client,
    )
    .await
}

/// A login replaces the session this browser had: that one is revoked, not left to expire.
async fn revoke_previous(tollgate: &mut crate::tollgate::Clients, jar: &Jar) {
    if let Some(token) = jar.session()
        && let Err(status) = tollgate
            .sessions
            .revoke_session(RevokeSessionRequest { token })
            .await
    {
        tracing::warn!(code = ?status.code(), "the previous session was not revoked");
    }
}

/// `Authenticate` with email and password, then the page its answer leads to.
async fn password_login(
    mut tollgate: crate::tollgate::Clients,
    jar: Jar,
    email: &str,
    password: &str,
    organization_id: String,
    client: Client,
) -> Response {
    let request = AuthenticateRequest {
        credentials: Some(
            tollgate_proto::v1::authenticate_request::Credentials::Password(PasswordCredentials {
                email: email.to_owned(),
                password: password.to_owned(),
            }),
        ),
        organization_id,
        client_context: Some(client.0),
        // A remembered browser's token: Tollgate skips the second factor for it when it is
        // still valid for this user, and ignores it otherwise.
        device_token: jar.device().unwrap_or_default(),
    };
    match tollgate.authentication.authenticate(request).await {
        Ok(reply) => {
            revoke_previous(&mut tollgate, &jar).await;
            let (jar, next) = after_authenticate(jar, reply.into_inner().result);
            (jar, Redirect::to(next)).into_response()
        }
        Err(status) => login_form_for(jar, email, &Message::Error(human(&status))),
    }
}

/// Where `Authenticate`'s answer leads, with the cookie it needs.
fn after_authenticate(
    jar: Jar,
    result: Option<authenticate_response::Result>,
) -> (Jar, &'static str) {
    use authenticate_response::Result as Next;
    match result {
        Some(Next::Authenticated(session)) => (jar.logged_in(session.token), "/account"),
        Some(Next::SecondFactorRequired(required)) => {
            let step = Step::SecondFactor {
                challenge_token: required.challenge_token,
                methods: required.methods,
                sms_sent_to: None,
            };
            (jar.with_step(&step), "/login/verify")
        }
        Some(Next::EnrollmentRequired(required)) => (enrolling(jar, required), "/enroll"),
        None => (jar, "/login"),
    }
}

fn enrolling(jar: Jar, required: tollgate_proto::v1::EnrollmentRequired) -> Jar {
    jar.with_step(&Step::Enrollment {
        enrollment_token: required.enrollment_token,
        allowed_methods: required.allowed_methods,
    })
}

/// `VerifySecondFactor`'s answer: a session, or the enrollment step.
fn after_second_factor(
    jar: Jar,
    result: Option<verify_second_factor_response::Result>,
) -> (Jar, &'static str) {
    use verify_second_factor_response::Result as Next;
    match result {
        Some(Next::Authenticated(session)) => (jar.logged_in(session.token), "/account"),
        Some(Next::EnrollmentRequired(required)) => (enrolling(jar, required), "/enroll"),
        None => (jar, "/login"),
    }
}

pub(crate) async fn verify_page(jar: Jar) -> Response {
    verify_form(jar, &Message::None)
}

/// The second-factor step: a code field for apps, tokens and SMS, "send me a code" for SMS,
/// the passkey button, and a recovery code, as the user's methods allow.
fn verify_form(jar: Jar, message: &Message) -> Response {
    let Some(Step::SecondFactor {
        methods,
        sms_sent_to,
        ..
    }) = jar.step()
    else {
        return Redirect::to("/login").into_response();
    };
    let (jar, csrf) = jar.csrf();
    let has = |method: SecondFactorMethod| methods.contains(&(method as i32));
    let coded: Vec<&str> = methods
        .iter()
        .copied()
        .filter(|method| {
            [
                SecondFactorMethod::Totp,
                SecondFactorMethod::Hotp,
                SecondFactorMethod::Sms,
            ]
            .iter()
            .any(|coded| *coded as i32 == *method)
        })
        .map(method_name)
        .collect();
    let body = html! {
        @if let Some(to) = &sms_sent_to {
            p.notice role="status" { "A code was sent to " (to) "." }
        }
        @if !coded.is_empty() {
            form method="post" action="/login/verify" {
                (csrf_field(&csrf))
                (code_input("code", &format!("Code from your {}", coded.join(" or "))))
                (remember_box("remember-device"))
                button type="submit" #verify { "Continue" }
            }
        }
        @if has(SecondFactorMethod::Sms) {
            form method="post" action="/login/sms" {
                (csrf_field(&csrf))
                button type="submit" #send-sms { "Send me a code by text message" }
            }
        }
        @if has(SecondFactorMethod::Webauthn) {
            button type="button" #use-passkey data-begin="/login/verify/passkey/begin"
                data-finish="/login/verify/passkey/finish" { "Use a passkey or security key" }
        }
        @if has(SecondFactorMethod::RecoveryCode) {
            details #recovery {
                summary { "Lost your device? Use a recovery code" }
                form method="post" action="/login/verify" {
                    (csrf_field(&csrf))
                    (proof_input("recovery_code", "recovery_code", "Recovery code"))
                    (remember_box("remember-device-recovery"))
                    button type="submit" #use-recovery-code { "Use this recovery code" }
                }
            }
        }
    };
    let title = "Two-factor authentication";
    (jar, respond(message, page(title, &csrf, message, &body))).into_response()
}

/// "Remember this browser": honoured when the organization allows it
/// (`trusted_device_days`), ignored by Tollgate otherwise.
fn remember_box(id: &str) -> maud::Markup {
    html! {
        p {
            label {
                input type="checkbox" name="remember_device" value="on" id=(id);
                " Remember this browser (no code at the next logins here, for as long as your organization allows)"
            }
        }
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct VerifyForm {
    csrf: String,
    #[serde(default)]
    code: String,
    #[serde(default)]
    recovery_code: String,
    #[serde(default)]
    remember_device: Option<String>,
}

/// `VerifySecondFactor` with a code or a recovery code (Tollgate takes both in `code`).
pub(crate) async fn verify(
    State(app): State<App>,
    client: Client,
    jar: Jar,
    form: axum::Form<VerifyForm>,
) -> Response {
    let Some(Step::SecondFactor {
        challenge_token, ..
    }) = jar.step()
    else {
        return Redirect::to("/login").into_response();
    };
    if !jar.csrf_ok(&form.csrf) {
        return verify_form(jar, &expired_form());
    }
    let code = if form.recovery_code.is_empty() {
        form.code.replace(' ', "")
    } else {
        form.recovery_code.clone()
    };
    let mut tollgate = app.tollgate;
    let request = VerifySecondFactorRequest {
        challenge_token,
        code,
        webauthn_response_json: String::new(),
        client_context: Some(client.0),
        remember_device: form.remember_device.is_some(),
    };
    match tollgate.authentication.verify_second_factor(request).await {
        Ok(reply) => {
            let reply = reply.into_inner();
            let jar = match (
                reply.device_token.is_empty(),
                reply.device_token_expire_time,
            ) {
                (false, Some(expires)) => jar.remembering(reply.device_token, expires.seconds),
                _ => jar,
            };
            let (jar, next) = after_second_factor(jar, reply.result);
            (jar, Redirect::to(next)).into_response()
        }
        Err(status) => step_failed(jar, &status),
    }
}

/// `SendSmsCode` for the login's challenge.
pub(crate) async fn send_sms(
    State(app): State<App>,
    jar: Jar,
    client: Client,
    form: axum::Form<CsrfForm>,
) -> Response {
    let Some(Step::SecondFactor {
        challenge_token,
        methods,
        ..
    }) = jar.step()
    else {
        return Redirect::to("/login").into_response();
    };
    if !jar.csrf_ok(&form.csrf) {
        return verify_form(jar, &expired_form());
    }
    let mut tollgate = app.tollgate;
    let request = SendSmsCodeRequest {
        challenge_token: challenge_token.clone(),
        client_context: Some(client.0),
        ..SendSmsCodeRequest::default()
    };
    match tollgate.authentication.send_sms_code(request).await {
        Ok(reply) => {
            let step = Step::SecondFactor {
                challenge_token,
                methods,
                sms_sent_to: Some(reply.into_inner().masked_phone_number),
            };
            (jar.with_step(&step), Redirect::to("/login/verify")).into_response()
        }
        Err(status) => step_failed(jar, &status),
    }
}

/// The passkey button of the second-factor step: `BeginWebAuthnVerification` with the
/// challenge; the script passes the options to `navigator.credentials.get()`.
pub(crate) async fn verify_passkey_begin(
    State(app): State<App>,
    jar: Jar,
    Json(call): Json<ScriptCall>,
) -> Json<Reply> {
    let Some(Step::SecondFactor {
        challenge_token, ..
    }) = jar.step()
    else {
        return Json(Reply::redirect("/login"));
    };
    if !jar.csrf_ok(&call.csrf) {
        return Json(Reply::error(expired_text()));
    }
    let mut tollgate = app.tollgate;
    let request = BeginWebAuthnVerificationRequest {
        challenge_token,
        ..BeginWebAuthnVerificationRequest::default()
    };
    Json(
        match tollgate
            .authentication
            .begin_web_authn_verification(request)
            .await
        {
            Ok(reply) => Reply::options(reply.into_inner().request_options_json, String::new()),
            Err(status) => Reply::error(human(&status)),
        },
    )
}

/// The browser's assertion, to `VerifySecondFactor`.
pub(crate) async fn verify_passkey_finish(
    State(app): State<App>,
    client: Client,
    jar: Jar,
    Json(call): Json<ScriptCall>,
) -> Response {
    let Some(Step::SecondFactor {
        challenge_token, ..
    }) = jar.step()
    else {
        return Json(Reply::redirect("/login")).into_response();
    };
    if !jar.csrf_ok(&call.csrf) {
        return Json(Reply::error(expired_text())).into_response();
    }
    let mut tollgate = app.tollgate;
    let request = VerifySecondFactorRequest {
        challenge_token,
        code: String::new(),
        webauthn_response_json: call.response,
        client_context: Some(client.0),
        remember_device: false,
    };
    match tollgate.authentication.verify_second_factor(request).await {
        Ok(reply) => {
            let (jar, next) = after_second_factor(jar, reply.into_inner().result);
            (jar, Json(Reply::redirect(next))).into_response()
        }
        Err(status) if session_over(&status) => {
            (jar.logged_out(), Json(Reply::redirect("/login"))).into_response()
        }
        Err(status) => Json(Reply::error(human(&status))).into_response(),
    }
}

/// "Sign in with a passkey": `BeginPasskeyLogin` (no user named; the browser offers the
/// user's passkeys for this site).
pub(crate) async fn passkey_login_begin(
    State(app): State<App>,
    jar: Jar,
    Json(call): Json<ScriptCall>,
) -> Json<Reply> {
    if !jar.csrf_ok(&call.csrf) {
        return Json(Reply::error(expired_text()));
    }
    let mut tollgate = app.tollgate;
    let request = BeginPasskeyLoginRequest::default();
    Json(
        match tollgate.authentication.begin_passkey_login(request).await {
            Ok(reply) => {
                let reply = reply.into_inner();
                Reply::options(reply.request_options_json, reply.ceremony_id)
            }
            Err(status) => Reply::error(human(&status)),
        },
    )
}

/// The passkey's assertion, to `Authenticate` with `passkey`.
pub(crate) async fn passkey_login_finish(
    State(app): State<App>,
    jar: Jar,
    Json(call): Json<ScriptCall>,
) -> Response {
    if !jar.csrf_ok(&call.csrf) {
        return Json(Reply::error(expired_text())).into_response();
    }
    let mut tollgate = app.tollgate;
    let request = AuthenticateRequest {
        credentials: Some(
            tollgate_proto::v1::authenticate_request::Credentials::Passkey(PasskeyCredentials {
                ceremony_id: call.ceremony,
                response_json: call.response,
            }),
        ),
        organization_id: String::new(),
        client_context: None,
        device_token: String::new(),
    };
    match tollgate.authentication.authenticate(request).await {
        Ok(reply) => {
            revoke_previous(&mut tollgate, &jar).await;
            let (jar, next) = after_authenticate(jar, reply.into_inner().result);
            (jar, Json(Reply::redirect(next))).into_response()
        }
        Err(status) => Json(Reply::error(human(&status))).into_response(),
    }
}

/// The enrollment a policy asks for: the user adds a factor with the enrollment token, and
/// the confirmation's session completes the login.
pub(crate) async fn enroll_page(jar: Jar) -> Response {
    let Some(Step::Enrollment {
        allowed_methods, ..
    }) = jar.step()
    else {
        return Redirect::to("/").into_response();
    };
    enroll_form(jar, &allowed_methods, &Message::None)
}

pub(crate) fn enroll_form(jar: Jar, allowed_methods: &[i32], message: &Message) -> Response {
    let (jar, csrf) = jar.csrf();
    let body = html! {
        p { "Your organization requires two-factor authentication. Add a second factor to
             finish logging in." }
        (add_factor_forms(&csrf, allowed_methods))
    };
    let title = "Set up two-factor authentication";
    (jar, respond(message, page(title, &csrf, message, &body))).into_response()
}

/// `RevokeSession`, then the cookies go.
pub(crate) async fn logout(
    State(app): State<App>,
    jar: Jar,
    form: axum::Form<CsrfForm>,
) -> Response {
    if !jar.csrf_ok(&form.csrf) {
        return Redirect::to("/").into_response();
    }
    if let Some(token) = jar.session() {
        let mut tollgate = app.tollgate;
        if let Err(status) = tollgate
            .sessions
            .revoke_session(RevokeSessionRequest { token })
            .await
        {
            tracing::warn!(code = ?status.code(), "logout: the session was not revoked");
        }
    }
    (jar.logged_out(), Redirect::to("/login")).into_response()
}

/// A failed second-factor step: the login page again when the challenge is over (expired,
/// used, or out of attempts), the step with the message otherwise.
fn step_failed(jar: Jar, status: &tonic::Status) -> Response {
    if session_over(status) {
        login_form(jar.logged_out(), &Message::Error(human(status)))
    } else {
        verify_form(jar, &Message::Error(human(status)))
    }
}

pub(crate) fn expired_form() -> Message {
    Message::Error(expired_text())
}

pub(crate) fn expired_text() -> String {
    "This form expired. Please try again.".to_owned()
}

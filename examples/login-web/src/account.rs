//! The account page and the factor pages.
//!
//! The account page is `ValidateSession` (who is this), `GetUser` (their email) and
//! `ListFactors` (their factors, with the user's session as `authorization: Bearer`). Adding a
//! factor is a `Begin…` then a `Confirm…` call; at a login that requires enrollment the same
//! pages run with the enrollment token instead of a session, and the confirmation returns
//! the session. Removing a factor, new recovery codes and the own reset need a proof: a
//! current code or a recovery code.

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, PreEscaped, html};
use serde::Deserialize;
use tollgate_proto::v1::{
    AssuranceLevel, BeginSmsEnrollmentRequest, BeginTotpEnrollmentRequest,
    BeginWebAuthnRegistrationRequest, BeginWebAuthnVerificationRequest,
    ConfirmSmsEnrollmentRequest, ConfirmTotpEnrollmentRequest, ConfirmWebAuthnRegistrationRequest,
    FactorKind, FactorStatus, GetUserRequest, ListFactorsRequest, ListSessionsRequest,
    ListTrustedDevicesRequest, RegenerateRecoveryCodesRequest, RemoveFactorRequest,
    ResetMfaRequest, RevokeOtherSessionsRequest, RevokeTrustedDeviceRequest, SendSmsCodeRequest,
    Session, ValidateSessionRequest, VerifyStepUpRequest, get_user_request,
};

use crate::App;
use crate::client::Client;
use crate::cookies::{Jar, Step};
use crate::login::{enroll_form, expired_form, expired_text};
use crate::tollgate::{Clients, bearer, human, session_over, when};
use crate::views::{
    Message, Reply, add_factor_forms, code_input, csrf_field, factor_kind, page, proof_input,
    recovery_codes, respond,
};

pub(crate) async fn account_page(State(app): State<App>, jar: Jar) -> Response {
    account(app.tollgate, jar, Message::None).await
}

/// The account page: who is logged in, their factors (with last use), recovery codes left,
/// and the forms that change them.
async fn account(mut tollgate: Clients, jar: Jar, message: Message) -> Response {
    let Some(token) = jar.session() else {
        return Redirect::to("/login").into_response();
    };
    let validated = tollgate
        .sessions
        .validate_session(ValidateSessionRequest {
            token: token.clone(),
        })
        .await;
    let session = match validated {
        Ok(reply) => reply.into_inner(),
        Err(status) if session_over(&status) => {
            return (jar.logged_out(), Redirect::to("/login")).into_response();
        }
        Err(status) => return failure(jar, &status),
    };
    let lookup = Some(get_user_request::Lookup::UserId(session.user_id.clone()));
    let email = match tollgate.users.get_user(GetUserRequest { lookup }).await {
        Ok(reply) => reply.into_inner().user.unwrap_or_default().email,
        Err(status) => return failure(jar, &status),
    };
    let listed = tollgate
        .enrollment
        .list_factors(bearer(ListFactorsRequest {}, &token))
        .await;
    let factors = match listed {
        Ok(reply) => reply.into_inner(),
        Err(status) => return failure(jar, &status),
    };
    let listed = tollgate
        .sessions
        .list_sessions(bearer(
            ListSessionsRequest {
                page_size: 20,
                ..ListSessionsRequest::default()
            },
            &token,
        ))
        .await;
    let sessions = match listed {
        Ok(reply) => reply.into_inner().sessions,
        Err(status) => return failure(jar, &status),
    };
    let listed = tollgate
        .sessions
        .list_trusted_devices(bearer(
            ListTrustedDevicesRequest {
                page_size: 20,
                ..ListTrustedDevicesRequest::default()
            },
            &token,
        ))
        .await;
    let devices = match listed {
        Ok(reply) => reply.into_inner().devices,
        Err(status) => return failure(jar, &status),
    };
    // A remembered device skipped the factor: not a step-up.
    let stepped_up = session.assurance_level == AssuranceLevel::SecondFactor as i32
        && !session.remembered_device;
    let active = factors
        .factors
        .iter()
        .any(|factor| factor.status == FactorStatus::Active as i32);
    let has_passkey = factors.factors.iter().any(|factor| {
        factor.kind == FactorKind::Webauthn as i32 && factor.status == FactorStatus::Active as i32
    });
    let has_phone = factors.factors.iter().any(|factor| {
        factor.kind == FactorKind::Sms as i32 && factor.status == FactorStatus::Active as i32
    });
    let (jar, csrf) = jar.csrf();
    let body = html! {
        p #signed-in {
            "Signed in as " strong { (email) }
            @if stepped_up { " with a second factor." }
            @else if session.remembered_device { " on a remembered browser." }
            @else { " with a password only." }
        }
        @if !session.organization_id.is_empty() {
            p { a href="/org" { "Your organization" } }
        }
        @if has_phone {
            // The code serves the step-up and the proofs below (SendSmsCode with the session).
            form method="post" action="/account/sms" #text-me {
                (csrf_field(&csrf))
                button type="submit" { "Text me a code" }
            }
        }
        @if active && !stepped_up {
            section #step-up {
                h2 { "Confirm it's you" }
                p { "Changing your factors needs a current code first." }
                form method="post" action="/account/step-up" {
                    (csrf_field(&csrf))
                    (proof_input("code", "code", "Code from your app, token or text message, or a recovery code"))
                    button type="submit" { "Confirm" }
                }
                @if has_passkey {
                    button type="button" #step-up-passkey data-begin="/account/step-up/passkey/begin"
                        data-finish="/account/step-up/passkey/finish" { "Confirm with a passkey" }
                }
            }
        }
        section {
            h2 { "Second factors" }
            @if factors.factors.is_empty() {
                p { "None yet: add one below to protect your account." }
            } @else {
                table #factors {
                    thead { tr { th { "Kind" } th { "Name" } th { "Status" } th { "Added" }
                        th { "Last used" } th { "Remove (needs a current code)" } } }
                    tbody {
                        @for factor in &factors.factors {
                            tr.factor data-kind=(factor_kind(factor.kind)) {
                                td { (factor_kind(factor.kind))
                                    @if !factor.masked_phone_number.is_empty() { " " (factor.masked_phone_number) }
                                    @if factor.discoverable { " (signs in alone)" } }
                                td { (factor.label) }
                                td { @if factor.status == FactorStatus::Active as i32 { "active" } @else { "pending" } }
                                td { (when(factor.activate_time.as_ref().or(factor.create_time.as_ref()))) }
                                td.last-used { (when(factor.last_use_time.as_ref())) }
                                td {
                                    // A pending factor expires on its own.
                                    @if factor.status == FactorStatus::Active as i32 {
                                        form method="post" action="/factors/remove" {
                                            (csrf_field(&csrf))
                                            input type="hidden" name="factor_id" value=(factor.id);
                                            (proof_input(&format!("proof-{}", factor.id), "proof", "Code or recovery code"))
                                            button type="submit" { "Remove" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        section {
            h2 { "Add a second factor" }
            (add_factor_forms(&csrf, &[]))
        }
        @if active {
            section {
                h2 { "Recovery codes" }
                p #recovery-remaining { (factors.recovery_codes_remaining) " unused recovery codes left." }
                form method="post" action="/account/recovery-codes" {
                    (csrf_field(&csrf))
                    (proof_input("recovery-proof", "proof", "A current code or a recovery code"))
                    button type="submit" { "Make new recovery codes" }
                }
            }
            section {
                h2 { "New phone?" }
                p { "Remove all your factors and recovery codes, end your other sessions, and
                     set up your new device at once. Prove it's you with a code from your old
                     device or a recovery code." }
                form method="post" action="/account/reset" {
                    (csrf_field(&csrf))
                    (proof_input("reset-proof", "proof", "Code or recovery code"))
                    button type="submit" { "Reset my two-factor authentication" }
                }
            }
        }
        section #sessions {
            h2 { "Where you're signed in" }
            table {
                thead { tr { th { "Signed in" } th { "Last active" } th { "From" } th { "" } } }
                tbody {
                    @for other in &sessions {
                        tr.session {
                            td { (when(other.create_time.as_ref())) }
                            td { (when(other.last_seen_time.as_ref())) }
                            td { (client_text(other.client_context.as_ref())) }
                            td { @if other.current { "this browser" } }
                        }
                    }
                }
            }
            @if sessions.len() > 1 {
                form method="post" action="/account/sessions/others" {
                    (csrf_field(&csrf))
                    button type="submit" #log-out-elsewhere { "Log out everywhere else" }
                }
            }
        }
        section #devices {
            h2 { "Remembered browsers" }
            @if devices.is_empty() {
                p { "None: every login asks for your second factor." }
            } @else {
                table {
                    thead { tr { th { "Remembered" } th { "Until" } th { "Last used" }
                        th { "From" } th { "" } } }
                    tbody {
                        @for device in &devices {
                            tr.device {
                                td { (when(device.create_time.as_ref())) }
                                td { (when(device.expire_time.as_ref())) }
                                td { (when(device.last_used_time.as_ref())) }
                                td { (client_text(device.client_context.as_ref())) }
                                td {
                                    form method="post" action="/account/devices/forget" {
                                        (csrf_field(&csrf))
                                        input type="hidden" name="device_id" value=(device.device_id);
                                        button type="submit" .forget-device { "Forget" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        form method="post" action="/logout" {
            (csrf_field(&csrf))
            button type="submit" #log-out { "Log out" }
        }
    };
    (
        jar,
        respond(&message, page("Your account", &csrf, &message, &body)),
    )
        .into_response()
}

/// A Tollgate error on a page that needs the session: back to the login when the session is
/// over, the message otherwise.
fn failure(jar: Jar, status: &tonic::Status) -> Response {
    if session_over(status) {
        return (jar.logged_out(), Redirect::to("/login")).into_response();
    }
    let (jar, csrf) = jar.csrf();
    let message = Message::Error(human(status));
    let body = html! { p { a href="/" { "Back" } } };
    (
        jar,
        respond(
            &message,
            page("Something went wrong", &csrf, &message, &body),
        ),
    )
        .into_response()
}

/// Where a session or a remembered browser came from, as the page shows it.
fn client_text(client: Option<&tollgate_proto::v1::ClientContext>) -> String {
    match client {
        Some(client) if !client.user_agent.is_empty() && !client.ip_address.is_empty() => {
            format!("{} ({})", client.user_agent, client.ip_address)
        }
        Some(client) if !client.user_agent.is_empty() => client.user_agent.clone(),
        Some(client) => client.ip_address.clone(),
        None => "unknown".to_owned(),
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct CsrfOnly {
    csrf: String,
}

/// `RevokeOtherSessions`: every session of the user but this browser's ends.
pub(crate) async fn log_out_elsewhere(
    State(app): State<App>,
    jar: Jar,
    form: axum::Form<CsrfOnly>,
) -> Response {
    let (mut tollgate, jar, token) = match session_form(app, jar, &form.csrf).await {
        Ok(checked) => checked,
        Err(page) => return page,
    };
    let message = match tollgate
        .sessions
        .revoke_other_sessions(bearer(RevokeOtherSessionsRequest {}, &token))
        .await
    {
        Ok(reply) => Message::Notice(format!(
            "Signed out everywhere else ({} sessions ended).",
            reply.get_ref().revoked_count
        )),
        Err(status) => Message::Error(human(&status)),
    };
    account(tollgate, jar, message).await
}

#[derive(Debug, Deserialize)]
pub(crate) struct DeviceForm {
    csrf: String,
    device_id: String,
}

/// `RevokeTrustedDevice`: that browser's next login asks for the second factor again.
pub(crate) async fn forget_device(
    State(app): State<App>,
    jar: Jar,
    form: axum::Form<DeviceForm>,
) -> Response {
    let (mut tollgate, jar, token) = match session_form(app, jar, &form.csrf).await {
        Ok(checked) => checked,
        Err(page) => return page,
    };
    let request = RevokeTrustedDeviceRequest {
        device_id: form.device_id.clone(),
    };
    let message = match tollgate
        .sessions
        .revoke_trusted_device(bearer(request, &token))
        .await
    {
        Ok(_) => Message::Notice(
            "Browser forgotten: its next login asks for your second factor.".to_owned(),
        ),
        Err(status) => Message::Error(human(&status)),
    };
    account(tollgate, jar, message).await
}

/// Where a factor page goes back to with a message: the account page, or the enrollment page
/// during a login that requires one.
async fn back(tollgate: Clients, jar: Jar, message: Message) -> Response {
    if jar.session().is_none()
        && let Some(Step::Enrollment {
            allowed_methods, ..
        }) = jar.step()
    {
        return enroll_form(jar, &allowed_methods, &message);
    }
    account(tollgate, jar, message).await
}

/// What every form of the account page checks first: a session (or the login page), then the
/// form's CSRF token (or the account page again, saying the form expired).
async fn session_form(app: App, jar: Jar, csrf: &str) -> Result<(Clients, Jar, String), Response> {
    let Some(token) = jar.session() else {
        return Err(Redirect::to("/login").into_response());
    };
    if !jar.csrf_ok(csrf) {
        return Err(account(app.tollgate, jar, expired_form()).await);
    }
    Ok((app.tollgate, jar, token))
}

#[derive(Debug, Deserialize)]
pub(crate) struct CodeForm {
    csrf: String,
    #[serde(default)]
    code: String,
}

/// `VerifyStepUp`: a level-1 session of a user with 2FA raised to level 2.
pub(crate) async fn step_up(
    State(app): State<App>,
    jar: Jar,
    form: axum::Form<CodeForm>,
) -> Response {
    let (mut tollgate, jar, token) = match session_form(app, jar, &form.csrf).await {
        Ok(checked) => checked,
        Err(page) => return page,
    };
    let request = VerifyStepUpRequest {
        code: form.code.replace(' ', ""),
        ..VerifyStepUpRequest::default()
    };
    let request = bearer(request, &token);
    let message = match tollgate.authentication.verify_step_up(request).await {
        Ok(_) => Message::Notice("Confirmed: you can change your factors now.".to_owned()),
        Err(status) => Message::Error(human(&status)),
    };
    account(tollgate, jar, message).await
}

/// "Text me a code": `SendSmsCode` for the session, for the step-up or a proof.
pub(crate) async fn send_sms(
    State(app): State<App>,
    jar: Jar,
    form: axum::Form<crate::login::CsrfForm>,
) -> Response {
    let (mut tollgate, jar, token) = match session_form(app, jar, &form.csrf).await {
        Ok(checked) => checked,
        Err(page) => return page,
    };
    let request = bearer(SendSmsCodeRequest::default(), &token);
    let message = match tollgate.authentication.send_sms_code(request).await {
        Ok(reply) => Message::Notice(format!(
            "A code was sent to {}.",
            reply.into_inner().masked_phone_number
        )),
        Err(status) => Message::Error(human(&status)),
    };
    account(tollgate, jar, message).await
}

#[derive(Debug, Deserialize)]
pub(crate) struct StepUpCall {
    csrf: String,
    #[serde(default)]
    response: String,
}

/// "Confirm with a passkey": `BeginWebAuthnVerification` for the session.
pub(crate) async fn step_up_passkey_begin(
    State(app): State<App>,
    jar: Jar,
    Json(call): Json<StepUpCall>,
) -> Json<Reply> {
    let Some(token) = jar.session() else {
        return Json(Reply::redirect("/login"));
    };
    if !jar.csrf_ok(&call.csrf) {
        return Json(Reply::error(expired_text()));
    }
    let mut tollgate = app.tollgate;
    let request = bearer(BeginWebAuthnVerificationRequest::default(), &token);
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

/// The passkey's assertion, to `VerifyStepUp`.
pub(crate) async fn step_up_passkey_finish(
    State(app): State<App>,
    jar: Jar,
    Json(call): Json<StepUpCall>,
) -> Json<Reply> {
    let Some(token) = jar.session() else {
        return Json(Reply::redirect("/login"));
    };
    if !jar.csrf_ok(&call.csrf) {
        return Json(Reply::error(expired_text()));
    }
    let mut tollgate = app.tollgate;
    let request = VerifyStepUpRequest {
        webauthn_response_json: call.response,
        ..VerifyStepUpRequest::default()
    };
    let request = bearer(request, &token);
    Json(
        match tollgate.authentication.verify_step_up(request).await {
            Ok(_) => Reply::redirect("/account"),
            Err(status) => Reply::error(human(&status)),
        },
    )
}

#[derive(Debug, Deserialize)]
pub(crate) struct LabelForm {
    csrf: String,
    #[serde(default)]
    label: String,
}

/// `BeginTotpEnrollment`: the QR code, the secret grouped for typing under "Can't scan the
/// QR code?", and the form for the first code.
pub(crate) async fn add_app(
    State(app): State<App>,
    jar: Jar,
    form: axum::Form<LabelForm>,
) -> Response {
    let Some(credential) = jar.enrolling_credential() else {
        return Redirect::to("/login").into_response();
    };
    if !jar.csrf_ok(&form.csrf) {
        return back(app.tollgate, jar, expired_form()).await;
    }
    let mut tollgate = app.tollgate;
    let request = BeginTotpEnrollmentRequest {
        label: form.label.trim().to_owned(),
    };
    let begun = match tollgate
        .enrollment
        .begin_totp_enrollment(bearer(request, &credential))
        .await
    {
        Ok(reply) => reply.into_inner(),
        Err(status) => return back(tollgate, jar, Message::Error(human(&status))).await,
    };
    let factor_id = begun.factor.unwrap_or_default().id;
    let (jar, csrf) = jar.csrf();
    let body = html! {
        ol {
            li { "Open your authenticator app and add an account." }
            li { "Scan this QR code:" }
        }
        // Tollgate's own SVG: a size of its own and a viewBox in modules.
        figure #qr-code { (PreEscaped(&begun.qr_code_svg)) }
        details #manual-entry {
            summary { "Can't scan the QR code?" }
            p { "Enter this key in the app (time-based):" }
            p { code #secret { (begun.secret_base32) } }
        }
        (confirm_form(&csrf, "/factors/app/confirm", &factor_id, "Code the app shows now"))
    };
    let message = Message::None;
    let markup = page("Add an authenticator app", &csrf, &message, &body);
    (jar, respond(&message, markup)).into_response()
}

fn confirm_form(csrf: &str, action: &str, factor_id: &str, label: &str) -> Markup {
    html! {
        form method="post" action=(action) {
            (csrf_field(csrf))
            input type="hidden" name="factor_id" value=(factor_id);
            (code_input("code", label))
            button type="submit" #confirm { "Confirm" }
        }
    }
}

/// A confirmation form again after a wrong code (the QR code is not shown twice).
fn confirm_again(jar: Jar, action: &str, factor_id: &str, message: &Message) -> Response {
    let (jar, csrf) = jar.csrf();
    let body = confirm_form(&csrf, action, factor_id, "Code");
    (
        jar,
        respond(
            message,
            page("Confirm your new factor", &csrf, message, &body),
        ),
    )
        .into_response()
}

#[derive(Debug, Deserialize)]
pub(crate) struct ConfirmForm {
    csrf: String,
    factor_id: String,
    code: String,
}

/// `ConfirmTotpEnrollment` with the app's first code.
pub(crate) async fn confirm_app(
    State(app): State<App>,
    jar: Jar,
    client: Client,
    form: axum::Form<ConfirmForm>,
) -> Response {
    confirm(app.tollgate, jar, client, &form, Confirming::App).await
}

/// `ConfirmSmsEnrollment` with the code the phone received.
pub(crate) async fn confirm_phone(
    State(app): State<App>,
    jar: Jar,
    client: Client,
    form: axum::Form<ConfirmForm>,
) -> Response {
    confirm(app.tollgate, jar, client, &form, Confirming::Phone).await
}

/// Which confirmation a code form posts to.
#[derive(Clone, Copy, Debug)]
enum Confirming {
    App,
    Phone,
}

/// The confirmation of an app or a phone with its first code; a wrong code shows the form
/// again.
async fn confirm(
    mut tollgate: Clients,
    jar: Jar,
    client: Client,
    form: &ConfirmForm,
    kind: Confirming,
) -> Response {
    let Some(credential) = jar.enrolling_credential() else {
        return Redirect::to("/login").into_response();
    };
    let action = match kind {
        Confirming::App => "/factors/app/confirm",
        Confirming::Phone => "/factors/phone/confirm",
    };
    if !jar.csrf_ok(&form.csrf) {
        return confirm_again(jar, action, &form.factor_id, &expired_form());
    }
    let (factor_id, code) = (form.factor_id.clone(), form.code.replace(' ', ""));
    let answer = match kind {
        Confirming::App => {
            let request = ConfirmTotpEnrollmentRequest {
                factor_id,
                code,
                replaces_factor_id: String::new(),
                client_context: Some(client.0),
            };
            tollgate
                .enrollment
                .confirm_totp_enrollment(bearer(request, &credential))
                .await
                .map(|reply| {
                    let reply = reply.into_inner();
                    (reply.recovery_codes, reply.session)
                })
        }
        Confirming::Phone => {
            let request = ConfirmSmsEnrollmentRequest {
                factor_id,
                code,
                replaces_factor_id: String::new(),
                client_context: Some(client.0),
            };
            tollgate
                .enrollment
                .confirm_sms_enrollment(bearer(request, &credential))
                .await
                .map(|reply| {
                    let reply = reply.into_inner();
                    (reply.recovery_codes, reply.session)
                })
        }
    };
    match answer {
        Ok((codes, session)) => confirmed(jar, &codes, session),
        Err(status) => confirm_again(
            jar,
            action,
            &form.factor_id,
            &Message::Error(human(&status)),
        ),
    }
}

/// After a confirmation: the session when it completes a login, then the recovery codes
/// when it was the first factor, or the account page.
fn confirmed(jar: Jar, codes: &[String], session: Option<Session>) -> Response {
    let jar = match session {
        Some(session) => jar.logged_in(session.token),
        None => jar,
    };
    if codes.is_empty() {
        return (jar, Redirect::to("/account")).into_response();
    }
    let (jar, csrf) = jar.csrf();
    let message = Message::Notice("Your new factor is active.".to_owned());
    let markup = page(
        "Save your recovery codes",
        &csrf,
        &message,
        &recovery_codes(codes, "/account"),
    );
    (jar, respond(&message, markup)).into_response()
}

#[derive(Debug, Deserialize)]
pub(crate) struct PhoneForm {
    csrf: String,
    phone_number: String,
    #[serde(default)]
    label: String,
}

/// `BeginSmsEnrollment`: Tollgate sends the code; the page asks for it.
pub(crate) async fn add_phone(
    State(app): State<App>,
    jar: Jar,
    form: axum::Form<PhoneForm>,
) -> Response {
    let Some(credential) = jar.enrolling_credential() else {
        return Redirect::to("/login").into_response();
    };
    if !jar.csrf_ok(&form.csrf) {
        return back(app.tollgate, jar, expired_form()).await;
    }
    let mut tollgate = app.tollgate;
    let request = BeginSmsEnrollmentRequest {
        phone_number: form.phone_number.clone(),
        label: form.label.trim().to_owned(),
    };
    match tollgate
        .enrollment
        .begin_sms_enrollment(bearer(request, &credential))
        .await
    {
        Ok(reply) => {
            let reply = reply.into_inner();
            let factor_id = reply.factor.unwrap_or_default().id;
            let text = format!("A code was sent to {}.", reply.masked_phone_number);
            confirm_again(
                jar,
                "/factors/phone/confirm",
                &factor_id,
                &Message::Notice(text),
            )
        }
        Err(status) => back(tollgate, jar, Message::Error(human(&status))).await,
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct PasskeyCall {
    csrf: String,
    #[serde(default)]
    label: String,
    #[serde(default)]
    discoverable: bool,
    #[serde(default)]
    ceremony: String,
    #[serde(default)]
    response: String,
}

/// "Add a passkey": `BeginWebAuthnRegistration`; the script passes the options to
/// `navigator.credentials.create()`.
pub(crate) async fn add_passkey_begin(
    State(app): State<App>,
    jar: Jar,
    Json(call): Json<PasskeyCall>,
) -> Json<Reply> {
    let Some(credential) = jar.enrolling_credential() else {
        return Json(Reply::redirect("/login"));
    };
    if !jar.csrf_ok(&call.csrf) {
        return Json(Reply::error(expired_text()));
    }
    let mut tollgate = app.tollgate;
    let request = BeginWebAuthnRegistrationRequest {
        label: call.label.trim().to_owned(),
        discoverable: call.discoverable,
    };
    Json(
        match tollgate
            .enrollment
            .begin_web_authn_registration(bearer(request, &credential))
            .await
        {
            Ok(reply) => {
                let reply = reply.into_inner();
                let factor_id = reply.factor.unwrap_or_default().id;
                Reply::options(reply.creation_options_json, factor_id)
            }
            Err(status) => Reply::error(human(&status)),
        },
    )
}

/// The browser's new credential, to `ConfirmWebAuthnRegistration`.
pub(crate) async fn add_passkey_finish(
    State(app): State<App>,
    jar: Jar,
    client: Client,
    Json(call): Json<PasskeyCall>,
) -> Response {
    let Some(credential) = jar.enrolling_credential() else {
        return Json(Reply::redirect("/login")).into_response();
    };
    if !jar.csrf_ok(&call.csrf) {
        return Json(Reply::error(expired_text())).into_response();
    }
    let mut tollgate = app.tollgate;
    let request = ConfirmWebAuthnRegistrationRequest {
        factor_id: call.ceremony,
        registration_response_json: call.response,
        replaces_factor_id: String::new(),
        client_context: Some(client.0),
    };
    match tollgate
        .enrollment
        .confirm_web_authn_registration(bearer(request, &credential))
        .await
    {
        Ok(reply) => {
            let reply = reply.into_inner();
            let jar = match reply.session {
                Some(session) => jar.logged_in(session.token),
                None => jar,
            };
            if reply.recovery_codes.is_empty() {
                return (jar, Json(Reply::redirect("/account"))).into_response();
            }
            let markup = html! {
                h1 { "Save your recovery codes" }
                p.notice role="status" { "Your passkey is active." }
                (recovery_codes(&reply.recovery_codes, "/account"))
            };
            (jar, Json(Reply::html(&markup))).into_response()
        }
        Err(status) => Json(Reply::error(human(&status))).into_response(),
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct RemoveForm {
    csrf: String,
    factor_id: String,
    proof: String,
}

/// `RemoveFactor` with a current code or a recovery code as proof.
pub(crate) async fn remove_factor(
    State(app): State<App>,
    jar: Jar,
    form: axum::Form<RemoveForm>,
) -> Response {
    let (mut tollgate, jar, token) = match session_form(app, jar, &form.csrf).await {
        Ok(checked) => checked,
        Err(page) => return page,
    };
    let request = RemoveFactorRequest {
        factor_id: form.factor_id.clone(),
        proof: form.proof.replace(' ', ""),
        webauthn_response_json: String::new(),
    };
    let message = match tollgate
        .enrollment
        .remove_factor(bearer(request, &token))
        .await
    {
        Ok(reply) if reply.get_ref().recovery_codes_removed => Message::Notice(
            "Factor removed. It was your last one, so your recovery codes went too.".to_owned(),
        ),
        Ok(_) => Message::Notice("Factor removed.".to_owned()),
        Err(status) => Message::Error(human(&status)),
    };
    account(tollgate, jar, message).await
}

#[derive(Debug, Deserialize)]
pub(crate) struct ProofForm {
    csrf: String,
    proof: String,
}

/// `RegenerateRecoveryCodes`: a new set, shown once.
pub(crate) async fn new_recovery_codes(
    State(app): State<App>,
    jar: Jar,
    form: axum::Form<ProofForm>,
) -> Response {
    let (mut tollgate, jar, token) = match session_form(app, jar, &form.csrf).await {
        Ok(checked) => checked,
        Err(page) => return page,
    };
    let request = RegenerateRecoveryCodesRequest {
        proof: form.proof.replace(' ', ""),
        webauthn_response_json: String::new(),
    };
    match tollgate
        .enrollment
        .regenerate_recovery_codes(bearer(request, &token))
        .await
    {
        Ok(reply) => confirmed(jar, &reply.into_inner().recovery_codes, None),
        Err(status) => account(tollgate, jar, Message::Error(human(&status))).await,
    }
}

/// `ResetMfa`: every factor and recovery code removed, other sessions ended; this session
/// enrolls the new device at once.
pub(crate) async fn reset(
    State(app): State<App>,
    jar: Jar,
    form: axum::Form<ProofForm>,
) -> Response {
    let (mut tollgate, jar, token) = match session_form(app, jar, &form.csrf).await {
        Ok(checked) => checked,
        Err(page) => return page,
    };
    let request = ResetMfaRequest {
        proof: form.proof.replace(' ', ""),
        webauthn_response_json: String::new(),
    };
    let message = match tollgate.enrollment.reset_mfa(bearer(request, &token)).await {
        Ok(reply) => Message::Notice(format!(
            "{} factors removed. Add your new device now.",
            reply.into_inner().factors_removed
        )),
        Err(status) => Message::Error(human(&status)),
    };
    account(tollgate, jar, message).await
}

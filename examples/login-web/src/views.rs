//! The HTML the pages share: the layout, messages, and the inputs every code form uses.

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};
use tollgate_proto::v1::{FactorKind, SecondFactorMethod};

/// A whole page: the title, an error or notice if any, the body. `csrf` goes into a meta tag
/// for the script's calls (the forms carry it as a hidden field).
pub(crate) fn page(title: &str, csrf: &str, message: &Message, body: &Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="csrf" content=(csrf);
                title { (title) " · Tollgate" }
                link rel="stylesheet" href="/static/app.css";
                script src="/static/app.js" defer {}
            }
            body {
                header { a href="/" { "Tollgate" } }
                main {
                    h1 { (title) }
                    @match message {
                        Message::None => {}
                        Message::Error(text) => p.error role="alert" { (text) },
                        Message::Notice(text) => p.notice role="status" { (text) },
                    }
                    p.error.script-error role="alert" hidden {}
                    (body)
                }
            }
        }
    }
}

/// What a page says above its body.
#[derive(Debug)]
pub(crate) enum Message {
    None,
    Error(String),
    Notice(String),
}

/// A finished page: 200, or 400 when it shows an error.
pub(crate) fn respond(message: &Message, markup: Markup) -> Response {
    let status = match message {
        Message::Error(_) => StatusCode::BAD_REQUEST,
        _ => StatusCode::OK,
    };
    (status, Html(markup.into_string())).into_response()
}

/// The hidden CSRF field of a form.
pub(crate) fn csrf_field(csrf: &str) -> Markup {
    html! { input type="hidden" name="csrf" value=(csrf); }
}

/// A code from an app, a token or an SMS: numeric keyboard, and the browser may fill it from
/// an SMS (`one-time-code`).
pub(crate) fn code_input(name: &str, label: &str) -> Markup {
    html! {
        label for=(name) { (label) }
        input id=(name) name=(name) type="text" inputmode="numeric" pattern="[0-9 ]*"
            autocomplete="one-time-code" maxlength="10" required;
    }
}

/// A code that may also be a recovery code (letters): a text keyboard. `id` tells apart the
/// fields of several forms on one page that post the same `name`.
pub(crate) fn proof_input(id: &str, name: &str, label: &str) -> Markup {
    html! {
        label for=(id) { (label) }
        input id=(id) name=(name) type="text" autocomplete="one-time-code"
            autocapitalize="characters" spellcheck="false" maxlength="24" required;
    }
}

pub(crate) fn factor_kind(kind: i32) -> &'static str {
    match FactorKind::try_from(kind) {
        Ok(FactorKind::Totp) => "Authenticator app",
        Ok(FactorKind::Hotp) => "Hardware token",
        Ok(FactorKind::Sms) => "Phone (SMS)",
        Ok(FactorKind::Webauthn) => "Passkey or security key",
        _ => "Other",
    }
}

pub(crate) fn method_name(method: i32) -> &'static str {
    match SecondFactorMethod::try_from(method) {
        Ok(SecondFactorMethod::Totp) => "authenticator app",
        Ok(SecondFactorMethod::Hotp) => "hardware token",
        Ok(SecondFactorMethod::Sms) => "text message",
        Ok(SecondFactorMethod::RecoveryCode) => "recovery code",
        Ok(SecondFactorMethod::Webauthn) => "passkey",
        _ => "other",
    }
}

/// The recovery codes, shown once, with a download (made by the script in the browser: the
/// codes never travel in a URL).
pub(crate) fn recovery_codes(codes: &[String], next: &str) -> Markup {
    html! {
        section #recovery-codes {
            h2 { "Your recovery codes" }
            p { "Each code logs you in once if you lose your devices. Keep them somewhere safe:
                 they are shown only now." }
            pre #codes { @for code in codes { (code) "\n" } }
            button type="button" #download-codes { "Download" }
            p { a href=(next) { "I have saved them: continue" } }
        }
    }
}

/// The form that adds an authenticator app, a phone or a passkey: which ones depends on what
/// the organization allows (`allowed`: `FactorKind`s; empty: all).
pub(crate) fn add_factor_forms(csrf: &str, allowed: &[i32]) -> Markup {
    let allows = |kind: FactorKind| allowed.is_empty() || allowed.contains(&(kind as i32));
    html! {
        @if allows(FactorKind::Totp) {
            form method="post" action="/factors/app" {
                (csrf_field(csrf))
                h3 { "Authenticator app" }
                label for="app-label" { "Name" }
                input #app-label name="label" type="text" maxlength="64" value="Authenticator app";
                button type="submit" #add-app { "Add an authenticator app" }
            }
        }
        @if allows(FactorKind::Sms) {
            form method="post" action="/factors/phone" {
                (csrf_field(csrf))
                h3 { "Phone" }
                label for="phone" { "Phone number, with its country code" }
                input #phone name="phone_number" type="tel" autocomplete="tel"
                    placeholder="+1 415 555 0100" required;
                label for="phone-label" { "Name" }
                input #phone-label name="label" type="text" maxlength="64" value="Phone";
                button type="submit" { "Send a code to this phone" }
            }
        }
        @if allows(FactorKind::Webauthn) {
            section {
                h3 { "Passkey or security key" }
                label for="passkey-label" { "Name" }
                input #passkey-label type="text" maxlength="64" value="Passkey";
                label {
                    input #passkey-discoverable type="checkbox" checked;
                    " Also sign in with it alone, without a password"
                }
                button type="button" #add-passkey data-begin="/factors/passkey/begin"
                    data-finish="/factors/passkey/finish" { "Add a passkey" }
            }
        }
    }
}

/// The answer to a call of the page's script (the WebAuthn buttons): options for the
/// browser, a page to go to, a page to show, or an error to show.
#[derive(Debug, Default, serde::Serialize)]
pub(crate) struct Reply {
    #[serde(skip_serializing_if = "Option::is_none")]
    options: Option<String>,
    /// What the script sends back with the browser's answer to finish the ceremony: the
    /// passwordless ceremony's id, or the pending factor's id of a registration.
    #[serde(skip_serializing_if = "String::is_empty")]
    ceremony: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    redirect: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    html: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

impl Reply {
    /// WebAuthn options (JSON) for the browser, and the ceremony to send back.
    pub(crate) fn options(options: String, ceremony: String) -> Self {
        Self {
            options: Some(options),
            ceremony,
            ..Self::default()
        }
    }

    pub(crate) fn redirect(to: &str) -> Self {
        Self {
            redirect: Some(to.to_owned()),
            ..Self::default()
        }
    }

    /// Content that replaces the page's `main` (the recovery codes after a first factor);
    /// maud escaped everything in it.
    pub(crate) fn html(markup: &Markup) -> Self {
        Self {
            html: Some(markup.clone().into_string()),
            ..Self::default()
        }
    }

    pub(crate) fn error(text: String) -> Self {
        Self {
            error: Some(text),
            ..Self::default()
        }
    }
}

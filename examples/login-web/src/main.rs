//! The reference login web app: a small server-rendered front end that drives Tollgate's gRPC
//! API the way a product's login pages would. Read it as documentation: every page says which
//! RPCs it calls, and the code around each call is what a front end has to do.
//!
//! - `tollgate.rs`: the generated `tollgate.v1` clients with the app's API key, the user's
//!   token as `authorization: Bearer`, and Tollgate's errors as human messages.
//! - `cookies.rs`: the session token and the pending login step in encrypted HttpOnly
//!   cookies, and the CSRF token every form carries.
//! - `login.rs`: sign up, log in (password, second factor, SMS, recovery code, passkey,
//!   passwordless), the enrollment a policy asks for, log out.
//! - `account.rs`: the user's factors, adding and removing them, recovery codes, own reset,
//!   the sessions and remembered browsers.
//! - `org.rs`: the organization page for owners and admins.
//! - `views.rs`: the HTML shared by the pages.

mod account;
mod client;
mod cookies;
mod login;
mod org;
mod tollgate;
mod views;

use std::net::SocketAddr;

use axum::Router;
use axum::extract::FromRef;
use axum::http::{HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum_extra::extract::cookie::Key;
use base64::Engine as _;
use clap::Parser;

/// Command line and environment.
#[derive(Debug, Parser)]
#[command(
    name = "tollgate-login-web",
    about = "The reference login web app for Tollgate"
)]
struct Args {
    /// Tollgate's gRPC address.
    #[arg(long, env = "TOLLGATE_ADDR", default_value = "http://127.0.0.1:50051")]
    tollgate: String,
    /// The API key this app calls Tollgate with (scopes: users:read, users:write,
    /// organizations:read, organizations:write, authentication, sessions, factors). Empty for
    /// a development server without `api_keys`. Prefer the environment to the flag: a flag is
    /// visible to every user of the machine.
    #[arg(
        long,
        env = "TOLLGATE_API_KEY",
        default_value = "",
        hide_env_values = true
    )]
    api_key: String,
    /// The key that encrypts the cookies: 64 bytes, base64. Without it a random key is made
    /// at start, and a restart logs everyone out of this app (their Tollgate sessions stay).
    #[arg(long, env = "LOGIN_WEB_COOKIE_KEY", hide_env_values = true)]
    cookie_key: Option<String>,
    /// Where this app listens.
    #[arg(long, env = "LOGIN_WEB_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// The address users reach the app at. Passkeys need it to match one of Tollgate's
    /// `webauthn.origins`; with `https://` the cookies are marked `Secure`.
    #[arg(
        long,
        env = "LOGIN_WEB_PUBLIC_URL",
        default_value = "http://localhost:8080"
    )]
    public_url: String,
    /// A request header that a reverse proxy in front of this app sets to the client's
    /// address (such as `x-forwarded-for`; its last entry is used). Empty: the TCP peer's
    /// address. Tollgate counts failed logins per client address, so never name a header a
    /// browser can set past your proxy.
    #[arg(long, env = "LOGIN_WEB_CLIENT_IP_HEADER", default_value = "")]
    client_ip_header: String,
}

/// What every handler gets.
#[derive(Clone, Debug)]
struct App {
    tollgate: tollgate::Clients,
    cookie_key: Key,
    secure_cookies: bool,
    /// Where the client's address comes from (`client::Client`): this header, or the peer.
    client_ip_header: Option<HeaderName>,
}

impl FromRef<App> for Key {
    fn from_ref(app: &App) -> Self {
        app.cookie_key.clone()
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let cookie_key = match &args.cookie_key {
        Some(encoded) => {
            let bytes = base64::engine::general_purpose::STANDARD.decode(encoded.trim())?;
            Key::try_from(bytes.as_slice())
                .map_err(|_| "LOGIN_WEB_COOKIE_KEY must be 64 bytes (base64)")?
        }
        None => {
            tracing::warn!(
                "no LOGIN_WEB_COOKIE_KEY: a random cookie key, so a restart logs everyone out"
            );
            Key::generate()
        }
    };
    let app = App {
        tollgate: tollgate::Clients::connect(&args.tollgate, &args.api_key)?,
        cookie_key,
        secure_cookies: args.public_url.starts_with("https://"),
        client_ip_header: match args.client_ip_header.trim() {
            "" => None,
            name => Some(
                HeaderName::try_from(name)
                    .map_err(|_| "LOGIN_WEB_CLIENT_IP_HEADER must be a header name")?,
            ),
        },
    };
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    tracing::info!(listen = %listener.local_addr()?, tollgate = %args.tollgate, "serving");
    // The peer's address reaches the handlers (`client::Client`).
    axum::serve(
        listener,
        router(app).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await?;
    Ok(())
}

/// Every page and the two static files.
fn router(app: App) -> Router {
    Router::new()
        .route("/", get(home))
        .route("/signup", get(login::signup_page).post(login::signup))
        .route("/login", get(login::login_page).post(login::login))
        .route("/login/passkey/begin", post(login::passkey_login_begin))
        .route("/login/passkey/finish", post(login::passkey_login_finish))
        .route("/login/verify", get(login::verify_page).post(login::verify))
        .route("/login/sms", post(login::send_sms))
        .route(
            "/login/verify/passkey/begin",
            post(login::verify_passkey_begin),
        )
        .route(
            "/login/verify/passkey/finish",
            post(login::verify_passkey_finish),
        )
        .route("/enroll", get(login::enroll_page))
        .route("/logout", post(login::logout))
        .route("/account", get(account::account_page))
        .route("/account/step-up", post(account::step_up))
        .route("/account/sms", post(account::send_sms))
        .route(
            "/account/step-up/passkey/begin",
            post(account::step_up_passkey_begin),
        )
        .route(
            "/account/step-up/passkey/finish",
            post(account::step_up_passkey_finish),
        )
        .route("/account/recovery-codes", post(account::new_recovery_codes))
        .route("/account/reset", post(account::reset))
        .route("/account/sessions/others", post(account::log_out_elsewhere))
        .route("/account/devices/forget", post(account::forget_device))
        .route("/factors/app", post(account::add_app))
        .route("/factors/app/confirm", post(account::confirm_app))
        .route("/factors/phone", post(account::add_phone))
        .route("/factors/phone/confirm", post(account::confirm_phone))
        .route("/factors/passkey/begin", post(account::add_passkey_begin))
        .route("/factors/passkey/finish", post(account::add_passkey_finish))
        .route("/factors/remove", post(account::remove_factor))
        .route("/org", get(org::org_page))
        .route("/org/members", post(org::add_member))
        .route("/org/members/reset", post(org::reset_member))
        .route("/org/policy", post(org::update_policy))
        .route("/static/app.js", get(script))
        .route("/static/app.css", get(style))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(app)
}

async fn home(jar: cookies::Jar) -> Redirect {
    if jar.session().is_some() {
        Redirect::to("/account")
    } else {
        Redirect::to("/login")
    }
}

async fn script() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("../static/app.js"),
    )
}

async fn style() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("../static/app.css"),
    )
}

/// Headers on every answer: scripts and styles only from this app (no inline script, so an
/// injected one does not run), never framed, no referrer, and no page kept in a cache (they
/// show codes and account data).
async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; frame-ancestors 'none'; form-action 'self'",
        ),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    headers.insert(
        HeaderName::from_static("cross-origin-opener-policy"),
        HeaderValue::from_static("same-origin"),
    );
    response
}

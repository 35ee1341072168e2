//! The organization page, for its owners and admins: the 2FA policy (changed with the
//! caller's password), the members with their 2FA status, adding a member, resetting a
//! member's 2FA, and the audit log.
//!
//! The organization is the one the session's login satisfied (`ValidateSession`). Tollgate
//! decides who is an admin: the RPCs that act for one (`UpdateMfaPolicy`, `ResetMemberMfa`,
//! `ListAuditEvents`) take their session as `authorization: Bearer` and refuse anyone else.
//! `ListMembers` and `AddMember` trust the calling service, so the app calls them only after
//! `ListAuditEvents` accepted the session.
//!
//! Adding a member by email puts that account under this organization's policy at once; a
//! real product would send an invitation the user accepts first.

use std::collections::HashMap;

use axum::extract::State;
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use prost_types::FieldMask;
use serde::Deserialize;
use tollgate_proto::v1::{
    AddMemberRequest, GetOrganizationRequest, GetUserRequest, ListAuditEventsRequest,
    ListAuditEventsResponse, ListMembersRequest, MfaPolicy, ResetMemberMfaRequest, Role, SsoMode,
    UpdateMfaPolicyRequest, ValidateSessionRequest, get_user_request,
};

use crate::App;
use crate::client::Client;
use crate::cookies::Jar;
use crate::login::expired_form;
use crate::tollgate::{Clients, bearer, human, session_over, when};
use crate::views::{Message, csrf_field, factor_kind, page, respond};

pub(crate) async fn org_page(State(app): State<App>, jar: Jar) -> Response {
    organization(app.tollgate, jar, Message::None).await
}

/// The session's user and organization, once Tollgate accepted the session as one of the
/// organization's owners or admins; with the newest audit events (that call is the check).
struct Admin {
    token: String,
    user_id: String,
    organization_id: String,
    audit: ListAuditEventsResponse,
}

/// The admin behind this browser's session, or the page that says why not. For a form,
/// `csrf` is the token it sent, checked first.
async fn admin(
    tollgate: &mut Clients,
    jar: Jar,
    csrf: Option<&str>,
) -> Result<(Jar, Admin), Response> {
    let Some(token) = jar.session() else {
        return Err(Redirect::to("/login").into_response());
    };
    if csrf.is_some_and(|sent| !jar.csrf_ok(sent)) {
        return Err(Box::pin(organization(tollgate.clone(), jar, expired_form())).await);
    }
    let request = ValidateSessionRequest {
        token: token.clone(),
    };
    let session = match tollgate.sessions.validate_session(request).await {
        Ok(reply) => reply.into_inner(),
        Err(status) if session_over(&status) => {
            return Err((jar.logged_out(), Redirect::to("/login")).into_response());
        }
        Err(status) => return Err(refused(jar, &human(&status))),
    };
    if session.organization_id.is_empty() {
        return Err(refused(jar, "You are not logged in to an organization."));
    }
    let request = ListAuditEventsRequest {
        organization_id: session.organization_id.clone(),
        page_size: 50,
        ..ListAuditEventsRequest::default()
    };
    match tollgate
        .organizations
        .list_audit_events(bearer(request, &token))
        .await
    {
        Ok(reply) => Ok((
            jar,
            Admin {
                token,
                user_id: session.user_id,
                organization_id: session.organization_id,
                audit: reply.into_inner(),
            },
        )),
        Err(status) => Err(refused(jar, &human(&status))),
    }
}

fn refused(jar: Jar, text: &str) -> Response {
    let (jar, csrf) = jar.csrf();
    let message = Message::Error(text.to_owned());
    let body = html! { p { a href="/account" { "Back to your account" } } };
    (
        jar,
        respond(&message, page("Organization", &csrf, &message, &body)),
    )
        .into_response()
}

async fn organization(mut tollgate: Clients, jar: Jar, message: Message) -> Response {
    let (jar, admin) = match admin(&mut tollgate, jar, None).await {
        Ok(admin) => admin,
        Err(page) => return page,
    };
    let request = GetOrganizationRequest {
        organization_id: admin.organization_id.clone(),
    };
    let org = match tollgate.organizations.get_organization(request).await {
        Ok(reply) => reply.into_inner().organization.unwrap_or_default(),
        Err(status) => return refused(jar, &human(&status)),
    };
    let request = ListMembersRequest {
        organization_id: admin.organization_id.clone(),
        page_size: 500,
        page_token: String::new(),
    };
    let members = match tollgate.organizations.list_members(request).await {
        Ok(reply) => reply.into_inner(),
        Err(status) => return refused(jar, &human(&status)),
    };
    let emails: HashMap<&str, &str> = members
        .members
        .iter()
        .map(|member| (member.user_id.as_str(), member.email.as_str()))
        .collect();
    let who = |id: &str| -> String {
        if id.is_empty() {
            "-".to_owned()
        } else {
            emails
                .get(id)
                .map_or_else(|| id.to_owned(), |email| (*email).to_owned())
        }
    };
    let policy = org.mfa_policy.unwrap_or_default();
    let (jar, csrf) = jar.csrf();
    let body = html! {
        p { "Organization " strong { (org.name) } }
        section {
            h2 { "Two-factor policy" }
            form method="post" action="/org/policy" #policy {
                (csrf_field(&csrf))
                label {
                    input #mfa-required name="mfa_required" type="checkbox" value="on"
                        checked[policy.mfa_required];
                    " Require two-factor authentication for every member"
                }
                @if let Some(since) = &policy.mfa_required_time {
                    p { "Required since " (when(Some(since))) "." }
                }
                label {
                    input name="sso_enabled" type="checkbox" value="on" checked[policy.sso_enabled];
                    " Members may log in through the organization's identity provider (SSO)"
                }
                label for="sso-mode" { "SSO logins" }
                select #sso-mode name="sso_mode" {
                    option value="exempt" selected[policy.sso_mode == SsoMode::Exempt as i32] {
                        "skip Tollgate's second factor" }
                    option value="enforce" selected[policy.sso_mode == SsoMode::Enforce as i32] {
                        "also need a second factor" }
                }
                label for="trusted-device-days" {
                    "Members may ask a browser to be remembered for this many days (0: never; at most 90)"
                }
                input #trusted-device-days name="trusted_device_days" type="number" min="0"
                    max="90" required value=(policy.trusted_device_days);
                label for="policy-password" { "Your password, to confirm" }
                input #policy-password name="password" type="password"
                    autocomplete="current-password" required;
                button type="submit" #save-policy { "Save the policy" }
            }
        }
        section {
            h2 { "Members" }
            table #members {
                thead { tr { th { "Email" } th { "Role" } th { "2FA" } th { "Methods" }
                    th { "Last second factor" } th {} } }
                tbody {
                    @for member in &members.members {
                        tr.member {
                            td { (member.email) }
                            td { (role(member.role)) }
                            td.mfa { @if member.mfa_enrolled { "on" } @else { "off" } }
                            td { (member.mfa_methods.iter().map(|kind| factor_kind(*kind)).collect::<Vec<_>>().join(", ")) }
                            td { (when(member.mfa_last_used_time.as_ref())) }
                            td {
                                @if member.mfa_enrolled && member.user_id != admin.user_id {
                                    form method="post" action="/org/members/reset" {
                                        (csrf_field(&csrf))
                                        input type="hidden" name="user_id" value=(member.user_id);
                                        button type="submit" { "Reset 2FA (lost device)" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            @if !members.next_page_token.is_empty() {
                p { "Only the first 500 members are shown." }
            }
            form method="post" action="/org/members" #add-member {
                (csrf_field(&csrf))
                h3 { "Add a member" }
                label for="member-email" { "Their email (they sign up first)" }
                input #member-email name="email" type="email" required;
                label for="member-role" { "Role" }
                select #member-role name="role" {
                    option value="member" { "member" }
                    option value="admin" { "admin" }
                }
                button type="submit" { "Add" }
            }
        }
        section {
            h2 { "Audit log" }
            table #audit {
                thead { tr { th { "When" } th { "What" } th { "By" } th { "About" } th { "Details" } } }
                tbody {
                    @for event in &admin.audit.events {
                        tr {
                            td { (when(event.occur_time.as_ref())) }
                            td.kind { (event.kind) }
                            td { (who(&event.actor_user_id)) }
                            td { (who(&event.subject_user_id)) }
                            td { code { (event.details) } }
                        }
                    }
                }
            }
        }
        p { a href="/account" { "Your account" } }
        form method="post" action="/logout" {
            (csrf_field(&csrf))
            button type="submit" #log-out { "Log out" }
        }
    };
    (
        jar,
        respond(&message, page("Organization", &csrf, &message, &body)),
    )
        .into_response()
}

fn role(role: i32) -> &'static str {
    match Role::try_from(role) {
        Ok(Role::Owner) => "owner",
        Ok(Role::Admin) => "admin",
        Ok(Role::Member) => "member",
        _ => "-",
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct PolicyForm {
    csrf: String,
    #[serde(default)]
    mfa_required: Option<String>,
    #[serde(default)]
    sso_enabled: Option<String>,
    #[serde(default)]
    sso_mode: String,
    #[serde(default)]
    trusted_device_days: i32,
    password: String,
}

/// `UpdateMfaPolicy` with the fields of the form named in the mask (the SSO mode only while
/// SSO is on), confirmed with the admin's password.
pub(crate) async fn update_policy(
    State(app): State<App>,
    jar: Jar,
    client: Client,
    form: axum::Form<PolicyForm>,
) -> Response {
    let mut tollgate = app.tollgate;
    let (jar, admin) = match admin(&mut tollgate, jar, Some(&form.csrf)).await {
        Ok(admin) => admin,
        Err(page) => return page,
    };
    let sso_enabled = form.sso_enabled.is_some();
    let mut paths = vec![
        "mfa_required".to_owned(),
        "sso_enabled".to_owned(),
        "trusted_device_days".to_owned(),
    ];
    if sso_enabled {
        paths.push("sso_mode".to_owned());
    }
    let sso_mode = if form.sso_mode == "enforce" {
        SsoMode::Enforce
    } else {
        SsoMode::Exempt
    };
    let request = UpdateMfaPolicyRequest {
        organization_id: admin.organization_id,
        policy: Some(MfaPolicy {
            mfa_required: form.mfa_required.is_some(),
            sso_enabled,
            sso_mode: sso_mode as i32,
            trusted_device_days: form.trusted_device_days,
            ..MfaPolicy::default()
        }),
        update_mask: Some(FieldMask { paths }),
        password: form.password.clone(),
        client_context: Some(client.0),
    };
    let message = match tollgate
        .organizations
        .update_mfa_policy(bearer(request, &admin.token))
        .await
    {
        Ok(reply) => Message::Notice(format!(
            "Policy saved. {} sessions without a second factor were ended.",
            reply.into_inner().sessions_revoked
        )),
        Err(status) => Message::Error(human(&status)),
    };
    organization(tollgate, jar, message).await
}

#[derive(Debug, Deserialize)]
pub(crate) struct MemberForm {
    csrf: String,
    email: String,
    role: String,
}

/// `GetUser` by email, then `AddMember` (after `admin` checked the caller).
pub(crate) async fn add_member(
    State(app): State<App>,
    jar: Jar,
    form: axum::Form<MemberForm>,
) -> Response {
    let mut tollgate = app.tollgate;
    let (jar, admin) = match admin(&mut tollgate, jar, Some(&form.csrf)).await {
        Ok(admin) => admin,
        Err(page) => return page,
    };
    let lookup = Some(get_user_request::Lookup::Email(
        form.email.trim().to_owned(),
    ));
    let user = match tollgate.users.get_user(GetUserRequest { lookup }).await {
        Ok(reply) => reply.into_inner().user.unwrap_or_default(),
        Err(status) if status.code() == tonic::Code::NotFound => {
            let text = "No account has this email: ask them to sign up first.".to_owned();
            return organization(tollgate, jar, Message::Error(text)).await;
        }
        Err(status) => return organization(tollgate, jar, Message::Error(human(&status))).await,
    };
    let role = if form.role == "admin" {
        Role::Admin
    } else {
        Role::Member
    };
    let request = AddMemberRequest {
        organization_id: admin.organization_id,
        user_id: user.id,
        role: role as i32,
    };
    let message = match tollgate.organizations.add_member(request).await {
        Ok(_) => Message::Notice(format!("{} is now a member.", user.email)),
        Err(status) if status.code() == tonic::Code::AlreadyExists => {
            Message::Error(format!("{} is a member already.", user.email))
        }
        Err(status) => Message::Error(human(&status)),
    };
    organization(tollgate, jar, message).await
}

#[derive(Debug, Deserialize)]
pub(crate) struct ResetForm {
    csrf: String,
    user_id: String,
}

/// `ResetMemberMfa`: the member's factors and recovery codes removed, their sessions ended.
pub(crate) async fn reset_member(
    State(app): State<App>,
    jar: Jar,
    client: Client,
    form: axum::Form<ResetForm>,
) -> Response {
    let mut tollgate = app.tollgate;
    let (jar, admin) = match admin(&mut tollgate, jar, Some(&form.csrf)).await {
        Ok(admin) => admin,
        Err(page) => return page,
    };
    let request = ResetMemberMfaRequest {
        organization_id: admin.organization_id,
        user_id: form.user_id.clone(),
        client_context: Some(client.0),
    };
    let message = match tollgate
        .organizations
        .reset_member_mfa(bearer(request, &admin.token))
        .await
    {
        Ok(reply) => {
            let reply = reply.into_inner();
            Message::Notice(format!(
                "Reset: {} factors removed, {} sessions ended. They set up a new device at their next login.",
                reply.factors_removed, reply.sessions_revoked
            ))
        }
        Err(status) => Message::Error(human(&status)),
    };
    organization(tollgate, jar, message).await
}

//! Login through the server with a clock the test moves: session expiry, growing lockouts,
//! the outcomes the policy decides (second factor, enrollment), and self-service password
//! changes.

#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]

use std::sync::Arc;
use std::time::Duration;

use storage::repo::PolicyUpdate;
use tollgate_e2e::{Backend, ManualClock, TestServer, both, reason};
use tollgate_proto::v1::{self, authenticate_response};
use tonic::Code;
use tonic::metadata::MetadataValue;
use tonic_types::StatusExt as _;

const PASSWORD: &str = "correct horse battery staple";
const T0: i64 = 1_800_000_000;

fn login(email: &str, password: &str, org: &str) -> v1::AuthenticateRequest {
    tollgate_e2e::password_login(email, password, org)
}

async fn user(server: &TestServer, email: &str) -> String {
    server.create_user(email, PASSWORD).await.id
}

async fn session(server: &TestServer, email: &str) -> v1::Session {
    let response = server
        .authentication()
        .await
        .authenticate(login(email, PASSWORD, ""))
        .await
        .unwrap();
    match response.into_inner().result {
        Some(authenticate_response::Result::Authenticated(session)) => session,
        other => panic!("expected a session: {other:?}"),
    }
}

async fn sessions_expire_when_idle_and_at_their_absolute_limit(backend: Backend) {
    let clock = Arc::new(ManualClock::new(T0));
    let server = TestServer::start_with_clock(backend, Arc::clone(&clock)).await;
    let config = server.app.config.sessions.clone();
    let id = user(&server, "idle@example.com").await;
    let s = session(&server, "idle@example.com").await;
    assert_eq!(
        s.expire_time.unwrap().seconds,
        T0 + config.absolute_ttl_secs
    );
    assert_eq!(
        s.idle_expire_time.unwrap().seconds,
        T0 + config.idle_ttl_secs
    );
    let mut sessions = server.sessions().await;
    let validate = |token: String| v1::ValidateSessionRequest { token };

    // Used just before its idle expiry: still valid, and the idle expiry moves.
    clock.advance(config.idle_ttl_secs - 1);
    let valid = sessions
        .validate_session(validate(s.token.clone()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(valid.user_id, id);
    assert_eq!(
        valid.assurance_level,
        v1::AssuranceLevel::SingleFactor as i32
    );
    assert_eq!(
        valid.idle_expire_time.unwrap().seconds,
        clock_now(&clock) + config.idle_ttl_secs
    );
    // Not used for a whole idle period: gone.
    clock.advance(config.idle_ttl_secs);
    let err = sessions
        .validate_session(validate(s.token.clone()))
        .await
        .unwrap_err();
    assert_eq!(reason(&err).as_deref(), Some("SESSION_INVALID"));

    // Used often, a session still ends at its absolute expiry.
    let s = session(&server, "idle@example.com").await;
    let end = clock_now(&clock) + config.absolute_ttl_secs;
    while clock_now(&clock) + config.idle_ttl_secs / 2 < end {
        clock.advance(config.idle_ttl_secs / 2);
        sessions
            .validate_session(validate(s.token.clone()))
            .await
            .unwrap();
    }
    clock.advance(end - clock_now(&clock));
    let err = sessions
        .validate_session(validate(s.token.clone()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    server.stop().await.unwrap();
}

/// A validation is a read: the idle expiry and last use are written only once they have
/// fallen more than `sessions.idle_tolerance_secs` behind, so a session ends at most that
/// much early and never late, and a revocation is seen by the next validation.
async fn validations_write_only_when_the_idle_expiry_falls_behind(backend: Backend) {
    let clock = Arc::new(ManualClock::new(T0));
    let server = TestServer::start_with_clock(backend, Arc::clone(&clock)).await;
    let config = server.app.config.sessions.clone();
    let (ttl, tolerance) = (config.idle_ttl_secs, config.idle_tolerance());
    assert_eq!((ttl, tolerance), (1800, 60), "the defaults");
    user(&server, "lazy@example.com").await;
    let s = session(&server, "lazy@example.com").await;
    let mut sessions = server.sessions().await;
    let validate = async |sessions: &mut v1::session_service_client::SessionServiceClient<_>| {
        sessions
            .validate_session(v1::ValidateSessionRequest {
                token: s.token.clone(),
            })
            .await
    };
    let row = async || {
        let row = server
            .app
            .storage
            .sessions()
            .find(&s.token)
            .await
            .unwrap()
            .unwrap();
        (row.last_seen_at, row.idle_expires_at)
    };
    // Within the tolerance of the login's write: read only, the idle expiry in force returned.
    for at in [1, 30, tolerance] {
        clock.advance(at - (clock_now(&clock) - T0));
        let valid = validate(&mut sessions).await.unwrap().into_inner();
        assert_eq!(
            valid.idle_expire_time.unwrap().seconds,
            T0 + ttl,
            "at +{at}"
        );
        assert_eq!(row().await, (T0, T0 + ttl), "nothing written at +{at}");
    }
    // One second more and it is written.
    clock.advance(1);
    let used = clock_now(&clock);
    let valid = validate(&mut sessions).await.unwrap().into_inner();
    assert_eq!(valid.idle_expire_time.unwrap().seconds, used + ttl);
    assert_eq!(row().await, (used, used + ttl));
    // Used again within the tolerance (not written), then left: it ends when the last write
    // said, `tolerance` seconds before a strict idle rule would have ended it, never after.
    clock.advance(tolerance);
    validate(&mut sessions).await.unwrap();
    assert_eq!(row().await, (used, used + ttl));
    clock.advance(ttl - tolerance - 1);
    validate(&mut sessions).await.unwrap();
    // That use fell behind by more than the tolerance, so it was written.
    let used = clock_now(&clock);
    assert_eq!(row().await, (used, used + ttl));
    clock.advance(tolerance);
    validate(&mut sessions).await.unwrap();
    clock.advance(ttl - tolerance);
    let err = validate(&mut sessions).await.unwrap_err();
    assert_eq!(reason(&err).as_deref(), Some("SESSION_INVALID"));

    // A revocation is seen by the very next validation, a read.
    let s2 = session(&server, "lazy@example.com").await;
    let check = |token: String| v1::ValidateSessionRequest { token };
    sessions
        .validate_session(check(s2.token.clone()))
        .await
        .unwrap();
    sessions
        .revoke_session(v1::RevokeSessionRequest {
            token: s2.token.clone(),
        })
        .await
        .unwrap();
    let err = sessions
        .validate_session(check(s2.token.clone()))
        .await
        .unwrap_err();
    assert_eq!(reason(&err).as_deref(), Some("SESSION_INVALID"));
    server.stop().await.unwrap();
}

fn clock_now(clock: &ManualClock) -> i64 {
    server::Clock::now(clock)
}

async fn lockouts_grow_and_end_and_unknown_emails_lock_alike(backend: Backend) {
    let clock = Arc::new(ManualClock::new(T0));
    let server = TestServer::start_with_clock(backend, Arc::clone(&clock)).await;
    user(&server, "lock@example.com").await;
    let mut auth = server.authentication().await;
    let retry_after = |status: &tonic::Status| {
        status
            .get_details_retry_info()
            .unwrap()
            .retry_delay
            .unwrap()
    };

    for email in ["lock@example.com", "nobody-here@example.com"] {
        for _ in 0..6 {
            let err = auth
                .authenticate(login(email, "wrong wrong wrong", ""))
                .await
                .unwrap_err();
            assert_eq!(err.code(), Code::Unauthenticated, "{email}");
        }
        // Locked, existing or not: the same answer.
        let err = auth
            .authenticate(login(email, PASSWORD, ""))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::ResourceExhausted, "{email}");
        assert_eq!(reason(&err).as_deref(), Some("LOCKED_OUT"));
        assert_eq!(retry_after(&err), Duration::from_secs(30), "{email}");
    }
    // After the first lockout, the next failure locks for twice as long.
    clock.advance(30);
    let err = auth
        .authenticate(login("lock@example.com", "still wrong", ""))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let err = auth
        .authenticate(login("lock@example.com", PASSWORD, ""))
        .await
        .unwrap_err();
    assert_eq!(retry_after(&err), Duration::from_secs(60));
    // When it ends, the right password works and clears the count.
    clock.advance(60);
    session(&server, "lock@example.com").await;
    let err = auth
        .authenticate(login("lock@example.com", "one more wrong", ""))
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Code::Unauthenticated,
        "the count started again from zero"
    );
    server.stop().await.unwrap();
}

async fn the_policy_decides_second_factor_or_enrollment(backend: Backend) {
    let server = TestServer::start(backend).await;
    let storage = &server.app.storage;
    let owner = user(&server, "owner@example.com").await;
    let member = user(&server, "member@example.com").await;
    let mut orgs = server.organizations().await;
    let org = orgs
        .create_organization(v1::CreateOrganizationRequest {
            name: "Secure".into(),
            owner_user_id: owner.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .organization
        .unwrap();
    orgs.add_member(v1::AddMemberRequest {
        organization_id: org.id.clone(),
        user_id: member.clone(),
        role: v1::Role::Member as i32,
    })
    .await
    .unwrap();
    // 2FA required, apps only (set through storage until the admin RPC exists).
    let org_id = org.id.parse().unwrap();
    storage
        .organizations()
        .update_policy(
            org_id,
            PolicyUpdate {
                mfa_required: true,
                allowed_methods: 0b001,
                sso_enabled: false,
                sso_mode: storage::entity::enums::SsoMode::Exempt,
                trusted_device_days: 0,
            },
            0,
        )
        .await
        .unwrap();
    // The owner has an authenticator app and recovery codes.
    let owner_id = owner.parse().unwrap();
    tollgate_e2e::active_totp(
        storage,
        owner_id,
        &[9; 20],
        Some(1),
        Some(&["AAAA-BBBB", "CCCC-DDDD"]),
        0,
    )
    .await;

    let mut auth = server.authentication().await;
    let response = auth
        .authenticate(login("owner@example.com", PASSWORD, &org.id))
        .await
        .unwrap()
        .into_inner();
    let Some(authenticate_response::Result::SecondFactorRequired(challenge)) = response.result
    else {
        panic!("expected a second-factor challenge: {response:?}");
    };
    assert_eq!(challenge.challenge_token.len(), 43);
    assert_eq!(
        challenge.methods,
        vec![
            v1::SecondFactorMethod::Totp as i32,
            v1::SecondFactorMethod::RecoveryCode as i32
        ]
    );
    // The member has no factor: enrollment, with the allowed kinds, and no session.
    let response = auth
        .authenticate(login("member@example.com", PASSWORD, ""))
        .await
        .unwrap()
        .into_inner();
    let Some(authenticate_response::Result::EnrollmentRequired(enroll)) = response.result else {
        panic!("expected enrollment: {response:?}");
    };
    assert_eq!(enroll.allowed_methods, vec![v1::FactorKind::Totp as i32]);
    assert!(!enroll.enrollment_token.is_empty());
    let sessions = storage::sea_orm::PaginatorTrait::count(
        <storage::entity::session::Entity as storage::sea_orm::EntityTrait>::find(),
        storage.db(),
    )
    .await
    .unwrap();
    assert_eq!(
        sessions, 0,
        "neither login got a session without a second factor"
    );
    // The member list shows who has 2FA.
    let members = orgs
        .list_members(v1::ListMembersRequest {
            organization_id: org.id.clone(),
            page_size: 0,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .members;
    let owner_row = members.iter().find(|m| m.user_id == owner).unwrap();
    assert!(owner_row.mfa_enrolled);
    assert_eq!(owner_row.mfa_methods, vec![v1::FactorKind::Totp as i32]);
    assert!(
        !members
            .iter()
            .find(|m| m.user_id == member)
            .unwrap()
            .mfa_enrolled
    );
    // A page token of this list does not page another.
    let other = orgs
        .create_organization(v1::CreateOrganizationRequest {
            name: "Other".into(),
            owner_user_id: owner.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .organization
        .unwrap();
    let page = orgs
        .list_members(v1::ListMembersRequest {
            organization_id: org.id.clone(),
            page_size: 1,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let err = orgs
        .list_members(v1::ListMembersRequest {
            organization_id: other.id,
            page_size: 1,
            page_token: page.next_page_token,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    server.stop().await.unwrap();
}

async fn self_service_password_changes_need_the_session_and_the_current_password(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = user(&server, "alice@example.com").await;
    let bob = user(&server, "bob@example.com").await;
    let alice_session = session(&server, "alice@example.com").await;
    let mut users = server.users().await;
    let with_bearer = |body: v1::SetPasswordRequest, token: &str| {
        let mut request = tonic::Request::new(body);
        request.metadata_mut().insert(
            "authorization",
            MetadataValue::try_from(format!("Bearer {token}")).unwrap(),
        );
        request
    };
    let change = |user: &str, current: &str| v1::SetPasswordRequest {
        user_id: user.into(),
        new_password: "a brand new passphrase".into(),
        current_password: current.into(),
    };
    // Another user's account: refused.
    let err = users
        .set_password(with_bearer(change(&bob, PASSWORD), &alice_session.token))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    // A wrong (or missing) current password: refused.
    let err = users
        .set_password(with_bearer(
            change(&alice, "not it at all"),
            &alice_session.token,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    // A bad session: refused.
    let err = users
        .set_password(with_bearer(change(&alice, PASSWORD), "forged"))
        .await
        .unwrap_err();
    assert_eq!(reason(&err).as_deref(), Some("SESSION_INVALID"));
    // Her session and her current password: done; the new password logs in.
    users
        .set_password(with_bearer(change(&alice, PASSWORD), &alice_session.token))
        .await
        .unwrap();
    let response = server
        .authentication()
        .await
        .authenticate(login("alice@example.com", "a brand new passphrase", ""))
        .await
        .unwrap()
        .into_inner();
    assert!(matches!(
        response.result,
        Some(authenticate_response::Result::Authenticated(_))
    ));
    server.stop().await.unwrap();
}

both!(
    sessions_expire_when_idle_and_at_their_absolute_limit,
    validations_write_only_when_the_idle_expiry_falls_behind,
    lockouts_grow_and_end_and_unknown_emails_lock_alike,
    the_policy_decides_second_factor_or_enrollment,
    self_service_password_changes_need_the_session_and_the_current_password,
);

//! Users, organizations, password login and sessions through the generated clients, on
//! SQLite and PostgreSQL; bad input on every field.

#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]

use storage::sea_orm::{EntityTrait, PaginatorTrait};
use tollgate_e2e::{Backend, TestServer, both, reason, violated_fields};
use tollgate_proto::v1::{self, authenticate_response, get_user_request::Lookup};
use tonic::Code;

const PASSWORD: &str = "correct horse battery staple";

fn login(email: &str, password: &str, org: &str) -> v1::AuthenticateRequest {
    tollgate_e2e::password_login(email, password, org)
}

async fn create_user(server: &TestServer, email: &str, password: &str) -> v1::User {
    server.create_user(email, password).await
}

async fn users_organizations_login_and_sessions(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = create_user(&server, "Alice@Example.com", PASSWORD).await;
    assert!(alice.has_password);
    assert_eq!(alice.status, v1::UserStatus::Active as i32);
    let bob = create_user(&server, "bob@example.com", "").await;
    assert!(!bob.has_password, "an SSO account without a password");

    // Lookups by id and by email, ignoring case.
    let mut users = server.users().await;
    let by_email = users
        .get_user(v1::GetUserRequest {
            lookup: Some(Lookup::Email("alice@EXAMPLE.com".into())),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(by_email.user.unwrap().id, alice.id);
    let dup = users
        .create_user(v1::CreateUserRequest {
            email: "alice@example.com".into(),
            password: PASSWORD.into(),
        })
        .await
        .unwrap_err();
    assert_eq!(dup.code(), Code::AlreadyExists);

    // An organization owned by Alice, with Bob as a member.
    let mut orgs = server.organizations().await;
    let org = orgs
        .create_organization(v1::CreateOrganizationRequest {
            name: "ACME".into(),
            owner_user_id: alice.id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .organization
        .unwrap();
    let policy = org.mfa_policy.clone().unwrap();
    assert!(!policy.mfa_required);
    assert_eq!(
        policy.allowed_methods.len(),
        4,
        "every kind, WebAuthn included"
    );
    let member = orgs
        .add_member(v1::AddMemberRequest {
            organization_id: org.id.clone(),
            user_id: bob.id.clone(),
            role: v1::Role::Member as i32,
        })
        .await
        .unwrap()
        .into_inner()
        .member
        .unwrap();
    assert_eq!(member.role, v1::Role::Member as i32);
    assert!(!member.mfa_enrolled);
    let again = orgs
        .add_member(v1::AddMemberRequest {
            organization_id: org.id.clone(),
            user_id: bob.id.clone(),
            role: v1::Role::Admin as i32,
        })
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::AlreadyExists);
    let fetched = orgs
        .get_organization(v1::GetOrganizationRequest {
            organization_id: org.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(fetched.organization.unwrap().name, "ACME");
    // Members page by page.
    let first = orgs
        .list_members(v1::ListMembersRequest {
            organization_id: org.id.clone(),
            page_size: 1,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.members.len(), 1);
    assert!(!first.next_page_token.is_empty());
    let second = orgs
        .list_members(v1::ListMembersRequest {
            organization_id: org.id.clone(),
            page_size: 1,
            page_token: first.next_page_token,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(second.members.len(), 1);
    assert!(second.next_page_token.is_empty());
    let mut all: Vec<String> = first
        .members
        .iter()
        .chain(&second.members)
        .map(|m| m.user_id.clone())
        .collect();
    all.sort();
    let mut expected = vec![alice.id.clone(), bob.id.clone()];
    expected.sort();
    assert_eq!(all, expected);

    // Password login (no 2FA anywhere yet): a session at assurance 1.
    let mut auth = server.authentication().await;
    let response = auth
        .authenticate(login("alice@example.com", PASSWORD, ""))
        .await
        .unwrap()
        .into_inner();
    let Some(authenticate_response::Result::Authenticated(session)) = response.result else {
        panic!("expected a session: {response:?}");
    };
    assert_eq!(session.user_id, alice.id);
    assert_eq!(
        session.organization_id, org.id,
        "her only organization applies"
    );
    assert_eq!(
        session.assurance_level,
        v1::AssuranceLevel::SingleFactor as i32
    );
    assert_eq!(session.token.len(), 43);

    // Validate, then revoke, then validation fails.
    let mut sessions = server.sessions().await;
    let valid = sessions
        .validate_session(v1::ValidateSessionRequest {
            token: session.token.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(valid.user_id, alice.id);
    assert_eq!(valid.session_id, session.session_id);
    sessions
        .revoke_session(v1::RevokeSessionRequest {
            token: session.token.clone(),
        })
        .await
        .unwrap();
    let revoked = sessions
        .validate_session(v1::ValidateSessionRequest {
            token: session.token.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(revoked.code(), Code::Unauthenticated);
    assert_eq!(reason(&revoked).as_deref(), Some("SESSION_INVALID"));
    // Revoking again succeeds; an unknown token does not.
    sessions
        .revoke_session(v1::RevokeSessionRequest {
            token: session.token,
        })
        .await
        .unwrap();
    let unknown = sessions
        .revoke_session(v1::RevokeSessionRequest {
            token: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::Unauthenticated);

    // The SSO account cannot log in with a password; the answer is that of a wrong password.
    let err = auth
        .authenticate(login("bob@example.com", "anything at all", ""))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert_eq!(reason(&err).as_deref(), Some("INVALID_CREDENTIALS"));

    // Setting Bob's password (as a service), then he logs in.
    users
        .set_password(v1::SetPasswordRequest {
            user_id: bob.id.clone(),
            new_password: PASSWORD.into(),
            current_password: String::new(),
        })
        .await
        .unwrap();
    let response = auth
        .authenticate(login("bob@example.com", PASSWORD, &org.id))
        .await
        .unwrap()
        .into_inner();
    assert!(matches!(
        response.result,
        Some(authenticate_response::Result::Authenticated(_))
    ));

    // The audit log has the changes.
    let kinds: Vec<String> = storage::entity::audit_event::Entity::find()
        .all(server.app.storage.db())
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    for kind in [
        "user.created",
        "organization.created",
        "member.added",
        "login.succeeded",
        "session.revoked",
        "password.set",
    ] {
        assert!(
            kinds.iter().any(|k| k == kind),
            "{kind} missing from {kinds:?}"
        );
    }
    server.stop().await.unwrap();
}

async fn bad_input_names_the_field_and_writes_nothing(backend: Backend) {
    let server = TestServer::start(backend).await;
    let owner = create_user(&server, "owner@example.com", PASSWORD).await;
    let db = server.app.storage.db();
    let count = || async {
        [
            storage::entity::user::Entity::find()
                .count(db)
                .await
                .unwrap(),
            storage::entity::organization::Entity::find()
                .count(db)
                .await
                .unwrap(),
            storage::entity::membership::Entity::find()
                .count(db)
                .await
                .unwrap(),
            storage::entity::session::Entity::find()
                .count(db)
                .await
                .unwrap(),
            storage::entity::login_challenge::Entity::find()
                .count(db)
                .await
                .unwrap(),
            storage::entity::audit_event::Entity::find()
                .count(db)
                .await
                .unwrap(),
            storage::entity::attempt_counter::Entity::find()
                .count(db)
                .await
                .unwrap(),
        ]
    };
    let before = count().await;
    let check = |status: tonic::Status, fields: &[&str]| {
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert_eq!(violated_fields(&status), fields, "{status:?}");
    };

    let mut users = server.users().await;
    let create = |email: &str, password: &str| v1::CreateUserRequest {
        email: email.into(),
        password: password.into(),
    };
    check(
        users.create_user(create("", "")).await.unwrap_err(),
        &["email"],
    );
    check(
        users
            .create_user(create("not-an-email", ""))
            .await
            .unwrap_err(),
        &["email"],
    );
    check(
        users
            .create_user(create("a@example.com", "short"))
            .await
            .unwrap_err(),
        &["password"],
    );
    check(
        users.create_user(create("", "short")).await.unwrap_err(),
        &["email", "password"],
    );
    check(
        users
            .create_user(create(&format!("{}@x.io", "a".repeat(260)), ""))
            .await
            .unwrap_err(),
        &["email"],
    );
    check(
        users
            .get_user(v1::GetUserRequest {
                lookup: Some(Lookup::UserId("xyz".into())),
            })
            .await
            .unwrap_err(),
        &["user_id"],
    );
    check(
        users
            .get_user(v1::GetUserRequest { lookup: None })
            .await
            .unwrap_err(),
        &["lookup"],
    );
    check(
        users
            .get_user(v1::GetUserRequest {
                lookup: Some(Lookup::Email(" ".into())),
            })
            .await
            .unwrap_err(),
        &["email"],
    );
    check(
        users
            .create_user(create("long@example.com", &"p".repeat(257)))
            .await
            .unwrap_err(),
        &["password"],
    );
    let set = |id: &str, pw: &str| v1::SetPasswordRequest {
        user_id: id.into(),
        new_password: pw.into(),
        current_password: String::new(),
    };
    check(
        users.set_password(set("", PASSWORD)).await.unwrap_err(),
        &["user_id"],
    );
    check(
        users
            .set_password(set(&owner.id, "short"))
            .await
            .unwrap_err(),
        &["new_password"],
    );
    let missing = users
        .set_password(set("00000000-0000-0000-0000-000000000000", PASSWORD))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);

    let mut orgs = server.organizations().await;
    let create_org = |name: &str, owner: &str| v1::CreateOrganizationRequest {
        name: name.into(),
        owner_user_id: owner.into(),
    };
    check(
        orgs.create_organization(create_org("", &owner.id))
            .await
            .unwrap_err(),
        &["name"],
    );
    check(
        orgs.create_organization(create_org(&"x".repeat(201), &owner.id))
            .await
            .unwrap_err(),
        &["name"],
    );
    check(
        orgs.create_organization(create_org("ACME", "nope"))
            .await
            .unwrap_err(),
        &["owner_user_id"],
    );
    check(
        orgs.create_organization(create_org("", ""))
            .await
            .unwrap_err(),
        &["name", "owner_user_id"],
    );
    let ghost = orgs
        .create_organization(create_org("ACME", "00000000-0000-0000-0000-000000000000"))
        .await
        .unwrap_err();
    assert_eq!(ghost.code(), Code::NotFound);
    check(
        orgs.get_organization(v1::GetOrganizationRequest {
            organization_id: "1".into(),
        })
        .await
        .unwrap_err(),
        &["organization_id"],
    );
    let add = |org: &str, user: &str, role: i32| v1::AddMemberRequest {
        organization_id: org.into(),
        user_id: user.into(),
        role,
    };
    check(
        orgs.add_member(add("x", "y", 0)).await.unwrap_err(),
        &["organization_id", "user_id", "role"],
    );
    check(
        orgs.add_member(add("00000000-0000-0000-0000-000000000000", &owner.id, 99))
            .await
            .unwrap_err(),
        &["role"],
    );
    let unknown = orgs
        .add_member(add("00000000-0000-0000-0000-000000000000", &owner.id, 3))
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound, "unknown organization");
    let list = |org: &str, size: i32, token: &str| v1::ListMembersRequest {
        organization_id: org.into(),
        page_size: size,
        page_token: token.into(),
    };
    check(
        orgs.list_members(list("", 0, "")).await.unwrap_err(),
        &["organization_id"],
    );
    check(
        orgs.list_members(list("00000000-0000-0000-0000-000000000000", 501, ""))
            .await
            .unwrap_err(),
        &["page_size"],
    );
    check(
        orgs.list_members(list("00000000-0000-0000-0000-000000000000", -1, ""))
            .await
            .unwrap_err(),
        &["page_size"],
    );
    check(
        orgs.list_members(list("00000000-0000-0000-0000-000000000000", 10, "garbage"))
            .await
            .unwrap_err(),
        &["page_token"],
    );

    let mut auth = server.authentication().await;
    check(
        auth.authenticate(login("", "", "")).await.unwrap_err(),
        &["password.email", "password.password"],
    );
    check(
        auth.authenticate(login("owner@example.com", &"p".repeat(257), ""))
            .await
            .unwrap_err(),
        &["password.password"],
    );
    check(
        auth.authenticate(login("owner@example.com", PASSWORD, "not-a-uuid"))
            .await
            .unwrap_err(),
        &["organization_id"],
    );
    check(
        auth.authenticate(v1::AuthenticateRequest {
            credentials: None,
            organization_id: String::new(),
            client_context: None,
            device_token: String::new(),
        })
        .await
        .unwrap_err(),
        &["password"],
    );
    let mut sessions = server.sessions().await;
    check(
        sessions
            .validate_session(v1::ValidateSessionRequest {
                token: String::new(),
            })
            .await
            .unwrap_err(),
        &["token"],
    );
    check(
        sessions
            .revoke_session(v1::RevokeSessionRequest { token: " ".into() })
            .await
            .unwrap_err(),
        &["token"],
    );

    assert_eq!(count().await, before, "no bad request wrote anything");
    server.stop().await.unwrap();
}

both!(
    users_organizations_login_and_sessions,
    bad_input_names_the_field_and_writes_nothing
);

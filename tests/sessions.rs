//! A user's sessions: listing them (their own, or a member's for an organization's owner or
//! admin), ending all but the current one, and a password change ending the others; on
//! SQLite and PostgreSQL.

#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]

use storage::repo::AuditFilter;
use tollgate_e2e::{Backend, TestServer, bearer, both, reason, violated_fields};
use tollgate_proto::v1::{self, authenticate_response};
use tonic::Code;

const PASSWORD: &str = "correct horse battery staple";

/// A password login into `org` (empty: none), which needs no second factor here.
async fn login(server: &TestServer, email: &str, org: &str) -> v1::Session {
    let result = server
        .first_step(tollgate_e2e::password_login(email, PASSWORD, org))
        .await;
    let authenticate_response::Result::Authenticated(session) = result else {
        panic!("a one-step login: {result:?}");
    };
    session
}

fn list(user_id: &str, page_size: i32, page_token: &str) -> v1::ListSessionsRequest {
    v1::ListSessionsRequest {
        user_id: user_id.to_owned(),
        page_size,
        page_token: page_token.to_owned(),
    }
}

/// The audit events of `kind`, newest first (at most 10).
async fn events_of(server: &TestServer, kind: &str) -> Vec<storage::entity::audit_event::Model> {
    let filter = AuditFilter {
        kinds: vec![kind.to_owned()],
        ..Default::default()
    };
    server
        .app
        .storage
        .audit()
        .list(&filter, None, 10)
        .await
        .unwrap()
        .items
}

async fn is_valid(server: &TestServer, session: &v1::Session) -> bool {
    let answer = server
        .sessions()
        .await
        .validate_session(v1::ValidateSessionRequest {
            token: session.token.clone(),
        })
        .await;
    match answer {
        Ok(_) => true,
        Err(status) if status.code() == Code::Unauthenticated => false,
        Err(other) => panic!("{other:?}"),
    }
}

async fn listing_and_ending_the_other_sessions(backend: Backend) {
    let server = TestServer::start(backend).await;
    let owner_id = server.create_user("owner@example.com", PASSWORD).await.id;
    let member_id = server.create_user("member@example.com", PASSWORD).await.id;
    let other_owner = server.create_user("other@example.com", PASSWORD).await.id;
    let org = server.organization("Acme", &owner_id, &[&member_id]).await;
    let other_org = server
        .organization("Other", &other_owner, &[&member_id])
        .await;
    let mut sessions = server.sessions().await;
    let first = login(&server, "owner@example.com", &org).await;
    let second = login(&server, "owner@example.com", &org).await;
    let third = login(&server, "owner@example.com", "").await;
    let member_in_org = login(&server, "member@example.com", &org).await;
    let member_elsewhere = login(&server, "member@example.com", &other_org).await;
    let other = login(&server, "other@example.com", &other_org).await;

    // One's own, newest first, the caller's marked.
    let own = sessions
        .list_sessions(bearer(list("", 0, ""), &first.token))
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<&str> = own.sessions.iter().map(|s| s.session_id.as_str()).collect();
    assert_eq!(
        ids,
        [&third.session_id, &second.session_id, &first.session_id]
    );
    assert!(own.next_page_token.is_empty());
    let current: Vec<bool> = own.sessions.iter().map(|s| s.current).collect();
    assert_eq!(current, [false, false, true]);
    let listed = &own.sessions[2];
    assert_eq!(listed.organization_id, org);
    assert_eq!(
        listed.assurance_level,
        v1::AssuranceLevel::SingleFactor as i32
    );
    assert_eq!(listed.expire_time, first.expire_time);
    assert_eq!(listed.idle_expire_time, first.idle_expire_time);
    let created = listed.create_time.unwrap();
    assert_eq!(listed.last_seen_time.unwrap(), created);
    // The same by the user's own id, page by page.
    let page = sessions
        .list_sessions(bearer(list(&owner_id, 2, ""), &first.token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.sessions.len(), 2);
    let rest = sessions
        .list_sessions(bearer(
            list(&owner_id, 2, &page.next_page_token),
            &first.token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rest.sessions.len(), 1);
    assert_eq!(rest.sessions[0].session_id, first.session_id);
    assert!(rest.next_page_token.is_empty());

    // Bad input names each field, all at once; a page token of another user's list is one.
    let bad = sessions
        .list_sessions(bearer(list("nope", 101, "%%%"), &first.token))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert_eq!(
        violated_fields(&bad),
        ["user_id", "page_size", "page_token"]
    );
    let foreign = sessions
        .list_sessions(bearer(
            list("", 0, &page.next_page_token),
            &member_in_org.token,
        ))
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&foreign), ["page_token"]);

    // A member lists nobody else's, whether the user exists or not, and learns nothing.
    for other in [owner_id.as_str(), "0190c7a0-0000-7000-8000-000000000000"] {
        let refused = sessions
            .list_sessions(bearer(list(other, 0, ""), &member_in_org.token))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::PermissionDenied);
        assert_eq!(reason(&refused).as_deref(), Some("NOT_YOUR_ACCOUNT"));
    }
    // An owner, from a session of an organization, lists a member's sessions there only;
    // not those of a user who is no member of it.
    let members = sessions
        .list_sessions(bearer(list(&member_id, 0, ""), &first.token))
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<&str> = members
        .sessions
        .iter()
        .map(|s| s.session_id.as_str())
        .collect();
    assert_eq!(ids, [member_in_org.session_id.as_str()]);
    assert!(!members.sessions[0].current);
    let members = sessions
        .list_sessions(bearer(list(&member_id, 0, ""), &other.token))
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<&str> = members
        .sessions
        .iter()
        .map(|s| s.session_id.as_str())
        .collect();
    assert_eq!(ids, [member_elsewhere.session_id.as_str()]);
    let refused = sessions
        .list_sessions(bearer(list(&owner_id, 0, ""), &other.token))
        .await
        .unwrap_err();
    assert_eq!(reason(&refused).as_deref(), Some("NOT_YOUR_ACCOUNT"));

    // "Log out everywhere else": the others end, this one and other users' stay.
    let ended = sessions
        .revoke_other_sessions(bearer(v1::RevokeOtherSessionsRequest {}, &second.token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ended.revoked_count, 2);
    assert!(is_valid(&server, &second).await);
    assert!(!is_valid(&server, &first).await);
    assert!(!is_valid(&server, &third).await);
    assert!(is_valid(&server, &member_in_org).await);
    assert!(is_valid(&server, &member_elsewhere).await);
    let left = sessions
        .list_sessions(bearer(list("", 0, ""), &second.token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(left.sessions.len(), 1);
    assert!(left.sessions[0].current);
    let events = events_of(&server, "session.others_revoked").await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].details, r#"{"sessions_revoked": 2}"#);
    assert_eq!(events[0].org_id.map(|id| id.to_string()), Some(org));
    // A revoked session can neither list nor revoke.
    let gone = sessions
        .revoke_other_sessions(bearer(v1::RevokeOtherSessionsRequest {}, &first.token))
        .await
        .unwrap_err();
    assert_eq!(reason(&gone).as_deref(), Some("USER_TOKEN_INVALID"));
    server.stop().await.unwrap();
}

async fn a_password_change_ends_the_other_sessions(backend: Backend) {
    let server = TestServer::start(backend).await;
    let user = server.create_user("pat@example.com", PASSWORD).await;
    let mine = login(&server, "pat@example.com", "").await;
    let elsewhere = login(&server, "pat@example.com", "").await;
    let mut users = server.users().await;
    let set = |password: &str, current: &str| v1::SetPasswordRequest {
        user_id: user.id.clone(),
        new_password: password.to_owned(),
        current_password: current.to_owned(),
    };
    // A refused change (a wrong current password) ends nothing.
    let wrong = users
        .set_password(bearer(
            set("a new long passphrase", "wrong password!"),
            &mine.token,
        ))
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Code::Unauthenticated);
    assert!(is_valid(&server, &elsewhere).await);
    // The user's own change keeps the session that made it.
    users
        .set_password(bearer(set("a new long passphrase", PASSWORD), &mine.token))
        .await
        .unwrap();
    assert!(is_valid(&server, &mine).await);
    assert!(!is_valid(&server, &elsewhere).await);
    // A reset by the calling service (no session of the user) ends them all.
    users
        .set_password(set("another long passphrase", ""))
        .await
        .unwrap();
    assert!(!is_valid(&server, &mine).await);
    server.stop().await.unwrap();
}

/// A login's client, as Authenticate's (or the second step's) `client_context` gave it.
fn with_client(
    mut request: v1::AuthenticateRequest,
    ip: &str,
    user_agent: &str,
) -> v1::AuthenticateRequest {
    request.client_context = Some(v1::ClientContext {
        ip_address: ip.to_owned(),
        user_agent: user_agent.to_owned(),
    });
    request
}

/// ListSessions shows where each session's login came from: the first step's client for a
/// one-step login, the second step's for a two-step one (or the first step's when the
/// second gives none), and the address truncated when the server keeps it so.
async fn each_session_shows_where_it_came_from(backend: Backend) {
    let mut config = tollgate_e2e::test_config();
    config.clients.store_addresses = server::config::AddressStorage::Truncated;
    for (store, server) in [
        ("full", TestServer::start(backend).await),
        ("truncated", TestServer::start_with(backend, config).await),
    ] {
        let user = server.create_user("where@example.com", PASSWORD).await;
        let one_step = server
            .first_step(with_client(
                tollgate_e2e::password_login("where@example.com", PASSWORD, ""),
                "2001:db8:1:2:3::7",
                "Firefox/140",
            ))
            .await;
        let authenticate_response::Result::Authenticated(one_step) = one_step else {
            panic!("{one_step:?}");
        };
        // A second factor: two-step logins from here on.
        let id: storage::Uuid = user.id.parse().unwrap();
        let now = server::Clock::now(server.app.clock.as_ref());
        // Three recovery codes: using the last one would ask for a new enrollment.
        let codes = [
            "AAAA-BBBB-CCCC-DDDD",
            "EEEE-FFFF-GGGG-HHHH",
            "JJJJ-KKKK-LLLL-MMMM",
        ];
        tollgate_e2e::active_totp(
            &server.app.storage,
            id,
            b"12345678901234567890",
            None,
            Some(&codes),
            now,
        )
        .await;
        let mut sessions_made = Vec::new();
        for (code, second) in [(codes[0], Some("198.51.100.23")), (codes[1], None)] {
            let first = server
                .first_step(with_client(
                    tollgate_e2e::password_login("where@example.com", PASSWORD, ""),
                    "192.0.2.77",
                    "Safari/18",
                ))
                .await;
            let authenticate_response::Result::SecondFactorRequired(challenge) = first else {
                panic!("{first:?}");
            };
            let mut request = tollgate_e2e::verify_code(&challenge.challenge_token, code);
            request.client_context = second.map(|ip| v1::ClientContext {
                ip_address: ip.to_owned(),
                user_agent: "Chrome/141".to_owned(),
            });
            let answer = server
                .authentication()
                .await
                .verify_second_factor(request)
                .await
                .unwrap()
                .into_inner();
            let Some(v1::verify_second_factor_response::Result::Authenticated(session)) =
                answer.result
            else {
                panic!("{answer:?}");
            };
            sessions_made.push(session);
        }
        let listed = server
            .sessions()
            .await
            .list_sessions(bearer(list("", 0, ""), &one_step.token))
            .await
            .unwrap()
            .into_inner()
            .sessions;
        let client = |session: &v1::Session| {
            let found = listed
                .iter()
                .find(|s| s.session_id == session.session_id)
                .unwrap();
            let context = found.client_context.clone().unwrap();
            (context.ip_address, context.user_agent)
        };
        let full = store == "full";
        let expect = |full_ip: &str, truncated: &str, user_agent: &str| {
            let ip = if full { full_ip } else { truncated };
            (ip.to_owned(), user_agent.to_owned())
        };
        assert_eq!(
            client(&one_step),
            expect("2001:db8:1:2:3::7", "2001:db8:1::/48", "Firefox/140"),
            "{store}"
        );
        assert_eq!(
            client(&sessions_made[0]),
            expect("198.51.100.23", "198.51.100.0/24", "Chrome/141"),
            "{store}: the second step's client"
        );
        assert_eq!(
            client(&sessions_made[1]),
            expect("192.0.2.77", "192.0.2.0/24", "Safari/18"),
            "{store}: the first step's, kept with the challenge"
        );
        // Each login's event says the same.
        let events = events_of(&server, "login.succeeded").await;
        let mut recorded: Vec<(String, String)> = events
            .iter()
            .map(|e| {
                (
                    e.client_ip.clone().unwrap(),
                    e.client_user_agent.clone().unwrap(),
                )
            })
            .collect();
        recorded.sort();
        let mut expected = vec![
            expect("2001:db8:1:2:3::7", "2001:db8:1::/48", "Firefox/140"),
            expect("198.51.100.23", "198.51.100.0/24", "Chrome/141"),
            expect("192.0.2.77", "192.0.2.0/24", "Safari/18"),
        ];
        expected.sort();
        assert_eq!(recorded, expected, "{store}");
        // A bad context on the second step names its field.
        let first = server
            .first_step(tollgate_e2e::password_login(
                "where@example.com",
                PASSWORD,
                "",
            ))
            .await;
        let authenticate_response::Result::SecondFactorRequired(challenge) = first else {
            panic!("{first:?}");
        };
        let mut request = tollgate_e2e::verify_code(&challenge.challenge_token, "000000");
        request.client_context = Some(v1::ClientContext {
            ip_address: "192.0.2.1/24".into(),
            user_agent: String::new(),
        });
        let bad = server
            .authentication()
            .await
            .verify_second_factor(request)
            .await
            .unwrap_err();
        assert_eq!(violated_fields(&bad), ["client_context.ip_address"]);
        server.stop().await.unwrap();
    }
}

both!(
    each_session_shows_where_it_came_from,
    listing_and_ending_the_other_sessions,
    a_password_change_ends_the_other_sessions,
);

//! Remembered devices ("remember this device"): an organization's `trusted_device_days`, the
//! device token VerifySecondFactor hands out, the login it skips the second factor for, what
//! it never stands in for (a step-up), and each way it ends. On SQLite and PostgreSQL.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]

use std::sync::Arc;

use otp_core::{Secret, Totp, TotpParams};
use storage::repo::AuditFilter;
use tollgate_e2e::{Backend, ManualClock, TestServer, bearer, both, reason, violated_fields};
use tollgate_proto::v1::enrollment_service_client::EnrollmentServiceClient;
use tollgate_proto::v1::{self, authenticate_response, verify_second_factor_response};
use tonic::Code;

const PASSWORD: &str = "correct horse battery staple";
const T0: i64 = 1_800_000_000;
const DAY: i64 = 86_400;
const ANN_SEED: &[u8] = b"12345678901234567890";
const BOB_SEED: &[u8] = b"abcdefghijabcdefghij";

struct World {
    server: TestServer,
    clock: Arc<ManualClock>,
    org: String,
    ann: String,
    bob: String,
}

fn app(seed: &[u8]) -> Totp {
    Totp::new(Secret::from_bytes(seed.to_vec()), TotpParams::default()).unwrap()
}

fn seed_of(email: &str) -> &'static [u8] {
    if email.starts_with("ann") {
        ANN_SEED
    } else {
        BOB_SEED
    }
}

fn client(ip: &str) -> Option<v1::ClientContext> {
    Some(v1::ClientContext {
        ip_address: ip.to_owned(),
        user_agent: "Firefox/140".to_owned(),
    })
}

impl World {
    /// An organization owned by owner@, with ann@ and bob@ as members, each with an
    /// authenticator app whose seed the test knows.
    async fn new(backend: Backend) -> Self {
        let clock = Arc::new(ManualClock::new(T0));
        let server = TestServer::start_with_clock(backend, Arc::clone(&clock)).await;
        let owner = server.create_user("owner@example.com", PASSWORD).await.id;
        let ann = server.create_user("ann@example.com", PASSWORD).await.id;
        let bob = server.create_user("bob@example.com", PASSWORD).await.id;
        let org = server.organization("Acme", &owner, &[&ann, &bob]).await;
        for (id, seed) in [(&ann, ANN_SEED), (&bob, BOB_SEED)] {
            let id = id.parse().unwrap();
            tollgate_e2e::active_totp(&server.app.storage, id, seed, None, None, T0).await;
        }
        Self {
            server,
            clock,
            org,
            ann,
            bob,
        }
    }

    /// A session of the owner, now (no 2FA of their own: an admin who may act at
    /// assurance 1).
    async fn owner(&self) -> String {
        let login = tollgate_e2e::password_login("owner@example.com", PASSWORD, &self.org);
        match self.server.first_step(login).await {
            authenticate_response::Result::Authenticated(s) => s.token,
            other => panic!("the owner has no 2FA: {other:?}"),
        }
    }

    fn now(&self) -> i64 {
        server::Clock::now(&*self.clock)
    }

    /// A code of `email`'s app from a time step not used before.
    fn code(&self, email: &str) -> String {
        self.clock.advance(30);
        app(seed_of(email))
            .generate(u64::try_from(self.now()).unwrap())
            .unwrap()
            .to_string()
    }

    /// The owner's UpdateMfaPolicy of `trusted_device_days` alone.
    async fn update_days(&self, days: i32) -> Result<v1::UpdateMfaPolicyResponse, tonic::Status> {
        let request = v1::UpdateMfaPolicyRequest {
            organization_id: self.org.clone(),
            policy: Some(v1::MfaPolicy {
                trusted_device_days: days,
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["trusted_device_days".into()],
            }),
            password: PASSWORD.into(),
            client_context: None,
        };
        let mut orgs = self.server.organizations().await;
        let answer = orgs.update_mfa_policy(bearer(request, &self.owner().await));
        answer.await.map(tonic::Response::into_inner)
    }

    /// The organization's `trusted_device_days`, set by its owner: how many devices ended.
    async fn set_days(&self, days: i32) -> i32 {
        let answer = self.update_days(days).await.unwrap();
        let policy = answer.organization.unwrap().mfa_policy.unwrap();
        assert_eq!(policy.trusted_device_days, days);
        answer.trusted_devices_revoked
    }

    /// Authenticate with the password, into `org`, presenting `device` (may be empty).
    async fn login_in(
        &self,
        email: &str,
        org: &str,
        device: &str,
    ) -> Result<authenticate_response::Result, tonic::Status> {
        let mut request = tollgate_e2e::password_login(email, PASSWORD, org);
        request.device_token = device.to_owned();
        request.client_context = client("192.0.2.7");
        let answer = self
            .server
            .authentication()
            .await
            .authenticate(request)
            .await;
        answer.map(|a| a.into_inner().result.unwrap())
    }

    /// Whether `device` skips the second factor for `email`'s login into the organization:
    /// the remembered session, or None when the factor is asked for.
    async fn skips(&self, email: &str, device: &str) -> Option<v1::Session> {
        match self.login_in(email, &self.org, device).await.unwrap() {
            authenticate_response::Result::Authenticated(session) => Some(session),
            authenticate_response::Result::SecondFactorRequired(_) => None,
            other => panic!("{other:?}"),
        }
    }

    /// A full login with the app's code, asking to remember the device when `remember`.
    async fn verified(&self, email: &str, remember: bool) -> v1::VerifySecondFactorResponse {
        let Some(authenticate_response::Result::SecondFactorRequired(challenge)) =
            self.login_in(email, &self.org, "").await.ok()
        else {
            panic!("a second factor is asked for");
        };
        let request = v1::VerifySecondFactorRequest {
            remember_device: remember,
            client_context: client("198.51.100.23"),
            ..tollgate_e2e::verify_code(&challenge.challenge_token, &self.code(email))
        };
        self.server
            .authentication()
            .await
            .verify_second_factor(request)
            .await
            .unwrap()
            .into_inner()
    }

    /// Remembers `email`'s device: its token, and the session of that login.
    async fn remember(&self, email: &str) -> (String, String) {
        let answer = self.verified(email, true).await;
        assert!(
            !answer.device_token.is_empty(),
            "the organization allows it"
        );
        let Some(verify_second_factor_response::Result::Authenticated(session)) = answer.result
        else {
            panic!("a session");
        };
        (answer.device_token, session.token)
    }

    async fn validated(&self, token: &str) -> v1::ValidateSessionResponse {
        let request = v1::ValidateSessionRequest {
            token: token.to_owned(),
        };
        let mut sessions = self.server.sessions().await;
        sessions
            .validate_session(request)
            .await
            .unwrap()
            .into_inner()
    }

    async fn devices(&self, session: &str) -> Vec<v1::TrustedDevice> {
        self.server
            .sessions()
            .await
            .list_trusted_devices(bearer(v1::ListTrustedDevicesRequest::default(), session))
            .await
            .unwrap()
            .into_inner()
            .devices
    }

    async fn events(&self, kind: &str) -> Vec<storage::entity::audit_event::Model> {
        let filter = AuditFilter {
            kinds: vec![kind.to_owned()],
            ..Default::default()
        };
        let audit = self.server.app.storage.audit();
        audit.list(&filter, None, 10).await.unwrap().items
    }
}

async fn a_remembered_device_skips_the_second_factor_and_nothing_more(backend: Backend) {
    let w = World::new(backend).await;

    // Off by default: asking to be remembered gets no token.
    let answer = w.verified("ann@example.com", true).await;
    assert!(answer.device_token.is_empty() && answer.device_token_expire_time.is_none());
    assert_eq!(w.set_days(30).await, 0);
    // Not asked: none either.
    assert!(
        w.verified("ann@example.com", false)
            .await
            .device_token
            .is_empty()
    );

    let remembered_at = w.now() + 30;
    let answer = w.verified("ann@example.com", true).await;
    let token = answer.device_token.clone();
    assert_eq!(token.len(), 43, "256 bits, base64url");
    assert_eq!(
        answer.device_token_expire_time.unwrap().seconds,
        remembered_at + 30 * DAY
    );
    let Some(verify_second_factor_response::Result::Authenticated(real)) = answer.result else {
        panic!("a session");
    };
    assert!(!real.remembered_device);
    // Only its keyed hash is stored.
    let rows = w.server.app.storage.trusted_devices();
    let listed = rows.list(w.ann.parse().unwrap(), w.now(), None, 10).await;
    let stored = listed.unwrap().items;
    assert_eq!(stored.len(), 1);
    let hasher = w.server.app.storage.hasher();
    let keyed = hasher.hash(
        storage::crypto::HashPurpose::DeviceToken,
        &[token.as_bytes()],
    );
    assert_eq!(stored[0].token_hash, keyed.0.to_vec());
    let event = &w.events("trusted_device.remembered").await[0];
    let details: serde_json::Value = serde_json::from_str(&event.details).unwrap();
    assert_eq!(details["device_id"], stored[0].id.to_string());
    assert_eq!(details["days"], 30);
    assert_eq!(event.client_ip.as_deref(), Some("198.51.100.23"));

    // The password and the token: a session at assurance 2, marked as the device's.
    let session = w.skips("ann@example.com", &token).await.expect("skipped");
    assert_eq!(
        session.assurance_level,
        v1::AssuranceLevel::SecondFactor as i32
    );
    assert!(session.remembered_device);
    let validated = w.validated(&session.token).await;
    assert!(validated.remembered_device);
    let login = &w.events("login.succeeded").await[0];
    let details: serde_json::Value = serde_json::from_str(&login.details).unwrap();
    assert_eq!(details["trusted_device"], stored[0].id.to_string());
    assert_eq!(details["assurance"], 2);
    // It never replaces the password.
    let mut wrong = tollgate_e2e::password_login("ann@example.com", "wrong password!!", &w.org);
    wrong.device_token = token.clone();
    let refused = w.server.authentication().await.authenticate(wrong).await;
    assert_eq!(refused.unwrap_err().code(), Code::Unauthenticated);

    // Listed, with the client that remembered it and its last use.
    let devices = w.devices(&session.token).await;
    assert_eq!(devices.len(), 1);
    let device = &devices[0];
    assert_eq!(device.organization_id, w.org);
    assert_eq!(device.create_time.unwrap().seconds, remembered_at);
    assert_eq!(device.last_used_time.unwrap().seconds, w.now());
    let context = device.client_context.as_ref().unwrap();
    assert_eq!(context.ip_address, "198.51.100.23");

    // A step-up always asks for a real factor: adding a factor is refused until one...
    let mut enrollment = EnrollmentServiceClient::new(w.server.channel().await);
    let begin = v1::BeginTotpEnrollmentRequest {
        label: "second".into(),
    };
    let refused = enrollment
        .begin_totp_enrollment(bearer(begin.clone(), &session.token))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert_eq!(reason(&refused).as_deref(), Some("STEP_UP_REQUIRED"));
    let step_up = v1::VerifyStepUpRequest {
        code: w.code("ann@example.com"),
        ..Default::default()
    };
    let mut auth = w.server.authentication().await;
    auth.verify_step_up(bearer(step_up, &session.token))
        .await
        .unwrap();
    // ...which clears the mark.
    let validated = w.validated(&session.token).await;
    assert!(!validated.remembered_device);
    enrollment
        .begin_totp_enrollment(bearer(begin, &session.token))
        .await
        .unwrap();

    // Nor for an administrator: an admin with 2FA whose session a remembered device let in
    // must step up before an admin RPC.
    let carl = w.server.create_user("carl@example.com", PASSWORD).await.id;
    let mut orgs = w.server.organizations().await;
    orgs.add_member(v1::AddMemberRequest {
        organization_id: w.org.clone(),
        user_id: carl.clone(),
        role: v1::Role::Admin as i32,
    })
    .await
    .unwrap();
    let carl_id = carl.parse().unwrap();
    tollgate_e2e::active_totp(
        &w.server.app.storage,
        carl_id,
        BOB_SEED,
        None,
        None,
        w.now(),
    )
    .await;
    let (carl_token, _) = w.remember("carl@example.com").await;
    let carl_session = w.skips("carl@example.com", &carl_token).await.unwrap();
    let request = v1::ResetMemberMfaRequest {
        organization_id: w.org.clone(),
        user_id: w.bob.clone(),
        client_context: None,
    };
    let refused = orgs
        .reset_member_mfa(bearer(request, &carl_session.token))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert_eq!(reason(&refused).as_deref(), Some("STEP_UP_REQUIRED"));

    // Tokens that are not valid here count as none: the factor is asked, nothing else.
    let made_up = "A".repeat(43);
    assert!(w.skips("ann@example.com", &made_up).await.is_none());
    // Another user's.
    assert!(w.skips("bob@example.com", &token).await.is_none());
    // Another organization's login, though that one remembers devices too.
    let other = w.server.organization("Other", &w.bob, &[&w.ann]).await;
    let orgs = w.server.app.storage.organizations();
    let model = orgs.get(other.parse().unwrap()).await.unwrap().unwrap();
    let remembering = storage::repo::PolicyUpdate {
        trusted_device_days: 30,
        ..storage::repo::PolicyUpdate::of(&model)
    };
    orgs.update_policy(model.id, remembering, w.now())
        .await
        .unwrap();
    let answer = w.login_in("ann@example.com", &other, &token).await.unwrap();
    assert!(matches!(
        answer,
        authenticate_response::Result::SecondFactorRequired(_)
    ));
    // None of this counted against anyone: Ann's token still works, Bob logs in.
    assert!(w.skips("ann@example.com", &token).await.is_some());
    let counters = w.server.app.storage.attempts();
    for key in [
        storage::repo::second_factor_counter(w.ann.parse().unwrap()),
        storage::repo::second_factor_counter(w.bob.parse().unwrap()),
    ] {
        let counter = counters.get(&key).await.unwrap();
        assert!(
            counter.as_ref().is_none_or(|c| c.failures == 0),
            "{key}: {counter:?}"
        );
    }
    // Not a token's form: the field is named.
    let refused = w
        .login_in("ann@example.com", &w.org, "not a token!")
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&refused), ["device_token"]);

    // After its days: asked again, and no longer listed; and nothing counted for it.
    w.clock.advance(remembered_at + 30 * DAY - w.now());
    assert!(w.skips("ann@example.com", &token).await.is_none());
    let key = storage::repo::second_factor_counter(w.ann.parse().unwrap());
    let counter = counters.get(&key).await.unwrap();
    assert!(
        counter.as_ref().is_none_or(|c| c.failures == 0),
        "{counter:?}"
    );
    let (_, fresh) = w.remember("ann@example.com").await;
    let listed = w.devices(&fresh).await;
    assert_eq!(listed.len(), 1, "only the new one");
    assert_ne!(listed[0].device_id, device.device_id);
}

/// Each way a device ends: RevokeTrustedDevice, a password change, removing a factor, the
/// user's own reset, an admin's reset, and the organization lowering or turning off its days.
async fn each_way_a_remembered_device_ends(backend: Backend) {
    let w = World::new(backend).await;
    w.set_days(30).await;
    let ann = "ann@example.com";

    // RevokeTrustedDevice: the user's own only; the same answer for another's and a made-up.
    let (token, session) = w.remember(ann).await;
    let id = w.devices(&session).await[0].device_id.clone();
    let (_, bobs) = w.remember("bob@example.com").await;
    let mut sessions = w.server.sessions().await;
    let revoke = |device_id: &str| v1::RevokeTrustedDeviceRequest {
        device_id: device_id.to_owned(),
    };
    for (who, device) in [(&bobs, id.as_str()), (&session, &uuid_like())] {
        let refused = sessions
            .revoke_trusted_device(bearer(revoke(device), who))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::NotFound, "{device}");
    }
    let refused = sessions
        .revoke_trusted_device(bearer(revoke("nope"), &session))
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&refused), ["device_id"]);
    assert!(w.skips(ann, &token).await.is_some(), "still remembered");
    sessions
        .revoke_trusted_device(bearer(revoke(&id), &session))
        .await
        .unwrap();
    assert!(w.skips(ann, &token).await.is_none());
    assert!(w.devices(&session).await.is_empty());
    let event = &w.events("trusted_device.revoked").await[0];
    assert!(event.details.contains(&id), "{}", event.details);
    let refused = sessions
        .revoke_trusted_device(bearer(revoke(&id), &session))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::NotFound, "gone already");

    // A password change.
    let (token, session) = w.remember(ann).await;
    let change = v1::SetPasswordRequest {
        user_id: w.ann.clone(),
        new_password: PASSWORD.into(),
        current_password: PASSWORD.into(),
    };
    w.server
        .users()
        .await
        .set_password(bearer(change, &session))
        .await
        .unwrap();
    assert!(w.skips(ann, &token).await.is_none());
    let event = &w.events("password.set").await[0];
    assert!(
        event.details.contains(r#""trusted_devices_revoked": 1"#),
        "{}",
        event.details
    );

    // Removing a factor (Ann has a second app, so she keeps one).
    let ann_id = w.ann.parse().unwrap();
    let spare = tollgate_e2e::active_totp(
        &w.server.app.storage,
        ann_id,
        b"zyxwvutsrqzyxwvutsrq",
        None,
        None,
        w.now(),
    )
    .await;
    let (token, session) = w.remember(ann).await;
    let mut enrollment = EnrollmentServiceClient::new(w.server.channel().await);
    let remove = v1::RemoveFactorRequest {
        factor_id: spare.id.to_string(),
        proof: w.code(ann),
        ..Default::default()
    };
    enrollment
        .remove_factor(bearer(remove, &session))
        .await
        .unwrap();
    assert!(w.skips(ann, &token).await.is_none());
    assert!(w.devices(&session).await.is_empty());

    // Replacing a factor in an enrollment's confirmation (a new app for an old one; Ann's
    // first app stays).
    let old = tollgate_e2e::active_totp(
        &w.server.app.storage,
        ann_id,
        b"qwertyuiopqwertyuiop",
        None,
        None,
        w.now(),
    )
    .await;
    let (token, session) = w.remember(ann).await;
    let begun = enrollment
        .begin_totp_enrollment(bearer(
            v1::BeginTotpEnrollmentRequest {
                label: "new phone".into(),
            },
            &session,
        ))
        .await
        .unwrap()
        .into_inner();
    let new_app = otp_core::OtpAuthUri::parse(&begun.otpauth_uri)
        .unwrap()
        .to_totp(TotpParams::default())
        .unwrap()
        .unwrap();
    let old = old.id.to_string();
    let confirm = v1::ConfirmTotpEnrollmentRequest {
        factor_id: begun.factor.unwrap().id,
        code: new_app
            .generate(u64::try_from(w.now()).unwrap())
            .unwrap()
            .to_string(),
        replaces_factor_id: old,
        client_context: None,
    };
    enrollment
        .confirm_totp_enrollment(bearer(confirm, &session))
        .await
        .unwrap();
    assert!(w.skips(ann, &token).await.is_none());
    assert!(w.devices(&session).await.is_empty());

    // The user's own reset (she then has no factor: the list shows what is left).
    let (_, session) = w.remember(ann).await;
    let reset = v1::ResetMfaRequest {
        proof: w.code(ann),
        ..Default::default()
    };
    enrollment.reset_mfa(bearer(reset, &session)).await.unwrap();
    assert!(w.devices(&session).await.is_empty());
    let event = &w.events("mfa.reset").await[0];
    assert!(
        event.details.contains(r#""trusted_devices_revoked":1"#),
        "{}",
        event.details
    );

    // An admin's reset of a member.
    let (_, session) = w.remember("bob@example.com").await;
    assert_eq!(w.devices(&session).await.len(), 2, "Bob's two logins");
    let reset = v1::ResetMemberMfaRequest {
        organization_id: w.org.clone(),
        user_id: w.bob.clone(),
        client_context: None,
    };
    w.server
        .organizations()
        .await
        .reset_member_mfa(bearer(reset, &w.owner().await))
        .await
        .unwrap();
    let left = w.server.app.storage.trusted_devices();
    let page = left.list(w.bob.parse().unwrap(), w.now(), None, 10).await;
    assert!(page.unwrap().items.is_empty());
    let event = &w.events("member.mfa_reset").await[0];
    assert!(
        event.details.contains(r#""trusted_devices_revoked":2"#),
        "{}",
        event.details
    );
}

/// The organization lowering its days ends the devices remembered longer ago and shortens
/// the others; turning it off ends all of them.
async fn the_organization_lowering_or_ending_its_days_ends_devices(backend: Backend) {
    let w = World::new(backend).await;
    w.set_days(30).await;
    let ann = "ann@example.com";
    let (old, _) = w.remember(ann).await;
    w.clock.advance(10 * DAY);
    let (recent, session) = w.remember(ann).await;
    let recent_at = w.now();
    assert_eq!(w.set_days(7).await, 1, "the one remembered 10 days ago");
    assert!(w.skips(ann, &old).await.is_none());
    assert!(w.skips(ann, &recent).await.is_some());
    let devices = w.devices(&session).await;
    assert_eq!(devices.len(), 1);
    assert_eq!(devices[0].expire_time.unwrap().seconds, recent_at + 7 * DAY);
    let event = &w.events("mfa_policy.updated").await[0];
    let details: serde_json::Value = serde_json::from_str(&event.details).unwrap();
    assert_eq!(details["trusted_devices_revoked"], 1);
    assert_eq!(details["after"]["trusted_device_days"], 7);
    // Raising it again does not lengthen a device's days already granted.
    w.set_days(30).await;
    let devices = w.devices(&session).await;
    assert_eq!(devices[0].expire_time.unwrap().seconds, recent_at + 7 * DAY);
    // Off: every device ends, and VerifySecondFactor hands out none.
    assert_eq!(w.set_days(0).await, 1);
    assert!(w.skips(ann, &recent).await.is_none());
    assert!(w.devices(&session).await.is_empty());
    assert!(w.verified(ann, true).await.device_token.is_empty());
    // Bad values name the field and change nothing.
    for days in [-1, 91] {
        let refused = w.update_days(days).await.unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{days}");
        assert_eq!(violated_fields(&refused), ["policy.trusted_device_days"]);
    }
    let org = w.server.app.storage.organizations();
    let org = org.get(w.org.parse().unwrap()).await.unwrap().unwrap();
    assert_eq!(org.trusted_device_days, 0);
}

/// A well-formed id that names nothing.
fn uuid_like() -> String {
    storage::Uuid::now_v7().to_string()
}

both!(
    a_remembered_device_skips_the_second_factor_and_nothing_more,
    each_way_a_remembered_device_ends,
    the_organization_lowering_or_ending_its_days_ends_devices,
);

//! The calling thread's statements: their contract with sea-orm (`contract`), and where each
//! runs (`routes`).

#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "a failed unwrap is a failed test"
)]

use crate::entity::enums::{ChallengePurpose, FactorKind, Role};
use crate::repo::{NewAuditEvent, NewSession, OtpParams};
use crate::testing::{Backend, NOW, TestDb};

mod contract;
mod routes;

/// A database on an SQLite file with a row in most tables, NULLs and values alike.
async fn populated() -> TestDb {
    let db = TestDb::new(Backend::Sqlite).await;
    let s = &db.storage;
    let alice = s
        .users()
        .create("alice@example.com", Some("hash".into()), NOW)
        .await;
    let alice = alice.unwrap().id;
    let bob = s
        .users()
        .create("bob@example.com", None, NOW)
        .await
        .unwrap()
        .id;
    let org = s
        .organizations()
        .create_with_owner(
            "Acme",
            alice,
            NOW,
            crate::repo::AuditOf::by_caller("organization.created"),
        )
        .await;
    let org = org.unwrap().id;
    s.memberships()
        .add(
            org,
            bob,
            Role::Member,
            NOW,
            crate::repo::AuditOf::by_caller("member.added"),
        )
        .await
        .unwrap();
    let totp = OtpParams {
        algorithm: "SHA1",
        digits: 6,
        period: Some(30),
    };
    let seed = b"12345678901234567890";
    let factors = s.factors();
    let app = factors
        .create_otp_pending(
            alice,
            FactorKind::Totp,
            "app",
            seed,
            totp,
            None,
            NOW,
            NOW + 60,
            &[],
        )
        .await
        .unwrap();
    factors
        .activate(app.id, alice, Some(100), None, NOW)
        .await
        .unwrap();
    let hotp = OtpParams {
        period: None,
        ..totp
    };
    factors
        .create_otp_pending(
            bob,
            FactorKind::Hotp,
            "key",
            seed,
            hotp,
            Some(7),
            NOW,
            NOW + 60,
            &[],
        )
        .await
        .unwrap();
    let phone = factors
        .create_sms_pending(bob, "phone", "+14155550100", NOW, NOW + 60, &[])
        .await
        .unwrap();
    s.sms_codes()
        .issue(phone.id, "123456", NOW, NOW + 300)
        .await
        .unwrap();
    s.sms_limits()
        .count_event("sms:org:x", 3600, NOW)
        .await
        .unwrap();
    let limit = crate::repo::Limit {
        key: "sms:user:x",
        max: 3,
        window_secs: 3600,
    };
    s.sms_limits().take(&[limit], NOW).await.unwrap().unwrap();
    s.recovery_codes()
        .replace(alice, &["aaaa-bbbb"], NOW, &[])
        .await
        .unwrap();
    s.attempts()
        .record_failure("user:x", NOW, &crate::repo::Lockouts::new(0, &[30]), None)
        .await
        .unwrap();
    let session = NewSession {
        user_id: alice,
        org_id: Some(org),
        assurance: 2,
        now: NOW,
        idle_ttl: 60,
        absolute_ttl: 600,
        client: crate::repo::ClientInfo {
            ip: Some("192.0.2.7"),
            user_agent: Some("Firefox/140"),
        },
        trusted_device_id: None,
    };
    s.sessions().create("token-1", session).await.unwrap();
    let orgs = s.organizations();
    let policy = crate::repo::PolicyUpdate {
        trusted_device_days: 30,
        ..crate::repo::PolicyUpdate::of(&orgs.get(org).await.unwrap().unwrap())
    };
    orgs.update_policy(org, policy, NOW).await.unwrap();
    let user = s.users().get(alice).await.unwrap().unwrap();
    let device = crate::repo::NewTrustedDevice {
        user_id: alice,
        org_id: org,
        days: 30,
        now: NOW,
        client: session.client,
        seen: crate::repo::SeenUser {
            password_hash: user.password_hash.as_deref(),
            factor_generation: user.factor_generation,
            active_factors: 1,
        },
    };
    let remembered = NewAuditEvent {
        occurred_at: NOW,
        org_id: Some(org),
        actor_id: Some(alice),
        subject_id: Some(alice),
        kind: "trusted_device.remembered",
        details: "",
        client: session.client,
    };
    let device = s
        .trusted_devices()
        .create("device-1", device, remembered, |_, _| "{}".to_owned())
        .await
        .unwrap()
        .expect("the organization remembers devices");
    // A session its device let in: the device's id read back both ways.
    let remembered_session = NewSession {
        trusted_device_id: Some(device.id),
        ..session
    };
    s.sessions()
        .create("token-2", remembered_session)
        .await
        .unwrap();
    s.challenges()
        .create(
            "challenge-1",
            bob,
            None,
            ChallengePurpose::SecondFactor,
            NOW,
            NOW + 60,
            None,
            Default::default(),
        )
        .await
        .unwrap();
    let ceremony = crate::repo::NewCeremony {
        challenge: "c2FtcGxl",
        purpose: crate::entity::enums::CeremonyPurpose::Assertion,
        user_id: Some(alice),
        org_id: Some(org),
        factor_id: None,
        login_challenge_id: None,
        session_id: None,
        state: "{}",
    };
    s.ceremonies()
        .create(ceremony, NOW, NOW + 60)
        .await
        .unwrap();
    s.audit()
        .append(NewAuditEvent {
            org_id: Some(org),
            actor_id: Some(alice),
            subject_id: None,
            kind: "test.event",
            details: "{}",
            occurred_at: NOW,
            client: Default::default(),
        })
        .await
        .unwrap();
    db
}

//! Remembered devices in storage, on both engines: a device is remembered only while the
//! user and the organization are as the login read them, with no more days than the policy
//! has now; the policy's days shorten or end devices.

#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test bodies may panic: that is a failed test"
)]

mod common;

use common::{NOW, TestDb};
use storage::Uuid;
use storage::crypto::HashPurpose;
use storage::repo::{AuditOf, NewAuditEvent, NewTrustedDevice, PolicyUpdate, SeenUser};

const DAY: i64 = 86_400;

struct Setup {
    user: Uuid,
    org: Uuid,
    generation: i64,
}

async fn setup(db: &TestDb, days: i16) -> Setup {
    let s = &db.storage;
    let user = s
        .users()
        .create("ann@example.com", Some("$argon2id$one".into()), NOW)
        .await
        .unwrap()
        .id;
    let org = s
        .organizations()
        .create_with_owner(
            "Acme",
            user,
            NOW,
            AuditOf::by_caller("organization.created"),
        )
        .await
        .unwrap();
    let policy = PolicyUpdate {
        trusted_device_days: days,
        ..PolicyUpdate::of(&org)
    };
    s.organizations()
        .update_policy(org.id, policy, NOW)
        .await
        .unwrap();
    common::totp_factor(s, user, true).await;
    let generation = s
        .users()
        .get(user)
        .await
        .unwrap()
        .unwrap()
        .factor_generation;
    Setup {
        user,
        org: org.id,
        generation,
    }
}

fn event(setup: &Setup) -> NewAuditEvent<'static> {
    NewAuditEvent {
        occurred_at: NOW,
        org_id: Some(setup.org),
        actor_id: Some(setup.user),
        subject_id: Some(setup.user),
        kind: "trusted_device.remembered",
        details: "",
        client: Default::default(),
    }
}

fn new<'a>(setup: &Setup, days: i16, seen: SeenUser<'a>) -> NewTrustedDevice<'a> {
    NewTrustedDevice {
        user_id: setup.user,
        org_id: setup.org,
        days,
        now: NOW,
        client: Default::default(),
        seen,
    }
}

async fn a_device_is_remembered_only_as_the_login_saw_it(db: &TestDb) {
    let s = &db.storage;
    let setup = setup(db, 7).await;
    let seen = SeenUser {
        password_hash: Some("$argon2id$one"),
        factor_generation: setup.generation,
        active_factors: 1,
    };
    let devices = s.trusted_devices();
    // What changed since the login read it: nothing is written.
    let stale = [
        SeenUser {
            password_hash: Some("$argon2id$old"),
            ..seen
        },
        SeenUser {
            factor_generation: setup.generation - 1,
            ..seen
        },
        SeenUser {
            active_factors: 2,
            ..seen
        },
    ];
    for (i, seen) in stale.into_iter().enumerate() {
        let token = format!("stale-{i}");
        let made = devices
            .create(&token, new(&setup, 30, seen), event(&setup), |_, _| {
                "{}".into()
            })
            .await
            .unwrap();
        assert!(made.is_none(), "{seen:?}");
    }
    assert!(
        devices
            .list(setup.user, NOW, None, 10)
            .await
            .unwrap()
            .items
            .is_empty()
    );
    // As read: remembered, with the days the policy has now (7) rather than the 30 the
    // login read, and only its keyed hash kept.
    let mut details = String::new();
    let made = devices
        .create("token", new(&setup, 30, seen), event(&setup), |id, days| {
            details = format!("{id} {days}");
            "{}".into()
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(made.expires_at, NOW + 7 * DAY);
    assert!(details.ends_with(" 7"), "{details}");
    let keyed = s.hasher().hash(HashPurpose::DeviceToken, &[b"token"]);
    assert_eq!(made.token_hash, keyed.0.to_vec());
    let session_keyed = s.hasher().hash(HashPurpose::SessionToken, &[b"token"]);
    assert_ne!(made.token_hash, session_keyed.0.to_vec());
    // Found for its user and organization only, and not once expired.
    let other = Uuid::now_v7();
    assert!(
        devices
            .use_valid("token", other, setup.org, NOW)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        devices
            .use_valid("token", setup.user, other, NOW)
            .await
            .unwrap()
            .is_none()
    );
    let used = devices
        .use_valid("token", setup.user, setup.org, NOW + 5)
        .await;
    assert_eq!(used.unwrap().unwrap().last_used_at, Some(NOW + 5));
    let late = NOW + 7 * DAY;
    assert!(
        devices
            .use_valid("token", setup.user, setup.org, late)
            .await
            .unwrap()
            .is_none()
    );
    // Remembering off: none is made.
    let org = s.organizations().get(setup.org).await.unwrap().unwrap();
    let off = PolicyUpdate {
        trusted_device_days: 0,
        ..PolicyUpdate::of(&org)
    };
    s.organizations()
        .update_policy(setup.org, off, NOW)
        .await
        .unwrap();
    let made = devices
        .create("again", new(&setup, 30, seen), event(&setup), |_, _| {
            "{}".into()
        })
        .await
        .unwrap();
    assert!(made.is_none());
    assert!(
        devices
            .list(setup.user, NOW, None, 10)
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

both!(a_device_is_remembered_only_as_the_login_saw_it);

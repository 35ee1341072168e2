//! One test for each journey of DESIGN.md that involves a decision, named after it.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers may panic: that is a failed test"
)]

use policy::{
    Actor, AdminRefusal, AfterRecoveryCode, Assurance, Denial, EnrollmentReason, EnumSet,
    FactorKind, FactorRefusal, Factors, LoginKind, LoginOutcome, Method, NoSecondFactorReason,
    OrgPolicy, Proof, Role, SsoMode, UserState, after_recovery_code, after_second_factor,
    check_lockout, choose_organization, enroll_factor, login_outcome, remove_factor,
    replace_factor, reset_member_mfa, reset_own_mfa, update_mfa_policy,
};

const NOW: u64 = 1_700_000_000;

fn admin() -> Actor {
    Actor {
        role: Role::Admin,
        has_password: true,
        password_confirmed: true,
        has_mfa: false,
        session_assurance: Assurance::One,
    }
}

fn required() -> OrgPolicy {
    OrgPolicy {
        mfa_required: true,
        ..OrgPolicy::default()
    }
}

fn user_with(factors: Factors, recovery_codes_left: u32) -> UserState {
    UserState {
        has_password: true,
        factors,
        recovery_codes_left,
        ..UserState::default()
    }
}

fn totp_user() -> UserState {
    user_with(
        Factors {
            totp: 1,
            ..Factors::default()
        },
        10,
    )
}

fn password_login(org: &OrgPolicy, user: &UserState) -> LoginOutcome {
    login_outcome(org, user, LoginKind::Password, NOW)
}

#[test]
fn journey_1_admin_turns_on_mandatory_2fa() {
    let before = OrgPolicy::default();
    let after = required();
    // Confirmation with the password is required.
    let unconfirmed = Actor {
        password_confirmed: false,
        ..admin()
    };
    assert_eq!(
        update_mfa_policy(&unconfirmed, &before, &after),
        Err(AdminRefusal::PasswordConfirmationRequired)
    );
    // A plain member cannot.
    let member = Actor {
        role: Role::Member,
        ..admin()
    };
    assert_eq!(
        update_mfa_policy(&member, &before, &after),
        Err(AdminRefusal::NotAnAdmin)
    );
    // The admin can; sessions below assurance 2 are revoked.
    let change = update_mfa_policy(&admin(), &before, &after).unwrap();
    assert!(change.enforcement_turned_on);
    assert_eq!(change.revoke_sessions_below, Some(Assurance::Two));

    // A member without a factor: logged in before, must enroll now, and gets no session.
    let plain = user_with(Factors::default(), 0);
    assert!(matches!(
        password_login(&before, &plain),
        LoginOutcome::Authenticated { .. }
    ));
    assert_eq!(
        password_login(&after, &plain),
        LoginOutcome::EnrollmentRequired {
            methods: EnumSet::all(),
            reason: EnrollmentReason::OrganizationRequires
        }
    );
    // A member with a factor is asked for it.
    assert!(matches!(
        password_login(&after, &totp_user()),
        LoginOutcome::SecondFactorRequired { .. }
    ));
    // Turning it off again revokes nothing and leaves each member's own 2FA in place.
    let off = update_mfa_policy(&admin(), &after, &before).unwrap();
    assert_eq!(off.revoke_sessions_below, None);
    assert!(matches!(
        password_login(&before, &totp_user()),
        LoginOutcome::SecondFactorRequired { .. }
    ));
}

#[test]
fn journey_2_sso_exempt_or_enforced_per_organization() {
    let exempt = OrgPolicy {
        sso_enabled: true,
        sso_mode: SsoMode::Exempt,
        ..OrgPolicy::default()
    };
    // Exempt: SSO logins skip 2FA, even for a user with a factor...
    assert_eq!(
        login_outcome(&exempt, &totp_user(), LoginKind::Sso, NOW),
        LoginOutcome::Authenticated {
            assurance: Assurance::One,
            reason: NoSecondFactorReason::SsoExempt
        }
    );
    // ...and org-wide 2FA cannot be turned on while SSO exempts.
    let exempt_required = OrgPolicy {
        mfa_required: true,
        ..exempt
    };
    assert_eq!(
        update_mfa_policy(&admin(), &exempt, &exempt_required),
        Err(AdminRefusal::SsoExempts)
    );
    // Enforce: 2FA is layered on top of SSO.
    let enforce = OrgPolicy {
        mfa_required: true,
        sso_enabled: true,
        sso_mode: SsoMode::Enforce,
        ..OrgPolicy::default()
    };
    assert!(update_mfa_policy(&admin(), &exempt, &enforce).is_ok());
    let sso_only = UserState {
        has_password: false,
        ..UserState::default()
    };
    assert!(matches!(
        login_outcome(&enforce, &sso_only, LoginKind::Sso, NOW),
        LoginOutcome::EnrollmentRequired { .. }
    ));
    assert!(matches!(
        login_outcome(&enforce, &totp_user(), LoginKind::Sso, NOW),
        LoginOutcome::SecondFactorRequired { .. }
    ));
    // SSO logins where SSO is off are refused.
    assert_eq!(
        login_outcome(&OrgPolicy::default(), &totp_user(), LoginKind::Sso, NOW),
        LoginOutcome::Denied(Denial::SsoNotEnabled)
    );
}

#[test]
fn journey_3_passwordless_admin_must_set_a_password_first() {
    let sso_admin = Actor {
        role: Role::Owner,
        has_password: false,
        password_confirmed: false,
        ..admin()
    };
    let refusal = update_mfa_policy(&sso_admin, &OrgPolicy::default(), &required()).unwrap_err();
    assert_eq!(refusal, AdminRefusal::PasswordNotSet);
    assert_eq!(refusal.reason().as_str_name(), "PASSWORD_NOT_SET");
    assert!(refusal.to_string().contains("set a password"));
    // Once the password is set and confirmed, the same change goes through.
    let with_password = Actor {
        has_password: true,
        password_confirmed: true,
        ..sso_admin
    };
    assert!(update_mfa_policy(&with_password, &OrgPolicy::default(), &required()).is_ok());
    // An admin who has 2FA acts from a session that used it.
    let with_mfa = Actor {
        has_mfa: true,
        ..with_password
    };
    assert_eq!(
        update_mfa_policy(&with_mfa, &OrgPolicy::default(), &required()),
        Err(AdminRefusal::StepUpRequired)
    );
    let stepped_up = Actor {
        session_assurance: Assurance::Two,
        ..with_mfa
    };
    assert!(update_mfa_policy(&stepped_up, &OrgPolicy::default(), &required()).is_ok());
}

#[test]
fn journey_4_enroll_an_authenticator_app_of_an_allowed_kind() {
    // The app is allowed by default; an organization can allow SMS only.
    assert_eq!(enroll_factor(&required(), FactorKind::Totp), Ok(()));
    let sms_only = OrgPolicy {
        allowed_methods: EnumSet::only(FactorKind::Sms),
        ..required()
    };
    assert_eq!(
        enroll_factor(&sms_only, FactorKind::Totp),
        Err(FactorRefusal::MethodNotAllowed)
    );
    assert_eq!(
        FactorRefusal::MethodNotAllowed.reason().as_str_name(),
        "METHOD_NOT_ALLOWED"
    );
    // A user without a factor under enforcement is sent to enroll, with the allowed kinds.
    assert_eq!(
        password_login(&sms_only, &user_with(Factors::default(), 0)),
        LoginOutcome::EnrollmentRequired {
            methods: EnumSet::only(FactorKind::Sms),
            reason: EnrollmentReason::OrganizationRequires
        }
    );
}

#[test]
fn journey_6_enroll_an_sms_phone_where_sms_is_allowed() {
    assert_eq!(
        enroll_factor(&OrgPolicy::default(), FactorKind::Sms),
        Ok(())
    );
    let app_only = OrgPolicy {
        allowed_methods: FactorKind::Totp | FactorKind::Hotp,
        ..OrgPolicy::default()
    };
    assert_eq!(
        enroll_factor(&app_only, FactorKind::Sms),
        Err(FactorRefusal::MethodNotAllowed)
    );
}

#[test]
fn journey_7_login_with_codes_and_the_last_recovery_code() {
    // App and recovery codes are offered; passing one gives assurance 2.
    assert_eq!(
        password_login(&OrgPolicy::default(), &totp_user()),
        LoginOutcome::SecondFactorRequired {
            methods: Method::Totp | Method::RecoveryCode
        }
    );
    assert!(matches!(
        after_second_factor(&OrgPolicy::default(), &totp_user()),
        LoginOutcome::Authenticated {
            assurance: Assurance::Two,
            ..
        }
    ));
    // Each recovery code works once; with codes left nothing changes.
    let one_factor = totp_user().factors;
    assert_eq!(
        after_recovery_code(9, &one_factor),
        AfterRecoveryCode::Continue { remaining: 9 }
    );
    // The last one: set up 2FA again, within the login the code passed (and at every login
    // after it until done).
    assert_eq!(
        after_recovery_code(0, &one_factor),
        AfterRecoveryCode::MustReenroll
    );
    let exhausted = UserState {
        must_reenroll: true,
        recovery_codes_left: 0,
        ..totp_user()
    };
    assert_eq!(
        after_second_factor(&OrgPolicy::default(), &exhausted),
        LoginOutcome::EnrollmentRequired {
            methods: EnumSet::all(),
            reason: EnrollmentReason::ReenrollmentPending
        }
    );
    // Never on a password alone: while a factor remains, it is asked for first.
    assert_eq!(
        password_login(&OrgPolicy::default(), &exhausted),
        LoginOutcome::SecondFactorRequired {
            methods: EnumSet::only(Method::Totp)
        }
    );
    // Whatever factors remain: someone who used every recovery code has lost them (the
    // hosted products we follow ask for a reset of 2FA then), and the new factor retires them.
    let two = Factors {
        totp: 1,
        sms: 1,
        ..Factors::default()
    };
    assert_eq!(
        after_recovery_code(0, &two),
        AfterRecoveryCode::MustReenroll
    );
    // With no codes left the factors alone are offered.
    let no_codes = user_with(one_factor, 0);
    assert_eq!(
        password_login(&required(), &no_codes),
        LoginOutcome::SecondFactorRequired {
            methods: EnumSet::only(Method::Totp)
        }
    );
}

#[test]
fn journey_8_changing_method_enrolls_the_new_then_removes_the_old() {
    // SMS to app under enforcement: with both enrolled, the old SMS factor can go.
    let both = user_with(
        Factors {
            totp: 1,
            sms: 1,
            ..Factors::default()
        },
        10,
    );
    let removal = remove_factor(&both, FactorKind::Sms, Proof::FactorCode, &[required()]).unwrap();
    assert!(!removal.delete_recovery_codes);
    // Only SMS enrolled: removing it first would strand the user.
    let sms_only = user_with(
        Factors {
            sms: 1,
            ..Factors::default()
        },
        10,
    );
    assert_eq!(
        remove_factor(&sms_only, FactorKind::Sms, Proof::FactorCode, &[required()]),
        Err(FactorRefusal::LastRequiredFactor)
    );
}

#[test]
fn journey_8_a_replacement_keeps_every_required_organization_covered() {
    let sms_only = user_with(
        Factors {
            sms: 1,
            ..Factors::default()
        },
        10,
    );
    let sms_org = OrgPolicy {
        allowed_methods: EnumSet::only(FactorKind::Sms),
        ..required()
    };
    let relaxed = OrgPolicy {
        mfa_required: false,
        ..sms_org
    };
    let (sms, totp, hotp) = (FactorKind::Sms, FactorKind::Totp, FactorKind::Hotp);
    let cases = [
        // Under enforcement, the only factor can be replaced: the new one is there at once.
        ("the only factor, by an app", sms, totp, required(), Ok(())),
        ("the only factor, by a phone", sms, sms, required(), Ok(())),
        // Not by a kind an enforcing organization does not allow, when it was the last it does.
        (
            "a kind the organization does not allow",
            sms,
            totp,
            sms_org,
            Err(FactorRefusal::LastRequiredFactor),
        ),
        // An organization that does not enforce 2FA lets it be.
        ("no enforcement", sms, totp, relaxed, Ok(())),
        // Only a factor the user has can be replaced.
        (
            "a kind the user has none of",
            hotp,
            totp,
            OrgPolicy::default(),
            Err(FactorRefusal::NoSuchFactor),
        ),
    ];
    for (case, old, new, org, expected) in cases {
        assert_eq!(
            replace_factor(&sms_only, old, new, &[org]),
            expected,
            "{case}"
        );
    }
}

#[test]
fn journey_9_turning_2fa_off_needs_proof_and_no_enforcement() {
    let user = totp_user();
    // Needs a current code or a recovery code.
    assert_eq!(
        remove_factor(&user, FactorKind::Totp, Proof::None, &[]),
        Err(FactorRefusal::ProofRequired)
    );
    let removal = remove_factor(&user, FactorKind::Totp, Proof::RecoveryCode, &[]).unwrap();
    assert!(
        removal.delete_recovery_codes,
        "no factor left: codes go too"
    );
    // Under enforcement, the last factor stays, whatever its kind.
    assert_eq!(
        remove_factor(&user, FactorKind::Totp, Proof::FactorCode, &[required()]),
        Err(FactorRefusal::LastRequiredFactor)
    );
    let sms_only_org = OrgPolicy {
        allowed_methods: EnumSet::only(FactorKind::Sms),
        ..required()
    };
    assert_eq!(
        remove_factor(&user, FactorKind::Totp, Proof::FactorCode, &[sms_only_org]),
        Err(FactorRefusal::LastRequiredFactor)
    );
    // In several organizations, one that requires 2FA is enough to keep it.
    assert_eq!(
        remove_factor(
            &user,
            FactorKind::Totp,
            Proof::FactorCode,
            &[OrgPolicy::default(), required()]
        ),
        Err(FactorRefusal::LastRequiredFactor)
    );
}

#[test]
fn journey_10_admin_resets_a_member_after_a_lost_phone() {
    let owner = Actor {
        role: Role::Owner,
        ..admin()
    };
    assert!(reset_member_mfa(&owner, Role::Admin, &[], false).is_ok());
    assert_eq!(
        reset_member_mfa(&admin(), Role::Owner, &[], false),
        Err(AdminRefusal::CannotResetOwner)
    );
    let member = Actor {
        role: Role::Member,
        ..admin()
    };
    assert_eq!(
        reset_member_mfa(&member, Role::Member, &[], false),
        Err(AdminRefusal::NotAnAdmin)
    );
    assert_eq!(
        reset_member_mfa(&owner, Role::Owner, &[], true),
        Err(AdminRefusal::CannotResetSelf)
    );
    // Someone who administers another organization is that organization's to reset.
    assert_eq!(
        reset_member_mfa(&owner, Role::Member, &[Role::Owner], false),
        Err(AdminRefusal::AdministersElsewhere)
    );
    // Apply the reset the way the server does: factors and codes gone, sessions revoked,
    // re-enrollment pending. Even where 2FA is not required, the member enrolls again.
    let reset = reset_member_mfa(&admin(), Role::Member, &[Role::Member], false).unwrap();
    assert!(reset.revoke_sessions);
    let after = UserState {
        factors: Factors::default(),
        recovery_codes_left: 0,
        must_reenroll: reset.must_reenroll,
        ..totp_user()
    };
    assert_eq!(
        password_login(&OrgPolicy::default(), &after),
        LoginOutcome::EnrollmentRequired {
            methods: EnumSet::all(),
            reason: EnrollmentReason::ReenrollmentPending
        }
    );
}

#[test]
fn journey_11_own_reset_to_move_to_a_new_phone() {
    let user = totp_user();
    assert_eq!(
        reset_own_mfa(&user, Proof::None),
        Err(FactorRefusal::ProofRequired)
    );
    assert!(reset_own_mfa(&user, Proof::RecoveryCode).is_ok());
    let reset = reset_own_mfa(&user, Proof::FactorCode).unwrap();
    assert!(reset.revoke_other_sessions);
    // Applied: no factor, re-enrollment pending. In an organization that does not require
    // 2FA the user still enrolls the new phone before the next session.
    let after_reset = UserState {
        must_reenroll: reset.must_reenroll,
        factors: Factors::default(),
        recovery_codes_left: 0,
        ..user
    };
    assert_eq!(
        password_login(&OrgPolicy::default(), &after_reset),
        LoginOutcome::EnrollmentRequired {
            methods: EnumSet::all(),
            reason: EnrollmentReason::ReenrollmentPending
        }
    );
    // Nothing to reset without a factor.
    assert_eq!(
        reset_own_mfa(&after_reset, Proof::FactorCode),
        Err(FactorRefusal::NoSuchFactor)
    );
}

#[test]
fn a_password_alone_never_replaces_a_factor_the_user_has() {
    let app_only = OrgPolicy {
        allowed_methods: EnumSet::only(FactorKind::Totp),
        ..required()
    };
    let sms_user = user_with(
        Factors {
            sms: 1,
            ..Factors::default()
        },
        10,
    );
    // SMS does not count here, but the user must still pass it before enrolling an app.
    assert_eq!(
        password_login(&app_only, &sms_user),
        LoginOutcome::SecondFactorRequired {
            methods: Method::Sms | Method::RecoveryCode
        }
    );
    assert_eq!(
        after_second_factor(&app_only, &sms_user),
        LoginOutcome::EnrollmentRequired {
            methods: EnumSet::only(FactorKind::Totp),
            reason: EnrollmentReason::MethodNotAllowed
        }
    );
    // Without enforcement the user's SMS factor is simply their second factor.
    let not_required = OrgPolicy {
        mfa_required: false,
        ..app_only
    };
    assert!(matches!(
        after_second_factor(&not_required, &sms_user),
        LoginOutcome::Authenticated {
            assurance: Assurance::Two,
            ..
        }
    ));
}

#[test]
fn lockouts_are_checked_before_the_password_and_disabled_accounts_denied() {
    // The server asks before verifying the password, so the answer cannot depend on it.
    let locked_user = UserState {
        locked_until: Some(NOW + 30),
        ..totp_user()
    };
    assert_eq!(
        check_lockout(&locked_user, NOW),
        Err(Denial::LockedOut { until: NOW + 30 })
    );
    assert_eq!(check_lockout(&locked_user, NOW + 30), Ok(()));
    let locked = UserState {
        locked_until: Some(NOW + 30),
        ..totp_user()
    };
    assert_eq!(
        password_login(&OrgPolicy::default(), &locked),
        LoginOutcome::Denied(Denial::LockedOut { until: NOW + 30 })
    );
    // A lockout that ended no longer counts.
    let expired = UserState {
        locked_until: Some(NOW),
        ..totp_user()
    };
    assert!(matches!(
        password_login(&OrgPolicy::default(), &expired),
        LoginOutcome::SecondFactorRequired { .. }
    ));
}

#[test]
fn the_login_names_the_organization_when_the_user_has_several() {
    assert_eq!(choose_organization(&[7], None), Ok(Some(7)));
    assert_eq!(choose_organization::<u32>(&[], None), Ok(None));
    assert_eq!(choose_organization(&[7, 9], Some(9)), Ok(Some(9)));
    assert_eq!(
        choose_organization(&[7, 9], None),
        Err(Denial::OrganizationRequired)
    );
    assert_eq!(choose_organization(&[7], Some(8)), Err(Denial::NotAMember));
    assert_eq!(
        choose_organization::<u32>(&[], Some(8)),
        Err(Denial::NotAMember)
    );
}

/// Every refusal has a reason of its own, except the two the API sends as a field violation
/// (INVALID_ARGUMENT naming the field), which the field tells apart.
#[test]
fn every_refusal_has_a_distinct_stable_reason() {
    use tollgate_proto::v1::ErrorReason;
    assert_eq!(
        AdminRefusal::PasswordConfirmationRequired.reason(),
        ErrorReason::InvalidArgument
    );
    assert_eq!(
        AdminRefusal::NoMethodAllowed.reason(),
        ErrorReason::InvalidArgument
    );
    let mut reasons = vec![
        Denial::AccountDisabled.reason(),
        Denial::LockedOut { until: 0 }.reason(),
        Denial::NoPassword.reason(),
        Denial::SsoNotEnabled.reason(),
        Denial::NotAMember.reason(),
        Denial::OrganizationRequired.reason(),
        AdminRefusal::NotAnAdmin.reason(),
        AdminRefusal::PasswordNotSet.reason(),
        AdminRefusal::SsoExempts.reason(),
        AdminRefusal::CannotResetSelf.reason(),
        AdminRefusal::CannotResetOwner.reason(),
        AdminRefusal::AdministersElsewhere.reason(),
        AdminRefusal::StepUpRequired.reason(),
        FactorRefusal::ProofRequired.reason(),
        FactorRefusal::NoSuchFactor.reason(),
        FactorRefusal::LastRequiredFactor.reason(),
        FactorRefusal::MethodNotAllowed.reason(),
    ];
    let n = reasons.len();
    assert!(
        reasons
            .iter()
            .all(|r| *r != ErrorReason::Unspecified && *r != ErrorReason::InvalidArgument)
    );
    reasons.sort_unstable();
    reasons.dedup();
    assert_eq!(reasons.len(), n);
}

//! Every combination of role, organization policy, SSO mode, login kind and factor state,
//! checked against the invariants the product promises. A login's outcome does not take the
//! role (roles matter to administration, checked below with every actor and policy pair).

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code: a panic is a failed test"
)]

use policy::{
    AccountStatus, Actor, AdminRefusal, AfterRecoveryCode, Assurance, Denial, EnrollmentReason,
    EnumSet, FactorKind, FactorRefusal, Factors, LoginKind, LoginOutcome, Method,
    NoSecondFactorReason, OrgPolicy, Proof, Role, SsoMode, UserState, after_recovery_code,
    after_second_factor, choose_organization, login_outcome, read_audit_log, remove_factor,
    reset_member_mfa, reset_own_mfa, update_mfa_policy, with_remembered_device,
};

const NOW: u64 = 1_700_000_000;
const ROLES: [Role; 3] = [Role::Owner, Role::Admin, Role::Member];
const KINDS: [FactorKind; 4] = [
    FactorKind::Totp,
    FactorKind::Hotp,
    FactorKind::Sms,
    FactorKind::WebAuthn,
];
const ASSURANCES: [Assurance; 2] = [Assurance::One, Assurance::Two];

fn all_policies() -> Vec<OrgPolicy> {
    let mut out = Vec::new();
    for mfa_required in [false, true] {
        for allowed_bits in 0u8..16 {
            let allowed_methods: EnumSet<FactorKind> = KINDS
                .into_iter()
                .enumerate()
                .filter(|(i, _)| allowed_bits & (1 << i) != 0)
                .map(|(_, k)| k)
                .collect();
            for sso_enabled in [false, true] {
                for sso_mode in [SsoMode::Exempt, SsoMode::Enforce] {
                    out.push(OrgPolicy {
                        mfa_required,
                        allowed_methods,
                        sso_enabled,
                        sso_mode,
                    });
                }
            }
        }
    }
    out
}

fn all_factors() -> Vec<Factors> {
    let mut out = Vec::new();
    for totp in 0..=2 {
        for hotp in 0..=1 {
            for sms in 0..=1 {
                for webauthn in 0..=1 {
                    out.push(Factors {
                        totp,
                        hotp,
                        sms,
                        webauthn,
                    });
                }
            }
        }
    }
    out
}

fn all_users() -> Vec<UserState> {
    let mut out = Vec::new();
    for status in [AccountStatus::Active, AccountStatus::Disabled] {
        for has_password in [false, true] {
            for factors in all_factors() {
                for recovery_codes_left in [0, 1, 10] {
                    for must_reenroll in [false, true] {
                        for locked_until in [None, Some(NOW - 1), Some(NOW), Some(NOW + 60)] {
                            out.push(UserState {
                                status,
                                has_password,
                                factors,
                                recovery_codes_left,
                                must_reenroll,
                                locked_until,
                            });
                        }
                    }
                }
            }
        }
    }
    out
}

fn all_actors() -> Vec<Actor> {
    let mut out = Vec::new();
    for role in ROLES {
        for has_password in [false, true] {
            for password_confirmed in [false, true] {
                for has_mfa in [false, true] {
                    for session_assurance in ASSURANCES {
                        out.push(Actor {
                            role,
                            has_password,
                            password_confirmed,
                            has_mfa,
                            session_assurance,
                        });
                    }
                }
            }
        }
    }
    out
}

/// Whether the user is denied before any factor question, and why (stated independently of
/// the implementation's order of checks: a disabled account wins over a lockout, which wins
/// over the credential kind).
fn expected_denial(org: &OrgPolicy, user: &UserState, kind: LoginKind) -> Option<Denial> {
    let locked = user.locked_until.filter(|&until| until > NOW);
    if user.status == AccountStatus::Disabled {
        Some(Denial::AccountDisabled)
    } else if let Some(until) = locked {
        Some(Denial::LockedOut { until })
    } else if kind == LoginKind::Password && !user.has_password {
        Some(Denial::NoPassword)
    } else if kind == LoginKind::Sso && !org.sso_enabled {
        Some(Denial::SsoNotEnabled)
    } else {
        None
    }
}

#[test]
fn login_outcomes_keep_every_invariant() {
    let policies = all_policies();
    let users = all_users();
    let mut checked = 0u64;
    for org in &policies {
        for user in &users {
            for kind in [LoginKind::Password, LoginKind::Sso] {
                let outcome = login_outcome(org, user, kind, NOW);
                let ctx = format!("{org:?} {user:?} {kind:?} => {outcome:?}");
                checked += 1;
                let exempt =
                    kind == LoginKind::Sso && org.sso_enabled && org.sso_mode == SsoMode::Exempt;
                // A policy `update_mfa_policy` accepts (the only kind the server stores).
                let sso_exempts = org.sso_enabled && org.sso_mode == SsoMode::Exempt;
                let valid = !(org.allowed_methods.is_empty() || org.mfa_required && sso_exempts);
                let has_factor = user.factors.total() > 0;
                let allowed_factor = !(user.factors.kinds() & org.allowed_methods).is_empty();

                if let Some(denial) = expected_denial(org, user, kind) {
                    assert_eq!(outcome, LoginOutcome::Denied(denial), "{ctx}");
                    assert_eq!(with_remembered_device(outcome, org, user), outcome, "{ctx}");
                    continue;
                }
                // A remembered device stands in for a second factor asked for, and only then,
                // exactly as a passed one would (the session marked as the device's).
                let remembered = with_remembered_device(outcome, org, user);
                match (outcome, after_second_factor(org, user)) {
                    (
                        LoginOutcome::SecondFactorRequired { .. },
                        LoginOutcome::Authenticated { assurance, .. },
                    ) => assert_eq!(
                        remembered,
                        LoginOutcome::Authenticated {
                            assurance,
                            reason: NoSecondFactorReason::RememberedDevice
                        },
                        "{ctx}"
                    ),
                    (LoginOutcome::SecondFactorRequired { .. }, after) => {
                        assert_eq!(remembered, after, "{ctx}");
                    }
                    _ => assert_eq!(remembered, outcome, "{ctx}"),
                }
                match outcome {
                    LoginOutcome::Denied(_) => panic!("denied without a reason: {ctx}"),
                    LoginOutcome::Authenticated { assurance, reason } => {
                        // Without a second factor: assurance 1, and only for an exempt SSO
                        // login or a user who has no 2FA where it is not required.
                        assert_eq!(assurance, Assurance::One, "{ctx}");
                        match reason {
                            NoSecondFactorReason::SsoExempt => assert!(exempt, "{ctx}"),
                            NoSecondFactorReason::NotEnrolled => {
                                assert!(!exempt && !org.mfa_required, "{ctx}");
                                assert!(!has_factor && !user.must_reenroll, "{ctx}");
                            }
                            NoSecondFactorReason::SecondFactorPassed
                            | NoSecondFactorReason::RememberedDevice => panic!("{ctx}"),
                        }
                    }
                    LoginOutcome::SecondFactorRequired { methods } => {
                        assert!(!exempt && has_factor, "{ctx}");
                        let factor_methods: EnumSet<Method> =
                            (methods - Method::RecoveryCode).iter().collect();
                        assert!(!factor_methods.is_empty(), "{ctx}");
                        // Only methods the user has; recovery codes exactly when some are left.
                        for m in factor_methods {
                            let kind = KINDS.into_iter().find(|k| Method::from(*k) == m).unwrap();
                            assert!(user.factors.count(kind) > 0, "{ctx}");
                            // Under enforcement, a disallowed method only if no allowed one.
                            if org.mfa_required && allowed_factor {
                                assert!(org.allowed_methods.contains(kind), "{ctx}");
                            }
                        }
                        assert_eq!(
                            methods.contains(Method::RecoveryCode),
                            user.recovery_codes_left > 0,
                            "{ctx}"
                        );
                        // What follows the second factor.
                        match after_second_factor(org, user) {
                            LoginOutcome::Authenticated { assurance, reason } => {
                                assert!(!user.must_reenroll, "{ctx}");
                                assert_eq!(assurance, Assurance::Two, "{ctx}");
                                assert_eq!(reason, NoSecondFactorReason::SecondFactorPassed);
                                assert!(!org.mfa_required || allowed_factor, "{ctx}");
                            }
                            LoginOutcome::EnrollmentRequired { methods, reason } => {
                                assert_eq!(methods, org.allowed_methods, "{ctx}");
                                if reason == EnrollmentReason::ReenrollmentPending {
                                    assert!(user.must_reenroll, "{ctx}");
                                } else {
                                    assert_eq!(reason, EnrollmentReason::MethodNotAllowed);
                                    assert!(org.mfa_required && !allowed_factor, "{ctx}");
                                }
                            }
                            other => panic!("unexpected {other:?}: {ctx}"),
                        }
                    }
                    LoginOutcome::EnrollmentRequired { methods, reason } => {
                        assert!(!exempt, "{ctx}");
                        // Only kinds the organization allows, and always some for a valid policy.
                        assert_eq!(methods, org.allowed_methods, "{ctx}");
                        assert!(!valid || !methods.is_empty(), "{ctx}");
                        match reason {
                            EnrollmentReason::ReenrollmentPending => {
                                // Only when no factor is left to pass first.
                                assert!(user.must_reenroll && !has_factor, "{ctx}");
                            }
                            EnrollmentReason::OrganizationRequires => {
                                // Nobody with a factor is sent to enroll on a password alone.
                                assert!(org.mfa_required && !has_factor, "{ctx}");
                                assert!(!user.must_reenroll, "{ctx}");
                            }
                            EnrollmentReason::MethodNotAllowed => panic!("{ctx}"),
                        }
                    }
                }
                // The headline invariants, stated directly.
                if org.mfa_required && !exempt {
                    assert!(
                        !matches!(outcome, LoginOutcome::Authenticated { .. }),
                        "{ctx}"
                    );
                }
                // A password alone never replaces a factor the user has, re-enrollment or not.
                if has_factor && !exempt {
                    assert!(
                        matches!(outcome, LoginOutcome::SecondFactorRequired { .. }),
                        "{ctx}"
                    );
                }
                if user.must_reenroll && !has_factor && !exempt {
                    assert!(
                        matches!(outcome, LoginOutcome::EnrollmentRequired { .. }),
                        "{ctx}"
                    );
                }
            }
        }
    }
    assert_eq!(checked, (policies.len() * users.len() * 2) as u64);
    assert!(
        checked > 100_000,
        "the space is really enumerated: {checked}"
    );
}

#[test]
fn only_stepped_up_admins_read_the_audit_log() {
    for actor in all_actors() {
        let expected = if !actor.role.is_admin() {
            Err(AdminRefusal::NotAnAdmin)
        } else if actor.has_mfa && actor.session_assurance == Assurance::One {
            Err(AdminRefusal::StepUpRequired)
        } else {
            Ok(())
        };
        assert_eq!(read_audit_log(&actor), expected, "{actor:?}");
    }
}

#[test]
fn policy_changes_keep_every_invariant() {
    let policies = all_policies();
    let mut accepted = 0;
    for actor in all_actors() {
        for current in &policies {
            for new in &policies {
                let result = update_mfa_policy(&actor, current, new);
                let ctx = format!("{actor:?} {current:?} -> {new:?} => {result:?}");
                let exempting = new.sso_enabled && new.sso_mode == SsoMode::Exempt;
                match result {
                    Ok(change) => {
                        accepted += 1;
                        // Only owners and admins, with a confirmed password, from a session
                        // that used their 2FA if they have it.
                        assert!(actor.role.is_admin(), "a member never changes it: {ctx}");
                        assert!(actor.has_password && actor.password_confirmed, "{ctx}");
                        assert!(!actor.has_mfa || actor.session_assurance == Assurance::Two);
                        // Never 2FA required while SSO exempts, never without a method.
                        assert!(!(new.mfa_required && exempting), "{ctx}");
                        assert!(!new.allowed_methods.is_empty(), "{ctx}");
                        let on = new.mfa_required && !current.mfa_required;
                        assert_eq!(change.enforcement_turned_on, on, "{ctx}");
                        let was_exempt = current.sso_enabled && current.sso_mode == SsoMode::Exempt;
                        let exemption_ended = was_exempt && !exempting;
                        assert_eq!(
                            change.revoke_sessions_below,
                            (on || exemption_ended).then_some(Assurance::Two),
                            "{ctx}"
                        );
                    }
                    Err(AdminRefusal::NotAnAdmin) => assert_eq!(actor.role, Role::Member),
                    Err(AdminRefusal::PasswordNotSet) => {
                        assert!(actor.role.is_admin() && !actor.has_password, "{ctx}");
                    }
                    Err(AdminRefusal::PasswordConfirmationRequired) => {
                        assert!(actor.has_password && !actor.password_confirmed, "{ctx}");
                    }
                    Err(AdminRefusal::StepUpRequired) => {
                        assert!(actor.has_mfa && actor.session_assurance == Assurance::One);
                    }
                    Err(AdminRefusal::SsoExempts) => {
                        assert!(new.mfa_required && exempting, "{ctx}");
                    }
                    Err(AdminRefusal::NoMethodAllowed) => {
                        assert!(new.allowed_methods.is_empty(), "{ctx}");
                    }
                    Err(other) => panic!("unexpected {other:?}: {ctx}"),
                }
            }
        }
    }
    assert!(accepted > 0);
}

#[test]
fn member_resets_follow_the_role_rules() {
    let elsewhere: [&[Role]; 5] = [
        &[],
        &[Role::Member],
        &[Role::Admin],
        &[Role::Owner],
        &[Role::Member, Role::Admin],
    ];
    let mut accepted = 0;
    for actor in all_actors() {
        for target in ROLES {
            for others in elsewhere {
                for is_self in [false, true] {
                    let result = reset_member_mfa(&actor, target, others, is_self);
                    let ctx =
                        format!("{actor:?} resets {target:?} {others:?} {is_self}: {result:?}");
                    let admin_elsewhere = others.iter().any(|r| r.is_admin());
                    match result {
                        Ok(reset) => {
                            accepted += 1;
                            // Never a plain member, never oneself, never an owner by an admin,
                            // never someone who administers elsewhere, never from a session
                            // below the actor's own 2FA.
                            assert!(actor.role.is_admin() && !is_self, "{ctx}");
                            assert!(!(actor.role == Role::Admin && target == Role::Owner));
                            assert!(!admin_elsewhere, "{ctx}");
                            assert!(!actor.has_mfa || actor.session_assurance == Assurance::Two);
                            // The member enrolls again and loses their sessions.
                            assert!(reset.must_reenroll && reset.revoke_sessions, "{ctx}");
                        }
                        Err(AdminRefusal::NotAnAdmin) => assert_eq!(actor.role, Role::Member),
                        Err(AdminRefusal::CannotResetSelf) => assert!(is_self, "{ctx}"),
                        Err(AdminRefusal::StepUpRequired) => {
                            assert!(actor.has_mfa && actor.session_assurance == Assurance::One);
                        }
                        Err(AdminRefusal::CannotResetOwner) => {
                            assert!(actor.role == Role::Admin && target == Role::Owner);
                        }
                        Err(AdminRefusal::AdministersElsewhere) => assert!(admin_elsewhere),
                        Err(other) => panic!("unexpected {other:?}: {ctx}"),
                    }
                }
            }
        }
    }
    assert!(accepted > 0);
}

#[test]
fn factor_removal_keeps_every_invariant() {
    let policies = all_policies();
    // Every single organization, none, and pairs of the policies that differ in what counts.
    let mut org_lists: Vec<Vec<OrgPolicy>> = vec![vec![]];
    org_lists.extend(policies.iter().map(|p| vec![*p]));
    let distinct: Vec<OrgPolicy> = policies
        .iter()
        .filter(|p| !p.sso_enabled && p.sso_mode == SsoMode::Exempt)
        .copied()
        .collect();
    for a in &distinct {
        for b in &distinct {
            org_lists.push(vec![*a, *b]);
        }
    }
    let mut outcomes = [0u32; 4];
    for factors in all_factors() {
        for recovery_codes_left in [0, 3] {
            for must_reenroll in [false, true] {
                let user = UserState {
                    has_password: true,
                    factors,
                    recovery_codes_left,
                    must_reenroll,
                    ..UserState::default()
                };
                for kind in KINDS {
                    for proof in [Proof::None, Proof::FactorCode, Proof::RecoveryCode] {
                        for orgs in &org_lists {
                            let result = remove_factor(&user, kind, proof, orgs);
                            let ctx = format!("{user:?} {kind:?} {proof:?} {orgs:?} => {result:?}");
                            let after = factors.without_one(kind);
                            match result {
                                Ok(removal) => {
                                    outcomes[0] += 1;
                                    assert!(proof.is_present(), "never without proof: {ctx}");
                                    assert!(factors.count(kind) > 0, "{ctx}");
                                    assert_eq!(removal.delete_recovery_codes, after.total() == 0);
                                    // No requiring organization sees the user's last factor go,
                                    // nor their last factor of a kind it allows.
                                    for org in orgs.iter().filter(|o| o.mfa_required) {
                                        assert!(after.total() > 0, "{ctx}");
                                        let before = factors.count_in(org.allowed_methods);
                                        let left = after.count_in(org.allowed_methods);
                                        assert!(before == 0 || left > 0, "{ctx}");
                                    }
                                }
                                Err(FactorRefusal::NoSuchFactor) => {
                                    outcomes[1] += 1;
                                    assert_eq!(factors.count(kind), 0, "{ctx}");
                                }
                                Err(FactorRefusal::ProofRequired) => {
                                    outcomes[2] += 1;
                                    assert!(!proof.is_present(), "{ctx}");
                                }
                                Err(FactorRefusal::LastRequiredFactor) => {
                                    outcomes[3] += 1;
                                    assert!(
                                        orgs.iter().any(|o| o.mfa_required
                                            && (after.total() == 0
                                                || (factors.count_in(o.allowed_methods) > 0
                                                    && after.count_in(o.allowed_methods) == 0))),
                                        "{ctx}"
                                    );
                                }
                                Err(other) => panic!("unexpected {other:?}: {ctx}"),
                            }
                        }
                    }
                }
            }
        }
    }
    assert!(
        outcomes.iter().all(|&n| n > 0),
        "every outcome is reached: {outcomes:?}"
    );
}

#[test]
fn own_resets_recovery_codes_and_organization_choice() {
    for factors in all_factors() {
        let user = UserState {
            has_password: true,
            factors,
            ..UserState::default()
        };
        for proof in [Proof::None, Proof::FactorCode, Proof::RecoveryCode] {
            match reset_own_mfa(&user, proof) {
                Ok(reset) => {
                    assert!(proof.is_present() && factors.total() > 0);
                    assert!(reset.must_reenroll && reset.revoke_other_sessions);
                }
                Err(FactorRefusal::NoSuchFactor) => assert_eq!(factors.total(), 0),
                Err(FactorRefusal::ProofRequired) => assert!(!proof.is_present()),
                Err(other) => panic!("unexpected {other:?}"),
            }
        }
        for remaining in [0, 1, 5] {
            let after = after_recovery_code(remaining, &factors);
            // Re-enrollment exactly when the codes ran out.
            let expected = remaining == 0;
            assert_eq!(
                after == AfterRecoveryCode::MustReenroll,
                expected,
                "{factors:?}"
            );
        }
    }
    let ids = [1u8, 2, 3];
    for n in 0..=3 {
        let mine = &ids[..n];
        for requested in [None, Some(1), Some(2), Some(9)] {
            match (requested, choose_organization(mine, requested)) {
                (Some(id), Ok(Some(chosen))) => assert!(chosen == id && mine.contains(&id)),
                (Some(id), Err(Denial::NotAMember)) => assert!(!mine.contains(&id)),
                (None, Ok(None)) => assert!(mine.is_empty()),
                (None, Ok(Some(chosen))) => assert_eq!(mine, [chosen]),
                (None, Err(Denial::OrganizationRequired)) => assert!(mine.len() > 1),
                (requested, result) => panic!("{mine:?} {requested:?} => {result:?}"),
            }
        }
    }
}

//! The scenarios' workers and the accounts they need.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use otp_core::{Hotp, Totp};
use tollgate_proto::v1::{
    self, authenticate_request::Credentials, authenticate_response, verify_second_factor_response,
};

use crate::client::Clients;
use crate::drive::Worker;
use crate::prepare::{self, RunNames, SetupResult, unix_now};
use crate::stats::failure_of_status;

type Step = (&'static str, Result<(), String>);

fn wrong(what: &str) -> Result<(), String> {
    Err(format!("wrong answer: {what}"))
}

/// An account with an HOTP token and a session, used by one worker only.
#[derive(Debug)]
pub struct HotpUser {
    /// The login email.
    pub email: String,
    /// A session of the account.
    pub session: String,
    /// The token.
    pub hotp: Hotp,
    /// The counter of its next code.
    pub next: u64,
}

impl HotpUser {
    /// The token's next code (the counter moves on whatever the server answers: a code that
    /// may have been used is never sent again, and the server's look-ahead covers the gap).
    fn press(&mut self) -> String {
        let code = self.hotp.generate(self.next).to_string();
        self.next += 1;
        code
    }
}

/// Creates `n` accounts, each with a password, a session and an HOTP token, `parallel` at a
/// time (creating an account hashes its password, and logging it in verifies it).
pub async fn hotp_users(
    clients: &[Clients],
    names: &RunNames,
    n: usize,
    parallel: usize,
) -> SetupResult<Vec<HotpUser>> {
    let make = |i: usize, c: Clients, names: RunNames| async move {
        let email = names.email("otp", i);
        prepare::create_user(&c, &email, &names.password).await?;
        let session = prepare::password_session(&c, &email, &names.password, "").await?;
        let hotp = prepare::enroll_hotp(&c, &session).await?;
        Ok(HotpUser {
            email,
            session,
            hotp,
            next: 1,
        })
    };
    in_parallel(clients, names, n, parallel, make).await
}

async fn in_parallel<T, F, Fut>(
    clients: &[Clients],
    names: &RunNames,
    n: usize,
    parallel: usize,
    make: F,
) -> SetupResult<Vec<T>>
where
    T: Send + 'static,
    F: Fn(usize, Clients, RunNames) -> Fut,
    Fut: Future<Output = SetupResult<T>> + Send + 'static,
{
    let mut out = Vec::with_capacity(n);
    let mut set = tokio::task::JoinSet::new();
    let mut next = 0;
    while out.len() < n {
        while next < n && set.len() < parallel.max(1) {
            let c = clients
                .get(next % clients.len().max(1))
                .cloned()
                .ok_or("no connection")?;
            set.spawn(make(next, c, names.clone()));
            next += 1;
        }
        match set.join_next().await {
            Some(Ok(item)) => out.push(item?),
            Some(Err(e)) => return Err(format!("set-up task: {e}")),
            None => break,
        }
    }
    Ok(out)
}

/// `otp`: second-factor verification on the success path. Each request is VerifyStepUp with
/// a session and the next code of the worker's own HOTP tokens (tokens are never shared
/// between workers, so every code is fresh).
#[derive(Debug)]
pub struct OtpWorker {
    tokens: Vec<HotpUser>,
    turn: usize,
}

impl OtpWorker {
    /// Splits `tokens` among `workers` workers.
    pub fn split(tokens: Vec<HotpUser>, workers: usize) -> Vec<Self> {
        let mut out: Vec<Self> = (0..workers.max(1))
            .map(|_| Self {
                tokens: Vec::new(),
                turn: 0,
            })
            .collect();
        let n = out.len();
        for (i, token) in tokens.into_iter().enumerate() {
            if let Some(w) = out.get_mut(i % n) {
                w.tokens.push(token);
            }
        }
        out.retain(|w| !w.tokens.is_empty());
        out
    }
}

impl Worker for OtpWorker {
    async fn step(&mut self, c: &Clients) -> Step {
        const OP: &str = "verify_otp";
        let n = self.tokens.len().max(1);
        self.turn = (self.turn + 1) % n;
        let Some(user) = self.tokens.get_mut(self.turn) else {
            return (OP, Err("no token".to_owned()));
        };
        let code = user.press();
        let answer = c
            .authentication()
            .verify_step_up(c.bearer(
                v1::VerifyStepUpRequest {
                    code,
                    ..Default::default()
                },
                &user.session,
            ))
            .await;
        (
            OP,
            match answer {
                Ok(r) if r.get_ref().assurance_level() == v1::AssuranceLevel::SecondFactor => {
                    Ok(())
                }
                Ok(r) => wrong(&format!("assurance {:?}", r.get_ref().assurance_level())),
                Err(status) => Err(failure_of_status(&status)),
            },
        )
    }
}

/// An account with an authenticator app, for password + TOTP logins.
#[derive(Debug)]
pub struct TotpUser {
    email: String,
    totp: Totp,
    /// The lowest time step whose code the server has not yet accepted for this account.
    next_step: u64,
}

/// The accounts of the `login` scenario, shared by its workers. A TOTP code works once per
/// account and time step (replay protection), and the server accepts the steps just before
/// and after the current one, so an account can log in about three times per 30 s; the pool
/// hands out the account whose next usable step is oldest.
#[derive(Debug)]
pub struct TotpPool {
    users: Mutex<VecDeque<TotpUser>>,
    password: String,
    /// Times a worker found no account with a usable code (the pool is too small).
    pub starved: std::sync::atomic::AtomicU64,
}

impl TotpPool {
    /// Creates `n` accounts: members of an SSO-exempt organization, so that each set-up costs
    /// one password hash (creating the account) and a cheap SSO login, then an authenticator
    /// app enrolled and confirmed.
    pub async fn create(
        clients: &[Clients],
        names: &RunNames,
        n: usize,
        parallel: usize,
    ) -> SetupResult<Arc<Self>> {
        let first = clients.first().ok_or("no connection")?;
        let org = prepare::sso_organization(first, names).await?;
        let make = move |i: usize, c: Clients, names: RunNames| {
            let org = org.clone();
            async move {
                let email = names.email("login", i);
                let id = prepare::create_user(&c, &email, &names.password).await?;
                let session = prepare::sso_member_session(&c, &org, &id, &email).await?;
                let (totp, _, step) = prepare::enroll_totp(&c, &session).await?;
                Ok(TotpUser {
                    email,
                    totp,
                    next_step: step + 1,
                })
            }
        };
        let users = in_parallel(clients, names, n, parallel, make).await?;
        Ok(Arc::new(Self {
            users: Mutex::new(users.into()),
            password: names.password.clone(),
            starved: Default::default(),
        }))
    }

    /// An account and the code to log in with now, or None when every account has used
    /// every step the server would accept now.
    fn take(&self) -> Option<(String, String)> {
        let now = unix_now();
        let Ok(mut users) = self.users.lock() else {
            return None;
        };
        let current = now / 30;
        // Near the end of a step, the previous step may be out of the window by the time
        // the request arrives; near the start of one, the same for the next step.
        let into_step = now % 30;
        let lowest = if into_step >= 28 {
            current
        } else {
            current.saturating_sub(1)
        };
        let highest = if into_step <= 1 { current } else { current + 1 };
        let (position, step) = users.iter().enumerate().find_map(|(i, u)| {
            if u.next_step > highest {
                return None;
            }
            unambiguous_step(&u.totp, u.next_step.max(lowest), highest).map(|step| (i, step))
        })?;
        let mut user = users.remove(position)?;
        let code = user.totp.generate_step(step).to_string();
        user.next_step = step + 1;
        let email = user.email.clone();
        users.push_back(user);
        Some((email, code))
    }
}

/// The first step from `from` to `highest` whose code no other step within two of it shares.
/// Six digits repeat within a few steps about once in 500,000. The server takes a code as
/// the first step of its window that matches (the current one, then behind, then ahead), so
/// a shared code could be taken as another step: one already used (CODE_REPLAYED, refused
/// on purpose), or a later one than this pool records.
fn unambiguous_step(totp: &Totp, from: u64, highest: u64) -> Option<u64> {
    (from..=highest).find(|&step| {
        let code = totp.generate_step(step);
        (step.saturating_sub(2)..=step.saturating_add(2))
            .filter(|&other| other != step)
            .all(|other| totp.generate_step(other) != code)
    })
}

/// `login`: email + password, then the TOTP code, as a login front end does.
#[derive(Debug)]
pub struct LoginWorker {
    pool: Arc<TotpPool>,
}

impl LoginWorker {
    /// `n` workers sharing `pool`.
    pub fn many(pool: &Arc<TotpPool>, n: usize) -> Vec<Self> {
        (0..n)
            .map(|_| Self {
                pool: Arc::clone(pool),
            })
            .collect()
    }
}

impl Worker for LoginWorker {
    async fn step(&mut self, c: &Clients) -> Step {
        const OP: &str = "login";
        let Some((email, code)) = self.pool.take() else {
            self.pool
                .starved
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            // Nothing was sent: wait for the next time step rather than spin.
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            return (
                OP,
                Err("generator: no account with an unused code (raise --users)".to_owned()),
            );
        };
        (
            OP,
            login(c, &email, &self.pool.password, &code)
                .await
                .map(|_| ()),
        )
    }
}

/// Password, then `code`: the new session's token.
async fn login(c: &Clients, email: &str, password: &str, code: &str) -> Result<String, String> {
    let mut auth = c.authentication();
    let first = auth
        .authenticate(c.req(v1::AuthenticateRequest {
            credentials: Some(Credentials::Password(v1::PasswordCredentials {
                email: email.to_owned(),
                password: password.to_owned(),
            })),
            organization_id: String::new(),
            client_context: None,
            device_token: String::new(),
        }))
        .await
        .map_err(|e| format!("Authenticate: {}", failure_of_status(&e)))?
        .into_inner();
    let challenge = match first.result {
        Some(authenticate_response::Result::SecondFactorRequired(c)) => c.challenge_token,
        other => return wrong(&format!("Authenticate: {other:?}")).map(|()| String::new()),
    };
    let second = auth
        .verify_second_factor(c.req(v1::VerifySecondFactorRequest {
            challenge_token: challenge,
            code: code.to_owned(),
            webauthn_response_json: String::new(),
            client_context: None,
            remember_device: false,
        }))
        .await
        .map_err(|e| format!("VerifySecondFactor: {}", failure_of_status(&e)))?
        .into_inner();
    match second.result {
        Some(verify_second_factor_response::Result::Authenticated(s))
            if s.assurance_level() == v1::AssuranceLevel::SecondFactor && !s.token.is_empty() =>
        {
            Ok(s.token)
        }
        other => Err(format!("wrong answer: VerifySecondFactor: {other:?}")),
    }
}

/// `validate`: `ValidateSession` of the worker's own session, as every internal service calls
/// it on each user request.
#[derive(Debug)]
pub struct ValidateWorker {
    session: String,
}

impl ValidateWorker {
    /// One worker per account's session.
    pub fn many(users: &[HotpUser]) -> Vec<Self> {
        users
            .iter()
            .map(|u| Self {
                session: u.session.clone(),
            })
            .collect()
    }
}

impl Worker for ValidateWorker {
    async fn step(&mut self, c: &Clients) -> Step {
        let answer = c
            .sessions()
            .validate_session(c.req(v1::ValidateSessionRequest {
                token: self.session.clone(),
            }))
            .await;
        (
            "validate_session",
            match answer {
                Ok(r) if !r.get_ref().user_id.is_empty() && !r.get_ref().session_id.is_empty() => {
                    Ok(())
                }
                Ok(r) => wrong(&format!("ValidateSession: {:?}", r.get_ref())),
                Err(status) => Err(failure_of_status(&status)),
            },
        )
    }
}

/// The standard health check of the whole server: the prober of `health-under-load`, and the
/// floor of `health` and `ratios` (a gRPC call that touches no database).
#[derive(Clone, Copy, Debug, Default)]
pub struct HealthWorker;

impl Worker for HealthWorker {
    async fn step(&mut self, c: &Clients) -> Step {
        use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};
        let answer = c
            .health()
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await;
        (
            "health",
            match answer {
                Ok(r) if r.get_ref().status() == ServingStatus::Serving => Ok(()),
                Ok(r) => wrong(&format!("{:?}", r.get_ref().status())),
                Err(status) => Err(failure_of_status(&status)),
            },
        )
    }
}

/// `mixed`: what a day of traffic looks like, per worker and its own account (password and
/// an HOTP token): mostly session validations, then step-ups, logins and, rarely, adding and
/// removing an authenticator app.
#[derive(Debug)]
pub struct MixedWorker {
    user: HotpUser,
    password: String,
    /// Whether the session is at assurance 2 (after a step-up or a login with the token);
    /// the set-up's session is at 1.
    stepped_up: bool,
    /// xorshift state: a reproducible sequence of operations per worker.
    dice: u64,
}

/// The blend, in percent: ValidateSession, VerifyStepUp, login, enrollment.
pub const MIX: [(&str, u64); 4] = [
    ("validate_session", 70),
    ("step_up", 15),
    ("login", 10),
    ("enroll_app", 5),
];

impl MixedWorker {
    /// One worker per account.
    pub fn many(users: Vec<HotpUser>, password: &str) -> Vec<Self> {
        users
            .into_iter()
            .enumerate()
            .map(|(i, user)| Self {
                user,
                password: password.to_owned(),
                stepped_up: false,
                dice: 0x9E37_79B9_7F4A_7C15 ^ (i as u64 + 1),
            })
            .collect()
    }

    fn roll(&mut self) -> &'static str {
        self.dice ^= self.dice << 13;
        self.dice ^= self.dice >> 7;
        self.dice ^= self.dice << 17;
        let mut point = self.dice % 100;
        for (op, weight) in MIX {
            if point < weight {
                return op;
            }
            point -= weight;
        }
        "validate_session"
    }

    async fn validate(&mut self, c: &Clients) -> Result<(), String> {
        let r = c
            .sessions()
            .validate_session(c.req(v1::ValidateSessionRequest {
                token: self.user.session.clone(),
            }))
            .await
            .map_err(|e| failure_of_status(&e))?
            .into_inner();
        let expected = if self.stepped_up {
            v1::AssuranceLevel::SecondFactor
        } else {
            v1::AssuranceLevel::SingleFactor
        };
        if r.user_id.is_empty() || r.assurance_level() != expected {
            return wrong(&format!("ValidateSession: {r:?}"));
        }
        Ok(())
    }

    async fn step_up(&mut self, c: &Clients) -> Result<(), String> {
        let code = self.user.press();
        let r = c
            .authentication()
            .verify_step_up(c.bearer(
                v1::VerifyStepUpRequest {
                    code,
                    ..Default::default()
                },
                &self.user.session,
            ))
            .await
            .map_err(|e| failure_of_status(&e))?;
        if r.get_ref().assurance_level() != v1::AssuranceLevel::SecondFactor {
            return wrong("VerifyStepUp: assurance");
        }
        self.stepped_up = true;
        Ok(())
    }

    async fn log_in(&mut self, c: &Clients) -> Result<(), String> {
        let code = self.user.press();
        self.user.session = login(c, &self.user.email, &self.password, &code).await?;
        self.stepped_up = true;
        Ok(())
    }

    /// Adds an authenticator app (begin, QR code, confirm) and removes it again (with a code
    /// of the token as proof), so the account keeps one factor.
    async fn enroll(&mut self, c: &Clients) -> Result<(), String> {
        let (_, factor, _) = prepare::enroll_totp(c, &self.user.session).await?;
        let proof = self.user.press();
        c.enrollment()
            .remove_factor(c.bearer(
                v1::RemoveFactorRequest {
                    factor_id: factor,
                    proof,
                    webauthn_response_json: String::new(),
                },
                &self.user.session,
            ))
            .await
            .map_err(|e| format!("RemoveFactor: {}", failure_of_status(&e)))?;
        Ok(())
    }
}

impl Worker for MixedWorker {
    async fn step(&mut self, c: &Clients) -> Step {
        let mut op = self.roll();
        if op == "enroll_app" && !self.stepped_up {
            // Adding a second factor needs a session at assurance 2: step up first.
            op = "step_up";
        }
        let result = match op {
            "step_up" => self.step_up(c).await,
            "login" => self.log_in(c).await,
            "enroll_app" => self.enroll(c).await,
            _ => self.validate(c).await,
        };
        (op, result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_whose_code_another_nearby_step_shares_is_skipped() {
        // RFC 4226's secret: steps 910737 and 910738 share 911617, 153567 and 153569 share
        // 468457.
        let totp = Totp::new(
            otp_core::Secret::from_bytes(b"12345678901234567890".to_vec()),
            otp_core::TotpParams::default(),
        )
        .unwrap();
        assert_eq!(totp.generate_step(910_737), totp.generate_step(910_738));
        assert_eq!(totp.generate_step(153_567), totp.generate_step(153_569));
        assert_eq!(unambiguous_step(&totp, 910_736, 910_740), Some(910_736));
        assert_eq!(unambiguous_step(&totp, 910_737, 910_740), Some(910_739));
        assert_eq!(unambiguous_step(&totp, 910_737, 910_738), None);
        assert_eq!(unambiguous_step(&totp, 153_567, 153_570), Some(153_568));
        assert_eq!(unambiguous_step(&totp, 153_569, 153_570), Some(153_570));
    }

    #[test]
    fn tokens_are_partitioned_not_shared() {
        let seed = || otp_core::Secret::generate(otp_core::Algorithm::Sha1).unwrap();
        let tokens: Vec<HotpUser> = (0..10)
            .map(|i| HotpUser {
                email: format!("{i}"),
                session: String::new(),
                hotp: Hotp::new(seed(), otp_core::HotpParams::default()).unwrap(),
                next: 1,
            })
            .collect();
        let workers = OtpWorker::split(tokens, 4);
        let sizes: Vec<usize> = workers.iter().map(|w| w.tokens.len()).collect();
        assert_eq!(sizes, [3, 3, 2, 2]);
        let mut emails: Vec<&str> = workers
            .iter()
            .flat_map(|w| w.tokens.iter().map(|t| t.email.as_str()))
            .collect();
        emails.sort_unstable();
        emails.dedup();
        assert_eq!(emails.len(), 10);
        // More workers than tokens: no worker without a token.
        let seed_tokens = vec![HotpUser {
            email: "a".into(),
            session: String::new(),
            hotp: Hotp::new(seed(), otp_core::HotpParams::default()).unwrap(),
            next: 1,
        }];
        assert_eq!(OtpWorker::split(seed_tokens, 8).len(), 1);
    }

    #[test]
    fn presses_never_repeat_a_counter() {
        let seed = otp_core::Secret::generate(otp_core::Algorithm::Sha1).unwrap();
        let hotp = Hotp::new(seed, otp_core::HotpParams::default()).unwrap();
        let mut user = HotpUser {
            email: String::new(),
            session: String::new(),
            hotp: hotp.clone(),
            next: 1,
        };
        let codes: Vec<String> = (0..3).map(|_| user.press()).collect();
        let expected: Vec<String> = (1..4).map(|c| hotp.generate(c).to_string()).collect();
        assert_eq!(codes, expected);
    }

    #[test]
    fn the_pool_uses_each_step_once_per_account() {
        let totp = || {
            Totp::new(
                otp_core::Secret::generate(otp_core::Algorithm::Sha1).unwrap(),
                otp_core::TotpParams::default(),
            )
            .unwrap()
        };
        let current = unix_now() / 30;
        let pool = TotpPool {
            users: Mutex::new(
                (0..2)
                    .map(|i| TotpUser {
                        email: format!("{i}"),
                        totp: totp(),
                        next_step: current,
                    })
                    .collect(),
            ),
            password: String::new(),
            starved: Default::default(),
        };
        let mut used = std::collections::HashSet::new();
        let mut taken = 0;
        while let Some((email, code)) = pool.take() {
            assert!(used.insert((email, code)), "a code handed out twice");
            taken += 1;
            assert!(taken <= 4, "more codes than the window holds");
        }
        // Each account: the current step, and the next one unless the step is about to end
        // or just began.
        assert!((2..=4).contains(&taken), "{taken}");
    }

    #[test]
    fn the_mix_follows_its_weights() {
        let seed = otp_core::Secret::generate(otp_core::Algorithm::Sha1).unwrap();
        let user = HotpUser {
            email: String::new(),
            session: String::new(),
            hotp: Hotp::new(seed, otp_core::HotpParams::default()).unwrap(),
            next: 1,
        };
        let mut w = MixedWorker::many(vec![user], "").pop().unwrap();
        let mut counts = std::collections::HashMap::new();
        for _ in 0..100_000 {
            *counts.entry(w.roll()).or_insert(0u32) += 1;
        }
        for (op, weight) in MIX {
            let share = f64::from(counts[op]) / 1000.0;
            assert!(
                (share - weight as f64).abs() < 1.0,
                "{op}: {share}% for {weight}%"
            );
        }
    }
}

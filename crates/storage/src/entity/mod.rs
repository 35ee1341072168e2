//! sea-orm entities: one module per table. Repositories (`crate::repo`) are the public way
//! in; these are exposed for the server's read models and for tests.

pub mod attempt_counter;
pub mod audit_event;
pub mod enums;
pub mod factor;
pub mod login_challenge;
pub mod membership;
pub mod organization;
pub mod recovery_code;
pub mod session;
pub mod sms_code;
pub mod sms_counter;
pub mod sms_send;
pub mod trusted_device;
pub mod user;
pub mod webauthn_ceremony;

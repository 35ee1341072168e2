//! The one check every string of every request passes, whatever its field: no control
//! characters (NUL among them, which PostgreSQL refuses and SQLite stores) and a bounded
//! size. The implementations for the contract's messages are generated from the `.proto`
//! files (build.rs), so a new field or RPC cannot miss it; the server's codec runs it on
//! every request as it is decoded.

/// The most bytes one string field may hold. Each handler sets tighter limits per field; this
/// one keeps anything larger from reaching them.
pub const MAX_TEXT_BYTES: usize = 64 * 1024;

/// A field that failed the check: its path (`password.email`, `kinds[2]`) and why.
pub type Violation = (String, &'static str);

/// Where a value sits in a request, built on the stack as the check descends and turned into
/// text only for a violation.
#[derive(Debug)]
pub struct FieldPath<'a> {
    parent: Option<&'a FieldPath<'a>>,
    name: &'static str,
    index: Option<usize>,
}

impl<'a> FieldPath<'a> {
    /// The field `name` of the message at `parent` (`None`: the request itself).
    pub fn child(parent: Option<&'a FieldPath<'a>>, name: &'static str) -> Self {
        Self {
            parent,
            name,
            index: None,
        }
    }

    /// The path as a client names it: `password.email`, `kinds[2]`.
    pub fn render(&self) -> String {
        let mut out = self.parent.map(|p| p.render() + ".").unwrap_or_default();
        out.push_str(self.name);
        if let Some(index) = self.index {
            out.push_str(&format!("[{index}]"));
        }
        out
    }
}

/// Why `value` may not be stored, if it may not.
pub fn text_problem(value: &str) -> Option<&'static str> {
    if value.len() > MAX_TEXT_BYTES {
        Some("must be at most 65536 bytes")
    } else if value.chars().any(char::is_control) {
        Some("must not contain control characters (U+0000 to U+001F, U+007F to U+009F)")
    } else {
        None
    }
}

/// Values whose text can be checked: strings, the contract's messages (generated), and
/// options and lists of them.
pub trait TextFields {
    /// Appends a violation for every string at or under `at` that fails [`text_problem`].
    fn check_text(&self, at: Option<&FieldPath<'_>>, out: &mut Vec<Violation>);
}

impl TextFields for String {
    fn check_text(&self, at: Option<&FieldPath<'_>>, out: &mut Vec<Violation>) {
        if let Some(problem) = text_problem(self) {
            out.push((at.map(FieldPath::render).unwrap_or_default(), problem));
        }
    }
}

impl<T: TextFields> TextFields for Option<T> {
    fn check_text(&self, at: Option<&FieldPath<'_>>, out: &mut Vec<Violation>) {
        if let Some(value) = self {
            value.check_text(at, out);
        }
    }
}

impl<T: TextFields> TextFields for Vec<T> {
    fn check_text(&self, at: Option<&FieldPath<'_>>, out: &mut Vec<Violation>) {
        for (index, value) in self.iter().enumerate() {
            let path = at.map(|at| FieldPath {
                parent: at.parent,
                name: at.name,
                index: Some(index),
            });
            value.check_text(path.as_ref(), out);
        }
    }
}

impl TextFields for prost_types::Timestamp {
    fn check_text(&self, _at: Option<&FieldPath<'_>>, _out: &mut Vec<Violation>) {}
}

impl TextFields for prost_types::FieldMask {
    fn check_text(&self, at: Option<&FieldPath<'_>>, out: &mut Vec<Violation>) {
        self.paths
            .check_text(Some(&FieldPath::child(at, "paths")), out);
    }
}

/// A message as the server receives it: `CHECKED` for the contract's requests, whose text
/// the codec checks before a handler sees them; responses pass as they are.
pub trait Inbound: TextFields {
    /// Whether this is a request of the contract.
    const CHECKED: bool;
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

    use super::*;
    use crate::v1;

    fn violations<T: TextFields>(value: &T) -> Vec<Violation> {
        let mut out = Vec::new();
        value.check_text(None, &mut out);
        out
    }

    #[test]
    fn control_characters_and_size_are_refused_with_the_path() {
        assert_eq!(text_problem("ünïcødé ✓ 名前"), None);
        for bad in ["a\0b", "tab\there", "\n", "\u{7f}", "\u{85}"] {
            assert!(text_problem(bad).is_some(), "{bad:?}");
        }
        assert!(text_problem(&"a".repeat(MAX_TEXT_BYTES)).is_none());
        assert!(text_problem(&"a".repeat(MAX_TEXT_BYTES + 1)).is_some());

        let request = v1::AuthenticateRequest {
            credentials: Some(v1::authenticate_request::Credentials::Password(
                v1::PasswordCredentials {
                    email: "n\0@example.com".into(),
                    password: "fine".into(),
                },
            )),
            organization_id: "x\u{1b}".into(),
            client_context: None,
            device_token: String::new(),
        };
        let found: Vec<String> = violations(&request).into_iter().map(|v| v.0).collect();
        assert_eq!(found, ["organization_id", "password.email"]);

        let list = v1::ListAuditEventsRequest {
            kinds: vec!["ok".into(), "bad\r".into()],
            ..Default::default()
        };
        assert_eq!(violations(&list)[0].0, "kinds[1]");
        let policy = v1::UpdateMfaPolicyRequest {
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["mfa_required\0".into()],
            }),
            ..Default::default()
        };
        assert_eq!(violations(&policy)[0].0, "update_mask.paths[0]");
    }

    #[test]
    fn requests_are_checked_and_responses_are_not() {
        const { assert!(<v1::CreateUserRequest as Inbound>::CHECKED) };
        const { assert!(!<v1::CreateUserResponse as Inbound>::CHECKED) };
        assert_eq!(crate::METHODS.len(), crate::methods().count());
        assert!(crate::METHODS.contains(&("tollgate.v1", "UserService", "CreateUser")));
    }
}

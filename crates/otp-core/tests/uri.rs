//! `otpauth://` URIs: what we build, what apps and other products produce, and clear errors.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers may panic: that is a failed test"
)]

use otp_core::{
    Algorithm, Base32Error, Digits, Hotp, HotpParams, OtpAuthUri, OtpKind, Secret, Totp,
    TotpParams, UriError,
};

fn rfc_secret() -> Secret {
    Secret::from_bytes(b"12345678901234567890".to_vec())
}

#[test]
fn builds_the_key_uri_format_with_every_parameter() {
    let totp = Totp::new(rfc_secret(), TotpParams::default()).unwrap();
    let uri = OtpAuthUri::for_totp(&totp, Some("ACME Co"), "alice@example.com")
        .to_uri()
        .unwrap();
    assert_eq!(
        uri.as_str(),
        "otpauth://totp/ACME%20Co:alice%40example.com\
         ?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=ACME%20Co\
         &algorithm=SHA1&digits=6&period=30"
    );

    let hotp = Hotp::new(
        rfc_secret(),
        HotpParams {
            algorithm: Algorithm::Sha256,
            digits: Digits::EIGHT,
            ..HotpParams::default()
        },
    )
    .unwrap();
    let uri = OtpAuthUri::for_hotp(&hotp, 7, None, "bob")
        .to_uri()
        .unwrap();
    assert_eq!(
        uri.as_str(),
        "otpauth://hotp/bob?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ\
         &algorithm=SHA256&digits=8&counter=7"
    );
}

#[test]
fn a_colon_in_the_account_or_issuer_cannot_break_the_label() {
    let totp = Totp::new(rfc_secret(), TotpParams::default()).unwrap();
    let built = OtpAuthUri::for_totp(&totp, Some("A:B & C?"), "x:y/z#w%");
    let text = built.to_uri().unwrap();
    assert!(text.starts_with("otpauth://totp/A%3AB%20%26%20C%3F:x%3Ay%2Fz%23w%25?"));
    // The separator is the one literal colon; the encoded ones stay inside the parts.
    let parsed = OtpAuthUri::parse(&text).unwrap();
    assert_eq!(parsed.issuer.as_deref(), Some("A:B & C?"));
    assert_eq!(parsed.account, "x:y/z#w%");
    assert_eq!(parsed, built);
}

#[test]
fn parses_what_apps_and_other_products_produce() {
    // Google's documented example.
    let uri = OtpAuthUri::parse(
        "otpauth://totp/Example:alice@google.com?secret=JBSWY3DPEHPK3PXP&issuer=Example",
    )
    .unwrap();
    assert_eq!(uri.kind, OtpKind::Totp { period: 30 });
    assert_eq!(uri.issuer.as_deref(), Some("Example"));
    assert_eq!(uri.account, "alice@google.com");
    assert_eq!(uri.algorithm, Algorithm::Sha1);
    assert_eq!(uri.digits, Digits::SIX);
    assert_eq!(uri.secret, Secret::from_base32("JBSWY3DPEHPK3PXP").unwrap());

    // An encoded colon, a space after it, lower-case type and secret, extra parameters.
    let uri = OtpAuthUri::parse(
        "OTPAUTH://TOTP/Big%20Corp%3A%20john.doe%40email.com?secret=jbswy3dpehpk3pxp\
         &issuer=Big+Corp&algorithm=sha256&digits=8&period=60&image=https%3A%2F%2Fx%2Fl.png",
    )
    .unwrap();
    assert_eq!(uri.issuer.as_deref(), Some("Big Corp"));
    assert_eq!(uri.account, "john.doe@email.com");
    assert_eq!(uri.algorithm, Algorithm::Sha256);
    assert_eq!(uri.digits, Digits::EIGHT);
    assert_eq!(uri.kind, OtpKind::Totp { period: 60 });

    // Issuer only as a parameter; HOTP with a counter.
    let uri = OtpAuthUri::parse("otpauth://hotp/carol?secret=JBSWY3DPEHPK3PXP&counter=42&issuer=Z")
        .unwrap();
    assert_eq!(uri.kind, OtpKind::Hotp { counter: 42 });
    assert_eq!(uri.issuer.as_deref(), Some("Z"));
    assert_eq!(uri.account, "carol");
}

#[test]
fn a_parsed_uri_gives_the_same_codes_as_the_generator_it_came_from() {
    let totp = Totp::new(
        Secret::generate(Algorithm::Sha512).unwrap(),
        TotpParams {
            algorithm: Algorithm::Sha512,
            digits: Digits::SEVEN,
            period: 45,
            ..TotpParams::default()
        },
    )
    .unwrap();
    let text = OtpAuthUri::for_totp(&totp, Some("Tollgate"), "dave@example.com")
        .to_uri()
        .unwrap();
    let app = OtpAuthUri::parse(&text)
        .unwrap()
        .to_totp(TotpParams::default())
        .unwrap()
        .unwrap();
    for time in [0, 59, 1_700_000_000, 4_102_444_800] {
        assert_eq!(app.generate(time), totp.generate(time));
    }

    let hotp = Hotp::new(
        Secret::generate(Algorithm::Sha1).unwrap(),
        HotpParams::default(),
    )
    .unwrap();
    let text = OtpAuthUri::for_hotp(&hotp, 5, Some("T"), "e")
        .to_uri()
        .unwrap();
    let parsed = OtpAuthUri::parse(&text).unwrap();
    assert!(parsed.to_totp(TotpParams::default()).is_none());
    let (app, counter) = parsed.to_hotp(HotpParams::default()).unwrap().unwrap();
    assert_eq!(counter, 5);
    assert_eq!(app.generate(5), hotp.generate(5));
}

#[test]
fn parse_errors_name_the_part_that_is_wrong() {
    let cases: &[(&str, UriError)] = &[
        ("https://totp/a?secret=JBSWY3DPEHPK3PXP", UriError::Scheme),
        ("otpauth:/totp/a?secret=JBSWY3DPEHPK3PXP", UriError::Scheme),
        ("otpauth://motp/a?secret=JBSWY3DPEHPK3PXP", UriError::Type),
        ("otpauth://totp", UriError::Label("the label is missing")),
        (
            "otpauth://totp?secret=JBSWY3DPEHPK3PXP",
            UriError::Label("the label is missing"),
        ),
        ("otpauth://tot/a?secret=JBSWY3DPEHPK3PXP", UriError::Type),
        (
            "otpauth://totp/?secret=JBSWY3DPEHPK3PXP",
            UriError::Label("the account name is empty"),
        ),
        (
            "otpauth://totp/Issuer:?secret=JBSWY3DPEHPK3PXP",
            UriError::Label("the account name is empty"),
        ),
        (
            "otpauth://totp/:bob?secret=JBSWY3DPEHPK3PXP",
            UriError::Label("the issuer before ':' is empty"),
        ),
        (
            "otpauth://totp/a%FF?secret=JBSWY3DPEHPK3PXP",
            UriError::Label("not UTF-8 after percent-decoding"),
        ),
        ("otpauth://totp/a", UriError::MissingSecret),
        ("otpauth://totp/a?issuer=X", UriError::MissingSecret),
        (
            "otpauth://totp/a?secret=JBSWY3DPEHPK3PX1",
            UriError::Secret(Base32Error::InvalidCharacter { position: 15 }),
        ),
        (
            "otpauth://totp/a?secret=JBSWY3DPEHPK3PXP&secret=JBSWY3DPEHPK3PXP",
            UriError::Duplicate("secret"),
        ),
        (
            "otpauth://totp/a?secret=JBSWY3DPEHPK3PXP&algorithm=MD5",
            UriError::Algorithm,
        ),
        (
            "otpauth://totp/a?secret=JBSWY3DPEHPK3PXP&digits=10",
            UriError::Digits,
        ),
        (
            "otpauth://totp/a?secret=JBSWY3DPEHPK3PXP&digits=six",
            UriError::Digits,
        ),
        (
            "otpauth://totp/a?secret=JBSWY3DPEHPK3PXP&period=0",
            UriError::Period,
        ),
        (
            "otpauth://totp/a?secret=JBSWY3DPEHPK3PXP&period=-30",
            UriError::Period,
        ),
        (
            "otpauth://totp/a?secret=JBSWY3DPEHPK3PXP&counter=1",
            UriError::WrongTypeParameter("counter"),
        ),
        (
            "otpauth://hotp/a?secret=JBSWY3DPEHPK3PXP",
            UriError::Counter,
        ),
        (
            "otpauth://hotp/a?secret=JBSWY3DPEHPK3PXP&counter=18446744073709551616",
            UriError::Counter,
        ),
        (
            "otpauth://hotp/a?secret=JBSWY3DPEHPK3PXP&counter=1&period=30",
            UriError::WrongTypeParameter("period"),
        ),
        (
            "otpauth://totp/A:b?secret=JBSWY3DPEHPK3PXP&issuer=B",
            UriError::IssuerMismatch,
        ),
        (
            "otpauth://totp/a?secret=JBSWY3DPEHPK3PXP&issuer=%E0%A4%A",
            UriError::Query("issuer".to_owned()),
        ),
    ];
    for (uri, expected) in cases {
        assert_eq!(&OtpAuthUri::parse(uri).unwrap_err(), expected, "{uri}");
    }
}

#[test]
fn parameter_names_ignore_case_and_an_empty_issuer_says_nothing() {
    let uri =
        OtpAuthUri::parse("otpauth://totp/a?Secret=JBSWY3DPEHPK3PXP&DIGITS=8&issuer=").unwrap();
    assert_eq!(uri.digits, Digits::EIGHT);
    assert_eq!(uri.issuer, None);
    assert_eq!(
        OtpAuthUri::parse("otpauth://totp/a?secret=JBSWY3DPEHPK3PXP&SECRET=JBSWY3DPEHPK3PXP")
            .unwrap_err(),
        UriError::Duplicate("secret")
    );
}

#[test]
fn the_builder_refuses_labels_that_would_not_read_back() {
    let totp = Totp::new(rfc_secret(), TotpParams::default()).unwrap();
    let cases: &[(Option<&str>, &str, &str)] = &[
        (Some("ACME"), "", "the account name is empty"),
        (Some("ACME"), " bob", "the account name starts with a space"),
        (Some(""), "bob", "the issuer is empty"),
        (
            None,
            "a:b",
            "the account name contains ':' and there is no issuer",
        ),
    ];
    for &(issuer, account, reason) in cases {
        let uri = OtpAuthUri::for_totp(&totp, issuer, account);
        assert_eq!(
            uri.to_uri().unwrap_err(),
            UriError::Label(reason),
            "{issuer:?} {account:?}"
        );
    }
    // With an issuer, colons anywhere are fine: the separator is the one literal colon.
    let ok = OtpAuthUri::for_totp(&totp, Some("a:b"), "c:d");
    assert_eq!(OtpAuthUri::parse(&ok.to_uri().unwrap()).unwrap(), ok);
}

#[test]
fn long_labels_do_not_reallocate_the_buffer_holding_the_secret() {
    // `to_uri` debug-asserts that its buffer kept its first capacity; tests run with debug
    // assertions, so a reallocation would fail here.
    let totp = Totp::new(
        Secret::generate(Algorithm::Sha512).unwrap(),
        TotpParams {
            algorithm: Algorithm::Sha512,
            ..TotpParams::default()
        },
    )
    .unwrap();
    let long = "é:/?#[]@!$&'()*+,;= ".repeat(20);
    let uri = OtpAuthUri::for_totp(&totp, Some(&long), &format!("x{long}"));
    let text = uri.to_uri().unwrap();
    assert!(text.len() > 1_000);
    assert_eq!(OtpAuthUri::parse(&text).unwrap(), uri);
}

#[test]
fn a_malformed_pair_is_named_by_position_never_echoed() {
    let err = OtpAuthUri::parse("otpauth://totp/a?issuer=X&GEZDGNBVGY3TQOJQ").unwrap_err();
    assert_eq!(err, UriError::Query("number 2".to_owned()));
    assert!(!err.to_string().contains("GEZD"));
}

#[test]
fn debug_of_a_uri_hides_the_secret() {
    let uri = OtpAuthUri::parse("otpauth://totp/a?secret=JBSWY3DPEHPK3PXP").unwrap();
    let shown = format!("{uri:?}");
    assert!(shown.contains("Secret([REDACTED])"), "{shown}");
    assert!(!shown.contains("JBSW"), "{shown}");
}

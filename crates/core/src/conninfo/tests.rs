//! The masking of every connection-string form, by example and by property: whatever the
//! password and wherever it is, it is masked (the output is the string with `***` in its
//! place, so it says nothing of the password), and the rest is left as written. Each
//! generated string is read by tokio-postgres first, to be sure it carries that password.

use std::str::FromStr;

use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use proptest::prelude::*;

use super::*;

#[test]
fn every_form_is_masked() {
    let cases = [
        (
            "postgres://u:secret@h:5432/db",
            "postgres://u:***@h:5432/db",
        ),
        ("postgres://u@h/db", "postgres://u@h/db"),
        ("postgresql://u:@h/db", "postgresql://u:***@h/db"),
        (
            "postgres://u@h/db?password=secret&sslmode=disable",
            "postgres://u@h/db?password=***&sslmode=disable",
        ),
        (
            "postgres://u@h/db?sslmode=disable&PassWord=secret",
            "postgres://u@h/db?sslmode=disable&PassWord=***",
        ),
        (
            "postgres://u@h/db?pass%77ord=secret",
            "postgres://u@h/db?pass%77ord=***",
        ),
        // Not a URL tokio-postgres reads, but shown in messages: masked all the same.
        (
            "postgres://u:secret@h:notaport/db",
            "postgres://u:***@h:notaport/db",
        ),
        ("postgres://u:p@ss@h/db", "postgres://u:***@h/db"),
        ("postgres://u:a/b?c@h/db", "postgres://u:***@h/db"),
        ("mysql://u:secret@h/db", "mysql://u:***@h/db"),
        (
            "host=h password=secret user=u",
            "host=h password=*** user=u",
        ),
        (
            "host=h password = secret user=u",
            "host=h password = *** user=u",
        ),
        ("host=h password='a b' user=u", "host=h password=*** user=u"),
        (
            r"host=h password='a\' b' user=u",
            "host=h password=*** user=u",
        ),
        (r"host=h password=a\ b user=u", "host=h password=*** user=u"),
        ("password=secret", "password=***"),
        ("sslpassword=secret host=h", "sslpassword=*** host=h"),
        // Syntax errors: every `password=` is still masked.
        ("host=h junk password=secret", "host=h junk password=***"),
        ("host='h password=secret", "host='h password=***"),
        ("host=h password='unterminated", "host=h password=***"),
        // Not connection strings at all: left alone.
        (
            "password authentication failed",
            "password authentication failed",
        ),
        ("", ""),
    ];
    for (given, want) in cases {
        assert_eq!(mask_url(given), want, "{given}");
    }
}

#[test]
fn masked_passwords_are_recognised() {
    for masked in [
        "postgres://u:***@h/db",
        "postgres://u:%2A%2A%2A@h/db",
        "postgres://u@h/db?password=***",
        "host=h password=*** dbname=d",
        "host=h password='***'",
    ] {
        assert!(has_masked_password(masked), "{masked}");
    }
    for clear in [
        "postgres://u:secret@h/db",
        "postgres://u@h/db",
        "host=h password=x***",
        "host=h dbname=***",
    ] {
        assert!(!has_masked_password(clear), "{clear}");
    }
}

#[test]
fn echoed_passwords_are_scrubbed() {
    let url = "postgres://u:p%40ss@h/db?password=other";
    assert_eq!(
        scrub("FATAL: wrong password p@ss, p%40ss or other for u", url),
        "FATAL: wrong password ***, *** or *** for u"
    );
    assert_eq!(
        scrub("no password here", "postgres://u@h/db"),
        "no password here"
    );
    assert_eq!(scrub("got 'a b'", "host=h password='a b'"), "got ***");
}

/// The password tokio-postgres reads from `s` (the generators must be right).
fn tokio_password(s: &str) -> Vec<u8> {
    match tokio_postgres::Config::from_str(s) {
        Ok(c) => c.get_password().map(<[u8]>::to_vec).unwrap_or_default(),
        Err(e) => panic!("tokio-postgres cannot read {s:?}: {e}"),
    }
}

/// Any text, including what connection strings treat specially.
fn password() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[@:/?&#='\\\\ \t%a-z*]{0,16}",
        Just("password=x".to_owned()),
        Just("a password='b c".to_owned()),
    ]
}

fn enc(s: &str) -> String {
    utf8_percent_encode(s, NON_ALPHANUMERIC).to_string()
}

/// A `key=value` value tokio-postgres reads back as `s`: quoted, or not (then every white
/// space, quote and backslash escaped; an empty value must be quoted).
fn kv_value(s: &str, quoted: bool) -> String {
    let mut out = String::new();
    if quoted || s.is_empty() {
        out.push('\'');
        for c in s.chars() {
            if matches!(c, '\\' | '\'') {
                out.push('\\');
            }
            out.push(c);
        }
        out.push('\'');
    } else {
        for c in s.chars() {
            if matches!(c, '\\' | '\'') || c.is_whitespace() {
                out.push('\\');
            }
            out.push(c);
        }
    }
    out
}

/// Checks `make(password)` against `make("***")`: the password is masked, wherever it is and
/// whatever it is, and nothing else changes.
fn check(make: impl Fn(&str) -> String, pw: &str) -> Result<(), TestCaseError> {
    let given = make(pw);
    prop_assert_eq!(tokio_password(&given), pw.as_bytes().to_vec(), "{}", given);
    let masked = mask_url(&given);
    let want = make(MASK).replace(&enc(MASK), MASK).replace("'***'", MASK);
    prop_assert_eq!(&masked, &want, "{}", given);
    if pw.chars().count() >= 4 && !want.contains(pw) {
        prop_assert!(!masked.contains(pw));
    }
    prop_assert_eq!(has_masked_password(&given), pw == MASK, "{}", given);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn url_user_info(pw in password(), user in "[a-z][a-z0-9_]{0,8}", port in 1u16..,
                     scheme in prop_oneof![Just("postgres"), Just("postgresql")]) {
        check(|p| format!("{scheme}://{user}:{}@db.example:{port}/mydb?sslmode=disable", enc(p)), &pw)?;
    }

    #[test]
    fn url_user_info_unencoded(pw in "[^@]{0,16}", user in "[a-z]{1,8}") {
        // tokio-postgres takes the password as written up to the first `@` (decoding `%xx`
        // sequences): what it would send is masked, whatever it contains.
        let given = format!("postgres://{user}:{pw}@h:5432/db?application_name=x");
        prop_assert_eq!(mask_url(&given), format!("postgres://{user}:***@h:5432/db?application_name=x"));
    }

    #[test]
    fn url_query_parameter(pw in password(), before in 0usize..3, after in 0usize..3,
                           key in prop_oneof![Just("password"), Just("pass%77ord"), Just("%70assword")]) {
        let others = ["sslmode=disable", "application_name=app", "connect_timeout=5"];
        check(|p| {
            let mut params: Vec<String> = others[..before].iter().map(|s| s.to_string()).collect();
            params.push(format!("{key}={}", enc(p)));
            params.extend(others[3 - after..].iter().map(|s| s.to_string()));
            format!("postgres://u@h:5432/db?{}", params.join("&"))
        }, &pw)?;
    }

    #[test]
    fn key_value(pw in password(), at in 0usize..=4, quoted: bool,
                 eq in prop_oneof![Just("="), Just(" = "), Just("= "), Just(" =")],
                 sep in prop_oneof![Just(" "), Just("  "), Just("\t"), Just(" \n ")]) {
        check(|p| {
            let mut params: Vec<String> =
                ["host=h", "port=5432", "user=u", "dbname=d"].iter().map(|s| s.to_string()).collect();
            let value = if p == MASK { MASK.to_owned() } else { kv_value(p, quoted) };
            params.insert(at, format!("password{eq}{value}"));
            params.join(sep)
        }, &pw)?;
    }

    #[test]
    fn both_in_one_url(pw in password(), pw2 in password()) {
        let given = format!("postgres://u:{}@h/db?password={}", enc(&pw), enc(&pw2));
        prop_assert_eq!(mask_url(&given), "postgres://u:***@h/db?password=***");
    }

    #[test]
    fn a_password_after_any_text_is_masked(before in "[a-z '\\\\=@/?\t]{0,24}",
                                           after in "[a-z '\\\\=]{0,12}",
                                           pw in "[A-Z0-9]{6,12}",
                                           eq in prop_oneof![Just("="), Just(" = ")]) {
        // Whatever the text around it (unterminated quotes, escapes, stray `=`), a
        // `password=` in a string that is not a URL (no `scheme://` at its start) has its
        // value masked.
        let given = format!("{before} password{eq}{pw} {after}");
        let masked = mask_url(&given);
        prop_assert!(!masked.contains(&pw), "{} -> {}", given, masked);
    }

    #[test]
    fn masking_never_panics(s in any::<String>(), url in "[a-z:/@?&=%' ]{0,30}") {
        let _ = mask_url(&s);
        let _ = has_masked_password(&s);
        let _ = scrub(&s, &url);
        let _ = mask_url(&url);
    }
}

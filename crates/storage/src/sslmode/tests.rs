use std::str::FromStr;

use proptest::prelude::*;
use tokio_postgres::Config;

use super::*;

fn no_env(_: &str) -> Option<String> {
    None
}

fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
    move |k| {
        pairs
            .iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| (*v).to_owned())
    }
}

#[test]
fn url_parameters_are_taken_out() {
    let s = split(
        "postgres://u:pw@h:5433/db?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&application_name=a",
        no_env,
    )
    .unwrap();
    assert_eq!(s.rest, "postgres://u:pw@h:5433/db?application_name=a");
    assert_eq!(s.tls.mode, SslMode::VerifyFull);
    assert_eq!(s.tls.root_cert.as_deref(), Some("/etc/ca.pem".as_ref()));
    assert_eq!(s.tls.verify(), Verify::ChainAndName);
    assert_eq!(s.tls.mode_notation(), "sslmode=verify-full");

    let s = split("postgresql://h/db?sslmode=require", no_env).unwrap();
    assert_eq!(s.rest, "postgresql://h/db");
    assert_eq!(s.tls.verify(), Verify::Nothing);
    assert_eq!(
        s.tls.driver_mode(),
        tokio_postgres::config::SslMode::Require
    );

    // A `?` in the password is not the query's start; the last value wins.
    let s = split(
        "postgres://u:p?w@h/db?sslmode=disable&x=1&sslmode=verify-ca&sslrootcert=ca.pem",
        no_env,
    )
    .unwrap();
    assert_eq!(s.rest, "postgres://u:p?w@h/db?x=1");
    assert_eq!(s.tls.mode, SslMode::VerifyCa);
    assert_eq!(s.tls.verify(), Verify::Chain);

    // A percent-encoded key is the same key.
    let s = split("postgres://h/db?ssl%6dode=require", no_env).unwrap();
    assert_eq!(
        (s.rest.as_str(), s.tls.mode),
        ("postgres://h/db", SslMode::Require)
    );

    // Nothing of ours: the string as it is.
    for same in [
        "postgres://h/db",
        "postgres://h/db?",
        "postgres://h/db?a=1&b",
    ] {
        assert_eq!(split(same, no_env).unwrap().rest, same);
    }
}

#[test]
fn key_value_parameters_are_taken_out() {
    let s = split(
        "host=h sslmode = 'verify-full' sslrootcert='/my ca\\'s.pem' dbname=d",
        no_env,
    )
    .unwrap();
    assert_eq!(s.tls.mode, SslMode::VerifyFull);
    assert_eq!(s.tls.root_cert.as_deref(), Some("/my ca's.pem".as_ref()));
    let c = Config::from_str(&s.rest).unwrap();
    assert_eq!(c.get_dbname(), Some("d"));
    assert!(!s.rest.contains("ssl"), "{}", s.rest);

    let s = split("sslmode=require", no_env).unwrap();
    assert_eq!(s.rest.trim(), "");
    assert_eq!(s.tls.mode, SslMode::Require);

    // The grammar fails: left whole, for tokio-postgres to refuse.
    for bad in ["host=h sslmode", "host='h sslmode=require", "sslmode= "] {
        let s = split(bad, no_env).unwrap();
        assert_eq!(s.rest, bad);
        assert_eq!(s.tls, TlsSettings::default());
    }
}

#[test]
fn the_environment_gives_the_defaults() {
    let env = env_of(&[("PGSSLMODE", "verify-ca"), ("PGSSLROOTCERT", "/env/ca.pem")]);
    let s = split("postgres://h/db", &env).unwrap();
    assert_eq!(s.tls.mode, SslMode::VerifyCa);
    assert_eq!(s.tls.mode_notation(), "PGSSLMODE=verify-ca");
    assert_eq!(s.tls.root_cert_notation(), "PGSSLROOTCERT /env/ca.pem");
    // The string wins over the environment.
    let s = split("postgres://h/db?sslmode=disable&sslrootcert=mine.pem", &env).unwrap();
    assert_eq!(s.tls.mode, SslMode::Disable);
    assert_eq!(s.tls.root_cert_notation(), "sslrootcert mine.pem");
    // libpq's default: prefer, nothing checked.
    let s = split("postgres://h/db", no_env).unwrap();
    assert_eq!(s.tls.mode, SslMode::Prefer);
    assert_eq!(s.tls.verify(), Verify::Nothing);
    assert_eq!(s.tls.mode_notation(), "sslmode=prefer, the default");
    // require with a root certificate checks the chain, as libpq does; prefer never checks.
    let env = env_of(&[("PGSSLROOTCERT", "/env/ca.pem")]);
    assert_eq!(
        split("sslmode=require", &env).unwrap().tls.verify(),
        Verify::Chain
    );
    assert_eq!(
        split("sslmode=prefer", &env).unwrap().tls.verify(),
        Verify::Nothing
    );
    // Empty values are unset.
    let env = env_of(&[("PGSSLMODE", ""), ("PGSSLROOTCERT", "")]);
    assert_eq!(split("host=h", &env).unwrap().tls, TlsSettings::default());
}

#[test]
fn bad_settings_say_which_and_never_quote_the_string() {
    for (s, env, why) in [
        (
            "postgres://u:secret@h/db?sslmode=allow",
            no_env as fn(&str) -> Option<String>,
            "sslmode=allow is not supported",
        ),
        (
            "postgres://u:secret@h/db?sslmode=strict",
            no_env,
            "sslmode=\"strict\" is not a TLS mode",
        ),
        ("password=secret sslmode=", no_env, ""),
        (
            "password=secret sslmode=verify-full",
            no_env,
            "sslmode=verify-full needs the CA certificates",
        ),
        (
            "postgres://u:secret@h/db?sslmode=verify-ca&sslrootcert=",
            no_env,
            "sslmode=verify-ca needs",
        ),
        (
            "postgres://u:secret@h/db?sslmode=require&sslrootcert=system",
            no_env,
            "sslrootcert=system",
        ),
    ] {
        match split(s, env) {
            Ok(split) if why.is_empty() => assert_eq!(split.rest, s),
            Ok(split) => panic!("{s} accepted: {split:?}"),
            Err(e) => {
                assert!(e.contains(why), "{s}: {e}");
                assert!(!e.contains("secret"), "{s}: {e}");
            }
        }
    }
    let env = env_of(&[("PGSSLMODE", "verify-full")]);
    let e = split("host=h", &env).unwrap_err();
    assert!(e.contains("PGSSLMODE=verify-full needs"), "{e}");
    let env = env_of(&[("PGSSLMODE", "nope")]);
    let e = split("host=h", &env).unwrap_err();
    assert!(e.contains("PGSSLMODE=\"nope\""), "{e}");
}

/// Parameters other than ours: names tokio-postgres reads, values of any text.
fn other_param() -> impl Strategy<Value = (&'static str, String)> {
    (
        prop::sample::select(vec![
            "user",
            "dbname",
            "application_name",
            "options",
            "host",
        ]),
        "[a-zA-Z0-9 '\\\\&=%?@/é_-]{1,12}",
    )
}

#[derive(Debug, Clone)]
enum Param {
    Other(&'static str, String),
    Mode(SslMode),
    Root(String),
}

fn param() -> impl Strategy<Value = Param> {
    prop_oneof![
        3 => other_param().prop_map(|(k, v)| Param::Other(k, v)),
        1 => prop::sample::select(vec![
            SslMode::Disable,
            SslMode::Prefer,
            SslMode::Require,
            SslMode::VerifyCa,
            SslMode::VerifyFull
        ])
        .prop_map(Param::Mode),
        1 => "[a-zA-Z0-9 '\\\\&=%/é._-]{1,12}".prop_map(Param::Root),
    ]
}

fn kv_value(v: &str) -> String {
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
}

fn url_value(v: &str) -> String {
    percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC).to_string()
}

fn build(params: &[Param], url: bool, ours: bool) -> String {
    let pairs: Vec<(String, String)> = params
        .iter()
        .filter_map(|p| match p {
            Param::Other(k, v) => Some(((*k).to_owned(), v.clone())),
            Param::Mode(m) if ours => Some(("sslmode".to_owned(), m.as_str().to_owned())),
            Param::Root(r) if ours => Some(("sslrootcert".to_owned(), r.clone())),
            _ => None,
        })
        .collect();
    if url {
        let q: Vec<String> = pairs
            .iter()
            .map(|(k, v)| format!("{k}={}", url_value(v)))
            .collect();
        if q.is_empty() {
            "postgres://u:p%3Fw@h/db".to_owned()
        } else {
            format!("postgres://u:p%3Fw@h/db?{}", q.join("&"))
        }
    } else {
        let q: Vec<String> = pairs
            .iter()
            .map(|(k, v)| format!("{k}={}", kv_value(v)))
            .collect();
        q.join(" ")
    }
}

proptest! {
    /// tokio-postgres reads the rest as it reads the string without our parameters, and the
    /// settings are the last of each.
    #[test]
    fn the_rest_reads_as_the_string_without_tls_settings(
        params in prop::collection::vec(param(), 0..8),
        url in any::<bool>(),
    ) {
        let with = build(&params, url, true);
        let without = build(&params, url, false);
        let mode = params.iter().rev().find_map(|p| match p { Param::Mode(m) => Some(*m), _ => None });
        let root = params.iter().rev().find_map(|p| match p { Param::Root(r) => Some(r.clone()), _ => None });
        match split(&with, no_env) {
            Ok(s) => {
                prop_assert_eq!(s.tls.mode, mode.unwrap_or(SslMode::Prefer));
                prop_assert_eq!(s.tls.root_cert, root.map(PathBuf::from));
                let a = Config::from_str(&s.rest).map_err(|e| e.to_string());
                let b = Config::from_str(&without).map_err(|e| e.to_string());
                prop_assert_eq!(a.is_ok(), b.is_ok());
                if let (Ok(a), Ok(b)) = (a, b) {
                    prop_assert!(a == b, "{} vs {}", s.rest, without);
                }
            }
            Err(e) => {
                // Only a verify mode without a root certificate is refused here.
                prop_assert!(matches!(mode, Some(SslMode::VerifyCa | SslMode::VerifyFull)), "{}", e);
                prop_assert!(root.is_none(), "{}", e);
            }
        }
    }

    /// Any text: never a panic; a string with no TLS parameter comes back as it is.
    #[test]
    fn any_text_is_split_without_panic(s in ".{0,40}", url in any::<bool>()) {
        let s = if url { format!("postgres://{s}") } else { s };
        if let Ok(split) = split(&s, no_env) {
            if !s.contains("ssl") {
                prop_assert_eq!(split.rest, s);
            }
        }
    }
}

//! Plugin registrations (`POST /v1/plugins`, go-mezzanine's trigger plugins): the body
//! checked field by field, and the endpoint a node will call: an `http` or `https` URL with a
//! host, no user name or password, on a host `PLUGIN_HOSTS_ALLOWED` allows ([`crate::hosts`]).

use serde_json::{Map, Value};
use url::{Host, Url};
use uuid::Uuid;

use crate::cell::{check_column_name, check_schema_url, parse_row_key, MAX_BODY_FAULTS};
use crate::hosts::{HostsAllowed, Target};
use crate::FieldError;

/// The setting that bounds the hosts plugin endpoints may name.
pub const PLUGIN_HOSTS_ALLOWED: &str = "PLUGIN_HOSTS_ALLOWED";
/// Longest plugin name, in UTF-8 bytes.
pub const MAX_PLUGIN_NAME_BYTES: usize = 255;
/// Longest endpoint, in bytes.
pub const MAX_ENDPOINT_BYTES: usize = 2048;
/// Most columns one plugin subscribes to.
pub const MAX_SUBSCRIBED_COLUMNS: usize = 1000;

/// A checked registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPlugin {
    pub name: String,
    /// As the client wrote it (answers give it back unchanged).
    pub endpoint: String,
    pub subscribed_columns: Vec<String>,
}

impl NewPlugin {
    /// Checks a registration body (`{"name", "endpoint", "subscribed_columns"}`, and
    /// `$schema`, ignored), every fault named under `prefix` (`body.endpoint`). Unknown
    /// properties are refused, as in the cell API.
    pub fn from_json(
        v: Value,
        prefix: &str,
        hosts: &HostsAllowed,
    ) -> Result<NewPlugin, Vec<FieldError>> {
        match v {
            Value::Object(obj) => from_object(obj, prefix, hosts),
            other => Err(vec![FieldError::new(
                prefix,
                "must be a JSON object with name, endpoint and subscribed_columns",
                Some(other),
            )]),
        }
    }
}

fn from_object(
    obj: Map<String, Value>,
    prefix: &str,
    hosts: &HostsAllowed,
) -> Result<NewPlugin, Vec<FieldError>> {
    let loc = |f: &str| format!("{prefix}.{f}");
    let mut errors = Vec::new();
    for (k, v) in &obj {
        match k.as_str() {
            "name" | "endpoint" | "subscribed_columns" => {}
            "$schema" => errors.extend(check_schema_url(v, &loc(k)).err()),
            _ => errors.push(FieldError::new(
                loc(k),
                "unexpected property",
                Some(v.clone()),
            )),
        }
    }
    let name = match obj.get("name") {
        None => {
            errors.push(FieldError::new(loc("name"), "is required", None));
            None
        }
        Some(Value::String(s)) => check_name(s, &loc("name"))
            .map_err(|e| errors.push(e))
            .ok()
            .map(|()| s.clone()),
        Some(other) => {
            errors.push(FieldError::new(
                loc("name"),
                "must be a string",
                Some(other.clone()),
            ));
            None
        }
    };
    let endpoint = match obj.get("endpoint") {
        None => {
            errors.push(FieldError::new(loc("endpoint"), "is required", None));
            None
        }
        Some(Value::String(s)) => check_endpoint(s, &loc("endpoint"), hosts)
            .map_err(|e| errors.push(e))
            .ok()
            .map(|_| s.clone()),
        Some(other) => {
            errors.push(FieldError::new(
                loc("endpoint"),
                "must be a string holding an http or https URL",
                Some(other.clone()),
            ));
            None
        }
    };
    let columns = match obj.get("subscribed_columns") {
        None => {
            errors.push(FieldError::new(
                loc("subscribed_columns"),
                "is required",
                None,
            ));
            None
        }
        Some(Value::Array(items)) => {
            { check_columns(items, &loc("subscribed_columns")).map_err(|e| errors.extend(e)) }.ok()
        }
        Some(other) => {
            errors.push(FieldError::new(
                loc("subscribed_columns"),
                "must be an array of column names",
                Some(other.clone()),
            ));
            None
        }
    };
    match (name, endpoint, columns) {
        (Some(name), Some(endpoint), Some(subscribed_columns)) if errors.is_empty() => {
            Ok(NewPlugin {
                name,
                endpoint,
                subscribed_columns,
            })
        }
        _ => Err(errors),
    }
}

/// A plugin's name: 1 to [`MAX_PLUGIN_NAME_BYTES`] bytes of UTF-8 without NUL.
pub fn check_name(s: &str, location: &str) -> Result<(), FieldError> {
    crate::cell::check_name_text(s, location, MAX_PLUGIN_NAME_BYTES, false)
}

fn check_columns(items: &[Value], location: &str) -> Result<Vec<String>, Vec<FieldError>> {
    if items.is_empty() {
        return Err(vec![FieldError::new(
            location,
            "must name at least one column",
            Some(Value::Array(Vec::new())),
        )]);
    }
    if items.len() > MAX_SUBSCRIBED_COLUMNS {
        return Err(vec![FieldError::new(
            location,
            format!(
                "must name at most {MAX_SUBSCRIBED_COLUMNS} columns (got {})",
                items.len()
            ),
            None,
        )]);
    }
    let mut errors = Vec::new();
    let mut columns = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let at = format!("{location}[{i}]");
        match item {
            Value::String(s) => match check_column_name(s, &at) {
                Ok(()) => columns.push(s.clone()),
                Err(e) => errors.push(e),
            },
            other => errors.push(FieldError::new(
                at,
                "must be a string (a column name)",
                Some(other.clone()),
            )),
        }
        if errors.len() >= MAX_BODY_FAULTS {
            break;
        }
    }
    if errors.is_empty() {
        Ok(columns)
    } else {
        Err(errors)
    }
}

/// Checks an endpoint: an `http` or `https` URL with a host, without a user name or password
/// (every reader of `/v1/plugins` sees endpoints), at most [`MAX_ENDPOINT_BYTES`] long,
/// whose host and port `hosts` (`PLUGIN_HOSTS_ALLOWED`) allows. Returns it parsed.
pub fn check_endpoint(s: &str, location: &str, hosts: &HostsAllowed) -> Result<Url, FieldError> {
    let fault = |why: String| FieldError::new(location, why, Some(Value::String(s.to_owned())));
    if s.is_empty() {
        return Err(fault("must not be empty".to_owned()));
    }
    if s.len() > MAX_ENDPOINT_BYTES {
        return Err(FieldError::new(
            location,
            format!(
                "must be at most {MAX_ENDPOINT_BYTES} bytes (got {})",
                s.len()
            ),
            None,
        ));
    }
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(fault(
            "must not contain spaces or control characters".to_owned(),
        ));
    }
    let url = Url::parse(s).map_err(|e| {
        fault(format!(
            "is not a URL ({e}): give an http or https URL such as http://billing.internal:9000/rpc"
        ))
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(fault(format!(
            "has the scheme {:?}: only http and https endpoints can be called",
            url.scheme()
        )));
    }
    if !url.username().is_empty() || url.password().is_some() {
        // The value is not echoed: it holds a password.
        return Err(FieldError::new(
            location,
            "must not carry a user name or password: every caller that may read sees the \
             endpoints of /v1/plugins",
            None,
        ));
    }
    let host = match url.host() {
        Some(Host::Domain(d)) if !d.is_empty() => d.to_owned(),
        Some(Host::Ipv4(a)) => a.to_string(),
        Some(Host::Ipv6(a)) => a.to_string(),
        _ => return Err(fault("has no host".to_owned())),
    };
    let port = url
        .port_or_known_default()
        .ok_or_else(|| fault("has no port".to_owned()))?;
    hosts
        .check(&Target::Tcp { host, port })
        .map_err(|refused| fault(refused.0))?;
    Ok(url)
}

/// A plugin id from a path (`path.plugin_id`).
pub fn parse_plugin_id(s: &str, location: &str) -> Result<Uuid, FieldError> {
    parse_row_key(s, location)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn open() -> HostsAllowed {
        HostsAllowed::default_for(PLUGIN_HOSTS_ALLOWED)
    }

    fn faults(v: Value) -> Vec<(String, String)> {
        match NewPlugin::from_json(v, "body", &open()) {
            Ok(p) => panic!("accepted: {p:?}"),
            Err(e) => e.into_iter().map(|e| (e.location, e.message)).collect(),
        }
    }

    #[test]
    fn a_good_body_is_kept_as_written() {
        let p = NewPlugin::from_json(
            json!({"$schema": "http://x/schemas/RegisterPluginBody.json", "name": "billing",
                   "endpoint": "http://localhost:9000/rpc", "subscribed_columns": ["profile", "profile"]}),
            "body",
            &open(),
        )
        .unwrap();
        assert_eq!(p.name, "billing");
        assert_eq!(p.endpoint, "http://localhost:9000/rpc");
        assert_eq!(p.subscribed_columns, ["profile", "profile"]);
    }

    #[test]
    fn every_fault_is_named() {
        let f = faults(json!({"extra": 1, "subscribed_columns": []}));
        let locs: Vec<&str> = f.iter().map(|(l, _)| l.as_str()).collect();
        assert_eq!(
            locs,
            [
                "body.extra",
                "body.name",
                "body.endpoint",
                "body.subscribed_columns"
            ],
            "{f:?}"
        );
        let f = faults(
            json!({"name": "", "endpoint": 7, "subscribed_columns": ["ok", "", 3, "a\u{0}"]}),
        );
        let locs: Vec<&str> = f.iter().map(|(l, _)| l.as_str()).collect();
        assert_eq!(
            locs,
            [
                "body.name",
                "body.endpoint",
                "body.subscribed_columns[1]",
                "body.subscribed_columns[2]",
                "body.subscribed_columns[3]"
            ],
            "{f:?}"
        );
        assert_eq!(faults(json!([1]))[0].0, "body");
        assert_eq!(
            faults(json!({"name": "a", "endpoint": "http://h/", "subscribed_columns": "c"}))[0].0,
            "body.subscribed_columns"
        );
        let many: Vec<Value> = (0..50).map(|_| json!("")).collect();
        let f = faults(json!({"name": "a", "endpoint": "http://h/", "subscribed_columns": many}));
        assert_eq!(f.len(), MAX_BODY_FAULTS);
    }

    #[test]
    fn endpoints_are_http_urls_with_a_host() {
        let hosts = open();
        for good in [
            "http://localhost:9000/rpc",
            "https://billing.internal/rpc?x=1",
            "HTTP://127.0.0.1:8080",
            "http://[::1]:9000/rpc",
        ] {
            assert!(check_endpoint(good, "e", &hosts).is_ok(), "{good}");
        }
        for (bad, why) in [
            ("", "empty"),
            ("localhost:9000/rpc", "scheme \"localhost\""),
            ("billing/rpc", "not a URL"),
            ("ftp://h/rpc", "scheme \"ftp\""),
            ("file:///etc/passwd", "scheme \"file\""),
            ("unix:/run/x.sock", "scheme \"unix\""),
            ("http://", "not a URL"),
            ("http:// h/", "spaces"),
            (" http://h/", "spaces"),
            ("http://h/\n", "control"),
            ("http://169.254.169.254/latest", "link-local"),
            ("http://2852039166/", "link-local"),
            ("http://metadata.google.internal/", "metadata"),
            ("http://[fe80::1]/", "link-local"),
        ] {
            let e = check_endpoint(bad, "body.endpoint", &hosts).unwrap_err();
            assert_eq!(e.location, "body.endpoint");
            assert!(e.message.contains(why), "{bad}: {}", e.message);
        }
        let e = check_endpoint("http://u:secret@h/", "e", &hosts).unwrap_err();
        assert!(e.message.contains("password") && e.value.is_none(), "{e:?}");
        let long = format!("http://h/{}", "a".repeat(MAX_ENDPOINT_BYTES));
        assert!(check_endpoint(&long, "e", &hosts).is_err());
    }

    #[test]
    fn the_allow_list_names_its_setting() {
        let hosts =
            HostsAllowed::parse_for("*.hooks.internal:443, 10.0.0.0/8", PLUGIN_HOSTS_ALLOWED)
                .unwrap();
        assert!(check_endpoint("https://a.hooks.internal/rpc", "e", &hosts).is_ok());
        assert!(check_endpoint("http://10.1.2.3:9000/", "e", &hosts).is_ok());
        let e = check_endpoint("http://a.hooks.internal/rpc", "e", &hosts).unwrap_err();
        assert!(e.message.contains("PLUGIN_HOSTS_ALLOWED"), "{}", e.message);
        let e = check_endpoint("http://localhost:9000/", "e", &hosts).unwrap_err();
        assert!(
            e.message.contains("not allowed by PLUGIN_HOSTS_ALLOWED"),
            "{}",
            e.message
        );
        let e = HostsAllowed::parse_for("db 1!", PLUGIN_HOSTS_ALLOWED).unwrap_err();
        assert!(e.to_string().starts_with("PLUGIN_HOSTS_ALLOWED: "), "{e}");
    }

    #[test]
    fn ids_are_uuids() {
        assert!(parse_plugin_id("550e8400-e29b-41d4-a716-446655440000", "p").is_ok());
        let e = parse_plugin_id("not-a-uuid", "path.plugin_id").unwrap_err();
        assert_eq!(e.location, "path.plugin_id");
    }

    proptest! {
        /// Whatever a client sends, the check answers (no panic), and what it accepts is an
        /// http(s) URL with a host.
        #[test]
        fn any_endpoint_is_judged(s in "\\PC{0,40}", scheme in "(http|https|ftp|)(://)?") {
            let text = format!("{scheme}{s}");
            if let Ok(u) = check_endpoint(&text, "e", &open()) {
                prop_assert!(u.scheme() == "http" || u.scheme() == "https");
                prop_assert!(u.host().is_some());
                prop_assert!(u.username().is_empty() && u.password().is_none());
            }
        }
    }
}

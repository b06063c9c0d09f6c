//! `BACKEND_HOSTS_ALLOWED`: the hosts `backend add` may make a node connect to; and
//! `PLUGIN_HOSTS_ALLOWED`, the hosts a plugin's endpoint may name (same entries, same default,
//! read by [`HostsAllowed::parse_for`]).
//!
//! A list of entries separated by commas or white space:
//!
//! | entry | allows |
//! |---|---|
//! | `db1.internal` | that host name (any case, a trailing dot ignored), never resolved |
//! | `*.db.internal` | any name ending in `.db.internal` |
//! | `10.0.0.7`, `fd00::7` | that address |
//! | `10.0.0.0/8`, `fd00::/8` | any address of that network |
//! | `*` | any host name or address (a port still applies) |
//! | `/var/run/postgresql` | Unix-domain sockets in that directory |
//! | any of the above with `:PORT` | only that port (IPv6: `[fd00::7]:5432`, `[fd00::/8]:5432`) |
//!
//! Names are matched as written: a name is never resolved to check it (so a name cannot pass
//! for an address, and nothing is asked of DNS before the refusal). Addresses are read as the
//! system's resolver reads them, so `2852039166` or `0xa9.0xfe.0xa9.0xfe` is 169.254.169.254.
//!
//! Without the setting any host is allowed, except link-local and cloud metadata addresses
//! (169.254.0.0/16, fe80::/10, fd00:ec2::254, `metadata.google.internal`), which are
//! allowed only by an entry of their own (`169.254.0.0/16` or narrower, or the name): a
//! broader one (`*`, `0.0.0.0/0`) does not open them.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::str::FromStr;

use ipnet::IpNet;

/// Where a connection string makes a node connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A TCP host, as written (a name or an address), and its port.
    Tcp { host: String, port: u16 },
    /// A Unix-domain socket in directory `dir`, named after `port`.
    Socket { dir: String, port: u16 },
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Tcp { host, port } if host.contains(':') => write!(f, "[{host}]:{port}"),
            Target::Tcp { host, port } => write!(f, "{host}:{port}"),
            Target::Socket { dir, port } => {
                write!(f, "{}/.s.PGSQL.{port}", dir.trim_end_matches('/'))
            }
        }
    }
}

/// An entry of `BACKEND_HOSTS_ALLOWED` (or of the setting named `setting`) that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{setting}: {entry:?} {why}")]
pub struct HostsError {
    pub setting: &'static str,
    pub entry: String,
    pub why: String,
}

/// Why a target is not allowed (a sentence naming the target and the setting).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    AnyHost,
    Name(String),
    /// `.example.com` for `*.example.com`.
    Suffix(String),
    Net(IpNet),
    Dir(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    pattern: Pattern,
    port: Option<u16>,
    text: String,
}

/// The parsed `BACKEND_HOSTS_ALLOWED` (empty: any host but link-local and metadata ones), or
/// another setting of the same form (its name in messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostsAllowed {
    entries: Vec<Entry>,
    setting: &'static str,
}

/// The setting [`HostsAllowed`]'s `FromStr` and `Default` read.
pub const BACKEND_HOSTS_ALLOWED: &str = "BACKEND_HOSTS_ALLOWED";

impl Default for HostsAllowed {
    fn default() -> Self {
        HostsAllowed::default_for(BACKEND_HOSTS_ALLOWED)
    }
}

/// Link-local and cloud metadata addresses: refused unless an entry of their own allows them.
const DENIED_NETS: [&str; 3] = ["169.254.0.0/16", "fe80::/10", "fd00:ec2::254/128"];
/// Names of cloud metadata services, likewise.
const DENIED_NAMES: [&str; 2] = ["metadata.google.internal", "metadata.goog"];

fn denied_nets() -> impl Iterator<Item = IpNet> {
    DENIED_NETS.iter().filter_map(|n| n.parse().ok())
}

impl FromStr for HostsAllowed {
    type Err = HostsError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        HostsAllowed::parse_for(s, BACKEND_HOSTS_ALLOWED)
    }
}

impl HostsAllowed {
    /// The list `s` of the setting named `setting` (the name its messages give).
    pub fn parse_for(s: &str, setting: &'static str) -> Result<Self, HostsError> {
        let entries = s
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|e| !e.is_empty())
            .map(|e| parse_entry(e, setting))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(HostsAllowed { entries, setting })
    }

    /// The setting named `setting` left unset: any host but link-local and metadata ones.
    pub fn default_for(setting: &'static str) -> Self {
        HostsAllowed {
            entries: Vec::new(),
            setting,
        }
    }
}

impl fmt::Display for HostsAllowed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let texts: Vec<&str> = self.entries.iter().map(|e| e.text.as_str()).collect();
        f.write_str(&texts.join(","))
    }
}

fn parse_entry(text: &str, setting: &'static str) -> Result<Entry, HostsError> {
    let bad = |why: &str| HostsError {
        setting,
        entry: text.to_owned(),
        why: why.to_owned(),
    };
    let entry = |pattern, port| Entry {
        pattern,
        port,
        text: text.to_owned(),
    };
    if text.starts_with('/') {
        return Ok(entry(Pattern::Dir(dir_of(text)), None));
    }
    let port_of = |p: &str| match p.parse::<u16>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(bad("has a port that is not a number from 1 to 65535")),
    };
    let (host, port) = if let Some(inner) = text.strip_prefix('[') {
        let (host, after) = inner
            .split_once(']')
            .ok_or_else(|| bad("has a '[' without its ']'"))?;
        let port = match after {
            "" => None,
            _ => Some(port_of(after.strip_prefix(':').ok_or_else(|| {
                bad("has something other than :PORT after its ']'")
            })?)?),
        };
        if host.contains('/') || host.parse::<IpAddr>().is_ok() {
            (host, port)
        } else {
            return Err(bad(
                "has something other than an address or a network in [ ]",
            ));
        }
    } else {
        match text.matches(':').count() {
            1 => {
                let (host, port) = text.split_once(':').unwrap_or((text, ""));
                (host, Some(port_of(port)?))
            }
            // None, or an IPv6 address or network (with a port, it is written in brackets).
            _ => (text, None),
        }
    };
    let pattern = if host == "*" {
        Pattern::AnyHost
    } else if host.contains('/') {
        let net: IpNet = host
            .parse()
            .map_err(|_| bad("is not a network (such as 10.0.0.0/8 or fd00::/8)"))?;
        Pattern::Net(canonical_net(net.trunc()))
    } else if let Some(ip) = ip_literal(host) {
        Pattern::Net(IpNet::from(ip))
    } else if let Some(suffix) = host.strip_prefix("*.") {
        Pattern::Suffix(format!(".{}", name_of(suffix).ok_or_else(|| bad(NAME))?))
    } else {
        Pattern::Name(name_of(host).ok_or_else(|| bad(NAME))?)
    };
    Ok(entry(pattern, port))
}

const NAME: &str =
    "is not a host name, an address, a network (10.0.0.0/8), `*` or a socket directory";

/// A host name in the form names are compared in (lower case, no trailing dot), if valid.
fn name_of(s: &str) -> Option<String> {
    let s = s.strip_suffix('.').unwrap_or(s);
    let valid = !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        });
    valid.then(|| s.to_ascii_lowercase())
}

fn dir_of(s: &str) -> String {
    match s.trim_end_matches('/') {
        "" => "/".to_owned(),
        d => d.to_owned(),
    }
}

/// An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) as its IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn canonical_net(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.network().to_ipv4_mapped() {
            Some(v4) => ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96)
                .map(IpNet::V4)
                .unwrap_or(net),
            None => net,
        },
        _ => net,
    }
}

/// The address a host, as written in a connection string, stands for, if it is one: IPv6
/// with or without brackets and zone, and IPv4 as the system's resolver reads it
/// (`inet_aton`: `10.1`, `0x0a000001`, `012.0.0.1`).
pub fn ip_literal(host: &str) -> Option<IpAddr> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let unzoned = bare.split_once('%').map_or(bare, |(a, _)| a);
    if let Ok(ip) = unzoned.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    inet_aton(bare).map(IpAddr::V4)
}

/// glibc's `inet_aton`: one to four parts, decimal, octal (leading 0) or hex (0x), the last
/// filling the remaining bytes.
fn inet_aton(s: &str) -> Option<Ipv4Addr> {
    let parts: Vec<&str> = s.split('.').collect();
    if parts.len() > 4 {
        return None;
    }
    let mut nums = Vec::with_capacity(parts.len());
    for p in &parts {
        let (digits, radix) = if let Some(h) = p.strip_prefix("0x").or(p.strip_prefix("0X")) {
            (h, 16)
        } else if p.len() > 1 && p.starts_with('0') {
            (&p[1..], 8)
        } else {
            (*p, 10)
        };
        if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
            return None;
        }
        nums.push(u32::from_str_radix(digits, radix).ok()?);
    }
    let (last, head) = nums.split_last()?;
    if head.iter().any(|&n| n > 255) {
        return None;
    }
    let room = 8 * (4 - head.len() as u32);
    if room < 32 && *last >= 1u32 << room {
        return None;
    }
    let mut value = *last;
    for (i, &n) in head.iter().enumerate() {
        value |= n << (24 - 8 * i as u32);
    }
    Some(Ipv4Addr::from(value))
}

impl Entry {
    fn matches(&self, target: &Target, ip: Option<IpAddr>) -> bool {
        let (port, host) = match target {
            Target::Tcp { host, port } => (*port, Some(host)),
            Target::Socket { port, .. } => (*port, None),
        };
        if self.port.is_some_and(|p| p != port) {
            return false;
        }
        let name = host.map(String::as_str).and_then(name_of);
        match (&self.pattern, target) {
            (Pattern::AnyHost, Target::Tcp { .. }) => true,
            (Pattern::Net(net), _) => ip.is_some_and(|ip| net.contains(&ip)),
            (Pattern::Name(n), _) => ip.is_none() && name.as_ref() == Some(n),
            (Pattern::Suffix(sfx), _) => {
                ip.is_none() && name.is_some_and(|h| h.ends_with(sfx.as_str()))
            }
            (Pattern::Dir(d), Target::Socket { dir, .. }) => &dir_of(dir) == d,
            _ => false,
        }
    }

    /// Whether this entry names link-local or metadata hosts on purpose: a network inside a
    /// denied one, or a denied name itself.
    fn opens_denied(&self) -> bool {
        match &self.pattern {
            Pattern::Net(net) => denied_nets().any(|d| d.contains(net)),
            Pattern::Name(n) => DENIED_NAMES.contains(&n.as_str()),
            _ => false,
        }
    }
}

impl HostsAllowed {
    /// Whether the setting restricts hosts beyond the default.
    pub fn is_set(&self) -> bool {
        !self.entries.is_empty()
    }

    /// Whether a node may connect to `target`; the refusal names the target and says what
    /// would allow it.
    pub fn check(&self, target: &Target) -> Result<(), Refused> {
        let ip = match target {
            Target::Tcp { host, .. } => ip_literal(host),
            Target::Socket { .. } => None,
        };
        let denied = match (target, ip) {
            (_, Some(ip)) => denied_nets().any(|d| d.contains(&ip)),
            (Target::Tcp { host, .. }, None) => {
                name_of(host).is_some_and(|n| DENIED_NAMES.contains(&n.as_str()))
            }
            _ => false,
        };
        let shown = match ip {
            Some(ip) if ip.to_string() != *target_host(target) => format!("{target} ({ip})"),
            _ => target.to_string(),
        };
        if denied {
            if self
                .entries
                .iter()
                .any(|e| e.opens_denied() && e.matches(target, ip))
            {
                return Ok(());
            }
            return Err(Refused(format!(
                "{shown} is a link-local or cloud metadata address: refused unless \
                 {} lists it (the address, the name, or a network inside \
                 169.254.0.0/16 or fe80::/10)",
                self.setting
            )));
        }
        if !self.is_set() || self.entries.iter().any(|e| e.matches(target, ip)) {
            return Ok(());
        }
        Err(Refused(format!(
            "{shown} is not allowed by {} ({self})",
            self.setting
        )))
    }
}

fn target_host(t: &Target) -> &str {
    match t {
        Target::Tcp { host, .. } => host,
        Target::Socket { dir, .. } => dir,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn tcp(host: &str, port: u16) -> Target {
        Target::Tcp {
            host: host.to_owned(),
            port,
        }
    }

    fn allowed(list: &str, t: &Target) -> bool {
        match list.parse::<HostsAllowed>() {
            Ok(l) => l.check(t).is_ok(),
            Err(e) => panic!("{list}: {e}"),
        }
    }

    #[test]
    fn entries_parse_or_say_why() {
        for good in [
            "",
            "db1.internal",
            "db1.internal:5432, *.db.internal 10.0.0.0/8,[fd00::/8]:5433",
            "fd00::7",
            "[fd00::7]:5432",
            "*:5432",
            "/var/run/postgresql",
            "127.0.0.1",
        ] {
            assert!(good.parse::<HostsAllowed>().is_ok(), "{good}");
        }
        for (bad, why) in [
            ("db1:0", "port"),
            ("db1:x", "port"),
            ("[fd00::7", "']'"),
            ("[fd00::7]5432", ":PORT"),
            ("10.0.0.0/33", "network"),
            ("db 1!", "host name"),
            ("[db1]:5432", "address"),
        ] {
            match bad.parse::<HostsAllowed>() {
                Ok(l) => panic!("{bad} parsed: {l:?}"),
                Err(e) => assert!(e.to_string().contains(why), "{bad}: {e}"),
            }
        }
    }

    #[test]
    fn by_default_everything_but_link_local_and_metadata() {
        assert!(allowed("", &tcp("db1.internal", 5432)));
        assert!(allowed("", &tcp("127.0.0.1", 5432)));
        assert!(allowed("", &tcp("::1", 5432)));
        for denied in [
            "169.254.169.254",
            "2852039166",
            "0xa9.0xfe.0xa9.0xfe",
            "0251.0376.0251.0376",
            "169.254.43518",
            "::ffff:169.254.169.254",
            "[::ffff:a9fe:a9fe]",
            "fe80::1%eth0",
            "fd00:ec2::254",
            "metadata.google.internal",
            "METADATA.google.internal.",
        ] {
            assert!(!allowed("", &tcp(denied, 80)), "{denied}");
            // A broad entry does not open them; their own does.
            assert!(!allowed("*,0.0.0.0/0,::/0", &tcp(denied, 80)), "{denied}");
        }
        assert!(allowed("169.254.0.0/16", &tcp("169.254.169.254", 80)));
        assert!(allowed("169.254.169.254:80", &tcp("2852039166", 80)));
        assert!(!allowed("169.254.169.254:5432", &tcp("2852039166", 80)));
        assert!(allowed(
            "metadata.google.internal",
            &tcp("metadata.google.internal", 1)
        ));
    }

    #[test]
    fn a_list_allows_only_what_it_names() {
        let list = "db1.internal:5432,*.pg.internal,10.1.0.0/16,[fd00::/16]:6432,/run/pg";
        assert!(allowed(list, &tcp("DB1.internal.", 5432)));
        assert!(!allowed(list, &tcp("db1.internal", 5433)));
        assert!(!allowed(list, &tcp("db2.internal", 5432)));
        assert!(allowed(list, &tcp("a.b.pg.internal", 1)));
        assert!(!allowed(list, &tcp("pg.internal", 1)));
        assert!(!allowed(list, &tcp("evilpg.internal", 1)));
        assert!(allowed(list, &tcp("10.1.200.3", 5432)));
        assert!(allowed(list, &tcp("::ffff:10.1.200.3", 5432)));
        assert!(!allowed(list, &tcp("10.2.0.1", 5432)));
        // An address is not a name and a name is never resolved.
        assert!(
            allowed(list, &tcp("0x0a010001", 5432)),
            "10.1.0.1 in another spelling"
        );
        assert!(!allowed("localhost", &tcp("127.0.0.1", 5432)));
        assert!(!allowed("127.0.0.1", &tcp("localhost", 5432)));
        assert!(allowed(list, &tcp("fd00::1", 6432)));
        assert!(!allowed(list, &tcp("fd00::1", 5432)));
        let socket = |dir: &str| Target::Socket {
            dir: dir.to_owned(),
            port: 5432,
        };
        assert!(allowed(list, &socket("/run/pg/")));
        assert!(!allowed(list, &socket("/tmp")));
        assert!(!allowed("*", &socket("/tmp")));
        assert!(allowed("", &socket("/tmp")));
    }

    #[test]
    fn refusals_name_the_target_and_the_setting() {
        let list: HostsAllowed = "10.0.0.0/8".parse().unwrap_or_default();
        let Err(e) = list.check(&tcp("db9", 5432)) else {
            panic!("db9 allowed")
        };
        assert_eq!(
            e.to_string(),
            "db9:5432 is not allowed by BACKEND_HOSTS_ALLOWED (10.0.0.0/8)"
        );
        let Err(e) = list.check(&tcp("2852039166", 5432)) else {
            panic!("metadata allowed")
        };
        assert!(
            e.to_string()
                .starts_with("2852039166:5432 (169.254.169.254) is a link-local"),
            "{e}"
        );
    }

    proptest! {
        #[test]
        fn networks_contain_exactly_their_addresses(a: u32, b: u32, len in 0u8..=32) {
            let net = ipnet::Ipv4Net::new(Ipv4Addr::from(a), len).map(|n| n.trunc());
            prop_assume!(net.is_ok());
            let net = net.unwrap_or_default();
            let ip = Ipv4Addr::from(b);
            let t = tcp(&ip.to_string(), 5432);
            let in_denied = denied_nets().any(|d| d.contains(&IpAddr::V4(ip)));
            let list: HostsAllowed = net.to_string().parse().unwrap_or_default();
            prop_assert_eq!(list.check(&t).is_ok(), net.contains(&ip) && (!in_denied || net.prefix_len() >= 16));
            // The resolver's other spellings of the address are the same address.
            prop_assert_eq!(ip_literal(&b.to_string()), Some(IpAddr::V4(ip)));
            prop_assert_eq!(ip_literal(&format!("{b:#x}")), Some(IpAddr::V4(ip)));
        }
    }
}

//! Bearer tokens: making them, hashing them, and the token file's lines.
//!
//! A token is `mzt_` and 64 hex digits: 32 bytes from the operating system's random source.
//! The server never stores a token, only its SHA-256 (a token has 256 bits of entropy, so a
//! plain hash is as strong as a slow one: nobody can guess a token from its hash), and looks
//! a presented token up by comparing hashes in constant time ([`TokenSet::find`]).
//!
//! A line of the token file (`TOKEN_FILE`) or of `TOKENS` is `NAME SCOPES HASH`, with an
//! optional fourth word, the token's own rate limit (see [`super::limits`]):
//!
//! ```text
//! # comments and blank lines are ignored
//! ops      admin       sha256:5f1c…   (64 hex digits)
//! ingest   write       sha256:0b9d…   rate=5000/s,burst=10000
//! grafana  read        sha256:77aa…   rate=10/s
//! ```
//!
//! `NAME` (1 to 63 letters, digits, `_`, `-`, `.`) is what the audit log and the logs show,
//! never the token; names are unique, so that a name identifies one token (and can key a
//! per-token limit). `SCOPES` is `read`, `write` or `admin`, or a comma-separated list of
//! them; `admin` includes `write`, which includes `read`.

use std::fmt;
use std::sync::Arc;

use rand::RngCore;

use super::limits::Limit;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// What a token may do. Ordered: each scope includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// `GET` (and `HEAD`) of `/v1` and `/metrics`.
    Read,
    /// Everything `read` may, and `POST`/`DELETE` of `/v1` (writes).
    Write,
    /// Everything, and the admin API (`/admin/v1`, every admin command).
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 3] = [Scope::Read, Scope::Write, Scope::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
            Scope::Admin => "admin",
        }
    }

    /// Whether a token of this scope may do what `needed` allows.
    pub fn includes(self, needed: Scope) -> bool {
        self >= needed
    }

    /// `read`, `write`, `admin`, or a comma-separated list of them (the widest counts).
    pub fn parse_list(text: &str) -> Result<Scope, String> {
        let mut widest: Option<Scope> = None;
        for part in text.split(',') {
            let part = part.trim();
            let scope = Scope::ALL
                .into_iter()
                .find(|s| s.as_str() == part)
                .ok_or_else(|| {
                    format!("unknown scope {part:?}: the scopes are read, write and admin")
                })?;
            widest = widest.max(Some(scope));
        }
        widest.ok_or_else(|| "no scope given: use read, write or admin".to_owned())
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The prefix of every token this version makes (it tells a token from its hash, and lets
/// secret scanners find leaked tokens).
pub const TOKEN_PREFIX: &str = "mzt_";

/// The prefix of a hash in the token file.
pub const HASH_PREFIX: &str = "sha256:";

/// Longest token looked up; a longer `Authorization` value is refused without hashing it.
pub const MAX_TOKEN_LEN: usize = 512;

/// A new token: [`TOKEN_PREFIX`] and 32 random bytes (the operating system's) in hex.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!("{TOKEN_PREFIX}{}", hex::encode(bytes))
}

/// The SHA-256 of a token, as the server keeps it.
pub fn hash_token(token: &str) -> [u8; 32] {
    let digest = Sha256::digest(token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_slice());
    out
}

/// The token file's line for a token: `NAME SCOPE sha256:HEX`.
pub fn token_line(name: &str, scope: Scope, token: &str) -> String {
    format!(
        "{name} {scope} {HASH_PREFIX}{}",
        hex::encode(hash_token(token))
    )
}

/// The token file's line for a token with its own rate limit: `NAME SCOPE sha256:HEX
/// rate=LIMIT` (without `rate=` when `rate` is `None`: the server's default applies).
pub fn token_line_with_rate(name: &str, scope: Scope, token: &str, rate: Option<Limit>) -> String {
    let line = token_line(name, scope, token);
    match rate {
        Some(r) => format!("{line} rate={r}"),
        None => line,
    }
}

/// Whether two hashes are equal, in time that does not depend on where they differ.
pub fn hashes_equal(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a[..].ct_eq(&b[..]).into()
}

/// A token the server accepts: its name, scope and hash (never the token itself).
#[derive(Clone, PartialEq, Eq)]
pub struct TokenEntry {
    pub name: Arc<str>,
    pub scope: Scope,
    /// Its own rate limit (`rate=`), or `None`: the server's default.
    pub rate: Option<Limit>,
    hash: [u8; 32],
}

impl TokenEntry {
    pub fn new(name: &str, scope: Scope, token: &str) -> TokenEntry {
        TokenEntry {
            name: Arc::from(name),
            scope,
            rate: None,
            hash: hash_token(token),
        }
    }
}

impl fmt::Debug for TokenEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The hash is not secret, but nothing needs it in a log either.
        f.debug_struct("TokenEntry")
            .field("name", &self.name)
            .field("scope", &self.scope)
            .field("rate", &self.rate)
            .finish_non_exhaustive()
    }
}

/// Whether `name` may name a token: 1 to 63 letters, digits, `_`, `-` or `.`.
pub fn valid_name(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// Parses the lines of a token file (or of `TOKENS`, whose lines may also be separated by
/// `;`). Errors say which line (1-based) and why.
pub fn parse_lines(text: &str) -> Result<Vec<TokenEntry>, String> {
    let mut out: Vec<TokenEntry> = Vec::new();
    for (i, line) in text.split(['\n', ';']).enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let entry = parse_line(line).map_err(|why| format!("line {}: {why}", i + 1))?;
        add(&mut out, entry).map_err(|why| format!("line {}: {why}", i + 1))?;
    }
    Ok(out)
}

/// Adds `entry` to `set`, refusing a second token of the same name or hash.
pub fn add(set: &mut Vec<TokenEntry>, entry: TokenEntry) -> Result<(), String> {
    if set.iter().any(|e| e.name == entry.name) {
        return Err(format!(
            "the name {:?} is given twice; each token needs a name of its own",
            &*entry.name
        ));
    }
    if set.iter().any(|e| hashes_equal(&e.hash, &entry.hash)) {
        return Err(format!(
            "token {:?} has the hash of another token; make a new one with `mezzanine token create`",
            &*entry.name
        ));
    }
    set.push(entry);
    Ok(())
}

fn parse_line(line: &str) -> Result<TokenEntry, String> {
    let mut words: Vec<&str> = line.split_whitespace().collect();
    let rate = match words.as_slice() {
        [_, _, _, fourth] => {
            let name = words[0];
            let value = fourth.strip_prefix("rate=").ok_or_else(|| {
                format!(
                    "token {name:?}: the fourth word must be rate=LIMIT (e.g. rate=200/s or \
                     rate=200/s,burst=400 or rate=off), found {fourth:?}"
                )
            })?;
            let limit = value
                .parse::<Limit>()
                .map_err(|e| format!("token {name:?}: rate: {e}"))?;
            words.pop();
            Some(limit)
        }
        _ => None,
    };
    let [name, scopes, hash] = words.as_slice() else {
        if words.iter().any(|w| w.starts_with(TOKEN_PREFIX)) {
            return Err(
                "this looks like a token: the token file holds hashes, never tokens; make the \
                 line with `mezzanine token create`"
                    .to_owned(),
            );
        }
        return Err(format!(
            "expected `NAME SCOPES sha256:HEX [rate=LIMIT]` (3 or 4 words), found {} words",
            words.len()
        ));
    };
    if !valid_name(name) {
        return Err(format!(
            "name {name:?}: use 1 to 63 letters, digits, '_', '-' or '.'"
        ));
    }
    let scope = Scope::parse_list(scopes)?;
    if hash.starts_with(TOKEN_PREFIX) {
        return Err(format!(
            "token {name:?}: this is a token, not its hash; the token file holds hashes only \
             (`mezzanine token create` prints the line)"
        ));
    }
    let hex_part = hash.strip_prefix(HASH_PREFIX).ok_or_else(|| {
        format!("token {name:?}: the hash must be written sha256:<64 hex digits>")
    })?;
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(hex_part, &mut bytes)
        .map_err(|_| format!("token {name:?}: the hash must be written sha256:<64 hex digits>"))?;
    Ok(TokenEntry {
        name: Arc::from(*name),
        scope,
        rate,
        hash: bytes,
    })
}

/// The tokens a server accepts.
#[derive(Debug, Clone, Default)]
pub struct TokenSet {
    entries: Vec<TokenEntry>,
}

impl TokenSet {
    pub fn new(entries: Vec<TokenEntry>) -> TokenSet {
        TokenSet { entries }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entries, in order.
    pub fn entries(&self) -> impl Iterator<Item = &TokenEntry> {
        self.entries.iter()
    }

    /// The names, in order (for the status).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|e| &*e.name)
    }

    /// The entry whose token is `presented`, if any. The presented token is hashed and
    /// compared with every entry's hash in constant time, all of them every time, so the time
    /// taken says nothing about how close a guess came.
    pub fn find(&self, presented: &str) -> Option<&TokenEntry> {
        if presented.len() > MAX_TOKEN_LEN {
            return None;
        }
        let hash = hash_token(presented);
        let mut found = None;
        for e in &self.entries {
            if hashes_equal(&e.hash, &hash) {
                found = Some(e);
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_found_by_its_hash_and_nothing_else_is() {
        let t = new_token();
        let line = token_line("ops", Scope::Admin, &t);
        let set = TokenSet::new(parse_lines(&line).unwrap());
        let e = set.find(&t).expect("the token itself is found");
        assert_eq!((&*e.name, e.scope), ("ops", Scope::Admin));
        // Its hash, as written in the file, is not a token.
        let hash = line.split_whitespace().nth(2).unwrap();
        assert!(set.find(hash).is_none());
        assert!(set.find(hash.trim_start_matches(HASH_PREFIX)).is_none());
        // Nor is any other string: one character changed anywhere, a prefix, an extension.
        for i in 0..t.len() {
            let mut other: Vec<char> = t.chars().collect();
            other[i] = if other[i] == 'a' { 'b' } else { 'a' };
            let other: String = other.into_iter().collect();
            assert!(set.find(&other).is_none(), "{other} matched");
        }
        assert!(set.find(&t[..t.len() - 1]).is_none());
        assert!(set.find(&format!("{t}0")).is_none());
        assert!(set.find("").is_none());
        assert!(set.find(&"x".repeat(MAX_TOKEN_LEN + 1)).is_none());
    }

    #[test]
    fn hashing_is_sha256_and_comparison_looks_at_every_byte() {
        // SHA-256("abc"), FIPS 180-2's example.
        assert_eq!(
            hex::encode(hash_token("abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let a = hash_token("one");
        assert!(hashes_equal(&a, &a.clone()));
        for i in 0..32 {
            let mut b = a;
            b[i] ^= 0x01;
            assert!(
                !hashes_equal(&a, &b),
                "a difference in byte {i} went unseen"
            );
        }
    }

    #[test]
    fn tokens_are_random_and_long() {
        let (a, b) = (new_token(), new_token());
        assert_ne!(a, b);
        assert!(a.starts_with(TOKEN_PREFIX));
        assert_eq!(a.len(), TOKEN_PREFIX.len() + 64);
        assert!(a[TOKEN_PREFIX.len()..]
            .chars()
            .all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn the_debug_form_shows_no_hash() {
        let t = new_token();
        let e = TokenEntry::new("ci", Scope::Read, &t);
        let shown = format!("{e:?}");
        assert!(shown.contains("ci"), "{shown}");
        assert!(!shown.contains(&hex::encode(hash_token(&t))), "{shown}");
        assert!(!shown.contains(&t[4..]), "{shown}");
    }

    #[test]
    fn scopes_include_the_narrower_ones() {
        assert!(Scope::Admin.includes(Scope::Write) && Scope::Admin.includes(Scope::Read));
        assert!(Scope::Write.includes(Scope::Read) && !Scope::Write.includes(Scope::Admin));
        assert!(!Scope::Read.includes(Scope::Write));
        assert_eq!(Scope::parse_list("read,write").unwrap(), Scope::Write);
        assert_eq!(Scope::parse_list(" admin ").unwrap(), Scope::Admin);
        assert!(Scope::parse_list("root")
            .unwrap_err()
            .contains("unknown scope \"root\""));
        assert!(Scope::parse_list("").is_err());
    }

    #[test]
    fn lines_are_read_with_comments_and_semicolons() {
        let (a, b) = (new_token(), new_token());
        let text = format!(
            "# tokens\n\n{}\n  {} ; {}\n",
            token_line("ops", Scope::Admin, &a),
            token_line("ci", Scope::Write, &b),
            token_line("graf", Scope::Read, &new_token()),
        );
        let set = TokenSet::new(parse_lines(&text).unwrap());
        assert_eq!(set.names().collect::<Vec<_>>(), ["ops", "ci", "graf"]);
        assert_eq!(set.find(&b).map(|e| e.scope), Some(Scope::Write));
    }

    #[test]
    fn a_line_may_give_its_own_rate() {
        let t = new_token();
        let rated =
            token_line_with_rate("ci", Scope::Write, &t, Some("5/s,burst=9".parse().unwrap()));
        assert!(rated.ends_with(" rate=5/s,burst=9"), "{rated}");
        let set = TokenSet::new(parse_lines(&rated).unwrap());
        assert_eq!(
            set.find(&t)
                .and_then(|e| e.rate)
                .map(|r| r.to_string())
                .as_deref(),
            Some("5/s,burst=9")
        );
        // Without a rate: the line of three words, and the default applies.
        let plain = token_line_with_rate("ci", Scope::Write, &t, None);
        assert_eq!(plain, token_line("ci", Scope::Write, &t));
        assert_eq!(
            TokenSet::new(parse_lines(&plain).unwrap())
                .find(&t)
                .unwrap()
                .rate,
            None
        );
        let off = TokenSet::new(parse_lines(&format!("{plain} rate=off")).unwrap());
        assert_eq!(off.find(&t).unwrap().rate, Some(Limit::Off));
    }

    #[test]
    fn bad_lines_say_which_and_why() {
        let t = new_token();
        let good = token_line("ops", Scope::Admin, &t);
        let cases = [
            (
                format!("{good}\nops"),
                "line 2: expected `NAME SCOPES sha256:HEX [rate=LIMIT]`",
            ),
            (
                format!("{good} 5/s"),
                "line 1: token \"ops\": the fourth word must be rate=LIMIT",
            ),
            (
                format!("{good} rate=fast"),
                "line 1: token \"ops\": rate: \"fast\" is not a rate limit",
            ),
            (
                format!("{good} rate=1/s extra"),
                "line 1: expected `NAME SCOPES sha256:HEX [rate=LIMIT]` (3 or 4 words), found 5",
            ),
            (format!("{good}\n{t}"), "line 2: this looks like a token"),
            (
                format!("x admin {t}"),
                "line 1: token \"x\": this is a token, not its hash",
            ),
            (
                "x root sha256:00".to_owned(),
                "line 1: unknown scope \"root\"",
            ),
            (
                "x admin md5:00".to_owned(),
                "line 1: token \"x\": the hash must be written",
            ),
            (
                "x admin sha256:abcd".to_owned(),
                "the hash must be written sha256:<64 hex digits>",
            ),
            (
                "bad/name admin sha256:00".to_owned(),
                "line 1: name \"bad/name\"",
            ),
            (
                format!("{good}\n{good}"),
                "line 2: the name \"ops\" is given twice",
            ),
            (
                format!("{good}\n{}", good.replacen("ops", "ops2", 1)),
                "line 2: token \"ops2\" has the hash of another token",
            ),
        ];
        for (text, want) in cases {
            let e = parse_lines(&text).unwrap_err();
            assert!(e.contains(want), "{text:?}: {e}");
            assert!(!e.contains(&t[4..]), "the error shows the token: {e}");
        }
    }
}

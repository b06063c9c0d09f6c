//! Connection strings as people write them, and where their passwords are: one masking
//! function for every form, so that no answer, log line or audit entry shows a password.
//!
//! The forms (those tokio-postgres and libpq read):
//!
//! - URLs, `postgres://user:PASSWORD@host:port/db?password=PASSWORD&…`: the password of the
//!   user info and any query parameter whose name contains `password` (its name may be
//!   percent-encoded: `pass%77ord`). tokio-postgres ends the user info at the *first* `@`,
//!   browsers at the last one before the path; the masked span covers both readings.
//! - `key=value` strings, `host=h password=PASSWORD`, `password = 'a b'`, `password=a\ b`:
//!   the value of every key containing `password`, read with tokio-postgres's own rules
//!   (spaces around `=`, single quotes, backslash escapes), wherever it appears: text the
//!   grammar reads otherwise (`a=x\ password=y`, a syntax error) loses more, never less.
//!
//! Any other scheme (`mysql://…`) is masked as a URL. What is masked is replaced by `***`;
//! the rest is left exactly as written.

use std::borrow::Cow;
use std::ops::Range;

/// What a masked password reads as.
pub const MASK: &str = "***";

/// `s` with every password replaced by `***` (see the module's documentation for the forms).
pub fn mask_url(s: &str) -> String {
    let spans = merged(secret_spans(s).into_iter().map(|(r, _)| r).collect());
    let mut out = String::with_capacity(s.len());
    let mut at = 0;
    for r in spans {
        out.push_str(&s[at..r.start]);
        out.push_str(MASK);
        at = r.end;
    }
    out.push_str(&s[at..]);
    out
}

/// Whether `s` carries a password that reads `***`: a connection string as
/// `mezzanine shards export` prints it without `--with-secrets`, which cannot connect.
pub fn has_masked_password(s: &str) -> bool {
    secret_spans(s)
        .into_iter()
        .any(|(r, how)| decoded(&s[r], how) == MASK)
}

/// `text` (an error message, say) with each password of connection string `url` replaced by
/// `***`, as written there and as it reads: a server that was sent a password may echo it.
pub fn scrub(text: &str, url: &str) -> String {
    let mut secrets: Vec<String> = secret_spans(url)
        .into_iter()
        .flat_map(|(r, how)| {
            [
                url[r.clone()].to_owned(),
                decoded(&url[r], how).into_owned(),
            ]
        })
        .filter(|s| !s.is_empty() && s != MASK)
        .collect();
    // The longest first, so that a password containing another is replaced whole.
    secrets.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
    secrets.dedup();
    let mut out = text.to_owned();
    for s in &secrets {
        out = out.replace(s.as_str(), MASK);
    }
    out
}

/// Whether a parameter's name names a secret: `password`, and any name containing it
/// (`sslpassword`), in any case.
fn secret_key(key: &str) -> bool {
    key.to_ascii_lowercase().contains("password")
}

/// How a span's text encodes its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    /// Percent-encoded (a URL's user info or query).
    Percent,
    /// A `key=value` value: quoted or not, with backslash escapes.
    Conninfo,
}

/// The byte ranges of `s` holding passwords, with how each is written (unsorted, possibly
/// overlapping).
fn secret_spans(s: &str) -> Vec<(Range<usize>, Encoding)> {
    let mut out = Vec::new();
    match url_start(s) {
        Some(rest) => url_spans(s, rest, &mut out),
        None => kv_spans(s, &mut out),
    }
    out
}

/// Where what follows `scheme://` starts, when `s` (leading white space aside) is a URL.
fn url_start(s: &str) -> Option<usize> {
    let lead = s.len() - s.trim_start().len();
    let i = s[lead..].find("://")? + lead;
    let scheme = &s[lead..i];
    let mut chars = scheme.chars();
    let first = chars.next()?;
    (first.is_ascii_alphabetic()
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
    .then_some(i + 3)
}

/// A URL's passwords: the user info's (after its first `:`), and the values of query
/// parameters whose (percent-decoded) name contains `password`.
fn url_spans(s: &str, rest: usize, out: &mut Vec<(Range<usize>, Encoding)>) {
    let r = &s[rest..];
    let mut query_from = rest;
    if let Some(first_at) = r.find('@') {
        // tokio-postgres: the user info ends at the first `@`, wherever it is; a browser: at
        // the last `@` of the authority. The later of the two.
        let authority_end = r[first_at..]
            .find(['/', '?', '#'])
            .map_or(r.len(), |i| first_at + i);
        let end = r[..authority_end].rfind('@').unwrap_or(first_at);
        if let Some(colon) = r[..end].find(':') {
            out.push((rest + colon + 1..rest + end, Encoding::Percent));
        }
        query_from = rest + end + 1;
    }
    if let Some(q) = s[query_from..].find('?') {
        let mut at = query_from + q + 1;
        for pair in s[at..].split('&') {
            if let Some(eq) = pair.find('=') {
                if secret_key(
                    &percent_encoding::percent_decode_str(&pair[..eq]).decode_utf8_lossy(),
                ) {
                    out.push((at + eq + 1..at + pair.len(), Encoding::Percent));
                }
            }
            at += pair.len() + 1;
        }
    }
}

/// The passwords of a `key=value` string: the value of every `…password… = value`,
/// wherever it is. Where tokio-postgres's grammar reads a password, this finds it at the same
/// place and reads the same value (its rules: white space around `=`, single quotes,
/// backslash escapes); where the grammar fails or reads the text otherwise (a `password=`
/// inside another value), more is masked, never less.
fn kv_spans(s: &str, out: &mut Vec<(Range<usize>, Encoding)>) {
    // ASCII lower-casing keeps every byte offset.
    let lower = s.to_ascii_lowercase();
    let mut at = 0;
    while let Some(n) = lower[at..].find("password") {
        let found = at + n;
        at = found + 1;
        let key_end = skip(s, found, |c| !c.is_whitespace() && c != '=');
        let eq = skip(s, key_end, char::is_whitespace);
        if !s[eq..].starts_with('=') {
            continue;
        }
        let value = skip(s, eq + 1, char::is_whitespace);
        out.push((value..value_end(s, value), Encoding::Conninfo));
    }
}

/// The index of the first byte at or after `i` for which `keep` is false.
fn skip(s: &str, i: usize, keep: impl Fn(char) -> bool) -> usize {
    s[i..].find(|c: char| !keep(c)).map_or(s.len(), |n| i + n)
}

/// The end of the `key=value` value starting at `i`: a quoted value up to its closing quote,
/// otherwise up to white space; backslashes escape the next character. An unterminated quote
/// runs to the end.
fn value_end(s: &str, i: usize) -> usize {
    let mut it = s[i..].char_indices();
    let quoted = s[i..].starts_with('\'');
    if quoted {
        it.next();
    }
    while let Some((n, c)) = it.next() {
        match c {
            '\\' => {
                it.next();
            }
            '\'' if quoted => return i + n + 1,
            c if !quoted && c.is_whitespace() => return i + n,
            _ => {}
        }
    }
    s.len()
}

/// Sorted ranges, overlapping or touching ones merged.
fn merged(mut spans: Vec<Range<usize>>) -> Vec<Range<usize>> {
    spans.sort_by_key(|r| (r.start, r.end));
    let mut out: Vec<Range<usize>> = Vec::with_capacity(spans.len());
    for r in spans {
        match out.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => out.push(r),
        }
    }
    out
}

/// The value a span's text stands for.
fn decoded(text: &str, how: Encoding) -> Cow<'_, str> {
    match how {
        Encoding::Percent => percent_encoding::percent_decode_str(text).decode_utf8_lossy(),
        Encoding::Conninfo => {
            let inner = text
                .strip_prefix('\'')
                .and_then(|t| t.strip_suffix('\''))
                .unwrap_or(text);
            let mut out = String::with_capacity(inner.len());
            let mut chars = inner.chars();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => out.extend(chars.next()),
                    c => out.push(c),
                }
            }
            Cow::Owned(out)
        }
    }
}

#[cfg(test)]
mod tests;

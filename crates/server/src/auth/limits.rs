//! Per-token rate limits (`governor`'s GCRA: a sustained rate and a burst).
//!
//! Every request the server would serve (the caller is allowed: [`crate::auth`]) takes one
//! cell from a bucket before any of its work is done; an empty bucket is a 429 with
//! `Retry-After`. The buckets:
//!
//! | caller | bucket | rate |
//! |---|---|---|
//! | a token, on `/v1` or `/metrics` | one per token | its line's `rate=`, else `RATE_LIMIT` |
//! | a token, on the admin API | one more per token | its line's `rate=`, else `ADMIN_RATE_LIMIT` |
//! | no token (an open `/v1`, or `UNSAFE_OPEN_ADMIN`) | one of [`ANON_BUCKETS`] per API, by a keyed hash of the client's address | `ANON_RATE_LIMIT` (admin: `ADMIN_RATE_LIMIT`) |
//!
//! The probes and the documents (`/v1/livez`, `/v1/readyz`, `/v1/health`, `/openapi.json`,
//! `/admin/v1/openapi.json`) are never limited: a probe answered 429 would get a healthy
//! node restarted. The key set is bounded: the token buckets follow the token set (a token's
//! buckets come and go with its line, a changed rate takes a new bucket), and anonymous
//! callers share [`ANON_BUCKETS`] buckets per API whatever addresses they come from.
//!
//! A limit is written `N/s`, `N/m` or `N/h` (N requests per second, minute or hour), with
//! an optional `,burst=B` (how many may come at once after a quiet spell; default N), or
//! `off`.

use std::collections::HashMap;
use std::fmt;
use std::hash::BuildHasher;
use std::num::NonZeroU32;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::HashMapStateStore;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use super::tokens::{Scope, TokenSet};

/// The largest N or burst of a limit.
pub const MAX_RATE: u32 = 1_000_000;

/// Buckets shared by anonymous callers, per API.
pub const ANON_BUCKETS: u64 = 1024;

/// `RATE_LIMIT`'s default: a token's requests to `/v1` and `/metrics`.
pub const DEFAULT_RATE: &str = "1000/s,burst=2000";
/// `ADMIN_RATE_LIMIT`'s default: a token's requests to the admin API.
pub const DEFAULT_ADMIN_RATE: &str = "20/s,burst=100";
/// `ANON_RATE_LIMIT`'s default: the requests without a token to an open `/v1`, per bucket.
/// Off: an address is no identity behind a proxy or a NAT (a fleet of clients would share one
/// client's share), and an open `/v1` is go-mezzanine's behaviour, which had no limit; an
/// operator who wants one sets it, and tokens are the way to limit each client.
pub const DEFAULT_ANON_RATE: &str = "off";

/// The period of a rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Per {
    Second,
    Minute,
    Hour,
}

impl Per {
    fn secs(self) -> u64 {
        match self {
            Per::Second => 1,
            Per::Minute => 60,
            Per::Hour => 3600,
        }
    }

    fn letter(self) -> &'static str {
        match self {
            Per::Second => "s",
            Per::Minute => "m",
            Per::Hour => "h",
        }
    }
}

/// A rate: `count` requests per `per`, `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: u32,
    pub per: Per,
    pub burst: u32,
}

impl Rate {
    /// `governor`'s quota: one cell every `per / count`, `burst` cells at most.
    fn quota(&self) -> Quota {
        let one = NonZeroU32::MIN;
        let period = Duration::from_secs(self.per.secs()) / self.count.max(1);
        let burst = NonZeroU32::new(self.burst).unwrap_or(one);
        Quota::with_period(period.max(Duration::from_nanos(1)))
            .unwrap_or_else(|| Quota::per_second(one))
            .allow_burst(burst)
    }
}

/// A limit: a rate, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Off,
    Rate(Rate),
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Limit::Off => f.write_str("off"),
            Limit::Rate(r) if r.burst == r.count => write!(f, "{}/{}", r.count, r.per.letter()),
            Limit::Rate(r) => write!(f, "{}/{},burst={}", r.count, r.per.letter(), r.burst),
        }
    }
}

impl FromStr for Limit {
    type Err = String;

    /// `off`, `N/s`, `N/m`, `N/h`, each rate with an optional `,burst=B`.
    fn from_str(text: &str) -> Result<Limit, String> {
        let text = text.trim();
        if text == "off" {
            return Ok(Limit::Off);
        }
        let bad = || {
            format!(
                "{text:?} is not a rate limit: write N/s, N/m or N/h (N requests per second, \
                 minute or hour), optionally with ,burst=B (e.g. 200/s,burst=400), or off"
            )
        };
        let (rate, burst) = match text.split_once(',') {
            Some((r, b)) => (r, Some(b.trim().strip_prefix("burst=").ok_or_else(bad)?)),
            None => (text, None),
        };
        let (count, per) = rate.trim().split_once('/').ok_or_else(bad)?;
        let per = match per.trim() {
            "s" => Per::Second,
            "m" => Per::Minute,
            "h" => Per::Hour,
            _ => return Err(bad()),
        };
        let number = |s: &str, what: &str| match s.trim().parse::<u32>() {
            Ok(n) if (1..=MAX_RATE).contains(&n) => Ok(n),
            _ => Err(format!(
                "{text:?}: the {what} must be a whole number from 1 to {MAX_RATE}"
            )),
        };
        let count = number(count, "rate")?;
        let burst = match burst {
            Some(b) => number(b, "burst")?,
            None => count,
        };
        Ok(Limit::Rate(Rate { count, per, burst }))
    }
}

/// Which API a request is for (each has its own buckets and default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Api {
    Data,
    Admin,
}

impl Api {
    pub fn as_str(self) -> &'static str {
        match self {
            Api::Data => "data",
            Api::Admin => "admin",
        }
    }
}

/// The server-wide limits (`RATE_LIMIT`, `ADMIN_RATE_LIMIT`, `ANON_RATE_LIMIT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Defaults {
    pub data: Limit,
    pub admin: Limit,
    pub anonymous: Limit,
}

impl Default for Defaults {
    fn default() -> Defaults {
        let parse = |s: &str| s.parse().unwrap_or(Limit::Off);
        Defaults {
            data: parse(DEFAULT_RATE),
            admin: parse(DEFAULT_ADMIN_RATE),
            anonymous: parse(DEFAULT_ANON_RATE),
        }
    }
}

/// Who a request counts against.
#[derive(Debug, Clone, Copy)]
pub enum Who<'a> {
    Token {
        name: &'a str,
    },
    /// No token: by the client's address.
    Anonymous {
        client: &'a str,
    },
}

/// A request over its limit: what the 429 says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Over {
    /// Seconds until a request would be allowed (at least 1).
    pub retry_after: u64,
    /// The limit, as written.
    pub limit: Limit,
    /// Where the limit comes from: `the token file`, or the variable.
    pub source: &'static str,
}

struct Bucket {
    limit: Limit,
    source: &'static str,
    limiter: DefaultDirectRateLimiter,
}

type AnonLimiter = RateLimiter<u64, HashMapStateStore<u64>, DefaultClock>;

/// A token's buckets: data, then admin (`None`: no limit).
type TokenBuckets = [Option<Arc<Bucket>>; 2];

fn slot(api: Api) -> usize {
    match api {
        Api::Data => 0,
        Api::Admin => 1,
    }
}

/// Every bucket of a server.
pub struct RateLimits {
    defaults: Defaults,
    clock: DefaultClock,
    /// By token name; rebuilt by [`RateLimits::follow`].
    tokens: ArcSwap<HashMap<Arc<str>, TokenBuckets>>,
    /// Anonymous callers, by API: keyed by a bucket number below [`ANON_BUCKETS`].
    anon: [Option<(Limit, AnonLimiter)>; 2],
    /// The keyed hash of a client's address (random per process: a client cannot choose
    /// another's bucket).
    hasher: std::hash::RandomState,
}

impl RateLimits {
    pub fn new(defaults: Defaults, tokens: &TokenSet) -> RateLimits {
        let clock = DefaultClock::default();
        let anon = |limit: Limit| match limit {
            Limit::Off => None,
            Limit::Rate(r) => Some((
                limit,
                RateLimiter::hashmap_with_clock(r.quota(), clock.clone()),
            )),
        };
        let me = RateLimits {
            defaults,
            anon: [anon(defaults.anonymous), anon(defaults.admin)],
            clock,
            tokens: ArcSwap::from_pointee(HashMap::new()),
            hasher: std::hash::RandomState::new(),
        };
        me.follow(tokens);
        me
    }

    pub fn defaults(&self) -> Defaults {
        self.defaults
    }

    /// Makes the buckets those of `tokens`: a removed token's go, a new token's come, a
    /// changed rate gets a full new bucket, an unchanged one keeps its state.
    pub fn follow(&self, tokens: &TokenSet) {
        let old = self.tokens.load();
        let mut next = HashMap::new();
        for e in tokens.entries() {
            let mut buckets: TokenBuckets = [None, None];
            for api in [Api::Data, Api::Admin] {
                if api == Api::Admin && !e.scope.includes(Scope::Admin) {
                    continue;
                }
                let (limit, source) = match (e.rate, api) {
                    (Some(l), _) => (l, "the token file"),
                    (None, Api::Data) => (self.defaults.data, "RATE_LIMIT"),
                    (None, Api::Admin) => (self.defaults.admin, "ADMIN_RATE_LIMIT"),
                };
                let Limit::Rate(rate) = limit else {
                    continue;
                };
                let kept = old.get(&e.name).and_then(|b| b[slot(api)].as_ref());
                let bucket = match kept {
                    Some(b) if b.limit == limit && b.source == source => b.clone(),
                    _ => Arc::new(Bucket {
                        limit,
                        source,
                        limiter: RateLimiter::direct_with_clock(rate.quota(), self.clock.clone()),
                    }),
                };
                buckets[slot(api)] = Some(bucket);
            }
            if buckets.iter().any(Option::is_some) {
                next.insert(e.name.clone(), buckets);
            }
        }
        self.tokens.store(Arc::new(next));
    }

    /// The number of token buckets (for tests: the key set follows the tokens).
    pub fn token_buckets(&self) -> usize {
        self.tokens.load().values().flatten().flatten().count()
    }

    /// Takes one request of `who` on `api`: `Err` when over its limit.
    pub fn check(&self, who: Who<'_>, api: Api) -> Result<(), Over> {
        match who {
            Who::Token { name } => {
                let buckets = self.tokens.load();
                let Some(b) = buckets.get(name).and_then(|b| b[slot(api)].as_ref()) else {
                    return Ok(()); // off
                };
                b.limiter.check().map_err(|e| Over {
                    retry_after: whole_secs(e.wait_time_from(self.clock.now())),
                    limit: b.limit,
                    source: b.source,
                })
            }
            Who::Anonymous { client } => {
                let Some((limit, limiter)) = &self.anon[slot(api)] else {
                    return Ok(());
                };
                let key = self.hasher.hash_one(client) % ANON_BUCKETS;
                limiter.check_key(&key).map_err(|e| Over {
                    retry_after: whole_secs(e.wait_time_from(self.clock.now())),
                    limit: *limit,
                    source: match api {
                        Api::Data => "ANON_RATE_LIMIT",
                        Api::Admin => "ADMIN_RATE_LIMIT",
                    },
                })
            }
        }
    }
}

/// Whole seconds, rounded up, at least 1.
fn whole_secs(d: Duration) -> u64 {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    secs.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::tokens::{new_token, parse_lines, token_line};

    fn limit(s: &str) -> Limit {
        s.parse().unwrap()
    }

    #[test]
    fn limits_are_written_as_rates_with_a_burst_or_off() {
        assert_eq!(limit("off"), Limit::Off);
        assert_eq!(
            limit("200/s"),
            Limit::Rate(Rate {
                count: 200,
                per: Per::Second,
                burst: 200
            })
        );
        assert_eq!(
            limit(" 5/m , burst=10 "),
            Limit::Rate(Rate {
                count: 5,
                per: Per::Minute,
                burst: 10
            })
        );
        for s in [
            "200/s",
            "200/s,burst=400",
            "3/h",
            "off",
            "1/s,burst=1000000",
        ] {
            assert_eq!(limit(s).to_string(), s, "round trip");
        }
        for bad in [
            "",
            "200",
            "200/d",
            "0/s",
            "-1/s",
            "1/s,burst=0",
            "1/s,bust=2",
            "2000000/s",
            "x/s",
            "1/s,burst=",
        ] {
            let e = bad.parse::<Limit>().unwrap_err();
            assert!(
                e.contains("rate limit") || e.contains("whole number"),
                "{bad}: {e}"
            );
        }
        for s in [DEFAULT_RATE, DEFAULT_ADMIN_RATE] {
            assert!(matches!(limit(s), Limit::Rate(_)), "{s}");
        }
        assert_eq!(limit(DEFAULT_ANON_RATE), Limit::Off);
    }

    #[test]
    fn a_quota_has_the_rate_and_burst() {
        let q = match limit("200/s,burst=400") {
            Limit::Rate(r) => r.quota(),
            Limit::Off => unreachable!(),
        };
        assert_eq!(q.replenish_interval(), Duration::from_millis(5));
        assert_eq!(q.burst_size().get(), 400);
        let q = match limit("2/m") {
            Limit::Rate(r) => r.quota(),
            Limit::Off => unreachable!(),
        };
        assert_eq!(q.replenish_interval(), Duration::from_secs(30));
    }

    #[test]
    fn whole_seconds_round_up_and_are_at_least_one() {
        assert_eq!(whole_secs(Duration::ZERO), 1);
        assert_eq!(whole_secs(Duration::from_millis(1)), 1);
        assert_eq!(whole_secs(Duration::from_millis(1001)), 2);
        assert_eq!(whole_secs(Duration::from_secs(30)), 30);
    }

    fn set(text: &str) -> TokenSet {
        TokenSet::new(parse_lines(text).unwrap())
    }

    fn who(name: &str) -> Who<'_> {
        Who::Token { name }
    }

    #[test]
    fn a_token_over_its_rate_is_refused_and_another_is_not() {
        let text = format!(
            "{} rate=1/h\n{}",
            token_line("slow", Scope::Write, &new_token()),
            token_line("fast", Scope::Write, &new_token())
        );
        let limits = RateLimits::new(Defaults::default(), &set(&text));
        assert!(limits.check(who("slow"), Api::Data).is_ok());
        let over = limits.check(who("slow"), Api::Data).unwrap_err();
        assert_eq!(over.limit, limit("1/h"));
        assert_eq!(over.source, "the token file");
        assert!(over.retry_after > 3000, "{over:?}");
        for _ in 0..100 {
            assert!(limits.check(who("fast"), Api::Data).is_ok());
        }
    }

    #[test]
    fn the_buckets_follow_the_token_file() {
        let slow = token_line("slow", Scope::Admin, &new_token());
        let other = token_line("other", Scope::Read, &new_token());
        let limits = RateLimits::new(Defaults::default(), &set(&format!("{slow} rate=1/h")));
        assert_eq!(limits.token_buckets(), 2, "data and admin");
        let _ = limits.check(who("slow"), Api::Data);
        assert!(limits.check(who("slow"), Api::Data).is_err());
        // The same file again keeps the state.
        limits.follow(&set(&format!("{slow} rate=1/h")));
        assert!(limits.check(who("slow"), Api::Data).is_err());
        // A higher rate: a new bucket.
        limits.follow(&set(&format!("{slow} rate=1000/s\n{other}")));
        assert!(limits.check(who("slow"), Api::Data).is_ok());
        assert_eq!(
            limits.token_buckets(),
            3,
            "a read token has no admin bucket"
        );
        // Removed: its buckets go.
        limits.follow(&set(&other));
        assert_eq!(limits.token_buckets(), 1);
        // `off` and an `off` default: no bucket.
        let limits = RateLimits::new(
            Defaults {
                data: Limit::Off,
                ..Defaults::default()
            },
            &set(&format!("{slow} rate=off\n{other}")),
        );
        assert_eq!(limits.token_buckets(), 0);
    }

    #[test]
    fn anonymous_callers_share_a_bounded_set_of_buckets() {
        let limits = RateLimits::new(
            Defaults {
                anonymous: limit("1/h"),
                ..Defaults::default()
            },
            &TokenSet::default(),
        );
        let anon = |client| Who::Anonymous { client };
        assert!(limits.check(anon("10.0.0.1"), Api::Data).is_ok());
        let over = limits.check(anon("10.0.0.1"), Api::Data).unwrap_err();
        assert_eq!(over.source, "ANON_RATE_LIMIT");
        // Many addresses: the key set stays below ANON_BUCKETS.
        for i in 0..5000u32 {
            let client = format!("10.1.{}.{}", i / 256, i % 256);
            let _ = limits.check(Who::Anonymous { client: &client }, Api::Data);
        }
        let (_, limiter) = limits.anon[0].as_ref().unwrap();
        assert!(limiter.len() as u64 <= ANON_BUCKETS, "{}", limiter.len());
    }
}

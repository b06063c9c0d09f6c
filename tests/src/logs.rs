//! What in-process nodes log, told apart by node: each [`OwnNode`] runs on a tokio runtime
//! of its own whose threads carry its label, and [`capture`] records every event of
//! mezzanine's crates (info and above; others from warn) with the name of the thread that
//! emitted it. Tests read the record ([`events`], [`wait_event`]) to know what a node's
//! mover did, and print it as a timeline ([`timeline`]).

use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use mezzanine_core::ShardMap;
use mezzanine_server::ServeConfig;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

use crate::TestServer;

/// One recorded event.
#[derive(Debug, Clone)]
pub struct Logged {
    pub at: Instant,
    /// The emitting thread's name (an [`OwnNode`]'s label for its events).
    pub thread: String,
    pub level: Level,
    pub target: String,
    pub message: String,
    /// The other fields, in the order given, as text (`Display` for strings).
    pub fields: Vec<(String, String)>,
}

impl Logged {
    /// The value of field `name`, if the event has it.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Whether a node labelled `label` emitted it.
    pub fn from(&self, label: &str) -> bool {
        self.thread == label
    }
}

static EVENTS: Mutex<Vec<Logged>> = Mutex::new(Vec::new());
static INSTALLED: OnceLock<()> = OnceLock::new();

struct Capture;

#[derive(Default)]
struct Fields {
    message: String,
    fields: Vec<(String, String)>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_owned();
        } else {
            self.fields
                .push((field.name().to_owned(), value.to_owned()));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.message = format!("{value:?}");
        } else {
            self.fields
                .push((field.name().to_owned(), format!("{value:?}")));
        }
    }
}

impl<S: Subscriber> Layer<S> for Capture {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let meta = event.metadata();
        let ours = meta.target().starts_with("mezzanine");
        if !(ours && *meta.level() <= Level::INFO || *meta.level() <= Level::WARN) {
            return;
        }
        let mut f = Fields::default();
        event.record(&mut f);
        let logged = Logged {
            at: Instant::now(),
            thread: std::thread::current().name().unwrap_or("").to_owned(),
            level: *meta.level(),
            target: meta.target().to_owned(),
            message: f.message,
            fields: f.fields,
        };
        EVENTS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(logged);
    }
}

/// Starts recording (once per test binary; later calls do nothing).
pub fn capture() {
    INSTALLED.get_or_init(|| {
        let subscriber = tracing_subscriber::registry().with(Capture);
        if let Err(e) = tracing::subscriber::set_global_default(subscriber) {
            panic!("another tracing subscriber is installed: {e}");
        }
    });
}

/// Every event recorded so far that satisfies `keep`.
pub fn events(keep: impl Fn(&Logged) -> bool) -> Vec<Logged> {
    EVENTS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter(|e| keep(e))
        .cloned()
        .collect()
}

/// The first recorded event that satisfies `want`, if any.
pub fn first(want: impl Fn(&Logged) -> bool) -> Option<Logged> {
    EVENTS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .find(|e| want(e))
        .cloned()
}

/// Waits for an event that satisfies `want` (recorded before the call or after), panicking
/// with `what` after `within`.
pub async fn wait_event(what: &str, within: Duration, want: impl Fn(&Logged) -> bool) -> Logged {
    let deadline = Instant::now() + within;
    loop {
        if let Some(e) = first(&want) {
            return e;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not logged within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The events of the nodes labelled in `labels` (as `(label, short name)`), as lines with
/// the time relative to `origin` (negative before it).
pub fn timeline(origin: Instant, labels: &[(&str, &str)]) -> String {
    let mut out = String::new();
    // Repeats of one event (a batch's cells, say) are one line with their count.
    let mut repeats = 0usize;
    let mut last: Option<(String, String)> = None;
    for e in events(|e| labels.iter().any(|(l, _)| e.from(l))) {
        let who = labels
            .iter()
            .find(|(l, _)| e.from(l))
            .map_or("?", |(_, s)| s);
        let fields: Vec<String> = e.fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let what = format!(
            "{who} {:5} {}: {} {}",
            e.level,
            e.target,
            e.message,
            fields.join(" ")
        );
        if last.as_ref().is_some_and(|(_, w)| *w == what) {
            repeats += 1;
            continue;
        }
        flush(&mut out, &mut last, repeats);
        repeats = 1;
        let t = if e.at >= origin {
            (e.at - origin).as_secs_f64()
        } else {
            -(origin - e.at).as_secs_f64()
        };
        last = Some((format!("{t:+9.3}s"), what));
    }
    flush(&mut out, &mut last, repeats);
    out
}

fn flush(out: &mut String, last: &mut Option<(String, String)>, repeats: usize) {
    if let Some((t, what)) = last.take() {
        let times = if repeats > 1 {
            format!(" (x{repeats})")
        } else {
            String::new()
        };
        out.push_str(&format!("{t} {what}{times}\n"));
    }
}

/// A node on a tokio runtime of its own, whose threads are all named `label`: what it
/// logs is told apart from what other nodes of the same process log.
pub struct OwnNode {
    pub label: String,
    server: Option<TestServer>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl OwnNode {
    pub async fn start(label: &str, config: ServeConfig, map: ShardMap) -> OwnNode {
        let runtime = match tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(label)
            .enable_all()
            .build()
        {
            Ok(r) => r,
            Err(e) => panic!("no runtime for {label}: {e}"),
        };
        let server = match runtime.spawn(TestServer::start(config, map)).await {
            Ok(s) => s,
            Err(e) => panic!("{label} did not start: {e}"),
        };
        OwnNode {
            label: label.to_owned(),
            server: Some(server),
            runtime: Some(runtime),
        }
    }
}

impl std::ops::Deref for OwnNode {
    type Target = TestServer;

    fn deref(&self) -> &TestServer {
        match &self.server {
            Some(s) => s,
            None => unreachable!("an OwnNode's server lives as long as it does"),
        }
    }
}

impl Drop for OwnNode {
    fn drop(&mut self) {
        drop(self.server.take());
        // Without waiting (allowed inside another runtime, unlike a plain drop).
        if let Some(r) = self.runtime.take() {
            r.shutdown_background();
        }
    }
}

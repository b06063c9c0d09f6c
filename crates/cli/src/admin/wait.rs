//! `--wait`: following a move job or a rebalance until it ends, with progress bars on a
//! terminal, then printing its final state.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use reqwest::Method;

use super::client::{Answer, Client};
use super::progress::{self, JobProgress, RateWindow, Tracker};
use super::types::Job;
use super::{print_json, rebalance, render};

/// How often `--wait` asks for the job.
const POLL_EVERY: Duration = Duration::from_millis(500);
/// How long `--wait` keeps trying while the server cannot be reached.
const WAIT_RETRY_FOR: Duration = Duration::from_secs(60);
/// The window over which `--wait` measures the copy rate.
const RATE_WINDOW: Duration = Duration::from_secs(10);

/// What `--wait` follows: a move job, or a rebalance (read as one job over all its shards).
#[derive(Debug, Clone, Copy)]
pub enum Followed {
    Move,
    Rebalance,
}

impl Followed {
    pub fn noun(self) -> &'static str {
        match self {
            Followed::Move => "move",
            Followed::Rebalance => "rebalance",
        }
    }

    pub fn path(self) -> &'static str {
        match self {
            Followed::Move => "moves",
            Followed::Rebalance => "rebalance",
        }
    }

    pub fn decode(self, answer: &Answer) -> anyhow::Result<Job> {
        Ok(match self {
            Followed::Move => answer.decode::<Job>()?,
            Followed::Rebalance => answer.decode::<rebalance::Rebalance>()?.as_job(),
        })
    }

    fn render(self, job: &Job, answer: &Answer) -> anyhow::Result<String> {
        Ok(match self {
            Followed::Move => render::job(job),
            Followed::Rebalance => rebalance::status(&answer.decode::<rebalance::Rebalance>()?),
        })
    }
}

/// An operator's request on a move job or a rebalance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Abort,
    Complete,
}

impl Action {
    /// As the API names it (`POST .../{id}/abort`).
    pub fn name(self) -> &'static str {
        match self {
            Action::Abort => "abort",
            Action::Complete => "complete",
        }
    }

    /// What the mover does to carry it out.
    fn doing(self) -> &'static str {
        match self {
            Action::Abort => {
                "stops the shards not switched yet (each goes back to its source, the copy is dropped)"
            }
            Action::Complete => "drops the old source copies of the switched shards",
        }
    }
}

/// What `--wait` follows to its end (nothing in flight and no request pending), which says
/// how the end is judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Until {
    /// A job or rebalance (`status --wait`, `start --wait`): failed or aborted is an error.
    Settled,
    /// An operator's request (`abort --wait`, `complete --wait`): its end is judged by it.
    Done(Action),
}

/// Where `--wait` stops, whatever it follows: nothing in flight, no request pending.
fn settled(job: &Job) -> bool {
    !job.is_running() && job.requested.is_none()
}

impl Followed {
    /// The one line about `job` (`answer` as it came).
    fn line(self, job: &Job, answer: &Answer) -> anyhow::Result<String> {
        Ok(match self {
            Followed::Move => render::job_line(job),
            Followed::Rebalance => rebalance::line(&answer.decode::<rebalance::Rebalance>()?),
        })
    }

    /// What `abort` or `complete` prints without `--wait`: the request as taken (the mover
    /// carries it out a moment later), or, if the mover was quicker, the state it led to.
    pub fn requested(self, job: &Job, answer: &Answer, action: Action) -> anyhow::Result<String> {
        let noun = self.noun();
        let id = job.id;
        if job.requested.as_deref() != Some(action.name()) {
            return self.line(job, answer);
        }
        Ok(format!(
            "{noun} {id}: {} requested; the mover {} (until then the {noun} is {})\n\
             follow it with: mezzanine {noun} status {id} --wait\n",
            action.name(),
            action.doing(),
            job.state
        ))
    }
}

/// `--wait`: polls the job until it settles (nothing in flight, no request pending), with
/// progress bars when stdout is a terminal, then prints its final state. An error if it ended
/// failed (or, following `status` or `start`, aborted), or if a `complete` did not end
/// completed.
pub async fn follow(
    c: &Client,
    json: bool,
    what: Followed,
    job: Job,
    answer: Answer,
    until: Until,
) -> anyhow::Result<()> {
    let id = job.id;
    let noun = what.noun();
    let mut bars = (!json && std::io::stdout().is_terminal()).then(|| Bars::new(noun, id));
    let polled = tokio::select! {
        polled = poll_until_settled(c, what, job, answer, bars.as_mut()) => polled,
        _ = tokio::signal::ctrl_c() => {
            if let Some(bars) = &bars {
                bars.clear();
            }
            bail!(
                "stopped waiting; {noun} {id} goes on (follow it with: mezzanine {noun} status {id} --wait)"
            );
        }
    };
    if let Some(bars) = &bars {
        bars.clear();
    }
    let (job, answer) = polled?;
    if json {
        print_json(&answer)?;
    } else {
        print!("{}", what.render(&job, &answer)?);
    }
    let failed = |job: &Job| match &job.error {
        Some(e) => anyhow::anyhow!("{noun} {} {}: {e}", job.id, job.state),
        None => anyhow::anyhow!("{noun} {} {}", job.id, job.state),
    };
    match until {
        Until::Settled if job.is_failure() => Err(failed(&job)),
        Until::Done(_) if job.state == "failed" => Err(failed(&job)),
        Until::Done(Action::Complete) if job.state != "completed" => {
            bail!("{noun} {id} is {}, not completed", job.state)
        }
        Until::Done(Action::Abort) => {
            let switched = job.switched_shards();
            if switched > 0 && !json {
                println!(
                    "{switched} of its shards had switched before the abort: they stay on their targets ({})",
                    match what {
                        Followed::Move => format!("mezzanine move revert {id} moves them back"),
                        Followed::Rebalance => "each move's `mezzanine move revert` moves them back".into(),
                    }
                );
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// The bars of `--wait` on a terminal: the job's total, and below it one per running shard.
struct Bars {
    multi: MultiProgress,
    total: ProgressBar,
    shards: BTreeMap<u64, ProgressBar>,
    tracker: Tracker,
    shown: bool,
}

impl Bars {
    fn new(noun: &str, id: u64) -> Bars {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::hidden());
        let total = multi.add(
            ProgressBar::no_length()
                .with_style(style(
                    "{prefix} [{wide_bar:.cyan/blue}] {human_pos}/{human_len} rows  {msg}",
                ))
                .with_prefix(format!("{noun} {id}")),
        );
        Bars {
            multi,
            total,
            shards: BTreeMap::new(),
            tracker: Tracker::default(),
            shown: false,
        }
    }

    /// Shows `job` as polled now; `rate`: the copy rate measured so far.
    fn update(&mut self, job: &Job, rate: Option<f64>) {
        let view = self.tracker.view(job);
        self.total.set_length(view.job.total);
        self.total.set_position(view.job.copied);
        self.total.set_message(progress::message(&view.job, rate));
        let running: Vec<u64> = view.running.iter().map(|l| l.shard).collect();
        self.shards.retain(|shard, bar| {
            let keep = running.contains(shard);
            if !keep {
                bar.finish_and_clear();
                self.multi.remove(bar);
            }
            keep
        });
        for line in &view.running {
            let bar = self.shards.entry(line.shard).or_insert_with(|| {
                self.multi.add(
                    ProgressBar::no_length()
                        .with_style(style(
                            "  {prefix:>10} [{bar:30.green/blue}] {human_pos}/{human_len} rows  {msg}",
                        ))
                        .with_prefix(format!("shard {}", line.shard)),
                )
            });
            bar.set_length(line.total);
            bar.set_position(line.copied);
            bar.set_message(line.message.clone());
        }
        if !self.shown {
            self.multi.set_draw_target(ProgressDrawTarget::stdout());
            self.shown = true;
        }
    }

    fn message(&self, message: String) {
        self.total.set_message(message);
    }

    fn clear(&self) {
        for bar in self.shards.values() {
            bar.finish_and_clear();
        }
        self.total.finish_and_clear();
        let _ = self.multi.clear();
    }
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

async fn poll_until_settled(
    c: &Client,
    what: Followed,
    mut job: Job,
    mut answer: Answer,
    mut bars: Option<&mut Bars>,
) -> anyhow::Result<(Job, Answer)> {
    let path = job.id.to_string();
    let began = Instant::now();
    let mut rate = RateWindow::new(RATE_WINDOW);
    let mut failing_since: Option<Instant> = None;
    let mut ticker = tokio::time::interval(POLL_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        rate.push(began.elapsed(), JobProgress::of(&job).copied);
        if let Some(bars) = bars.as_deref_mut() {
            bars.update(&job, rate.rate());
        }
        if settled(&job) {
            return Ok((job, answer));
        }
        ticker.tick().await;
        match c.call(Method::GET, &[what.path(), &path], None, None).await {
            Ok(next) => {
                job = what.decode(&next)?;
                answer = next;
                failing_since = None;
            }
            Err(e) if e.is_transient() => {
                let since = *failing_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= WAIT_RETRY_FOR {
                    return Err(e).with_context(|| {
                        format!(
                            "gave up waiting for {} {} after {} s without an answer",
                            what.noun(),
                            job.id,
                            WAIT_RETRY_FOR.as_secs()
                        )
                    });
                }
                if let Some(bars) = bars.as_deref() {
                    bars.message(format!("retrying: {e}"));
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
}

//! `--wait`: following a move job or a rebalance until it ends, with progress bars on a
//! terminal, then printing its final state.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use reqwest::Method;

use super::client::{Answer, Client};
use super::progress::{self, JobProgress, RateWindow};
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
    fn noun(self) -> &'static str {
        match self {
            Followed::Move => "move",
            Followed::Rebalance => "rebalance",
        }
    }

    fn path(self) -> &'static str {
        match self {
            Followed::Move => "moves",
            Followed::Rebalance => "rebalance",
        }
    }

    fn decode(self, answer: &Answer) -> anyhow::Result<Job> {
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

/// `--wait`: polls the job until it is no longer running, with a progress bar when stdout is
/// a terminal, then prints its final state. An error if it ended failed or aborted.
pub async fn follow(
    c: &Client,
    json: bool,
    what: Followed,
    job: Job,
    answer: Answer,
) -> anyhow::Result<()> {
    let id = job.id;
    let noun = what.noun();
    let bar = (!json && std::io::stdout().is_terminal()).then(|| new_bar(noun, id));
    let polled = tokio::select! {
        polled = poll_until_done(c, what, job, answer, bar.as_ref()) => polled,
        _ = tokio::signal::ctrl_c() => {
            if let Some(bar) = &bar {
                bar.finish_and_clear();
            }
            bail!(
                "stopped waiting; {noun} {id} goes on (follow it with: mezzanine {noun} status {id} --wait)"
            );
        }
    };
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let (job, answer) = polled?;
    if json {
        print_json(&answer)?;
    } else {
        print!("{}", what.render(&job, &answer)?);
    }
    if job.is_failure() {
        match &job.error {
            Some(e) => bail!("{noun} {} {}: {e}", job.id, job.state),
            None => bail!("{noun} {} {}", job.id, job.state),
        }
    }
    Ok(())
}

/// A bar, hidden until [`poll_until_done`] has given it the job's numbers.
fn new_bar(noun: &str, id: u64) -> ProgressBar {
    let style = ProgressStyle::with_template(
        "{prefix} [{wide_bar:.cyan/blue}] {human_pos}/{human_len} rows  {msg}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    ProgressBar::hidden()
        .with_style(style)
        .with_prefix(format!("{noun} {id}"))
}

async fn poll_until_done(
    c: &Client,
    what: Followed,
    mut job: Job,
    mut answer: Answer,
    bar: Option<&ProgressBar>,
) -> anyhow::Result<(Job, Answer)> {
    let path = job.id.to_string();
    let began = Instant::now();
    let mut rate = RateWindow::new(RATE_WINDOW);
    let mut failing_since: Option<Instant> = None;
    let mut ticker = tokio::time::interval(POLL_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        let p = JobProgress::of(&job);
        rate.push(began.elapsed(), p.copied);
        if let Some(bar) = bar {
            bar.set_length(p.total);
            bar.set_position(p.copied);
            bar.set_message(progress::message(&p, rate.rate()));
            if bar.is_hidden() {
                bar.set_draw_target(ProgressDrawTarget::stdout());
                bar.tick();
            }
        }
        if !job.is_running() {
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
                if let Some(bar) = bar {
                    bar.set_message(format!("retrying: {e}"));
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
}

//! A leader cut off at each point of a cutover while B takes over: B finishes or an operator aborts through B, and A's stale steps change nothing.

use super::*;

/// A cut off with the source frozen, nothing copied yet: B copies the tail and switches; A's
/// stale tail copy finds the target active and is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cut_after_the_freeze_b_finishes_and_a_stale_tail_changes_nothing() {
    cut_in_cutover("after_freeze", Then::Finishes).await;
}

/// A cut off with the tail copied: B verifies and switches; A's stale verification,
/// retirement and activation repeat what is done (same epoch), changing nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cut_after_the_tail_b_finishes_and_a_stale_cutover_changes_nothing() {
    cut_in_cutover("after_tail", Then::Finishes).await;
}

/// A cut off with the tail verified: B switches; A's stale sequence, retirement and
/// activation change nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cut_after_the_verification_b_finishes_and_a_stale_retirement_changes_nothing() {
    cut_in_cutover("after_verify", Then::Finishes).await;
}

/// A cut off with the source retired: B resumes from a retired source and switches; A's
/// stale activation finds the target active with the same epoch.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cut_after_the_retirement_b_finishes_and_a_stale_activation_changes_nothing() {
    cut_in_cutover("after_retire", Then::Finishes).await;
}

/// A cut off with the target active and the map not switched: B switches; A's stale
/// confirmation reads, its switch cannot reach the catalog.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cut_after_the_activation_b_switches_and_a_changes_nothing() {
    cut_in_cutover("after_activate", Then::Finishes).await;
}

// ---------------------------------------------------------------------------------------------
// An operator aborts the move through B while A is paused
// ---------------------------------------------------------------------------------------------

/// B gives the shard back to db1 and drops db3's copy; A's stale tail copy finds no target.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cut_after_the_freeze_aborted_through_b_and_a_stale_tail_changes_nothing() {
    cut_in_cutover("after_freeze", Then::IsAborted).await;
}

/// A's stale retirement finds the source active again (not frozen) and is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cut_after_the_verification_aborted_through_b_and_a_stale_retirement_is_refused() {
    cut_in_cutover("after_verify", Then::IsAborted).await;
}

/// A had retired the source and B made it active again; A's stale activation finds no
/// target copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cut_after_the_retirement_aborted_through_b_and_a_stale_activation_is_refused() {
    cut_in_cutover("after_retire", Then::IsAborted).await;
}

/// A had activated the target; B demotes and drops it before the source is active again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cut_after_the_activation_aborted_through_b_gives_the_shard_back() {
    cut_in_cutover("after_activate", Then::IsAborted).await;
}

// ---------------------------------------------------------------------------------------------
// Found before the fixes: what A's stale cutover could do
// ---------------------------------------------------------------------------------------------

//! The embedded-agent SDK: the safe-exploration example, run as a test.

#[path = "../examples/safe_exploration.rs"]
mod safe_exploration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_forks_explores_and_applies_the_better_plan() {
    let repo = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let data = tempfile::tempdir().expect("tempdir");
    let outcome = safe_exploration::run(&repo, data.path())
        .await
        .expect("exploration runs");
    // The plans lead to different places, and the agent picked the closer one.
    assert!(
        (outcome.scores[0] - outcome.scores[1]).abs() > 1e-3,
        "plans indistinguishable: {:?}",
        outcome.scores
    );
    let best = if outcome.scores[0] <= outcome.scores[1] {
        0
    } else {
        1
    };
    assert_eq!(outcome.chosen, best);
    // Replaying the winning plan on the original reproduced the fork exactly.
    assert_eq!(outcome.original_final, outcome.winner_final);
    // The forks are gone; the original remains.
    assert_eq!(outcome.twins_left, 1);
}

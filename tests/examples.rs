//! The runnable examples do what they say: each is run here through its
//! `run` function and its summary checked.

mod common;

#[allow(dead_code)]
#[path = "../examples/pubsub.rs"]
mod pubsub;

#[allow(dead_code)]
#[path = "../examples/work_queue.rs"]
mod work_queue;

#[test]
fn pubsub_example_delivers_every_event_to_every_group() {
    let dir = common::TempDir::new("example-pubsub");
    let summary = pubsub::run(dir.path()).unwrap();
    assert_eq!(summary.received.len(), 3);
    for (group, n) in &summary.received {
        assert_eq!(*n, summary.published, "group {group}");
    }
}

#[test]
fn work_queue_example_redelivers_the_dead_workers_job_and_dead_letters_the_poison() {
    let dir = common::TempDir::new("example-work-queue");
    let summary = work_queue::run(dir.path()).unwrap();
    assert_eq!(summary.completed.len(), 300);
    let (name, deliveries) = summary.redelivered.expect("the held job came back");
    assert!(summary.completed.contains(&name));
    assert_eq!(deliveries, 2);
    assert_eq!(
        summary.dead_letters,
        [("poison.png".to_string(), "max-deliveries".to_string())]
    );
}

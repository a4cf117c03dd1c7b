//! Partition assignment strategies: pure functions from members, their
//! subscriptions and (for the sticky strategy) what they own now, to a
//! target assignment. No locks, no I/O.

use std::collections::{BTreeMap, BTreeSet};

use crate::consumer::TopicPartition;

/// How a group splits partitions between its members (Kafka's
/// `partition.assignment.strategy`).
///
/// | strategy | rebalance | result |
/// |---|---|---|
/// | `Range` | eager: every member gives up everything, then gets its new set | per topic, consecutive partition ranges (Kafka's `RangeAssignor`) |
/// | `RoundRobin` | eager | all partitions dealt one by one over the members (`RoundRobinAssignor`) |
/// | `CooperativeSticky` | cooperative: only partitions that move are revoked | balanced, moving as few partitions as possible (`CooperativeStickyAssignor`) |
///
/// Every member of a group must use the same strategy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum AssignmentStrategy {
    /// Consecutive ranges of each topic's partitions.
    Range,
    /// Partitions dealt round-robin over the members.
    RoundRobin,
    /// Balanced and sticky, revoking only what moves (the default).
    #[default]
    CooperativeSticky,
}

impl AssignmentStrategy {
    /// Kafka's protocol name for the strategy.
    pub fn name(self) -> &'static str {
        match self {
            AssignmentStrategy::Range => "range",
            AssignmentStrategy::RoundRobin => "roundrobin",
            AssignmentStrategy::CooperativeSticky => "cooperative-sticky",
        }
    }

    /// Whether a rebalance revokes only the partitions that move (else all).
    pub fn is_cooperative(self) -> bool {
        self == AssignmentStrategy::CooperativeSticky
    }
}

/// One member as the assignor sees it.
#[derive(Debug, Clone)]
pub(crate) struct MemberSpec<'a> {
    /// Sort key: the static instance id if any, else the member id (Kafka
    /// sorts static members by instance id so their ranges stay put).
    pub sort_key: &'a str,
    pub id: &'a str,
    pub topics: &'a [String],
    /// Partitions the member holds now (read by the sticky strategy only).
    pub owned: &'a BTreeSet<TopicPartition>,
}

/// Target assignment per member id. Every member appears, possibly with
/// nothing; every partition of a subscribed topic goes to exactly one
/// member subscribed to that topic.
pub(crate) type Assignment = BTreeMap<String, BTreeSet<TopicPartition>>;

/// Computes the assignment. `partitions` gives each known topic's
/// partition count; subscribed topics missing from it get no partitions.
pub(crate) fn assign(
    strategy: AssignmentStrategy,
    members: &[MemberSpec<'_>],
    partitions: &BTreeMap<String, u32>,
) -> Assignment {
    let mut sorted: Vec<&MemberSpec<'_>> = members.iter().collect();
    sorted.sort_by(|a, b| (a.sort_key, a.id).cmp(&(b.sort_key, b.id)));
    let mut out: Assignment = sorted
        .iter()
        .map(|m| (m.id.to_string(), BTreeSet::new()))
        .collect();
    match strategy {
        AssignmentStrategy::Range => range(&sorted, partitions, &mut out),
        AssignmentStrategy::RoundRobin => round_robin(&sorted, partitions, &mut out),
        AssignmentStrategy::CooperativeSticky => sticky(&sorted, partitions, &mut out),
    }
    out
}

fn subscribes(m: &MemberSpec<'_>, topic: &str) -> bool {
    m.topics.iter().any(|t| t == topic)
}

/// Every partition of every subscribed topic, sorted by (topic, partition).
fn all_partitions(
    members: &[&MemberSpec<'_>],
    partitions: &BTreeMap<String, u32>,
) -> Vec<TopicPartition> {
    let topics: BTreeSet<&str> = members
        .iter()
        .flat_map(|m| m.topics.iter().map(String::as_str))
        .collect();
    topics
        .into_iter()
        .filter_map(|t| partitions.get(t).map(|&n| (t, n)))
        .flat_map(|(t, n)| (0..n).map(move |p| TopicPartition::new(t, p)))
        .collect()
}

/// Kafka's RangeAssignor: per topic, the subscribed members in order get
/// `n / c` consecutive partitions, the first `n % c` one more.
fn range(members: &[&MemberSpec<'_>], partitions: &BTreeMap<String, u32>, out: &mut Assignment) {
    for (topic, &n) in partitions {
        let subscribed: Vec<&&MemberSpec<'_>> =
            members.iter().filter(|m| subscribes(m, topic)).collect();
        if subscribed.is_empty() {
            continue;
        }
        let c = subscribed.len() as u32;
        let (per, extra) = (n / c, n % c);
        for (i, m) in subscribed.iter().enumerate() {
            let i = i as u32;
            let start = i * per + i.min(extra);
            let len = per + u32::from(i < extra);
            let set = out.entry(m.id.to_string()).or_default();
            set.extend((start..start + len).map(|p| TopicPartition::new(topic.as_str(), p)));
        }
    }
}

/// Kafka's RoundRobinAssignor: partitions in (topic, partition) order are
/// dealt to the members in a circle, skipping members not subscribed.
fn round_robin(
    members: &[&MemberSpec<'_>],
    partitions: &BTreeMap<String, u32>,
    out: &mut Assignment,
) {
    if members.is_empty() {
        return;
    }
    let mut next = 0;
    for tp in all_partitions(members, partitions) {
        // Some member subscribes to the topic (all_partitions only lists
        // subscribed topics), so this finds one within a full circle.
        for _ in 0..members.len() {
            let m = members[next % members.len()];
            next += 1;
            if subscribes(m, &tp.topic) {
                out.entry(m.id.to_string()).or_default().insert(tp);
                break;
            }
        }
    }
}

/// Balanced and sticky: members keep what they own (up to a fair share),
/// the rest goes to the least loaded eligible member, then partitions move
/// one at a time from the most to the least loaded member until no move
/// narrows the gap. Balanced means counts differ by at most one when all
/// members subscribe to the same topics.
fn sticky(members: &[&MemberSpec<'_>], partitions: &BTreeMap<String, u32>, out: &mut Assignment) {
    if members.is_empty() {
        return;
    }
    let all = all_partitions(members, partitions);
    let valid: BTreeSet<&TopicPartition> = all.iter().collect();
    // Fair share if everyone could take everything: ceil(N / M).
    let ceiling = all.len().div_ceil(members.len());
    let mut taken: BTreeSet<TopicPartition> = BTreeSet::new();
    for m in members {
        let set = out.entry(m.id.to_string()).or_default();
        for tp in m.owned {
            if set.len() >= ceiling {
                break;
            }
            if valid.contains(tp) && subscribes(m, &tp.topic) && taken.insert(tp.clone()) {
                set.insert(tp.clone());
            }
        }
    }
    for tp in all.iter().filter(|tp| !taken.contains(*tp)) {
        let least = members
            .iter()
            .filter(|m| subscribes(m, &tp.topic))
            .min_by_key(|m| out[m.id].len());
        if let Some(m) = least {
            out.entry(m.id.to_string()).or_default().insert(tp.clone());
        }
    }
    rebalance_counts(members, out);
}

/// Moves partitions from the most to the least loaded members while a move
/// narrows a gap of two or more. Each move lowers the sum of squared
/// counts, so this ends.
fn rebalance_counts(members: &[&MemberSpec<'_>], out: &mut Assignment) {
    loop {
        let mut by_load: Vec<&&MemberSpec<'_>> = members.iter().collect();
        by_load.sort_by_key(|m| out[m.id].len());
        let mut moved = false;
        'search: for heavy in by_load.iter().rev() {
            for light in &by_load {
                if out[heavy.id].len() <= out[light.id].len() + 1 {
                    break;
                }
                let candidate = out[heavy.id]
                    .iter()
                    .rev()
                    .find(|tp| subscribes(light, &tp.topic))
                    .cloned();
                if let Some(tp) = candidate {
                    if let Some(set) = out.get_mut(heavy.id) {
                        set.remove(&tp);
                    }
                    out.entry(light.id.to_string()).or_default().insert(tp);
                    moved = true;
                    break 'search;
                }
            }
        }
        if !moved {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tps(list: &[(&str, u32)]) -> BTreeSet<TopicPartition> {
        list.iter()
            .map(|&(t, p)| TopicPartition::new(t, p))
            .collect()
    }

    struct Fixture {
        ids: Vec<String>,
        topics: Vec<Vec<String>>,
        owned: Vec<BTreeSet<TopicPartition>>,
    }

    impl Fixture {
        fn new(members: usize, topics: &[&str]) -> Self {
            Fixture {
                ids: (0..members).map(|i| format!("m{i}")).collect(),
                topics: vec![topics.iter().map(|t| t.to_string()).collect(); members],
                owned: vec![BTreeSet::new(); members],
            }
        }

        fn specs(&self) -> Vec<MemberSpec<'_>> {
            (0..self.ids.len())
                .map(|i| MemberSpec {
                    sort_key: &self.ids[i],
                    id: &self.ids[i],
                    topics: &self.topics[i],
                    owned: &self.owned[i],
                })
                .collect()
        }

        fn assign(&self, s: AssignmentStrategy, parts: &[(&str, u32)]) -> Assignment {
            let parts = parts.iter().map(|&(t, n)| (t.to_string(), n)).collect();
            assign(s, &self.specs(), &parts)
        }
    }

    /// Every partition exactly once, only to subscribers.
    fn check_complete(f: &Fixture, a: &Assignment, parts: &[(&str, u32)]) {
        let mut seen = BTreeSet::new();
        for (i, id) in f.ids.iter().enumerate() {
            for tp in &a[id] {
                assert!(
                    f.topics[i].contains(&tp.topic),
                    "{id} got unsubscribed {tp:?}"
                );
                assert!(seen.insert(tp.clone()), "{tp:?} assigned twice");
            }
        }
        let expected: usize = parts
            .iter()
            .filter(|(t, _)| f.topics.iter().any(|ts| ts.iter().any(|x| x == t)))
            .map(|&(_, n)| n as usize)
            .sum();
        assert_eq!(seen.len(), expected);
    }

    fn counts(f: &Fixture, a: &Assignment) -> Vec<usize> {
        f.ids.iter().map(|id| a[id].len()).collect()
    }

    #[test]
    fn range_matches_kafka_for_two_topics() {
        // Kafka's RangeAssignor doc example: t0 and t1 with 3 partitions,
        // C0 gets t0p0, t0p1, t1p0, t1p1; C1 gets t0p2, t1p2.
        let f = Fixture::new(2, &["t0", "t1"]);
        let a = f.assign(AssignmentStrategy::Range, &[("t0", 3), ("t1", 3)]);
        assert_eq!(a["m0"], tps(&[("t0", 0), ("t0", 1), ("t1", 0), ("t1", 1)]));
        assert_eq!(a["m1"], tps(&[("t0", 2), ("t1", 2)]));
    }

    #[test]
    fn round_robin_matches_kafka_for_two_topics() {
        // Kafka's RoundRobinAssignor doc example: C0 gets t0p0, t0p2, t1p1;
        // C1 gets t0p1, t1p0, t1p2.
        let f = Fixture::new(2, &["t0", "t1"]);
        let a = f.assign(AssignmentStrategy::RoundRobin, &[("t0", 3), ("t1", 3)]);
        assert_eq!(a["m0"], tps(&[("t0", 0), ("t0", 2), ("t1", 1)]));
        assert_eq!(a["m1"], tps(&[("t0", 1), ("t1", 0), ("t1", 2)]));
    }

    #[test]
    fn every_strategy_is_complete_and_balanced_for_many_shapes() {
        for strategy in [
            AssignmentStrategy::Range,
            AssignmentStrategy::RoundRobin,
            AssignmentStrategy::CooperativeSticky,
        ] {
            for members in 1..=7 {
                for n in [0, 1, 2, 3, 5, 8, 16, 31] {
                    let f = Fixture::new(members, &["t"]);
                    let parts = [("t", n)];
                    let a = f.assign(strategy, &parts);
                    check_complete(&f, &a, &parts);
                    let c = counts(&f, &a);
                    let (lo, hi) = (c.iter().min().unwrap(), c.iter().max().unwrap());
                    assert!(hi - lo <= 1, "{strategy:?} {members}x{n}: {c:?}");
                }
            }
        }
    }

    #[test]
    fn strategies_respect_different_subscriptions() {
        for strategy in [
            AssignmentStrategy::Range,
            AssignmentStrategy::RoundRobin,
            AssignmentStrategy::CooperativeSticky,
        ] {
            let mut f = Fixture::new(3, &["a"]);
            f.topics[1] = vec!["a".into(), "b".into()];
            f.topics[2] = vec!["b".into()];
            let parts = [("a", 4), ("b", 5), ("unsubscribed", 3)];
            let a = f.assign(strategy, &parts);
            check_complete(&f, &a, &parts);
        }
    }

    #[test]
    fn sticky_moves_only_what_must_move_when_a_member_joins() {
        let mut f = Fixture::new(3, &["t"]);
        let parts = [("t", 12)];
        let first = f.assign(AssignmentStrategy::CooperativeSticky, &parts);
        for (i, id) in f.ids.clone().iter().enumerate() {
            f.owned[i] = first[id].clone();
        }
        // A fourth member joins: each old member gives up exactly one.
        f.ids.push("m3".into());
        f.topics.push(vec!["t".into()]);
        f.owned.push(BTreeSet::new());
        let second = f.assign(AssignmentStrategy::CooperativeSticky, &parts);
        check_complete(&f, &second, &parts);
        assert_eq!(counts(&f, &second), vec![3, 3, 3, 3]);
        for i in 0..3 {
            let id = &f.ids[i];
            assert!(second[id].is_subset(&f.owned[i]), "{id} gained a partition");
        }
    }

    #[test]
    fn sticky_keeps_survivors_when_a_member_leaves() {
        let mut f = Fixture::new(4, &["t"]);
        let parts = [("t", 10)];
        let first = f.assign(AssignmentStrategy::CooperativeSticky, &parts);
        for (i, id) in f.ids.clone().iter().enumerate() {
            f.owned[i] = first[id].clone();
        }
        // m1 leaves: survivors keep all they had and split m1's share.
        f.ids.remove(1);
        f.topics.remove(1);
        f.owned.remove(1);
        let second = f.assign(AssignmentStrategy::CooperativeSticky, &parts);
        check_complete(&f, &second, &parts);
        for (i, id) in f.ids.iter().enumerate() {
            assert!(f.owned[i].is_subset(&second[id]), "{id} lost a partition");
        }
        let c = counts(&f, &second);
        assert!(c.iter().max().unwrap() - c.iter().min().unwrap() <= 1);
    }

    #[test]
    fn sticky_ignores_owned_partitions_that_vanished_or_are_claimed_twice() {
        let mut f = Fixture::new(2, &["t"]);
        f.owned[0] = tps(&[("t", 0), ("t", 7), ("gone", 0)]);
        f.owned[1] = tps(&[("t", 0)]);
        let parts = [("t", 2)];
        let a = f.assign(AssignmentStrategy::CooperativeSticky, &parts);
        check_complete(&f, &a, &parts);
        assert!(a["m0"].contains(&TopicPartition::new("t", 0)));
    }
}

//! Ownership of traces: rendezvous (highest-random-weight) hashing of the trace id
//! over the ready members of the ring.
//!
//! Every member scores every trace id with a hash seeded by the member's address;
//! the highest score owns the trace. Rendezvous hashing was chosen over a token
//! ring or jump hashing because it needs no virtual nodes to balance, works with
//! arbitrary member names (pod addresses, not 0..N), and moves exactly the traces
//! whose best member changed when one member joins or leaves: on average 1/N of
//! them (Thaler & Ravishankar, "Using name-based mappings to increase hit rates",
//! 1998). Pure: replicas that see the same member set compute the same owner,
//! whatever order they saw the members in.

use std::sync::Arc;

use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

use crate::sampling::TraceId;

/// One ring member: the address its peers forward to (`host:port` of its ring
/// listener), which is also its identity on the ring.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Member {
    addr: Arc<str>,
    seed: u64,
}

impl Member {
    pub fn new(addr: &str) -> Self {
        Self {
            addr: Arc::from(addr),
            // xxh3 is specified byte for byte (not std's unspecified `Hash`), so
            // every replica and every gateway version computes the same seed.
            seed: xxh3_64(addr.as_bytes()),
        }
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    pub fn addr_arc(&self) -> Arc<str> {
        self.addr.clone()
    }

    fn score(&self, id: &TraceId) -> u64 {
        xxh3_64_with_seed(id, self.seed)
    }
}

/// The ready members of the ring, as one replica sees them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ring {
    /// Sorted and deduplicated, so equal sets compare equal.
    members: Vec<Member>,
}

impl Ring {
    pub fn new<'a>(addrs: impl IntoIterator<Item = &'a str>) -> Self {
        let mut members: Vec<Member> = addrs.into_iter().map(Member::new).collect();
        members.sort();
        members.dedup();
        Self { members }
    }

    pub fn members(&self) -> &[Member] {
        &self.members
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn contains(&self, addr: &str) -> bool {
        self.members.iter().any(|m| &*m.addr == addr)
    }

    /// The member owning `id`; `None` for an empty ring. Ties (a 2^-64 event) go
    /// to the smaller address, so they too are decided the same everywhere.
    pub fn owner(&self, id: &TraceId) -> Option<&Member> {
        self.owner_index(id).map(|i| &self.members[i])
    }

    /// [`Ring::owner`] as an index into [`Ring::members`].
    pub fn owner_index(&self, id: &TraceId) -> Option<usize> {
        let mut best: Option<(usize, u64)> = None;
        for (i, m) in self.members.iter().enumerate() {
            let s = m.score(id);
            match best {
                Some((_, b)) if b >= s => {}
                _ => best = Some((i, s)),
            }
        }
        best.map(|(i, _)| i)
    }

    /// The same ring without `addr` (a member found unreachable).
    pub fn without(&self, addr: &str) -> Self {
        Self {
            members: self
                .members
                .iter()
                .filter(|m| &*m.addr != addr)
                .cloned()
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ids(seed: u64, n: usize) -> Vec<TraceId> {
        let mut rng = fastrand::Rng::with_seed(seed);
        (0..n)
            .map(|_| {
                let mut id = [0u8; 16];
                rng.fill(&mut id);
                id
            })
            .collect()
    }

    fn addrs(n: usize) -> Vec<String> {
        (0..n)
            .map(|i| format!("10.0.{}.{}:4319", i / 200, i % 200 + 1))
            .collect()
    }

    #[test]
    fn empty_ring_owns_nothing() {
        assert!(Ring::default().owner(&[7; 16]).is_none());
    }

    #[test]
    fn load_is_balanced() {
        let a = addrs(3);
        let ring = Ring::new(a.iter().map(String::as_str));
        let mut counts = std::collections::HashMap::new();
        for id in ids(1, 30_000) {
            *counts
                .entry(ring.owner(&id).map(|m| m.addr().to_string()))
                .or_insert(0usize) += 1;
        }
        for n in counts.values() {
            // 10,000 expected each; 5 sigma of a binomial(30000, 1/3) is ~410.
            assert!((9_500..=10_500).contains(n), "unbalanced: {counts:?}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Replicas that learned the same members in any order agree on every owner.
        #[test]
        fn same_membership_same_owner(n in 1usize..12, shuffle in any::<u64>(), seed in any::<u64>()) {
            let a = addrs(n);
            let mut b = a.clone();
            fastrand::Rng::with_seed(shuffle).shuffle(&mut b);
            let r1 = Ring::new(a.iter().map(String::as_str));
            let r2 = Ring::new(b.iter().map(String::as_str));
            for id in ids(seed, 500) {
                prop_assert_eq!(r1.owner(&id), r2.owner(&id));
            }
        }

        /// One member joining moves ≈1/(N+1) of the trace ids, all of them to the
        /// new member; one leaving moves only its own ≈1/N, spread over the others.
        #[test]
        fn one_change_moves_about_one_nth(n in 2usize..10, seed in any::<u64>()) {
            let a = addrs(n + 1);
            let before = Ring::new(a[..n].iter().map(String::as_str));
            let after = Ring::new(a.iter().map(String::as_str));
            let sample = ids(seed, 20_000);
            let mut moved = 0usize;
            for id in &sample {
                let (o1, o2) = (before.owner(id), after.owner(id));
                if o1 != o2 {
                    moved += 1;
                    // Only to the newcomer: no trace moves between old members.
                    prop_assert_eq!(o2.map(Member::addr), Some(a[n].as_str()));
                }
            }
            let share = moved as f64 / sample.len() as f64;
            let expected = 1.0 / (n + 1) as f64;
            prop_assert!((share - expected).abs() < 0.02, "joined: moved {share}, expected {expected}");

            // The reverse: the same member leaving moves exactly what it owned.
            let mut moved_back = 0usize;
            for id in &sample {
                let (o1, o2) = (after.owner(id), before.owner(id));
                if o1 != o2 {
                    moved_back += 1;
                    prop_assert_eq!(o1.map(Member::addr), Some(a[n].as_str()));
                }
            }
            prop_assert_eq!(moved, moved_back);
        }
    }
}

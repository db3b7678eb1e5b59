//! Quorum arithmetic for simple majorities and joint configurations (thesis §4.3).

use std::collections::BTreeSet;

use crate::types::{LogIndex, NodeId};

/// The outcome of counting votes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VoteResult {
    /// A quorum granted.
    Won,
    /// A quorum can no longer be reached.
    Lost,
    /// Not decided yet.
    Pending,
}

/// A simple majority of a set of voters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MajorityQuorum {
    voters: BTreeSet<NodeId>,
}

impl MajorityQuorum {
    /// A majority rule over `voters`.
    pub fn new(voters: impl IntoIterator<Item = NodeId>) -> Self {
        MajorityQuorum { voters: voters.into_iter().collect() }
    }

    /// The voters.
    pub fn voters(&self) -> &BTreeSet<NodeId> {
        &self.voters
    }

    /// The highest index that a majority has reached, given each voter's index
    /// (`None` for an unknown voter, counted as 0). An empty set commits everything.
    pub fn committed_index(&self, index_of: impl Fn(NodeId) -> Option<LogIndex>) -> LogIndex {
        if self.voters.is_empty() {
            return LogIndex::MAX;
        }
        let n = self.voters.len();
        // This runs on every acknowledgement: no allocation for the usual small clusters.
        let mut small = [0 as LogIndex; 9];
        let mut large = Vec::new();
        let idx: &mut [LogIndex] = if n <= small.len() {
            &mut small[..n]
        } else {
            large.resize(n, 0);
            &mut large
        };
        for (slot, &v) in idx.iter_mut().zip(&self.voters) {
            *slot = index_of(v).unwrap_or(0);
        }
        idx.sort_unstable_by(|a, b| b.cmp(a));
        idx[n / 2]
    }

    /// Counts votes: `vote_of(v)` is `Some(true)` for granted, `Some(false)` for
    /// rejected, `None` for no answer yet. An empty set always wins.
    pub fn vote_result(&self, vote_of: impl Fn(NodeId) -> Option<bool>) -> VoteResult {
        if self.voters.is_empty() {
            return VoteResult::Won;
        }
        let (mut yes, mut missing) = (0, 0);
        for &v in &self.voters {
            match vote_of(v) {
                Some(true) => yes += 1,
                Some(false) => {}
                None => missing += 1,
            }
        }
        let need = self.voters.len() / 2 + 1;
        if yes >= need {
            VoteResult::Won
        } else if yes + missing >= need {
            VoteResult::Pending
        } else {
            VoteResult::Lost
        }
    }
}

/// A configuration's quorum rule: a majority of the incoming voters and, during joint
/// consensus, also a majority of the outgoing voters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JointQuorum {
    incoming: MajorityQuorum,
    outgoing: Option<MajorityQuorum>,
}

impl JointQuorum {
    /// A joint rule; with `outgoing == None` it is a simple majority of `incoming`.
    pub fn new(incoming: MajorityQuorum, outgoing: Option<MajorityQuorum>) -> Self {
        JointQuorum { incoming, outgoing }
    }

    /// Whether `id` votes in either half.
    pub fn contains(&self, id: NodeId) -> bool {
        self.incoming.voters.contains(&id) || self.outgoing.as_ref().is_some_and(|o| o.voters.contains(&id))
    }

    /// Every voter of both halves.
    pub fn voters(&self) -> BTreeSet<NodeId> {
        let mut all = self.incoming.voters.clone();
        if let Some(o) = &self.outgoing {
            all.extend(o.voters.iter().copied());
        }
        all
    }

    /// The highest index committed under both halves.
    pub fn committed_index(&self, index_of: impl Fn(NodeId) -> Option<LogIndex>) -> LogIndex {
        let a = self.incoming.committed_index(&index_of);
        match &self.outgoing {
            Some(o) => a.min(o.committed_index(&index_of)),
            None => a,
        }
    }

    /// The election outcome under both halves.
    pub fn vote_result(&self, vote_of: impl Fn(NodeId) -> Option<bool>) -> VoteResult {
        let a = self.incoming.vote_result(&vote_of);
        let b = self.outgoing.as_ref().map_or(VoteResult::Won, |o| o.vote_result(&vote_of));
        match (a, b) {
            (VoteResult::Won, VoteResult::Won) => VoteResult::Won,
            (VoteResult::Lost, _) | (_, VoteResult::Lost) => VoteResult::Lost,
            _ => VoteResult::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn majority_commit_is_the_median_of_match_indexes() {
        let q = MajorityQuorum::new([1, 2, 3]);
        let m: HashMap<u64, u64> = [(1, 5), (2, 3), (3, 9)].into();
        assert_eq!(q.committed_index(|id| m.get(&id).copied()), 5);
        let q = MajorityQuorum::new([1, 2, 3, 4]);
        let m: HashMap<u64, u64> = [(1, 5), (2, 3), (3, 9), (4, 1)].into();
        assert_eq!(q.committed_index(|id| m.get(&id).copied()), 3);
    }

    #[test]
    fn large_majority_commit_is_the_median_too() {
        let q = MajorityQuorum::new(1..=11);
        assert_eq!(q.committed_index(Some), 6, "indexes 1..=11, a majority of 6 has reached 6");
    }

    #[test]
    fn majority_votes_win_lose_or_pend() {
        let q = MajorityQuorum::new([1, 2, 3]);
        assert_eq!(q.vote_result(|id| (id == 1).then_some(true)), VoteResult::Pending);
        assert_eq!(q.vote_result(|id| (id <= 2).then_some(true)), VoteResult::Won);
        assert_eq!(q.vote_result(|id| if id == 1 { Some(true) } else { Some(false) }), VoteResult::Lost);
    }

    #[test]
    fn joint_quorum_needs_both_majorities() {
        let q = JointQuorum::new(MajorityQuorum::new([1, 2, 3]), Some(MajorityQuorum::new([3, 4, 5])));
        let m: HashMap<u64, u64> = [(1, 9), (2, 9), (3, 2), (4, 4), (5, 1)].into();
        assert_eq!(q.committed_index(|id| m.get(&id).copied()), 2);
        assert_eq!(q.vote_result(|id| [1, 2].contains(&id).then_some(true)), VoteResult::Pending);
        assert_eq!(q.vote_result(|id| [1, 2, 4, 5].contains(&id).then_some(true)), VoteResult::Won);
        assert_eq!(q.vote_result(|id| if [1, 2].contains(&id) { Some(true) } else { Some(false) }), VoteResult::Lost);
    }
}

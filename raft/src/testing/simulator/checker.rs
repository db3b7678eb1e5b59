//! The invariant checks run after every simulation step: election safety, state machine
//! safety, log matching and leader completeness (paper figure 3 and §5.4).

use std::collections::BTreeMap;

use super::cluster::ClusterState;
use crate::sync::lock;
use crate::types::{Entry, LogIndex, NodeId, Term};
use crate::Role;

/// Invariant checks shared by the scripted tests and the randomized runs.
pub(super) struct Checker {
    pub(super) seed: u64,
    next_op: u64,
    /// Election safety: the leader seen for each term.
    pub(super) leaders: BTreeMap<Term, NodeId>,
    /// State machine safety: the operation applied at each index.
    applied: BTreeMap<LogIndex, u64>,
    /// Exactly once: the index each operation was applied at.
    applied_at: std::collections::HashMap<u64, LogIndex>,
    /// The committed log as first observed: index -> (entry, the observer's term). The
    /// entry was committed in that term or earlier, so every leader of a later term
    /// must hold it.
    committed: BTreeMap<LogIndex, (Entry, Term)>,
    pub(super) steps: u64,
    last_roles: BTreeMap<NodeId, (Role, Term)>,
}

impl Checker {
    pub(super) fn new(seed: u64) -> Self {
        Checker {
            seed,
            next_op: 1,
            leaders: BTreeMap::new(),
            applied: BTreeMap::new(),
            applied_at: std::collections::HashMap::new(),
            committed: BTreeMap::new(),
            steps: 0,
            last_roles: BTreeMap::new(),
        }
    }

    pub(super) fn next_op(&mut self) -> u64 {
        self.next_op += 1;
        self.next_op | (1 << 62)
    }

    pub(super) fn check_step(&mut self, state: &ClusterState) -> Result<(), String> {
        self.steps += 1;
        // Election safety (paper figure 3): at most one leader per term, ever.
        for (id, role, _commit, term) in state.statuses() {
            if self.last_roles.get(&id) != Some(&(role, term)) {
                self.last_roles.insert(id, (role, term));
                state.log(format!("node {id} is {role:?} in term {term}"));
            }
            if role == Role::Leader {
                if let Some(&other) = self.leaders.get(&term) {
                    if other != id {
                        return Err(format!("election safety: nodes {other} and {id} both lead term {term}"));
                    }
                } else {
                    self.leaders.insert(term, id);
                }
            }
        }
        // State machine safety: every node applies the same operation at each index, in
        // increasing index order, exactly once. Exactly once per operation, too: a client
        // retries an operation under the same session (client, seq), and the session
        // layer must never pass it to the state machine at a second index.
        let mut nodes = lock(&state.nodes);
        for (&id, slot) in nodes.iter_mut() {
            let applied = lock(&slot.applied);
            for k in slot.applied_checked..applied.len() {
                let (index, op) = applied[k];
                if k > 0 && applied[k - 1].0 >= index {
                    return Err(format!(
                        "state machine safety: node {id} applied index {index} after index {}",
                        applied[k - 1].0
                    ));
                }
                match self.applied.get(&index) {
                    Some(&o) if o != op => {
                        return Err(format!(
                        "state machine safety: node {id} applied op {op} at index {index}, another node applied op {o}"
                    ))
                    }
                    Some(_) => {}
                    None => {
                        self.applied.insert(index, op);
                    }
                }
                match self.applied_at.insert(op, index) {
                    Some(first) if first != index => {
                        return Err(format!(
                        "exactly once: node {id} applied op {op} at index {index}, and it was applied at index {first}"
                    ))
                    }
                    _ => {}
                }
            }
            slot.applied_checked = applied.len();
        }
        drop(nodes);
        self.check_logs(state, self.steps % 256 == 0)
    }

    /// Log matching and leader completeness, read from the stores, incrementally: every
    /// entry at or below a node's commit index equals the committed entry first observed
    /// there; a leader's log holds every entry committed in an earlier term. With
    /// `full`, also every pair of whole logs: if they agree on an index's term they
    /// agree on the whole prefix.
    pub(super) fn check_logs(&mut self, state: &ClusterState, full: bool) -> Result<(), String> {
        let mut nodes = lock(&state.nodes);
        for (&id, slot) in nodes.iter_mut() {
            let Some(raft) = &slot.raft else { continue };
            let (role, commit, durable, term) = raft.with_status(|s| (s.role, s.commit_index, s.durable_index, s.term));
            let upto = commit.min(durable);
            if upto > slot.log_checked {
                for e in slot.store.entries_in(slot.log_checked + 1, upto) {
                    match self.committed.get(&e.index) {
                        Some((c, _)) if *c != e => {
                            return Err(format!(
                                "log matching: node {id} holds {e:?} at committed index {}, committed entry is {c:?}",
                                e.index
                            ))
                        }
                        Some(_) => {}
                        None => {
                            self.committed.insert(e.index, (e, term));
                        }
                    }
                }
                slot.log_checked = upto;
            }
            // Leader completeness (paper §5.4): once the leader's log is durable that far,
            // it holds every entry committed in an earlier term.
            if role == Role::Leader {
                if slot.leader_checked.0 != term {
                    slot.leader_checked = (term, 0);
                }
                let want = self.committed.range(..=durable).next_back().map_or(0, |(&i, _)| i);
                if want > slot.leader_checked.1 {
                    let from = slot.leader_checked.1 + 1;
                    let held = slot.store.entries_in(from, want);
                    // Entries up to the purge point are covered by the leader's snapshot.
                    let purged = slot.store.purged_index();
                    let first = held.first().map_or(u64::MAX, |e| e.index);
                    for (idx, (c, _)) in
                        self.committed.range(from..=want).filter(|(i, (_, t))| *t < term && **i > purged)
                    {
                        let e = idx.checked_sub(first).and_then(|k| held.get(k as usize));
                        if e != Some(c) {
                            return Err(format!(
                                "leader completeness: leader {id} of term {term} has {e:?} at index {idx}, committed entry is {c:?}"
                            ));
                        }
                    }
                    slot.leader_checked.1 = want;
                }
            }
        }
        if full {
            let logs: Vec<(NodeId, Vec<Entry>)> =
                nodes.iter().map(|(&id, s)| (id, s.store.entries_snapshot())).collect();
            // Logs may start at different indexes (purged after snapshots): compare what
            // both hold.
            for (i, (a, la)) in logs.iter().enumerate() {
                for (b, lb) in logs.iter().skip(i + 1) {
                    let (Some(fa), Some(fb)) = (la.first().map(|e| e.index), lb.first().map(|e| e.index)) else {
                        continue;
                    };
                    let start = fa.max(fb);
                    let (sa, sb) = ((start - fa) as usize, (start - fb) as usize);
                    let (ca, cb) = (la.get(sa..).unwrap_or_default(), lb.get(sb..).unwrap_or_default());
                    let common = ca.len().min(cb.len());
                    if let Some(k) = (0..common).rev().find(|&k| ca[k].term == cb[k].term) {
                        if ca[..=k] != cb[..=k] {
                            return Err(format!(
                                "log matching: nodes {a} and {b} agree on the term at index {} but differ before it",
                                start + k as u64
                            ));
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

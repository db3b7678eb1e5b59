//! The core's deadlines: one [`Timer`] enum and a table of them (quinn's `TimerTable`
//! in spirit). Time enters the core only as the `now` argument of its inputs; the core
//! asks for a tick with [`Action::SetTimer`](super::Action::SetTimer) at the earliest
//! deadline its role needs.
//!
//! - [`Timer::Election`]: a follower or candidate that hears from no leader within a
//!   randomized election timeout campaigns (paper §5.2, thesis §9.6 for pre-vote);
//! - [`Timer::Heartbeat`]: a leader sends heartbeats every heartbeat interval (paper
//!   §5.2), independent of the replication window;
//! - [`Timer::CheckQuorum`]: a leader checks once per maximum election timeout that a
//!   quorum heard from it (thesis §6.2);
//! - [`Timer::Transfer`]: a leader gives up a leadership transfer that has not ended
//!   within an election timeout (thesis §3.10, `transfer.rs`);
//! - and, not a protocol timer, the time a follower's unanswered forward or read-index
//!   request is due to be sent again (`forward.rs`, `Forwarding::resend_at`).

use std::time::Duration;

use super::{RaftCore, Role};
use crate::types::Instant;

/// A deadline the core keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Timer {
    /// When a node without a live leader campaigns.
    Election,
    /// When a leader sends its next periodic heartbeats.
    Heartbeat,
    /// When a leader next checks that a quorum is in contact.
    CheckQuorum,
    /// When a leader gives up the leadership transfer in progress.
    Transfer,
}

/// How many [`Timer`]s there are (the table's size).
const TIMERS: usize = 4;

/// The deadline of every [`Timer`], and the last deadline asked of the driver.
#[derive(Debug)]
pub(crate) struct Timers {
    deadlines: [Instant; TIMERS],
    /// The deadline of the last [`Action::SetTimer`](super::Action::SetTimer).
    pub(crate) last_set: Option<Instant>,
}

impl Timers {
    /// Every timer due at `now`.
    pub(crate) fn new(now: Instant) -> Self {
        Timers { deadlines: [now; TIMERS], last_set: None }
    }

    /// When `timer` is due.
    pub(crate) fn get(&self, timer: Timer) -> Instant {
        self.deadlines[timer as usize]
    }

    /// Sets `timer` to fire at `at`.
    pub(crate) fn set(&mut self, timer: Timer, at: Instant) {
        self.deadlines[timer as usize] = at;
    }
}

impl RaftCore {
    /// The time at which the core next needs a [`Input::Tick`](super::Input::Tick).
    pub fn next_deadline(&self) -> Instant {
        let protocol = match self.role {
            Role::Leader => {
                let t = self.timers.get(Timer::Heartbeat).min(self.timers.get(Timer::CheckQuorum));
                if self.transfer.is_some() {
                    t.min(self.timers.get(Timer::Transfer))
                } else {
                    t
                }
            }
            _ if self.may_campaign() => self.timers.get(Timer::Election),
            // A node outside the configuration never campaigns; wake rarely.
            _ => self.timers.get(Timer::Election).max(self.timers.get(Timer::Heartbeat)),
        };
        // A follower's unanswered client requests are sent again (`forward.rs`).
        self.forwarding.resend_at.map_or(protocol, |r| r.min(protocol))
    }

    pub(crate) fn tick(&mut self, now: Instant) {
        if self.role == Role::Leader {
            self.transfer_timed_out(now);
            if now >= self.timers.get(Timer::CheckQuorum) {
                self.check_quorum(now);
                if self.role != Role::Leader {
                    return;
                }
            }
            if now >= self.timers.get(Timer::Heartbeat) {
                self.timers.set(Timer::Heartbeat, now.add(self.cfg.heartbeat_interval));
                self.send_heartbeats(true);
            }
        } else if now >= self.timers.get(Timer::Election) {
            self.reset_election_deadline(now);
            if self.may_campaign() {
                self.campaign(now);
            }
        }
    }

    pub(crate) fn reset_election_deadline(&mut self, now: Instant) {
        let min = self.cfg.election_timeout_min.as_nanos() as u64;
        let max = self.cfg.election_timeout_max.as_nanos() as u64;
        let timeout = self.rng.u64(min..max.max(min + 1));
        self.timers.set(Timer::Election, now.add(Duration::from_nanos(timeout)));
    }
}

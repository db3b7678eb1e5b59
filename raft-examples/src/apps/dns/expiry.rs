//! The expiry clock: every node times each instance with a ttl from the moment it sees
//! its current generation (registration or renewal) applied; the leader proposes
//! [`DnsCommand::Expire`] for the ones whose ttl passed. A node that becomes leader, or
//! sees a new term as leader, restarts the clock for every instance, so a leader change
//! never expires an instance early. The state machine itself never reads a clock.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use raft::{LogIndex, Term};

use super::state::{DnsCommand, Registry};

/// How often the clock looks at the registry.
pub const TICK: Duration = Duration::from_millis(250);

/// When this node first saw each instance's current generation.
#[derive(Debug, Default)]
pub struct ExpiryClock {
    seen: HashMap<(String, String), (LogIndex, Instant)>,
    /// The term this node last timed as leader.
    leading: Option<Term>,
}

impl ExpiryClock {
    /// Brings the clock up to date with `registry` at `now` (`leader_term`: this node
    /// leads in that term) and returns the expiries to propose (none unless leading).
    pub fn tick(&mut self, registry: &Registry, now: Instant, leader_term: Option<Term>) -> Vec<DnsCommand> {
        if leader_term.is_some() && leader_term != self.leading {
            // A new leadership: every instance gets its full ttl from now.
            self.seen.clear();
        }
        self.leading = leader_term;
        let mut live = HashMap::with_capacity(self.seen.len());
        let mut due = Vec::new();
        for (service, instance, ttl, generation) in registry.expiring() {
            let key = (service.to_owned(), instance.to_owned());
            let since = match self.seen.get(&key) {
                Some(&(g, since)) if g == generation => since,
                _ => now,
            };
            if leader_term.is_some() && now.duration_since(since) >= Duration::from_secs(u64::from(ttl)) {
                due.push(DnsCommand::Expire { service: key.0.clone(), instance: key.1.clone(), generation });
            }
            live.insert(key, (generation, since));
        }
        self.seen = live;
        due
    }

    /// Seconds left to `instance` of `service` by this node's clock (its full `ttl` when
    /// the clock has not seen `generation` yet).
    pub fn expires_in(&self, service: &str, instance: &str, ttl: u32, generation: LogIndex, now: Instant) -> u64 {
        let ttl = Duration::from_secs(u64::from(ttl));
        match self.seen.get(&(service.to_owned(), instance.to_owned())) {
            Some(&(g, since)) if g == generation => ttl.saturating_sub(now.duration_since(since)).as_secs(),
            _ => ttl.as_secs(),
        }
    }
}

#[cfg(test)]
mod tests {
    use raft::StateMachine;

    use super::*;
    use crate::apps::dns::state::InstanceSpec;

    fn registry_with(ttl: u32) -> Registry {
        let mut r = Registry::default();
        let spec = InstanceSpec { address: "10.0.0.1".parse().unwrap(), port: 1, ttl: Some(ttl), tags: vec![] };
        r.apply(1, DnsCommand::Register { service: "web".into(), instance: "a".into(), spec });
        r
    }

    #[test]
    fn the_leader_expires_after_the_ttl_and_a_follower_never_does() {
        let r = registry_with(2);
        let t0 = Instant::now();
        let mut follower = ExpiryClock::default();
        assert!(follower.tick(&r, t0, None).is_empty());
        assert!(follower.tick(&r, t0 + Duration::from_secs(10), None).is_empty());
        let mut leader = ExpiryClock::default();
        assert!(leader.tick(&r, t0, Some(1)).is_empty());
        assert_eq!(leader.expires_in("web", "a", 2, 1, t0 + Duration::from_secs(1)), 1);
        assert!(leader.tick(&r, t0 + Duration::from_millis(1900), Some(1)).is_empty());
        let due = leader.tick(&r, t0 + Duration::from_secs(2), Some(1));
        assert_eq!(due, vec![DnsCommand::Expire { service: "web".into(), instance: "a".into(), generation: 1 }]);
    }

    #[test]
    fn a_renewal_or_a_new_term_restarts_the_clock() {
        let mut r = registry_with(2);
        let t0 = Instant::now();
        let mut clock = ExpiryClock::default();
        clock.tick(&r, t0, Some(1));
        r.apply(2, DnsCommand::Renew { service: "web".into(), instance: "a".into() });
        assert!(clock.tick(&r, t0 + Duration::from_secs(1), Some(1)).is_empty());
        assert!(clock.tick(&r, t0 + Duration::from_millis(2500), Some(1)).is_empty(), "renewed at 1 s");
        assert!(clock.tick(&r, t0 + Duration::from_millis(3500), Some(2)).is_empty(), "new term at 3.5 s");
        assert!(clock.tick(&r, t0 + Duration::from_millis(5000), Some(2)).is_empty());
        assert_eq!(clock.tick(&r, t0 + Duration::from_millis(5500), Some(2)).len(), 1);
    }
}

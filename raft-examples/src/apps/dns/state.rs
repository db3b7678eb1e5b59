//! The replicated service registry: services, their instances, and what expiry needs
//! (each instance's ttl and the log index of its last registration or renewal). Apply
//! never reads a clock: expiry arrives as an [`DnsCommand::Expire`] entry the leader
//! proposes (see [`super::expiry`]).

use std::collections::BTreeMap;
use std::net::IpAddr;

use raft::{LogIndex, StateMachine};
use serde::{Deserialize, Serialize};

/// The longest ttl accepted, in seconds (one day).
pub const MAX_TTL: u32 = 86_400;
/// The most tags an instance may carry.
pub const MAX_TAGS: usize = 32;

/// Why a name or a registration is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The name is empty or longer than 63 bytes.
    #[error("`{0}` is not 1 to 63 bytes long")]
    Length(String),
    /// The name holds something other than letters, digits and hyphens.
    #[error("`{0}` may only hold letters, digits and hyphens")]
    Characters(String),
    /// The name starts or ends with a hyphen.
    #[error("`{0}` may not start or end with a hyphen")]
    Hyphen(String),
}

/// Checks that `name` is a DNS label (letters, digits and hyphens, 1 to 63 bytes, no
/// leading or trailing hyphen) and returns it in lower case.
pub fn validate_label(name: &str) -> Result<String, NameError> {
    if name.is_empty() || name.len() > 63 {
        return Err(NameError::Length(name.into()));
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err(NameError::Characters(name.into()));
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Err(NameError::Hyphen(name.into()));
    }
    Ok(name.to_ascii_lowercase())
}

/// What a registration says about an instance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceSpec {
    /// Its address.
    pub address: IpAddr,
    /// Its port (0 when not given).
    pub port: u16,
    /// Seconds it lives without a renewal; `None`: until deregistered.
    pub ttl: Option<u32>,
    /// Its tags (labels, lower case).
    pub tags: Vec<String>,
}

/// A registered instance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    /// What it was registered with.
    pub spec: InstanceSpec,
    /// The log index of its last registration or renewal: the expiry clock restarts when
    /// it changes, and an expiry for an older value is ignored.
    pub generation: LogIndex,
}

/// A command of the [`Registry`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DnsCommand {
    /// Registers (or replaces and renews) an instance.
    Register {
        /// The service (a label, lower case).
        service: String,
        /// The instance (a label, lower case).
        instance: String,
        /// The instance's data.
        spec: InstanceSpec,
    },
    /// Renews an instance's ttl.
    Renew {
        /// The service.
        service: String,
        /// The instance.
        instance: String,
    },
    /// Removes an instance.
    Deregister {
        /// The service.
        service: String,
        /// The instance.
        instance: String,
    },
    /// Removes an instance whose ttl passed, if it has not been renewed or replaced since
    /// `generation`.
    Expire {
        /// The service.
        service: String,
        /// The instance.
        instance: String,
        /// The instance's generation the leader timed.
        generation: LogIndex,
    },
}

/// The answer to a [`DnsCommand`] once applied.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DnsResponse {
    /// A registration was applied at `index`.
    Registered {
        /// The log index of the command.
        index: LogIndex,
    },
    /// A renewal was applied at `index`.
    Renewed {
        /// The log index of the command.
        index: LogIndex,
        /// Whether the instance was registered (and so renewed).
        found: bool,
    },
    /// A deregistration was applied at `index`.
    Deregistered {
        /// The log index of the command.
        index: LogIndex,
        /// Whether the instance was registered.
        existed: bool,
    },
    /// An expiry was applied at `index`.
    Expired {
        /// The log index of the command.
        index: LogIndex,
        /// Whether the instance was removed (it was not renewed since).
        removed: bool,
    },
}

/// The registry: service to instance to data, both names in lower case. The whole
/// replicated state, expiry state included, is this one struct (it is the snapshot).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registry {
    services: BTreeMap<String, BTreeMap<String, Instance>>,
    /// The index of the last command applied (the zone's SOA serial).
    last_index: LogIndex,
}

impl Registry {
    /// The instances of `service` (lower case), if it has any.
    pub fn service(&self, service: &str) -> Option<&BTreeMap<String, Instance>> {
        self.services.get(service)
    }

    /// The stored name and the instances of `service` (lower case), if it has any.
    pub fn service_entry(&self, service: &str) -> Option<(&str, &BTreeMap<String, Instance>)> {
        self.services.get_key_value(service).map(|(s, i)| (s.as_str(), i))
    }

    /// Every service with its instance count.
    pub fn services(&self) -> impl Iterator<Item = (&str, usize)> {
        self.services.iter().map(|(s, i)| (s.as_str(), i.len()))
    }

    /// Every instance with a ttl, as (service, instance, ttl, generation).
    pub fn expiring(&self) -> impl Iterator<Item = (&str, &str, u32, LogIndex)> {
        self.services.iter().flat_map(|(s, instances)| {
            instances
                .iter()
                .filter_map(move |(i, inst)| Some((s.as_str(), i.as_str(), inst.spec.ttl?, inst.generation)))
        })
    }

    /// The index of the last command applied.
    pub fn last_index(&self) -> LogIndex {
        self.last_index
    }

    fn remove(&mut self, service: &str, instance: &str) -> bool {
        let Some(instances) = self.services.get_mut(service) else { return false };
        let existed = instances.remove(instance).is_some();
        if instances.is_empty() {
            self.services.remove(service);
        }
        existed
    }
}

impl StateMachine for Registry {
    type Command = DnsCommand;
    type Response = DnsResponse;

    fn apply(&mut self, index: LogIndex, command: DnsCommand) -> DnsResponse {
        self.last_index = index;
        match command {
            DnsCommand::Register { service, instance, spec } => {
                self.services.entry(service).or_default().insert(instance, Instance { spec, generation: index });
                DnsResponse::Registered { index }
            }
            DnsCommand::Renew { service, instance } => {
                let found = match self.services.get_mut(&service).and_then(|s| s.get_mut(&instance)) {
                    Some(inst) => {
                        inst.generation = index;
                        true
                    }
                    None => false,
                };
                DnsResponse::Renewed { index, found }
            }
            DnsCommand::Deregister { service, instance } => {
                DnsResponse::Deregistered { index, existed: self.remove(&service, &instance) }
            }
            DnsCommand::Expire { service, instance, generation } => {
                let current = self.services.get(&service).and_then(|s| s.get(&instance)).map(|i| i.generation);
                let removed = current == Some(generation) && self.remove(&service, &instance);
                DnsResponse::Expired { index, removed }
            }
        }
    }

    /// A registry is small (instances of services, not data), so its view is a clone.
    type Snapshot = Registry;

    fn snapshot(&self) -> Registry {
        self.clone()
    }

    fn write_snapshot(registry: Registry, out: &mut dyn std::io::Write) -> std::io::Result<()> {
        out.write_all(&snapshot::encode(&registry))
    }

    fn restore(&mut self, input: &mut dyn std::io::Read) -> Result<(), String> {
        let mut bytes = Vec::new();
        input.read_to_end(&mut bytes).map_err(|e| format!("reading the registry snapshot: {e}"))?;
        *self = snapshot::decode(&bytes)?;
        Ok(())
    }
}

/// The snapshot encoding: the whole [`Registry`] in postcard.
mod snapshot {
    use super::Registry;

    pub(super) fn encode(registry: &Registry) -> Vec<u8> {
        // Encoding maps of strings and plain data into a Vec cannot fail.
        postcard::to_allocvec(registry).unwrap_or_default()
    }

    pub(super) fn decode(bytes: &[u8]) -> Result<Registry, String> {
        postcard::from_bytes(bytes).map_err(|e| format!("bad registry snapshot: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(addr: &str, ttl: Option<u32>) -> InstanceSpec {
        InstanceSpec { address: addr.parse().unwrap(), port: 80, ttl, tags: vec!["primary".into()] }
    }

    fn register(s: &str, i: &str, ttl: Option<u32>) -> DnsCommand {
        DnsCommand::Register { service: s.into(), instance: i.into(), spec: spec("10.0.0.1", ttl) }
    }

    #[test]
    fn register_renew_deregister() {
        let mut r = Registry::default();
        assert_eq!(r.apply(1, register("web", "a", Some(5))), DnsResponse::Registered { index: 1 });
        assert_eq!(r.service("web").unwrap()["a"].generation, 1);
        let renew = DnsCommand::Renew { service: "web".into(), instance: "a".into() };
        assert_eq!(r.apply(2, renew.clone()), DnsResponse::Renewed { index: 2, found: true });
        assert_eq!(r.service("web").unwrap()["a"].generation, 2);
        let dereg = DnsCommand::Deregister { service: "web".into(), instance: "a".into() };
        assert_eq!(r.apply(3, dereg.clone()), DnsResponse::Deregistered { index: 3, existed: true });
        assert!(r.service("web").is_none(), "an empty service is gone");
        assert_eq!(r.apply(4, dereg), DnsResponse::Deregistered { index: 4, existed: false });
        assert_eq!(r.apply(5, renew), DnsResponse::Renewed { index: 5, found: false });
        assert_eq!(r.last_index(), 5);
    }

    #[test]
    fn an_expiry_for_an_older_generation_is_ignored() {
        let mut r = Registry::default();
        r.apply(1, register("web", "a", Some(2)));
        r.apply(2, DnsCommand::Renew { service: "web".into(), instance: "a".into() });
        let stale = DnsCommand::Expire { service: "web".into(), instance: "a".into(), generation: 1 };
        assert_eq!(r.apply(3, stale), DnsResponse::Expired { index: 3, removed: false });
        assert!(r.service("web").is_some());
        let due = DnsCommand::Expire { service: "web".into(), instance: "a".into(), generation: 2 };
        assert_eq!(r.apply(4, due), DnsResponse::Expired { index: 4, removed: true });
        assert!(r.service("web").is_none());
        assert_eq!(r.expiring().count(), 0);
    }

    #[test]
    fn expiring_lists_only_instances_with_a_ttl() {
        let mut r = Registry::default();
        r.apply(1, register("web", "a", Some(2)));
        r.apply(2, register("web", "b", None));
        assert_eq!(r.expiring().collect::<Vec<_>>(), vec![("web", "a", 2, 1)]);
    }

    #[test]
    fn a_restored_registry_equals_the_original() {
        let mut r = Registry::default();
        for i in 0..40u64 {
            r.apply(i + 1, register(&format!("s{}", i % 4), &format!("i{i}"), (i % 2 == 0).then_some(7)));
        }
        r.apply(41, DnsCommand::Renew { service: "s0".into(), instance: "i0".into() });
        let mut other = Registry::default();
        let mut stream = Vec::new();
        Registry::write_snapshot(r.snapshot(), &mut stream).unwrap();
        other.restore(&mut &stream[..]).unwrap();
        assert_eq!(other, r);
        assert!(other.restore(&mut &[0xffu8; 3][..]).is_err());
        assert_eq!(other, r, "a failed restore changes nothing");
    }

    #[test]
    fn labels() {
        assert_eq!(validate_label("Web-1").unwrap(), "web-1");
        assert!(matches!(validate_label(""), Err(NameError::Length(_))));
        assert!(matches!(validate_label(&"a".repeat(64)), Err(NameError::Length(_))));
        assert!(validate_label(&"a".repeat(63)).is_ok());
        assert!(matches!(validate_label("a.b"), Err(NameError::Characters(_))));
        assert!(matches!(validate_label("a_b"), Err(NameError::Characters(_))));
        assert!(matches!(validate_label("-a"), Err(NameError::Hyphen(_))));
        assert!(matches!(validate_label("ключ"), Err(NameError::Characters(_))));
    }
}
